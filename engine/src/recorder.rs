//! What the engine records: events into the store and onto the terminal (masked), the run's end;
//! and the secrets a run masks.

use super::output::{human_duration, Terminal};
use super::sink::RunSink;
use super::{now_ms, EngineError, Format, RunRequest, SINK_FLUSH_DEADLINE};
use crate::exit::ExitCode;
use crate::store::Store;
use serde_json::{json, Value};
use sparkwing_api::wire::JobStateReport;
use sparkwing_core::mask::{self, Masker};
use sparkwing_core::RunPhase;
use std::sync::Arc;

/// Records events to the store and prints them, masking secrets on the way.
pub(super) struct Recorder {
    pub(super) store: Store,
    pub(super) run_id: String,
    pub(super) masker: Masker,
    pub(super) term: Terminal,
    pub(super) sink: Option<Arc<dyn RunSink>>,
    /// The plan's approval gates with their messages: their states reach the sink marked
    /// `"gate": true`, with `"gateMessage"` (masked).
    pub(super) gates: std::collections::HashMap<String, Option<String>>,
    /// The plan's jobs' needs (those with any), sent with each of their states as `"needs"`.
    pub(super) needs: std::collections::HashMap<String, Vec<String>>,
}

impl Recorder {
    pub(super) fn event(
        &mut self,
        job: Option<&str>,
        kind: &str,
        payload: Value,
        human: Option<String>,
    ) -> Result<(), EngineError> {
        let ts = now_ms();
        let payload = self.masker.mask_json(&payload);
        self.store
            .append_event(&self.run_id, job, kind, &payload, ts)?;
        let human = human.map(|h| self.masker.mask(&h).into_owned());
        self.term.event(ts, kind, job, &payload, human);
        Ok(())
    }

    /// Tell the sink a job's state (no-op without a sink).
    pub(super) fn sink_state(&self, job: &str, mut state: JobStateReport) {
        if let Some(s) = &self.sink {
            if let Some(message) = self.gates.get(job) {
                state.gate = true;
                state.gate_message = message.as_deref().map(|m| self.masker.mask(m).into_owned());
            }
            if let Some(needs) = self.needs.get(job) {
                state.needs = needs.clone();
            }
            s.job_state(job, state);
        }
    }
}

/// The run's secret values, each with what it is called: `.secret(NAME)` environment variables
/// (`NAME`), then secret args (`--name`).
pub(super) fn secrets_of(req: &RunRequest) -> Vec<(String, String)> {
    let mut secrets: Vec<(String, String)> = req
        .info
        .secrets
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
        .collect();
    secrets.extend(
        sparkwing_core::args::secret_values(&req.info.args, &req.args)
            .into_iter()
            .map(|(name, v)| (format!("--{name}"), v)),
    );
    secrets
}

pub(super) fn masker_for(req: &RunRequest) -> Masker {
    Masker::new(secrets_of(req).into_iter().map(|(_, v)| v))
}

/// Record (and show) a warning for each secret too short to be masked.
pub(super) fn warn_unmasked(rec: &mut Recorder, req: &RunRequest) -> Result<(), EngineError> {
    let secrets = secrets_of(req);
    let named = secrets.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    for u in mask::unmasked(named) {
        let message = u.to_string();
        if rec.term.format == Format::Json {
            // stdout is for machines then; a person reads stderr.
            tracing::warn!("{message}");
        }
        let human = format!("{} {message}", rec.term.yellow("warning:"));
        rec.event(
            None,
            "secret_not_masked",
            json!({"secret": u.name, "line": u.line, "chars": u.chars, "min_chars": mask::MIN_SECRET_LEN, "message": message}),
            Some(human),
        )?;
    }
    Ok(())
}

pub(super) fn finish(
    rec: &mut Recorder,
    status: RunPhase,
    error: Option<String>,
    started: i64,
) -> Result<ExitCode, EngineError> {
    let error = error.map(|e| rec.masker.mask(&e).into_owned());
    let now = now_ms();
    let code = ExitCode::of_run(status).code();
    rec.store
        .set_run_status(&rec.run_id, status, now, Some(code), error.as_deref())?;
    let took = human_duration(now - started);
    let human = match status {
        RunPhase::Succeeded => format!(
            "{} run {} succeeded in {took}",
            rec.term.green("✓"),
            rec.run_id
        ),
        RunPhase::Cancelled => format!(
            "{} run {} cancelled after {took}",
            rec.term.yellow("■"),
            rec.run_id
        ),
        _ => format!(
            "{} run {} failed after {took}: {}",
            rec.term.red("✗"),
            rec.run_id,
            error.clone().unwrap_or_default()
        ),
    };
    rec.event(
        None,
        "run_finished",
        json!({"status": status.local_str(), "error": error, "exit_code": code, "duration_ms": now - started}),
        Some(human),
    )?;
    if let Some(s) = &rec.sink {
        s.run_finished(status, error.clone());
        // The end of the run: the only place the engine waits for its sink.
        let report = s.flush(std::time::Instant::now() + SINK_FLUSH_DEADLINE);
        if !report.is_complete() {
            tracing::warn!("run {}: {report}", rec.run_id);
        }
    }
    Ok(ExitCode::of_run(status))
}
