//! `PodPool`: core's `PoolExecutor` for a `RunnerPool` on Kubernetes. Its runners are warm pods
//! owned by the pool; observing maps them (and the runs that claimed them) to core's pool states.
//!
//! Safety of reaping: only idle pods are ever reaped, and the delete carries the pod's uid and
//! `resourceVersion` as preconditions, so a pod claimed after it was listed (the claim changes its
//! resourceVersion) is refused with 409 Conflict and survives. A claimed pod is removed only when
//! it is spent: finished, and its run has recorded the outcome (or is gone).

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use sparkwing_core::reconcile::executor::{PoolExecutor, PoolObservation};
use sparkwing_crds::{PipelineRun, RunnerPool};

use super::Context;
use crate::error::{is_already_exists, is_conflict, is_not_found, Error};
use crate::labels::{label_value, managed_selector, POOL, WARM};
use crate::observe::{claimed_run, observe_pool_pod, RunView};
use crate::pool_claim::try_claim;
use crate::runner_job::build_warm_pod;
use crate::status::FIELD_MANAGER;

pub struct PodPool {
    pool: Arc<RunnerPool>,
    ctx: Arc<Context>,
    namespace: String,
    pods: Api<Pod>,
    runs: Api<PipelineRun>,
    /// The pods of the last observation: reaps and claims are guarded by what was seen.
    listed: Mutex<Vec<Pod>>,
}

impl PodPool {
    pub fn new(pool: Arc<RunnerPool>, ctx: Arc<Context>, namespace: &str) -> PodPool {
        PodPool {
            pods: Api::namespaced(ctx.client.clone(), namespace),
            runs: Api::namespaced(ctx.client.clone(), namespace),
            namespace: namespace.to_string(),
            pool,
            ctx,
            listed: Mutex::new(Vec::new()),
        }
    }

    fn listed(&self, name: &str) -> Option<Pod> {
        let listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        listed.iter().find(|p| p.name_any() == name).cloned()
    }
}

fn run_view(run: &PipelineRun) -> RunView {
    let status = run.status.clone().unwrap_or_default();
    RunView {
        uid: run.meta().uid.clone(),
        phase: status.phase,
        runner: status.runner,
    }
}

impl PoolExecutor for PodPool {
    type Error = Error;

    async fn observe(&self) -> Result<PoolObservation, Error> {
        let name = self.pool.name_any();
        let uid = self.pool.meta().uid.clone().unwrap_or_default();
        let selector = format!(
            "{},{POOL}={},{WARM}=true",
            managed_selector(),
            label_value(&name)
        );
        let listed: Vec<Pod> = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.uid == uid && o.controller == Some(true))
            })
            .collect();
        let mut observed = PoolObservation::default();
        for p in &listed {
            let run = match claimed_run(p) {
                None => None,
                Some(r) => match self
                    .ctx
                    .runs
                    .get(&ObjectRef::new(&r).within(&self.namespace))
                {
                    Some(cached) => Some(run_view(&cached)),
                    // Not in the cache: deleted, or too new to be there yet. Ask the API, so a
                    // runner whose run is gone is cleaned up without relying on garbage collection.
                    None => self.runs.get_opt(&r).await?.map(|fresh| run_view(&fresh)),
                },
            };
            let view = observe_pool_pod(p, run.as_ref());
            if view.spent {
                observed.spent.push(p.name_any());
            }
            observed.runners.push(view.runner);
        }
        // Claims are made by the run controller when it starts a runner (it alone knows whether
        // the run already has one), so the pool decision gets no queued claims: a second claimer
        // would race with the run controller's fallback to a Job and could give one run two
        // runners.
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) = listed;
        Ok(observed)
    }

    async fn remove_spent(&self, runner: &str) -> Result<(), Error> {
        let Some(pod) = self.listed(runner) else {
            return Ok(());
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.meta().uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.pods.delete(runner, &params).await {
            Ok(_) => self.ctx.metrics.pool_runner_deleted("spent"),
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn create(&self, name: &str) -> Result<bool, Error> {
        let pod = build_warm_pod(&self.pool, name, &self.ctx.defaults)?;
        let post = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match self.pods.create(&post, &pod).await {
            Ok(_) => self.ctx.metrics.pool_runner_created(),
            Err(e) if is_already_exists(&e) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(true)
    }

    async fn claim(&self, runner: &str, run: &str) -> Result<bool, Error> {
        // Not asked for today (no queued claims are observed); kept exhaustive and guarded.
        let claimer = self
            .ctx
            .runs
            .get(&ObjectRef::new(run).within(&self.namespace));
        let (Some(pod), Some(claimer)) = (self.listed(runner), claimer) else {
            return Ok(true);
        };
        let attempt = claimer.status.as_ref().map_or(1, |s| s.attempts.max(1));
        if try_claim(&self.pods, &pod, &claimer, attempt).await? {
            Ok(true)
        } else {
            self.ctx.metrics.claim_conflict();
            Ok(false)
        }
    }

    async fn reap(&self, runner: &str) -> Result<bool, Error> {
        let Some(pod) = self.listed(runner) else {
            return Ok(true);
        };
        // Only if unchanged since listed: a claim in between makes this a 409.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.meta().uid.clone(),
                resource_version: pod.meta().resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.pods.delete(runner, &params).await {
            Ok(_) => {
                self.ctx.metrics.pool_runner_deleted("reaped");
                Ok(true)
            }
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
