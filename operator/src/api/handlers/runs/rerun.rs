//! `POST /api/v1/runs/{ns}/{name}/rerun`: a whole-run re-run of a live or archived run — a new
//! run of the same pipeline, source, args and settings (`crate::runs::rerun`), checked and
//! created as a trigger is. The cluster dashboard's Re-run button calls [`rerun_run`] too.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sparkwing_api::wire::CreatedRun;
use sparkwing_crds::pipeline_run::{PipelineRun, Source};

use super::trigger::{asked_by, check_source, create_run, run_name};
use crate::api::auth::{Principal, Scope};
use crate::api::{check_object_name, ApiError, ApiState, ClientAddr};

pub async fn rerun(
    State(st): State<ApiState>,
    p: Principal,
    ClientAddr(host): ClientAddr,
    Path((ns, name)): Path<(String, String)>,
) -> Result<(StatusCode, Json<CreatedRun>), ApiError> {
    let created = rerun_run(&st, &p, host, &ns, &name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Re-run `ns/name` for `p` (asking from `host`): `runs:trigger`; 404 for a run neither live nor
/// archived; 409 for a run executed outside the cluster or whose upload was collected.
pub async fn rerun_run(
    st: &ApiState,
    p: &Principal,
    host: Option<String>,
    ns: &str,
    name: &str,
) -> Result<CreatedRun, ApiError> {
    check_object_name("namespace", ns)?;
    check_object_name("run name", name)?;
    p.require(Scope::RunsTrigger)?;
    let original = original(st, ns, name).await?;
    match &original.spec.source {
        Source::External(_) => {
            return Err(ApiError::Conflict(format!(
                "run {ns}/{name} was executed outside the cluster (source external) and cannot be \
                 re-run here: run pipeline {} again where it ran (sparkwing run {} --profile P)",
                original.spec.pipeline, original.spec.pipeline
            )))
        }
        Source::Upload(u) if st.store.get_upload(&u.id).await?.is_none() => {
            return Err(ApiError::Conflict(format!(
                "the upload {} of run {ns}/{name} is gone (collected after the run finished): \
                 trigger pipeline {} again from the working tree (sparkwing pipeline trigger {} \
                 --profile P)",
                u.id, original.spec.pipeline, original.spec.pipeline
            )))
        }
        _ => {}
    }
    check_source(st, p, &original.spec.source).await?;
    let run = crate::runs::rerun::rerun_of(
        &original,
        run_name(&original.spec.pipeline)?,
        asked_by(p, host),
    );
    let created = create_run(st, p, run).await?;
    tracing::info!(%ns, %name, new = %created.name, principal = %p.name, "run re-run");
    Ok(created)
}

/// The run `ns/name`, live or from the archive.
async fn original(st: &ApiState, ns: &str, name: &str) -> Result<PipelineRun, ApiError> {
    if let Some(run) = st.runs.get(ns, name).await? {
        return Ok(run);
    }
    match st.store.read_archive(ns, name).await? {
        Some(a) => Ok(a.run),
        None => Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
    }
}
