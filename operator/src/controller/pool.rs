//! The RunnerPool controller: the pool token, then one `core::reconcile_pool_once` with the pod
//! executor (`pool_executor`: list the warm pods, map them to core's pool states, create,
//! reap), then the status.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use sparkwing_core::reconcile::executor::{reconcile_pool_once, PoolStep};
use sparkwing_core::reconcile::status::{set_condition, Condition, ConditionStatus, PoolStatus};
use sparkwing_core::time::Time;
use sparkwing_crds::{PipelineRun, RunnerPool};

use super::pool_executor::PodPool;
use super::{api, now_millis, requeue, Context};
use crate::error::Result;
use crate::labels::{managed_selector, warm_pod_prefix, WARM};
use crate::status::{apply_status, status_value};

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
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    super::drive(NAME, controller, reconcile, ctx, shutdown).await
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
    let pools: Api<RunnerPool> = Api::namespaced(ctx.client.clone(), &namespace);
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

    let executor = PodPool::new(pool.clone(), ctx.clone(), &namespace);
    let PoolStep { decision, raced } =
        reconcile_pool_once(&executor, &warm_pod_prefix(&name), &intent, &prev, now).await?;
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
