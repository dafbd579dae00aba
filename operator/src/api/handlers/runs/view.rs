//! A PipelineRun as the API shows it ([`RunView`]), and the archive a finished run goes to on
//! the way.

use kube::ResourceExt;
use sparkwing_api::wire;
use sparkwing_crds::pipeline_run::PipelineRun;

use crate::api::auth::now_rfc3339;
use crate::api::runs::is_terminal;
use crate::api::storage::ArchivedRun;
use crate::api::{blocking, ApiError, ApiState};

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
        created: run
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        live,
        archived,
        run: None,
        jobs: None,
    }
}

/// Archive a finished live run unless its archived copy is finished too (known from the archive
/// index, no file read). Returns whether an archived copy exists afterwards.
pub(super) async fn archive_if_finished(
    st: &ApiState,
    run: &PipelineRun,
) -> Result<bool, ApiError> {
    let storage = st.storage.clone();
    let run = run.clone();
    blocking(move || {
        let (ns, name) = (run.namespace().unwrap_or_default(), run.name_any());
        let stored = storage.archived_finished(&ns, &name)?;
        if is_terminal(&run) && stored != Some(true) {
            storage.write_archive(
                &ns,
                &name,
                &ArchivedRun {
                    archived_at: now_rfc3339(),
                    run,
                },
            )?;
            return Ok::<_, ApiError>(true);
        }
        Ok(stored.is_some())
    })
    .await
}
