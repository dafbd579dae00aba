//! A Rust build with its `target/` in a cluster dependency cache, on the real node: the bench
//! project `bench/projects/cargo-cache` (the local side is `bench/cargo_cache.py`) triggered
//! twice with one cache key, the second run restoring `target/` through the API.
//!
//! Not a test (nothing asserts a timing); run it by hand, see `bench/README.md`:
//!
//!     cargo build -p sparkwing-cli --bin sparkwing
//!     cargo run -p sparkwing-e2e --example bench_cargo_cache -- --rounds 2
//!
//! The shared test bed (real kubelet on containerd), the operator with its API in-process, the
//! RunnerPool `real` of the REAL runner (host toolchain, `CARGO_HOME` empty in the pod) with a
//! binary cache shared by its pods. The bed has no registry: the bench writes the crate's lock
//! file with `cargo generate-lockfile --offline` and vendors its dependencies (`cargo vendor
//! --offline`, from this machine's cargo cache) into the project copy it uploads, with
//! `crate/.cargo/config.toml` pointing cargo at `crate/vendor`. One untimed run of
//! `cargo-baseline` first (the pipeline's compile into the binary cache). Per round, with a new
//! `key.txt` (a cache key no earlier run saved):
//! - `cargo-cached` twice: wall from `pipeline trigger` returning to the run seen ended (polled
//!   every 100 ms), the `build` job's own duration (`startedAt` → `finishedAt`), its log's
//!   `cache target:` lines (the first run must miss and save, the second must hit), the crates
//!   cargo still compiled after the hit (its `Compiling` lines), and the saved entry's size from
//!   `cache list --profile -o json`. Every cache entry of the namespace is pruned (admin API,
//!   `POST /api/v1/caches/prune`) before a round, else the engine restores the previous round's
//!   entry as a fallback (same cache name, another key);
//! - `cargo-baseline`: the same crate's `cargo build` from an empty `target/` and then with
//!   `target/` in place, inside the runner pod, timed by the job (`baseline cold_ms=N noop_ms=N`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;
use sparkwing_e2e::{real_runner, Cluster};

const PROJECT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/projects/cargo-cache");
const RUN_WAIT: Duration = Duration::from_secs(900);
const WAIT: Duration = Duration::from_secs(120);

/// Where cargo looks for the vendored sources (relative to `crate/`).
const VENDOR_CONFIG: &str = "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n\
    [source.vendored-sources]\ndirectory = \"vendor\"\n";

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

/// `cargo ARGS` in `dir`, offline; its stdout.
fn cargo(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("cargo")
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .output()
        .with_context(|| format!("running cargo {args:?}"))?;
    ensure!(
        out.status.success(),
        "cargo {args:?} --offline in {} failed (run `cargo fetch` in the repository first):\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The crate's lock file and its vendored dependencies, so the pod builds it without a registry.
fn vendor(project: &Path) -> Result<u64> {
    let krate = project.join("crate");
    cargo(&krate, &["generate-lockfile"])?;
    cargo(&krate, &["vendor", "--quiet", "vendor"])?;
    std::fs::create_dir_all(krate.join(".cargo"))?;
    std::fs::write(krate.join(".cargo/config.toml"), VENDOR_CONFIG)?;
    fn size(p: &Path) -> Result<u64> {
        let mut n = 0;
        for e in std::fs::read_dir(p)? {
            let e = e?;
            let ty = e.file_type()?;
            n += if ty.is_dir() {
                size(&e.path())?
            } else {
                e.metadata()?.len()
            };
        }
        Ok(n)
    }
    size(&krate.join("vendor"))
}

struct Ended {
    wall: f64,
    job: f64,
    lines: Vec<String>,
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

    /// Triggers `pipeline` and waits for it to succeed: its wall (s), `job`'s duration (s) and
    /// `job`'s log lines.
    async fn run(&self, pipeline: &str, job: &str) -> Result<Ended> {
        let project = self.user.project().to_str().unwrap_or_default().to_string();
        let argv = vec![
            "pipeline",
            "trigger",
            "-C",
            &project,
            pipeline,
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
                if phase != "Succeeded" {
                    let lines = self.cluster.api_log_lines(&name, job).await?;
                    let runner = self.cluster.runner_logs(&name).await;
                    bail!("run {name} {phase}: {v:#}\njob {job}: {lines:#?}\n{runner}");
                }
                break v;
            }
            if started.elapsed() > RUN_WAIT {
                bail!("run {name} did not end: {v:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let wall = started.elapsed().as_secs_f64();
        let state = &view["jobs"][job];
        let start = ms(state["startedAt"].as_str().context("startedAt")?)?;
        let end = ms(state["finishedAt"].as_str().context("finishedAt")?)?;
        let lines = self
            .cluster
            .api_log_lines(&name, job)
            .await?
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        Ok(Ended {
            wall,
            job: (end - start) / 1000.0,
            lines,
        })
    }

    /// Removes every cache entry of the namespace (`POST /api/v1/caches/prune`, as `sparkwing
    /// cache prune --all --namespace NS --profile` does), so no earlier round's entry restores
    /// as a fallback.
    async fn prune(&self) -> Result<usize> {
        let ns = self.cluster.ns.name().to_string();
        let body = serde_json::json!({"all": true, "namespace": ns});
        let v = self
            .cluster
            .api()
            .admin("POST", "/api/v1/caches/prune", Some(&body))
            .await?
            .ok()?
            .json()?;
        Ok(v["removed"].as_array().map_or(0, Vec::len))
    }

    /// The cluster cache entry `key`'s size in bytes (`cache list --profile ci -o json`).
    async fn entry_size(&self, key: &str) -> Result<u64> {
        let out = self
            .user
            .run(["cache", "list", "--profile", "ci", "-o", "json"], WAIT)
            .await?;
        ensure!(out.code == 0, "{out}");
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let e: Value = serde_json::from_str(line).with_context(|| format!("{line:?}"))?;
            if e["key"].as_str() == Some(key) {
                return e["sizeBytes"].as_u64().context("sizeBytes");
            }
        }
        bail!("no cache entry {key} in:\n{}", out.stdout)
    }
}

/// The job's `cache target: …` line that starts with `what` (`miss`, `hit`, `saved`).
fn cache_line<'a>(lines: &'a [String], what: &str) -> Option<&'a str> {
    let prefix = format!("cache target: {what} ");
    lines
        .iter()
        .find_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..]))
}

/// `(key KEY)` or `(key KEY; …` → KEY.
fn key_of(rest: &str) -> Option<String> {
    let rest = rest.strip_prefix("(key ")?;
    let end = rest.find([';', ')'])?;
    Some(rest[..end].to_string())
}

/// `… in N ms)` → N.
fn millis_of(rest: &str) -> Option<f64> {
    let i = rest.rfind(" in ")?;
    rest[i + 4..].strip_suffix(" ms)")?.parse().ok()
}

fn baseline(lines: &[String]) -> Result<(f64, f64)> {
    let line = lines
        .iter()
        .find_map(|l| l.find("baseline cold_ms=").map(|i| &l[i..]))
        .with_context(|| format!("no baseline line in {lines:#?}"))?;
    let num = |field: &str| -> Result<f64> {
        let v = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(field))
            .with_context(|| format!("{field} in {line:?}"))?;
        Ok(v.parse::<f64>()? / 1000.0)
    };
    Ok((num("cold_ms=")?, num("noop_ms=")?))
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
    let cluster = Cluster::start("bench-cargo-cache", real.image.clone()).await?;
    // The runner pods' binary cache, kept between bench runs (keyed by content).
    let cache = std::env::temp_dir().join("sparkwing-bench-cargo-cache-cache");
    cluster.add_real_pool(&real, "real", &cache).await?;
    let user = cluster
        .user("bench@example.com", &PathBuf::from(PROJECT), "ci", "real")
        .await?;
    let vendored = vendor(user.project())?;
    println!(
        "vendored the crate's dependencies: {:.1} MiB of source",
        vendored as f64 / (1 << 20) as f64
    );
    let bench = Bench { cluster, user };
    // Untimed: the pipeline's compile into the binary cache.
    bench.run("cargo-baseline", "baseline").await?;
    let (mut first, mut second, mut first_job, mut second_job) = (vec![], vec![], vec![], vec![]);
    let (mut cold, mut noop, mut sizes) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        let pruned = bench.prune().await?;
        println!("round {round}: pruned {pruned} cache entries");
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        std::fs::write(
            bench.user.project().join("key.txt"),
            format!("bench_cargo_cache round {round} {stamp}\n"),
        )?;
        let a = bench.run("cargo-cached", "build").await?;
        let miss = cache_line(&a.lines, "miss")
            .with_context(|| format!("the first run did not miss: {:#?}", a.lines))?;
        let key = key_of(miss).with_context(|| format!("a key in {miss:?}"))?;
        let saved = cache_line(&a.lines, "saved")
            .with_context(|| format!("the first run did not save: {:#?}", a.lines))?;
        let b = bench.run("cargo-cached", "build").await?;
        let hit = cache_line(&b.lines, "hit")
            .with_context(|| format!("the second run did not hit: {:#?}", b.lines))?;
        ensure!(
            key_of(hit).as_deref() == Some(key.as_str()),
            "the second run hit {hit:?}, not {key}"
        );
        // A listing that fails does not lose the round's timings: it is reported, not fatal.
        // What cargo compiled after the restore (`Compiling …` lines; none when target/ is fresh).
        let compiled: Vec<&String> = b
            .lines
            .iter()
            .filter(|l| l.contains("Compiling "))
            .collect();
        println!(
            "round {round}: after the hit cargo compiled {} crates: {compiled:?}",
            compiled.len()
        );
        let size = match bench.entry_size(&key).await {
            Ok(size) => size as f64,
            Err(e) => {
                eprintln!("round {round}: the entry's size is unknown: {e:#}");
                f64::NAN
            }
        };
        let base = bench.run("cargo-baseline", "baseline").await?;
        let (c, n) = baseline(&base.lines)?;
        println!(
            "round {round}: first (miss) wall {:.1}s, job {:.1}s (save {} ms); second (hit) wall {:.1}s, job {:.1}s (restore {} ms); entry {key} {:.1} MiB; pod cargo cold {c:.1}s, no-op {n:.2}s",
            a.wall,
            a.job,
            millis_of(saved).map_or("?".into(), |m| m.to_string()),
            b.wall,
            b.job,
            millis_of(hit).map_or("?".into(), |m| m.to_string()),
            size / (1 << 20) as f64
        );
        first.push(a.wall);
        second.push(b.wall);
        first_job.push(a.job);
        second_job.push(b.job);
        cold.push(c);
        noop.push(n);
        sizes.push(size);
    }
    let (f, s) = (median(first), median(second));
    println!(
        "cargo-cache on the test bed (median of {rounds}): first run wall {f:.1}s (build job {:.1}s), second run wall {s:.1}s (build job {:.1}s, {:.0}% of the first's wall); entry {:.1} MiB; in the runner pod: cargo build cold {:.1}s, no-op {:.2}s",
        median(first_job),
        median(second_job),
        s / f * 100.0,
        median(sizes) / (1 << 20) as f64,
        median(cold),
        median(noop)
    );
    bench.cluster.shutdown().await
}
