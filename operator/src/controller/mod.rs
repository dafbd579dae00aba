//! The two controllers and what they share.
//!
//! - [`run`]: PipelineRun (primary, filtered by generation), owned runner Jobs, and runner pods
//!   mapped to their run by annotation.
//! - [`pool`]: RunnerPool (primary), owned warm pods, and PipelineRuns mapped to their pool.
//!
//! Requeue policy as data: a decision's `requeue_after_ms` becomes `Action::requeue`; otherwise
//! an unfinished object is looked at again after [`SAFETY_REQUEUE`] (watches can miss events) and
//! a finished run waits for a change. Errors go to [`error_policy`], which backs off per object
//! from 500 ms to 60 s.

pub mod commit_status;
pub mod pipeline;
pub mod pipeline_schedule;
pub mod pool;
pub mod pool_executor;
pub mod run;
pub mod run_executor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use sparkwing_core::reconcile::status::RunStatus;
use sparkwing_core::reconcile::Millis;
use sparkwing_crds::PipelineRun;

use crate::error::Error;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::runner_job::RunnerDefaults;

/// Look again at an unfinished object at least this often, even without events.
pub const SAFETY_REQUEUE: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the reconcilers share: the client, one event recorder, metrics and settings.
pub struct Context {
    pub client: Client,
    /// One recorder for the whole operator, so repeated events aggregate.
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// Image of runners whose run names no RunnerPool.
    pub defaults: RunnerDefaults,
    /// The PipelineRuns the run controller watches (the pool controller reads run phases here).
    pub runs: Store<PipelineRun>,
    /// Consecutive failures per object, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The last status written per run uid, with the run's resourceVersion before that write:
    /// while the cache still shows that version, the write is the truth (see
    /// [`Context::written_status`]).
    written: Mutex<HashMap<String, (String, RunStatus)>>,
    /// Where finished runs are archived before their TTL deletion (the in-process API's storage).
    pub archive: Option<crate::store::Store>,
    /// Where pool tokens are minted (the in-process API), `None` without an API.
    pub pool_tokens: Option<crate::pool_token::PoolTokens>,
    /// Where runs started by GitHub post their commit statuses; `None`: they post none.
    pub commit_statuses: Option<commit_status::CommitStatuses>,
}

impl Context {
    pub fn new(
        client: Client,
        events: Events,
        metrics: Arc<Metrics>,
        defaults: RunnerDefaults,
        runs: Store<PipelineRun>,
    ) -> Self {
        Context {
            client,
            events,
            metrics,
            defaults,
            runs,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            archive: None,
            pool_tokens: None,
            commit_statuses: None,
        }
    }

    /// Archive finished runs in `storage` before deleting them.
    #[must_use]
    pub fn with_archive(mut self, store: Option<crate::store::Store>) -> Self {
        self.archive = store;
        self
    }

    /// Keep pool token Secrets with this token table.
    #[must_use]
    pub fn with_pool_tokens(mut self, minter: Option<crate::pool_token::PoolTokens>) -> Self {
        self.pool_tokens = minter;
        self
    }

    /// Post commit statuses with this client.
    #[must_use]
    pub fn with_commit_statuses(mut self, statuses: Option<commit_status::CommitStatuses>) -> Self {
        self.commit_statuses = statuses;
        self
    }

    /// The status last written for `run` when the cached object predates that write; `None` when
    /// the cache has caught up (and the record is dropped).
    pub fn written_status(&self, run: &PipelineRun) -> Option<RunStatus> {
        let uid = run.meta().uid.as_deref()?;
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match written.get(uid) {
            Some((rv, status)) if run.meta().resource_version.as_deref() == Some(rv.as_str()) => {
                Some(status.clone())
            }
            Some(_) => {
                written.remove(uid);
                None
            }
            None => None,
        }
    }

    /// Remember a status just written for `run` (as cached before the write).
    pub fn remember_written(&self, run: &PipelineRun, status: RunStatus) {
        let (Some(uid), Some(rv)) = (run.meta().uid.clone(), run.meta().resource_version.clone())
        else {
            return;
        };
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.insert(uid, (rv, status));
    }

    fn failure_key<K: Resource>(obj: &K) -> String {
        format!(
            "{}/{}/{}",
            std::any::type_name::<K>(),
            obj.meta().namespace.as_deref().unwrap_or_default(),
            obj.meta().name.as_deref().unwrap_or_default()
        )
    }

    /// Forget the failures of an object after a successful reconcile.
    pub fn succeeded<K: Resource>(&self, obj: &K) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(&Self::failure_key(obj));
    }

    /// Count a failure; returns how long to wait before retrying.
    pub fn failed<K: Resource>(&self, obj: &K) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(Self::failure_key(obj)).or_insert(0);
        *n = n.saturating_add(1);
        backoff(*n)
    }
}

/// The delay after `n` consecutive failures: 500 ms doubling, at most 60 s.
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(10);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// The requeue of a successful reconcile.
pub fn requeue(after_ms: Option<u64>, finished: bool) -> Action {
    match after_ms {
        Some(ms) => Action::requeue(Duration::from_millis(ms.max(1)).min(SAFETY_REQUEUE)),
        None if finished => Action::await_change(),
        None => Action::requeue(SAFETY_REQUEUE),
    }
}

/// Drive `controller` with `reconcile` until `shutdown`; failures go through [`error_policy`]
/// (counted, logged, requeued with a backoff). Returns once the controller has shut down: at once
/// when it has not started reconciling, otherwise when its in-flight reconciles have finished.
pub async fn drive<K, ReconcileFut>(
    name: &'static str,
    controller: kube::runtime::Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Context>) -> ReconcileFut,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: std::fmt::Debug + Eq + std::hash::Hash + Clone + Unpin,
    ReconcileFut: futures::TryFuture<Ok = Action, Error = Error> + Send + 'static,
{
    use futures::{FutureExt as _, StreamExt as _};
    let store = controller.store();
    let applier = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(
            reconcile,
            move |obj, err, ctx| error_policy(name, obj.as_ref(), err, &ctx),
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = name, error = %e, "controller");
            }
        });
    // kube-runtime's applier starts no reconcile before the controller's cache (`store`) is
    // ready (`Runner::delay_tasks_until(store.wait_until_ready())`), and its runner stays
    // pending until then even after the shutdown ended its queue (kube-runtime 5.0.0,
    // src/controller/runner.rs). But the shutdown also stops polling the watch that fills the
    // cache (`take_until` on the trigger stream): a cache not ready by then never gets ready,
    // and the applier would wait forever. Such a controller has reconciled nothing, so there is
    // nothing to wait for: it ends at once.
    let unready_at_shutdown = async move {
        shutdown.await;
        if let Some(Ok(())) = store.wait_until_ready().now_or_never() {
            // Ready: the applier ends once its in-flight reconciles have finished.
            std::future::pending::<()>().await;
        }
        tracing::debug!(
            controller = name,
            "shut down before its cache was ready: nothing in flight"
        );
    };
    futures::pin_mut!(applier, unready_at_shutdown);
    futures::future::select(applier, unready_at_shutdown).await;
}

/// Log a failed reconcile, count it, and retry with backoff.
pub fn error_policy<K: Resource>(
    controller: &'static str,
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    let delay = ctx.failed(obj);
    ctx.metrics
        .reconcile_failed(controller, error.metric_label());
    tracing::warn!(
        controller,
        object = %obj.meta().name.as_deref().unwrap_or_default(),
        namespace = %obj.meta().namespace.as_deref().unwrap_or_default(),
        error = %error,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Now, in whole seconds (as Unix milliseconds): statuses are stored with second precision, so
/// deciding with whole seconds makes the computed status equal to what is read back.
pub fn now_millis() -> Millis {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    ms - ms.rem_euclid(1000)
}

/// An API for `K` in `namespace`, or in all namespaces.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The namespace of a namespaced object (always set by the API).
pub fn namespace_of<K: ResourceExt>(obj: &K, kind: &'static str) -> Result<String, Error> {
    obj.namespace().ok_or(Error::MissingObjectKey {
        kind,
        field: "metadata.namespace",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }

    #[test]
    fn requeue_policy() {
        assert_eq!(
            requeue(Some(1500), false),
            Action::requeue(Duration::from_millis(1500))
        );
        assert_eq!(
            requeue(Some(0), true),
            Action::requeue(Duration::from_millis(1))
        );
        assert_eq!(
            requeue(Some(u64::MAX), false),
            Action::requeue(SAFETY_REQUEUE)
        );
        assert_eq!(requeue(None, true), Action::await_change());
        assert_eq!(requeue(None, false), Action::requeue(SAFETY_REQUEUE));
    }

    #[test]
    fn now_is_whole_seconds() {
        assert_eq!(now_millis() % 1000, 0);
    }
}
