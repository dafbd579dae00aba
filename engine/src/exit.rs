//! Exit codes of the `sparkwing` command and of a run. Documented in `docs/exit-codes.md`; keep
//! both in sync. The engine ends a run with one; the CLI exits with it.

use sparkwing_core::RunPhase;

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

    /// How `run`, `runs status` and `runs wait` exit for a run in `phase` (local or on a
    /// cluster): 0 only when it succeeded, 130 when it was cancelled, 1 otherwise. The one mapping
    /// of run phases to exit codes.
    pub fn of_run(status: RunPhase) -> ExitCode {
        match status {
            RunPhase::Succeeded => ExitCode::Success,
            RunPhase::Cancelled => ExitCode::Cancelled,
            RunPhase::Pending | RunPhase::Running | RunPhase::Failed => ExitCode::RunFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_phases_map_to_the_documented_codes() {
        assert_eq!(ExitCode::of_run(RunPhase::Succeeded).code(), 0);
        assert_eq!(ExitCode::of_run(RunPhase::Failed).code(), 1);
        assert_eq!(ExitCode::of_run(RunPhase::Cancelled).code(), 130);
        assert_eq!(ExitCode::of_run(RunPhase::Pending).code(), 1);
    }
}
