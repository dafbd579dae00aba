//! The own pods of placed jobs (`docs/runner.md#job-pods`): a Kubernetes Job per attempt of a
//! job, built by [`build_job_pod`] from the run's runner pod (or the placement's RunnerPool),
//! created, read and deleted for the API's `.../job-pods/{job}/{attempt}` routes. Creating is
//! idempotent (the Job's name is a function of run, job and attempt), so any API replica may
//! answer any call.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::ResourceExt;
use sparkwing_api::wire::{JobPodPhase, JobPodView};
use sparkwing_crds::{PipelineRun, RunnerPool};

use super::BackendError;
use crate::error::{is_already_exists, is_not_found};
use crate::labels::{job_pod_name, label_value, managed_selector, ATTEMPT, JOB_NAME_LABELS, RUN};
use crate::runner_job::{build_job_pod, JobPodAsk, CONTAINER};

/// The run's runner pod a job pod is made like: the running one of the highest attempt (a Job
/// pod or a claimed warm pod; both carry the run label). Pure.
pub fn coordinator_pod(pods: &[Pod]) -> Option<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .max_by_key(|p| {
            p.labels()
                .get(ATTEMPT)
                .and_then(|a| a.parse::<u32>().ok())
                .unwrap_or(0)
        })
}

/// How the runner container of `pod` ended, when it did: `exit code N` and the kubelet's reason
/// (`exit code 137 (OOMKilled)`), else the pod's own reason (`Evicted`).
fn ended_detail(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER).or(cs.first()))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match terminated {
        Some(t) => match t.reason.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => format!("exit code {} ({r})", t.exit_code),
            None => format!("exit code {}", t.exit_code),
        },
        None => match status.and_then(|s| s.reason.as_deref()) {
            Some(r) => format!("pod {r}"),
            None => "pod failed".to_string(),
        },
    }
}

/// What the job pod of Job `name` is doing, from the Job (`None`: there is none) and the pods it
/// made. Pure.
///
/// | observed | phase |
/// | --- | --- |
/// | no Job | `gone` |
/// | a pod `Pending` | `pending` |
/// | a pod `Running` | `running` |
/// | a pod `Succeeded`/`Failed` | `ended`, with how its container ended |
/// | no pod, the Job `Failed` (its pod deleted or evicted) | `ended`, with the Job's reason |
/// | no pod, the Job `Complete` | `ended` |
/// | no pod yet | `pending` |
pub fn job_pod_view(name: &str, job: Option<&Job>, pods: &[Pod]) -> JobPodView {
    let view = |phase, detail: Option<String>| JobPodView {
        name: name.to_string(),
        phase,
        detail,
    };
    let Some(job) = job else {
        return view(JobPodPhase::Gone, Some(format!("no Job {name}")));
    };
    let pod = pods
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    if let Some(pod) = pod {
        return match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => view(JobPodPhase::Running, None),
            Some("Succeeded") | Some("Failed") => view(JobPodPhase::Ended, Some(ended_detail(pod))),
            _ => view(JobPodPhase::Pending, None),
        };
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let ended = conditions
        .iter()
        .find(|c| c.status == "True" && matches!(c.type_.as_str(), "Failed" | "Complete"));
    match ended {
        Some(c) => view(
            JobPodPhase::Ended,
            Some(match (&c.reason, &c.message) {
                (Some(r), Some(m)) => format!("its Job ended ({r}: {m})"),
                (Some(r), None) => format!("its Job ended ({r})"),
                _ => format!("its Job ended ({})", c.type_),
            }),
        ),
        None => view(JobPodPhase::Pending, None),
    }
}

fn pods_of_job(job_name: &str) -> ListParams {
    ListParams::default().labels(&format!("{}={job_name}", JOB_NAME_LABELS[0]))
}

/// Create the job pod `ask` of `run` (nothing if its Job exists) and answer its view.
pub async fn start(
    client: &kube::Client,
    run: &PipelineRun,
    ask: &JobPodAsk<'_>,
) -> Result<JobPodView, BackendError> {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let job_name = job_pod_name(&name, ask.job, ask.attempt);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    if jobs.get_opt(&job_name).await?.is_none() {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let runners = pods
            .list(&ListParams::default().labels(&format!(
                "{},{RUN}={}",
                managed_selector(),
                label_value(&name)
            )))
            .await?
            .items;
        let coordinator = coordinator_pod(&runners).ok_or_else(|| {
            BackendError::Other(format!(
                "run {ns}/{name} has no running runner pod to make job pods like; a job pod is asked for by the run's runner while it runs"
            ))
        })?;
        let coordinator_spec = coordinator.spec.clone().unwrap_or_default();
        let pool = match &ask.placement.pool {
            Some(p) => {
                let pools: Api<RunnerPool> = Api::namespaced(client.clone(), &ns);
                Some(pools.get_opt(p).await?.ok_or_else(|| {
                    BackendError::Other(format!(
                        "the placement of job {} names RunnerPool {p}, which does not exist in namespace {ns}",
                        ask.job
                    ))
                })?)
            }
            None => None,
        };
        let job = build_job_pod(run, &coordinator_spec, pool.as_ref(), ask)
            .map_err(|e| BackendError::Other(e.to_string()))?;
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            // Another replica (or a repeated call) created it first: the same Job.
            Err(e) if is_already_exists(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    look(client, &ns, &name, ask.job, ask.attempt).await
}

/// The view of the job pod of attempt `attempt` of job `job` of run `ns/run`.
pub async fn look(
    client: &kube::Client,
    ns: &str,
    run: &str,
    job: &str,
    attempt: u32,
) -> Result<JobPodView, BackendError> {
    let job_name = job_pod_name(run, job, attempt);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let found = jobs.get_opt(&job_name).await?;
    let listed = match &found {
        Some(_) => pods.list(&pods_of_job(&job_name)).await?.items,
        None => Vec::new(),
    };
    Ok(job_pod_view(&job_name, found.as_ref(), &listed))
}

/// Delete that job pod: its Job, and its pods at once (absent is fine).
pub async fn delete(
    client: &kube::Client,
    ns: &str,
    run: &str,
    job: &str,
    attempt: u32,
) -> Result<(), BackendError> {
    let job_name = job_pod_name(run, job, attempt);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match jobs.delete(&job_name, &params).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    // The garbage collector would delete the pods with their grace period; the coordinator
    // already gave up on them.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    match pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &pods_of_job(&job_name),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, attempt: &str, terminated: Option<(i32, &str)>) -> Pod {
        let mut v = json!({
            "metadata": {"name": format!("p{attempt}"), "labels": {"sparkwing.dev/attempt": attempt},
                         "creationTimestamp": format!("2026-01-01T00:00:0{attempt}Z")},
            "status": {"phase": phase}
        });
        if let Some((code, reason)) = terminated {
            v["status"]["containerStatuses"] = json!([{
                "name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason}}
            }]);
        }
        serde_json::from_value(v).unwrap()
    }

    fn job(condition: Option<(&str, &str)>) -> Job {
        let mut v = json!({"metadata": {"name": "j"}});
        if let Some((t, reason)) = condition {
            v["status"] = json!({"conditions": [{"type": t, "status": "True", "reason": reason}]});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_coordinator_is_the_running_pod_of_the_highest_attempt() {
        let pods = vec![
            pod("Running", "1", None),
            pod("Running", "2", None),
            pod("Pending", "3", None),
        ];
        assert_eq!(coordinator_pod(&pods).unwrap().name_any(), "p2");
        assert!(coordinator_pod(&[pod("Failed", "1", None)]).is_none());
    }

    #[test]
    fn a_job_pod_is_seen_from_its_job_and_pod() {
        let gone = job_pod_view("j", None, &[]);
        assert_eq!(gone.phase, JobPodPhase::Gone);
        let j = job(None);
        assert_eq!(job_pod_view("j", Some(&j), &[]).phase, JobPodPhase::Pending);
        let p = pod("Pending", "1", None);
        assert_eq!(
            job_pod_view("j", Some(&j), &[p]).phase,
            JobPodPhase::Pending
        );
        let p = pod("Running", "1", None);
        assert_eq!(
            job_pod_view("j", Some(&j), &[p]).phase,
            JobPodPhase::Running
        );
        let p = pod("Failed", "1", Some((137, "OOMKilled")));
        let v = job_pod_view("j", Some(&j), &[p]);
        assert_eq!(v.phase, JobPodPhase::Ended);
        assert_eq!(v.detail.as_deref(), Some("exit code 137 (OOMKilled)"));
        let p = pod("Succeeded", "1", Some((0, "")));
        let v = job_pod_view("j", Some(&j), &[p]);
        assert_eq!(v.detail.as_deref(), Some("exit code 0"));
        // The pod deleted: the Job failed without it.
        let failed = job(Some(("Failed", "BackoffLimitExceeded")));
        let v = job_pod_view("j", Some(&failed), &[]);
        assert_eq!(v.phase, JobPodPhase::Ended);
        assert_eq!(
            v.detail.as_deref(),
            Some("its Job ended (BackoffLimitExceeded)")
        );
    }
}
