//! The REAL warm runner: a RunnerPool of the real runner (`sparkwing runner --warm`) with
//! `minIdle: 1`, the operator and its API in the process. The warm pod learns its claim from its
//! downwardAPI volume and trades its pool token for the run's token at the API; no Kubernetes
//! credentials in the pod (the node emulator mounts none).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures_util::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sparkwing_crds::{PipelineRun, RunnerPool};
use sparkwing_e2e::{cli, real_runner, test_runner_image, OperatorTask, TestBed, TestNode};
use sparkwing_operator::Config;

const WAIT: Duration = Duration::from_secs(60);
/// A first compile of the fixture with cargo, as uid 65532, on a loaded machine.
const COMPILE_WAIT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_millis(100);

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn poll<T>(
    what: &str,
    wait: Duration,
    mut f: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {wait:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_real_runner_serves_a_run_and_exits_0_when_reaped() -> Result<()> {
    let real = real_runner().await?;
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    let ns = bed.namespace("warm-real").await?;
    let client: Client = bed.client().await?;
    bed.load_image(&image).await?;
    bed.load_image(&real.image).await?;
    let node = TestNode::start(bed, client.clone(), &ns).await?;
    let op =
        OperatorTask::start_with_api(client.clone(), Config::new(image).namespace(ns.name()), &ns)
            .await?;
    let api = op.api();

    // A pool of the real runner keeping one warm pod, sharing a binary cache.
    let cache = std::env::temp_dir().join("sparkwing-e2e-warm-runner-cache");
    let mut spec = cli::with_binary_cache(real.pool_spec(2), &cache)?;
    spec.min_idle = 1;
    spec.idle_timeout = "1s".into();
    let pools: Api<RunnerPool> = Api::namespaced(client.clone(), &ns);
    pools
        .create(&PostParams::default(), &RunnerPool::new("warm", spec))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let warm_lp = ListParams::default().labels("sparkwing.dev/pool=warm,sparkwing.dev/warm=true");
    let warm_pod = poll("a Ready warm pod", WAIT, async || {
        Ok(pods.list(&warm_lp).await?.items.into_iter().find(is_ready))
    })
    .await?;
    let warm_name = warm_pod.name_any();
    // Its pool credential: a Secret owned by the pool, holding a token of scope pool:<ns>/warm.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get("warm-pool-token").await?;
    ensure!(secret
        .owner_references()
        .iter()
        .any(|o| o.kind == "RunnerPool" && o.name == "warm"));
    let token = String::from_utf8(secret.data.unwrap_or_default()["token"].0.clone())?;
    let rec = api
        .state
        .store
        .lookup_token(&token)
        .await?
        .context("the pool token is live")?;
    ensure!(
        rec.scopes == [format!("pool:{}/warm", ns.name())],
        "{rec:?}"
    );

    // A run on that pool: the warm pod serves it, no Job.
    let id = api.upload_dir(Path::new("tests/fixtures/loop")).await?;
    let created = api
        .admin(
            "POST",
            "/api/v1/runs",
            Some(&json!({"pipeline": "hello", "args": {"who": "warm"},
                         "source": {"upload": {"id": id}}, "runnerPool": "warm"})),
        )
        .await?
        .ok()?
        .json()?;
    let name = created["name"].as_str().context("a name")?.to_string();
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    let claimed = poll("the warm pod claimed", WAIT, async || {
        let pod = pods.get(&warm_name).await?;
        Ok(pod
            .labels()
            .get("sparkwing.dev/claimed-by")
            .is_some_and(|r| *r == name)
            .then_some(pod))
    })
    .await?;
    ensure!(
        claimed
            .annotations()
            .get("sparkwing.dev/attempt")
            .map(String::as_str)
            == Some("1")
    );
    let run = poll("the run finished", COMPILE_WAIT, async || {
        let r = runs.get(&name).await?;
        let phase = r.status.as_ref().map(|s| s.phase.phase_str().to_string());
        Ok(matches!(phase.as_deref(), Some("Succeeded" | "Failed")).then_some(r))
    })
    .await;
    let logs = node.logs(&warm_name).await.unwrap_or_default();
    let run = run.with_context(|| format!("warm runner log:\n{logs}"))?;
    let status = run.status.clone().unwrap_or_default();
    ensure!(
        status.phase.phase_str() == "Succeeded",
        "run ended {:?}: {:#?}\nwarm runner log:\n{logs}",
        status.phase,
        status.conditions
    );
    ensure!(
        status.runner.as_deref() == Some(warm_name.as_str()),
        "{status:?}"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job_list = jobs
        .list(&ListParams::default().labels(&format!("sparkwing.dev/run={name}")))
        .await?;
    ensure!(
        job_list.items.is_empty(),
        "a Job was created for a claimed run"
    );
    ensure!(op.metrics.runners_started("warm") == 1 && op.metrics.runners_started("job") == 0);
    // Its logs are in the API.
    let nsn = ns.name().to_string();
    let greet = api
        .admin(
            "GET",
            &format!("/api/v1/runs/{nsn}/{name}/logs?job=greet"),
            None,
        )
        .await?
        .ok()?
        .text();
    ensure!(greet.contains("hello warm"), "{greet}");
    let count = api
        .admin(
            "GET",
            &format!("/api/v1/runs/{nsn}/{name}/logs?job=count"),
            None,
        )
        .await?
        .ok()?
        .text();
    ensure!(count.contains("line 3 as 65532"), "{count}");

    // The pool refills; scaled to minIdle 0, its idle pod is reaped: SIGTERM while idle, exit 0.
    let fresh = poll("a new Ready warm pod", WAIT, async || {
        Ok(pods
            .list(&warm_lp)
            .await?
            .items
            .into_iter()
            .find(|p| p.name_any() != warm_name && is_ready(p)))
    })
    .await?;
    let fresh_name = fresh.name_any();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={fresh_name}"));
    let mut events = watcher(pods.clone(), cfg).boxed();
    pools
        .patch(
            "warm",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"minIdle": 0}})),
        )
        .await?;
    let exit = tokio::time::timeout(WAIT, async {
        let mut code = None;
        while let Some(ev) = events.next().await {
            match ev? {
                Event::Apply(p) | Event::InitApply(p) => {
                    let t = p
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|cs| cs.first())
                        .and_then(|c| c.state.as_ref())
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| t.exit_code);
                    if t.is_some() {
                        code = t;
                    }
                }
                Event::Delete(_) => break,
                _ => {}
            }
        }
        Ok::<_, anyhow::Error>(code)
    })
    .await
    .context("the reaped warm pod was not deleted")??;
    ensure!(
        exit == Some(0),
        "the reaped idle warm runner exited {exit:?}"
    );

    op.stop().await?;
    node.shutdown().await
}
