//! Sparkwing's Kubernetes operator: the adapter between the cluster and core's pure decisions.
//!
//! - A `PipelineRun` gets a runner: a warm pod claimed from its `RunnerPool` when one is idle,
//!   otherwise a runner Job (`runner_job`). The run's phase and reason follow the runner's
//!   outcome (`observe`), decided by `sparkwing_core::reconcile::run`.
//! - A `RunnerPool` keeps `minIdle` warm pods, at most `maxRunners`, reaping idle ones after
//!   `idleTimeout` (`sparkwing_core::reconcile::pool`).
//!
//! Everything is derived from the cluster (deterministic Job names, owner references, labels), so
//! a restarted operator neither loses nor duplicates runs. Status is written by server-side apply
//! and only when it changed; events only on transitions.
//!
//! Tests run the controllers in-process with [`run_controllers`]:
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> Result<(), sparkwing_operator::Error> {
//! use sparkwing_operator::{run_controllers, Config};
//!
//! let config = Config::new("sparkwing-runner:test").namespace("my-test");
//! let metrics = config.metrics.clone();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let operator = tokio::spawn(run_controllers(client, config, async move {
//!     let _ = stopped.await;
//! }));
//! // ... create PipelineRuns, watch them ...
//! assert_eq!(metrics.status_writes("PipelineRun"), 3);
//! let _ = stop.send(());
//! operator.await.unwrap()?;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod controller;
pub mod crd_wait;
pub mod error;
pub mod events;
pub mod github;
#[cfg(test)]
mod github_tests;
pub mod http;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod pool_claim;
pub mod pool_token;
pub mod runner_job;
pub mod runs;
#[cfg(test)]
mod shutdown_tests;
pub mod status;
pub mod store;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;

pub use error::{Error, Result};
pub use leader::LeaderConfig;
pub use metrics::Metrics;

use controller::Context;
use events::Events;
use leader::LeaderElector;
use runner_job::RunnerDefaults;

/// The default runner image (the same tag the Docker executor builds).
pub const DEFAULT_RUNNER_IMAGE: &str = concat!("sparkwing-runner:", env!("CARGO_PKG_VERSION"));

/// How the operator runs.
#[derive(Clone)]
pub struct Config {
    /// Watch this namespace only; `None`: every namespace.
    pub namespace: Option<String>,
    /// Image of runner Jobs whose run names no RunnerPool (a pool's `spec.image` wins).
    pub runner_image: String,
    /// Service account of runners whose RunnerPool names none (`None`: the namespace default).
    pub runner_service_account: Option<String>,
    /// The Sparkwing API's URL as runners reach it, given to them as `SPARKWING_API_URL`.
    pub runner_api_url: Option<String>,
    /// Run the controllers only while holding this Lease; `None`: always (one replica).
    pub leader_election: Option<LeaderConfig>,
    /// This replica's name in events (its pod name).
    pub instance: Option<String>,
    /// Metrics and readiness, shared with the HTTP server and with tests.
    pub metrics: Arc<Metrics>,
    /// The in-process API's storage (`--api-addr`): a finished run is archived there before its
    /// `ttlSecondsAfterFinished` deletion, so the API still lists and reads it.
    pub archive: Option<store::Store>,
    /// The in-process API's token table (`--api-addr`): the operator keeps each RunnerPool's pool
    /// token Secret (`<pool>-pool-token`) with it. Without it warm runners cannot get their run's
    /// token (see docs/operator.md).
    pub pool_tokens: Option<pool_token::PoolTokens>,
    /// GitHub's API (`--github-api-url`): where runs started by GitHub deliveries post their
    /// commit statuses.
    pub github_api_url: String,
    /// The dashboard's base URL (`--dashboard-url`), linked from each commit status.
    pub dashboard_url: Option<String>,
}

impl Config {
    /// All namespaces, no leader election, fresh metrics.
    pub fn new(runner_image: impl Into<String>) -> Self {
        Config {
            namespace: None,
            runner_image: runner_image.into(),
            runner_service_account: None,
            runner_api_url: None,
            leader_election: None,
            instance: None,
            metrics: Arc::new(Metrics::default()),
            archive: None,
            pool_tokens: None,
            github_api_url: github::DEFAULT_API_URL.to_string(),
            dashboard_url: None,
        }
    }

    /// Watch only `namespace`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Tell runners where the Sparkwing API is (`SPARKWING_API_URL`).
    #[must_use]
    pub fn runner_api_url(mut self, url: impl Into<String>) -> Self {
        self.runner_api_url = Some(url.into());
        self
    }

    /// Archive finished runs in this API storage before deleting them.
    #[must_use]
    pub fn archive(mut self, store: store::Store) -> Self {
        self.archive = Some(store);
        self
    }

    /// Mint and keep pool tokens for warm runners with this API state's token table.
    #[must_use]
    pub fn pool_tokens(mut self, state: &api::ApiState) -> Self {
        self.pool_tokens = Some(pool_token::PoolTokens {
            store: state.store.clone(),
        });
        self
    }

    /// Take part in leader election with this Lease.
    #[must_use]
    pub fn leader_election(mut self, lease: LeaderConfig) -> Self {
        self.leader_election = Some(lease);
        self
    }

    /// Name this replica (events' reporting instance).
    #[must_use]
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }
}

/// The commit status controller's client; `None` (logged) when it cannot be built.
fn commit_statuses(config: &Config) -> Option<controller::commit_status::CommitStatuses> {
    match github::GitHubClient::new(&config.github_api_url, github::Backoff::default()) {
        Ok(client) => Some(controller::commit_status::CommitStatuses {
            client,
            dashboard_url: config.dashboard_url.clone(),
        }),
        Err(e) => {
            tracing::error!(error = %e, "no commit statuses");
            None
        }
    }
}

/// `wait`'s output, or `None` when `shutdown` completes first (or has completed).
async fn until<T>(shutdown: impl Future<Output = ()>, wait: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        () = shutdown => None,
        out = wait => Some(out),
    }
}

/// Run the PipelineRun and RunnerPool controllers until `shutdown` completes.
///
/// Waits for the CRDs first (marking readiness in `config.metrics` when they are served), then,
/// with leader election, for the Lease. Every wait ends on `shutdown`; the steps under way are
/// listed by [`Metrics::running`]. Returns `Ok` after a clean shutdown (in-flight reconciles
/// finish first; a held Lease is released), [`Error::LeadershipLost`] when another replica took
/// the Lease over.
pub async fn run_controllers(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let shutdown = shutdown.boxed().shared();
    let metrics = config.metrics.clone();
    let namespace = config.namespace.clone();

    let crds = metrics.step("waiting for the CRDs");
    let served = crd_wait::wait_for_crds(&client, namespace.as_deref(), &metrics);
    if until(shutdown.clone(), served).await.is_none() {
        return Ok(());
    }
    drop(crds);

    let elector = config
        .leader_election
        .clone()
        .map(|lease| LeaderElector::new(client.clone(), lease));
    if let Some(elector) = &elector {
        let _lease = metrics.step("waiting for the leader Lease");
        match until(shutdown.clone(), elector.acquire()).await {
            None => return Ok(()),
            Some(acquired) => acquired?,
        }
    }
    metrics.set_leader(true);

    let (run_controller, runs) = controller::run::controller(&client, namespace.as_deref());
    let phases = runs.clone();
    metrics.set_run_phase_source(Box::new(move || {
        let mut by_phase = std::collections::BTreeMap::new();
        for run in phases.state() {
            let phase = run.status.as_ref().map(|s| s.phase).unwrap_or_default();
            *by_phase
                .entry(phase.phase_str().to_string())
                .or_insert(0u64) += 1;
        }
        by_phase
    }));
    let pool_controller = controller::pool::controller(&client, namespace.as_deref());
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Events::new(client.clone(), config.instance.clone()),
            metrics.clone(),
            RunnerDefaults {
                image: config.runner_image.clone(),
                service_account: config.runner_service_account.clone(),
                api_url: config.runner_api_url.clone(),
            },
            runs.clone(),
        )
        .with_archive(config.archive.clone())
        .with_pool_tokens(config.pool_tokens.clone())
        .with_commit_statuses(commit_statuses(&config)),
    );
    // Each loop ends on shutdown, whatever it is waiting for; `metrics.running()` names the
    // loops that have not ended yet.
    let run_loop = {
        let step = metrics.step(controller::run::NAME);
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        async move {
            let _step = step;
            controller::run::run(run_controller, ctx, shutdown).await;
        }
    };
    let pool_loop = {
        let step = metrics.step(controller::pool::NAME);
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        async move {
            let _step = step;
            // The pool controller reads run phases from the run controller's cache.
            if let Some(Ok(())) = until(shutdown.clone(), runs.wait_until_ready()).await {
                controller::pool::run(pool_controller, ctx, shutdown).await;
            }
        }
    };
    let pipeline_loop = {
        let step = metrics.step(controller::pipeline::NAME);
        let (client, ctx, shutdown) = (client.clone(), ctx.clone(), shutdown.clone());
        let namespace = namespace.clone();
        async move {
            let _step = step;
            let served = controller::pipeline::served(&client, namespace.as_deref());
            if let Some(true) = until(shutdown.clone(), served).await {
                let c = controller::pipeline::controller(&client, namespace.as_deref());
                controller::pipeline::run(c, ctx, shutdown).await;
            }
        }
    };
    let status_loop = {
        let step = metrics.step(controller::commit_status::NAME);
        let (client, ctx, shutdown) = (client.clone(), ctx.clone(), shutdown.clone());
        let namespace = namespace.clone();
        async move {
            let _step = step;
            if ctx.commit_statuses.is_none() {
                return;
            }
            let served = controller::pipeline::served(&client, namespace.as_deref());
            if let Some(true) = until(shutdown.clone(), served).await {
                let c = controller::commit_status::controller(&client, namespace.as_deref());
                controller::commit_status::run(c, ctx, shutdown).await;
            }
        }
    };
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controllers started"
    );
    let controllers = async {
        futures::join!(run_loop, pool_loop, pipeline_loop, status_loop);
    };
    let result = match &elector {
        None => {
            controllers.await;
            Ok(())
        }
        Some(elector) => tokio::select! {
            () = controllers => {
                let _release = metrics.step("releasing the leader Lease");
                elector.release().await;
                Ok(())
            }
            lost = elector.keep_leading() => {
                tracing::error!(error = %lost, "stopping the controllers");
                Err(lost)
            }
        },
    };
    metrics.set_leader(false);
    result
}
