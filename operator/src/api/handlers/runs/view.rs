//! A PipelineRun as the API shows it ([`RunView`]), and the archive a finished run goes to on
//! the way.

use kube::ResourceExt;
use sparkwing_api::wire;
use sparkwing_crds::pipeline_run::PipelineRun;

use crate::api::{ApiError, ApiState};
use crate::runs::backend::is_terminal;

/// A run as the API shows it, with the PipelineRun itself when shown alone.
pub type RunView = wire::RunView<PipelineRun>;
/// A page of runs.
pub type RunList = wire::RunList<PipelineRun>;

/// `run` as a list shows it (no `run`, no `jobs`).
pub(super) fn view(run: &PipelineRun, live: bool, archived: bool) -> RunView {
    RunView {
        namespace: run.namespace().unwrap_or_default(),
        name: run.name_any(),
        pipeline: run.spec.pipeline.clone(),
        phase: run.status.as_ref().map(|s| s.phase).unwrap_or_default(),
        triggered_by: run.spec.triggered_by.clone(),
        parent: run.parent(),
        rerun_of: run
            .annotations()
            .get(sparkwing_api::names::RERUN_OF_ANNOTATION)
            .cloned(),
        created: run
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        live,
        archived,
        run: None,
        jobs: None,
        concurrency: None,
        job_groups: Vec::new(),
    }
}

/// Archive a finished live run unless its archived copy is finished too (known from the run
/// index, no archive read). Returns whether an archived copy exists afterwards.
pub(super) async fn archive_if_finished(
    st: &ApiState,
    run: &PipelineRun,
) -> Result<bool, ApiError> {
    let (ns, name) = (run.namespace().unwrap_or_default(), run.name_any());
    let stored = st.store.archived(&ns, &name).await?;
    archive_if_finished_given(st, run, stored.as_ref()).await
}

/// [`archive_if_finished`] with the run's index entry already looked up (`stored`).
pub(super) async fn archive_if_finished_given(
    st: &ApiState,
    run: &PipelineRun,
    stored: Option<&sparkwing_state::RunSummary>,
) -> Result<bool, ApiError> {
    let stored_finished = stored.map(|s| {
        sparkwing_core::RunPhase::from_phase_str(&s.phase).is_some_and(|p| p.is_terminal())
    });
    if is_terminal(run) && stored_finished != Some(true) {
        st.store.archive(run).await?;
        return Ok(true);
    }
    Ok(stored.is_some())
}
