//! Placed jobs in pods of their own on the real node (`docs/runner.md#job-pods`): a run of 16
//! fan-out jobs of `sleep 2`, each in a job pod, against the same 16 jobs in the coordinator's
//! pod; and per job pod, the time from its coordinator asking for it to the job's body running.
//!
//! Not a test (nothing asserts a timing); run it by hand, see `bench/job_pods/README.md`:
//!
//!     cargo build -p sparkwing-cli --bin sparkwing
//!     cargo run -p sparkwing-e2e --example bench_job_pods -- --rounds 2
//!
//! The shared test bed (real kubelet on containerd), the operator with its API in-process, the
//! RunnerPool `real` of the REAL runner with a binary cache shared by its pods, the fixture
//! `tests/fixtures/jobpods` (`--items 0,…,15 --seconds 2`, `--placed true|false`). One untimed
//! run first (the fixture's compile into the binary cache). Per run:
//! - wall: from `pipeline trigger` returning to the run seen ended by the bench (polled every
//!   100 ms), and the fan-out's span: from the first expanded job's start to the last one's end
//!   (the job states' `startedAt`/`finishedAt`);
//! - per job pod (placed runs): from the job's `startedAt` (when its coordinator asked for the
//!   pod) to its first log line's timestamp (the job's body running in the pod).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;
use sparkwing_e2e::{real_runner, Cluster};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jobpods");
const RUN_WAIT: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(120);
const JOBS: usize = 16;

fn ms(rfc3339: &str) -> Result<f64> {
    let t: k8s_openapi::jiff::Timestamp = rfc3339
        .parse()
        .with_context(|| format!("time {rfc3339:?}"))?;
    Ok(t.as_millisecond() as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

struct Bench {
    cluster: Cluster,
    user: sparkwing_e2e::cli::Cli,
}

impl Bench {
    async fn get(&self, path: &str) -> Result<Value> {
        self.cluster
            .api()
            .admin("GET", path, None)
            .await?
            .ok()?
            .json()
    }

    /// One run: its wall time (s), its fan-out's span (s), and per job pod the ask → body time (s).
    async fn run(&self, placed: bool, items: &str, seconds: &str) -> Result<(f64, f64, Vec<f64>)> {
        let project = self.user.project().to_str().unwrap_or_default().to_string();
        let placed_arg = placed.to_string();
        let argv = vec![
            "pipeline",
            "trigger",
            "-C",
            &project,
            "pods",
            "--items",
            items,
            "--seconds",
            seconds,
            "--placed",
            &placed_arg,
            "--detach",
            "--profile",
            "ci",
        ];
        let out = self.user.run(argv, WAIT).await?;
        ensure!(out.code == 0, "{out}");
        let started = Instant::now();
        let full = out.stdout.trim().to_string();
        let name = full.rsplit('/').next().unwrap_or(&full).to_string();
        let ns = self.cluster.ns.name().to_string();
        let view = loop {
            let v = self.get(&format!("/api/v1/runs/{ns}/{name}")).await?;
            let phase = v["phase"].as_str().unwrap_or_default().to_string();
            if ["Succeeded", "Failed", "Cancelled"].contains(&phase.as_str()) {
                ensure!(phase == "Succeeded", "run {name} {phase}: {v:#}");
                break v;
            }
            if started.elapsed() > RUN_WAIT {
                bail!("run {name} did not end: {v:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let wall = started.elapsed().as_secs_f64();
        let n = items.split(',').count();
        let (mut first, mut last) = (f64::MAX, 0f64);
        let mut overheads = Vec::new();
        for i in 0..n {
            let id = format!("test[{i}]");
            let job = &view["jobs"][&id];
            let start = ms(job["startedAt"].as_str().context("startedAt")?)?;
            let end = ms(job["finishedAt"].as_str().context("finishedAt")?)?;
            first = first.min(start);
            last = last.max(end);
            if placed {
                let log = self
                    .get(&format!(
                        "/api/v1/runs/{ns}/{name}/logs?job={}",
                        sparkwing_api::client::query_escape(&id)
                    ))
                    .await?;
                let ts = log["lines"][0]["ts"].as_str().context("a first line")?;
                overheads.push((ms(ts)? - start) / 1000.0);
            }
        }
        Ok((wall, (last - first) / 1000.0, overheads))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(1);
    let real = real_runner().await?;
    let cluster = Cluster::start("bench-job-pods", real.image.clone()).await?;
    // The runner pods' binary cache, kept between bench runs (keyed by content).
    let cache = std::env::temp_dir().join("sparkwing-bench-job-pods-cache");
    cluster.add_real_pool(&real, "real", &cache).await?;
    let user = cluster
        .user("bench@example.com", Path::new(FIXTURE), "ci", "real")
        .await?;
    let bench = Bench { cluster, user };
    // Untimed: the fixture's compile into the binary cache.
    bench.run(true, "a", "0").await?;
    let items: Vec<String> = (0..JOBS).map(|i| i.to_string()).collect();
    let items = items.join(",");
    let (mut pods, mut local, mut overheads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Interleaved, so background load hits both alike.
        let (w, span, o) = bench.run(true, &items, "2").await?;
        println!("round {round}: {JOBS} job pods: wall {w:.1}s, fan-out span {span:.1}s, ask→body median {:.1}s", median(o.clone()));
        pods.push((w, span));
        overheads.extend(o);
        let (w, span, _) = bench.run(false, &items, "2").await?;
        println!("round {round}: {JOBS} jobs in the coordinator's pod: wall {w:.1}s, fan-out span {span:.1}s");
        local.push((w, span));
    }
    let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    println!(
        "{JOBS} fan-out jobs of sleep 2 (median of {rounds}): job pods wall {:.1}s (fan-out {:.1}s); coordinator's pod wall {:.1}s (fan-out {:.1}s)",
        med(&pods, |p| p.0),
        med(&pods, |p| p.1),
        med(&local, |p| p.0),
        med(&local, |p| p.1)
    );
    let mut sorted = overheads.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!(
        "per job pod, ask → job body running: median {:.1}s, min {:.1}s, max {:.1}s ({} pods)",
        median(overheads),
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
        sorted.len()
    );
    bench.cluster.shutdown().await
}
