//! What a run's runner reports besides logs: its jobs' states (`PUT .../jobs/{job}`) and, for a
//! webhook run, its branch check (`PUT .../branch-check`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kube::ResourceExt;
use sparkwing_api::names::{BRANCHES_IN_SYNC_ANNOTATION, BRANCH_DRIFT_ANNOTATION};
use sparkwing_api::wire::{outputs_size, BranchCheck, MAX_JOB_OUTPUTS_BYTES};

use crate::api::auth::{Principal, Scope};
use crate::api::{check_job_name, check_object_name, read_json, ApiError, ApiState};

pub async fn put_job_state(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, job)): Path<(String, String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    check_job_name(&job)?;
    p.require(Scope::run(&ns, &name))?;
    let state: serde_json::Value = read_json(body, st.config.limits.json_body, "job state").await?;
    if !state.is_object() {
        return Err(ApiError::BadRequest("a job state is a JSON object".into()));
    }
    check_outputs(&job, &state)?;
    st.store
        .meta
        .put_job_state(&sparkwing_state::RunKey::new(&ns, &name), &job, &state)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A job state's `outputs`, when present (`null` reads as absent): an object of string values
/// whose keys and values hold at most [`MAX_JOB_OUTPUTS_BYTES`] bytes. Over it: a 413 naming the
/// job and the limit; another shape: a 400.
pub fn check_outputs(job: &str, state: &serde_json::Value) -> Result<(), ApiError> {
    let outputs = match state.get("outputs") {
        None | Some(serde_json::Value::Null) => return Ok(()),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "job {job}: \"outputs\" must be a JSON object of output names to string values"
            )))
        }
    };
    let mut pairs = Vec::with_capacity(outputs.len());
    for (k, v) in outputs {
        let Some(v) = v.as_str() else {
            return Err(ApiError::BadRequest(format!(
                "job {job}: output {k:?} is not a string: an output's value is a string"
            )));
        };
        pairs.push((k.as_str(), v));
    }
    let size = outputs_size(pairs);
    if size > MAX_JOB_OUTPUTS_BYTES {
        return Err(ApiError::TooLarge(format!(
            "job {job}: its outputs hold {size} bytes (keys and values), over the limit of {MAX_JOB_OUTPUTS_BYTES} bytes per job; set fewer or smaller outputs"
        )));
    }
    Ok(())
}

/// Longest drift message kept (bytes).
pub const MAX_BRANCH_DRIFT_MESSAGE: usize = 2048;

/// The annotations recording a branch check (`None`: removed), or why the body is refused.
pub fn branch_check_annotations(
    check: BranchCheck,
) -> Result<BTreeMap<String, Option<String>>, ApiError> {
    let message = match (check.in_sync, check.message) {
        (true, None) => None,
        (true, Some(_)) => {
            return Err(ApiError::BadRequest(
                "branch check: \"message\" is for a drift (\"inSync\": false) only".into(),
            ))
        }
        (false, None) => {
            return Err(ApiError::BadRequest(
                "branch check: a drift (\"inSync\": false) needs a \"message\" naming both lists"
                    .into(),
            ))
        }
        (false, Some(m)) => {
            let m = m.trim().to_string();
            if m.is_empty() || m.len() > MAX_BRANCH_DRIFT_MESSAGE || m.chars().any(char::is_control)
            {
                return Err(ApiError::BadRequest(format!(
                        "branch check: the message must be 1 to {MAX_BRANCH_DRIFT_MESSAGE} bytes on one line, without control characters"
                    )));
            }
            Some(m)
        }
    };
    Ok(BTreeMap::from([
        (
            BRANCHES_IN_SYNC_ANNOTATION.to_string(),
            Some(check.in_sync.to_string()),
        ),
        (BRANCH_DRIFT_ANNOTATION.to_string(), message),
    ]))
}

/// `PUT .../branch-check` (the run's runner, or admin): record the runner's branch comparison as
/// the run's `sparkwing.dev/branches-in-sync` and `sparkwing.dev/branch-drift` annotations, by a
/// merge patch of those two annotations alone. Only runs started by a Pipeline's push (they carry
/// `sparkwing.dev/push-branches`) have something to compare: others are a 409.
pub async fn put_branch_check(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require(Scope::run(&ns, &name))?;
    let check: BranchCheck = read_json(body, st.config.limits.json_body, "branch check").await?;
    let in_sync = check.in_sync;
    let annotations = branch_check_annotations(check)?;
    let run = st
        .runs
        .get(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
    if !run
        .annotations()
        .contains_key(sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION)
    {
        return Err(ApiError::Conflict(format!(
            "run {ns}/{name} was not started by a Pipeline's push (it has no {} annotation): there are no Pipeline branches to compare",
            sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION
        )));
    }
    match st.runs.annotate(&ns, &name, &annotations).await? {
        Some(_) => {
            tracing::info!(%ns, %name, in_sync, "branch check recorded");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
    }
}
