//! Creating runs, for the API's triggers and webhooks and for the Pipeline controller's
//! schedules alike: where runs live ([`backend`]: `RunBackend`, `KubeRuns`, `MemoryRuns`), a
//! run's runner credential ([`runner_token`]), a run built from a Pipeline ([`from_pipeline`]), and
//! a whole-run re-run of a run ([`rerun`]).

pub mod backend;
pub mod from_pipeline;
pub mod job_pods;
pub mod rerun;
pub mod runner_token;

pub use backend::{BackendError, KubeRuns, MemoryRuns, PodClaim, RunBackend};
