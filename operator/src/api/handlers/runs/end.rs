//! The end of a run: `POST .../cancel` (people) and `POST .../finish` (its runner, or an
//! external run's executor).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kube::ResourceExt;
use sparkwing_api::wire::{CancelRequest, FinishRequest};
use sparkwing_core::reconcile::run as core_run;
use sparkwing_core::RunPhase;
use sparkwing_crds::pipeline_run::{CancelMode, PipelineRun, Source};
use sparkwing_state::RunKey;

use super::view::{view, RunView};
use crate::api::auth::{Principal, Scope};
use crate::api::{check_object_name, ApiError, ApiState};
use crate::runs::backend::{is_terminal, BackendError};

pub async fn cancel(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require(Scope::RunsTrigger)?;
    let bytes = crate::api::read_body(body, st.config.limits.json_body, "cancel request").await?;
    let req: CancelRequest = if bytes.is_empty() {
        CancelRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("cancel request: {e}")))?
    };
    let mode = req.mode.unwrap_or(CancelMode::Cancelled);
    match st.runs.cancel(&ns, &name, mode).await? {
        Some(run) => {
            tracing::info!(%ns, %name, principal = %p.name, ?mode, "run cancel requested");
            Ok((StatusCode::ACCEPTED, Json(view(&run, true, false))))
        }
        None => Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
    }
}

/// How many times a finish re-reads an external run that changed while its end was written.
const FINISH_ATTEMPTS: usize = 5;

/// Record the end of an external run (unless it already has one), by server-side apply guarded
/// by the version read. Returns the run as it is afterwards.
async fn record_external_end(
    st: &ApiState,
    mut run: PipelineRun,
    end: RunPhase,
    message: &str,
) -> Result<PipelineRun, ApiError> {
    let (ns, name) = (run.namespace().unwrap_or_default(), run.name_any());
    for _ in 0..FINISH_ATTEMPTS {
        let prev = run.status.clone().unwrap_or_default();
        let generation = run.metadata.generation.unwrap_or(0);
        let Some(status) =
            core_run::record_external_end(&prev, end, message, generation, now_millis())
        else {
            return Ok(run);
        };
        let rv = run.metadata.resource_version.clone();
        match st
            .runs
            .write_external_status(&ns, &name, &status, rv.as_deref())
            .await
        {
            Ok(Some(updated)) => return Ok(updated),
            Ok(None) => return Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
            Err(BackendError::Conflict(_)) => {
                run = st
                    .runs
                    .get(&ns, &name)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "run {ns}/{name} kept changing while its end was recorded; retry"
    )))
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 * 1000)
        .unwrap_or(0)
}

/// The runner is done: for an external run, record the end its body names (`{"phase":
/// "Succeeded"|"Failed"|"Cancelled", "message": "..."}`), archive it and revoke its runner tokens.
/// A run on the cluster takes no end from the body (the operator decides from its Job); it is
/// archived as it is now, and its tokens are revoked only when its end is certain (the
/// [`finish_revokes`] rule). (A superseded attempt's finish never gets here: `fence`.)
pub async fn finish(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<Json<RunView>, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require(Scope::run(&ns, &name))?;
    let bytes = crate::api::read_body(body, st.config.limits.json_body, "finish request").await?;
    let mut run = st
        .runs
        .get(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
    let req: FinishRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        FinishRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("finish request: {e}")))?
    };
    if matches!(run.spec.source, Source::External(_)) {
        let end = req.phase.filter(|p| p.is_terminal()).ok_or_else(|| {
            ApiError::BadRequest(
                "an external run's finish needs \"phase\": Succeeded, Failed or Cancelled".into(),
            )
        })?;
        run = record_external_end(&st, run, end, req.message.as_deref().unwrap_or("")).await?;
        tracing::info!(%ns, %name, phase = ?end, "external run finished");
        st.store.archive(&run).await?;
        st.store.forget_run_tokens(&ns, &name).await?;
        super::concurrency::release(&st, &RunKey::new(&ns, &name)).await;
        return Ok(Json(view(&run, true, true)));
    }
    if let Some(parked) = req.parked {
        // Parked, not ended: the run, its token and its attempts go on.
        if req.phase.is_some() {
            return Err(ApiError::BadRequest(
                "a finish reports either \"phase\" or \"parked\", not both".into(),
            ));
        }
        if parked.gates.is_empty() || parked.attempt == 0 {
            return Err(ApiError::BadRequest(
                "\"parked\" needs the attempt that parked (from 1) and the gates it waits for"
                    .into(),
            ));
        }
        if is_terminal(&run) {
            return Err(ApiError::Conflict(format!(
                "run {ns}/{name} already finished; it cannot park"
            )));
        }
        super::park::record(&st, &ns, &name, parked).await?;
        return Ok(Json(view(&run, true, false)));
    }
    st.store.archive(&run).await?;
    let ended = finish_revokes(is_terminal(&run), req.phase);
    if ended {
        st.store.forget_run_tokens(&ns, &name).await?;
    }
    // Its concurrency group's slot is free at once, unless another attempt may follow (a runner
    // stopped by a signal without a cancel of the run may have lost its pod; the next attempt
    // takes the same entry, or its lease ends).
    if ended || run.spec.cancel.is_some() {
        super::concurrency::release(&st, &RunKey::new(&ns, &name)).await;
    }
    Ok(Json(view(&run, true, true)))
}

/// Whether a cluster run's finish revokes its runner tokens at once: when the run has ended, or
/// the runner reports the pipeline's own end (Succeeded, Failed: no attempt follows those). A
/// runner stopped by a signal (Cancelled) may have lost its pod, and the operator may start
/// another attempt that needs the token; the token sweep expires it once the run has ended.
/// A finish without a phase (an older runner) revokes, as before.
pub fn finish_revokes(run_ended: bool, reported: Option<RunPhase>) -> bool {
    run_ended || !matches!(reported, Some(RunPhase::Cancelled))
}
