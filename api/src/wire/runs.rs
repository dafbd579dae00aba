//! `/api/v1/runs`: trigger, list, read, cancel and finish runs; job states and branch checks
//! from runners.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_core::state::JobState;

// A run's source, trigger, parent and cancel mode, as the PipelineRun's spec has them.
pub use sparkwing_core::run_spec::{
    CancelMode, ExternalSource, GitSource, LocalSource, ParentRef, Source, TriggerVia, TriggeredBy,
    TriggeringPullRequest, UploadSource,
};

/// `POST /api/v1/runs`: the PipelineRun spec's fields a client may set, plus `namespace`.
/// `triggeredBy` is not here: the server writes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub pipeline: String,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    /// The run and job awaiting this run as a sub-pipeline; recorded as the PipelineRun's
    /// `sparkwing.dev/parent-*` annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// The pipelines this run descends from, outermost first (the triggering process's
    /// `SPARKWING_PIPELINE_CHAIN`); recorded as the `sparkwing.dev/pipeline-chain` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_chain: Option<Vec<String>>,
    /// `--sw-no-cache`: the run's memoized jobs run even when a result for their inputs exists;
    /// recorded as the `sparkwing.dev/no-cache` annotation.
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub no_cache: bool,
}

impl TriggerRequest {
    /// A trigger of `pipeline` from `source`, every optional field unset.
    pub fn new(pipeline: &str, source: Source) -> TriggerRequest {
        TriggerRequest {
            namespace: None,
            pipeline: pipeline.to_string(),
            args: BTreeMap::new(),
            source,
            runner_pool: None,
            timeout: None,
            ttl_seconds_after_finished: None,
            max_attempts: None,
            parent: None,
            pipeline_chain: None,
            no_cache: false,
        }
    }
}

/// `POST /api/v1/runs`' answer, and `POST /api/v1/runs/{ns}/{name}/rerun`'s.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreatedRun {
    pub namespace: String,
    pub name: String,
    /// An external run's credential (`run:<ns>/<name>`), for its executor to post logs, job
    /// states and the end. Shown once; runs on the cluster get theirs through a Secret instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_token: Option<String>,
}

impl std::fmt::Debug for CreatedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedRun")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("runner_token", &self.runner_token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A run as the API shows it: in a list (without `run` and `jobs`) and alone (with them). `R`
/// is the PipelineRun: the server's typed resource, a client's JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", bound(deserialize = "R: Deserialize<'de>"))]
pub struct RunView<R = serde_json::Value> {
    pub namespace: String,
    pub name: String,
    pub pipeline: String,
    pub phase: RunPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<TriggeredBy>,
    /// The run and job that awaited this run as a sub-pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// The run this run re-runs (`NS/NAME`, from the `sparkwing.dev/rerun-of` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The PipelineRun still exists.
    pub live: bool,
    /// A copy is in the archive.
    pub archived: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<R>,
    /// The job-state objects the runner posted, by job (see [`JobStateReport`]; the server
    /// keeps any object it was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<BTreeMap<String, serde_json::Value>>,
    /// Shown alone: the run's place in its concurrency group, while it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<super::concurrency::GroupStatus>,
    /// Shown alone: the places of the run's jobs in their own concurrency groups (a job's attempt
    /// holding or waiting for a slot now; `"job"` names it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_groups: Vec<super::concurrency::GroupStatus>,
}

/// `GET /api/v1/runs`: a page of runs, newest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(bound(deserialize = "R: Deserialize<'de>"))]
pub struct RunList<R = serde_json::Value> {
    pub runs: Vec<RunView<R>>,
    /// The cursor of the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST .../cancel` (the body is optional: `Cancelled`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CancelMode>,
}

/// `POST .../finish`: the end of an external run as its executor reports it (runs on the
/// cluster send no body).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    /// `Succeeded`, `Failed` or `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A cluster run's runner parked instead of ending the run (`docs/runner.md`): nothing but
    /// approval gates waited, so it exits and the operator starts the next attempt once a gate
    /// is decided or times out. `{"attempt": N, "gates": ["approve"], "deadlineMs": 1700000000000}`
    /// (`deadlineMs`: the earliest gate timeout, absent when none has one). Not with `phase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<sparkwing_core::gate::Parked>,
}

/// `PUT .../branch-check`: a runner's comparison of its run's Pipeline push branches with
/// `on.push.branches` in the committed `sparkwing.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BranchCheck {
    pub in_sync: bool,
    /// For a drift: both lists and how to fix it (absent when in sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `PUT .../jobs/{job}`: a job's state as its runner reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobStateReport {
    pub state: ReportedJobState,
    #[serde(default)]
    pub attempt: u32,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set by the server on a finished run's job its runner never reported ended.
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub settled: bool,
    /// The job is an approval gate (decided through `.../gates/{job}`).
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub gate: bool,
    /// A gate's message (`.message(...)` in the plan), shown to whoever decides. Absent for
    /// other jobs, a gate without one, and runners before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_message: Option<String>,
    /// The jobs this job needs, as the plan says (the edges of the run page's job graph). Absent
    /// for a job without needs, and from runners before it was added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// The outputs the job set (`job.output(k, v)`), sent with its end, masked as the local run
    /// store keeps them (a value that held a secret reads `***`). Absent for a job without
    /// outputs, before its end, and from runners before it was added. At most
    /// [`MAX_JOB_OUTPUTS_BYTES`] (see [`outputs_size`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, String>>,
    /// A `cached` memoized job: the run its result came from (the job did not run). Absent for
    /// other jobs and from runners before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<String>,
}

/// The most a job state's `outputs` may hold, in bytes of its keys and values
/// ([`outputs_size`]): the API refuses a larger report (413), a runner sends the state without
/// them.
pub const MAX_JOB_OUTPUTS_BYTES: usize = 64 * 1024;

/// The size of a job's outputs as [`MAX_JOB_OUTPUTS_BYTES`] counts it: the UTF-8 bytes of every
/// key and value.
pub fn outputs_size<'a>(outputs: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
    outputs.into_iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// A reported job state: one of the scheduler's [`JobState`]s, or `retrying` (between two
/// attempts, which the scheduler keeps as `running`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportedJobState {
    Job(JobState),
    Retrying,
}

impl ReportedJobState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportedJobState::Job(s) => s.as_str(),
            ReportedJobState::Retrying => "retrying",
        }
    }
}

impl From<JobState> for ReportedJobState {
    fn from(s: JobState) -> Self {
        ReportedJobState::Job(s)
    }
}

impl Serialize for ReportedJobState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReportedJobState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "retrying" {
            return Ok(ReportedJobState::Retrying);
        }
        serde_json::from_value::<JobState>(serde_json::Value::String(text.clone()))
            .map(ReportedJobState::Job)
            .map_err(|_| serde::de::Error::custom(format!("unknown job state {text:?}")))
    }
}
