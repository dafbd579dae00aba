//! Trigger to first log line: a warm runner (a claimed RunnerPool pod running `sparkwing runner
//! --warm`) against a cold runner Job (`sparkwing runner --run`), same pipeline, same binary
//! cache, so the difference is the runner's start, not cargo.
//!
//! Not a test (nothing asserts a timing); run it by hand, see `bench/remote/README.md`:
//!
//!     cargo build -p sparkwing-cli --bin sparkwing
//!     cargo run -p sparkwing-e2e --example bench_first_log -- --rounds 5
//!
//! 1. Starts its own test bed, a node emulator (pods on Docker), and the operator with its API
//!    in the process; imports the real runner image (`e2e/src/real_runner.rs`).
//! 2. Two RunnerPools of the real runner sharing one binary cache: `warm` (`minIdle: 1`) and
//!    `cold` (`minIdle: 0`, so its runs get runner Jobs).
//! 3. A warm-up run on `cold` compiles the fixture (`e2e/tests/fixtures/loop`) into the cache.
//! 4. Each round triggers the pipeline through the API on `cold`, then on `warm` (after its pool
//!    has an idle Ready pod again), and times trigger → the API holding the run's first log line
//!    (polled every 10 ms), and trigger → `Succeeded`.
//! 5. Prints every round and the medians.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use sparkwing_crds::{PipelineRun, RunnerPool};
use sparkwing_e2e::{
    cli, real_runner, test_runner_image, NodeEmulator, NodeEmulatorOptions, OperatorTask, TestBed,
};
use sparkwing_operator::Config;

const POLL: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(120);
const COMPILE_WAIT: Duration = Duration::from_secs(600);

fn parse_rounds() -> Result<usize> {
    let mut rounds = 5;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--rounds" => {
                rounds = it
                    .next()
                    .context("--rounds needs a value")?
                    .parse()
                    .context("--rounds needs a number")?
            }
            "-h" | "--help" => {
                println!("bench_first_log [--rounds N]  (default 5)");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}; see --help"),
        }
    }
    Ok(rounds.max(1))
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && !p
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("sparkwing.dev/claimed-by"))
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

struct Bench {
    op: OperatorTask,
    runs: Api<PipelineRun>,
    pods: Api<Pod>,
    ns: String,
    upload: String,
}

impl Bench {
    /// Trigger on `pool`; (trigger → first line, trigger → Succeeded).
    async fn round(&self, pool: &str, wait: Duration) -> Result<(Duration, Duration)> {
        let api = self.op.api();
        let started = Instant::now();
        let created = api
            .admin(
                "POST",
                "/api/v1/runs",
                Some(&json!({"pipeline": "hello", "args": {"who": "bench"},
                             "source": {"upload": {"id": self.upload}}, "runnerPool": pool})),
            )
            .await?
            .ok()?
            .json()?;
        let name = created["name"].as_str().context("a name")?.to_string();
        let path = format!("/api/v1/runs/{}/{name}/logs", self.ns);
        let first = loop {
            let jobs = api.admin("GET", &path, None).await?.ok()?.json()?;
            if jobs["jobs"].as_array().is_some_and(|j| !j.is_empty()) {
                break started.elapsed();
            }
            if started.elapsed() > wait {
                bail!("run {name} on {pool}: no log line within {wait:?}");
            }
            tokio::time::sleep(POLL).await;
        };
        loop {
            let run = self.runs.get(&name).await?;
            match run.status.as_ref().map(|s| s.phase.phase_str()) {
                Some("Succeeded") => break,
                Some("Failed" | "Cancelled") => bail!("run {name} on {pool}: {:?}", run.status),
                _ => {}
            }
            if started.elapsed() > wait {
                bail!("run {name} on {pool}: not finished within {wait:?}");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok((first, started.elapsed()))
    }

    async fn warm_idle(&self) -> Result<()> {
        let lp = ListParams::default().labels("sparkwing.dev/pool=warm,sparkwing.dev/warm=true");
        let deadline = Instant::now() + WAIT;
        while !self.pods.list(&lp).await?.items.iter().any(is_ready) {
            if Instant::now() > deadline {
                bail!("the warm pool has no idle Ready pod within {WAIT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds = parse_rounds()?;
    let real = real_runner().await?;
    let bed = TestBed::start().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    let ns = bed.namespace("bench-first-log").await?;
    let client: Client = bed.client().await?;
    let node = NodeEmulator::start(client.clone(), &ns, NodeEmulatorOptions::default()).await?;
    let op =
        OperatorTask::start_with_api(client.clone(), Config::new(image).namespace(ns.name()), &ns)
            .await?;
    let cache = std::env::temp_dir().join("sparkwing-bench-first-log-cache");
    let pools: Api<RunnerPool> = Api::namespaced(client.clone(), &ns);
    for (name, min_idle) in [("cold", 0), ("warm", 1)] {
        let mut spec = cli::with_binary_cache(real.pool_spec(2), &cache)?;
        spec.min_idle = min_idle;
        pools
            .create(&PostParams::default(), &RunnerPool::new(name, spec))
            .await?;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loop");
    let upload = op.api().upload_dir(&fixture).await?;
    let bench = Bench {
        runs: Api::namespaced(client.clone(), &ns),
        pods: Api::namespaced(client.clone(), &ns),
        ns: ns.name().to_string(),
        upload,
        op,
    };
    let (first, total) = bench.round("cold", COMPILE_WAIT).await?;
    println!(
        "warm-up (cold Job, fills the binary cache): first line {:.2}s, done {:.2}s",
        first.as_secs_f64(),
        total.as_secs_f64()
    );
    let mut cold = (Vec::new(), Vec::new());
    let mut warm = (Vec::new(), Vec::new());
    println!("round  cold first  cold done  warm first  warm done");
    for i in 1..=rounds {
        let (cf, cd) = bench.round("cold", WAIT).await?;
        bench.warm_idle().await?;
        let (wf, wd) = bench.round("warm", WAIT).await?;
        println!(
            "{i:>5}  {:>9.2}s  {:>8.2}s  {:>9.2}s  {:>8.2}s",
            cf.as_secs_f64(),
            cd.as_secs_f64(),
            wf.as_secs_f64(),
            wd.as_secs_f64()
        );
        cold.0.push(cf);
        cold.1.push(cd);
        warm.0.push(wf);
        warm.1.push(wd);
    }
    println!(
        "median {:>9.2}s  {:>8.2}s  {:>9.2}s  {:>8.2}s   ({rounds} rounds; runners started: job {}, warm {})",
        median(&cold.0).as_secs_f64(),
        median(&cold.1).as_secs_f64(),
        median(&warm.0).as_secs_f64(),
        median(&warm.1).as_secs_f64(),
        bench.op.metrics.runners_started("job"),
        bench.op.metrics.runners_started("warm"),
    );
    bench.op.stop().await?;
    node.shutdown().await?;
    Ok(())
}
