//! A cluster run's coordinator parks while nothing but approval gates waits (`docs/runner.md`):
//! it reports the park through its sink (the cluster API records it on the run) and the run
//! ends here without an end of its own; the operator starts the next attempt once a gate is
//! decided or times out, and that attempt resumes from the recorded job states
//! (`sparkwing_core::rerun::RetryScope::Resume`). Core decides when (`Scheduler::only_gates_wait`);
//! this module checks the gates were not decided meanwhile and records the park.
//!
//! Only a sink that [`RunSink::parks`](crate::RunSink::parks) parks: a local run keeps its
//! process (and gives its box slot up instead, `run_slot`).

use super::recorder::Recorder;
use super::{now_ms, EngineError, RunRequest, SINK_FLUSH_DEADLINE};
use crate::exit::ExitCode;
use serde_json::json;
use sparkwing_core::{gate, Scheduler};

/// Whether the run parks now, and if it does, record and report the park: `Some(Success)` (the
/// runner exits 0, the run goes on without it). `waiting_since(job)` is when a waiting gate began
/// to wait. The run does not park while a waiting gate was decided or timed out already (its
/// wait ends in a moment), or its decision cannot be read.
pub(super) async fn try_park(
    req: &RunRequest,
    rec: &mut Recorder,
    sched: &Scheduler,
    waiting_since: impl Fn(usize) -> i64,
) -> Result<Option<ExitCode>, EngineError> {
    let Some(sink) = req.sink.clone().filter(|s| s.parks()) else {
        return Ok(None);
    };
    let Some(reason) = sched.only_gates_wait() else {
        return Ok(None);
    };
    let plan = sched.plan();
    let waiting: Vec<(String, Option<i64>)> = sched
        .waiting_gates()
        .into_iter()
        .filter_map(|id| {
            let i = plan.index_of(id)?;
            let spec = plan.jobs[i].gate.as_ref()?;
            Some((id.to_string(), gate::deadline(spec, waiting_since(i))))
        })
        .collect();
    let now = now_ms();
    if waiting.iter().any(|(_, d)| d.is_some_and(|d| now >= d)) {
        return Ok(None);
    }
    if let Some(relay) = req.gate_relay.clone() {
        let ids: Vec<String> = waiting.iter().map(|(id, _)| id.clone()).collect();
        let undecided = tokio::task::spawn_blocking(move || {
            ids.iter().all(|id| matches!(relay.decision(id), Ok(None)))
        })
        .await
        .unwrap_or(false);
        if !undecided {
            return Ok(None);
        }
    }
    let gates: Vec<String> = waiting.iter().map(|(id, _)| id.clone()).collect();
    let deadline_ms = waiting.iter().filter_map(|(_, d)| *d).min();
    let human = format!(
        "{} run parked while {reason}: this runner exits, and the next attempt resumes the run once a gate is decided",
        rec.term.yellow("⏸")
    );
    rec.event(
        None,
        "run_parked",
        json!({"gates": gates, "deadline_ms": deadline_ms, "reason": reason}),
        Some(human),
    )?;
    sink.run_parked(gates, deadline_ms, reason);
    let report = sink.flush(std::time::Instant::now() + SINK_FLUSH_DEADLINE);
    if report.finish_pending {
        // Nobody knows the run parked: exiting 0 would read as its success.
        tracing::error!("run {}: the park was not recorded: {report}", rec.run_id);
        return Ok(Some(ExitCode::Api));
    }
    if !report.is_complete() {
        tracing::warn!("run {}: {report}", rec.run_id);
    }
    Ok(Some(ExitCode::Success))
}
