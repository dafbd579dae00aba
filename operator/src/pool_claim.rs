//! Claiming a warm runner: an update of the idle pod's labels and annotations carrying the pod's
//! `metadata.resourceVersion`, so the API server refuses it with 409 Conflict when anything
//! changed the pod since it was read (another claim, a reap, a deletion). The loser reads again
//! and tries the next idle pod; two runs never get one runner.
//!
//! A claimed pod gets:
//!
//! - labels `sparkwing.dev/claimed-by=<run>` (label-safe name), `sparkwing.dev/run=<run>` and
//!   `sparkwing.dev/attempt=<n>`;
//! - annotations `sparkwing.dev/run=<exact run name>`, `sparkwing.dev/run-uid=<run uid>` and
//!   `sparkwing.dev/attempt=<n>`;
//! - a second owner reference, to the PipelineRun (not controller), so deleting the run deletes
//!   its runner.
//!
//! The runner inside the pod watches its own pod and starts the run when these appear.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use sparkwing_crds::{PipelineRun, RunnerPool};

use crate::error::{is_conflict, is_not_found, Error, Result};
use crate::labels::{
    label_value, managed_selector, ANNOTATION_ATTEMPT, ANNOTATION_RUN, ANNOTATION_RUN_UID, ATTEMPT,
    CLAIMED_BY, POOL, RUN, WARM,
};
use crate::metrics::Metrics;
use crate::observe::idle_since;
use crate::status::FIELD_MANAGER;

/// Rounds of list-and-claim before giving up on warm runners (each round tries every idle pod).
const ROUNDS: usize = 3;

/// What a claim attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This warm pod now runs the run.
    Claimed { pod: String },
    /// The pool has no idle runner (or every one was taken concurrently).
    NoIdleRunner,
}

/// The selector of the unclaimed warm pods of a pool.
pub fn unclaimed_selector(pool: &str) -> String {
    format!(
        "{},{POOL}={},{WARM}=true,!{CLAIMED_BY}",
        managed_selector(),
        label_value(pool)
    )
}

/// The idle pods of the pool with uid `pool_uid`, longest idle first (as core's pool decision
/// orders them), then by name.
pub fn idle_candidates<'a>(pods: &'a [Pod], pool_uid: &str) -> Vec<&'a Pod> {
    let mut idle: Vec<(i64, String, &Pod)> = pods
        .iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.uid == pool_uid && o.controller == Some(true))
        })
        .filter_map(|p| idle_since(p).map(|since| (since, p.name_any(), p)))
        .collect();
    idle.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    idle.into_iter().map(|(_, _, p)| p).collect()
}

/// The claimed form of `pod` (pure): the claim labels, annotations and owner reference added,
/// everything else, `resourceVersion` included, unchanged.
pub fn claimed(pod: &Pod, run: &PipelineRun, attempt: u32) -> Result<Pod> {
    let name = run.meta().name.clone().ok_or(Error::MissingObjectKey {
        kind: "PipelineRun",
        field: "metadata.name",
    })?;
    let uid = run.meta().uid.clone().ok_or(Error::MissingObjectKey {
        kind: "PipelineRun",
        field: "metadata.uid",
    })?;
    let mut pod = pod.clone();
    let labels = pod.labels_mut();
    labels.insert(CLAIMED_BY.to_string(), label_value(&name));
    labels.insert(RUN.to_string(), label_value(&name));
    labels.insert(ATTEMPT.to_string(), attempt.to_string());
    let annotations = pod.annotations_mut();
    annotations.insert(ANNOTATION_RUN.to_string(), name);
    annotations.insert(ANNOTATION_RUN_UID.to_string(), uid);
    annotations.insert(ANNOTATION_ATTEMPT.to_string(), attempt.to_string());
    if let Some(owner) = run.owner_ref(&()) {
        let owners = pod.owner_references_mut();
        if !owners.iter().any(|o| o.uid == owner.uid) {
            owners.push(owner);
        }
    }
    Ok(pod)
}

/// Claim one pod for `attempt` of `run`. `Ok(false)`: the pod changed or vanished since it was
/// read (409 Conflict, 404), someone else got it.
pub async fn try_claim(
    pods: &Api<Pod>,
    pod: &Pod,
    run: &PipelineRun,
    attempt: u32,
) -> Result<bool> {
    let new = claimed(pod, run, attempt)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match pods.replace(&pod.name_any(), &params, &new).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Claim an idle warm runner of `pool` for `attempt` of `run`, retrying on conflicts.
pub async fn claim_idle(
    pods: &Api<Pod>,
    pool: &RunnerPool,
    run: &PipelineRun,
    attempt: u32,
    metrics: &Metrics,
) -> Result<Claim> {
    let pool_uid = pool.meta().uid.clone().unwrap_or_default();
    let params = ListParams::default().labels(&unclaimed_selector(&pool.name_any()));
    for _ in 0..ROUNDS {
        let list = pods.list(&params).await?;
        let candidates = idle_candidates(&list.items, &pool_uid);
        if candidates.is_empty() {
            return Ok(Claim::NoIdleRunner);
        }
        for pod in candidates {
            if try_claim(pods, pod, run, attempt).await? {
                return Ok(Claim::Claimed {
                    pod: pod.name_any(),
                });
            }
            metrics.claim_conflict();
        }
    }
    Ok(Claim::NoIdleRunner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn warm(name: &str, ready_at: &str, owner_uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "default", "resourceVersion": "42",
                "labels": {"app.kubernetes.io/managed-by": "sparkwing", "sparkwing.dev/pool": "p", "sparkwing.dev/warm": "true"},
                "ownerReferences": [{"apiVersion": "sparkwing.dev/v1alpha1", "kind": "RunnerPool",
                    "name": "p", "uid": owner_uid, "controller": true}]
            },
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": ready_at}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn selector_excludes_claimed_pods() {
        assert_eq!(
            unclaimed_selector("default"),
            "app.kubernetes.io/managed-by=sparkwing,sparkwing.dev/pool=default,sparkwing.dev/warm=true,!sparkwing.dev/claimed-by"
        );
    }

    #[test]
    fn candidates_are_idle_pods_of_this_pool_longest_idle_first() {
        let mut starting = warm("s", "2026-01-01T00:00:00Z", "uid-p");
        starting.status.as_mut().unwrap().phase = Some("Pending".into());
        let pods = vec![
            warm("b", "2026-01-01T00:00:05Z", "uid-p"),
            warm("a", "2026-01-01T00:00:09Z", "uid-p"),
            warm("c", "2026-01-01T00:00:01Z", "uid-p"),
            warm("x", "2026-01-01T00:00:00Z", "uid-other-pool"),
            starting,
        ];
        let names: Vec<String> = idle_candidates(&pods, "uid-p")
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["c", "b", "a"]);
    }

    #[test]
    fn claim_keeps_the_resource_version_and_adds_the_contract() {
        let pod = warm("w", "2026-01-01T00:00:05Z", "uid-p");
        let run = PipelineRun::test("r1");
        let c = claimed(&pod, &run, 2).unwrap();
        // The guard: the update carries the version that was read.
        assert_eq!(c.metadata.resource_version.as_deref(), Some("42"));
        let labels = c.labels();
        assert_eq!(labels[CLAIMED_BY], "r1");
        assert_eq!(labels[RUN], "r1");
        assert_eq!(labels[ATTEMPT], "2");
        assert_eq!(labels[POOL], "p");
        let annotations = c.annotations();
        assert_eq!(annotations[ANNOTATION_RUN], "r1");
        assert_eq!(annotations[ANNOTATION_RUN_UID], "uid-r1");
        assert_eq!(annotations[ANNOTATION_ATTEMPT], "2");
        let owners = c.owner_references();
        assert_eq!(owners.len(), 2);
        assert_eq!(owners[1].kind, "PipelineRun");
        assert_eq!(owners[1].controller, None);
        // Claimed pods are no longer idle.
        assert!(idle_candidates(std::slice::from_ref(&c), "uid-p").is_empty());
        // Claiming twice does not duplicate the owner.
        assert_eq!(claimed(&c, &run, 2).unwrap().owner_references().len(), 2);
    }
}
