//! Exit codes of the `sparkwing` command. Documented in `docs/exit-codes.md`; keep both in sync.

use sparkwing_core::reconcile::status::Phase;
use sparkwing_core::RunStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The run (or command) succeeded.
    Success = 0,
    /// The run failed: a job failed, the plan was invalid, or the pipeline did not compile.
    RunFailed = 1,
    /// Usage error: unknown pipeline, unknown or invalid arg or flag.
    Usage = 2,
    /// Project error: no `.sparkwing/`, invalid `sparkwing.yaml`, unregistered entrypoint.
    Project = 3,
    /// The run store cannot be used: corrupt, or written by a newer sparkwing.
    Store = 4,
    /// The run id given does not exist.
    NotFound = 5,
    /// `runs wait --timeout` elapsed before the run finished.
    Timeout = 6,
    /// Docker is needed and cannot be used: the daemon is unreachable (the message names the
    /// socket tried) or the runner image is missing (the message says how to build it).
    Docker = 7,
    /// `sparkwing runner --run`: SPARKWING_API_URL or SPARKWING_API_TOKEN is missing or unusable
    /// (the operator sets both on runner Jobs).
    RunnerEnv = 8,
    /// The Sparkwing API refused a request (bad or revoked token, no such run) or could not be
    /// reached.
    Api = 9,
    /// Any other error (IO, cargo missing, ...).
    Internal = 10,
    /// All box slots taken and `--sw-no-wait` given.
    BoxSlotsFull = 75,
    /// The run was cancelled (Ctrl-C, SIGTERM or `sparkwing runs cancel`).
    Cancelled = 130,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// How `run`, `runs status` and `runs wait` exit for a run in `status`: 0 only when it
    /// succeeded, 130 when it was cancelled, 1 otherwise. The one mapping of run states to exit
    /// codes; a cluster run's phase goes through [`ExitCode::of_phase`].
    pub fn of_run(status: RunStatus) -> ExitCode {
        match status {
            RunStatus::Success => ExitCode::Success,
            RunStatus::Cancelled => ExitCode::Cancelled,
            RunStatus::Queued | RunStatus::Running | RunStatus::Failed => ExitCode::RunFailed,
        }
    }

    /// [`ExitCode::of_run`] for a `PipelineRun` phase as the API reports it (`Succeeded`, ...).
    pub fn of_phase(phase: Phase) -> ExitCode {
        ExitCode::of_run(match phase {
            Phase::Succeeded => RunStatus::Success,
            Phase::Cancelled => RunStatus::Cancelled,
            _ => RunStatus::Failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_phases_map_to_the_documented_codes() {
        assert_eq!(ExitCode::of_run(RunStatus::Success).code(), 0);
        assert_eq!(ExitCode::of_run(RunStatus::Failed).code(), 1);
        assert_eq!(ExitCode::of_run(RunStatus::Cancelled).code(), 130);
        assert_eq!(ExitCode::of_phase(Phase::Succeeded).code(), 0);
        assert_eq!(ExitCode::of_phase(Phase::Failed).code(), 1);
        assert_eq!(ExitCode::of_phase(Phase::Cancelled).code(), 130);
    }
}
