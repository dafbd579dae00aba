//! Executor conformance, Kubernetes member: the fixture pipelines of the CLI's conformance suite
//! (`cli/tests/conformance_fixture`, run there through the process and Docker executors) run
//! here through the operator, a runner Job and the REAL `sparkwing runner`, and must end the way
//! the process executor ends them on the host: the same exit code of the command that ran them
//! (`sparkwing run` here, `sparkwing pipeline trigger` there), and per job the same final state,
//! reason and attempt (the local store's rows against the job states the runner reported to the
//! API). The cluster side has no local event log, so the transitions themselves are compared by
//! the CLI suite only.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;
use sparkwing_e2e::cli::Cli;
use sparkwing_e2e::{real_runner, Cluster};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The CLI suite's fixture: the same project on every executor.
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../cli/tests/conformance_fixture"
);
/// The runner pods' binary cache on the host (keyed by content, kept between test runs).
const RUNNER_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/conformance-runner-cache");
const PRINCIPAL: &str = "conformance@example.com";
const PROFILE: &str = "ci";
/// How long anything but a run may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);
/// A run, including a first compile of the fixture with cargo (on the host, or in a pod).
const RUN_WAIT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_millis(200);

/// A job's end: state, reason, attempt.
type JobEnd = (String, String, u64);
/// A job's log line to interrupt the run after: (job, line).
type Interrupt<'a> = Option<(&'a str, &'a str)>;

/// How a run ended on one executor.
#[derive(Debug, PartialEq)]
struct Ending {
    code: i32,
    jobs: BTreeMap<String, JobEnd>,
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// `pipeline` run on the host with the process executor (`sparkwing run`, JSON lines), with
/// SIGINT sent once a line `(job, line)` of `interrupt_after` is printed.
async fn run_locally(cli: &Cli, pipeline: &str, interrupt_after: Interrupt<'_>) -> Result<Ending> {
    let project = cli.project().to_str().context("project path")?.to_string();
    let mut cmd = cli.command(["run", "-C", &project, pipeline]);
    cmd.env("SPARKWING_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("spawning sparkwing run")?;
    let pid = child.id().context("the run's pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut stderr = child.stderr.take().context("stderr")?;
    let stderr_text = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });
    let mut run_id = None;
    let mut interrupted = interrupt_after.is_none();
    let read_all = async {
        while let Some(line) = lines.next_line().await? {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["event"] == "run_started" {
                run_id = v["run"].as_str().map(str::to_string);
            }
            if let Some((job, text)) = interrupt_after {
                if !interrupted && v["job"] == job && v["line"] == text {
                    let kill = std::process::Command::new("kill")
                        .args(["-INT", &pid.to_string()])
                        .status()?;
                    ensure!(kill.success(), "kill -INT {pid} failed");
                    interrupted = true;
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(RUN_WAIT, read_all)
        .await
        .with_context(|| format!("sparkwing run {pipeline} did not end within {RUN_WAIT:?}"))??;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    let stderr = stderr_text.await.unwrap_or_default();
    ensure!(
        interrupted,
        "{pipeline}: the line to interrupt after never came\n{stderr}"
    );
    let id = run_id.with_context(|| format!("{pipeline}: no run_started line\n{stderr}"))?;
    let out = cli
        .run(["runs", "status", "--run", &id, "-o", "json"], WAIT)
        .await?;
    let v: Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("runs status -o json: {out}"))?;
    let jobs = v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            (
                str_of(j, "job_id"),
                (
                    str_of(j, "state"),
                    str_of(j, "reason"),
                    j["attempt"].as_u64().unwrap_or_default(),
                ),
            )
        })
        .collect();
    Ok(Ending {
        code: status.code().unwrap_or(-1),
        jobs,
    })
}

/// The cluster with the real runner's pool and a user whose profile targets it.
struct Env {
    cluster: Cluster,
    cli: Cli,
}

impl Env {
    async fn new() -> Result<Env> {
        let real = real_runner().await?;
        let cluster = Cluster::start("conformance", real.image.clone()).await?;
        cluster
            .add_real_pool(&real, "real", Path::new(RUNNER_CACHE))
            .await?;
        let cli = cluster
            .user(PRINCIPAL, Path::new(FIXTURE), PROFILE, "real")
            .await?;
        Ok(Env { cluster, cli })
    }

    /// `pipeline` triggered on the cluster and followed to its end, and the run's name; with
    /// `interrupt_after`, `runs cancel` (finally jobs still run, as after a first Ctrl-C) once the
    /// API holds that line of that job.
    async fn run_on_cluster(
        &self,
        pipeline: &str,
        interrupt_after: Interrupt<'_>,
    ) -> Result<(Ending, String)> {
        let project = self.cli.project().to_str().context("project path")?;
        let follower = self.cli.spawn([
            "pipeline",
            "trigger",
            "-C",
            project,
            pipeline,
            "--profile",
            PROFILE,
        ])?;
        let deadline = Instant::now() + RUN_WAIT;
        let full = follower
            .wait_triggered_run(WAIT)
            .await
            .with_context(|| pipeline.to_string())?;
        let name = full.rsplit('/').next().unwrap_or_default().to_string();
        if let Some((job, line)) = interrupt_after {
            loop {
                let lines = self.cluster.api_log_lines(&name, job).await?;
                if lines.iter().any(|(_, l)| l == line) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{pipeline}: job {job} never logged {line:?}\nrunner:\n{}",
                        self.cluster.runner_logs(&name).await
                    );
                }
                tokio::time::sleep(POLL).await;
            }
            let cancel = self
                .cli
                .run(["runs", "cancel", &full, "--profile", PROFILE], WAIT)
                .await?;
            ensure!(cancel.code == 0, "{cancel}");
        }
        let out = follower.finish(RUN_WAIT).await?;
        let view = self
            .cluster
            .api()
            .admin(
                "GET",
                &format!("/api/v1/runs/{}/{name}", self.cluster.ns.name()),
                None,
            )
            .await?
            .ok()?
            .json()?;
        let jobs = view["jobs"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(job, s)| {
                (
                    job.clone(),
                    (
                        str_of(s, "state"),
                        str_of(s, "reason"),
                        s["attempt"].as_u64().unwrap_or_default(),
                    ),
                )
            })
            .collect();
        Ok((
            Ending {
                code: out.code,
                jobs,
            },
            name,
        ))
    }
}

/// `pipeline` run on the host (a fresh copy of the project: the retry marker lives in the
/// workspace) and on the cluster: the host's run must exit with `code`, and both endings must be
/// equal. Returns the host's ending for the case's own checks and the cluster run's name.
async fn host_and_cluster(
    env: &Env,
    pipeline: &str,
    interrupt_after: Interrupt<'_>,
    code: i32,
) -> Result<(Ending, String)> {
    let local_cli = env
        .cluster
        .user(PRINCIPAL, Path::new(FIXTURE), PROFILE, "real")
        .await?;
    let started = Instant::now();
    let local = run_locally(&local_cli, pipeline, interrupt_after).await?;
    let on_host = started.elapsed();
    assert_eq!(local.code, code, "{pipeline} on the host: {local:?}");
    let started = Instant::now();
    let (cluster, name) = env.run_on_cluster(pipeline, interrupt_after).await?;
    eprintln!(
        "{pipeline}: host {local:?} in {on_host:?}, cluster {cluster:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(
        local, cluster,
        "{pipeline}: the process executor (left) and Kubernetes (right) differ"
    );
    Ok((local, name))
}

/// A job's (state, reason, attempt) in an ending.
fn state<'a>(ending: &'a Ending, job: &str) -> Option<(&'a str, &'a str, u64)> {
    ending
        .jobs
        .get(job)
        .map(|(s, r, a)| (s.as_str(), r.as_str(), *a))
}

/// Every case of the CLI suite, on the host and on the cluster, ends the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_pipelines_end_on_kubernetes_as_with_the_process_executor() -> Result<()> {
    let env = Env::new().await?;
    let cases: [(&str, Interrupt, i32); 5] = [
        ("success", None, 0),
        ("fail-upstream", None, 1),
        ("retry", None, 0),
        ("timeout", None, 1),
        ("cancel-finally", Some(("long", "started")), 130),
    ];
    for (pipeline, interrupt_after, code) in cases {
        let (local, _) = host_and_cluster(&env, pipeline, interrupt_after, code).await?;
        // What the CLI suite asserts of each case, so that equal endings are the right ones.
        let state = |job: &str| state(&local, job);
        match pipeline {
            "success" => {
                assert_eq!(state("first").map(|j| j.0), Some("success"), "{local:?}");
                assert_eq!(state("second").map(|j| j.0), Some("success"), "{local:?}");
            }
            "fail-upstream" => {
                assert_eq!(state("build").map(|j| j.0), Some("failed"), "{local:?}");
                assert_eq!(
                    state("package").map(|j| (j.0, j.1)),
                    Some(("cancelled", "upstream-failed")),
                    "{local:?}"
                );
                assert_eq!(state("report").map(|j| j.0), Some("success"), "{local:?}");
            }
            "retry" => assert_eq!(
                state("flaky").map(|j| (j.0, j.2)),
                Some(("success", 2)),
                "{local:?}"
            ),
            "timeout" => {
                let (s, r, _) = state("slow").context("job slow")?;
                assert!(s == "failed" && r.starts_with("timeout"), "{local:?}");
            }
            _ => assert_eq!(state("fin").map(|j| j.0), Some("success"), "{local:?}"),
        }
    }
    env.cluster.shutdown().await
}

/// The cache, artifact, memo and fan-out cases of the CLI suite, one run each (a runner pod is
/// fresh per run, so a second run's cache and memo hits are compared between the local
/// executors only): on the host and on the cluster they end the same. Inside the pod the cache
/// misses and is saved, the artifact passes from producer to consumer, the memoized job runs,
/// and the fan-out expands into `test[0]` … `test[3]` beside the matrix's `pkg[0]`, `pkg[1]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_and_fan_out_pipelines_end_on_kubernetes_as_with_the_process_executor(
) -> Result<()> {
    let env = Env::new().await?;
    for pipeline in ["cache", "artifact", "memo", "fan-out"] {
        let (local, name) = host_and_cluster(&env, pipeline, None, 0).await?;
        // What the runner pod's engine did with the cache and the artifact, from the jobs' lines
        // the API holds.
        let expect_lines: &[(&str, &str)] = match pipeline {
            "cache" => &[
                ("deps", "cache deps: miss (key deps-"),
                ("deps", "cache deps: saved deps-"),
            ],
            "artifact" => &[
                ("make", "artifact report published from out/report.txt"),
                (
                    "check",
                    "artifact report of job make → consumer/out/report.txt",
                ),
                ("check", "report checked"),
            ],
            _ => &[],
        };
        for (job, start) in expect_lines {
            let lines = env.cluster.api_log_lines(&name, job).await?;
            assert!(
                lines.iter().any(|(_, l)| l.starts_with(start)),
                "{pipeline}: job {job} has no line starting {start:?} on the cluster: {lines:?}"
            );
        }
        let succeeded: &[&str] = match pipeline {
            "cache" => &["deps"],
            "artifact" => &["make", "check"],
            "memo" => &["compute", "use"],
            _ => {
                assert_eq!(
                    state(&local, "test").map(|j| (j.0, j.1)),
                    Some(("success", "fanned out into 4 jobs (test[0] … test[3])")),
                    "{local:?}"
                );
                &[
                    "shards", "test[0]", "test[1]", "test[2]", "test[3]", "pkg", "pkg[0]",
                    "pkg[1]", "sum",
                ]
            }
        };
        for job in succeeded {
            assert_eq!(
                state(&local, job).map(|j| j.0),
                Some("success"),
                "{pipeline}: job {job}: {local:?}"
            );
        }
        if pipeline == "memo" {
            second_memo_run_hits_on_the_cluster(&env, &name).await?;
        }
    }
    env.cluster.shutdown().await
}

/// A second cluster run of `memo`, in a runner pod of its own, takes the first's result through
/// the API as a second local run takes it from the run store: `compute` recorded `cached from run
/// FIRST` (the CLI suite's `memoized_job_is_cached_from_the_first_run`), `use` gets its output
/// and artifact.
async fn second_memo_run_hits_on_the_cluster(env: &Env, first: &str) -> Result<()> {
    let (second, name) = env.run_on_cluster("memo", None).await?;
    assert_eq!(second.code, 0, "memo, second cluster run: {second:?}");
    let reason = format!("cached from run {first}");
    assert_eq!(
        state(&second, "compute").map(|j| (j.0, j.1)),
        Some(("cached", reason.as_str())),
        "memo, second cluster run: {second:?}"
    );
    assert_eq!(
        state(&second, "use").map(|j| j.0),
        Some("success"),
        "{second:?}"
    );
    let lines = env.cluster.api_log_lines(&name, "use").await?;
    assert!(
        lines.iter().any(|(_, l)| l == "value 42, file 42"),
        "memo, second cluster run: job use: {lines:?}"
    );
    let computed = env.cluster.api_log_lines(&name, "compute").await?;
    assert!(
        !computed.iter().any(|(_, l)| l == "computing"),
        "the cached job ran on the cluster: {computed:?}"
    );
    Ok(())
}
