//! Placed jobs in pods of their own (`docs/runner.md#job-pods`): the REAL `sparkwing runner` runs
//! the fixture `tests/fixtures/jobpods` (a producer publishing an artifact and a list, placed
//! fan-out jobs consuming it, a fan-in) on the test bed's real node. The run's coordinator asks
//! the API for a pod per placed job's attempt; each job pod runs that job alone and reports to
//! the API under the job's id.
//!
//! One test per behaviour, run one at a time: the fan-out lands in four pods with the
//! placement's resources; a deleted job pod is retried in a new pod; cancelling the run deletes
//! every job pod.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::cli::Cli;
use sparkwing_e2e::{real_runner, Cluster};

const FIXTURE: &str = "tests/fixtures/jobpods";
/// The runner pods' binary cache on the host (kept between test runs: keyed by content).
const RUNNER_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/job-pods-runner-cache");
const USER: &str = "alice@example.com";
const PROFILE: &str = "ci";
const WAIT: Duration = Duration::from_secs(60);
/// A run, including a first compile of the fixture with cargo in a runner pod.
const RUN_WAIT: Duration = Duration::from_secs(480);
const POLL: Duration = Duration::from_millis(250);
/// The label of a job pod naming its run.
const JOB_RUN: &str = "sparkwing.dev/job-run";

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

    /// `pipeline trigger pods ARGS --detach --profile ci`: the run's name.
    async fn trigger(&self, args: &[&str]) -> Result<String> {
        let project = self.user.project().to_str().unwrap_or_default().to_string();
        let mut argv = vec!["pipeline", "trigger", "-C", &project, "pods"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--detach", "--profile", PROFILE]);
        let out = self.user.run(argv, WAIT).await?;
        ensure!(out.code == 0, "{out}");
        let full = out.stdout.trim().to_string();
        Ok(full.rsplit('/').next().unwrap_or(&full).to_string())
    }

    async fn view(&self, name: &str) -> Result<Value> {
        let path = format!("/api/v1/runs/{}/{name}", self.cluster.ns.name());
        self.cluster
            .api()
            .admin("GET", &path, None)
            .await?
            .ok()?
            .json()
    }

    /// The job pods of run `name`.
    async fn job_pods(&self, name: &str) -> Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), self.cluster.ns.name());
        Ok(pods
            .list(&ListParams::default().labels(&format!("{JOB_RUN}={name}")))
            .await?
            .items)
    }

    /// Waits until `cond` holds for the job pods of `name`.
    async fn wait_pods(
        &self,
        name: &str,
        what: &str,
        cond: impl Fn(&[Pod]) -> bool,
    ) -> Result<Vec<Pod>> {
        let deadline = Instant::now() + RUN_WAIT;
        loop {
            let pods = self.job_pods(name).await?;
            if cond(&pods) {
                return Ok(pods);
            }
            if Instant::now() > deadline {
                bail!(
                    "run {name}: job pods not {what} within {RUN_WAIT:?}: {:?}\nrunner:\n{}",
                    pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
                    self.cluster.runner_logs(name).await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_end(&self, name: &str) -> Result<PipelineRun> {
        let run = self
            .cluster
            .wait_run(name, RUN_WAIT, "finished", |r| {
                r.status.as_ref().is_some_and(|s| s.phase.is_terminal())
            })
            .await;
        if run.is_err() {
            eprintln!("runner:\n{}", self.cluster.runner_logs(name).await);
        }
        run
    }

    async fn log(&self, name: &str, job: &str) -> Result<Vec<String>> {
        Ok(self
            .cluster
            .api_log_lines(name, job)
            .await?
            .into_iter()
            .map(|(_, l)| l)
            .collect())
    }
}

fn phase(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .map(|s| s.phase.phase_str().to_string())
        .unwrap_or_default()
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn annotation<'a>(p: &'a Pod, key: &str) -> &'a str {
    p.annotations()
        .get(key)
        .map(String::as_str)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_fan_out_jobs_run_in_pods_of_their_own() -> Result<()> {
    let env = Env::new("job-pods").await?;
    let started = Instant::now();
    let name = env.trigger(&[]).await?;
    let run = env.wait_end(&name).await?;
    let view = env.view(&name).await?;
    assert_eq!(phase(&run), "Succeeded", "{view:#}\n{:#?}", run.status);

    // Four job pods, one per expanded job, with the placement's resources.
    let pods = env.job_pods(&name).await?;
    let mut jobs: Vec<&str> = pods
        .iter()
        .map(|p| annotation(p, "sparkwing.dev/job"))
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        ["test[0]", "test[1]", "test[2]", "test[3]"],
        "{pods:#?}"
    );
    for p in &pods {
        let c = &p.spec.as_ref().context("pod spec")?.containers[0];
        let r = c.resources.as_ref().context("resources")?;
        for set in [&r.requests, &r.limits] {
            let set = set.as_ref().context("requests and limits")?;
            assert_eq!(set["cpu"].0, "100m", "{}", p.name_any());
            assert_eq!(set["memory"].0, "64Mi", "{}", p.name_any());
        }
        assert!(p.labels().contains_key("sparkwing.dev/job"));
        assert_eq!(p.labels()["sparkwing.dev/job-attempt"], "1");
        let owner = &p.owner_references()[0];
        assert_eq!(owner.kind, "Job", "{}", p.name_any());
    }
    let pod_names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();

    // Each job read the producer's artifact in its own pod and said so in its log and outputs.
    for (i, item) in ["a", "b", "c", "d"].iter().enumerate() {
        let id = format!("test[{i}]");
        let job = &view["jobs"][&id];
        assert_eq!(job["state"], "success", "{id}: {view:#}");
        assert_eq!(
            job["outputs"]["result"],
            format!("{item}:token-pods"),
            "{id}"
        );
        let pod = job["outputs"]["pod"].as_str().unwrap_or_default();
        assert!(
            pod_names.iter().any(|n| n == pod),
            "{id} ran in {pod:?}, not a job pod: {pod_names:?}"
        );
        let log = env.log(&name, &id).await?;
        assert!(
            log.iter()
                .any(|l| l == &format!("item {item} read token-pods in pod {pod}")),
            "{id}: {log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.contains("artifact") && l.contains("dist")),
            "{id}: {log:?}"
        );
    }
    // The fan-in saw every job's output.
    let fanin = env.log(&name, "fanin").await?;
    assert!(
        fanin
            .iter()
            .any(|l| l == "results=a:token-pods,b:token-pods,c:token-pods,d:token-pods"),
        "{fanin:?}"
    );
    // `runs logs --job` reads a job pod's log through the API like any job's.
    let full = format!("{}/{name}", env.cluster.ns.name());
    let out = env
        .user
        .run(
            [
                "runs",
                "logs",
                &full,
                "--job",
                "test[2]",
                "--profile",
                PROFILE,
            ],
            WAIT,
        )
        .await?;
    assert!(out.stdout.contains("item c read token-pods"), "{out}");
    eprintln!("[job-pods] done in {:?}", started.elapsed());
    env.cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_job_pod_is_retried_in_a_new_pod() -> Result<()> {
    let env = Env::new("job-pods-lost").await?;
    let name = env
        .trigger(&["--items", "a", "--seconds", "300", "--retries", "1"])
        .await?;
    // Its first pod runs the job (sleeping): delete it at once.
    let pods = env
        .wait_pods(&name, "running", |pods| pods.iter().any(running))
        .await?;
    let first = pods.iter().find(|p| running(p)).context("a running pod")?;
    let first_name = first.name_any();
    let deadline = Instant::now() + RUN_WAIT;
    loop {
        let log = env.log(&name, "test[0]").await?;
        if log.iter().any(|l| l == "sleeping") {
            break;
        }
        ensure!(Instant::now() < deadline, "test[0] never slept: {log:?}");
        tokio::time::sleep(POLL).await;
    }
    let api: Api<Pod> = Api::namespaced(env.cluster.client.clone(), env.cluster.ns.name());
    api.delete(&first_name, &DeleteParams::default().grace_period(0))
        .await?;
    let run = env.wait_end(&name).await?;
    let view = env.view(&name).await?;
    assert_eq!(phase(&run), "Succeeded", "{view:#}");
    let job = &view["jobs"]["test[0]"];
    assert_eq!(job["state"], "success", "{view:#}");
    assert_eq!(job["attempt"], 2, "{view:#}");
    let pods = env.job_pods(&name).await?;
    let second = pods
        .iter()
        .find(|p| p.labels()["sparkwing.dev/job-attempt"] == "2")
        .context("the second attempt's pod")?;
    assert_ne!(second.name_any(), first_name);
    assert_eq!(job["outputs"]["pod"], second.name_any());
    env.cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_run_deletes_its_job_pods() -> Result<()> {
    let env = Env::new("job-pods-cancel").await?;
    let name = env.trigger(&["--seconds", "300"]).await?;
    env.wait_pods(&name, "all four running", |pods| {
        pods.iter().filter(|p| running(p)).count() == 4
    })
    .await?;
    let path = format!("/api/v1/runs/{}/{name}/cancel", env.cluster.ns.name());
    env.cluster
        .api()
        .admin("POST", &path, Some(&json!({})))
        .await?
        .ok()?;
    let run = env.wait_end(&name).await?;
    assert_eq!(phase(&run), "Cancelled", "{:#?}", run.status);
    env.wait_pods(&name, "gone", |pods| pods.is_empty()).await?;
    let view = env.view(&name).await?;
    for i in 0..4 {
        let state = &view["jobs"][&format!("test[{i}]")]["state"];
        assert_eq!(state, "cancelled", "test[{i}]: {view:#}");
    }
    env.cluster.shutdown().await
}
