//! The local engine: runs one pipeline's plan as processes, records everything in the store and
//! the log files, and prints it. Decisions (what starts, what is cancelled, how the run ends) are
//! made by `sparkwing_core::Scheduler`; this crate only does them. It also owns what a run on
//! this machine needs around it: the run store (`store`), the compile cache (`compile`), project
//! discovery (`project`), box slots (`box_slots`) and the `SPARKWING_HOME` layout (`home`).

pub mod abandoned;
mod admission;
pub mod artifact_store;
pub mod box_slots;
pub mod cache_store;
pub mod compile;
pub mod concurrency;
mod dag_run;
pub mod env_vars;
pub mod exit;
pub mod gates;
pub mod git;
pub mod home;
pub mod host;
pub mod interrupts;
mod job_command;
pub mod job_log;
pub mod job_pods;
pub mod job_storage;
pub mod memo_probe;
pub mod memo_store;
pub mod one_job;
pub mod output;
mod park;
pub mod planning;
pub mod process;
pub mod process_executor;
pub mod project;
mod recorder;
mod run_slot;
pub mod runtime;
pub mod signals;
pub mod sink;
pub mod store;
pub mod subpipeline;
pub mod supervisor;

use crate::box_slots::BoxSlotError;
use crate::compile::Compiled;
use crate::exit::ExitCode;
use crate::home::Home;
use crate::store::{Store, StoreError};
use interrupts::Interrupts;
use output::Terminal;
use recorder::{masker_for, Recorder};
use serde_json::{Map, Value};
use sparkwing_core::protocol::PipelineInfo;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use admission::{admit, host_name, user_name, Admission, Admitted, BoxGate};
pub use output::Format;
pub use process_executor::drive;
pub use sink::{RunSink, SinkLine};

/// How long the engine waits for its sink to deliver what is queued when the run ends.
pub const SINK_FLUSH_DEADLINE: Duration = Duration::from_secs(60);

/// Everything a run needs, resolved by the `run` command.
pub struct RunRequest {
    pub home: Home,
    pub repo_root: PathBuf,
    pub pipeline: String,
    pub info: PipelineInfo,
    pub binary: BinaryRef,
    /// Resolved args, secrets in clear (given to the pipeline binary only).
    pub args: Map<String, Value>,
    pub workers: usize,
    pub format: Format,
    /// The host gate, when a cap is set.
    pub box_slots: Option<BoxGate>,
    /// What executes the run: `process` (this process), `docker` (a runner container) or
    /// [`RUNNER_KUBERNETES`] (a cluster's runner pod).
    pub runner: String,
    /// A second destination for the run's lines, job states and end (the cluster API).
    pub sink: Option<Arc<dyn RunSink>>,
    /// Where else its gates' decisions are recorded (a runner pod: the cluster API).
    pub gate_relay: Option<Arc<dyn gates::GateRelay>>,
    /// Where the run's concurrency group keeps its slots (a runner pod: the cluster API);
    /// `None`: box slots on this host ([`concurrency::LocalGroup`]).
    pub group_slots: Option<Arc<dyn concurrency::GroupSlots>>,
    /// The jobs that execute (`--sw-only`, `--sw-start-at`, `--sw-stop-at`); the rest are skipped.
    pub selection: sparkwing_core::selection::Selection,
    /// A re-run of a recorded run (`sparkwing runs retry`): the jobs it does not retry are reused.
    pub retry: Option<Retry>,
    /// `--sw-no-cache`: memoized jobs run even when a result for their inputs exists.
    pub no_cache: bool,
    /// Where the jobs' caches and artifacts are kept (a runner pod: the cluster API); `None`:
    /// this machine's stores (`job_storage::local_stores`).
    pub stores: Option<job_storage::Stores>,
    /// Where memoized jobs' results are looked up and recorded (a runner pod: the cluster API);
    /// `None`: this machine's run store (`memo_store::LocalMemoStore`).
    pub memo: Option<std::sync::Arc<dyn memo_store::MemoStore>>,
    /// Where a cluster run's placed jobs get their own pods (a runner pod: the cluster API,
    /// `job_pods`); `None`: every job runs in this process's machine (placement ignored).
    pub job_pods: Option<Arc<dyn job_pods::JobPods>>,
}

/// [`RunRequest::runner`] of a cluster run's attempt in a runner pod (`sparkwing runner`).
pub const RUNNER_KUBERNETES: &str = "kubernetes";

/// What a re-run takes from the run it retries.
#[derive(Debug, Clone)]
pub struct Retry {
    /// The run retried (recorded as the new run's `retry_of`).
    pub of_run: String,
    pub scope: sparkwing_core::rerun::RetryScope,
    /// That run's jobs as recorded.
    pub prior: Vec<sparkwing_core::rerun::PriorJob>,
    /// A resume ([`RetryScope::Resume`](sparkwing_core::rerun::RetryScope::Resume)): when each
    /// gate still waiting began to wait (Unix ms), so its timeout counts from then.
    pub waiting_since: std::collections::BTreeMap<String, i64>,
}

/// The compiled pipeline binary a run uses.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BinaryRef {
    pub path: PathBuf,
    /// `cached` or `compiled`.
    pub source: String,
    pub key: String,
}

impl From<&Compiled> for BinaryRef {
    fn from(c: &Compiled) -> Self {
        BinaryRef {
            path: c.binary.clone(),
            source: c.source.to_string(),
            key: c.key.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    BoxSlots(#[from] BoxSlotError),
    /// The run's concurrency group could not be entered (`concurrency::GroupSlots`).
    #[error("{0}")]
    Group(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `run-YYYYMMDD-HHMMSS-xxxxxx` in UTC: sorts by time, random enough for many runs a second.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let when = sparkwing_core::time::format_utc(now.as_millis() as i64, "%Y%m%d-%H%M%S");
    let mut seed = now.subsec_nanos() as u64 ^ ((std::process::id() as u64) << 32);
    // splitmix64 step: cheap, and good enough to spread ids of runs started in the same second.
    seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("run-{when}-{:06x}", z & 0xff_ffff)
}

/// Execute a run from start to end in this process; returns the process exit code.
pub async fn execute(req: RunRequest) -> Result<ExitCode, EngineError> {
    execute_with_id(req).await.map(|(_, code)| code)
}

/// [`execute`], also returning the id of the run it recorded (`None` when admission ended it
/// before it was planned).
pub async fn execute_with_id(req: RunRequest) -> Result<(Option<String>, ExitCode), EngineError> {
    match admit(&req).await? {
        Admission::Admitted(a) => {
            let id = a.run_id.clone();
            drive(&req, *a).await.map(|code| (Some(id), code))
        }
        Admission::Done(code) => Ok((None, code)),
    }
}

/// Continue a run the host already recorded and admitted (inside a runner container).
pub async fn resume(req: &RunRequest, run_id: &str) -> Result<ExitCode, EngineError> {
    let interrupts = Interrupts::install().map_err(io_err("install signal handlers"))?;
    let store = Store::open(&req.home.root)?;
    let run = store.find_run(run_id)?;
    let rec = Recorder {
        store,
        run_id: run.id.clone(),
        masker: masker_for(req),
        term: Terminal::new(req.format, &run.id),
        sink: req.sink.clone(),
        gates: Default::default(),
        needs: Default::default(),
    };
    let admitted = Admitted {
        run_id: run.id.clone(),
        run_dir: PathBuf::from(&run.log_dir),
        rec,
        created: run.started_at.unwrap_or(run.created_at),
        box_slot: None,
        _run_lock: None,
        interrupts,
    };
    drive(req, admitted).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_look_right() {
        let id = new_run_id();
        assert!(id.starts_with("run-20"), "{id}");
        assert_eq!(id.len(), "run-20261127-120102-a1b2c3".len(), "{id}");
    }
}
