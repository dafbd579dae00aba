//! Rows of the store, as the rest of the CLI sees them.

use rusqlite::Row;
use serde::Serialize;
use sparkwing_core::{JobState, RunPhase};

/// A run to insert.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub pipeline: String,
    pub entrypoint: String,
    pub status: RunPhase,
    /// Args with secrets already masked.
    pub args_json: String,
    pub repo_root: String,
    pub git_branch: Option<String>,
    pub git_commit: Option<String>,
    pub host: String,
    pub user: String,
    pub pid: i64,
    pub runner: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_dir: String,
    /// The run this one re-runs (`sparkwing runs retry`).
    pub retry_of: Option<String>,
}

#[cfg(test)]
impl NewRun {
    /// A running run of `pipeline` started at `at`, for tests (process executor, pid 1).
    pub(crate) fn for_test(id: &str, pipeline: &str, at: i64) -> NewRun {
        NewRun {
            id: id.into(),
            pipeline: pipeline.into(),
            entrypoint: "E".into(),
            status: RunPhase::Running,
            args_json: "{}".into(),
            repo_root: "/repo".into(),
            git_branch: Some("main".into()),
            git_commit: None,
            host: "h".into(),
            user: "u".into(),
            pid: 1,
            runner: "process".into(),
            created_at: at,
            started_at: Some(at),
            finished_at: None,
            exit_code: None,
            error: None,
            log_dir: "/logs".into(),
            retry_of: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub needs: Vec<String>,
    pub optional: bool,
    pub finally: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pipelines: Vec<String>,
    pub statuses: Vec<RunPhase>,
    pub limit: Option<u32>,
}

/// A stored run. Times are unix milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub pipeline: String,
    pub entrypoint: String,
    #[serde(with = "sparkwing_core::state::local_spelling")]
    pub status: RunPhase,
    pub args: serde_json::Value,
    pub repo_root: String,
    pub git_branch: Option<String>,
    pub git_commit: Option<String>,
    pub host: String,
    pub user: String,
    pub pid: i64,
    pub runner: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_dir: String,
    /// The run whose job started this one as a sub-pipeline.
    pub parent_run_id: Option<String>,
    /// That job's id.
    pub parent_job: Option<String>,
    /// The run this one re-runs (`sparkwing runs retry`).
    pub retry_of: Option<String>,
}

impl RunRecord {
    /// Wall time from start (or creation) to finish, or to `now` while unfinished.
    pub fn duration_ms(&self, now: i64) -> i64 {
        let start = self.started_at.unwrap_or(self.created_at);
        (self.finished_at.unwrap_or(now) - start).max(0)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRecord {
    pub run_id: String,
    pub job_id: String,
    pub position: i64,
    pub needs: Vec<String>,
    pub optional: bool,
    #[serde(rename = "finally")]
    pub is_finally: bool,
    pub state: JobState,
    pub reason: Option<String>,
    pub attempt: u32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub outputs: Option<serde_json::Value>,
    /// The sub-pipeline run this job started (await jobs only).
    pub child_run: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    pub run_id: String,
    pub seq: i64,
    pub ts: i64,
    pub job_id: Option<String>,
    pub kind: String,
    pub payload: serde_json::Value,
}

pub(super) const RUN_COLUMNS: &str = "id, pipeline, entrypoint, status, args_json, repo_root, \
    git_branch, git_commit, host, user, pid, runner, created_at, started_at, finished_at, \
    exit_code, error, log_dir, parent_run_id, parent_job, retry_of";

pub(super) const JOB_COLUMNS: &str = "run_id, job_id, position, needs_json, optional, is_finally, \
    state, reason, attempt, started_at, finished_at, exit_code, outputs_json, child_run";

fn text_column<T: std::str::FromStr>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: String = row.get(idx)?;
    s.parse::<T>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn json_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<serde_json::Value> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: row.get(0)?,
        pipeline: row.get(1)?,
        entrypoint: row.get(2)?,
        status: text_column(row, 3)?,
        args: json_column(row, 4)?,
        repo_root: row.get(5)?,
        git_branch: row.get(6)?,
        git_commit: row.get(7)?,
        host: row.get(8)?,
        user: row.get(9)?,
        pid: row.get(10)?,
        runner: row.get(11)?,
        created_at: row.get(12)?,
        started_at: row.get(13)?,
        finished_at: row.get(14)?,
        exit_code: row.get(15)?,
        error: row.get(16)?,
        log_dir: row.get(17)?,
        parent_run_id: row.get(18)?,
        parent_job: row.get(19)?,
        retry_of: row.get(20)?,
    })
}

pub(super) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let needs = json_column(row, 3)?;
    let needs = needs
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let outputs: Option<String> = row.get(12)?;
    Ok(JobRecord {
        run_id: row.get(0)?,
        job_id: row.get(1)?,
        position: row.get(2)?,
        needs,
        optional: row.get(4)?,
        is_finally: row.get(5)?,
        state: text_column(row, 6)?,
        reason: row.get(7)?,
        attempt: row.get(8)?,
        started_at: row.get(9)?,
        finished_at: row.get(10)?,
        exit_code: row.get(11)?,
        outputs: outputs.and_then(|s| serde_json::from_str(&s).ok()),
        child_run: row.get(13)?,
    })
}

pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        run_id: row.get(0)?,
        seq: row.get(1)?,
        ts: row.get(2)?,
        job_id: row.get(3)?,
        kind: row.get(4)?,
        payload: json_column(row, 5)?,
    })
}
