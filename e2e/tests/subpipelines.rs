//! Sub-pipelines across the laptop and the cluster: `sparkwing run parent` runs LOCALLY, and its
//! `deploy` job awaits `child` `on_profile("ci")`, a profile pointing at the bed's API, so the
//! child is a PipelineRun that the REAL `sparkwing runner` of the profile's pool compiles and runs
//! on the bed's node. Checked: the parent succeeds with the child's line in its local log and
//! the child records its parent on the cluster; a failing child fails the parent with the child's
//! reason; an interrupt of the local parent cancels the cluster child; a cluster child awaiting the
//! local parent (a cycle across the boundary) fails the parent with the cycle.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use kube::api::ListParams;
use kube::ResourceExt;
use serde_json::Value;
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::cli::{Cli, CliOut};
use sparkwing_e2e::{real_runner, Cluster};

/// The fixture project.
const FIXTURE: &str = "tests/fixtures/subpipelines";
/// The runner pods' binary cache on the host (kept between test runs: it is keyed by content).
const RUNNER_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/subpipelines-runner-cache");
/// The host's binary cache of the local parent.
const HOST_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/subpipelines-host-cache");
/// The profile the fixture's await job names.
const PROFILE: &str = "ci";
/// How long anything but a run may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);
/// A run, including first compiles of the fixture on the host and in a runner pod.
const RUN_WAIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(200);

/// Ids of the local runs (`runs list -o json`).
async fn local_runs(cli: &Cli) -> Result<BTreeSet<String>> {
    let out = cli.run(["runs", "list", "-o", "json"], WAIT).await?;
    ensure!(out.code == 0, "{out}");
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect())
}

/// The one local run in `after` that is not in `before`.
fn new_run(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Result<String> {
    let new: Vec<&String> = after.difference(before).collect();
    match new.as_slice() {
        [one] => Ok(one.to_string()),
        _ => bail!("expected one new local run, got {new:?}"),
    }
}

/// A local job's log lines (the `line` of each record of `<home>/runs/<id>/<job>.log`).
fn local_lines(cli: &Cli, id: &str, job: &str) -> Vec<String> {
    std::fs::read_to_string(cli.home().join("runs").join(id).join(format!("{job}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["line"].as_str().map(str::to_string))
        .collect()
}

/// A local job's record from `runs status --run ID -o json`.
async fn local_job(cli: &Cli, id: &str, job: &str) -> Result<Value> {
    let out = cli
        .run(["runs", "status", "--run", id, "-o", "json"], WAIT)
        .await?;
    let v: Value = serde_json::from_str(&out.stdout).with_context(|| out.to_string())?;
    v["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == job))
        .cloned()
        .with_context(|| format!("no job {job} in {v:#}"))
}

fn phase(run: &PipelineRun) -> &str {
    run.status.as_ref().map_or("", |s| s.phase.phase_str())
}

/// The cluster with the real runner's pool and a user of its API.
struct Env {
    cluster: Cluster,
    cli: Cli,
}

impl std::ops::Deref for Env {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Env {
    /// A namespace, its node, the operator with its API, the real runner's pool `real`,
    /// an admin-less user token (`runs:read`, `runs:trigger`), and the fixture with the profile
    /// `ci` (the namespace, pool `real`).
    async fn new(hint: &str) -> Result<Env> {
        let real = real_runner().await?;
        let cluster = Cluster::start(hint, real.image.clone()).await?;
        cluster
            .add_real_pool(&real, "real", Path::new(RUNNER_CACHE))
            .await?;
        let mut cli = cluster
            .user("alice@example.com", Path::new(FIXTURE), PROFILE, "real")
            .await?;
        cli.cache = Some(HOST_CACHE.into());
        Ok(Env { cluster, cli })
    }

    /// `sparkwing run parent -C <project> --mode MODE` in the background.
    fn spawn_parent(&self, mode: &str) -> Result<sparkwing_e2e::cli::CliRunning> {
        let project = self.cli.project().to_string_lossy().into_owned();
        self.cli
            .spawn(["run", "parent", "-C", &project, "--mode", mode])
    }

    /// The child PipelineRuns of `parent_run` (by their `sparkwing.dev/parent-run`).
    async fn children(&self, parent_run: Option<&str>) -> Result<Vec<PipelineRun>> {
        let all = self.runs().list(&ListParams::default()).await?.items;
        Ok(all
            .into_iter()
            .filter(|r| parent_run.is_none_or(|p| r.parent().is_some_and(|x| x.run == p)))
            .collect())
    }

    /// Polls until exactly one new child run exists (not in `known`); returns it.
    async fn wait_new_child(&self, known: &BTreeSet<String>) -> Result<PipelineRun> {
        let deadline = Instant::now() + RUN_WAIT;
        loop {
            let new: Vec<PipelineRun> = self
                .children(None)
                .await?
                .into_iter()
                .filter(|r| !known.contains(&r.name_any()))
                .collect();
            if let [one] = new.as_slice() {
                return Ok(one.clone());
            }
            ensure!(new.len() <= 1, "more than one new child: {new:#?}");
            ensure!(
                Instant::now() < deadline,
                "no child run within {RUN_WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn run_names(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .children(None)
            .await?
            .iter()
            .map(ResourceExt::name_any)
            .collect())
    }

    async fn shutdown(self) -> Result<()> {
        self.cluster.shutdown().await
    }
}

/// Runs the parent locally to its end; returns its output and local run id.
async fn run_parent(env: &Env, mode: &str) -> Result<(CliOut, String)> {
    let before = local_runs(&env.cli).await?;
    let out = env.spawn_parent(mode)?.finish(RUN_WAIT).await?;
    let id = new_run(&before, &local_runs(&env.cli).await?).with_context(|| out.to_string())?;
    Ok((out, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_parent_awaits_its_child_on_the_cluster() -> Result<()> {
    let env = Env::new("subpipelines").await?;

    // Succeeds: the child ran on the cluster, recorded its parent, its line is in the parent's log.
    let known = env.run_names().await?;
    let (out, id) = run_parent(&env, "ok").await?;
    let child = env.wait_new_child(&known).await?;
    let name = child.name_any();
    ensure!(
        out.code == 0,
        "{out}\nrunner:\n{}",
        env.runner_logs(&name).await
    );
    let child = env
        .wait_run(&name, WAIT, "Succeeded", |r| phase(r) == "Succeeded")
        .await?;
    assert_eq!(child.spec.pipeline, "child");
    assert_eq!(child.spec.args["msg"], "from-parent");
    assert_eq!(child.spec.runner_pool.as_deref(), Some("real"));
    let parent = child.parent().context("the child records no parent")?;
    assert_eq!(
        (parent.run.as_str(), parent.job.as_str()),
        (id.as_str(), "deploy")
    );
    let deploy = local_job(&env.cli, &id, "deploy").await?;
    assert_eq!(deploy["state"], "success", "{deploy}");
    assert_eq!(
        deploy["child_run"],
        format!("{}/{name}", env.ns),
        "{deploy}"
    );
    let lines = local_lines(&env.cli, &id, "deploy");
    assert!(
        lines.iter().any(|l| l == "work │ child says from-parent"),
        "{lines:?}"
    );
    // The API shows the parent, and so does `runs status --profile`.
    let status = env
        .cli
        .run(
            [
                "runs",
                "status",
                &format!("{}/{name}", env.ns),
                "--profile",
                PROFILE,
            ],
            WAIT,
        )
        .await?;
    assert_eq!(status.code, 0, "{status}");
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("parent:   {id} job deploy"))),
        "{status}"
    );

    // A failing child fails the parent, with the child's reason on the awaiting job.
    let known = env.run_names().await?;
    let (out, id) = run_parent(&env, "fail").await?;
    assert_eq!(out.code, 1, "{out}");
    let child = env.wait_new_child(&known).await?;
    let name = child.name_any();
    let child = env
        .wait_run(&name, WAIT, "Failed", |r| phase(r) == "Failed")
        .await?;
    assert_eq!(child.parent().map(|p| p.run), Some(id.clone()));
    let deploy = local_job(&env.cli, &id, "deploy").await?;
    assert_eq!(deploy["state"], "failed", "{deploy}");
    assert_eq!(
        deploy["reason"],
        format!(
            "pipeline \"child\" on profile \"ci\" (run {}/{name}) failed: job work failed: exit code 1 (the deploy was refused)",
            env.ns
        ),
        "{deploy}"
    );

    // An interrupt of the local parent cancels the cluster child.
    let known = env.run_names().await?;
    let before = local_runs(&env.cli).await?;
    let parent = env.spawn_parent("slow")?;
    let child = env.wait_new_child(&known).await?;
    let name = child.name_any();
    // The child's job is sleeping on the cluster once its line reached the parent's log.
    let deadline = Instant::now() + RUN_WAIT;
    let id = loop {
        let id = new_run(&before, &local_runs(&env.cli).await?).ok();
        if let Some(id) = id.filter(|id| {
            local_lines(&env.cli, id, "deploy")
                .iter()
                .any(|l| l == "work │ child-sleeping")
        }) {
            break id;
        }
        if Instant::now() > deadline {
            bail!(
                "the child's sleep never reached the parent's log\n{}\n{}\nrunner:\n{}",
                parent.stdout_so_far(),
                parent.stderr_so_far(),
                env.runner_logs(&name).await
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let pid = parent.pid().context("the parent's pid")?;
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    ensure!(kill.success(), "kill -INT {pid}: {kill}");
    let out = parent.finish(RUN_WAIT).await?;
    assert_eq!(out.code, 130, "{out}");
    let child = env
        .wait_run(&name, RUN_WAIT, "Cancelled", |r| phase(r) == "Cancelled")
        .await
        .with_context(|| out.to_string())?;
    assert!(child.spec.cancel.is_some(), "{:#?}", child.spec);
    assert_eq!(child.parent().map(|p| p.run), Some(id.clone()));
    let deploy = local_job(&env.cli, &id, "deploy").await?;
    assert_eq!(deploy["state"], "cancelled", "{deploy}");

    // A cycle across the boundary: the cluster child awaits the local parent (a plan only the
    // runner's pod makes). The chain crossed: the child records `parent`, its runner's `sparkwing
    // run parent` is refused, and the local parent fails with the cycle.
    let known = env.run_names().await?;
    let (out, id) = run_parent(&env, "cycle").await?;
    assert_eq!(out.code, 1, "{out}");
    let child = env.wait_new_child(&known).await?;
    let name = child.name_any();
    let child = env
        .wait_run(&name, WAIT, "Failed", |r| phase(r) == "Failed")
        .await?;
    assert_eq!(
        child
            .annotations()
            .get("sparkwing.dev/pipeline-chain")
            .map(String::as_str),
        Some("parent"),
        "{:#?}",
        child.metadata
    );
    let deploy = local_job(&env.cli, &id, "deploy").await?;
    assert_eq!(deploy["state"], "failed", "{deploy}");
    let want = format!(
        "pipeline \"child\" on profile \"ci\" (run {}/{name}) failed: job back failed: pipeline \"parent\" failed: refusing to run pipeline \"parent\": cycle of pipelines awaiting each other: parent -> child -> parent (SPARKWING_PIPELINE_CHAIN is \"parent,child\")",
        env.ns
    );
    assert!(
        deploy["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with(&want)),
        "want {want:?}\n{deploy}\nrunner:\n{}",
        env.runner_logs(&name).await
    );
    env.shutdown().await
}
