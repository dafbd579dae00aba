//! Reading a PipelineRun's status in tests: its phase and its `Succeeded` condition.

use sparkwing_crds::PipelineRun;

/// The run's phase (`""` before the operator wrote a status).
pub fn phase(run: &PipelineRun) -> &str {
    run.status.as_ref().map_or("", |s| s.phase.phase_str())
}

/// Whether the run's phase is terminal (Succeeded, Failed or Cancelled).
pub fn is_finished(run: &PipelineRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.phase.is_terminal())
}

/// The reason of the run's `Succeeded` condition (`""` without one).
pub fn reason(run: &PipelineRun) -> String {
    succeeded(run).0
}

/// The message of the run's `Succeeded` condition (`""` without one).
pub fn message(run: &PipelineRun) -> String {
    succeeded(run).1
}

/// (reason, message) of the run's `Succeeded` condition; empty without one.
fn succeeded(run: &PipelineRun) -> (String, String) {
    run.status
        .as_ref()
        .and_then(|s| s.condition("Succeeded"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}
