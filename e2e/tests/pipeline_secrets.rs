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

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use sparkwing_crds::{PipelineRun, RunnerPool};
use sparkwing_e2e::run_status::{is_finished, message, reason};
use sparkwing_e2e::wait::wait_for_run;
use sparkwing_e2e::webhook::{push, PushCluster};
use sparkwing_e2e::{test_runner_image, Cluster};

/// Anything but a compile.
const WAIT: Duration = Duration::from_secs(60);
/// A first compile of the pipeline with cargo, as uid 65532, on a loaded two-core machine.
const COMPILE_WAIT: Duration = Duration::from_secs(480);
/// The secret's value: long and unusual, so finding it in a log means it leaked.
const TOKEN: &str = "s3cr3t-e2e-token-5f1c";

/// The one run a push created.
fn created_run(status: u16, answer: &Value) -> Result<String> {
    ensure!(status == 201, "push answered {status}: {answer}");
    let runs = answer["runs"].as_array().context("runs")?;
    ensure!(runs.len() == 1, "{answer}");
    Ok(runs[0]["name"].as_str().context("a name")?.to_string())
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
    let image = test_runner_image().await?;
    let cluster = Cluster::start("secrets", image.clone()).await?;
    let (client, ns, api) = (&cluster.client, &cluster.ns, cluster.api());

    // A pool with an idle warm runner: runs with secrets must not claim it.
    let pools: Api<RunnerPool> = Api::namespaced(client.clone(), ns);
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

    create_secret(client, ns, "deploy-token", "DEPLOY_TOKEN", TOKEN).await?;
    let url = "https://git.example.test/e2e/app.git";
    cluster
        .create_pipeline(json!({
            "metadata": {"name": "app"},
            "spec": {"repository": url, "pipeline": "hello",
                     "triggers": {"push": {"branches": ["main"]}}, "runnerPool": "warm",
                     "secrets": ["deploy-token"], "timeout": "20m",
                     "ttlSecondsAfterFinished": 3600, "maxAttempts": 2,
                     "args": {"who": "from-the-pipeline"}},
        }))
        .await?;
    // Grants a Secret nobody created; no trigger (only direct runs name it).
    cluster
        .create_pipeline(json!({
            "metadata": {"name": "app-extra"},
            "spec": {"repository": url, "pipeline": "hello",
                     "secrets": ["deploy-token", "db-password"]},
        }))
        .await?;

    // The signed push: one run with the Pipeline's settings.
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let (status, answer) = push(api, "secrets-1", url, sha).await?;
    let name = created_run(status, &answer)?;
    let runs = cluster.runs();
    let run = runs.get(&name).await?;
    assert_eq!(run.spec.secrets, ["deploy-token"]);
    assert_eq!(run.spec.timeout.as_deref(), Some("20m"));
    assert_eq!(run.spec.ttl_seconds_after_finished, Some(3600));
    assert_eq!(run.spec.max_attempts, 2);
    assert_eq!(run.spec.args["who"], "from-the-pipeline");

    // It gets a cold Job (not the idle warm runner) with the Secret as envFrom, and succeeds.
    let done = wait_for_run(&runs, &name, "finished", is_finished, WAIT).await?;
    assert_eq!(reason(&done), "Succeeded", "{}", message(&done));
    let jobs = jobs_of(client, ns, &name).await?;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.name_any(), format!("{name}-a1"));
    let spec = job.spec.as_ref().context("job spec")?;
    // The Pipeline's timeout (20m) plus the Job deadline's slack.
    assert_eq!(
        spec.active_deadline_seconds,
        Some(1200 + sparkwing_operator::runner_job::JOB_DEADLINE_SLACK_SECS)
    );
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

    // The node gave the container the Secret's keys.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .list(&ListParams::default().labels(&format!("sparkwing.dev/run={name}")))
        .await?
        .items
        .into_iter()
        .next()
        .context("the Job's pod")?;
    let env = cluster.node.container_env(&pod.name_any()).await?;
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
        assert_eq!(run.status.as_ref().unwrap().phase.phase_str(), "Failed");
        assert_eq!(reason(&run), want_reason, "{}", message(&run));
        let want_message = want_message.replace("NS", ns.name());
        assert!(
            message(&run).contains(&want_message),
            "{run_name}: {}",
            message(&run)
        );
        assert_eq!(run.status.as_ref().unwrap().attempts, 0);
        assert!(jobs_of(client, ns, run_name).await?.is_empty());
    }

    cluster.shutdown().await
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
    let bed = PushCluster::start("secrets-real").await?;
    let api = bed.api();

    let tree = &bed.tree;
    std::fs::write(tree.path().join(".sparkwing/src/main.rs"), SECRET_MAIN)?;
    std::fs::write(
        tree.path().join(".sparkwing/sparkwing.yaml"),
        "pipelines:\n  - name: hello\n    entrypoint: Hello\n    on:\n      push:\n        branches: [main]\n",
    )?;
    let sha = tree.commit_all("a pipeline with a secret")?;
    tree.push("main")?;

    create_secret(&bed.client, &bed.ns, "deploy-token", "DEPLOY_TOKEN", TOKEN).await?;
    bed.create_pipeline(json!({"secrets": ["deploy-token"], "args": {"who": "from-the-pipeline"}}))
        .await?;
    let (status, answer) = bed.push("secrets-real-1", &sha).await?;
    let name = created_run(status, &answer)?;
    let done = bed
        .wait_run(&name, COMPILE_WAIT, "finished", is_finished)
        .await?;
    let logs = |job: &'static str| {
        let path = format!("/api/v1/runs/{}/{name}/logs?job={job}", bed.ns.name());
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
    bed.shutdown().await
}
