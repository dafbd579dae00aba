//! Pure mapping of observed Kubernetes objects to core's decision inputs: the runner Job and pods
//! of a run to a [`RunObservation`], and the pods of a RunnerPool to [`PoolRunner`]s. No IO.
//!
//! Run outcomes, in order of precedence:
//!
//! | observed | runner state |
//! | --- | --- |
//! | Job condition `Complete` (or `SuccessCriteriaMet`), pod `Succeeded`, container exited 0 | `Succeeded` |
//! | Job condition `Failed`/`FailureTarget` with reason `DeadlineExceeded`, or the Job's `activeDeadlineSeconds` passed | `DeadlineExceeded` |
//! | pod `Evicted`, `DisruptionTarget` condition, node lost, pod failed before its container ran | `Lost` (retried) |
//! | pod deleted (deletion timestamp) while its run is not being cancelled | `Lost` (retried) |
//! | container terminated with reason `OOMKilled` | `OomKilled` |
//! | container terminated with exit code n != 0 | `Failed { n }` |
//! | container waiting with `ErrImagePull`, `ImagePullBackOff`, `InvalidImageName` | `ImagePullFailed` |
//! | Job active or failed but its pod is gone | `Lost` (retried) |
//! | pod `Running` (also while deleted for a cancel: `stopping`) | `Running` |
//! | otherwise (Job without pod yet, pod `Pending`) | `Starting` |
//!
//! A Job that is gone after being seen is core's business: with no runner observed and
//! `status.runner` set, the decision retries or fails with `RunnerLost`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use sparkwing_core::reconcile::pool::{PoolRunner, PoolRunnerState};
use sparkwing_core::reconcile::run::{ObservedRunner, RunObservation, RunnerState};
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_core::reconcile::Millis;

use crate::labels::{
    job_name, ANNOTATION_ATTEMPT, ANNOTATION_RUN, ANNOTATION_RUN_UID, ATTEMPT, CLAIMED_BY,
    JOB_NAME_LABELS, WARM,
};
use crate::runner_job::CONTAINER;

/// Container waiting reasons that mean the runner image cannot be pulled.
pub const IMAGE_PULL_REASONS: [&str; 3] = ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];

/// Unix milliseconds of a Kubernetes time.
pub fn millis(t: &Time) -> Millis {
    t.0.as_millisecond()
}

/// The runner objects of one run, as listed: its Jobs and pods (Job pods and claimed warm pods).
/// Objects of another run that had the same name are filtered out by uid.
#[derive(Debug, Clone, Default)]
pub struct RunnerObjects {
    pub jobs: Vec<Job>,
    pub pods: Vec<Pod>,
}

fn label<'a, K: ResourceExt>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.labels().get(key).map(String::as_str)
}

fn annotation<'a, K: ResourceExt>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.annotations().get(key).map(String::as_str)
}

fn owned_by(job: &Job, uid: &str) -> bool {
    job.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

fn attempt_of<K: ResourceExt>(obj: &K) -> Option<u32> {
    label(obj, ATTEMPT)
        .or_else(|| annotation(obj, ANNOTATION_ATTEMPT))
        .and_then(|a| a.parse().ok())
}

/// Is this a warm pod of a RunnerPool (claimed or not)?
pub fn is_warm(pod: &Pod) -> bool {
    label(pod, WARM) == Some("true")
}

fn is_deleting<K: ResourceExt>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Succeeded or Failed: the pod will not run again.
pub fn pod_finished(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

fn runner_container(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .find(|c| c.name == CONTAINER)
        .or_else(|| statuses.first())
}

fn terminated(c: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    c.state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
}

fn pod_condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn with_message(head: String, message: Option<&str>) -> String {
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => format!("{head}: {m}"),
        None => head,
    }
}

/// How one runner pod looks. `cancel_requested`: the run is being cancelled, so a deleted pod is
/// the operator's own stop, not a lost runner.
pub fn pod_state(pod: &Pod, cancel_requested: bool) -> RunnerState {
    let name = pod.name_any();
    let status = pod.status.as_ref();
    let reason = status.and_then(|s| s.reason.as_deref());
    let message = status.and_then(|s| s.message.as_deref());
    let phase = pod_phase(pod);
    if phase == "Succeeded" {
        return RunnerState::Succeeded;
    }
    if reason == Some("Evicted") {
        return RunnerState::Lost {
            reason: with_message(format!("pod {name} was evicted"), message),
        };
    }
    if let Some(c) = pod_condition(pod, "DisruptionTarget") {
        return RunnerState::Lost {
            reason: with_message(
                format!(
                    "pod {name} was disrupted ({})",
                    c.reason.as_deref().unwrap_or("unknown")
                ),
                c.message.as_deref(),
            ),
        };
    }
    if reason == Some("NodeLost") || phase == "Unknown" {
        return RunnerState::Lost {
            reason: with_message(format!("the node of pod {name} was lost"), message),
        };
    }
    let container = runner_container(pod);
    if let Some(t) = container.and_then(terminated) {
        if let Some(deleted) = pod.metadata.deletion_timestamp.as_ref() {
            // Exited because it was deleted (not by the operator's cancel): lost, not failed.
            let by_deletion = t
                .finished_at
                .as_ref()
                .is_none_or(|f| millis(f) >= millis(deleted));
            if by_deletion && !cancel_requested {
                return RunnerState::Lost {
                    reason: format!("pod {name} was deleted"),
                };
            }
        }
        if t.reason.as_deref() == Some("OOMKilled") {
            return RunnerState::OomKilled;
        }
        return match t.exit_code {
            0 => RunnerState::Succeeded,
            code => RunnerState::Failed {
                exit_code: Some(code),
            },
        };
    }
    if phase == "Failed" {
        // Failed without the container ever finishing: a pod-level deadline, or the kubelet
        // refused the pod (out of resources, node affinity...).
        if reason == Some("DeadlineExceeded") {
            return RunnerState::DeadlineExceeded;
        }
        return RunnerState::Lost {
            reason: with_message(
                format!("pod {name} failed ({})", reason.unwrap_or("unknown")),
                message,
            ),
        };
    }
    if is_deleting(pod) {
        return if cancel_requested {
            RunnerState::Running
        } else {
            RunnerState::Lost {
                reason: format!("pod {name} was deleted"),
            }
        };
    }
    if let Some(w) = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
    {
        if let Some(r) = w
            .reason
            .as_deref()
            .filter(|r| IMAGE_PULL_REASONS.contains(r))
        {
            let image = container.map(|c| c.image.as_str()).unwrap_or_default();
            return RunnerState::ImagePullFailed {
                message: with_message(format!("{r} for image {image:?}"), w.message.as_deref()),
            };
        }
    }
    if phase == "Running" {
        return RunnerState::Running;
    }
    RunnerState::Starting {
        unschedulable: unschedulable(pod),
    }
}

/// The scheduler's message when it could not place `pod` (`PodScheduled=False`, reason
/// `Unschedulable`), e.g. `0/1 nodes are available: 1 Insufficient cpu.`
fn unschedulable(pod: &Pod) -> Option<String> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    (c.reason.as_deref() == Some("Unschedulable")).then(|| {
        c.message
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| "no node fits it".to_string())
    })
}

fn is_finished(s: &RunnerState) -> bool {
    !matches!(s, RunnerState::Starting { .. } | RunnerState::Running)
}

/// The pod that speaks for a runner: a live one if any, else the newest.
fn current_pod<'a>(pods: &[&'a Pod]) -> Option<&'a Pod> {
    let mut sorted: Vec<&Pod> = pods.to_vec();
    sorted.sort_by(|a, b| {
        let ka = (
            a.metadata.creation_timestamp.as_ref().map(millis),
            a.name_any(),
        );
        let kb = (
            b.metadata.creation_timestamp.as_ref().map(millis),
            b.name_any(),
        );
        ka.cmp(&kb)
    });
    sorted
        .iter()
        .rev()
        .find(|p| !is_deleting(**p) && !pod_finished(p))
        .or_else(|| sorted.last())
        .copied()
}

/// How a runner Job looks, from the Job and its pods.
pub fn job_state(job: &Job, pods: &[&Pod], cancel_requested: bool, now: Millis) -> RunnerState {
    let name = job.name_any();
    let status = job.status.as_ref();
    let true_condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
    };
    if true_condition("Complete").is_some() || true_condition("SuccessCriteriaMet").is_some() {
        return RunnerState::Succeeded;
    }
    let failed = true_condition("Failed");
    let failing = failed.or_else(|| true_condition("FailureTarget"));
    if failing.is_some_and(|c| c.reason.as_deref() == Some("DeadlineExceeded")) {
        return RunnerState::DeadlineExceeded;
    }
    let deadline = job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .zip(status.and_then(|s| s.start_time.as_ref()));
    if let Some((secs, start)) = deadline {
        if now >= millis(start).saturating_add(secs.saturating_mul(1000)) {
            return RunnerState::DeadlineExceeded;
        }
    }
    let pod = current_pod(pods);
    let pod_outcome = pod.map(|p| pod_state(p, cancel_requested));
    if let Some(c) = failed {
        return match pod_outcome {
            Some(s) if is_finished(&s) => s,
            Some(_) => RunnerState::Failed { exit_code: None },
            None => RunnerState::Lost {
                reason: with_message(
                    format!(
                        "job {name} failed ({}) and its pod is gone",
                        c.reason.as_deref().unwrap_or("unknown")
                    ),
                    c.message.as_deref(),
                ),
            },
        };
    }
    match pod_outcome {
        Some(s) => s,
        None => {
            let counted =
                status.is_some_and(|s| s.active.unwrap_or(0) > 0 || s.failed.unwrap_or(0) > 0);
            if counted {
                RunnerState::Lost {
                    reason: format!("the pod of job {name} disappeared"),
                }
            } else {
                RunnerState::Starting {
                    unschedulable: None,
                }
            }
        }
    }
}

/// Whether the pod list may be behind the Job list: the newest attempt's Job counts active or
/// failed pods, yet no pod of that attempt was listed. Jobs and pods are listed at once, so the
/// pods may have been read before the Job controller created the pod it then counted; pods listed
/// again after the Jobs include it. Without this, such a Job reads as a runner whose pod vanished
/// (`Lost`) and is retried for nothing.
pub fn pods_may_be_behind(run_uid: &str, objects: &RunnerObjects) -> bool {
    let newest = objects
        .jobs
        .iter()
        .filter(|j| owned_by(j, run_uid))
        .filter_map(|j| attempt_of(j).map(|a| (a, j)))
        .max_by_key(|(a, _)| *a);
    let Some((attempt, job)) = newest else {
        return false;
    };
    let status = job.status.as_ref();
    let counts_pods =
        status.is_some_and(|s| s.active.unwrap_or(0) > 0 || s.failed.unwrap_or(0) > 0);
    // The Job controller marks a Job failed only after it saw its pod fail, so a failed Job whose
    // listed pods all look unfinished was read after pods that are already out of date (without
    // this, the run fails with "exit code unknown" instead of the pod's reason, e.g. OOMKilled).
    let failed = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"));
    let attempt_pods: Vec<&Pod> = objects
        .pods
        .iter()
        .filter(|p| {
            annotation(*p, ANNOTATION_RUN_UID) == Some(run_uid)
                && attempt_of(*p) == Some(attempt)
                && !is_warm(p)
        })
        .collect();
    if failed {
        return counts_pods
            && !attempt_pods
                .iter()
                .any(|p| pod_finished(p) || is_deleting(*p));
    }
    counts_pods && attempt_pods.is_empty()
}

/// The runner of a run: the one of the highest attempt among its Jobs, the pods of those Jobs,
/// and the warm pods it claimed. Job states reported by the runner go to `status.jobs` directly
/// (the runner owns that field), so `jobs` stays empty here.
pub fn observe_run(
    run_name: &str,
    run_uid: &str,
    objects: &RunnerObjects,
    cancel_requested: bool,
    now: Millis,
) -> RunObservation {
    let jobs: Vec<(u32, &Job)> = objects
        .jobs
        .iter()
        .filter(|j| owned_by(j, run_uid))
        .filter_map(|j| attempt_of(j).map(|a| (a, j)))
        .collect();
    let pods: Vec<(u32, &Pod)> = objects
        .pods
        .iter()
        .filter(|p| annotation(*p, ANNOTATION_RUN_UID) == Some(run_uid))
        .filter_map(|p| attempt_of(p).map(|a| (a, p)))
        .collect();
    let Some(attempt) = jobs
        .iter()
        .map(|(a, _)| *a)
        .chain(pods.iter().map(|(a, _)| *a))
        .max()
    else {
        return RunObservation::default();
    };
    let attempt_pods: Vec<&Pod> = pods
        .iter()
        .filter(|(a, _)| *a == attempt)
        .map(|(_, p)| *p)
        .collect();
    let job_pods: Vec<&Pod> = attempt_pods
        .iter()
        .copied()
        .filter(|p| !is_warm(p))
        .collect();
    let runner = if let Some((_, job)) = jobs.iter().find(|(a, _)| *a == attempt) {
        ObservedRunner {
            name: job.name_any(),
            attempt,
            state: job_state(job, &job_pods, cancel_requested, now),
            stopping: is_deleting(*job),
        }
    } else if let Some(warm) = attempt_pods.iter().find(|p| is_warm(p)) {
        ObservedRunner {
            name: warm.name_any(),
            attempt,
            state: pod_state(warm, cancel_requested),
            stopping: is_deleting(*warm),
        }
    } else {
        // Pods of a Job that is already gone (deleted with background propagation): the runner
        // lives on until they are.
        let name = job_pods
            .iter()
            .find_map(|p| JOB_NAME_LABELS.iter().find_map(|l| label(*p, l)))
            .map(str::to_string)
            .unwrap_or_else(|| job_name(run_name, attempt));
        let state = current_pod(&job_pods)
            .map(|p| pod_state(p, cancel_requested))
            .unwrap_or(RunnerState::Starting {
                unschedulable: None,
            });
        ObservedRunner {
            name,
            attempt,
            state,
            stopping: job_pods.iter().all(|p| is_deleting(*p)),
        }
    };
    RunObservation {
        runner: Some(runner),
        jobs: Vec::new(),
    }
}

/// What the pool controller needs to know about the run that claimed a warm pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunView {
    pub uid: Option<String>,
    pub phase: RunPhase,
    /// `status.runner`: the runner of its current attempt.
    pub runner: Option<String>,
}

/// The exact name of the run that claimed a warm pod, if it was claimed.
pub fn claimed_run(pod: &Pod) -> Option<String> {
    let lbl = label(pod, CLAIMED_BY)?;
    Some(annotation(pod, ANNOTATION_RUN).unwrap_or(lbl).to_string())
}

/// When an unclaimed warm pod became ready: the `Ready` condition's transition time.
pub fn idle_since(pod: &Pod) -> Option<Millis> {
    if is_deleting(pod) || label(pod, CLAIMED_BY).is_some() || pod_phase(pod) != "Running" {
        return None;
    }
    let ready = pod_condition(pod, "Ready")?;
    Some(ready.last_transition_time.as_ref().map(millis).unwrap_or(0))
}

/// A warm pod as the pool decision sees it, and whether it is spent (finished and no longer
/// needed by its run: the pool controller deletes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPodView {
    pub runner: PoolRunner,
    pub spent: bool,
}

/// Map a warm pod of a pool to its state. `run` is the run named by its claim, when that run
/// still exists (and is the same object: uids match); a claimed pod whose run is gone is spent,
/// so the caller must look the run up in the API, not only in a cache that may lag.
pub fn observe_pool_pod(pod: &Pod, run: Option<&RunView>) -> PoolPodView {
    let name = pod.name_any();
    let view = |state, spent| PoolPodView {
        runner: PoolRunner {
            name: name.clone(),
            state,
        },
        spent,
    };
    if is_deleting(pod) {
        return view(PoolRunnerState::Terminating, false);
    }
    let finished = pod_finished(pod);
    if let Some(claimer) = claimed_run(pod) {
        let run = run
            .filter(|r| r.uid.is_none() || r.uid.as_deref() == annotation(pod, ANNOTATION_RUN_UID));
        return match run {
            // Its run is gone (the caller checked with the API): nothing to protect.
            None => view(PoolRunnerState::Terminating, true),
            Some(r) if r.phase.is_terminal() && finished => {
                view(PoolRunnerState::Terminating, true)
            }
            Some(r)
                if r.phase.is_terminal()
                    || finished
                    || (r.phase == RunPhase::Running && r.runner.as_deref() == Some(&name)) =>
            {
                view(PoolRunnerState::Busy { run: claimer }, false)
            }
            Some(_) => view(PoolRunnerState::Claimed { run: claimer }, false),
        };
    }
    if finished {
        // An unclaimed runner that exited (crashed, or its image is broken): replace it.
        return view(PoolRunnerState::Terminating, true);
    }
    match idle_since(pod) {
        Some(since) => view(PoolRunnerState::Idle { since }, false),
        None => view(PoolRunnerState::Starting, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const UID: &str = "uid-r1";

    fn job(attempt: u32, status: Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("r1-a{attempt}"),
                "namespace": "default",
                "labels": {"sparkwing.dev/run": "r1", "sparkwing.dev/attempt": attempt.to_string()},
                "ownerReferences": [{
                    "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
                    "name": "r1", "uid": UID, "controller": true
                }]
            },
            "spec": {"template": {}},
            "status": status
        }))
        .unwrap()
    }

    fn pod(name: &str, attempt: u32, status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": "default",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {
                    "sparkwing.dev/run": "r1",
                    "sparkwing.dev/attempt": attempt.to_string(),
                    "batch.kubernetes.io/job-name": format!("r1-a{attempt}")
                },
                "annotations": {"sparkwing.dev/run": "r1", "sparkwing.dev/run-uid": UID}
            },
            "status": status
        }))
        .unwrap()
    }

    fn deleted(mut p: Pod, at: &str) -> Pod {
        p.metadata.deletion_timestamp = Some(serde_json::from_value(json!(at)).unwrap());
        p
    }

    fn running() -> Value {
        json!({"phase": "Running", "containerStatuses": [{
            "name": "runner", "image": "runner:1", "imageID": "", "ready": true,
            "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}
        }]})
    }

    fn terminated(phase: &str, exit: i32, reason: &str) -> Value {
        json!({"phase": phase, "containerStatuses": [{
            "name": "runner", "image": "runner:1", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {
                "exitCode": exit, "reason": reason, "finishedAt": "2026-01-01T00:01:00Z"
            }}
        }]})
    }

    fn waiting(reason: &str, message: &str) -> Value {
        json!({"phase": "Pending", "containerStatuses": [{
            "name": "runner", "image": "runner:nope", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}
        }]})
    }

    fn observe(jobs: Vec<Job>, pods: Vec<Pod>) -> Option<ObservedRunner> {
        observe_run("r1", UID, &RunnerObjects { jobs, pods }, false, 0).runner
    }

    fn state(jobs: Vec<Job>, pods: Vec<Pod>) -> RunnerState {
        observe(jobs, pods).unwrap().state
    }

    #[test]
    fn nothing_observed_is_no_runner() {
        assert_eq!(observe(vec![], vec![]), None);
    }

    #[test]
    fn job_without_pod_is_starting_and_with_running_pod_is_running() {
        let r = observe(vec![job(1, json!({}))], vec![]).unwrap();
        assert_eq!(r.name, "r1-a1");
        assert_eq!(r.attempt, 1);
        assert_eq!(
            r.state,
            RunnerState::Starting {
                unschedulable: None
            }
        );
        assert!(!r.stopping);
        assert_eq!(
            state(
                vec![job(1, json!({}))],
                vec![pod("p", 1, json!({"phase": "Pending"}))]
            ),
            RunnerState::Starting {
                unschedulable: None
            }
        );
        // The scheduler cannot place it: its reason is carried.
        let unschedulable = json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu."}]});
        assert_eq!(
            state(vec![job(1, json!({}))], vec![pod("p", 1, unschedulable)]),
            RunnerState::Starting {
                unschedulable: Some("0/1 nodes are available: 1 Insufficient cpu.".into())
            }
        );
        // Not yet scheduled for another reason (a scheduling gate): just starting.
        let gated = json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]});
        assert_eq!(
            state(vec![job(1, json!({}))], vec![pod("p", 1, gated)]),
            RunnerState::Starting {
                unschedulable: None
            }
        );
        assert_eq!(
            state(
                vec![job(1, json!({"active": 1}))],
                vec![pod("p", 1, running())]
            ),
            RunnerState::Running
        );
    }

    #[test]
    fn complete_job_succeeded() {
        let j = job(
            1,
            json!({"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}),
        );
        assert_eq!(state(vec![j], vec![]), RunnerState::Succeeded);
        // The pod's outcome is seen before the Job controller's condition.
        assert_eq!(
            state(
                vec![job(1, json!({}))],
                vec![pod("p", 1, terminated("Succeeded", 0, "Completed"))]
            ),
            RunnerState::Succeeded
        );
    }

    #[test]
    fn failed_with_exit_code() {
        let j = job(
            1,
            json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
        );
        let p = pod("p", 1, terminated("Failed", 3, "Error"));
        assert_eq!(
            state(vec![j], vec![p.clone()]),
            RunnerState::Failed { exit_code: Some(3) }
        );
        assert_eq!(
            state(vec![job(1, json!({"active": 1}))], vec![p]),
            RunnerState::Failed { exit_code: Some(3) }
        );
    }

    #[test]
    fn oom_killed() {
        let p = pod("p", 1, terminated("Failed", 137, "OOMKilled"));
        assert_eq!(
            state(vec![job(1, json!({}))], vec![p]),
            RunnerState::OomKilled
        );
    }

    #[test]
    fn evicted_and_disrupted_pods_are_lost() {
        let p = pod(
            "p",
            1,
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
        );
        let s = state(vec![job(1, json!({}))], vec![p]);
        assert_eq!(
            s,
            RunnerState::Lost {
                reason: "pod p was evicted: The node was low on resource: memory.".into()
            }
        );
        let p = pod(
            "p",
            1,
            json!({"phase": "Running", "conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting"
            }]}),
        );
        assert!(matches!(
            state(vec![job(1, json!({}))], vec![p]),
            RunnerState::Lost { reason } if reason.contains("EvictionByEvictionAPI")
        ));
    }

    #[test]
    fn image_pull_failures() {
        for reason in IMAGE_PULL_REASONS {
            let p = pod("p", 1, waiting(reason, "Back-off pulling image"));
            match state(vec![job(1, json!({}))], vec![p]) {
                RunnerState::ImagePullFailed { message } => {
                    assert!(message.starts_with(reason), "{message}");
                    assert!(message.contains("runner:nope"), "{message}");
                    assert!(message.contains("Back-off pulling image"), "{message}");
                }
                other => panic!("{reason}: {other:?}"),
            }
        }
        // Other waiting reasons are still starting.
        let p = pod("p", 1, waiting("ContainerCreating", ""));
        assert_eq!(
            state(vec![job(1, json!({}))], vec![p]),
            RunnerState::Starting {
                unschedulable: None
            }
        );
    }

    #[test]
    fn deadline_exceeded() {
        let j = job(
            1,
            json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}),
        );
        assert_eq!(state(vec![j], vec![]), RunnerState::DeadlineExceeded);
        let j = job(
            1,
            json!({"conditions": [{"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}]}),
        );
        assert_eq!(state(vec![j], vec![]), RunnerState::DeadlineExceeded);
        // Before the Job controller says so: its pods being deleted are not "lost".
        let mut j = job(1, json!({"active": 1, "startTime": "1970-01-01T00:00:00Z"}));
        j.spec.as_mut().unwrap().active_deadline_seconds = Some(60);
        let p = deleted(pod("p", 1, running()), "1970-01-01T00:01:00Z");
        let r = observe_run(
            "r1",
            UID,
            &RunnerObjects {
                jobs: vec![j.clone()],
                pods: vec![p.clone()],
            },
            false,
            60_000,
        );
        assert_eq!(r.runner.unwrap().state, RunnerState::DeadlineExceeded);
        let r = observe_run(
            "r1",
            UID,
            &RunnerObjects {
                jobs: vec![j],
                pods: vec![p],
            },
            false,
            59_999,
        );
        assert!(matches!(r.runner.unwrap().state, RunnerState::Lost { .. }));
    }

    #[test]
    fn deleted_pod_is_lost_unless_cancelling() {
        let p = deleted(pod("p", 1, running()), "2026-01-01T00:00:30Z");
        assert_eq!(
            state(vec![job(1, json!({"active": 1}))], vec![p.clone()]),
            RunnerState::Lost {
                reason: "pod p was deleted".into()
            }
        );
        let r = observe_run(
            "r1",
            UID,
            &RunnerObjects {
                jobs: vec![job(1, json!({"active": 1}))],
                pods: vec![p],
            },
            true,
            0,
        );
        assert_eq!(r.runner.unwrap().state, RunnerState::Running);
        // Killed by the deletion (SIGTERM after it): lost, not failed with 143.
        let p = deleted(
            pod("p", 1, terminated("Failed", 143, "Error")),
            "2026-01-01T00:00:30Z",
        );
        assert!(matches!(
            state(vec![job(1, json!({}))], vec![p]),
            RunnerState::Lost { .. }
        ));
        // Failed on its own, then deleted: the failure stands.
        let p = deleted(
            pod("p", 1, terminated("Failed", 2, "Error")),
            "2026-01-01T00:05:00Z",
        );
        assert_eq!(
            state(vec![job(1, json!({}))], vec![p]),
            RunnerState::Failed { exit_code: Some(2) }
        );
    }

    #[test]
    fn job_whose_pod_vanished_is_lost() {
        assert!(matches!(
            state(vec![job(1, json!({"active": 1}))], vec![]),
            RunnerState::Lost { .. }
        ));
        let j = job(
            1,
            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
        );
        assert!(matches!(
            state(vec![j], vec![]),
            RunnerState::Lost { reason } if reason.contains("BackoffLimitExceeded")
        ));
    }

    #[test]
    fn a_job_counting_a_pod_that_was_not_listed_asks_for_the_pods_again() {
        let objects = |jobs, pods| RunnerObjects { jobs, pods };
        let behind = |jobs, pods| pods_may_be_behind(UID, &objects(jobs, pods));
        // The Job counts a pod, none listed: list the pods again before calling it lost.
        assert!(behind(vec![job(1, json!({"active": 1}))], vec![]));
        assert!(behind(vec![job(1, json!({"failed": 1}))], vec![]));
        // Only the newest attempt's pods count.
        assert!(behind(
            vec![job(1, json!({"failed": 1})), job(2, json!({"active": 1}))],
            vec![pod("p1", 1, terminated("Failed", 1, "Error"))]
        ));
        // Nothing to doubt: its pod is listed, it counts none yet, no Job, another run's Job.
        assert!(!behind(
            vec![job(1, json!({"active": 1}))],
            vec![pod("p", 1, running())]
        ));
        assert!(!behind(vec![job(1, json!({}))], vec![]));
        assert!(!behind(vec![], vec![]));
        // A failed Job whose pod still looks running: the pods were read before its end.
        let failed = || {
            job(
                1,
                json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
            )
        };
        assert!(behind(vec![failed()], vec![pod("p", 1, running())]));
        assert!(behind(vec![failed()], vec![]));
        // Its pod's end is listed: nothing to doubt.
        assert!(!behind(
            vec![failed()],
            vec![pod("p", 1, terminated("Failed", 137, "OOMKilled"))]
        ));
        let mut foreign = job(1, json!({"active": 1}));
        foreign.metadata.owner_references = None;
        assert!(!behind(vec![foreign], vec![]));
    }

    #[test]
    fn job_being_deleted_is_stopping_and_its_orphan_pods_still_speak() {
        let mut j = job(1, json!({"active": 1}));
        j.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:30Z")).unwrap());
        assert!(
            observe(vec![j], vec![pod("p", 1, running())])
                .unwrap()
                .stopping
        );
        // Job gone, pod still terminating during a cancel: running, stopping.
        let p = deleted(pod("p", 1, running()), "2026-01-01T00:00:30Z");
        let r = observe_run(
            "r1",
            UID,
            &RunnerObjects {
                jobs: vec![],
                pods: vec![p],
            },
            true,
            0,
        )
        .runner
        .unwrap();
        assert_eq!(r.name, "r1-a1");
        assert_eq!(r.state, RunnerState::Running);
        assert!(r.stopping);
    }

    #[test]
    fn highest_attempt_wins_and_foreign_objects_are_ignored() {
        let r = observe(
            vec![job(1, json!({})), job(2, json!({}))],
            vec![pod("p1", 1, running())],
        )
        .unwrap();
        assert_eq!((r.name.as_str(), r.attempt), ("r1-a2", 2));
        let mut foreign = job(3, json!({}));
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        let r = observe(vec![job(1, json!({})), foreign], vec![]).unwrap();
        assert_eq!(r.attempt, 1);
        let mut stranger = pod("p9", 9, running());
        stranger
            .annotations_mut()
            .insert(ANNOTATION_RUN_UID.into(), "other".into());
        assert_eq!(observe(vec![], vec![stranger]), None);
    }

    fn warm(name: &str, claimed: Option<(&str, u32)>, status: Value) -> Pod {
        let mut labels = json!({"sparkwing.dev/pool": "p", "sparkwing.dev/warm": "true"});
        let mut annotations = json!({});
        if let Some((run, attempt)) = claimed {
            labels["sparkwing.dev/claimed-by"] = json!(run);
            labels["sparkwing.dev/attempt"] = json!(attempt.to_string());
            annotations = json!({
                "sparkwing.dev/run": run, "sparkwing.dev/run-uid": format!("uid-{run}"),
                "sparkwing.dev/attempt": attempt.to_string()
            });
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels, "annotations": annotations},
            "status": status
        }))
        .unwrap()
    }

    fn ready_since(t: &str) -> Value {
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]})
    }

    #[test]
    fn claimed_warm_pod_is_the_runs_runner() {
        let p = warm("w1", Some(("r1", 2)), running());
        let r = observe(vec![job(1, json!({}))], vec![p]).unwrap();
        assert_eq!((r.name.as_str(), r.attempt), ("w1", 2));
        assert_eq!(r.state, RunnerState::Running);
        let p = warm(
            "w1",
            Some(("r1", 1)),
            terminated("Failed", 137, "OOMKilled"),
        );
        assert_eq!(state(vec![], vec![p]), RunnerState::OomKilled);
    }

    #[test]
    fn pool_pod_states() {
        let run = |phase, runner: Option<&str>| RunView {
            uid: Some("uid-r1".into()),
            phase,
            runner: runner.map(String::from),
        };
        let st = |p: &Pod, r: Option<&RunView>| observe_pool_pod(p, r);

        let starting = warm("a", None, json!({"phase": "Pending"}));
        assert_eq!(st(&starting, None).runner.state, PoolRunnerState::Starting);
        let not_ready = warm("a", None, json!({"phase": "Running"}));
        assert_eq!(st(&not_ready, None).runner.state, PoolRunnerState::Starting);

        let idle = warm("a", None, ready_since("1970-01-01T00:00:10Z"));
        assert_eq!(
            st(&idle, None).runner.state,
            PoolRunnerState::Idle { since: 10_000 }
        );
        assert_eq!(idle_since(&idle), Some(10_000));

        let claimed = warm("a", Some(("r1", 1)), ready_since("1970-01-01T00:00:10Z"));
        assert_eq!(idle_since(&claimed), None);
        assert_eq!(
            st(&claimed, Some(&run(RunPhase::Pending, None)))
                .runner
                .state,
            PoolRunnerState::Claimed { run: "r1".into() }
        );
        assert_eq!(
            st(&claimed, Some(&run(RunPhase::Running, Some("a"))))
                .runner
                .state,
            PoolRunnerState::Busy { run: "r1".into() }
        );
        // Running on another runner (an older attempt): still only claimed.
        assert_eq!(
            st(&claimed, Some(&run(RunPhase::Running, Some("b"))))
                .runner
                .state,
            PoolRunnerState::Claimed { run: "r1".into() }
        );
        // Claimed by a run that no longer exists: spent, even while running.
        let v = st(&claimed, None);
        assert_eq!(v.runner.state, PoolRunnerState::Terminating);
        assert!(v.spent);

        // Finished: kept while its run has not recorded the outcome, then spent.
        let done = warm(
            "a",
            Some(("r1", 1)),
            terminated("Succeeded", 0, "Completed"),
        );
        let v = st(&done, Some(&run(RunPhase::Running, Some("a"))));
        assert_eq!(v.runner.state, PoolRunnerState::Busy { run: "r1".into() });
        assert!(!v.spent);
        let v = st(&done, Some(&run(RunPhase::Succeeded, Some("a"))));
        assert_eq!(v.runner.state, PoolRunnerState::Terminating);
        assert!(v.spent);
        assert!(st(&done, None).spent);
        // A run of the same name but another uid is not the claimer.
        let other = RunView {
            uid: Some("uid-new".into()),
            ..run(RunPhase::Running, Some("a"))
        };
        assert!(st(&done, Some(&other)).spent);

        let crashed = warm("a", None, terminated("Failed", 1, "Error"));
        assert!(st(&crashed, None).spent);

        let going = deleted(idle.clone(), "2026-01-01T00:00:00Z");
        let v = st(&going, None);
        assert_eq!(v.runner.state, PoolRunnerState::Terminating);
        assert!(!v.spent);
    }
}
