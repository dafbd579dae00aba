//! The PipelineRun controller: observe the run's runner, let core decide
//! ([`reconcile_run_once`] with a [`KubeExecutor`]), then apply the status the decision computed.
//!
//! Watches: PipelineRuns filtered by `metadata.generation` (spec changes such as a cancel; the
//! operator's own status writes do not wake it), runner Jobs it owns, and runner pods (Job pods
//! and claimed warm pods), mapped to their run by the `sparkwing.dev/run` annotation.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use kube::{Api, Client, ResourceExt};
use sparkwing_core::reconcile::executor::reconcile_run_once;
use sparkwing_core::reconcile::run::{reads_gate_decisions, CancelRequest, RunAction, RunIntent};
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_core::reconcile::status::RunStatus;
use sparkwing_crds::pipeline_run::Source;
use sparkwing_crds::PipelineRun;

use super::run_executor::{observe_secret_access, KubeExecutor};
use super::{api, now_millis, requeue, Context};
use crate::error::{Error, Result};
use crate::labels::{managed_selector, ANNOTATION_RUN};
use crate::status::{apply_status, run_status_value};

/// The controller's name in metrics and logs.
pub const NAME: &str = "run";

/// The run a runner pod belongs to (Job pods and claimed warm pods carry the annotation).
pub fn run_of_pod(pod: Pod) -> Option<ObjectRef<PipelineRun>> {
    let run = pod.annotations().get(ANNOTATION_RUN)?;
    Some(ObjectRef::new(run).within(&pod.namespace()?))
}

/// What wakes the run controller: a new generation (spec changes; the operator's own status writes
/// do not), the API's record of a park and of the decision that resumes it (`sparkwing.dev/parked`),
/// and for an external run also a new phase, so the end the API records (a status write) is seen
/// and its TTL counted.
pub fn run_changed(run: &PipelineRun) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let generation = run.meta().generation?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    generation.hash(&mut h);
    // The API records a park, and a decision that resumes it, on the run.
    run.annotations()
        .get(sparkwing_core::gate::PARKED_ANNOTATION)
        .hash(&mut h);
    if matches!(run.spec.source, Source::External(_)) {
        let phase = run.status.as_ref().map(|s| s.phase).unwrap_or_default();
        phase.phase_str().hash(&mut h);
    }
    Some(h.finish())
}

/// Build the controller (not running yet) and the store of PipelineRuns it fills.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
) -> (Controller<PipelineRun>, Store<PipelineRun>) {
    let (reader, writer) = reflector::store();
    let runs = watcher(
        api::<PipelineRun>(client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(run_changed, Default::default());
    let owned = watcher::Config::default().labels(&managed_selector());
    let controller = Controller::for_stream(runs, reader.clone())
        .owns(api::<Job>(client, namespace), owned.clone())
        .watches(api::<Pod>(client, namespace), owned, run_of_pod);
    (controller, reader)
}

/// Run the controller until `shutdown`.
pub async fn run(
    controller: Controller<PipelineRun>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    super::drive(NAME, controller, reconcile, ctx, shutdown).await
}

/// Whether this reconcile must read the run's Pipeline and Secrets: the run asks for Secrets and
/// may be about to start its first runner (core checks them then, and only then).
pub fn checks_secrets(intent: &RunIntent, prev: &RunStatus) -> bool {
    !intent.secrets.is_empty()
        && prev.attempts == 0
        && !prev.phase.is_terminal()
        && intent.invalid.is_none()
        && !intent.external
        && intent.cancel == CancelRequest::None
}

/// While the run is parked and its record not marked `decided` (core's [`reads_gate_decisions`]),
/// read which of its gates have a decision recorded in the API's stores (`store`) into
/// `intent.decided_gates`: core resumes the run on a decision on a parked gate even when the
/// API could not mark the record. Without the stores (the operator was given none) nothing is
/// read. A failed read is logged and reads as no decision: the parked run is looked at again
/// within core's `PARKED_RECHECK_MS`.
pub async fn observe_gate_decisions(
    store: Option<&crate::store::Store>,
    namespace: &str,
    name: &str,
    intent: &mut RunIntent,
    prev: &RunStatus,
) {
    let Some(store) = store.filter(|_| reads_gate_decisions(intent, prev)) else {
        return;
    };
    let key = sparkwing_state::RunKey::new(namespace, name);
    match store.meta.gate_decisions(&key).await {
        Ok(decisions) => intent.decided_gates = decisions.into_iter().map(|(g, _)| g).collect(),
        Err(e) => {
            tracing::warn!(run = %name, %namespace, "cannot read the gate decisions of the parked run: {e}")
        }
    }
}

/// One reconcile of a PipelineRun, timed and counted by result.
pub async fn reconcile(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.reconcile_started(NAME);
    let result = reconcile_untimed(run, ctx.clone()).await;
    timer.finish(result.is_ok());
    result
}

async fn reconcile_untimed(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let name = run.name_any();
    let namespace = super::namespace_of(run.as_ref(), "PipelineRun")?;
    let mut intent = run.intent();
    // The cache may not have our last write yet: then that write is the previous status.
    let stored = ctx.written_status(run.as_ref());
    let stale = stored.is_some();
    let prev = stored.or_else(|| run.status.clone()).unwrap_or_default();
    if checks_secrets(&intent, &prev) {
        intent.secret_access =
            Some(observe_secret_access(&ctx.client, &namespace, run.as_ref()).await?);
    }
    observe_gate_decisions(ctx.archive.as_ref(), &namespace, &name, &mut intent, &prev).await;
    let now = now_millis();
    let uid = run.uid().unwrap_or_default();
    // Claim latency: from the first reconcile that sees the run waiting for a runner.
    if prev.phase == RunPhase::Pending && prev.runner.is_none() {
        ctx.metrics.run_pending(&uid);
    }
    let executor = KubeExecutor::new(&ctx, &run, now)?;
    let decision = reconcile_run_once(&executor, &name, &intent, &prev, now).await?;
    if decision.status.phase != RunPhase::Pending || decision.status.runner.is_some() {
        ctx.metrics.run_not_pending(&uid);
    }
    if decision.actions.contains(&RunAction::DeleteRun) {
        ctx.succeeded(run.as_ref());
        return Ok(Action::await_change());
    }
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = if stale || run.status.is_some() {
        Some(run_status_value(&prev)?)
    } else {
        None
    };
    let computed = run_status_value(&decision.status)?;
    // The API records an external run's end concurrently: write only over the version decided on.
    let guard = if intent.external {
        run.meta().resource_version.as_deref()
    } else {
        None
    };
    let wrote = apply_status(
        &runs,
        &name,
        current.as_ref(),
        computed,
        guard,
        &ctx.metrics,
    )
    .await;
    match wrote {
        Ok(true) => {
            ctx.remember_written(run.as_ref(), decision.status.clone());
            tracing::debug!(run = %name, phase = decision.status.phase.phase_str(), "status written");
        }
        Ok(false) => {}
        // The run was deleted while we worked: nothing left to do.
        Err(Error::Kube(ref k)) if crate::error::is_not_found(k) => {}
        // An external run changed under us (its end was recorded): decide again on what it is.
        Err(Error::Kube(ref k)) if guard.is_some() && crate::error::is_conflict(k) => {
            tracing::debug!(run = %name, "external run changed while reconciling; again");
            ctx.succeeded(run.as_ref());
            return Ok(Action::requeue(std::time::Duration::from_millis(500)));
        }
        Err(e) => return Err(e),
    }
    ctx.succeeded(run.as_ref());
    Ok(requeue(
        decision.requeue_after_ms,
        decision.status.phase.is_terminal(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_core::gate::{Parked, PARKED_ANNOTATION};
    use sparkwing_core::reconcile::run::{reconcile_run, RunObservation, PARKED_RECHECK_MS};

    /// Run `r` parked by its attempt 1 while gate `approve` waited, its record not marked
    /// decided (the API could not write the mark), and its status as the reconcile left it.
    fn parked_run() -> (PipelineRun, RunStatus) {
        let mut run = PipelineRun::test("r");
        let park = Parked {
            attempt: 1,
            gates: vec!["approve".into()],
            deadline_ms: None,
            decided: false,
        };
        run.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(PARKED_ANNOTATION.to_string(), park.to_annotation());
        let status = RunStatus {
            phase: RunPhase::Running,
            attempts: 1,
            ..RunStatus::default()
        };
        (run, status)
    }

    fn decision(by: &str) -> sparkwing_state::GateDecision {
        sparkwing_state::GateDecision {
            decision: "approve".into(),
            by: by.into(),
            at_ms: 1_000,
            comment: None,
            timed_out: false,
        }
    }

    #[tokio::test]
    async fn a_parked_run_resumes_on_a_decision_in_the_store_without_the_decided_mark() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap();
        let store = crate::store::Store::open(url, url).await.unwrap();
        let (run, prev) = parked_run();
        let ns = run.namespace().unwrap();
        let key = sparkwing_state::RunKey::new(&ns, "r");
        let reconcile =
            |intent: &RunIntent| reconcile_run(intent, &prev, &RunObservation::default(), 10_000);

        // No decision yet (one on another gate of the run does not count): still parked, looked
        // at again within the recheck.
        store
            .meta
            .record_gate_decision(&key, "other", &decision("alice"))
            .await
            .unwrap();
        let mut intent = run.intent();
        observe_gate_decisions(Some(&store), &ns, "r", &mut intent, &prev).await;
        assert_eq!(intent.decided_gates, vec!["other".to_string()]);
        let d = reconcile(&intent);
        assert_eq!(d.status.phase, RunPhase::Running);
        assert!(!d.actions.contains(&RunAction::StartRunner { attempt: 2 }));
        assert_eq!(d.requeue_after_ms, Some(PARKED_RECHECK_MS));

        // The parked gate decided in the store, the record still unmarked: attempt 2 starts.
        store
            .meta
            .record_gate_decision(&key, "approve", &decision("bob"))
            .await
            .unwrap();
        let mut intent = run.intent();
        assert!(!intent.parked.as_ref().unwrap().decided);
        observe_gate_decisions(Some(&store), &ns, "r", &mut intent, &prev).await;
        let d = reconcile(&intent);
        assert_eq!(d.actions[0], RunAction::StartRunner { attempt: 2 });
        assert_eq!((d.status.attempts, d.status.resumes), (2, 1));
        assert_eq!(d.status.phase, RunPhase::Pending);

        // Without the stores nothing is read: the run waits for the mark or its deadline.
        let mut intent = run.intent();
        observe_gate_decisions(None, &ns, "r", &mut intent, &prev).await;
        assert!(intent.decided_gates.is_empty());
        assert_eq!(reconcile(&intent).status.phase, RunPhase::Running);

        // Not parked now (the record names an earlier attempt, or a cancel was asked): no read.
        let mut intent = run.intent();
        let later = RunStatus {
            attempts: 2,
            ..prev.clone()
        };
        observe_gate_decisions(Some(&store), &ns, "r", &mut intent, &later).await;
        assert!(intent.decided_gates.is_empty());
        let mut intent = run.clone().cancelled(CancelMode::Cancelled).intent();
        observe_gate_decisions(Some(&store), &ns, "r", &mut intent, &prev).await;
        assert!(intent.decided_gates.is_empty());
    }
    use sparkwing_crds::pipeline_run::{CancelMode, ExternalSource};

    #[test]
    fn secrets_are_read_only_before_the_first_runner() {
        let asking = PipelineRun::test("r").with_secrets(&["db"]);
        assert!(checks_secrets(&asking.intent(), &RunStatus::default()));
        // Nothing asked for, already started, finished, cancelled, invalid: nothing read.
        assert!(!checks_secrets(
            &PipelineRun::test("r").intent(),
            &RunStatus::default()
        ));
        let started = RunStatus {
            attempts: 1,
            ..RunStatus::default()
        };
        assert!(!checks_secrets(&asking.intent(), &started));
        let failed = RunStatus {
            phase: RunPhase::Failed,
            ..RunStatus::default()
        };
        assert!(!checks_secrets(&asking.intent(), &failed));
        let cancelled = asking.clone().cancelled(CancelMode::Cancelled);
        assert!(!checks_secrets(&cancelled.intent(), &RunStatus::default()));
        let invalid = asking.with_pipeline("");
        assert!(!checks_secrets(&invalid.intent(), &RunStatus::default()));
    }

    fn with_phase(run: PipelineRun, phase: RunPhase) -> PipelineRun {
        run.with_status(RunStatus {
            phase,
            ..RunStatus::default()
        })
    }

    #[test]
    fn status_writes_wake_only_external_runs() {
        // A run on the cluster: only its generation counts (the operator's own writes do not
        // wake it).
        let run = PipelineRun::test("r");
        assert_eq!(
            run_changed(&with_phase(run.clone(), RunPhase::Pending)),
            run_changed(&with_phase(run.clone(), RunPhase::Succeeded))
        );
        assert_ne!(
            run_changed(&run),
            run_changed(&run.clone().with_generation(2))
        );
        // An external run: the end the API records wakes it.
        let ext = PipelineRun::test("e").with_source(Source::External(ExternalSource {}));
        assert_ne!(
            run_changed(&with_phase(ext.clone(), RunPhase::Running)),
            run_changed(&with_phase(ext.clone(), RunPhase::Succeeded))
        );
        assert_eq!(
            run_changed(&with_phase(ext.clone(), RunPhase::Running)),
            run_changed(&with_phase(ext, RunPhase::Running))
        );
    }
}
