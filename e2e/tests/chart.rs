//! The user-facing install artefacts end to end against the test bed, with the operator
//! in-process (`run_controllers`) and the bed's node running its pods:
//!
//! - `docs/examples/pipelinerun.yaml`, applied with `kubectl`, runs to Succeeded, shows in
//!   `kubectl get pipelineruns`, and deleting it removes its Job (owner references; the real
//!   garbage collector);
//! - the chart's RBAC (`helm template charts/sparkwing`, only the ServiceAccounts, Roles,
//!   ClusterRoles and bindings applied) is enough for the operator: run with a token of the
//!   chart's ServiceAccount, it runs a PipelineRun to Succeeded and keeps a pool's warm pods.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Config as KubeConfig};
use serde::Deserialize as _;
use serde_json::{json, Value};
use sparkwing_crds::{PipelineRun, RunnerPool};
use sparkwing_e2e::{test_runner_image, ClaimRelay, TestBed, TestNode, User};
use sparkwing_operator::Config;

/// How long anything here may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(100);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

use sparkwing_e2e::OperatorTask as Operator;

fn phase_of(run: &PipelineRun) -> String {
    serde_json::to_value(&run.status).unwrap_or(Value::Null)["phase"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Wait until run `name` ends; fail unless it Succeeded.
async fn wait_succeeded(runs: &Api<PipelineRun>, name: &str) -> Result<PipelineRun> {
    let cond = |o: Option<&PipelineRun>| {
        o.is_some_and(|r| matches!(phase_of(r).as_str(), "Succeeded" | "Failed" | "Cancelled"))
    };
    let run = match tokio::time::timeout(WAIT, await_condition(runs.clone(), name, cond)).await {
        Ok(Ok(Some(run))) => run,
        Ok(Ok(None)) => bail!("run {name} is gone"),
        Ok(Err(e)) => return Err(e).context(format!("watching run {name}")),
        Err(_) => {
            let now = runs.get_opt(name).await?;
            bail!(
                "run {name} not finished within {WAIT:?}; status: {}",
                now.map(|r| serde_json::to_string(&r.status).unwrap_or_default())
                    .unwrap_or_else(|| "<gone>".into())
            )
        }
    };
    ensure!(
        phase_of(&run) == "Succeeded",
        "run {name} ended {}: {}",
        phase_of(&run),
        serde_json::to_string(&run.status)?
    );
    Ok(run)
}

/// Poll `f` every [`POLL`] until it yields `Some`, at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let until = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        ensure!(Instant::now() < until, "not {what} within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `command`, failing with its stderr unless it succeeds; returns stdout.
async fn run_ok(command: &mut tokio::process::Command, what: &str) -> Result<String> {
    let out = command
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn example_pipelinerun_applied_with_kubectl_succeeds_and_deletes_its_job() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    let ns = bed.namespace("chart-example").await?;
    let client = bed.client().await?;
    bed.load_image(&image).await?;
    let node = TestNode::start(bed, client.clone(), &ns).await?;
    let _relay = ClaimRelay::start(client.clone(), &ns).await?;
    let op = Operator::start(client.clone(), Config::new(image).namespace(ns.name()));

    let example = repo().join("docs/examples/pipelinerun.yaml");
    let applied = run_ok(
        bed.kubectl(User::Admin)
            .args(["apply", "-n", ns.name(), "-f"])
            .arg(&example),
        "kubectl apply -f docs/examples/pipelinerun.yaml",
    )
    .await?;
    ensure!(
        applied.contains("pipelinerun.sparkwing.dev/ok-example created"),
        "{applied}"
    );

    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    let run = wait_succeeded(&runs, "ok-example").await?;
    let uid = run.metadata.uid.clone().context("uid")?;

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let lp = ListParams::default().labels("sparkwing.dev/run=ok-example");
    let job_list = jobs.list(&lp).await?.items;
    ensure!(job_list.len() == 1, "jobs: {}", job_list.len());
    let job = &job_list[0];
    ensure!(
        job.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "PipelineRun" && o.uid == uid),
        "job owners {:?}",
        job.metadata.owner_references
    );

    let table = run_ok(
        bed.kubectl(User::Admin)
            .args(["get", "pipelineruns", "-n", ns.name()]),
        "kubectl get pipelineruns",
    )
    .await?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    ensure!(
        header == ["NAME", "PHASE", "PIPELINE", "RUNNER", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    ensure!(
        row.len() == 5 && row[..3] == ["ok-example", "Succeeded", "build"],
        "{table}"
    );

    let deleted = run_ok(
        bed.kubectl(User::Admin)
            .args(["delete", "pipelinerun", "ok-example", "-n", ns.name()]),
        "kubectl delete pipelinerun ok-example",
    )
    .await?;
    ensure!(deleted.contains("deleted"), "{deleted}");
    eventually("the run's Job garbage-collected", || {
        let jobs = jobs.clone();
        let lp = lp.clone();
        async move { Ok(jobs.list(&lp).await?.items.is_empty().then_some(())) }
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let plp = ListParams::default().labels("sparkwing.dev/run=ok-example");
    eventually("the run's pods garbage-collected", || {
        let pods = pods.clone();
        let plp = plp.clone();
        async move { Ok(pods.list(&plp).await?.items.is_empty().then_some(())) }
    })
    .await?;

    op.stop().await?;
    node.shutdown().await?;
    Ok(())
}

/// A client of the bed (same server and CA as the admin kubeconfig) authenticating with `token`.
async fn client_with_token(bed: &TestBed, token: &str) -> Result<Client> {
    let text = std::fs::read_to_string(bed.kubeconfig_path())?;
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    let users = yaml
        .get_mut("users")
        .and_then(|u| u.as_sequence_mut())
        .context("kubeconfig users")?;
    for user in users {
        user["user"] = serde_yaml_ng::to_value(json!({ "token": token }))?;
    }
    let kubeconfig = Kubeconfig::from_yaml(&serde_yaml_ng::to_string(&yaml)?)?;
    let config =
        KubeConfig::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

#[tokio::test]
async fn chart_rbac_is_enough_for_the_operator() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    let ns = bed.namespace("chart-rbac").await?;
    let admin = bed.client().await?;

    // The chart's accounts and RBAC, release and watch namespace = the test namespace.
    let rendered = run_ok(
        bed.helm()
            .args(["template", "sparkwing"])
            .arg(repo().join("charts/sparkwing"))
            .args(["--namespace", ns.name()])
            .args(["--set", &format!("watchNamespace={}", ns.name())])
            .args(["--set", "defaultPool.enabled=false"]),
        "helm template charts/sparkwing",
    )
    .await?;
    let keep = [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    let mut docs = Vec::new();
    let mut operator_sa = None;
    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let value = serde_yaml_ng::Value::deserialize(doc)?;
        let Some(kind) = value.get("kind").and_then(|k| k.as_str()) else {
            continue;
        };
        if kind == "Deployment" {
            operator_sa = value["spec"]["template"]["spec"]["serviceAccountName"]
                .as_str()
                .map(String::from);
        }
        if keep.contains(&kind) {
            docs.push(serde_yaml_ng::to_string(&value)?);
        }
    }
    let operator_sa = operator_sa.context("the Deployment's serviceAccountName")?;
    ensure!(docs.len() >= 4, "rendered RBAC: {docs:?}");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rbac.yaml");
    std::fs::write(&file, docs.join("---\n"))?;
    run_ok(
        bed.kubectl(User::Admin).args(["apply", "-f"]).arg(&file),
        "kubectl apply (the chart's RBAC)",
    )
    .await?;

    let token = run_ok(
        bed.kubectl(User::Admin)
            .args(["create", "token", &operator_sa, "-n", ns.name()]),
        "kubectl create token",
    )
    .await?;
    let operator_client = client_with_token(bed, token.trim()).await?;

    bed.load_image(&image).await?;
    let node = TestNode::start(bed, admin.clone(), &ns).await?;
    let _relay = ClaimRelay::start(admin.clone(), &ns).await?;
    let op = Operator::start(
        operator_client,
        Config::new(image.clone()).namespace(ns.name()),
    );

    // A run in a fresh Job.
    let runs: Api<PipelineRun> = Api::namespaced(admin.clone(), &ns);
    let run: PipelineRun = serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": "ok-rbac"},
        "spec": {"pipeline": "build", "source": {"upload": {"id": "upload-ok-rbac"}}},
    }))?;
    runs.create(&PostParams::default(), &run).await?;
    wait_succeeded(&runs, "ok-rbac").await?;

    // A pool keeps its warm pods.
    let pools: Api<RunnerPool> = Api::namespaced(admin.clone(), &ns);
    let pool: RunnerPool = serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "RunnerPool",
        "metadata": {"name": "warm"},
        "spec": {"image": image, "minIdle": 2, "maxRunners": 2, "idleTimeout": "10m"},
    }))?;
    pools.create(&PostParams::default(), &pool).await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let lp = ListParams::default().labels("sparkwing.dev/pool=warm,sparkwing.dev/warm=true");
    eventually("2 warm pods running", || {
        let pods = pods.clone();
        let lp = lp.clone();
        async move {
            let running = pods
                .list(&lp)
                .await?
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            Ok((running == 2).then_some(()))
        }
    })
    .await?;
    eventually("pool warm reports 2 idle", || {
        let pools = pools.clone();
        async move {
            let p = pools.get("warm").await?;
            let s = serde_json::to_value(&p.status)?;
            Ok((s["idle"] == 2).then_some(()))
        }
    })
    .await?;
    // And a run claims one of them.
    let run: PipelineRun = serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": "ok-rbac-pool"},
        "spec": {"pipeline": "build", "source": {"upload": {"id": "upload-ok-rbac-pool"}},
                 "runnerPool": "warm"},
    }))?;
    runs.create(&PostParams::default(), &run).await?;
    wait_succeeded(&runs, "ok-rbac-pool").await?;

    op.stop().await?;
    node.shutdown().await?;
    Ok(())
}
