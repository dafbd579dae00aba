//! `POST|GET|DELETE /api/v1/runs/{ns}/{name}/job-pods/{job}/{attempt}`: the own pods of a run's
//! placed jobs, asked for, looked at and deleted by the run's coordinator (its runner token),
//! made by the run backend (`runs::job_pods`: a Kubernetes Job per attempt).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use sparkwing_api::names::ATTEMPT_HEADER;
use sparkwing_api::wire::{JobPodRequest, JobPodView};
use sparkwing_crds::PipelineRun;
use sparkwing_state::RunKey;

use crate::api::auth::{Principal, Scope};
use crate::api::{check_job_name, check_object_name, read_json, ApiError, ApiState};
use crate::runner_job::JobPodAsk;

type JobPodPath = Path<(String, String, String, String)>;

/// The checked path: namespace, run, job and attempt (a number from 1).
fn checked(
    p: &Principal,
    (ns, name, job, attempt): (String, String, String, String),
) -> Result<(String, String, String, u32), ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    check_job_name(&job)?;
    let attempt = attempt
        .parse::<u32>()
        .ok()
        .filter(|a| *a >= 1)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "job pod of job {job}: attempt {attempt:?} is not a number from 1"
            ))
        })?;
    p.require(Scope::run(&ns, &name))?;
    Ok((ns, name, job, attempt))
}

/// The coordinator's attempt, which its job pods name in their calls (fenced with it): the call's
/// `Sparkwing-Attempt` (checked by the auth layer), else the run's current attempt.
fn run_attempt(headers: &HeaderMap, run: &PipelineRun) -> u32 {
    headers
        .get(ATTEMPT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or_else(|| run.status.as_ref().map_or(1, |s| s.attempts.max(1)))
}

/// `POST`: create the pod (nothing when it exists) and answer it. The job must be one its
/// coordinator reported, with a placement.
pub async fn start(
    State(st): State<ApiState>,
    p: Principal,
    Path(path): JobPodPath,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<JobPodView>), ApiError> {
    let (ns, name, job, attempt) = checked(&p, path)?;
    let req: JobPodRequest = read_json(body, st.config.limits.json_body, "job pod request").await?;
    let Some(placement) = req.placement else {
        return Err(ApiError::BadRequest(format!(
            "job {job} has no placement: only a placed job runs in its own pod (a job without placement runs in its coordinator's pod); send its \"placement\""
        )));
    };
    sparkwing_core::placement::validate(&placement)
        .map_err(|e| ApiError::BadRequest(format!("job {job} placement: {e}")))?;
    let run = st
        .runs
        .get(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
    if crate::runs::backend::is_terminal(&run) {
        return Err(ApiError::Conflict(format!(
            "run {ns}/{name} is finished: it starts no job pods"
        )));
    }
    let known = st
        .store
        .meta
        .job_states(&RunKey::new(&ns, &name))
        .await?
        .iter()
        .any(|(j, _)| *j == job);
    if !known {
        return Err(ApiError::NotFound(format!(
            "job {job} of run {ns}/{name} is unknown: its coordinator reported no state for it (report the job's state first)"
        )));
    }
    let ask = JobPodAsk {
        job: &job,
        attempt,
        run_attempt: run_attempt(&headers, &run),
        placement: &placement,
        item: req.item.as_deref(),
    };
    let view = st.runs.start_job_pod(&run, &ask).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET`: the pod as it is now (`gone` when there is none).
pub async fn look(
    State(st): State<ApiState>,
    p: Principal,
    Path(path): JobPodPath,
) -> Result<Json<JobPodView>, ApiError> {
    let (ns, name, job, attempt) = checked(&p, path)?;
    Ok(Json(st.runs.job_pod(&ns, &name, &job, attempt).await?))
}

/// `DELETE`: delete the pod (absent is fine).
pub async fn delete(
    State(st): State<ApiState>,
    p: Principal,
    Path(path): JobPodPath,
) -> Result<StatusCode, ApiError> {
    let (ns, name, job, attempt) = checked(&p, path)?;
    st.runs.delete_job_pod(&ns, &name, &job, attempt).await?;
    Ok(StatusCode::NO_CONTENT)
}
