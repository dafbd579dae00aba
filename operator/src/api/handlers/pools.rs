//! Warm runners: a pool token exchanged for the runner token of the run that claimed the pod.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use sparkwing_api::wire::{ClaimAnswer, ClaimRequest};
use sparkwing_crds::pipeline_run::Source;

use crate::api::auth::{Principal, Scope};
use crate::api::{check_object_name, read_json, ApiError, ApiState};
use crate::runs::backend::is_terminal;
use crate::runs::runner_token::mint_runner_token;

/// A warm runner of `pool`, claimed by the operator for `run`, trades the pool token for the
/// run's runner token. The pod's claim is read from the pod itself (its controller must be the
/// pool, its claim annotations must name the run), so a pool token cannot get the token of a run
/// none of its pods was claimed for.
pub async fn claim(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, pool)): Path<(String, String)>,
    body: Body,
) -> Result<Json<ClaimAnswer>, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("pool name", &pool)?;
    p.require(Scope::pool(&ns, &pool))?;
    let req: ClaimRequest = read_json(body, st.config.limits.json_body, "claim request").await?;
    check_object_name("pod name", &req.pod)?;
    check_object_name("run name", &req.run)?;
    let Some(found) = st.runs.pod_claim(&ns, &req.pod).await? else {
        return Err(ApiError::NotFound(format!(
            "pod {ns}/{} not found, or not a warm runner of a RunnerPool",
            req.pod
        )));
    };
    if found.pool != pool {
        // The pod is another pool's: only that pool's token may speak for it.
        return Err(ApiError::forbidden(Scope::pool(&ns, &found.pool)));
    }
    if p.pool_uid
        .as_ref()
        .is_some_and(|uid| *uid != found.pool_uid)
    {
        // A token of an earlier pool of the same name (deleted, its Secret gone with it).
        return Err(ApiError::forbidden(Scope::pool(&ns, &pool)));
    }
    let attempt = match &found.claim {
        Some((run, attempt)) if *run == req.run => *attempt,
        Some((run, _)) => {
            return Err(ApiError::Conflict(format!(
                "pod {ns}/{} is claimed by run {run}, not {}",
                req.pod, req.run
            )))
        }
        None => {
            return Err(ApiError::Conflict(format!(
            "pod {ns}/{} is not claimed (yet): ask again once its claim annotations name run {}",
            req.pod, req.run
        )))
        }
    };
    let run = st
        .runs
        .get(&ns, &req.run)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{} not found", req.run)))?;
    if is_terminal(&run) {
        return Err(ApiError::Conflict(format!(
            "run {ns}/{} has already finished",
            req.run
        )));
    }
    let upload = match &run.spec.source {
        Source::Upload(u) => Some(u.id.clone()),
        _ => None,
    };
    let token = mint_runner_token(&st.store, &ns, &req.run, upload).await?;
    tracing::info!(%ns, %pool, pod = %req.pod, run = %req.run, attempt, "warm runner got its run token");
    Ok(Json(ClaimAnswer { token, attempt }))
}
