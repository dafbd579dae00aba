//! The JSON API (documented in `docs/dashboard.md`).

use super::db::DbError;
use super::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sparkwing_core::RunPhase;
use sparkwing_engine::home::Home;
use sparkwing_engine::job_log;
use sparkwing_engine::now_ms;
use sparkwing_engine::store::dashboard_queries::RunQuery;
use sparkwing_engine::store::{JobRecord, RunRecord, StoreError};
use std::collections::HashMap;

/// Runs per list page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

/// An API error: a status and a JSON body `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn internal(e: DbError) -> ApiError {
        match e {
            DbError::Store(StoreError::RunNotFound(id)) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("run {id} not found"))
            }
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

fn list_param(params: &HashMap<String, String>, name: &str) -> Vec<String> {
    params
        .get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The list filters of `/api/runs` and the runs page: `pipeline`, `status` (comma-separated),
/// `repo`, `before` (a run id) and `limit`.
pub fn run_query(params: &HashMap<String, String>) -> Result<RunQuery, ApiError> {
    let statuses = list_param(params, "status");
    for s in &statuses {
        if s.parse::<RunPhase>().is_err() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown status {s:?}; use queued, running, success, failed or cancelled"),
            ));
        }
    }
    let limit = match params.get("limit").filter(|v| !v.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be a number from 1 to {MAX_LIMIT}, got {v:?}"),
                )
            })?,
    };
    Ok(RunQuery {
        pipelines: list_param(params, "pipeline"),
        statuses,
        repo: params.get("repo").filter(|v| !v.is_empty()).cloned(),
        before: params.get("before").filter(|v| !v.is_empty()).cloned(),
        limit,
    })
}

/// A run as the API shows it: the stored record plus `duration_ms`.
pub fn run_json(r: &RunRecord, now: i64) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["duration_ms"] = json!(r.duration_ms(now));
    v
}

pub fn run_detail_json(r: &RunRecord, jobs: &[JobRecord], now: i64) -> Value {
    let mut v = run_json(r, now);
    v["jobs"] = serde_json::to_value(jobs).unwrap_or_default();
    v
}

pub async fn find_run(state: &AppState, id: &str) -> Result<RunRecord, ApiError> {
    let id = id.to_string();
    state
        .db
        .read(move |s| s.find_run(&id))
        .await
        .map_err(ApiError::internal)
}

pub async fn find_job(
    state: &AppState,
    id: &str,
    job: &str,
) -> Result<(RunRecord, JobRecord), ApiError> {
    let run = find_run(state, id).await?;
    let rid = run.id.clone();
    let jobs = state
        .db
        .read(move |s| s.jobs(&rid))
        .await
        .map_err(ApiError::internal)?;
    let job = jobs.into_iter().find(|j| j.job_id == job).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run {} has no job {job:?}", run.id),
        )
    })?;
    Ok((run, job))
}

/// `GET /api/health`: who is serving, for `dashboard start|status|kill` and scripts.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "ok": true,
        "service": super::SERVICE,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "home": state.home.root,
    }))
}

/// `GET /api/runs`: `{"runs": [...], "total": N, "next_before": id|null}`.
pub async fn list_runs(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = run_query(&params)?;
    let (runs, total) = state
        .db
        .read(move |s| Ok((s.query_runs(&q)?, s.count_runs(&q)?)))
        .await
        .map_err(ApiError::internal)?;
    let now = now_ms();
    let next = if runs.len() as u32 == params_limit(&params) {
        runs.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(json!({
        "runs": runs.iter().map(|r| run_json(r, now)).collect::<Vec<_>>(),
        "total": total,
        "next_before": next,
    })))
}

fn params_limit(params: &HashMap<String, String>) -> u32 {
    params
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
}

/// `GET /api/runs/{id}`: the run with its jobs.
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = find_run(&state, &id).await?;
    let rid = run.id.clone();
    let jobs = state
        .db
        .read(move |s| s.jobs(&rid))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(run_detail_json(&run, &jobs, now_ms())))
}

/// `GET /api/runs/{id}/events?after=N`: the run's recorded events after sequence `N`.
pub async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let run = find_run(&state, &id).await?;
    let after: i64 = params
        .get("after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rid = run.id.clone();
    let events = state
        .db
        .read(move |s| s.events(&rid, after))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "run_id": run.id, "events": events })))
}

/// `GET /api/runs/{id}/jobs/{job}/logs?after=N&tail=M`: the job's log records.
pub async fn job_logs(
    State(state): State<AppState>,
    Path((id, job)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (run, job) = find_job(&state, &id, &job).await?;
    let after: u64 = params
        .get("after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let path = Home::job_log(std::path::Path::new(&run.log_dir), &job.job_id);
    let mut records = match job_log::read(&path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    records.retain(|r| r.seq > after);
    if let Some(n) = params.get("tail").and_then(|v| v.parse::<usize>().ok()) {
        let skip = records.len().saturating_sub(n);
        records.drain(..skip);
    }
    Ok(Json(json!({
        "run_id": run.id,
        "job": job.job_id,
        "state": job.state,
        "finished": job.state.is_terminal(),
        "records": records,
    })))
}

/// `GET /api/pipelines`: every (repository, pipeline) that has run, with its latest runs.
pub async fn pipelines(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let summaries = state
        .db
        .read(|s| s.pipeline_summaries(10))
        .await
        .map_err(ApiError::internal)?;
    let now = now_ms();
    let list: Vec<Value> = summaries
        .iter()
        .map(|p| {
            json!({
                "repo_root": p.repo_root,
                "pipeline": p.pipeline,
                "runs": p.runs,
                "last_run": p.recent.first().map(|r| run_json(r, now)),
                "recent": p.recent.iter().map(|r| run_json(r, now)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "pipelines": list })))
}
