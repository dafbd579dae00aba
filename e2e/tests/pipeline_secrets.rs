//! A Pipeline's run settings and secrets end to end, on the real kube-apiserver with the operator
//! and its API in-process:
//!
//! - a signed push creates a run carrying the Pipeline's `secrets`, `timeout`, `args`,
//!   `maxAttempts` and `ttlSecondsAfterFinished`; although the Pipeline's pool has an idle warm
//!   runner, the run gets a cold Job whose container has the Secret as `envFrom`, and the node
//!   emulator gives the container the Secret's keys;
//! - runs asking for a Secret no Pipeline grants fail `SecretNotAllowed`, a granted Secret that
//!   does not exist fails `SecretNotFound`, without a runner;
//! - on the real runner, a pipeline that declares the secret reads it and its log shows `***`.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use sparkwing_crds::pipeline::Pipeline;
use sparkwing_crds::{PipelineRun, RunnerPool};
use sparkwing_e2e::api_task::WEBHOOK_SECRET;
use sparkwing_e2e::git_server::{GitServer, WorkTree};
use sparkwing_e2e::wait::wait_for_run;
use sparkwing_e2e::{
    real_runner, test_runner_image, ApiTask, NodeEmulator, NodeEmulatorOptions, OperatorTask,
    TestBed,
};
use sparkwing_operator::api::webhook::signature_header;
use sparkwing_operator::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Anything but a compile.
const WAIT: Duration = Duration::from_secs(60);
/// A first compile of the pipeline with cargo, as uid 65532, on a loaded two-core machine.
const COMPILE_WAIT: Duration = Duration::from_secs(480);
/// The secret's value: long and unusual, so finding it in a log means it leaked.
const TOKEN: &str = "s3cr3t-e2e-token-5f1c";

/// A push event as GitHub sends it (the fields Sparkwing reads).
fn push_payload(clone_url: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "created": true,
        "deleted": false,
        "repository": {"name": "app", "full_name": "e2e/app", "clone_url": clone_url},
        "sender": {"login": "octocat"},
    }))
    .expect("a payload")
}

/// A signed `POST /webhooks/github` push; (status, JSON body).
async fn push(api: &ApiTask, delivery: &str, body: &[u8]) -> Result<(u16, Value)> {
    let host = api.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: {}\r\n\
         Content-Length: {}\r\n\r\n",
        signature_header(WEBHOOK_SECRET, body),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .context("no answer from the webhook endpoint")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The one run a push created.
fn created_run(status: u16, answer: &Value) -> Result<String> {
    ensure!(status == 201, "push answered {status}: {answer}");
    let runs = answer["runs"].as_array().context("runs")?;
    ensure!(runs.len() == 1, "{answer}");
    Ok(runs[0]["name"].as_str().context("a name")?.to_string())
}

fn reason(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.condition("Succeeded"))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn message(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.condition("Succeeded"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn is_finished(run: &PipelineRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.phase.is_terminal())
}

async fn create_secret(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {key: value},
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

async fn create_pipeline(client: &Client, ns: &str, body: Value) -> Result<()> {
    let mut body = body;
    body["apiVersion"] = json!("sparkwing.dev/v1alpha1");
    body["kind"] = json!("Pipeline");
    let p: Pipeline = serde_json::from_value(body)?;
    Api::<Pipeline>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &p)
        .await?;
    Ok(())
}

/// The runner Jobs of run `name`.
async fn jobs_of(client: &Client, ns: &str, name: &str) -> Result<Vec<Job>> {
    Ok(Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("sparkwing.dev/run={name}")))
        .await?
        .items)
}

/// A PipelineRun created directly (kubectl), asking for `secrets`, naming Pipeline `pipeline`.
async fn direct_run(
    runs: &Api<PipelineRun>,
    name: &str,
    pipeline: Option<&str>,
    secrets: &[&str],
) -> Result<()> {
    let mut meta = json!({"name": name});
    if let Some(p) = pipeline {
        meta["annotations"] = json!({"sparkwing.dev/pipeline": p});
    }
    let run: PipelineRun = serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
        "metadata": meta,
        "spec": {"pipeline": "hello", "source": {"local": {"path": "/src"}}, "secrets": secrets},
    }))?;
    runs.create(&PostParams::default(), &run).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_secrets_and_settings_reach_its_runs_and_are_enforced() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    let ns = bed.namespace("secrets").await?;
    let client = bed.client().await?;
    let node = NodeEmulator::start(client.clone(), &ns, NodeEmulatorOptions::default()).await?;
    let op = OperatorTask::start_with_api(
        client.clone(),
        Config::new(image.clone()).namespace(ns.name()),
        ns.name(),
    )
    .await?;
    let api = op.api();

    // A pool with an idle warm runner: runs with secrets must not claim it.
    let pools: Api<RunnerPool> = Api::namespaced(client.clone(), &ns);
    let pool: RunnerPool = serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "RunnerPool",
        "metadata": {"name": "warm"},
        "spec": {"image": image, "minIdle": 1, "maxRunners": 2},
    }))?;
    pools.create(&PostParams::default(), &pool).await?;
    let idle = |p: Option<&RunnerPool>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.idle >= 1)
    };
    tokio::time::timeout(WAIT, await_condition(pools.clone(), "warm", idle))
        .await
        .context("pool warm has no idle runner")??;

    create_secret(&client, &ns, "deploy-token", "DEPLOY_TOKEN", TOKEN).await?;
    let url = "https://git.example.test/e2e/app.git";
    create_pipeline(
        &client,
        &ns,
        json!({
            "metadata": {"name": "app"},
            "spec": {"repository": url, "pipeline": "hello",
                     "triggers": {"push": {"branches": ["main"]}}, "runnerPool": "warm",
                     "secrets": ["deploy-token"], "timeout": "20m",
                     "ttlSecondsAfterFinished": 3600, "maxAttempts": 2,
                     "args": {"who": "from-the-pipeline"}},
        }),
    )
    .await?;
    // Grants a Secret nobody created; no trigger (only direct runs name it).
    create_pipeline(
        &client,
        &ns,
        json!({
            "metadata": {"name": "app-extra"},
            "spec": {"repository": url, "pipeline": "hello",
                     "secrets": ["deploy-token", "db-password"]},
        }),
    )
    .await?;

    // The signed push: one run with the Pipeline's settings.
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let (status, answer) = push(api, "secrets-1", &push_payload(url, sha)).await?;
    let name = created_run(status, &answer)?;
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    let run = runs.get(&name).await?;
    assert_eq!(run.spec.secrets, ["deploy-token"]);
    assert_eq!(run.spec.timeout.as_deref(), Some("20m"));
    assert_eq!(run.spec.ttl_seconds_after_finished, Some(3600));
    assert_eq!(run.spec.max_attempts, 2);
    assert_eq!(run.spec.args["who"], "from-the-pipeline");

    // It gets a cold Job (not the idle warm runner) with the Secret as envFrom, and succeeds.
    let done = wait_for_run(&runs, &name, "finished", is_finished, WAIT).await?;
    assert_eq!(reason(&done), "Succeeded", "{}", message(&done));
    let jobs = jobs_of(&client, &ns, &name).await?;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.name_any(), format!("{name}-a1"));
    let spec = job.spec.as_ref().context("job spec")?;
    assert_eq!(spec.active_deadline_seconds, Some(1200));
    let pod_spec = spec.template.spec.as_ref().context("pod spec")?;
    let from: Vec<Value> = pod_spec.containers[0]
        .env_from
        .iter()
        .flatten()
        .map(|f| serde_json::to_value(f).unwrap())
        .collect();
    assert_eq!(from, [json!({"secretRef": {"name": "deploy-token"}})]);
    assert_eq!(
        done.status.as_ref().and_then(|s| s.runner.clone()),
        Some(job.name_any())
    );
    let warm = pools.get("warm").await?;
    assert_eq!(warm.status.as_ref().map(|s| s.busy), Some(0), "{warm:?}");

    // The node emulator gave the container the Secret's keys.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pods
        .list(&ListParams::default().labels(&format!("sparkwing.dev/run={name}")))
        .await?
        .items
        .into_iter()
        .next()
        .context("the Job's pod")?;
    let container = node
        .containers(&pod.name_any())
        .await?
        .into_iter()
        .next()
        .context("the pod's container")?;
    let docker = bollard::Docker::connect_with_local_defaults()?;
    let env = docker
        .inspect_container(&container, None)
        .await?
        .config
        .and_then(|c| c.env)
        .unwrap_or_default();
    assert!(
        env.contains(&format!("DEPLOY_TOKEN={TOKEN}")),
        "container env: {env:?}"
    );

    // Secrets no Pipeline grants, and a granted one that does not exist: failed at once, no Job.
    let cases = [
        (
            "no-pipeline",
            None,
            &["deploy-token"][..],
            "SecretNotAllowed",
            "the run was not created for a Pipeline",
        ),
        (
            "not-granted",
            Some("app"),
            &["deploy-token", "db-password"][..],
            "SecretNotAllowed",
            "\"db-password\" is not allowed: Pipeline app does not grant it; add it to Pipeline app's spec.secrets",
        ),
        (
            "missing",
            Some("app-extra"),
            &["deploy-token", "db-password"][..],
            "SecretNotFound",
            "kubectl -n NS create secret generic db-password",
        ),
    ];
    for (run_name, pipeline, secrets, want_reason, want_message) in cases {
        direct_run(&runs, run_name, pipeline, secrets).await?;
        let run = wait_for_run(&runs, run_name, "finished", is_finished, WAIT).await?;
        assert_eq!(run.status.as_ref().unwrap().phase.as_str(), "Failed");
        assert_eq!(reason(&run), want_reason, "{}", message(&run));
        let want_message = want_message.replace("NS", ns.name());
        assert!(
            message(&run).contains(&want_message),
            "{run_name}: {}",
            message(&run)
        );
        assert_eq!(run.status.as_ref().unwrap().attempts, 0);
        assert!(jobs_of(&client, &ns, run_name).await?.is_empty());
    }

    op.stop().await?;
    node.shutdown().await
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dst = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&entry.path(), &dst)?;
            }
        } else {
            std::fs::copy(entry.path(), &dst)?;
        }
    }
    Ok(())
}

/// The loop fixture's `hello` pipeline, declaring `DEPLOY_TOKEN` a secret and printing it.
const SECRET_MAIN: &str = r#"use sparkwing::prelude::*;

fn hello() -> Pipeline {
    Pipeline::new("Hello", |p: &mut Plan, args: &Args| {
        let who = args.string("who")?;
        p.job("greet", move |job| {
            job.log(&format!("hello {who}"));
            Ok(())
        });
        p.job("reveal", |job| {
            let token = job.secret("DEPLOY_TOKEN")?;
            job.log(&format!("the token is {token}"));
            Ok(())
        });
        Ok(())
    })
    .arg(Arg::string("who").default("world").help("who to greet"))
    .secret("DEPLOY_TOKEN")
}

fn main() {
    sparkwing::main(vec![hello()]);
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_runner_reads_the_secret_and_logs_it_masked() -> Result<()> {
    let real = real_runner().await?;
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    let ns = bed.namespace("secrets-real").await?;
    let client = bed.client().await?;
    let node = NodeEmulator::start(client.clone(), &ns, NodeEmulatorOptions::default()).await?;
    let op = OperatorTask::start_with_api(
        client.clone(),
        Config::new(image).namespace(ns.name()),
        ns.name(),
    )
    .await?;
    let api = op.api();
    real.create_pool(&client, ns.name(), "real").await?;

    let server = GitServer::start()?;
    let bare = server.create_repo("app")?;
    let tree = WorkTree::new(&bare)?;
    copy_tree(Path::new("tests/fixtures/loop"), tree.path())?;
    std::fs::write(tree.path().join(".sparkwing/src/main.rs"), SECRET_MAIN)?;
    std::fs::write(
        tree.path().join(".sparkwing/sparkwing.yaml"),
        "pipelines:\n  - name: hello\n    entrypoint: Hello\n    on:\n      push:\n        branches: [main]\n",
    )?;
    let sha = tree.commit_all("a pipeline with a secret")?;
    tree.push("main")?;
    let url = server.url("app");

    create_secret(&client, &ns, "deploy-token", "DEPLOY_TOKEN", TOKEN).await?;
    create_pipeline(
        &client,
        &ns,
        json!({
            "metadata": {"name": "app"},
            "spec": {"repository": url, "pipeline": "hello",
                     "triggers": {"push": {"branches": ["main"]}}, "runnerPool": "real",
                     "secrets": ["deploy-token"], "args": {"who": "from-the-pipeline"}},
        }),
    )
    .await?;
    let (status, answer) = push(api, "secrets-real-1", &push_payload(&url, &sha)).await?;
    let name = created_run(status, &answer)?;
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    let done = wait_for_run(&runs, &name, "finished", is_finished, COMPILE_WAIT).await?;
    let logs = |job: &'static str| {
        let path = format!("/api/v1/runs/{}/{name}/logs?job={job}", ns.name());
        async move { Ok::<_, anyhow::Error>(api.admin("GET", &path, None).await?.ok()?.text()) }
    };
    ensure!(
        reason(&done) == "Succeeded",
        "run {name} ended {}: {}\nreveal log:\n{}",
        reason(&done),
        message(&done),
        logs("reveal").await.unwrap_or_default()
    );
    let reveal = logs("reveal").await?;
    assert!(reveal.contains("the token is ***"), "{reveal}");
    assert!(!reveal.contains(TOKEN), "the secret leaked: {reveal}");
    let greet = logs("greet").await?;
    assert!(greet.contains("hello from-the-pipeline"), "{greet}");
    op.stop().await?;
    node.shutdown().await
}
