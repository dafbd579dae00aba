//! `sparkwing-operator`: flags, logging, the HTTP endpoints, then the controllers until SIGTERM.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use sparkwing_operator::{http, run_controllers, Config, LeaderConfig, DEFAULT_RUNNER_IMAGE};

/// Sparkwing's Kubernetes operator: runs PipelineRuns on runner Jobs or warm RunnerPool pods.
#[derive(Debug, Parser)]
#[command(name = "sparkwing-operator", version)]
struct Args {
    /// Watch this namespace only (default: every namespace).
    #[arg(long, env = "SPARKWING_WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Image of runner Jobs whose PipelineRun names no RunnerPool.
    #[arg(long, env = "SPARKWING_RUNNER_IMAGE", default_value = DEFAULT_RUNNER_IMAGE)]
    runner_image: String,

    /// Service account of runner pods whose RunnerPool names none (default: the namespace's).
    #[arg(long, env = "SPARKWING_RUNNER_SERVICE_ACCOUNT")]
    runner_service_account: Option<String>,

    /// Run the controllers only while holding a coordination.k8s.io Lease (for replicas > 1).
    #[arg(long, env = "SPARKWING_LEADER_ELECTION")]
    leader_election: bool,

    /// Namespace of the leader Lease (default: the pod's namespace, else --namespace, else default).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(long, default_value = sparkwing_operator::leader::LEASE_NAME)]
    lease_name: String,

    /// This replica's identity in the Lease and in events (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
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
    let identity = identity(args.instance.clone());
    let mut config = Config::new(args.runner_image).instance(identity.clone());
    config.namespace = args.namespace.clone();
    config.runner_service_account = args.runner_service_account.filter(|s| !s.is_empty());
    if args.leader_election {
        let ns = args
            .lease_namespace
            .or(args.namespace)
            .unwrap_or_else(|| "default".to_string());
        let mut lease = LeaderConfig::new(ns, identity);
        lease.name = args.lease_name;
        config = config.leader_election(lease);
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let shutdown = shutdown_signal().shared();
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        config.metrics.clone(),
        shutdown.clone(),
    ));
    let result = run_controllers(client, config, shutdown.clone()).await;
    server.abort();
    result.context("the operator stopped")
}
