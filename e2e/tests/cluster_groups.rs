//! Concurrency groups of cluster runs: the REAL `sparkwing runner` runs the fixture
//! `tests/fixtures/groups` (one job in group `deploy-{env}`, busy for `--seconds`) in runner pods
//! of the test bed. A second run of a group of 1 waits in its pod, shown by `sparkwing runs status
//! --profile`, and starts its job only once the first run ended; with `--cancel true`
//! (`cancel_in_progress`) a newer run cancels the older one through the API.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::cli::Cli;
use sparkwing_e2e::{real_runner, Cluster};

/// The fixture project.
const FIXTURE: &str = "tests/fixtures/groups";
/// The runner pods' binary cache on the host (kept between test runs: it is keyed by content).
const RUNNER_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/cluster-groups-runner-cache");
const USER: &str = "alice@example.com";
const PROFILE: &str = "ci";
/// How long anything but a run may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);
/// A run, including a first compile of the fixture with cargo in a runner pod.
const RUN_WAIT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_millis(200);

struct Env {
    cluster: Cluster,
    user: Cli,
}

impl Env {
    async fn new(hint: &str) -> Result<Env> {
        let real = real_runner().await?;
        let cluster = Cluster::start(hint, real.image.clone()).await?;
        cluster
            .add_real_pool(&real, "real", Path::new(RUNNER_CACHE))
            .await?;
        let user = cluster
            .user(USER, Path::new(FIXTURE), PROFILE, "real")
            .await?;
        Ok(Env { cluster, user })
    }

    /// `pipeline trigger deploy ARGS --detach --profile ci`: the run's `NS/NAME`.
    async fn trigger(&self, args: &[&str]) -> Result<String> {
        let project = self.user.project().to_str().unwrap_or_default().to_string();
        let mut argv = vec!["pipeline", "trigger", "-C", &project, "deploy"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--detach", "--profile", PROFILE]);
        let out = self.user.run(argv, WAIT).await?;
        ensure!(out.code == 0, "{out}");
        Ok(out.stdout.trim().to_string())
    }

    /// The run view the API answers for run `name`.
    async fn view(&self, name: &str) -> Result<Value> {
        let path = format!("/api/v1/runs/{}/{name}", self.cluster.ns.name());
        self.cluster
            .api()
            .admin("GET", &path, None)
            .await?
            .ok()?
            .json()
    }

    /// Waits until `cond` holds for the run view of `name`.
    async fn wait_view(
        &self,
        name: &str,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + RUN_WAIT;
        loop {
            let v = self.view(name).await?;
            if cond(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "run {name}: not {what} within {RUN_WAIT:?}: {v:#}\nrunner:\n{}",
                    self.cluster.runner_logs(name).await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_end(&self, name: &str) -> Result<PipelineRun> {
        self.cluster
            .wait_run(name, RUN_WAIT, "finished", |r| {
                r.status.as_ref().is_some_and(|s| s.phase.is_terminal())
            })
            .await
    }
}

fn name_of(full: &str) -> &str {
    full.rsplit('/').next().unwrap_or(full)
}

fn phase(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .map(|s| s.phase.phase_str().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_a_group_wait_for_each_other_across_runner_pods() -> Result<()> {
    let env = Env::new("cluster-groups").await?;
    let started = Instant::now();

    // A group of 1: the second run waits in its pod until the first ended.
    let first = env.trigger(&["--seconds", "30"]).await?;
    let a = name_of(&first).to_string();
    env.wait_view(&a, "holding its slot with its job running", |v| {
        v["concurrency"]["state"] == "holding" && v["jobs"]["work"]["state"] == "running"
    })
    .await?;
    let second = env.trigger(&["--seconds", "1"]).await?;
    let b = name_of(&second).to_string();
    let line = format!("waiting for concurrency group deploy-prod (1/1, held by run {first})");
    env.wait_view(&b, "waiting for its group", |v| {
        v["concurrency"]["waiting"] == line.as_str()
    })
    .await?;
    let status = env
        .user
        .run(["runs", "status", &second, "--profile", PROFILE], WAIT)
        .await?;
    assert!(
        status.stdout.contains(&format!("waiting:  {line}")),
        "{status}"
    );
    let run = env.wait_end(&a).await?;
    assert_eq!(phase(&run), "Succeeded", "{:#?}", run.status);
    let run = env.wait_end(&b).await?;
    assert_eq!(phase(&run), "Succeeded", "{:#?}", run.status);
    let (va, vb) = (env.view(&a).await?, env.view(&b).await?);
    let ended_a = va["jobs"]["work"]["finishedAt"]
        .as_str()
        .context("a's end")?
        .to_string();
    let started_b = vb["jobs"]["work"]["startedAt"]
        .as_str()
        .context("b's start")?
        .to_string();
    assert!(
        started_b >= ended_a,
        "b's job started at {started_b}, before a's ended at {ended_a}"
    );

    // cancel_in_progress: a newer run cancels the older one through the API.
    let older = env.trigger(&["--seconds", "120"]).await?;
    let c = name_of(&older).to_string();
    env.wait_view(&c, "holding its slot", |v| {
        v["concurrency"]["state"] == "holding"
    })
    .await?;
    let newer = env.trigger(&["--seconds", "1", "--cancel", "true"]).await?;
    let d = name_of(&newer).to_string();
    let run = env.wait_end(&c).await?;
    assert_eq!(phase(&run), "Cancelled", "{:#?}", run.status);
    assert_eq!(
        run.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(sparkwing_api::names::CANCELLED_BY_ANNOTATION))
            .map(String::as_str),
        Some(format!("concurrency group deploy-prod (run {newer})").as_str())
    );
    let run = env.wait_end(&d).await?;
    assert_eq!(phase(&run), "Succeeded", "{:#?}", run.status);
    eprintln!("[cluster-groups] done in {:?}", started.elapsed());
    env.cluster.shutdown().await
}
