//! [`KubeExecutor`]: core's [`Executor`] on Kubernetes, for one PipelineRun. It observes the run's
//! runner Jobs and pods (fresh lists, not a cache: a start decided on stale data could start a
//! second runner), starts runners by claiming a warm pod of the run's RunnerPool or creating a
//! Job, stops them by deleting, deletes finished runs, and publishes events. It decides nothing.
//!
//! Idempotence comes from the cluster: a Job's name is derived from the run and the attempt (an
//! existing one is "already started"), and a start first looks for a runner of that attempt, so a
//! repeated or restarted reconcile never starts a second runner.

use std::sync::Mutex;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use sparkwing_core::reconcile::executor::Executor;
use sparkwing_core::reconcile::run::{CancelRequest, RunObservation, SecretAccess};
use sparkwing_core::reconcile::Millis;
use sparkwing_crds::pipeline::Pipeline;
use sparkwing_crds::{PipelineRun, RunnerPool};

use super::Context;
use crate::error::{is_already_exists, is_conflict, is_not_found, Error, Result};
use crate::labels::PIPELINE_ANNOTATION;
use crate::labels::{label_value, managed_selector, JOB_NAME_LABELS, RUN};
use crate::observe::{observe_run, pods_may_be_behind, RunnerObjects};
use crate::pool_claim::{claim_idle, Claim};
use crate::runner_job::{build_job, STOP_GRACE_SECONDS};
use crate::status::FIELD_MANAGER;

/// Read what core's secret check needs for `run` (in `namespace`): the Pipeline its
/// `sparkwing.dev/pipeline` annotation names and that Pipeline's `spec.secrets`, then which of
/// the run's `spec.secrets` that it grants exist (Secrets it does not grant are not looked up).
pub async fn observe_secret_access(
    client: &kube::Client,
    namespace: &str,
    run: &PipelineRun,
) -> Result<SecretAccess> {
    let pipeline = run.annotations().get(PIPELINE_ANNOTATION).cloned();
    let granted = match &pipeline {
        None => None,
        Some(name) => Api::<Pipeline>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|p| p.spec.secrets),
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut existing = Vec::new();
    for name in &run.spec.secrets {
        let is_granted = granted.as_ref().is_some_and(|g| g.contains(name));
        if is_granted && !existing.contains(name) && secrets.get_metadata_opt(name).await?.is_some()
        {
            existing.push(name.clone());
        }
    }
    Ok(SecretAccess {
        namespace: namespace.to_string(),
        pipeline,
        granted,
        existing,
    })
}

/// The executor of one reconcile of one run.
pub struct KubeExecutor<'a> {
    ctx: &'a Context,
    run: &'a PipelineRun,
    name: String,
    namespace: String,
    uid: String,
    cancel_requested: bool,
    now: Millis,
    /// What the last observation listed: stops act on exactly these objects (by uid).
    seen: Mutex<RunnerObjects>,
}

fn key(run: &PipelineRun, field: &'static str) -> Result<String> {
    let m = run.meta();
    match field {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        _ => m.uid.clone(),
    }
    .ok_or(Error::MissingObjectKey {
        kind: "PipelineRun",
        field,
    })
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Delete, treating "already gone" as done and a failed precondition (the object was replaced)
/// as nothing to do.
async fn delete_quietly<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn guarded<K: Resource>(obj: &K, params: DeleteParams) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.meta().uid.clone(),
            resource_version: None,
        }),
        ..params
    }
}

impl<'a> KubeExecutor<'a> {
    pub fn new(ctx: &'a Context, run: &'a PipelineRun, now: Millis) -> Result<Self> {
        Ok(KubeExecutor {
            ctx,
            run,
            name: key(run, "metadata.name")?,
            namespace: key(run, "metadata.namespace")?,
            uid: key(run, "metadata.uid")?,
            cancel_requested: run.intent().cancel != CancelRequest::None,
            now,
            seen: Mutex::new(RunnerObjects::default()),
        })
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// The run's Jobs and pods (Job pods and claimed warm pods both carry the run label).
    async fn list(&self) -> Result<RunnerObjects> {
        let selector = format!("{},{RUN}={}", managed_selector(), label_value(&self.name));
        let params = ListParams::default().labels(&selector);
        let (jobs_api, pods_api) = (self.jobs(), self.pods());
        let (jobs, pods) = futures::try_join!(jobs_api.list(&params), pods_api.list(&params))?;
        let mut objects = RunnerObjects {
            jobs: jobs.items,
            pods: pods.items,
        };
        // Listed at once, the pods may have been read before a pod the Jobs count was created.
        // The Job controller counts a pod only after creating it, so pods listed now, after the
        // Jobs, include it: a healthy runner is not taken for a lost one.
        if pods_may_be_behind(&self.uid, &objects) {
            objects.pods = pods_api.list(&params).await?.items;
        }
        Ok(objects)
    }

    /// Observe what was listed. The clock is read again here, after the list: a Job whose
    /// `activeDeadlineSeconds` passed while this reconcile was running may already have lost its
    /// pod (the Job controller deletes it before it writes `FailureTarget`), and with the
    /// reconcile's start time that Job would look like a lost runner and be retried instead of
    /// timing out.
    fn observation(&self, objects: &RunnerObjects) -> RunObservation {
        observe_run(
            &self.name,
            &self.uid,
            objects,
            self.cancel_requested,
            super::now_millis().max(self.now),
        )
    }

    async fn publish(&self, reason: &str, message: &str, warning: bool) {
        self.ctx
            .events
            .publish(
                &self.run.object_ref(&()),
                "StartRunner",
                reason,
                message,
                warning,
            )
            .await;
    }
}

impl Executor for KubeExecutor<'_> {
    type Error = Error;

    async fn observe(&self, _run: &str) -> Result<RunObservation> {
        let objects = self.list().await?;
        let observation = self.observation(&objects);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = objects;
        Ok(observation)
    }

    async fn start_runner(&self, _run: &str, attempt: u32) -> Result<()> {
        // Already started (a repeated decision, a reconcile after a restart)?
        let objects = self.list().await?;
        if self
            .observation(&objects)
            .runner
            .is_some_and(|r| r.attempt >= attempt)
        {
            return Ok(());
        }
        let pool = match self.run.spec.runner_pool.as_deref() {
            None => None,
            Some(p) => {
                let pools: Api<RunnerPool> =
                    Api::namespaced(self.ctx.client.clone(), &self.namespace);
                let found = pools.get_opt(p).await?;
                if found.is_none() {
                    self.publish(
                        "RunnerPoolNotFound",
                        &format!(
                            "RunnerPool {p} not found; starting a runner Job for attempt {attempt}"
                        ),
                        true,
                    )
                    .await;
                }
                found
            }
        };
        // A pool whose spec cannot be used (its Ready condition says why) gives nothing: a Job
        // with its volumes could be refused by the API server.
        let pool = pool.filter(|p| p.intent().is_ok());
        // A warm runner's pod already exists and cannot get the run's Secrets as environment:
        // a run with secrets gets a Job (with the pool's image, resources and placement).
        let warm = pool.as_ref().filter(|_| self.run.spec.secrets.is_empty());
        if let (Some(pool), false) = (pool.as_ref(), self.run.spec.secrets.is_empty()) {
            tracing::debug!(run = %self.name, pool = %pool.name_any(), "run has secrets; starting a Job instead of claiming a warm runner");
        }
        if let Some(pool) = warm {
            let claim =
                claim_idle(&self.pods(), pool, self.run, attempt, &self.ctx.metrics).await?;
            match claim {
                Claim::Claimed { pod } => {
                    self.ctx.metrics.runner_started_for(&self.uid, "warm");
                    self.publish(
                        "RunnerClaimed",
                        &format!(
                            "claimed warm runner {pod} of RunnerPool {} for attempt {attempt}",
                            pool.name_any()
                        ),
                        false,
                    )
                    .await;
                    return Ok(());
                }
                Claim::NoIdleRunner => {
                    tracing::debug!(run = %self.name, pool = %pool.name_any(), "no idle warm runner; starting a Job");
                }
            }
        }
        let job = build_job(self.run, pool.as_ref(), attempt, &self.ctx.defaults)?;
        let job_name = job.name_any();
        match self.jobs().create(&post_params(), &job).await {
            Ok(_) => {
                self.ctx.metrics.runner_started_for(&self.uid, "job");
                tracing::info!(run = %self.name, job = %job_name, attempt, "created runner Job");
                Ok(())
            }
            Err(e) if is_already_exists(&e) => {
                // Ours from an earlier reconcile, or a leftover of a deleted namesake.
                let existing = self.jobs().get_opt(&job_name).await?;
                let ours = existing
                    .as_ref()
                    .is_some_and(|j| j.owner_references().iter().any(|o| o.uid == self.uid));
                if ours || existing.is_none() {
                    Ok(())
                } else {
                    Err(Error::NameTaken {
                        kind: "Job",
                        name: job_name,
                    })
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn stop_runner(&self, name: &str, graceful: bool) -> Result<()> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // The Job first (background propagation), so no replacement pod is started; then its
        // pods, or the claimed warm pod, with a short grace unless `finally` jobs must run.
        let job = seen.jobs.iter().find(|j| j.name_any() == name);
        if let Some(job) = job.filter(|j| j.meta().deletion_timestamp.is_none()) {
            let params = guarded(
                job,
                DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                },
            );
            delete_quietly(&self.jobs(), name, &params).await?;
        }
        let grace = if graceful {
            None
        } else {
            Some(STOP_GRACE_SECONDS)
        };
        let pods = seen.pods.iter().filter(|p| {
            p.name_any() == name
                || JOB_NAME_LABELS
                    .iter()
                    .any(|l| p.labels().get(*l).map(String::as_str) == Some(name))
        });
        for pod in pods.filter(|p| p.meta().deletion_timestamp.is_none()) {
            let params = guarded(
                pod,
                DeleteParams {
                    grace_period_seconds: grace,
                    ..DeleteParams::default()
                },
            );
            delete_quietly(&self.pods(), &pod.name_any(), &params).await?;
        }
        tracing::info!(run = %self.name, runner = name, graceful, "stopping runner");
        Ok(())
    }

    async fn delete_run(&self, _run: &str) -> Result<()> {
        // The API's history outlives the object: archive first, and keep the run if that fails.
        if let Some(store) = self.ctx.archive.clone() {
            store.archive(self.run).await.map_err(|e| Error::Archive {
                run: format!("{}/{}", self.namespace, self.name),
                message: e.to_string(),
            })?;
            tracing::debug!(run = %self.name, "archived before deletion");
        }
        let runs: Api<PipelineRun> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = guarded(
            self.run,
            DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            },
        );
        tracing::info!(run = %self.name, "deleting finished run (ttlSecondsAfterFinished)");
        delete_quietly(&runs, &self.name, &params).await
    }

    async fn event(&self, _run: &str, reason: &str, message: &str, warning: bool) -> Result<()> {
        self.ctx.metrics.run_transition(reason);
        self.ctx
            .events
            .publish(
                &self.run.object_ref(&()),
                "Reconcile",
                reason,
                message,
                warning,
            )
            .await;
        Ok(())
    }
}
