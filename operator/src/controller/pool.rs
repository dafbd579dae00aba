//! The RunnerPool controller: list the pool's warm pods, map them to core's pool states, let
//! core decide ([`reconcile_pool`]), then create, reap and account, and apply the status.
//!
//! Safety of reaping: only idle pods are ever reaped, and the delete carries the pod's uid and
//! `resourceVersion` as preconditions, so a pod claimed after it was listed (the claim changes its
//! resourceVersion) is refused with 409 Conflict and survives. Busy and claimed pods are never
//! deleted; a claimed pod is deleted only when it has finished and its run has recorded the
//! outcome (or is gone).
//!
//! Claims are made by the run controller when it starts a runner (it alone knows whether the run
//! already has one), so the pool decision gets no queued claims: a second claimer would race with
//! the run controller's fallback to a Job and could give one run two runners.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use sparkwing_core::reconcile::pool::{reconcile_pool, PoolAction, PoolRunner};
use sparkwing_core::reconcile::status::{set_condition, Condition, ConditionStatus, PoolStatus};
use sparkwing_core::time::Time;
use sparkwing_crds::{PipelineRun, RunnerPool};

use super::{api, now_millis, requeue, Context};
use crate::error::{is_already_exists, is_conflict, is_not_found, Result};
use crate::labels::{label_value, managed_selector, warm_pod_prefix, POOL, WARM};
use crate::observe::{claimed_run, observe_pool_pod, PoolPodView, RunView};
use crate::pool_claim::try_claim;
use crate::runner_job::build_warm_pod;
use crate::status::{apply_status, status_value, FIELD_MANAGER};

/// The controller's name in metrics and logs.
pub const NAME: &str = "pool";
/// The condition a pool reports (core's `READY`).
pub use sparkwing_core::reconcile::pool::READY;

/// Look again this soon after a reap or claim lost a race.
const RACE_REQUEUE_MS: u64 = 1000;

/// The pool of a run (PipelineRun changes move pool pods between claimed and busy).
pub fn pool_of_run(run: PipelineRun) -> Option<ObjectRef<RunnerPool>> {
    let pool = run.spec.runner_pool.as_deref()?;
    Some(ObjectRef::new(pool).within(&run.namespace()?))
}

/// Build the controller (not running yet).
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<RunnerPool> {
    let warm = watcher::Config::default().labels(&format!("{},{WARM}=true", managed_selector()));
    Controller::new(
        api::<RunnerPool>(client, namespace),
        watcher::Config::default(),
    )
    .owns(api::<Pod>(client, namespace), warm)
    .watches(
        api::<PipelineRun>(client, namespace),
        watcher::Config::default(),
        pool_of_run,
    )
}

/// Run the controller until `shutdown`.
pub async fn run(
    controller: Controller<RunnerPool>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    super::drive(NAME, controller, reconcile, ctx, shutdown).await
}

fn run_view(run: &PipelineRun) -> RunView {
    let status = run.status.clone().unwrap_or_default();
    RunView {
        uid: run.meta().uid.clone(),
        phase: status.phase,
        runner: status.runner,
    }
}

/// The status of a pool whose spec cannot be used: counts kept, `Ready` false with the problem.
pub fn invalid_status(prev: &PoolStatus, generation: i64, problem: &str, now: i64) -> PoolStatus {
    let mut status = prev.clone();
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        Condition {
            type_: READY.to_string(),
            status: ConditionStatus::False,
            reason: "InvalidSpec".to_string(),
            message: problem.to_string(),
            last_transition_time: Time(now),
            observed_generation: generation,
        },
    );
    status
}

/// One reconcile of a RunnerPool, timed and counted by result.
pub async fn reconcile(pool: Arc<RunnerPool>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.reconcile_started(NAME);
    let result = reconcile_untimed(pool, ctx.clone()).await;
    timer.finish(result.is_ok());
    result
}

async fn reconcile_untimed(pool: Arc<RunnerPool>, ctx: Arc<Context>) -> Result<Action> {
    let name = pool.name_any();
    let namespace = super::namespace_of(pool.as_ref(), "RunnerPool")?;
    let uid = pool.meta().uid.clone().unwrap_or_default();
    let pools: Api<RunnerPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let prev = pool.status.clone().unwrap_or_default();
    let current = pool
        .status
        .as_ref()
        .map(|s| status_value(s, "RunnerPool status"))
        .transpose()?;
    let now = now_millis();

    let intent = match pool.intent() {
        Ok(intent) => intent,
        Err(problem) => {
            let generation = pool.meta().generation.unwrap_or(0);
            let status = invalid_status(&prev, generation, &problem, now);
            let computed = status_value(&status, "RunnerPool status")?;
            apply_status(
                &pools,
                &name,
                current.as_ref(),
                computed,
                None,
                &ctx.metrics,
            )
            .await?;
            ctx.succeeded(pool.as_ref());
            // Retrying cannot fix the spec; a spec change triggers the next reconcile.
            return Ok(Action::await_change());
        }
    };

    let selector = format!(
        "{},{POOL}={},{WARM}=true",
        managed_selector(),
        label_value(&name)
    );
    let listed: Vec<Pod> = pods
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
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut views: Vec<(&Pod, PoolPodView)> = Vec::with_capacity(listed.len());
    for p in &listed {
        let run = match claimed_run(p) {
            None => None,
            Some(r) => match ctx.runs.get(&ObjectRef::new(&r).within(&namespace)) {
                Some(cached) => Some(run_view(&cached)),
                // Not in the cache: deleted, or too new to be there yet. Ask the API, so a
                // runner whose run is gone is cleaned up without relying on garbage collection.
                None => runs.get_opt(&r).await?.map(|fresh| run_view(&fresh)),
            },
        };
        views.push((p, observe_pool_pod(p, run.as_ref())));
    }

    // Spent pods (finished, outcome recorded): delete, guarded by uid.
    for (pod, _) in views.iter().filter(|(_, v)| v.spent) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.meta().uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod.name_any(), &params).await {
            Ok(_) => ctx.metrics.pool_runner_deleted("spent"),
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The pool credential first: warm pods read it when their container is created.
    match &ctx.pool_tokens {
        Some(minter) => {
            crate::pool_token::ensure(&ctx.client, &pool, minter).await?;
        }
        None if intent.min_idle > 0 => tracing::debug!(
            pool = %name,
            "no in-process API: warm runners get no pool token (see docs/operator.md)"
        ),
        None => {}
    }

    let runners: Vec<PoolRunner> = views.iter().map(|(_, v)| v.runner.clone()).collect();
    let decision = reconcile_pool(&warm_pod_prefix(&name), &intent, &prev, &runners, &[], now);
    let mut raced = false;
    let post = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    for action in &decision.actions {
        match action {
            PoolAction::Create { name: pod_name } => {
                let pod = build_warm_pod(&pool, pod_name, &ctx.defaults)?;
                match pods.create(&post, &pod).await {
                    Ok(_) => ctx.metrics.pool_runner_created(),
                    Err(e) if is_already_exists(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            PoolAction::Reap { runner } => {
                let Some(pod) = listed.iter().find(|p| p.name_any() == *runner) else {
                    continue;
                };
                // Only if unchanged since listed: a claim in between makes this a 409.
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: pod.meta().uid.clone(),
                        resource_version: pod.meta().resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                match pods.delete(runner, &params).await {
                    Ok(_) => ctx.metrics.pool_runner_deleted("reaped"),
                    Err(e) if is_conflict(&e) || is_not_found(&e) => raced = true,
                    Err(e) => return Err(e.into()),
                }
            }
            PoolAction::Claim { runner, run } => {
                // Not produced today (no queued claims are passed); kept exhaustive and guarded.
                let pod = listed.iter().find(|p| p.name_any() == *runner);
                let claimer = ctx.runs.get(&ObjectRef::new(run).within(&namespace));
                if let (Some(pod), Some(claimer)) = (pod, claimer) {
                    let attempt = claimer.status.as_ref().map_or(1, |s| s.attempts.max(1));
                    if !try_claim(&pods, pod, &claimer, attempt).await? {
                        ctx.metrics.claim_conflict();
                        raced = true;
                    }
                }
            }
        }
    }

    let s = &decision.status;
    ctx.metrics
        .pool_runners(&namespace, &name, s.idle, s.busy, s.starting);
    let computed = status_value(s, "RunnerPool status")?;
    apply_status(
        &pools,
        &name,
        current.as_ref(),
        computed,
        None,
        &ctx.metrics,
    )
    .await?;
    ctx.succeeded(pool.as_ref());
    let after = if raced {
        Some(
            decision
                .requeue_after_ms
                .map_or(RACE_REQUEUE_MS, |ms| ms.min(RACE_REQUEUE_MS)),
        )
    } else {
        decision.requeue_after_ms
    };
    Ok(requeue(after, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_pool_status_keeps_counts_and_explains() {
        let prev = PoolStatus {
            idle: 2,
            total: 2,
            ..PoolStatus::default()
        };
        let s = invalid_status(&prev, 3, "spec.image must not be empty", 1000);
        assert_eq!(s.idle, 2);
        assert_eq!(s.observed_generation, 3);
        let c = &s.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            ("Ready", "InvalidSpec")
        );
        assert_eq!(c.status, ConditionStatus::False);
        // Deterministic: the same problem later is the same status.
        assert_eq!(
            invalid_status(&s, 3, "spec.image must not be empty", 9000),
            s
        );
    }

    #[test]
    fn runs_map_to_their_pool() {
        let run = PipelineRun::test("r1").in_pool("fast");
        let r = pool_of_run(run).unwrap();
        assert_eq!(r.name, "fast");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert!(pool_of_run(PipelineRun::test("r2")).is_none());
    }
}
