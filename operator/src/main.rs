//! `sparkwing-operator`: flags, logging, the HTTP endpoints, then the controllers until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use sparkwing_operator::api::{ApiConfig, ApiState, KubeRuns};
use sparkwing_operator::{api, http, run_controllers, Config, LeaderConfig, DEFAULT_RUNNER_IMAGE};

/// What to run: the controllers (and the API with `--api-addr`), or the API alone.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve only the API (`--api-addr`, default 0.0.0.0:8443): no controllers, no leader
    /// election, any number of replicas on shared stores (`--metadata postgres://…`,
    /// `--objects s3://…`).
    Api,
    /// Copy a data directory of the file store of earlier versions (tokens.json, uploads, blobs,
    /// job states, archive, logs, webhook deliveries) into the stores `--metadata`/`--objects`
    /// name (default: embedded in `--data-dir`, which may be that directory). Idempotent.
    Migrate {
        /// The data directory to copy from.
        #[arg(long)]
        from_data_dir: PathBuf,
    },
}

/// Sparkwing's Kubernetes operator: runs PipelineRuns on runner Jobs or warm RunnerPool pods.
#[derive(Debug, Parser)]
#[command(name = "sparkwing-operator", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Watch this namespace only (default: every namespace).
    #[arg(global = true, long, env = "SPARKWING_WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Image of runner Jobs whose PipelineRun names no RunnerPool.
    #[arg(global = true, long, env = "SPARKWING_RUNNER_IMAGE", default_value = DEFAULT_RUNNER_IMAGE)]
    runner_image: String,

    /// Service account of runner pods whose RunnerPool names none (default: the namespace's).
    #[arg(global = true, long, env = "SPARKWING_RUNNER_SERVICE_ACCOUNT")]
    runner_service_account: Option<String>,

    /// The Sparkwing API's URL as runner pods reach it (e.g. the API Service's in-cluster URL),
    /// given to them as SPARKWING_API_URL.
    #[arg(global = true, long, env = "SPARKWING_RUNNER_API_URL")]
    runner_api_url: Option<String>,

    /// Run the controllers only while holding a coordination.k8s.io Lease (for replicas > 1).
    #[arg(global = true, long, env = "SPARKWING_LEADER_ELECTION")]
    leader_election: bool,

    /// Namespace of the leader Lease (default: the pod's namespace, else --namespace, else default).
    #[arg(global = true, long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(global = true, long, default_value = sparkwing_operator::leader::LEASE_NAME)]
    lease_name: String,

    /// This replica's identity in the Lease and in events (default: the pod name or host name).
    #[arg(global = true, long, env = "POD_NAME")]
    instance: Option<String>,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(global = true, long, default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,

    /// Serve the Sparkwing API (uploads, triggers, runs, logs, tokens) on this address; unset:
    /// no API. See docs/api.md.
    #[arg(global = true, long, env = "SPARKWING_API_ADDR")]
    api_addr: Option<SocketAddr>,

    /// The API's data directory (a volume): blobs, upload manifests, logs, the run archive and
    /// the token table.
    #[arg(
        global = true,
        long,
        env = "SPARKWING_DATA_DIR",
        default_value = "/var/lib/sparkwing"
    )]
    data_dir: PathBuf,

    /// The API's metadata store (tokens, the run index, job states, deliveries, the log index):
    /// `postgres://…` (shared by API replicas), `sqlite:///path/state.db` or a directory. Default:
    /// SQLite in `--data-dir`.
    #[arg(global = true, long, env = "SPARKWING_METADATA")]
    metadata: Option<String>,

    /// The API's content store (blobs, manifests, logs, archives): `s3://bucket[/prefix]`
    /// (shared; endpoint and credentials from `AWS_*`), `file:///path` or a directory. Default:
    /// files in `--data-dir`.
    #[arg(global = true, long, env = "SPARKWING_OBJECTS")]
    objects: Option<String>,

    /// A file holding an admin token to register at startup (e.g. a mounted Secret); a token
    /// already known (or revoked) is left as it is.
    #[arg(global = true, long, env = "SPARKWING_BOOTSTRAP_ADMIN_TOKEN_FILE")]
    bootstrap_admin_token_file: Option<PathBuf>,

    /// Namespace of runs triggered through the API without one (default: --namespace, else the
    /// pod's namespace, else default).
    #[arg(global = true, long, env = "SPARKWING_API_NAMESPACE")]
    api_namespace: Option<String>,

    /// Uploads and blobs younger than this many seconds survive the API's garbage collection.
    #[arg(global = true, long, default_value_t = 3600)]
    gc_grace_seconds: u64,

    /// The most the dependency caches of one cache scope (a namespace's repository or pipeline)
    /// may hold, in bytes: least recently used entries go first.
    #[arg(global = true, long, env = "SPARKWING_API_CACHE_MAX_BYTES", default_value_t = api::DEFAULT_CACHE_MAX_BYTES)]
    cache_max_bytes: u64,

    /// How often the API collects garbage by itself (retention, then unused uploads and blobs),
    /// in seconds; 0: only on `POST /api/v1/admin/gc`.
    #[arg(global = true, long, default_value_t = 3600)]
    gc_interval_seconds: u64,

    /// Retention: remove finished runs (archive, logs, job states, tokens) that finished more
    /// than this many days ago. Unset: kept whatever their age.
    #[arg(global = true, long, env = "SPARKWING_RETAIN_FINISHED_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    retain_finished_days: Option<u32>,

    /// Retention: keep at most this many finished runs, the newest. Unset: no limit.
    #[arg(global = true, long, env = "SPARKWING_RETAIN_FINISHED_RUNS")]
    retain_finished_runs: Option<u64>,

    /// A file holding the push webhooks' shared secret (`POST /webhooks/github`, see
    /// docs/webhooks.md); SPARKWING_WEBHOOK_SECRET gives the secret itself. Without either,
    /// webhook deliveries are answered 500.
    #[arg(global = true, long, env = "SPARKWING_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,

    /// GitHub's REST API, where runs started by GitHub deliveries post commit statuses (GitHub
    /// Enterprise Server: `https://<host>/api/v3`).
    #[arg(global = true, long, env = "SPARKWING_GITHUB_API_URL", default_value = sparkwing_operator::github::DEFAULT_API_URL)]
    github_api_url: String,

    /// The dashboard's base URL: each commit status links to `<url>/runs/<namespace>/<run>`.
    /// Unset: statuses carry no link.
    #[arg(global = true, long, env = "SPARKWING_DASHBOARD_URL")]
    dashboard_url: Option<String>,

    /// The API is reached over TLS (a TLS-terminating ingress or proxy in front of it): the
    /// dashboard's session cookies are marked `Secure`.
    #[arg(global = true, long, env = "SPARKWING_API_BEHIND_TLS")]
    behind_tls: bool,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| ());
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
    tracing::info!("shutting down");
}

/// The API's stores: `--metadata` and `--objects`, each by default embedded in `--data-dir`.
async fn open_store(args: &Args) -> anyhow::Result<sparkwing_operator::store::Store> {
    let data_dir = args.data_dir.to_string_lossy().into_owned();
    let metadata = args.metadata.clone().unwrap_or_else(|| data_dir.clone());
    let objects = args.objects.clone().unwrap_or(data_dir);
    sparkwing_operator::store::Store::open(&metadata, &objects)
        .await
        .context("opening the API's state stores")
}

/// The API on its stores and the cluster: the bootstrap admin token registered, webhooks set up.
async fn open_api(
    args: &Args,
    client: &kube::Client,
    config: &Config,
    api_namespace: String,
) -> anyhow::Result<ApiState> {
    let state = ApiState::new(
        open_store(args).await?,
        Arc::new(KubeRuns::new(client.clone())),
        ApiConfig {
            default_namespace: api_namespace,
            gc_grace: std::time::Duration::from_secs(args.gc_grace_seconds),
            cache_max_bytes: args.cache_max_bytes,
            gc_every: (args.gc_interval_seconds > 0)
                .then(|| std::time::Duration::from_secs(args.gc_interval_seconds)),
            retention: api::collect::Retention {
                max_age: args
                    .retain_finished_days
                    .map(|d| std::time::Duration::from_secs(u64::from(d) * 86_400)),
                max_runs: args.retain_finished_runs,
            },
            secure_cookies: args.behind_tls
                || args
                    .dashboard_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://")),
            ..ApiConfig::default()
        },
    );
    if let Some(path) = &args.bootstrap_admin_token_file {
        if state
            .bootstrap_admin_from_file(path)
            .await
            .context("registering the bootstrap admin token")?
        {
            tracing::info!(file = %path.display(), "registered the bootstrap admin token");
        }
    }
    let webhook_secret = match &args.webhook_secret_file {
        Some(path) => {
            Some(api::pipelines::read_webhook_secret(path).context("reading the webhook secret")?)
        }
        None => std::env::var("SPARKWING_WEBHOOK_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .map(String::into_bytes),
    };
    if webhook_secret.is_none() {
        tracing::warn!("no webhook secret (--webhook-secret-file, SPARKWING_WEBHOOK_SECRET): POST /webhooks/github answers 500");
    }
    let mut webhooks = api::Webhooks::new(
        webhook_secret,
        Arc::new(api::KubePipelines::new(
            client.clone(),
            config.namespace.clone(),
        )),
    );
    // Pull requests' changed files, for their path filters.
    match sparkwing_operator::github::GitHubClient::new(
        &args.github_api_url,
        sparkwing_operator::github::Backoff::default(),
    ) {
        Ok(github) => webhooks = webhooks.with_github(github),
        Err(e) => tracing::error!(error = %e, "pull requests' path filters are not applied"),
    }
    Ok(state.with_webhooks(webhooks))
}

fn identity(instance: Option<String>) -> String {
    instance
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("sparkwing-operator-{}", std::process::id()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let pod_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty());
    let api_namespace = args
        .api_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .or(pod_namespace)
        .unwrap_or_else(|| "default".to_string());
    let identity = identity(args.instance.clone());
    let mut config = Config::new(args.runner_image.clone()).instance(identity.clone());
    config.namespace = args.namespace.clone();
    config.runner_service_account = args
        .runner_service_account
        .clone()
        .filter(|s| !s.is_empty());
    config.runner_api_url = args.runner_api_url.clone().filter(|s| !s.is_empty());
    config.github_api_url = args.github_api_url.clone();
    config.dashboard_url = args.dashboard_url.clone().filter(|s| !s.is_empty());
    if args.leader_election {
        let ns = args
            .lease_namespace
            .clone()
            .or(args.namespace.clone())
            .unwrap_or_else(|| "default".to_string());
        let mut lease = LeaderConfig::new(ns, identity);
        lease.name = args.lease_name.clone();
        config = config.leader_election(lease);
    }
    if let Some(Command::Migrate { from_data_dir }) = &args.command {
        let store = open_store(&args).await?;
        let report = api::migrate::migrate_data_dir(from_data_dir, &store)
            .await
            .with_context(|| format!("migrating {}", from_data_dir.display()))?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let shutdown = shutdown_signal().shared();
    if let Some(Command::Api) = &args.command {
        // The API alone: its /healthz, /readyz and /metrics are on its own address.
        let addr = args
            .api_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443)));
        let state = open_api(&args, &client, &config, api_namespace).await?;
        return api::serve(addr, state, shutdown)
            .await
            .context("serving the API");
    }
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        config.metrics.clone(),
        shutdown.clone(),
    ));
    let api_server = match args.api_addr {
        None => {
            // The API served elsewhere (`sparkwing-operator api`) on the same stores: finished
            // runs are archived there and pool tokens minted there before the API sees them.
            if args.metadata.is_some() {
                let store = open_store(&args).await?;
                config.archive = Some(store.clone());
                config.pool_tokens = Some(sparkwing_operator::pool_token::PoolTokens { store });
            }
            None
        }
        Some(addr) => {
            let state = open_api(&args, &client, &config, api_namespace).await?;
            // Finished runs are archived before their TTL deletion.
            config.archive = Some(state.store.clone());
            // Warm runners' pool tokens are minted by this API.
            config = config.pool_tokens(&state);
            Some(tokio::spawn(api::serve(addr, state, shutdown.clone())))
        }
    };
    let result = run_controllers(client, config, shutdown.clone()).await;
    server.abort();
    if let Some(api_server) = api_server {
        api_server.abort();
    }
    result.context("the operator stopped")
}
