//! What the pages show of a run and its jobs, whichever store they come from: the local
//! dashboard fills them from the SQLite run store, the cluster's from the API's storage.

use sparkwing_core::gate::Decided;
use sparkwing_core::run_spec::TriggeringPullRequest;
use sparkwing_core::{JobState, RunPhase};

/// A run as the pages show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The id shown (`run-…` locally, `namespace/name` on a cluster).
    pub id: String,
    /// The path of its page, URL-encoded (`/runs/run-…`, `/runs/ns/name`).
    pub href: String,
    pub pipeline: String,
    pub entrypoint: String,
    /// What executed it (`process`, `docker`, `kubernetes`).
    pub runner: String,
    pub status: RunPhase,
    /// The recorded args (secrets already masked).
    pub args: serde_json::Value,
    /// Where its source came from (a repository root or URL); its last part names it in lists.
    pub repo: String,
    pub git_branch: Option<String>,
    pub git_commit: Option<String>,
    /// Who started it (`user@host`).
    pub who: String,
    /// The process that ran it, when it ran on this machine.
    pub pid: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The pull request a cluster run was started for (a pull request delivery).
    pub pull_request: Option<TriggeringPullRequest>,
}

impl Run {
    /// When it started (or was created, before it started).
    pub fn start(&self) -> i64 {
        self.started_at.unwrap_or(self.created_at)
    }
}

/// A job of a run as the pages show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub job_id: String,
    /// The jobs it needs (edges of the graph; empty where not recorded).
    pub needs: Vec<String>,
    pub optional: bool,
    pub is_finally: bool,
    pub state: JobState,
    pub reason: Option<String>,
    pub attempt: u32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
}

impl Job {
    /// A job in `state` with nothing else known.
    pub fn new(job_id: impl Into<String>, state: JobState) -> Job {
        Job {
            job_id: job_id.into(),
            needs: Vec::new(),
            optional: false,
            is_finally: false,
            state,
            reason: None,
            attempt: 0,
            started_at: None,
            finished_at: None,
            exit_code: None,
        }
    }
}

/// An approval gate of a run as the pages show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// The gate's job id.
    pub gate: String,
    /// What the plan asks whoever decides (`.message(...)`).
    pub message: Option<String>,
    pub state: JobState,
    /// Who decided when and why, once someone (or the timeout) did.
    pub decided: Option<Decided>,
}
