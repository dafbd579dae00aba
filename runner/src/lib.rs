//! What runs inside a runner pod (docs/runner.md). `sparkwing runner --run NS/NAME --attempt N`
//! executes one attempt of a cluster run ([`run_attempt`]); `sparkwing runner --warm --pool
//! NS/POOL` first waits for a RunnerPool's claim ([`run_warm`]). A runner fetches the run's source
//! (`materialise` for an upload, `git_source` for a commit), compiles `.sparkwing/`, runs the plan
//! with the local engine, and reports logs, job states and the run's end to the API
//! (`sink::ApiSink`, also used by `sparkwing run --profile` to mirror a local run). Its approval
//! gates learn of decisions through the API (`gate_relay`), and its concurrency group is kept
//! there (`group_slots`). A run's placed jobs run in pods of their own (`job_pods`: the coordinator's
//! seam through the API; `job_pod`: `sparkwing runner --job`, what such a pod runs). `podinfo` reads a
//! warm pod's own annotations.

mod attempt;
mod gate_relay;
pub mod git_source;
mod group_slots;
pub mod job_pod;
pub mod job_pods;
pub mod materialise;
pub mod memo;
pub mod podinfo;
pub mod resume;
pub mod sink;
pub mod stores;
mod warm;

pub use attempt::{run_attempt, COMPILE_JOB, SOURCE_JOB};
pub use job_pod::{run_job, JobAttempt};
use sparkwing_api::RemoteError;
use sparkwing_engine::exit::ExitCode;
pub use warm::run_warm;

/// The API's URL and the run's token, from the runner Job's environment.
pub use sparkwing_api::names::env::{API_TOKEN as ENV_API_TOKEN, API_URL as ENV_API_URL};

/// Why a runner stopped before its run could end by itself, and the code the command exits with
/// (docs/exit-codes.md: `RunnerEnv` for a missing credential, `Api` for a refusal, ...).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RunnerError {
    pub code: ExitCode,
    pub message: String,
}

impl RunnerError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        RunnerError {
            code,
            message: message.into(),
        }
    }
}

impl From<std::io::Error> for RunnerError {
    fn from(e: std::io::Error) -> Self {
        RunnerError::new(ExitCode::Internal, e.to_string())
    }
}

/// How a runner's attempt ended: the run's exit code, or the error that stopped it.
pub type RunnerResult = Result<ExitCode, RunnerError>;

pub(crate) fn required_env(name: &str) -> Result<String, RunnerError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(RunnerError::new(
            ExitCode::RunnerEnv,
            format!(
                "{name} is not set: `sparkwing runner --run` reports to the Sparkwing API; the operator sets {ENV_API_URL} and {ENV_API_TOKEN} on runner Jobs (to run one by hand, export both: the API's URL and the run's runner token)"
            ),
        )),
    }
}

pub(crate) fn api_error(what: &str, e: RemoteError) -> RunnerError {
    let hint = match e.status() {
        Some(401) => {
            "; the token is missing, invalid or revoked (a run's token is revoked when it finishes)"
        }
        Some(403) => "; the token does not grant this run (a runner token is scoped to one run)",
        Some(404) => "; no such run (deleted, or a typo in --run)",
        _ => "",
    };
    RunnerError::new(ExitCode::Api, format!("{what}: {e}{hint}"))
}
