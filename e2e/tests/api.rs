//! The operator with its API in the same process (`OperatorTask::start_with_api`) against the
//! real kube-apiserver, with the bed's node running runner pods: runner credentials,
//! external runs, the archive before TTL deletion, the real runner's pool, and the whole loop
//! (upload, trigger, the real `sparkwing runner` in a runner Job, logs through the API).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use sparkwing_core::reconcile::status::RunStatus;
use sparkwing_crds::pipeline_run::CancelMode;
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::run_status::{phase, reason};
use sparkwing_e2e::{real_runner, test_runner_image, Cluster, TestBed, TestNode};
use sparkwing_operator::api::{BackendError, KubeRuns, PodClaim, RunBackend};

/// How long anything here may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);
/// A first compile of a pipeline with cargo, as uid 65532, on a loaded machine.
const COMPILE_WAIT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_millis(200);

/// The cluster, with runner Jobs of the test runner image.
struct Env(Cluster);

impl std::ops::Deref for Env {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl Env {
    async fn new(hint: &str) -> Result<Env> {
        Ok(Env(Cluster::start(hint, test_runner_image().await?).await?))
    }

    async fn trigger(&self, body: Value) -> Result<Value> {
        self.api()
            .admin("POST", "/api/v1/runs", Some(&body))
            .await?
            .ok()?
            .json()
    }

    async fn shutdown(self) -> Result<()> {
        self.0.shutdown().await
    }
}

async fn runner_pod(env: &Env, run: &str) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let lp = ListParams::default().labels(&format!("sparkwing.dev/run={run}"));
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(pod) = pods.list(&lp).await?.items.into_iter().next() {
            if !env.node.containers(&pod.name_any()).await?.is_empty() {
                return Ok(pod);
            }
        }
        ensure!(Instant::now() < deadline, "no runner container for {run}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_run_is_running_until_the_api_records_its_end() -> Result<()> {
    let env = Env::new("api-external").await?;
    let created = env
        .trigger(json!({"pipeline": "build", "source": {"external": {}},
                        "ttlSecondsAfterFinished": 2}))
        .await?;
    let name = created["name"].as_str().context("a name")?.to_string();
    let token = created["runnerToken"]
        .as_str()
        .context("an external run's token")?
        .to_string();
    // The operator starts no runner: Running at once.
    let run = env
        .wait_run(&name, WAIT, "Running", |r| phase(r) == "Running")
        .await?;
    assert_eq!(reason(&run), "Running");
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    assert!(jobs.list(&ListParams::default()).await?.items.is_empty());
    // No Secret either: the token was in the answer.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    assert!(secrets
        .get_opt(&format!("{name}-runner-token"))
        .await?
        .is_none());
    // What keeps the operator from overwriting a recorded end: an apply of the status guarded by
    // a resourceVersion that is no longer current is refused.
    let stale = sparkwing_operator::status::guarded_status_patch::<PipelineRun>(
        json!({"phase": "Running"}),
        Some("1"),
    );
    let refused = env
        .runs()
        .patch_status(&name, &sparkwing_operator::status::apply_params(), &stale)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409),
        "{refused:?}"
    );
    let logs = json!([{"job": "build", "seq": 1, "line": "built on a laptop"}]);
    env.api()
        .request(
            "POST",
            &format!("/api/v1/runs/{}/{name}/logs", env.ns.name()),
            Some(&token),
            Some(logs.to_string().as_bytes()),
        )
        .await?
        .ok()?;
    let end = json!({"phase": "Failed", "message": "job test failed"});
    let answer = env
        .api()
        .request(
            "POST",
            &format!("/api/v1/runs/{}/{name}/finish", env.ns.name()),
            Some(&token),
            Some(end.to_string().as_bytes()),
        )
        .await?
        .ok()?
        .json()?;
    assert_eq!(answer["phase"], "Failed");
    let run = env.runs().get(&name).await?;
    assert_eq!((phase(&run), reason(&run).as_str()), ("Failed", "Failed"));
    let status = run.status.clone().unwrap_or_default();
    assert_eq!(
        status.condition("Succeeded").unwrap().message,
        "job test failed"
    );
    assert!(status.completion_time.is_some());
    let managers: Vec<String> = run
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "sparkwing-api"),
        "{managers:?}"
    );
    // The operator honours it, and deletes the run after its TTL; the API still has it.
    env.wait_run_deleted(&name, WAIT).await?;
    let read = env.api_run(&name).await?;
    assert_eq!(
        (&read["phase"], &read["live"], &read["archived"]),
        (&json!("Failed"), &json!(false), &json!(true))
    );

    // Finished at once, racing the operator's first reconcile: the recorded end wins (the
    // operator's writes are guarded by the resourceVersion it decided on), and the run is
    // deleted after its TTL as a finished run, archived as Succeeded.
    let created = env
        .trigger(json!({"pipeline": "quick", "source": {"external": {}},
                        "ttlSecondsAfterFinished": 1}))
        .await?;
    let name = created["name"].as_str().context("a name")?.to_string();
    let token = created["runnerToken"].as_str().context("a token")?;
    let end = json!({"phase": "Succeeded"});
    env.api()
        .request(
            "POST",
            &format!("/api/v1/runs/{}/{name}/finish", env.ns.name()),
            Some(token),
            Some(end.to_string().as_bytes()),
        )
        .await?
        .ok()?;
    let deadline = Instant::now() + WAIT;
    while let Some(run) = env.runs().get_opt(&name).await? {
        ensure!(
            Instant::now() < deadline,
            "run {name} not deleted after its TTL: {:#?}",
            run.status
        );
        ensure!(
            matches!(phase(&run), "Succeeded" | ""),
            "the recorded end was overwritten: {:#?}",
            run.status
        );
        tokio::time::sleep(POLL).await;
    }
    let archived = env.api_run(&name).await?;
    assert_eq!(archived["phase"], "Succeeded", "{archived}");
    env.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_jobs_get_the_api_url_and_their_token() -> Result<()> {
    let env = Env::new("api-creds").await?;
    let id = env
        .api()
        .upload_dir(Path::new("tests/fixtures/loop"))
        .await?;
    // The test runner behaves by run name: `slow-*` runs for 3 s.
    let created = env
        .trigger(json!({"pipeline": "slow", "source": {"upload": {"id": id}}}))
        .await?;
    let name = created["name"].as_str().context("a name")?.to_string();
    assert!(created.get("runnerToken").is_none(), "{created}");
    let pod = runner_pod(&env, &name).await?;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let secret = secrets.get(&format!("{name}-runner-token")).await?;
    let token = String::from_utf8(secret.data.unwrap_or_default()["token"].0.clone())?;
    assert!(token.starts_with("swr_"));
    let vars = env.node.container_env(&pod.name_any()).await?;
    assert!(
        vars.contains(&format!("SPARKWING_API_URL={}", env.api().url)),
        "{vars:?}"
    );
    assert!(
        vars.contains(&format!("SPARKWING_API_TOKEN={token}")),
        "{vars:?}"
    );
    env.wait_run(&name, WAIT, "Succeeded", |r| phase(r) == "Succeeded")
        .await?;
    // A run created with kubectl has no token Secret: its runner still starts, without one
    // (`slow-*` runs 3 s, time enough to look at its container before the TTL removes it).
    let run: PipelineRun = serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": "slow-kubectl"},
        "spec": {"pipeline": "build", "source": {"local": {"path": "/src"}},
                 "ttlSecondsAfterFinished": 2},
    }))?;
    env.runs().create(&PostParams::default(), &run).await?;
    let pod = runner_pod(&env, "slow-kubectl").await?;
    let vars = env.node.container_env(&pod.name_any()).await?;
    assert!(
        !vars.iter().any(|v| v.starts_with("SPARKWING_API_TOKEN=")),
        "{vars:?}"
    );
    // Archived before its TTL deletion: the API still lists and reads it.
    env.wait_run_deleted("slow-kubectl", WAIT).await?;
    let read = env.api_run("slow-kubectl").await?;
    assert_eq!(
        (&read["phase"], &read["live"], &read["archived"]),
        (&json!("Succeeded"), &json!(false), &json!(true))
    );
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
    assert!(
        list["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "slow-kubectl")),
        "{list}"
    );
    env.shutdown().await
}

/// The API's run backend with the operator always faster than the trigger: its `create` returns
/// only once the new run's runner pod is running (its container created, its environment fixed),
/// as on a loaded machine where the rest of the trigger (minting and storing the token) is slow.
struct OperatorFirst {
    inner: KubeRuns,
    client: kube::Client,
}

impl OperatorFirst {
    async fn wait_runner_running(&self, ns: &str, run: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("sparkwing.dev/run={run}"));
        let deadline = Instant::now() + WAIT;
        loop {
            let started = pods.list(&lp).await?.items.iter().any(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                matches!(phase, Some("Running" | "Succeeded" | "Failed"))
            });
            if started {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the runner pod of {run} never started"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl RunBackend for OperatorFirst {
    fn create(&self, run: PipelineRun) -> BoxFuture<'_, Result<PipelineRun, BackendError>> {
        async move {
            let created = self.inner.create(run).await?;
            let (ns, name) = (created.namespace().unwrap_or_default(), created.name_any());
            self.wait_runner_running(&ns, &name)
                .await
                .map_err(|e| BackendError::Other(e.to_string()))?;
            Ok(created)
        }
        .boxed()
    }
    fn get<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        self.inner.get(ns, name)
    }
    fn list<'a>(
        &'a self,
        ns: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<std::sync::Arc<PipelineRun>>, BackendError>> {
        self.inner.list(ns)
    }
    fn cancel<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        mode: CancelMode,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        self.inner.cancel(ns, name, mode)
    }
    fn write_external_status<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        status: &'a RunStatus,
        resource_version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        self.inner
            .write_external_status(ns, name, status, resource_version)
    }
    fn annotate<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        annotations: &'a BTreeMap<String, Option<String>>,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        self.inner.annotate(ns, name, annotations)
    }
    fn store_runner_token<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.inner.store_runner_token(ns, name, token)
    }
    fn adopt_runner_token<'a>(
        &'a self,
        run: &'a PipelineRun,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.inner.adopt_runner_token(run)
    }
    fn delete_runner_token<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.inner.delete_runner_token(ns, name)
    }
    fn pod_claim<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodClaim>, BackendError>> {
        self.inner.pod_claim(ns, pod)
    }
}

/// Issue 13, item 1: on a loaded machine the operator started a runner before the trigger had
/// written its token Secret (mounted optional), and the runner started without a credential.
/// Here the operator always wins that race: the runner must still have its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_started_at_once_has_its_token() -> Result<()> {
    let env = Env(Cluster::start_with_api_runs(
        "api-creds-race",
        test_runner_image().await?,
        |client, _| {
            Arc::new(OperatorFirst {
                inner: KubeRuns::new(client.clone()),
                client,
            })
        },
    )
    .await?);
    let id = env
        .api()
        .upload_dir(Path::new("tests/fixtures/loop"))
        .await?;
    // The trigger answers only once the runner pod runs (OperatorFirst).
    let created = env
        .trigger(json!({"pipeline": "slow", "source": {"upload": {"id": id}}}))
        .await?;
    let name = created["name"].as_str().context("a name")?.to_string();
    let pod = runner_pod(&env, &name).await?;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let secret = secrets.get(&format!("{name}-runner-token")).await?;
    let token = String::from_utf8(secret.data.clone().unwrap_or_default()["token"].0.clone())?;
    let vars = env.node.container_env(&pod.name_any()).await?;
    assert!(
        vars.contains(&format!("SPARKWING_API_TOKEN={token}")),
        "the runner started without its token: {vars:?}"
    );
    // The Secret was made the run's once it existed (deleted with it).
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o.kind == "PipelineRun" && o.name == name),
        "{owners:?}"
    );
    env.wait_run(&name, WAIT, "Succeeded", |r| phase(r) == "Succeeded")
        .await?;
    env.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_runner_pod_can_compile_as_the_runner_user() -> Result<()> {
    let bed = TestBed::shared().await?;
    let real = real_runner().await?;
    let ns = bed.namespace("api-toolchain").await?;
    let client = bed.client().await?;
    bed.load_image(&real.image).await?;
    let node = TestNode::start(bed, client.clone(), &ns).await?;
    let spec = real.pool_spec(1);
    // A pod of the pool's making: its image, env, volumes and mounts, the runner's restricted
    // security context and /tmp emptyDir.
    let script = "set -e; id -u; id -g; cargo --version; cc --version | head -n 1; \
                  sparkwing --version; cd /tmp && cargo new --vcs none -q hello && cd hello && \
                  cargo build -q --offline && ./target/debug/hello";
    let mut env = spec.env.clone();
    env.push(serde_json::from_value(
        json!({"name": "HOME", "value": "/tmp"}),
    )?);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "toolchain", "labels": {"app.kubernetes.io/managed-by": "sparkwing"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": serde_json::to_value(sparkwing_operator::runner_job::pod_security_context())?,
            "containers": [{
                "name": "runner", "image": spec.image,
                "command": ["sh", "-c", script],
                "env": env,
                "securityContext": serde_json::to_value(sparkwing_operator::runner_job::container_security_context())?,
                "volumeMounts": std::iter::once(json!({"name": "scratch", "mountPath": "/tmp"}))
                    .chain(spec.volume_mounts.iter().map(|m| serde_json::to_value(m).unwrap_or_default()))
                    .collect::<Vec<_>>(),
            }],
            "volumes": std::iter::once(json!({"name": "scratch", "emptyDir": {}}))
                .chain(spec.volumes.iter().map(|v| serde_json::to_value(v).unwrap_or_default()))
                .collect::<Vec<_>>(),
        },
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + COMPILE_WAIT;
    let done = loop {
        let pod = pods.get("toolchain").await?;
        let p = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if p == "Succeeded" || p == "Failed" {
            break pod;
        }
        ensure!(
            Instant::now() < deadline,
            "toolchain pod not finished: {:#?}",
            pod.status
        );
        tokio::time::sleep(POLL).await;
    };
    let logs = node.logs("toolchain").await?;
    let phase = done.status.and_then(|s| s.phase).unwrap_or_default();
    ensure!(phase == "Succeeded", "the toolchain pod {phase}: {logs}");
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.first().copied(), Some("65532"), "{logs}");
    assert_eq!(lines.get(1).copied(), Some("65532"), "{logs}");
    assert!(lines.iter().any(|l| l.starts_with("cargo ")), "{logs}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("gcc") || l.starts_with("cc ")),
        "{logs}"
    );
    assert!(lines.iter().any(|l| l.starts_with("sparkwing ")), "{logs}");
    assert_eq!(lines.last().copied(), Some("Hello, world!"), "{logs}");
    // The node ran it with the pool's mounts: one container, and the pod is its.
    assert_eq!(node.containers("toolchain").await?.len(), 1);
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_upload_trigger_real_runner_logs() -> Result<()> {
    let real = real_runner().await?;
    let env = Env::new("api-loop").await?;
    real.create_pool(&env.client, env.ns.name(), "real").await?;
    let id = env
        .api()
        .upload_dir(Path::new("tests/fixtures/loop"))
        .await?;
    let created = env
        .trigger(json!({"pipeline": "hello", "args": {"who": "cluster"},
                        "source": {"upload": {"id": id}}, "runnerPool": "real"}))
        .await?;
    let name = created["name"].as_str().context("a name")?.to_string();
    let run = env
        .wait_run(&name, COMPILE_WAIT, "finished", |r| {
            matches!(phase(r), "Succeeded" | "Failed")
        })
        .await;
    let pod_logs = match runner_pod(&env, &name).await {
        Ok(pod) => env.node.logs(&pod.name_any()).await.unwrap_or_default(),
        Err(e) => format!("{e:#}"),
    };
    let run = run.with_context(|| format!("runner log:\n{pod_logs}"))?;
    ensure!(
        phase(&run) == "Succeeded",
        "run {name} ended {} ({}); runner log:\n{pod_logs}",
        phase(&run),
        reason(&run)
    );
    let ns = env.ns.name().to_string();
    let jobs = env
        .api()
        .admin("GET", &format!("/api/v1/runs/{ns}/{name}/logs"), None)
        .await?
        .ok()?
        .json()?;
    let names: Vec<String> = serde_json::from_value(jobs["jobs"].clone())?;
    assert!(names.contains(&"count".to_string()), "{jobs}");
    assert!(names.contains(&"greet".to_string()), "{jobs}");
    let count = env
        .api()
        .admin(
            "GET",
            &format!("/api/v1/runs/{ns}/{name}/logs?job=count"),
            None,
        )
        .await?
        .ok()?
        .json()?;
    let lines: Vec<String> = count["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["line"].as_str().map(str::to_string))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("line 3 as 65532")),
        "{count}"
    );
    let greet = env
        .api()
        .admin(
            "GET",
            &format!("/api/v1/runs/{ns}/{name}/logs?job=greet"),
            None,
        )
        .await?
        .ok()?
        .text();
    assert!(greet.contains("hello cluster"), "{greet}");
    // finish archived it and retired the runner's token.
    assert!(env.api().has_file(format!("archive/{ns}/{name}.json")));
    env.shutdown().await
}
