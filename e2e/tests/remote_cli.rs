//! The `sparkwing` CLI against the operator and its API in the test bed: the real kube-apiserver,
//! the bed's node running runner Jobs, and the REAL `sparkwing runner` compiling and
//! running the fixture `tests/fixtures/remote` in them. Every test drives the binary as a user
//! does (a profiles file, a token from a variable, `-C <project>`): `pipeline trigger` followed
//! and `--detach`ed, `runs wait|status|logs|cancel --profile`, a re-trigger of an unchanged tree,
//! a runner killed mid-run, and `run --profile` with the API up and down, then `runs push`.
//!
//! Runner pods share one binary cache (`sparkwing_e2e::cli::with_binary_cache`, a host directory
//! under the cargo target's tmp dir), so the fixture is compiled once, not once per run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::cli::{triggered_run, Cli, CliOut, Profile};
use sparkwing_e2e::{real_runner, Cluster, LossKind};

/// The fixture project.
const FIXTURE: &str = "tests/fixtures/remote";
/// The runner pods' binary cache on the host (kept between test runs: it is keyed by content).
const RUNNER_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/remote-cli-runner-cache");
/// The host's binary cache of `run --profile`.
const HOST_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/remote-cli-host-cache");
/// The token's principal.
const PRINCIPAL: &str = "alice@example.com";
/// The profile of every test.
const PROFILE: &str = "ci";
/// How long anything but a run may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);
/// A run, including a first compile of the fixture with cargo in a runner pod.
const RUN_WAIT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_millis(200);

/// The cluster with the real runner's pool and a user of its API.
struct Env {
    cluster: Cluster,
    cli: Cli,
    hint: String,
    started: Instant,
}

impl std::ops::Deref for Env {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Env {
    /// A namespace, the node emulator, the operator with its API, the real runner's pool `real`
    /// (with the shared binary cache), a token of [`PRINCIPAL`] with `runs:read` and
    /// `runs:trigger`, and a user with the fixture and the profile [`PROFILE`] (namespace and
    /// pool set).
    async fn new(hint: &str) -> Result<Env> {
        let started = Instant::now();
        let real = real_runner().await?;
        let cluster = Cluster::start(hint, real.image.clone()).await?;
        cluster
            .add_real_pool(&real, "real", Path::new(RUNNER_CACHE))
            .await?;
        let cli = cluster
            .user(PRINCIPAL, Path::new(FIXTURE), PROFILE, "real")
            .await?;
        eprintln!("[{hint}] set up in {:?}", started.elapsed());
        Ok(Env {
            cluster,
            cli,
            hint: hint.to_string(),
            started,
        })
    }

    /// `sparkwing ARGS` to its end (within [`RUN_WAIT`]).
    async fn sw(&self, args: &[&str]) -> Result<CliOut> {
        self.cli.run(args, RUN_WAIT).await
    }

    /// `sparkwing pipeline trigger -C <project> PIPELINE --profile ci ARGS`.
    fn trigger_args<'a>(&'a self, pipeline: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        let project = self.cli.project().to_str().unwrap_or_default();
        let mut args = vec!["pipeline", "trigger", "-C", project, pipeline];
        args.extend_from_slice(rest);
        args.extend_from_slice(&["--profile", PROFILE]);
        args
    }

    /// The job's log lines the API holds, as (seq, line).
    async fn api_lines(&self, name: &str, job: &str) -> Result<Vec<(u64, String)>> {
        self.cluster.api_log_lines(name, job).await
    }

    /// Polls the API's log of `job` until `cond` holds on its lines.
    async fn wait_api_lines(
        &self,
        name: &str,
        job: &str,
        what: &str,
        cond: impl Fn(&[(u64, String)]) -> bool,
    ) -> Result<Vec<(u64, String)>> {
        let deadline = Instant::now() + RUN_WAIT;
        loop {
            let lines = self.api_lines(name, job).await?;
            if cond(&lines) {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                let run = self.runs().get_opt(name).await?.and_then(|r| r.status);
                bail!("the API's log of {name}/{job} has not {what} within {RUN_WAIT:?}: {lines:?}; run: {run:#?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The run's runner pod of `attempt`, once its container exists.
    async fn runner_pod(&self, run: &str, attempt: u32) -> Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let lp = ListParams::default().labels(&format!(
            "sparkwing.dev/run={run},sparkwing.dev/attempt={attempt}"
        ));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(pod) = pods.list(&lp).await?.items.into_iter().next() {
                if !self.node.containers(&pod.name_any()).await?.is_empty() {
                    return Ok(pod);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no runner container for {run} attempt {attempt}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `runs wait NS/NAME --profile` exits 0 (the run succeeded); else fails with its output and
    /// the runner's log.
    async fn runs_wait_succeeds(&self, full: &str) -> Result<()> {
        let args = [
            "runs",
            "wait",
            full,
            "--profile",
            PROFILE,
            "--timeout",
            "7m",
        ];
        let wait = self.sw(&args).await?;
        ensure!(
            wait.code == 0,
            "{wait}\nrunner:\n{}",
            self.runner_logs(name_of(full)).await
        );
        Ok(())
    }

    /// The API's metric `name`.
    async fn metric(&self, name: &str) -> Result<u64> {
        let text = self
            .api()
            .request("GET", "/metrics", None, None)
            .await?
            .ok()?
            .text();
        Ok(text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0))
    }

    async fn shutdown(self) -> Result<()> {
        eprintln!("[{}] done in {:?}", self.hint, self.started.elapsed());
        self.cluster.shutdown().await
    }
}

fn phase(run: &PipelineRun) -> &str {
    run.status.as_ref().map_or("", |s| s.phase.phase_str())
}

fn finished(run: &PipelineRun) -> bool {
    matches!(phase(run), "Succeeded" | "Failed" | "Cancelled")
}

/// (reason, message) of the run's `Succeeded` condition.
fn condition(run: &PipelineRun) -> (String, String) {
    run.status
        .as_ref()
        .and_then(|s| s.condition("Succeeded"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// The lines a followed run printed for `job` (`job │ line`), in order.
fn printed(stdout: &str, job: &str) -> Vec<String> {
    let prefix = format!("{job} │ ");
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn name_of(full: &str) -> &str {
    full.rsplit('/').next().unwrap_or(full)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_follows_the_run_to_its_end_and_exits_like_run() -> Result<()> {
    let env = Env::new("cli-follow").await?;
    let out = env
        .sw(&env.trigger_args("hello", &["--who", "cluster"]))
        .await?;
    let full = triggered_run(&out.stderr).with_context(|| format!("no run named: {out}"))?;
    let name = name_of(&full).to_string();
    ensure!(
        out.code == 0,
        "{out}\nrunner:\n{}",
        env.runner_logs(&name).await
    );
    assert_eq!(full, format!("{}/{name}", env.ns.name()));
    // Every line once, in order, per job.
    assert_eq!(
        printed(&out.stdout, "count"),
        strings(&["count 1", "count 2", "count 3", "count 4", "count 5"]),
        "{out}"
    );
    assert_eq!(
        printed(&out.stdout, "greet"),
        strings(&["hello cluster", "greet 2", "greet 3"]),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("run {full}: Succeeded")),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!("run {full} Succeeded; sent ")),
        "{out}"
    );
    let run = env.runs().get(&name).await?;
    assert_eq!(phase(&run), "Succeeded");
    let who = run.spec.triggered_by.as_ref().context("triggeredBy")?;
    assert_eq!(who.principal, PRINCIPAL);
    assert_eq!(run.spec.runner_pool.as_deref(), Some("real"));
    // The API has the same lines.
    let count = env.api_lines(&name, "count").await?;
    assert_eq!(
        count.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );

    // A failing pipeline: exit 1, its line printed.
    let out = env.sw(&env.trigger_args("fail", &[])).await?;
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        printed(&out.stdout, "broken"),
        strings(&[
            "about to fail",
            "error: command `echo 'about to fail'; exit 3` failed: exit status 3"
        ]),
        "{out}"
    );
    let full = triggered_run(&out.stderr).context("no run named")?;
    let run = env.runs().get(name_of(&full)).await?;
    assert_eq!(phase(&run), "Failed");
    env.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_returns_before_the_run_ends_and_runs_wait_sees_it_finish() -> Result<()> {
    let env = Env::new("cli-detach").await?;
    let out = env
        .cli
        .run(env.trigger_args("hello", &["--detach"]), WAIT)
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let full = out.stdout.trim().to_string();
    assert!(
        full.starts_with(&format!("{}/hello-", env.ns.name())),
        "{out}"
    );
    let name = name_of(&full).to_string();
    // Returned while the run goes on.
    let run = env.runs().get(&name).await?;
    assert!(!finished(&run), "{:#?}", run.status);
    assert!(
        run.status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .is_none(),
        "{:#?}",
        run.status
    );
    env.runs_wait_succeeds(&full).await?;
    let run = env.runs().get(&name).await?;
    assert_eq!(phase(&run), "Succeeded");
    let status = env
        .sw(&["runs", "status", &full, "--profile", PROFILE, "-o", "json"])
        .await?;
    assert_eq!(status.code, 0, "{status}");
    let v: Value = serde_json::from_str(&status.stdout).with_context(|| status.to_string())?;
    assert_eq!(v["phase"], "Succeeded", "{v}");
    let logs = env
        .sw(&[
            "runs",
            "logs",
            &full,
            "--profile",
            PROFILE,
            "--job",
            "greet",
        ])
        .await?;
    assert_eq!(logs.code, 0, "{logs}");
    assert!(logs.stdout.contains("hello world"), "{logs}");
    env.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_the_cli_mid_run_runs_finally_and_the_follower_exits_130() -> Result<()> {
    let env = Env::new("cli-cancel").await?;
    let follower = env.cli.spawn(env.trigger_args("slow", &[]))?;
    let full = follower.wait_triggered_run(WAIT).await?;
    let name = name_of(&full).to_string();
    env.wait_api_lines(&name, "wait", "the first line", |l| {
        l.iter().any(|(_, l)| l == "started waiting")
    })
    .await
    .with_context(|| follower.stderr_so_far())?;
    let cancel = env
        .cli
        .run(["runs", "cancel", &full, "--profile", PROFILE], WAIT)
        .await?;
    assert_eq!(cancel.code, 0, "{cancel}");
    let out = follower.finish(RUN_WAIT).await?;
    let runner = env.runner_logs(&name).await;
    assert_eq!(out.code, 130, "{out}\nrunner:\n{runner}");
    assert_eq!(
        printed(&out.stdout, "wait"),
        strings(&["started waiting"]),
        "{out}"
    );
    // `runs cancel` without --now lets finally jobs run.
    assert_eq!(
        printed(&out.stdout, "cleanup"),
        strings(&["cleanup ran"]),
        "{out}\nrunner:\n{runner}"
    );
    let run = env
        .wait_run(&name, WAIT, "Cancelled", |r| phase(r) == "Cancelled")
        .await?;
    assert!(run.spec.cancel.is_some(), "{:#?}", run.spec);
    let cleanup = env.api_lines(&name, "cleanup").await?;
    assert_eq!(cleanup, [(1, "cleanup ran".to_string())]);
    let status = env
        .sw(&["runs", "status", &full, "--profile", PROFILE])
        .await?;
    assert_eq!(status.code, 130, "{status}");
    env.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrigger_of_an_unchanged_tree_sends_only_the_manifest() -> Result<()> {
    let env = Env::new("cli-retrigger").await?;
    let detach = env.trigger_args("hello", &["--detach", "-o", "json"]);
    let first = env.cli.run(&detach, WAIT).await?;
    assert_eq!(first.code, 0, "{first}");
    let v1: Value = serde_json::from_str(&first.stdout).with_context(|| first.to_string())?;
    let up1 = &v1["upload"];
    // README.md, .sparkwing/{.gitignore,Cargo.toml,Cargo.lock,sparkwing.yaml,src/main.rs}.
    assert_eq!(up1["files"], 6, "{v1}");
    assert_eq!(up1["blobsSent"], 6, "{v1}");
    assert_eq!(up1["uploadedFiles"], 6, "{v1}");
    assert!(up1["compressedBytesSent"].as_u64().unwrap_or(0) > 0, "{v1}");
    let bytes_after_first = env.metric("sparkwing_api_blob_bytes_total").await?;
    assert_eq!(Some(bytes_after_first), up1["bytesSent"].as_u64(), "{v1}");
    assert_eq!(up1["bytesSent"], up1["totalBytes"], "{v1}");

    let again = env.cli.run(&detach, WAIT).await?;
    assert_eq!(again.code, 0, "{again}");
    let v2: Value = serde_json::from_str(&again.stdout).with_context(|| again.to_string())?;
    let up2 = &v2["upload"];
    assert_eq!(up2["id"], up1["id"], "the same tree, the same upload");
    assert_eq!(
        (
            &up2["blobsSent"],
            &up2["uploadedFiles"],
            &up2["bytesSent"],
            &up2["compressedBytesSent"],
            &up2["unchangedFiles"]
        ),
        (&json!(0), &json!(0), &json!(0), &json!(0), &json!(6)),
        "{v2}"
    );
    assert!(
        again
            .stderr
            .contains("0 bytes sent compressed; 6 unchanged"),
        "{again}"
    );
    assert_eq!(
        env.metric("sparkwing_api_blob_bytes_total").await?,
        bytes_after_first
    );
    assert_ne!(v2["name"], v1["name"], "a new run each time");

    let readme = "changed by the re-trigger test\n";
    std::fs::write(env.cli.project().join("README.md"), readme)?;
    let third = env.cli.run(&detach, WAIT).await?;
    assert_eq!(third.code, 0, "{third}");
    let v3: Value = serde_json::from_str(&third.stdout).with_context(|| third.to_string())?;
    let up3 = &v3["upload"];
    assert_eq!(
        (&up3["blobsSent"], &up3["uploadedFiles"], &up3["bytesSent"]),
        (&json!(1), &json!(1), &json!(readme.len())),
        "{v3}"
    );
    assert!(up3["compressedBytesSent"].as_u64().unwrap_or(0) > 0, "{v3}");
    assert_ne!(up3["id"], up1["id"]);
    assert_eq!(
        env.metric("sparkwing_api_blob_bytes_total").await?,
        bytes_after_first + readme.len() as u64
    );
    // The run of the changed tree runs it.
    let full = format!("{}/{}", env.ns.name(), v3["name"].as_str().unwrap_or(""));
    env.runs_wait_succeeds(&full).await?;
    env.shutdown().await
}

/// Lines 1..=n of the fixture's `numbers` job, as the API must hold them (seq = number).
fn numbered(n: u64) -> Vec<(u64, String)> {
    (1..=n).map(|i| (i, format!("number {i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_is_retried_or_fails_the_run_and_loses_no_line() -> Result<()> {
    let env = Env::new("cli-killed").await?;
    // Retried: the CLI's run gets the default maxAttempts (3).
    let out = env
        .cli
        .run(
            env.trigger_args("numbered", &["--detach", "-o", "json", "--sleep", "8"]),
            WAIT,
        )
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let v: Value = serde_json::from_str(&out.stdout).with_context(|| out.to_string())?;
    let retried = v["name"].as_str().context("a name")?.to_string();
    // Not retried: the same upload, maxAttempts 1, through the API.
    let created = env
        .api()
        .admin(
            "POST",
            "/api/v1/runs",
            Some(&json!({"pipeline": "numbered", "args": {"sleep": "300"},
                         "source": {"upload": {"id": v["upload"]["id"]}},
                         "runnerPool": "real", "maxAttempts": 1})),
        )
        .await?
        .ok()?
        .json()?;
    let lost = created["name"].as_str().context("a name")?.to_string();
    for name in [&retried, &lost] {
        env.wait_api_lines(name, "numbers", "20 lines", |l| l.len() >= 20)
            .await?;
        let pod = env.runner_pod(name, 1).await?;
        env.node.lose(&pod.name_any(), LossKind::Deleted).await?;
    }

    let run = env
        .wait_run(&lost, WAIT, "finished", finished)
        .await
        .context("the run with maxAttempts 1")?;
    let (reason, message) = condition(&run);
    assert_eq!(
        (phase(&run), reason.as_str()),
        ("Failed", "RunnerLost"),
        "{message}"
    );
    assert!(!message.is_empty());
    assert_eq!(run.status.as_ref().map(|s| s.attempts), Some(1));
    // Every line posted before the kill is still there, once each, seq contiguous.
    assert_eq!(env.api_lines(&lost, "numbers").await?, numbered(20));
    let status = env
        .sw(&["runs", "status", &lost, "--profile", PROFILE])
        .await?;
    assert_eq!(status.code, 1, "{status}");
    assert!(status.stdout.contains("phase:    Failed"), "{status}");
    assert!(
        status
            .stdout
            .contains(&format!("reason:   RunnerLost: {message}")),
        "{status}"
    );

    let run = env
        .wait_run(&retried, RUN_WAIT, "finished", finished)
        .await?;
    let runner = env.runner_logs(&retried).await;
    assert_eq!(phase(&run), "Succeeded", "{:#?}\n{runner}", run.status);
    assert_eq!(run.status.as_ref().map(|s| s.attempts), Some(2));
    // The first attempt's lines, then the whole second attempt after them: a retried runner
    // numbers its lines on from the seq the API already has, so nothing of either is dropped.
    let mut want = numbered(20);
    want.extend((1..=20).map(|i| (20 + i, format!("number {i}"))));
    want.push((41, "numbers done".to_string()));
    assert_eq!(env.api_lines(&retried, "numbers").await?, want, "{runner}");
    let logs = env
        .sw(&[
            "runs",
            "logs",
            &retried,
            "--profile",
            PROFILE,
            "--job",
            "numbers",
        ])
        .await?;
    assert_eq!(logs.code, 0, "{logs}");
    let mut expected: Vec<String> = (1..=20).map(|i| format!("number {i}")).collect();
    expected.extend((1..=20).map(|i| format!("number {i}")));
    expected.push("numbers done".to_string());
    assert_eq!(
        logs.stdout.lines().map(str::to_string).collect::<Vec<_>>(),
        expected,
        "{logs}"
    );
    env.shutdown().await
}

/// Runs the API lists in the test's namespace, as (name, listing).
async fn api_runs(env: &Env) -> Result<Vec<Value>> {
    let list = env
        .api()
        .admin(
            "GET",
            &format!("/api/v1/runs?namespace={}", env.ns.name()),
            None,
        )
        .await?
        .ok()?
        .json()?;
    Ok(list["runs"].as_array().cloned().unwrap_or_default())
}

/// The local run ids of `runs list -o json`.
async fn local_runs(env: &Env) -> Result<Vec<Value>> {
    let out = env.sw(&["runs", "list", "-o", "json"]).await?;
    ensure!(out.code == 0, "{out}");
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect())
}

/// The external run `name` on the cluster and through the API: `Succeeded`, with `count`'s lines.
async fn assert_mirrored(env: &Env, name: &str) -> Result<()> {
    let run = env
        .wait_run(name, WAIT, "Succeeded", |r| phase(r) == "Succeeded")
        .await?;
    let spec = serde_json::to_value(&run.spec)?;
    assert!(spec["source"].get("external").is_some(), "{spec}");
    assert_eq!(spec["pipeline"], "hello", "{spec}");
    assert_eq!(
        env.api_lines(name, "count").await?,
        (1..=5)
            .map(|i| (i, format!("count {i}")))
            .collect::<Vec<_>>()
    );
    let greet = env.api_lines(name, "greet").await?;
    assert_eq!(greet.first().map(|(_, l)| l.as_str()), Some("hello world"));
    let read = env.api_run(name).await?;
    assert_eq!(read["phase"], "Succeeded", "{read}");
    assert_eq!(read["triggeredBy"]["principal"], PRINCIPAL, "{read}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_profile_dual_writes_and_runs_push_delivers_what_the_api_missed() -> Result<()> {
    let mut env = Env::new("cli-dual").await?;
    env.cli.cache = Some(HOST_CACHE.into());
    let project = env.cli.project().to_str().unwrap_or_default().to_string();

    // The API up: the run is local and an external run on the cluster.
    let out = env
        .sw(&["run", "-C", &project, "hello", "--profile", PROFILE])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stderr.contains("runs push"), "{out}");
    let listed = api_runs(&env).await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let name = listed[0]["name"].as_str().context("a name")?.to_string();
    assert_mirrored(&env, &name).await?;
    let local = local_runs(&env).await?;
    assert_eq!(local.len(), 1, "{local:?}");
    assert_eq!(local[0]["pipeline"], "hello");

    // The API down: the run goes on locally and says how to push it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let live = Profile::new(PROFILE, &env.api().url)
        .namespace(env.ns.name())
        .pool("real");
    let down =
        Profile::new(PROFILE, &format!("http://127.0.0.1:{closed}")).namespace(env.ns.name());
    env.cli.set_profiles(&[down])?;
    let out = env
        .sw(&["run", "-C", &project, "hello", "--profile", PROFILE])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let local = local_runs(&env).await?;
    assert_eq!(local.len(), 2, "{local:?}");
    let id = local
        .iter()
        .filter_map(|r| r["id"].as_str())
        .find(|id| {
            out.stderr
                .contains(&format!("sparkwing runs push {id} --profile {PROFILE}"))
        })
        .with_context(|| format!("no warning naming `sparkwing runs push`: {out}"))?
        .to_string();
    assert_eq!(api_runs(&env).await?.len(), 1);

    // The API back: runs push delivers it.
    env.cli.set_profiles(&[live])?;
    let push = env.sw(&["runs", "push", &id, "--profile", PROFILE]).await?;
    assert_eq!(push.code, 0, "{push}");
    let listed = api_runs(&env).await?;
    let pushed = listed
        .iter()
        .filter_map(|r| r["name"].as_str())
        .find(|n| *n != name)
        .with_context(|| format!("the pushed run is not listed: {listed:?}"))?
        .to_string();
    assert_mirrored(&env, &pushed).await?;
    env.shutdown().await
}
