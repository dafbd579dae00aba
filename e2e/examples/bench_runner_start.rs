//! Runner start on the real node: how long from a PipelineRun's creation to its runner, and to the
//! first line of its job's log on the CLI, for a cold runner Job and for a warm pool claim.
//!
//! Not a test (nothing asserts a timing); run it by hand, see `bench/runner_start/README.md`:
//!
//!     cargo run -p sparkwing-e2e --example bench_runner_start -- --runs 50
//!
//! The shared test bed (real kubelet on containerd by default), the operator with its API
//! in-process, and two RunnerPools of the REAL runner sharing one binary cache: `cold`
//! (`minIdle: 0`: each run gets a runner Job) and `warm` (`minIdle: 1`: each run claims the idle
//! warm pod). Per run, `sparkwing pipeline trigger hello --profile <cold|warm>` from the host with
//! the `remote` fixture (its first job prints `count 1` first). One untimed run per pool first
//! (the fixture's compile into the binary cache); before each warm run, untimed, the pool has an
//! idle Running pod again.
//!
//! Per run, from the run's `sparkwing.dev/created-at` (stamped by the API, ms):
//! - runner: its pod seen `Running` by a watch (cold), or the warm pod seen claimed by it (warm);
//! - first log line: the CLI printing `count 1` (its stdout polled every 5 ms);
//! - and the CLI's own wall time from its start to that line (what a user waits).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, ResourceExt};
use sparkwing_crds::pipeline_run::CREATED_AT_ANNOTATION;
use sparkwing_crds::RunnerPool;
use sparkwing_e2e::cli::{with_binary_cache, Profile};
use sparkwing_e2e::{real_runner, Cluster};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/remote");
const RUN_WAIT: Duration = Duration::from_secs(420);
const WAIT: Duration = Duration::from_secs(120);

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// Per pod name: (first seen Running, first seen claimed) in Unix ms, and its run labels.
#[derive(Default)]
struct PodTimes {
    running: HashMap<String, f64>,
    /// label-safe run name -> first time a pod was seen claimed by it.
    claimed: HashMap<String, f64>,
    /// pod name -> `sparkwing.dev/run` label.
    run_of: HashMap<String, String>,
}

fn watch_pods(pods: Api<Pod>, times: Arc<Mutex<PodTimes>>) {
    tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let seen = now_ms();
            let list = match ev {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            let mut t = times.lock().unwrap_or_else(|e| e.into_inner());
            for p in list {
                let name = p.name_any();
                if let Some(run) = p.labels().get("sparkwing.dev/run") {
                    t.run_of.insert(name.clone(), run.clone());
                }
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    t.running.entry(name.clone()).or_insert(seen);
                }
                if let Some(run) = p.labels().get("sparkwing.dev/claimed-by") {
                    t.claimed.entry(run.clone()).or_insert(seen);
                }
            }
        }
    });
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(what: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  {what:<34} p50 {:>7.0} ms  p99 {:>7.0} ms  max {:>7.0} ms  (n={})",
        quantile(&v, 0.5),
        quantile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut runs = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            _ => bail!("bench_runner_start [--runs N (50)]"),
        }
    }
    let real = real_runner().await?;
    let cluster = Cluster::start("bench-start", real.image.clone()).await?;
    let cache = tempfile::Builder::new()
        .prefix("bench-runner-cache-")
        .tempdir()?;
    cluster.add_real_pool(&real, "cold", cache.path()).await?;
    let mut warm_spec = with_binary_cache(real.pool_spec(2), cache.path())?;
    warm_spec.min_idle = 1;
    let pools: Api<RunnerPool> = Api::namespaced(cluster.client.clone(), &cluster.ns);
    pools
        .create(&PostParams::default(), &RunnerPool::new("warm", warm_spec))
        .await?;
    let cli = cluster
        .user("bench@example.com", Path::new(FIXTURE), "cold", "cold")
        .await?;
    let url = cluster.api().url.clone();
    cli.set_profiles(&[
        Profile::new("cold", &url)
            .namespace(cluster.ns.name())
            .pool("cold"),
        Profile::new("warm", &url)
            .namespace(cluster.ns.name())
            .pool("warm"),
    ])?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.ns);
    let times = Arc::new(Mutex::new(PodTimes::default()));
    watch_pods(pods.clone(), times.clone());
    let project = cli.project().to_string_lossy().into_owned();
    let runs_api = cluster.runs();

    println!(
        "bench_runner_start: {runs} runs per pool, node {:?}",
        sparkwing_e2e::TestBed::shared().await?.node_kind()
    );
    for pool in ["cold", "warm"] {
        let (mut to_runner, mut to_log, mut cli_to_log) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..=runs {
            if pool == "warm" {
                // Untimed: an idle warm pod Running again.
                let lp =
                    ListParams::default().labels("sparkwing.dev/pool=warm,sparkwing.dev/warm=true");
                let deadline = std::time::Instant::now() + WAIT;
                loop {
                    let idle = pods.list(&lp).await?.items.into_iter().any(|p| {
                        !p.labels().contains_key("sparkwing.dev/claimed-by")
                            && p.metadata.deletion_timestamp.is_none()
                            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    });
                    if idle {
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        bail!("no idle warm pod within {WAIT:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let started = now_ms();
            let running = cli.spawn([
                "pipeline",
                "trigger",
                "-C",
                &project,
                "hello",
                "--profile",
                pool,
            ])?;
            let first_line = loop {
                if running.stdout_so_far().contains("count 1") {
                    break now_ms();
                }
                if now_ms() - started > RUN_WAIT.as_millis() as f64 {
                    bail!(
                        "no log line within {RUN_WAIT:?}: {}{}",
                        running.stdout_so_far(),
                        running.stderr_so_far()
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let out = running.finish(RUN_WAIT).await?;
            if out.code != 0 {
                bail!("run {i} on {pool} failed: {out}");
            }
            let full = sparkwing_e2e::cli::triggered_run(&out.stderr)
                .context("the triggered run's name")?;
            let name = full.rsplit('/').next().unwrap_or(&full).to_owned();
            let run = runs_api.get(&name).await?;
            let created: f64 = run
                .annotations()
                .get(CREATED_AT_ANNOTATION)
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond() as f64)
                .context("the run's created-at annotation")?;
            let runner_at = {
                let t = times.lock().unwrap_or_else(|e| e.into_inner());
                let label = sparkwing_operator::labels::label_value(&name);
                if pool == "warm" {
                    t.claimed.get(&label).copied()
                } else {
                    t.run_of
                        .iter()
                        .filter(|(_, run)| **run == label)
                        .filter_map(|(pod, _)| t.running.get(pod).copied())
                        .reduce(f64::min)
                }
            };
            if i == 0 {
                continue; // the compile into the binary cache
            }
            if let Some(at) = runner_at {
                to_runner.push(at - created);
            }
            to_log.push(first_line - created);
            cli_to_log.push(first_line - started);
        }
        println!("{pool}:");
        summary(
            if pool == "warm" {
                "created -> warm pod claimed"
            } else {
                "created -> runner pod Running"
            },
            to_runner,
        );
        summary("created -> first log line on CLI", to_log);
        summary("CLI start -> first log line", cli_to_log);
    }
    cluster.shutdown().await?;
    Ok(())
}
