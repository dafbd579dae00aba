//! Approval gates of cluster runs (issue 19, item 1): the REAL `sparkwing runner` runs the
//! fixture `tests/fixtures/gates` in a runner pod of the test bed; once only its gate waits, the
//! runner parks (no runner pod of the run is left, the run stays `Running`, `WaitingForApproval`)
//! and a person decides it with `sparkwing runs approve|reject --profile` through the API; a new
//! attempt resumes the run from the recorded job states (the job before the gate does not run
//! again) and it goes on (approve: `Succeeded`) or fails (reject: `Failed`, the job after the
//! gate never runs, the `finally` job does); a cancel while parked ends it `Cancelled` at once
//! without a new attempt; a gate nobody decides is rejected by its timeout, which starts the
//! next attempt, whose runner records it through the API.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::Value;
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::cli::{Cli, CliOut, Profile};
use sparkwing_e2e::{real_runner, Cluster};

/// The fixture project.
const FIXTURE: &str = "tests/fixtures/gates";
/// The runner pods' binary cache on the host (kept between test runs: it is keyed by content).
const RUNNER_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/cluster-gates-runner-cache");
/// The user who triggers (runs:read, runs:trigger) and the approver (approvals:write, runs:read).
const USER: &str = "alice@example.com";
const APPROVER: &str = "ana@example.com";
const PROFILE: &str = "ci";
/// How long anything but a run may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);
/// A run, including a first compile of the fixture with cargo in a runner pod.
const RUN_WAIT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_millis(200);

struct Env {
    cluster: Cluster,
    user: Cli,
    approver: Cli,
    started: Instant,
}

impl Env {
    async fn new(hint: &str) -> Result<Env> {
        let started = Instant::now();
        let real = real_runner().await?;
        let cluster = Cluster::start(hint, real.image.clone()).await?;
        cluster
            .add_real_pool(&real, "real", Path::new(RUNNER_CACHE))
            .await?;
        let user = cluster
            .user(USER, Path::new(FIXTURE), PROFILE, "real")
            .await?;
        let api = cluster.api();
        let (token, _) = api
            .state
            .store
            .create_token(
                APPROVER,
                vec!["approvals:write".to_string(), "runs:read".to_string()],
                None,
            )
            .await
            .context("creating the approver's token")?;
        let approver = Cli::new(Path::new(FIXTURE), &token)?;
        approver.set_profiles(&[Profile::new(PROFILE, &api.url).namespace(cluster.ns.name())])?;
        eprintln!("[{hint}] set up in {:?}", started.elapsed());
        Ok(Env {
            cluster,
            user,
            approver,
            started,
        })
    }

    /// `pipeline trigger PIPELINE --detach --profile ci`: the run's `NS/NAME`.
    async fn trigger(&self, pipeline: &str) -> Result<String> {
        let project = self.user.project().to_str().unwrap_or_default();
        let out = self
            .user
            .run(
                [
                    "pipeline",
                    "trigger",
                    "-C",
                    project,
                    pipeline,
                    "--detach",
                    "--profile",
                    PROFILE,
                ],
                WAIT,
            )
            .await?;
        ensure!(out.code == 0, "{out}");
        Ok(out.stdout.trim().to_string())
    }

    /// The job states the API holds for run `name`.
    async fn jobs(&self, name: &str) -> Result<Value> {
        let path = format!("/api/v1/runs/{}/{name}", self.cluster.ns.name());
        let v = self
            .cluster
            .api()
            .admin("GET", &path, None)
            .await?
            .ok()?
            .json()?;
        Ok(v["jobs"].clone())
    }

    /// Waits until the API shows job `job` of run `name` in one of `states`.
    async fn wait_job(&self, name: &str, job: &str, states: &[&str]) -> Result<Value> {
        let deadline = Instant::now() + RUN_WAIT;
        loop {
            let jobs = self.jobs(name).await?;
            if states.iter().any(|s| jobs[job]["state"] == *s) {
                return Ok(jobs[job].clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "job {job} of {name} not {states:?} within {RUN_WAIT:?}: {jobs:#}\nrunner:\n{}",
                    self.cluster.runner_logs(name).await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `sparkwing runs VERB NS/NAME --gate approve --comment C --profile ci -o json` as `cli`.
    async fn decide(&self, cli: &Cli, verb: &str, full: &str, comment: &str) -> Result<CliOut> {
        cli.run(
            [
                "runs",
                verb,
                full,
                "--gate",
                "approve",
                "--comment",
                comment,
                "--profile",
                PROFILE,
                "-o",
                "json",
            ],
            WAIT,
        )
        .await
    }

    async fn wait_end(&self, name: &str) -> Result<PipelineRun> {
        self.cluster
            .wait_run(name, RUN_WAIT, "finished", |r| {
                r.status.as_ref().is_some_and(|s| s.phase.is_terminal())
            })
            .await
    }

    async fn shutdown(self, hint: &str) -> Result<()> {
        eprintln!("[{hint}] done in {:?}", self.started.elapsed());
        self.cluster.shutdown().await
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

impl Env {
    /// The runner pods of run `name` (Job pods and claimed warm pods carry its label).
    async fn runner_pods(&self, name: &str) -> Result<Vec<String>> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), self.cluster.ns.name());
        let lp = ListParams::default().labels(&format!("sparkwing.dev/run={name}"));
        Ok(pods
            .list(&lp)
            .await?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect())
    }

    /// Waits until run `name` is parked: `Running` with the reason `WaitingForApproval` and no
    /// runner pod left. Returns the run as it is then.
    async fn wait_parked(&self, name: &str) -> Result<PipelineRun> {
        let deadline = Instant::now() + RUN_WAIT;
        loop {
            let run = self.cluster.runs().get(name).await?;
            let reason = run
                .status
                .as_ref()
                .and_then(|s| s.condition("Succeeded"))
                .map(|c| c.reason.clone())
                .unwrap_or_default();
            let pods = self.runner_pods(name).await?;
            if phase(&run) == "Running" && reason == "WaitingForApproval" && pods.is_empty() {
                return Ok(run);
            }
            if Instant::now() > deadline {
                bail!(
                    "run {name} not parked within {RUN_WAIT:?}: {:#?}, pods {pods:?}\nrunner:\n{}",
                    run.status,
                    self.cluster.runner_logs(name).await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn attempts(run: &PipelineRun) -> (u32, u32) {
    run.status
        .as_ref()
        .map(|s| (s.attempts, s.resumes))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_of_a_cluster_run_parks_its_runner_and_a_new_attempt_resumes_after_the_decision(
) -> Result<()> {
    let env = Env::new("cluster-gates").await?;

    // Approved: the run parks (no runner pod while the gate waits), then a new attempt resumes
    // it without running build again, and it goes on to Succeeded.
    let full = env.trigger("ship").await?;
    let name = name_of(&full).to_string();
    let waiting = env.wait_job(&name, "approve", &["waiting"]).await?;
    assert_eq!(waiting["gate"], true, "{waiting}");
    let parked = env.wait_parked(&name).await?;
    assert_eq!(attempts(&parked), (1, 0), "{:#?}", parked.status);
    // Waiting holds the run: the job after the gate has not started; build ended in attempt 1.
    let jobs = env.jobs(&name).await?;
    assert_eq!(jobs["deploy"]["state"], "pending", "{jobs:#}");
    assert_eq!(
        (
            jobs["build"]["state"].clone(),
            jobs["build"]["attempt"].clone()
        ),
        ("success".into(), 1.into()),
        "{jobs:#}"
    );
    let build_finished = jobs["build"]["finishedAt"].clone();
    let status = env
        .user
        .run(["runs", "status", &full, "--profile", PROFILE], WAIT)
        .await?;
    assert!(
        status.stdout.contains(&format!(
            "gate approve: waiting for a decision (sparkwing runs approve|reject {full} --gate approve --profile {PROFILE})"
        )),
        "{status}"
    );
    assert!(
        status.stdout.contains(
            "reason:   WaitingForApproval: waiting for gate approve; no runner until a decision (attempt 1 parked)"
        ),
        "{status}"
    );
    // Triggering is not approving.
    let refused = env.decide(&env.user, "approve", &full, "me").await?;
    assert_eq!(refused.code, 9, "{refused}");
    assert!(
        refused.stderr.contains("lacks the scope approvals:write"),
        "{refused}"
    );
    let approved_at = Instant::now();
    let out = env
        .decide(&env.approver, "approve", &full, "ship it")
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let v: Value = serde_json::from_str(&out.stdout).with_context(|| out.to_string())?;
    assert_eq!(
        (v["run"].clone(), v["gate"].clone(), v["decision"].clone()),
        (full.clone().into(), "approve".into(), "approve".into()),
        "{v}"
    );
    assert_eq!(
        (v["by"].clone(), v["comment"].clone()),
        (APPROVER.into(), "ship it".into())
    );
    let deploy = env
        .wait_job(&name, "deploy", &["running", "success"])
        .await?;
    eprintln!(
        "parked: from the approval to deploy started (or done), a new runner included: {:?} ({deploy})",
        approved_at.elapsed()
    );
    let run = env.wait_end(&name).await?;
    assert_eq!(phase(&run), "Succeeded", "{:#?}", run.status);
    assert_eq!(attempts(&run), (2, 1), "{:#?}", run.status);
    let jobs = env.jobs(&name).await?;
    assert_eq!(jobs["approve"]["state"], "success", "{jobs:#}");
    assert_eq!(
        jobs["approve"]["reason"],
        format!("approved by {APPROVER}: ship it"),
        "{jobs:#}"
    );
    assert_eq!(jobs["deploy"]["state"], "success", "{jobs:#}");
    // build ran once, in attempt 1: its record and its log are that attempt's.
    assert_eq!(
        (
            jobs["build"]["state"].clone(),
            jobs["build"]["attempt"].clone(),
            jobs["build"]["finishedAt"].clone()
        ),
        ("success".into(), 1.into(), build_finished),
        "{jobs:#}"
    );
    assert_eq!(
        env.cluster.api_log_lines(&name, "build").await?,
        [(1, "built".to_string())]
    );
    assert_eq!(
        env.cluster.api_log_lines(&name, "deploy").await?,
        [(1, "deployed".to_string())]
    );
    assert_eq!(
        env.cluster.api_log_lines(&name, "cleanup").await?,
        [(1, "cleaned up".to_string())]
    );
    // The first decision stands: a second one is refused as locally (exit 2).
    let again = env
        .decide(&env.approver, "reject", &full, "too late")
        .await?;
    assert_eq!(again.code, 2, "{again}");
    assert!(
        again
            .stderr
            .contains(&format!("was already approved by {APPROVER}: ship it")),
        "{again}"
    );
    // A gate the run does not have: exit 5 as locally.
    let unknown = env
        .approver
        .run(
            [
                "runs",
                "approve",
                &full,
                "--gate",
                "nope",
                "--profile",
                PROFILE,
            ],
            WAIT,
        )
        .await?;
    assert_eq!(unknown.code, 5, "{unknown}");
    assert!(
        unknown.stderr.contains(&format!(
            "run {full} has no gate \"nope\"; its gates: approve"
        )),
        "{unknown}"
    );

    // Cancelled while parked: at once, no new attempt, deploy and cleanup never run.
    let full = env.trigger("ship").await?;
    let name = name_of(&full).to_string();
    env.wait_parked(&name).await?;
    let cancelled_at = Instant::now();
    let out = env
        .user
        .run(["runs", "cancel", &full, "--profile", PROFILE], WAIT)
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let run = env.wait_end(&name).await?;
    eprintln!("parked: cancelled in {:?}", cancelled_at.elapsed());
    assert_eq!(phase(&run), "Cancelled", "{:#?}", run.status);
    assert_eq!(attempts(&run), (1, 0), "{:#?}", run.status);
    assert!(env.runner_pods(&name).await?.is_empty());
    assert!(env.cluster.api_log_lines(&name, "deploy").await?.is_empty());
    assert!(env
        .cluster
        .api_log_lines(&name, "cleanup")
        .await?
        .is_empty());

    // Rejected while parked: the resumed run fails, deploy never runs, cleanup (finally) does.
    let full = env.trigger("ship").await?;
    let name = name_of(&full).to_string();
    env.wait_parked(&name).await?;
    let out = env
        .decide(&env.approver, "reject", &full, "not today")
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let v: Value = serde_json::from_str(&out.stdout).with_context(|| out.to_string())?;
    assert_eq!(v["decision"], "reject", "{v}");
    let run = env.wait_end(&name).await?;
    assert_eq!(phase(&run), "Failed", "{:#?}", run.status);
    assert_eq!(attempts(&run), (2, 1), "{:#?}", run.status);
    let jobs = env.jobs(&name).await?;
    assert_eq!(jobs["approve"]["state"], "failed", "{jobs:#}");
    assert_eq!(
        jobs["approve"]["reason"],
        format!("rejected by {APPROVER}: not today"),
        "{jobs:#}"
    );
    assert_eq!(jobs["deploy"]["state"], "cancelled", "{jobs:#}");
    assert!(env.cluster.api_log_lines(&name, "deploy").await?.is_empty());
    assert_eq!(
        env.cluster.api_log_lines(&name, "build").await?,
        [(1, "built".to_string())]
    );
    assert_eq!(
        env.cluster.api_log_lines(&name, "cleanup").await?,
        [(1, "cleaned up".to_string())]
    );
    let status = env
        .user
        .run(["runs", "wait", &full, "--profile", PROFILE], WAIT)
        .await?;
    assert_eq!(status.code, 1, "{status}");
    env.shutdown("cluster-gates").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gates_timeout_is_recorded_through_the_api() -> Result<()> {
    let env = Env::new("cluster-gate-timeout").await?;
    let full = env.trigger("timed").await?;
    let name = name_of(&full).to_string();
    let run = env.wait_end(&name).await?;
    assert_eq!(phase(&run), "Failed", "{:#?}", run.status);
    // The runner parked while the gate waited; its timeout started the attempt that recorded it.
    assert_eq!(attempts(&run), (2, 1), "{:#?}", run.status);
    let jobs = env.jobs(&name).await?;
    assert_eq!(jobs["approve"]["state"], "failed", "{jobs:#}");
    assert_eq!(
        jobs["approve"]["reason"], "rejected by timeout: no decision within 2s",
        "{jobs:#}"
    );
    assert_eq!(jobs["deploy"]["state"], "cancelled", "{jobs:#}");
    // The API's record is the runner's, marked as the timeout's.
    let path = format!("/api/v1/runs/{full}/gates/approve");
    let v = env
        .cluster
        .api()
        .admin("GET", &path, None)
        .await?
        .ok()?
        .json()?;
    let d = &v["decided"];
    assert_eq!(
        (
            d["decision"].clone(),
            d["by"].clone(),
            d["timedOut"].clone()
        ),
        ("reject".into(), "timeout".into(), true.into()),
        "{v}"
    );
    assert_eq!(d["comment"], "no decision within 2s", "{v}");
    // Too late for a person.
    let late = env.decide(&env.approver, "approve", &full, "sorry").await?;
    assert_eq!(late.code, 2, "{late}");
    assert!(
        late.stderr.contains("was already rejected by timeout"),
        "{late}"
    );
    env.shutdown("cluster-gate-timeout").await
}
