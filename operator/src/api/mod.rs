//! The Sparkwing API: source uploads, triggering, reading and cancelling runs, log ingest and
//! live follow, the archive of finished runs, tokens, garbage collection, health and metrics.
//! `docs/api.md` lists the endpoints.
//!
//! [`router`] builds the whole axum app from an [`ApiState`]: a [`Store`] (the metadata and
//! content stores of `sparkwing-state`: SQLite and files under the data directory, or PostgreSQL
//! and an object store shared by any number of replicas) and a [`RunBackend`] ([`KubeRuns`] in
//! the operator, [`MemoryRuns`] in tests). Handlers return `Result<_, ApiError>`; bodies are read through
//! [`read_body`] with a per-endpoint limit so an oversized body is a JSON 413.

pub mod auth;
pub mod collect;
pub mod error;
pub mod fence;
mod handlers;
pub mod manifest;
pub mod metrics;
pub mod migrate;
pub mod pipelines;
pub mod recent_logs;
pub mod server;
pub mod session;
pub mod webhook;

#[cfg(test)]
mod test_backend;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod webhook_tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put};
use axum::Router;
use tokio::sync::Notify;

pub use crate::runs::{BackendError, KubeRuns, MemoryRuns, PodClaim, RunBackend};
use crate::store::Store;
use crate::tokens;
pub use auth::{Principal, Scope};
pub use error::ApiError;
pub use manifest::{Manifest, ManifestLimits};
pub use metrics::ApiMetrics;
pub use pipelines::{KubePipelines, MemoryPipelines, PipelineBackend, Webhooks};

/// Default cap of one cache scope's dependency caches: 10 GiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 10 << 30;

/// Default cap of one job's log: 256 MiB.
pub const DEFAULT_LOG_CAP: u64 = 256 << 20;

/// Request and storage limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Small JSON bodies (trigger, cancel, tokens, job states).
    pub json_body: usize,
    /// An upload manifest.
    pub manifest_body: usize,
    /// One compressed blob.
    pub blob_body: usize,
    /// One log batch.
    pub log_body: usize,
    /// One job's stored log: past it a marker line ends the log and later lines are dropped.
    pub log_job_bytes: u64,
    /// Memory all blob uploads together may hold (their compressed bodies; content streams to
    /// disk): a request reserves its body's size and waits while others hold the budget.
    pub blob_memory_budget: usize,
    /// Entries, total size and file size of a manifest (a blob decompresses to at most
    /// `max_file_size` bytes).
    pub manifest: ManifestLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            json_body: 1 << 20,
            manifest_body: 32 << 20,
            blob_body: 64 << 20,
            log_body: 4 << 20,
            log_job_bytes: DEFAULT_LOG_CAP,
            blob_memory_budget: 256 << 20,
            manifest: ManifestLimits {
                max_files: 100_000,
                max_total_size: 2 << 30,
                max_file_size: 256 << 20,
            },
        }
    }
}

/// How the API behaves.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub limits: Limits,
    /// Namespace of triggered runs whose request names none.
    pub default_namespace: String,
    /// Uploads and blobs younger than this survive garbage collection.
    pub gc_grace: Duration,
    /// Which finished runs garbage collection keeps ([`collect`]).
    pub retention: collect::Retention,
    /// How often each replica collects garbage by itself (`None`: only on `POST /admin/gc`).
    pub gc_every: Option<Duration>,
    /// How often a log follower looks for new lines when not woken by an ingest through this
    /// replica.
    pub follow_poll: Duration,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
    /// How often runner tokens of runs that ended (or are gone) are expired
    /// ([`expire_runner_tokens`]).
    pub token_sweep: Duration,
    /// A runner token whose run does not exist is expired once older than this (younger: its
    /// run may be being created).
    pub orphan_token_grace: Duration,
    /// A connection must send a request's complete head within this ([`server`]).
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long ends the request with 408.
    pub body_timeout: Duration,
    /// Most open connections; past it new ones wait to be accepted.
    pub max_connections: usize,
    /// A push (repository, ref, commit) delivered again under a new delivery id within this is
    /// answered with its first delivery's runs instead of starting new ones.
    pub push_replay_window: Duration,
    /// How long a dashboard session lasts after login (never past its token's expiry).
    pub session_ttl: Duration,
    /// The API is reached over TLS (it sits behind a TLS-terminating proxy): session cookies
    /// are `Secure`.
    pub secure_cookies: bool,
    /// How long a cluster run's concurrency group entry stands without word from its runner
    /// (`sparkwing_core::concurrency::LEASE_MS` by default; its runner renews it every 5 s).
    pub group_lease: Duration,
    /// The most the dependency caches of one cache scope of a namespace may hold: after a
    /// commit, the least recently used entries are removed until they fit; one entry larger
    /// than this is refused (413). 10 GiB by default.
    pub cache_max_bytes: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            limits: Limits::default(),
            default_namespace: "default".into(),
            gc_grace: Duration::from_secs(3600),
            retention: collect::Retention::default(),
            gc_every: Some(Duration::from_secs(3600)),
            // A line ingested through another replica reaches a follower within this (a poll is
            // one indexed query of the log index; the content store is read only for new lines).
            follow_poll: Duration::from_millis(100),
            keep_alive: Duration::from_secs(15),
            token_sweep: Duration::from_secs(30),
            orphan_token_grace: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(15),
            max_connections: 1024,
            push_replay_window: Duration::from_secs(3600),
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            group_lease: Duration::from_millis(sparkwing_core::concurrency::LEASE_MS as u64),
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiInitError {
    #[error(transparent)]
    State(#[from] sparkwing_state::StateError),
    #[error(transparent)]
    Tokens(#[from] crate::tokens::TokenError),
    #[error(
        "the bootstrap admin token in {path} is shorter than {MIN_BOOTSTRAP_TOKEN_LEN} characters"
    )]
    WeakBootstrapToken { path: PathBuf },
    #[error("reading the bootstrap admin token {path}: {source}")]
    BootstrapFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The blob memory budget in KiB permits (at least one; at most what a semaphore holds).
fn config_budget_kib(limits: &Limits) -> usize {
    limits
        .blob_memory_budget
        .div_ceil(1024)
        .clamp(1, u32::MAX as usize)
}

/// Shortest bootstrap admin token accepted (`openssl rand -hex 32` gives 64 characters).
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 24;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// Every byte and record the API keeps (no state of its own in the process).
    pub store: Store,
    pub runs: Arc<dyn RunBackend>,
    pub metrics: Arc<ApiMetrics>,
    pub config: Arc<ApiConfig>,
    /// Woken on every log ingest through this replica and every line the log feed tells, for
    /// its followers (what neither tells, a follower finds at its next poll,
    /// `ApiConfig::follow_poll`).
    pub log_notify: Arc<Notify>,
    /// The newest lines of the logs being written, for followers ([`recent_logs`]).
    pub recent_logs: Arc<recent_logs::RecentLogs>,
    /// The push webhook's secret and Pipelines ([`ApiState::with_webhooks`]).
    pub webhooks: Arc<Webhooks>,
    /// The blob upload memory budget, in KiB permits (`Limits::blob_memory_budget`).
    pub blob_budget: Arc<tokio::sync::Semaphore>,
    /// The newest runner attempt known per run: older attempts' calls are refused.
    pub fence: Arc<fence::AttemptFence>,
}

impl ApiState {
    /// The API on `store`.
    pub fn new(store: Store, runs: Arc<dyn RunBackend>, config: ApiConfig) -> Self {
        let budget = config_budget_kib(&config.limits);
        ApiState {
            store,
            runs,
            metrics: Arc::new(ApiMetrics::default()),
            config: Arc::new(config),
            log_notify: Arc::new(Notify::new()),
            recent_logs: Arc::new(recent_logs::RecentLogs::default()),
            webhooks: Arc::new(Webhooks::default()),
            blob_budget: Arc::new(tokio::sync::Semaphore::new(budget)),
            fence: Arc::new(fence::AttemptFence::default()),
        }
    }

    /// The API on the embedded stores under `data_dir`: SQLite at `<data_dir>/state.db`, files
    /// in `<data_dir>` (what `--data-dir` alone gives).
    pub async fn open(
        data_dir: impl Into<PathBuf>,
        runs: Arc<dyn RunBackend>,
        config: ApiConfig,
    ) -> Result<Self, ApiInitError> {
        let dir = data_dir.into();
        let url = dir.to_string_lossy().into_owned();
        let store = Store::open(&url, &url).await?;
        Ok(Self::new(store, runs, config))
    }

    /// The blob memory budget in KiB.
    pub fn blob_budget_kib(&self) -> usize {
        config_budget_kib(&self.config.limits)
    }

    /// Receive push webhooks with this secret and these Pipelines (without: every delivery is
    /// answered 500, saying how to configure a secret).
    #[must_use]
    pub fn with_webhooks(mut self, webhooks: Webhooks) -> Self {
        self.webhooks = Arc::new(webhooks);
        self
    }

    /// Register the admin token in `path` (its content, trimmed), unless it is already known.
    /// A missing or empty file registers nothing.
    pub async fn bootstrap_admin_from_file(
        &self,
        path: &std::path::Path,
    ) -> Result<bool, ApiInitError> {
        let token = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(ApiInitError::BootstrapFile {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let token = token.trim();
        if token.is_empty() {
            return Ok(false);
        }
        if token.len() < MIN_BOOTSTRAP_TOKEN_LEN {
            return Err(ApiInitError::WeakBootstrapToken {
                path: path.to_path_buf(),
            });
        }
        Ok(self.store.ensure_bootstrap(token).await?)
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    use handlers::dashboard::{gates, login, pages, streams};
    use handlers::{admin, logs, pools, runs as r, storage, uploads, webhooks};
    let api = Router::new()
        // The cluster dashboard (docs/dashboard.md): pages and their streams on a session.
        .route("/", get(pages::runs_page))
        .route("/runs", get(pages::runs_page))
        .route("/runs/{ns}/{name}", get(pages::run_page))
        .route("/runs/{ns}/{name}/cancel", post(pages::cancel))
        .route("/runs/{ns}/{name}/rerun", post(pages::rerun))
        .route(
            "/runs/{ns}/{name}/artifacts/{job}/{artifact}",
            get(pages::download_artifact),
        )
        .route("/runs/{ns}/{name}/gates/{gate}", post(gates::decide))
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/ui/runs/stream", get(streams::runs_stream))
        .route("/ui/runs/{ns}/{name}/stream", get(streams::run_stream))
        .merge(sparkwing_dashboard::assets())
        .route("/api/v1/whoami", get(admin::whoami))
        .route("/api/v1/uploads", post(uploads::create_upload))
        .route("/api/v1/uploads/{id}", get(uploads::get_upload))
        .route("/api/v1/uploads/{id}/blobs/{sha}", get(uploads::get_blob))
        .route(
            "/api/v1/blobs/{sha}",
            put(uploads::put_blob).get(storage::get_blob),
        )
        .route("/api/v1/caches", get(storage::list_caches))
        .route("/api/v1/caches/prune", post(storage::prune_caches))
        .route("/api/v1/runs/{ns}/{name}/caches", get(storage::run_caches))
        .route(
            "/api/v1/runs/{ns}/{name}/caches/{key}",
            get(storage::lookup).post(storage::commit),
        )
        .route(
            "/api/v1/runs/{ns}/{name}/artifacts",
            get(storage::list_artifacts),
        )
        .route(
            "/api/v1/runs/{ns}/{name}/artifacts/{job}/{artifact}",
            put(storage::put_artifact).get(storage::get_artifact),
        )
        .route(
            "/api/v1/runs/{ns}/{name}/memo/{job}",
            put(storage::memo_record),
        )
        .route(
            "/api/v1/runs/{ns}/{name}/memo/{job}/lookup",
            post(storage::memo_lookup),
        )
        .route("/api/v1/blobs", post(uploads::put_blobs))
        .route("/api/v1/runs", post(r::trigger).get(r::list))
        .route("/api/v1/runs/{ns}/{name}", get(r::get_run))
        .route("/api/v1/runs/{ns}/{name}/cancel", post(r::cancel))
        .route("/api/v1/runs/{ns}/{name}/rerun", post(r::rerun))
        .route("/api/v1/runs/{ns}/{name}/finish", post(r::finish))
        .route("/api/v1/runs/{ns}/{name}/jobs/{job}", put(r::put_job_state))
        .route(
            "/api/v1/runs/{ns}/{name}/job-pods/{job}/{attempt}",
            post(r::start_job_pod)
                .get(r::job_pod)
                .delete(r::delete_job_pod),
        )
        .route(
            "/api/v1/runs/{ns}/{name}/gates/{gate}",
            post(r::decide_gate).get(r::get_gate),
        )
        .route(
            "/api/v1/runs/{ns}/{name}/concurrency",
            post(r::enter_group).delete(r::leave_group),
        )
        .route(
            "/api/v1/runs/{ns}/{name}/branch-check",
            put(r::put_branch_check),
        )
        .route(
            "/api/v1/runs/{ns}/{name}/logs",
            post(logs::ingest).get(logs::read),
        )
        .route("/api/v1/runs/{ns}/{name}/logs/stream", get(logs::follow))
        .route("/api/v1/pools/{ns}/{pool}/claims", post(pools::claim))
        .route(
            "/api/v1/admin/tokens",
            post(admin::create_token).get(admin::list_tokens),
        )
        .route("/api/v1/admin/tokens/{id}", delete(admin::revoke_token))
        .route("/api/v1/admin/gc", post(admin::gc))
        .route("/webhooks/github", post(webhooks::github))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ));
    let config = state.config.clone();
    api.fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            config,
            server::body_deadline,
        ))
}

/// Serve the API on `addr` until `shutdown` (client addresses recorded for `triggeredBy.host`).
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, state, shutdown).await
}

/// Serve the API on a bound listener (tests bind port 0 and read the address first).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving the Sparkwing API");
    }
    let sweeper = tokio::spawn(sweep_tokens(state.clone()));
    let feed = tokio::spawn(relay_log_feed(state.clone()));
    let collector = state
        .config
        .gc_every
        .map(|every| tokio::spawn(collect::collect_periodically(state.clone(), every)));
    let served = server::serve(listener, state, shutdown).await;
    sweeper.abort();
    feed.abort();
    if let Some(c) = collector {
        c.abort();
    }
    served
}

/// Pass the metadata store's log feed (lines stored through any replica) to this replica's
/// followers; nothing to do without a feed (one process).
async fn relay_log_feed(st: ApiState) {
    use tokio::sync::broadcast::error::RecvError;
    let Some(mut feed) = st.store.meta.log_feed() else {
        return;
    };
    loop {
        match feed.recv().await {
            Ok(event) => {
                st.metrics.log_feed_events.inc();
                st.recent_logs.apply(&event);
            }
            // Fallen behind: some lines were missed, so what is held may not reach the end.
            Err(RecvError::Lagged(_)) => st.recent_logs.clear(),
            Err(RecvError::Closed) => return,
        }
        st.log_notify.notify_waiters();
    }
}

/// Serve the API in the background of `rt` on `addr` (`127.0.0.1:0`: a free loopback port) until
/// the runtime is dropped, and return the address it listens on: what tests, examples and benches
/// that need a real API over HTTP start.
pub fn spawn_serving(
    rt: &tokio::runtime::Runtime,
    state: ApiState,
    addr: &str,
) -> std::io::Result<SocketAddr> {
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr))?;
    let local = listener.local_addr()?;
    rt.spawn(serve_on(listener, state, std::future::pending()));
    Ok(local)
}

/// Expire the runner tokens of runs that ended — finished, cancelled, timed out (any terminal
/// phase) — or no longer exist (deleted; a token younger than `orphan_token_grace` is kept, as
/// its run may be being created): their records are removed. One list of the runs per namespace,
/// then one delete per run. Returns how many were expired.
pub async fn expire_runner_tokens(st: &ApiState) -> Result<usize, ApiError> {
    let records = st.store.meta.list_tokens().await?;
    let runner: Vec<_> = records
        .iter()
        .filter(|r| tokens::server_minted(r))
        .filter_map(|r| tokens::token_run(r).map(|run| (r, run)))
        .collect();
    if runner.is_empty() {
        return Ok(0);
    }
    // One list per namespace that has runner tokens (an operator scoped to namespaces may not
    // list runs cluster-wide).
    let namespaces: std::collections::BTreeSet<&str> =
        runner.iter().map(|(_, (ns, _))| ns.as_str()).collect();
    let mut live: std::collections::HashMap<(String, String), bool> = Default::default();
    for ns in namespaces {
        for r in st.runs.list(Some(ns)).await? {
            use kube::ResourceExt;
            live.insert(
                (r.namespace().unwrap_or_default(), r.name_any()),
                crate::runs::backend::is_terminal(&r),
            );
        }
    }
    let now = k8s_openapi::jiff::Timestamp::now();
    let grace_ms = i64::try_from(st.config.orphan_token_grace.as_millis()).unwrap_or(i64::MAX);
    let expired: std::collections::BTreeSet<(String, String)> = runner
        .into_iter()
        .filter(|(rec, run)| match live.get(run) {
            Some(terminal) => *terminal,
            None => now.as_millisecond().saturating_sub(rec.created_ms) >= grace_ms,
        })
        .map(|(_, run)| run)
        .collect();
    let mut n = 0;
    for (ns, name) in expired {
        n += st.store.forget_run_tokens(&ns, &name).await? as usize;
    }
    if n > 0 {
        tracing::info!(tokens = n, "expired the runner tokens of runs that ended");
    }
    Ok(n)
}

/// Run [`expire_runner_tokens`] every `token_sweep` until dropped (aborted).
async fn sweep_tokens(st: ApiState) {
    let mut every = tokio::time::interval(st.config.token_sweep);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = expire_runner_tokens(&st).await {
            tracing::warn!("expiring runner tokens: {e}");
        }
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        if let Err(e) = st.store.meta.collect_expired_sessions(now).await {
            tracing::warn!("collecting expired dashboard sessions: {e}");
        }
    }
}

/// Read a body of at most `limit` bytes; more is a 413 naming `what`.
pub async fn read_body(body: Body, limit: usize, what: &'static str) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            ApiError::PayloadTooLarge {
                what,
                limit: limit as u64,
            }
        } else if server::is_body_timeout(&*inner) {
            ApiError::RequestTimeout(inner.to_string())
        } else {
            ApiError::BadRequest(format!("reading the request body: {inner}"))
        }
    })
}

/// Read and parse a JSON body of at most `limit` bytes.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    body: Body,
    limit: usize,
    what: &'static str,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit, what).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
}

/// The client's IP address, from the connection (never from a header the client writes).
#[derive(Clone, Debug)]
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ci| ci.0.ip().to_string()),
        ))
    }
}

/// A namespace or run name as Kubernetes allows it (a DNS subdomain).
pub fn check_object_name(what: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} {s:?}: lowercase letters, digits, '-' and '.', starting and ending alphanumeric"
        )))
    }
}

/// A job name that is safe as a file name: letters, digits, `_`, `-`, `.`, not starting with `.`.
pub fn check_job_name(s: &str) -> Result<(), ApiError> {
    // A job a fan-out or matrix expanded into is `NAME[i]` (`test[3]`; percent-encoded in paths).
    let base = sparkwing_core::fanout::split_expanded_id(s).map_or(s, |(t, _)| t);
    let ok = !base.is_empty()
        && base.len() <= 128
        && !base.starts_with('.')
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid job name {s:?}: letters, digits, '-', '_' and '.', not starting with '.', optionally ending in [N] (a fan-out's job)"
        )))
    }
}
