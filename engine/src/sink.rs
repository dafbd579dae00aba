//! Where else a run goes: a [`RunSink`] receives what the engine records (masked log lines with
//! their per-job sequence numbers, job state changes, the run's end) as it records it, e.g. to
//! send it to the cluster API (`remote::sink::ApiSink`).
//!
//! Calls are non-blocking: the engine never waits on the network. A sink queues and delivers on
//! its own thread; the engine calls [`RunSink::flush`] with a deadline before it returns.

use sparkwing_api::wire::{JobStateReport, ReportedJobState};
use sparkwing_core::RunPhase;
use std::time::Instant;

/// One masked log line, as written to the job's local log.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkLine {
    pub job: String,
    /// 1, 2, ... per job across attempts: the same seq as the local JSONL log.
    pub seq: u64,
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// What a flush could not deliver by its deadline (all zero and no error: everything arrived).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlushReport {
    pub undelivered_lines: usize,
    pub undelivered_states: usize,
    /// The run's end was queued but not delivered.
    pub finish_pending: bool,
    /// The last delivery error, if any (e.g. the API unreachable, a refused token).
    pub error: Option<String>,
}

impl FlushReport {
    pub fn is_complete(&self) -> bool {
        self.undelivered_lines == 0 && self.undelivered_states == 0 && !self.finish_pending
    }
}

impl std::fmt::Display for FlushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_complete() {
            return write!(f, "everything delivered");
        }
        write!(
            f,
            "{} log lines and {} job states not delivered{}",
            self.undelivered_lines,
            self.undelivered_states,
            if self.finish_pending {
                ", run end not delivered"
            } else {
                ""
            }
        )?;
        if let Some(e) = &self.error {
            write!(f, " (last error: {e})")?;
        }
        Ok(())
    }
}

/// A second destination for a run's records. Implementations must return at once.
pub trait RunSink: Send + Sync {
    /// A masked log line of a job.
    fn log_line(&self, line: SinkLine);
    /// A job's state changed, as the API's job-state PUT takes it.
    fn job_state(&self, job: &str, state: JobStateReport);
    /// The run ended (sent after every line and state queued before it).
    fn run_finished(&self, phase: RunPhase, message: Option<String>);
    /// Deliver what is queued, waiting at most until `deadline`.
    fn flush(&self, deadline: Instant) -> FlushReport;
    /// Whether the run's coordinator may park while nothing but approval gates waits (a cluster
    /// runner pod's attempt: the operator starts the next one, which resumes the run; `park`).
    fn parks(&self) -> bool {
        false
    }
    /// The coordinator parks instead of ending the run: `gates` wait, the earliest of their
    /// timeouts is `deadline_ms`, `reason` says so (sent after every line and state queued
    /// before it). Only called when [`RunSink::parks`].
    fn run_parked(&self, _gates: Vec<String>, _deadline_ms: Option<i64>, _reason: String) {}
}

/// A job's state as the API's job-state PUT takes it; times are Unix milliseconds (a start time
/// of 0 is unknown).
pub fn job_state_report(
    state: impl Into<ReportedJobState>,
    attempt: u32,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    exit_code: Option<i32>,
    reason: Option<&str>,
) -> JobStateReport {
    JobStateReport {
        state: state.into(),
        attempt,
        started_at: started_ms
            .filter(|t| *t > 0)
            .map(sparkwing_core::time::format_rfc3339),
        finished_at: finished_ms.map(sparkwing_core::time::format_rfc3339),
        exit_code,
        reason: reason.map(str::to_string),
        settled: false,
        gate: false,
        gate_message: None,
        needs: Vec::new(),
        outputs: None,
        cached_from: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_core::state::JobState;

    #[test]
    fn job_state_objects_carry_what_is_known() {
        let v = serde_json::to_value(job_state_report(
            JobState::Failed,
            2,
            Some(1_000),
            Some(2_000),
            Some(3),
            Some("exit code 3"),
        ))
        .unwrap();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["startedAt"], "1970-01-01T00:00:01Z");
        assert_eq!(v["exitCode"], 3);
        assert_eq!(v["reason"], "exit code 3");
        let v = serde_json::to_value(job_state_report(
            JobState::Pending,
            0,
            None,
            None,
            None,
            None,
        ))
        .unwrap();
        assert_eq!(v.as_object().unwrap().len(), 2);
    }

    #[test]
    fn flush_reports_say_what_is_missing() {
        assert!(FlushReport::default().is_complete());
        let r = FlushReport {
            undelivered_lines: 3,
            undelivered_states: 1,
            finish_pending: true,
            error: Some("unreachable".into()),
        };
        assert!(!r.is_complete());
        assert_eq!(
            r.to_string(),
            "3 log lines and 1 job states not delivered, run end not delivered (last error: unreachable)"
        );
    }
}
