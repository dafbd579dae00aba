//! Commit statuses: a run started by a GitHub delivery (push or pull request) posts its state to
//! the commit it runs (`context` `sparkwing/<pipeline>`), with the credentials of the Secret its
//! Pipeline names (`spec.github.secretRef`). The state to post is decided by the pure
//! [`to_post`]; what was posted is recorded on the run (annotation `sparkwing.dev/commit-status`),
//! so each state is posted once, across restarts. A separate controller: a slow or failing
//! GitHub never holds up or fails a run. Transient failures are retried by the client, then by
//! the controller's backoff; a refusal (401/403, another 4xx, missing credentials) is recorded
//! on the run (`sparkwing.dev/commit-status-error`) and shows as the Pipeline's `CommitStatus`
//! condition (`pipeline::commit_status_condition`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_crds::pipeline::{Pipeline, PIPELINE_LABEL};
use sparkwing_crds::PipelineRun;

use super::{api, Context};
use crate::error::{Error, Result};
use crate::github::{
    description, pipeline_credentials, CommitStatus, GitHubClient, GitHubError, StatusState,
};
use crate::labels::{
    COMMIT_ANNOTATION, COMMIT_STATUS_ANNOTATION, COMMIT_STATUS_ERROR_ANNOTATION,
    GITHUB_REPOSITORY_ANNOTATION, PIPELINE_ANNOTATION,
};
use crate::runs::backend::{KubeRuns, RunBackend};

/// The controller's name in metrics and logs.
pub const NAME: &str = "commit-status";

/// What the commit status controller needs: the client and the dashboard's base URL.
pub struct CommitStatuses {
    pub client: GitHubClient,
    /// `target_url` of each status is `<dashboard_url>/runs/<namespace>/<name>`; `None`: no link.
    pub dashboard_url: Option<String>,
}

/// A status to post: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// `owner/name`.
    pub repository: String,
    pub sha: String,
    pub status: CommitStatus,
}

/// The state a run's phase posts.
pub fn state_of(phase: RunPhase) -> StatusState {
    match phase {
        RunPhase::Pending | RunPhase::Running => StatusState::Pending,
        RunPhase::Succeeded => StatusState::Success,
        RunPhase::Failed => StatusState::Failure,
        // GitHub has no cancelled state.
        RunPhase::Cancelled => StatusState::Error,
    }
}

/// The description of a run's status: the failing job of a failure.
fn description_of(run: &PipelineRun, phase: RunPhase) -> String {
    let status = run.status.clone().unwrap_or_default();
    let text = match phase {
        RunPhase::Pending => "waiting for a runner".to_string(),
        RunPhase::Running => "running".to_string(),
        RunPhase::Succeeded => "succeeded".to_string(),
        RunPhase::Cancelled => "cancelled".to_string(),
        RunPhase::Failed => match status.jobs.iter().find(|j| j.state == "failed") {
            Some(j) => match &j.reason {
                Some(r) if !r.is_empty() => format!("job {} failed: {r}", j.name),
                _ => format!("job {} failed", j.name),
            },
            None => match status.conditions.last() {
                Some(c) if !c.message.is_empty() => format!("{}: {}", c.reason, c.message),
                Some(c) => c.reason.clone(),
                None => "failed".to_string(),
            },
        },
    };
    description(&text)
}

/// The status `run` should post now (pure): `None` for a run not started by a GitHub delivery,
/// or whose current state was posted already.
pub fn to_post(run: &PipelineRun, dashboard_url: Option<&str>) -> Option<Post> {
    let a = run.annotations();
    let repository = a.get(GITHUB_REPOSITORY_ANNOTATION)?.clone();
    let sha = a.get(COMMIT_ANNOTATION)?.clone();
    let pipeline = a.get(PIPELINE_ANNOTATION)?;
    let phase = run.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let state = state_of(phase);
    if a.get(COMMIT_STATUS_ANNOTATION).map(String::as_str) == Some(state.as_str()) {
        return None;
    }
    let target_url = dashboard_url.map(|d| {
        format!(
            "{}/runs/{}/{}",
            d.trim_end_matches('/'),
            run.namespace().unwrap_or_default(),
            run.name_any()
        )
    });
    Some(Post {
        repository,
        sha,
        status: CommitStatus {
            state,
            target_url,
            description: Some(description_of(run, phase)),
            context: format!("sparkwing/{pipeline}"),
        },
    })
}

/// The annotations recording that `state` was dealt with: posted (`error: None`), or refused
/// (`error`: `<reason>: <message>`, not tried again for this state).
pub fn recorded(state: StatusState, error: Option<String>) -> BTreeMap<String, Option<String>> {
    BTreeMap::from([
        (
            COMMIT_STATUS_ANNOTATION.to_string(),
            Some(state.as_str().to_string()),
        ),
        (COMMIT_STATUS_ERROR_ANNOTATION.to_string(), error),
    ])
}

/// Build the controller (not running yet): runs of Pipelines.
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<PipelineRun> {
    Controller::new(
        api::<PipelineRun>(client, namespace),
        watcher::Config::default().labels(PIPELINE_LABEL),
    )
}

/// Run the controller until `shutdown`.
pub async fn run(
    controller: Controller<PipelineRun>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    super::drive(NAME, controller, reconcile, ctx, shutdown).await
}

/// Why a run's status cannot be posted, as recorded (`<reason>: <message>`).
pub(crate) fn refusal(e: &GitHubError) -> String {
    match e {
        GitHubError::Unauthorized { .. } => format!("Unauthorized: {e}"),
        GitHubError::Key(_) => format!("NoCredentials: {e}"),
        _ => format!("Rejected: {e}"),
    }
}

async fn reconcile(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let Some(cfg) = ctx.commit_statuses.as_ref() else {
        return Ok(Action::await_change());
    };
    if to_post(&run, cfg.dashboard_url.as_deref()).is_none() {
        return Ok(Action::await_change());
    }
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    // The cache may not show this controller's last annotation yet: decide on the run as stored,
    // so a state is never posted twice.
    let Some(run) = api::<PipelineRun>(&ctx.client, Some(&ns))
        .get_opt(&name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    let Some(post) = to_post(&run, cfg.dashboard_url.as_deref()) else {
        return Ok(Action::await_change());
    };
    let pipeline_name = run.annotations()[PIPELINE_ANNOTATION].clone();
    let Some(pipeline) = api::<Pipeline>(&ctx.client, Some(&ns))
        .get_opt(&pipeline_name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    let state = post.status.state;
    let error = match pipeline_credentials(&ctx.client, &ns, &pipeline).await? {
        // The Pipeline asks for no commit statuses.
        None => return Ok(Action::await_change()),
        Some(Err(missing)) => Some(missing),
        Some(Ok(creds)) => match cfg
            .client
            .post_status(&creds, &post.repository, &post.sha, &post.status)
            .await
        {
            Ok(()) => None,
            Err(e) if e.retryable() => {
                return Err(Error::GitHub {
                    run: format!("{ns}/{name}"),
                    message: e.to_string(),
                })
            }
            Err(e) => Some(refusal(&e)),
        },
    };
    match &error {
        None => {
            tracing::info!(namespace = %ns, run = %name, state = state.as_str(), repository = %post.repository, commit = %post.sha, "commit status posted")
        }
        Some(e) => {
            tracing::warn!(namespace = %ns, run = %name, state = state.as_str(), error = %e, "commit status not posted")
        }
    }
    KubeRuns::new(ctx.client.clone())
        .annotate(&ns, &name, &recorded(state, error))
        .await
        .map_err(|e| Error::GitHub {
            run: format!("{ns}/{name}"),
            message: format!("recording the posted status: {e}"),
        })?;
    ctx.succeeded(&run);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::PIPELINE_ANNOTATION;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use sparkwing_core::reconcile::status::{JobStatus, RunStatus};

    fn run(name: &str, phase: Option<RunPhase>, posted: Option<&str>) -> PipelineRun {
        let mut annotations = BTreeMap::from([
            (PIPELINE_ANNOTATION.to_string(), "app".to_string()),
            (
                GITHUB_REPOSITORY_ANNOTATION.to_string(),
                "acme/app".to_string(),
            ),
            (COMMIT_ANNOTATION.to_string(), "abc123".to_string()),
        ]);
        if let Some(p) = posted {
            annotations.insert(COMMIT_STATUS_ANNOTATION.to_string(), p.to_string());
        }
        let mut r = PipelineRun::test(name);
        r.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ci".into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        };
        r.status = phase.map(|phase| RunStatus {
            phase,
            ..RunStatus::default()
        });
        r
    }

    #[test]
    fn each_phase_posts_its_state_once() {
        let cases = [
            (None, StatusState::Pending, "waiting for a runner"),
            (Some(RunPhase::Running), StatusState::Pending, "running"),
            (Some(RunPhase::Succeeded), StatusState::Success, "succeeded"),
            (Some(RunPhase::Cancelled), StatusState::Error, "cancelled"),
        ];
        for (phase, state, desc) in cases {
            let p = to_post(&run("app-1", phase, None), Some("https://ci.example.com/")).unwrap();
            assert_eq!(p.repository, "acme/app");
            assert_eq!(p.sha, "abc123");
            assert_eq!(
                p.status,
                CommitStatus {
                    state,
                    target_url: Some("https://ci.example.com/runs/ci/app-1".into()),
                    description: Some(desc.into()),
                    context: "sparkwing/app".into(),
                }
            );
            // Posted: nothing more for that state.
            assert_eq!(
                to_post(&run("app-1", phase, Some(state.as_str())), None),
                None
            );
        }
        // Running after pending was posted: nothing new (both are `pending`).
        assert_eq!(
            to_post(
                &run("app-1", Some(RunPhase::Running), Some("pending")),
                None
            ),
            None
        );
        // Without a dashboard URL, no link.
        let p = to_post(&run("app-1", None, None), None).unwrap();
        assert_eq!(p.status.target_url, None);
        // Not started by GitHub: nothing.
        let mut plain = run("app-2", None, None);
        plain.annotations_mut().remove(GITHUB_REPOSITORY_ANNOTATION);
        assert_eq!(to_post(&plain, None), None);
    }

    #[test]
    fn a_failure_names_the_failing_job() {
        let mut r = run("app-1", Some(RunPhase::Failed), Some("pending"));
        r.status.as_mut().unwrap().jobs = vec![
            JobStatus {
                name: "build".into(),
                state: "succeeded".into(),
                ..JobStatus::default()
            },
            JobStatus {
                name: "test".into(),
                state: "failed".into(),
                reason: Some("exit code 101".into()),
                ..JobStatus::default()
            },
        ];
        let p = to_post(&r, None).unwrap();
        assert_eq!(p.status.state, StatusState::Failure);
        assert_eq!(
            p.status.description.as_deref(),
            Some("job test failed: exit code 101")
        );
        let long = "x".repeat(300);
        r.status.as_mut().unwrap().jobs[1].reason = Some(long);
        let d = to_post(&r, None).unwrap().status.description.unwrap();
        assert_eq!(d.chars().count(), 140);
    }
}
