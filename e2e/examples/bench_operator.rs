//! Operator throughput: how fast does the operator give N new PipelineRuns a runner?
//!
//! Not a test (nothing asserts a timing); run it by hand, see `bench/operator/README.md`:
//!
//!     cargo run -p sparkwing-e2e --example bench_operator --release -- --runs 500
//!
//! 1. Starts its own test bed (kube-apiserver, etcd, the real kube-controller-manager and
//!    kube-scheduler on loopback, and the node `SPARKWING_E2E_NODE` chooses) and installs the CRDs.
//! 2. Baseline: creates N PipelineRuns in a namespace no operator watches, with `--creators`
//!    concurrent creators, and times it (the API's cost alone).
//! 3. Starts the operator in-process (`run_controllers`, scoped to a second namespace), creates
//!    the same N runs there, and times until every run has a runner Job (seen by a watch on
//!    Jobs). The runner image names a loopback registry that serves nothing
//!    ([`RUNNER_IMAGE`]): the Job controller makes pods and the scheduler binds them, but their
//!    pulls fail at once and locally (never a public registry); the figure is how fast the
//!    operator reacts, not how fast pods start.
//! 4. Prints total time, runs/s, p50/p99 of create -> Job per run, the operator's reconcile
//!    duration and claim latency quantiles (from its metrics histograms), and API requests per
//!    run (kube-apiserver's `apiserver_request_total`, summed over every label, read before and
//!    after; the apiserver cannot filter it by namespace, so the baseline phase's delta is the
//!    cost of the creates alone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::TestBed;
use sparkwing_operator::{run_controllers, Config};

/// A runner image on a loopback address where nothing listens: pulled by nobody but the node,
/// which fails at once.
const RUNNER_IMAGE: &str = "127.0.0.1:1/sparkwing-runner:bench";

struct Args {
    runs: usize,
    creators: usize,
    timeout: Duration,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        runs: 500,
        creators: 8,
        timeout: Duration::from_secs(600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> Result<usize> {
            it.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--runs" => args.runs = value()?,
            "--creators" => args.creators = value()?.max(1),
            "--timeout-secs" => args.timeout = Duration::from_secs(value()? as u64),
            "-h" | "--help" => {
                println!(
                    "bench_operator [--runs N (500)] [--creators C (8)] [--timeout-secs S (600)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok(args)
}

fn run_obj(name: &str) -> Result<PipelineRun> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipeline": "build", "source": {"upload": {"id": format!("upload-{name}")}}},
    }))?)
}

/// Sum of every `apiserver_request_total` series on the apiserver's `/metrics`.
async fn apiserver_requests(client: &Client) -> Result<f64> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await
        .context("reading the apiserver's /metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Create `n` runs in `namespace` with `creators` concurrent tasks; returns when each run's
/// create returned, by name.
async fn create_runs(
    client: &Client,
    namespace: &str,
    n: usize,
    creators: usize,
) -> Result<HashMap<String, Instant>> {
    let next = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(Mutex::new(HashMap::with_capacity(n)));
    let mut tasks = Vec::new();
    for _ in 0..creators {
        let (next, created) = (next.clone(), created.clone());
        let api: Api<PipelineRun> = Api::namespaced(client.clone(), namespace);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let name = format!("bench-{i:05}");
                api.create(&PostParams::default(), &run_obj(&name)?)
                    .await
                    .with_context(|| format!("creating {name}"))?;
                created
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, Instant::now());
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = std::mem::take(&mut *created.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(created)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "n/a".to_string(), ms)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let n = args.runs;
    eprintln!("starting a test bed ...");
    let bed = TestBed::start().await?;
    bed.install_crds().await?;
    let client = bed.client().await?;
    println!(
        "bench_operator: {n} runs, {} creators, test bed up in {:.1} s",
        args.creators,
        bed.startup().as_secs_f64()
    );

    // Baseline: the same creates, nobody watching.
    let base_ns = bed.namespace("bench-base").await?;
    let before = apiserver_requests(&client).await?;
    let started = Instant::now();
    create_runs(&client, &base_ns, n, args.creators).await?;
    let base_took = started.elapsed();
    let base_requests = apiserver_requests(&client).await? - before;

    // The operator, scoped to its own namespace.
    let ns = bed.namespace("bench-op").await?;
    let config = Config::new(RUNNER_IMAGE).namespace(ns.name());
    let metrics = config.metrics.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run_controllers(bed.client().await?, config, async move {
        let _ = stopped.await;
    }));
    let ready_by = Instant::now() + Duration::from_secs(60);
    while !metrics.is_leader() {
        if Instant::now() > ready_by || operator.is_finished() {
            bail!("the operator did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Watch Jobs: the first time a run's Job is seen.
    let jobs: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let seen = jobs.clone();
    let job_watch = tokio::spawn(async move {
        let mut synced = Some(synced_tx);
        let mut stream = watcher(jobs_api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            let job = match event {
                Ok(Event::Apply(job) | Event::InitApply(job)) => job,
                Ok(Event::InitDone) => {
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            let run = job
                .owner_references()
                .iter()
                .find(|o| o.kind == "PipelineRun")
                .map(|o| o.name.clone());
            if let Some(run) = run {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(run)
                    .or_insert(now);
            }
        }
    });
    synced_rx.await.context("the Job watch ended")?;
    // Let the operator's own watches settle before counting requests.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = apiserver_requests(&client).await?;
    let started = Instant::now();
    let created = create_runs(&client, &ns, n, args.creators).await?;
    let create_took = started.elapsed();
    let deadline = started + args.timeout;
    loop {
        let have = jobs.lock().unwrap_or_else(|e| e.into_inner()).len();
        if have >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {have} of {n} runs got a Job within {:?}",
                args.timeout
            );
        }
        if operator.is_finished() {
            bail!("the operator stopped early");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_jobs = started.elapsed();
    let requests_at_jobs = apiserver_requests(&client).await? - before;

    // Then until the operator is idle (no reconcile for 2 s, at most 60 s): its status writes
    // and events after the Job count too.
    let idle_by = Instant::now() + Duration::from_secs(60);
    let mut last = metrics.reconciles("run", "success") + metrics.reconciles("run", "error");
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = metrics.reconciles("run", "success") + metrics.reconciles("run", "error");
        if now == last || Instant::now() > idle_by {
            break;
        }
        last = now;
    }
    let requests_settled = apiserver_requests(&client).await? - before;

    let jobs_seen = jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(run, at)| Some(jobs_seen.get(run)?.saturating_duration_since(*at)))
        .collect();
    latencies.sort();

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), operator)
        .await
        .context("the operator did not shut down")???;
    job_watch.abort();

    let per_run = |r: f64| r / n as f64;
    println!();
    println!("baseline (no operator): created {n} runs in {:.2} s ({:.0} runs/s), {:.2} API requests/run",
        base_took.as_secs_f64(), n as f64 / base_took.as_secs_f64(), per_run(base_requests));
    println!(
        "operator: created {n} runs in {:.2} s; every run had a Job after {:.2} s ({:.0} runs/s)",
        create_took.as_secs_f64(),
        all_jobs.as_secs_f64(),
        n as f64 / all_jobs.as_secs_f64()
    );
    println!(
        "create -> Job per run: p50 {}, p99 {}, max {}",
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    let reconciles = metrics.reconciles("run", "success") + metrics.reconciles("run", "error");
    println!(
        "run reconciles: {reconciles} ({:.2}/run, {} errors), duration p50 {}, p99 {} (histogram estimate), total {:.2} s",
        per_run(reconciles as f64),
        metrics.reconciles("run", "error"),
        opt_ms(metrics.reconcile_duration_quantile("run", 0.5)),
        opt_ms(metrics.reconcile_duration_quantile("run", 0.99)),
        metrics.reconcile_duration_sum("run").as_secs_f64(),
    );
    println!(
        "claim latency (operator's view, Pending seen -> Job created): p50 {}, p99 {} over {} runs",
        opt_ms(metrics.claim_latency_quantile(0.5)),
        opt_ms(metrics.claim_latency_quantile(0.99)),
        metrics.claim_latencies()
    );
    println!(
        "API requests/run: {:.2} until every Job existed, {:.2} once the operator was idle; minus the baseline's creates: {:.2} by the operator (+ the bench's Job watch)",
        per_run(requests_at_jobs),
        per_run(requests_settled),
        per_run(requests_settled - base_requests)
    );
    println!(
        "status writes: {} ({:.2}/run)",
        metrics.status_writes("PipelineRun"),
        per_run(metrics.status_writes("PipelineRun") as f64)
    );
    drop((base_ns, ns));
    Ok(())
}
