//! Push webhooks end to end: a git server on loopback (`git daemon`) hosting a repository with
//! `.sparkwing/`, a `Pipeline` pointing at it, the operator with its API in-process and a pool of
//! the real runner. A signed push delivery creates a run that checks out exactly the pushed commit
//! and succeeds; a redelivery creates nothing; a bad signature is 401 and creates nothing; the
//! Pipeline's `status.lastRun` names the run and its phase.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use sparkwing_crds::pipeline::{Pipeline, PIPELINE_LABEL};
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::api_task::WEBHOOK_SECRET;
use sparkwing_e2e::git_server::{GitServer, WorkTree};
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
const COMPILE_WAIT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_millis(200);

/// `.sparkwing/sparkwing.yaml` of the repository: the loop fixture's `hello` pipeline, on pushes
/// to main, greeting `who` — which differs per commit, so the log shows which commit ran.
fn sparkwing_yaml(who: &str) -> String {
    format!(
        "pipelines:\n  - name: hello\n    entrypoint: Hello\n    description: Two jobs that print, one arg\n    on:\n      push:\n        branches: [main]\n    args:\n      who: {who}\n"
    )
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

/// A push event as GitHub sends it (the fields Sparkwing reads, and a few more).
fn push_payload(clone_url: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "created": true,
        "deleted": false,
        "forced": false,
        "repository": {"name": "app", "full_name": "e2e/app", "clone_url": clone_url},
        "pusher": {"name": "octocat"},
        "sender": {"login": "octocat"},
    }))
    .expect("a payload")
}

/// `POST /webhooks/github` with GitHub's headers; (status, JSON body).
async fn deliver(
    api: &ApiTask,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: &str,
) -> Result<(u16, Value)> {
    let host = api.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nUser-Agent: GitHub-Hookshot/e2e\r\n\
         X-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\n\
         X-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .context("no answer from the webhook endpoint")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    Ok((status, json))
}

fn phase(run: &PipelineRun) -> &str {
    run.status.as_ref().map_or("", |s| s.phase.as_str())
}

async fn runner_log(client: &Client, node: &NodeEmulator, ns: &str, run: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("sparkwing.dev/run={run}"));
    match pods.list(&lp).await {
        Ok(list) => match list.items.first() {
            Some(pod) => node.logs(&pod.name_any()).await.unwrap_or_default(),
            None => "(no runner pod)".to_string(),
        },
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_runs_exactly_the_pushed_commit_once() -> Result<()> {
    let real = real_runner().await?;
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    let ns = bed.namespace("webhooks").await?;
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

    // The repository: two commits on main, the older one is pushed in the event.
    let server = GitServer::start()?;
    let bare = server.create_repo("app")?;
    let tree = WorkTree::new(&bare)?;
    copy_tree(Path::new("tests/fixtures/loop"), tree.path())?;
    let yaml = tree.path().join(".sparkwing/sparkwing.yaml");
    std::fs::write(&yaml, sparkwing_yaml("first-commit"))?;
    let first = tree.commit_all("first")?;
    std::fs::write(&yaml, sparkwing_yaml("second-commit"))?;
    let second = tree.commit_all("second")?;
    tree.push("main")?;
    ensure!(first != second);
    let url = server.url("app");

    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let pipeline: Pipeline = serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "app"},
        "spec": {"repository": url, "pipeline": "hello",
                 "triggers": {"push": {"branches": ["main"]}}, "runnerPool": "real"},
    }))?;
    pipelines.create(&PostParams::default(), &pipeline).await?;
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    let count_runs = || async {
        Ok::<_, anyhow::Error>(
            runs.list(&ListParams::default().labels(PIPELINE_LABEL))
                .await?
                .items
                .len(),
        )
    };

    let body = push_payload(&url, &first);
    // A bad signature: 401, nothing created.
    let (status, answer) = deliver(
        api,
        "push",
        "e2e-delivery-1",
        &body,
        &signature_header(b"not the secret", &body),
    )
    .await?;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(count_runs().await?, 0);

    // Signed: one run, of the pushed commit.
    let signature = signature_header(WEBHOOK_SECRET, &body);
    let (status, answer) = deliver(api, "push", "e2e-delivery-1", &body, &signature).await?;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["commit"], first.as_str(), "{answer}");
    let created = answer["runs"].as_array().context("runs")?.clone();
    assert_eq!(created.len(), 1, "{answer}");
    let name = created[0]["name"].as_str().context("a name")?.to_string();
    let run = runs.get(&name).await?;
    let source = serde_json::to_value(&run.spec.source)?;
    assert_eq!(
        source,
        json!({"git": {"url": url, "revision": first}}),
        "{source}"
    );
    let by = run.spec.triggered_by.clone().context("triggeredBy")?;
    assert_eq!(by.principal, "webhook:octocat");
    assert_eq!(by.delivery_id.as_deref(), Some("e2e-delivery-1"));

    // GitHub's redelivery: the same answer, no second run.
    let (status, again) = deliver(api, "push", "e2e-delivery-1", &body, &signature).await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["runs"], json!(created));
    assert_eq!(count_runs().await?, 1);

    // The run builds and runs that commit on the real runner.
    let deadline = Instant::now() + COMPILE_WAIT;
    let run = loop {
        let run = runs.get(&name).await?;
        if matches!(phase(&run), "Succeeded" | "Failed" | "Cancelled") {
            break run;
        }
        if Instant::now() > deadline {
            bail!(
                "run {name} not finished within {COMPILE_WAIT:?}: {:#?}\nrunner log:\n{}",
                run.status,
                runner_log(&client, &node, &ns, &name).await
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let log = runner_log(&client, &node, &ns, &name).await;
    ensure!(
        phase(&run) == "Succeeded",
        "run {name} ended {}: {:#?}\nrunner log:\n{log}",
        phase(&run),
        run.status
    );
    let greet = api
        .admin(
            "GET",
            &format!("/api/v1/runs/{}/{name}/logs?job=greet", ns.name()),
            None,
        )
        .await?
        .ok()?
        .text();
    assert!(greet.contains("hello first-commit"), "{greet}");
    assert!(!greet.contains("second-commit"), "{greet}");

    // `kubectl get pipelines`: LAST RUN is this run, PHASE Succeeded.
    let deadline = Instant::now() + WAIT;
    loop {
        let p = pipelines.get("app").await?;
        let last = p.status.as_ref().and_then(|s| s.last_run.clone());
        if last
            .as_ref()
            .is_some_and(|l| l.name == name && l.phase.as_str() == "Succeeded")
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "Pipeline app's status.lastRun is not {name} Succeeded: {:#?}",
                p.status
            );
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(count_runs().await?, 1);
    op.stop().await?;
    node.shutdown().await
}

/// `.sparkwing/sparkwing.yaml` with the `hello` pipeline started by pushes to `branches` (a YAML
/// flow sequence's items).
fn sparkwing_yaml_on(who: &str, branches: &str) -> String {
    sparkwing_yaml(who).replace("branches: [main]", &format!("branches: [{branches}]"))
}

/// Wait until `pred` holds for Pipeline `name`, at most `deadline` (a watch on the one object);
/// the error names `what` and shows the Pipeline's status then.
async fn wait_for_pipeline(
    api: &Api<Pipeline>,
    name: &str,
    what: &str,
    pred: impl Fn(&Pipeline) -> bool + Send + 'static,
    deadline: Duration,
) -> Result<Pipeline> {
    let cond = move |o: Option<&Pipeline>| o.is_some_and(&pred);
    match tokio::time::timeout(
        deadline,
        kube::runtime::wait::await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(Ok(Some(p))) => Ok(p),
        Ok(Ok(None)) => bail!("Pipeline {name} is gone"),
        Ok(Err(e)) => Err(e).context(format!("watching Pipeline {name}")),
        Err(_) => bail!(
            "Pipeline {name} not {what} within {deadline:?}; status: {}",
            serde_json::to_string(&api.get(name).await?.status)?
        ),
    }
}

/// The Pipeline's `BranchesInSync` condition: (status, reason, message).
fn branches_in_sync(p: &Pipeline) -> Option<(String, String, String)> {
    let status = serde_json::to_value(&p.status).ok()?;
    let c = status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "BranchesInSync")?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["message"].as_str()?.to_string(),
    ))
}

/// Until a run reports: the report comes after the checkout, before the compile.
const REPORT_WAIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_drift_of_the_committed_yaml_is_a_condition_on_the_pipeline() -> Result<()> {
    let real = real_runner().await?;
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    let ns = bed.namespace("webhook-drift").await?;
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

    // Two commits: the first's sparkwing.yaml runs on pushes to main and release/*, the
    // Pipeline's only main (drifted); the second's only main (in sync).
    let server = GitServer::start()?;
    let bare = server.create_repo("app")?;
    let tree = WorkTree::new(&bare)?;
    copy_tree(Path::new("tests/fixtures/loop"), tree.path())?;
    let yaml = tree.path().join(".sparkwing/sparkwing.yaml");
    std::fs::write(&yaml, sparkwing_yaml_on("drifted", "main, \"release/*\""))?;
    let drifted = tree.commit_all("drifted")?;
    std::fs::write(&yaml, sparkwing_yaml_on("in-sync", "main"))?;
    let in_sync = tree.commit_all("in sync")?;
    tree.push("main")?;
    let url = server.url("app");

    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let pipeline: Pipeline = serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "app"},
        "spec": {"repository": url, "pipeline": "hello",
                 "triggers": {"push": {"branches": ["main"]}}, "runnerPool": "real"},
    }))?;
    pipelines.create(&PostParams::default(), &pipeline).await?;
    // Before any run reported: Ready, and no BranchesInSync.
    let p = wait_for_pipeline(
        &pipelines,
        "app",
        "Ready",
        |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready"))
        },
        WAIT,
    )
    .await?;
    assert_eq!(branches_in_sync(&p), None, "{:?}", p.status);

    let push = |delivery: &'static str, commit: String| {
        let url = url.clone();
        async move {
            let body = push_payload(&url, &commit);
            let signature = signature_header(WEBHOOK_SECRET, &body);
            let (status, answer) = deliver(api, "push", delivery, &body, &signature).await?;
            ensure!(status == 201, "{delivery}: {status} {answer}");
            answer["runs"][0]["name"]
                .as_str()
                .map(str::to_string)
                .context("the created run")
        }
    };

    // The drifted commit: False/Drifted, naming both lists and the fix.
    let first = push("e2e-drift-1", drifted).await?;
    let want = first.clone();
    let p = wait_for_pipeline(
        &pipelines,
        "app",
        "BranchesInSync=False/Drifted",
        move |p| {
            branches_in_sync(p).is_some_and(|(s, r, m)| {
                s == "False" && r == "Drifted" && m.starts_with(&format!("run {want}:"))
            })
        },
        REPORT_WAIT,
    )
    .await;
    let p = match p {
        Ok(p) => p,
        Err(e) => bail!(
            "{e:#}\nrunner log:\n{}",
            runner_log(&client, &node, &ns, &first).await
        ),
    };
    let (_, _, message) = branches_in_sync(&p).context("BranchesInSync")?;
    for part in [
        "[main]",
        "[main, release/*]",
        "spec.triggers.push.branches",
        "so they match",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    let drift_since = serde_json::to_value(&p.status)?["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "BranchesInSync"))
        .map(|c| c["lastTransitionTime"].clone());
    // Recorded on the run as annotations.
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    let run = runs.get(&first).await?;
    let a = run.annotations();
    assert_eq!(
        a.get("sparkwing.dev/branches-in-sync").map(String::as_str),
        Some("false")
    );
    assert!(
        a.get("sparkwing.dev/branch-drift")
            .is_some_and(|m| message.ends_with(m.as_str())),
        "{a:?}"
    );

    // The commit that agrees with the Pipeline: True/InSync, from the newer run.
    let second = push("e2e-drift-2", in_sync).await?;
    let want = second.clone();
    let p = wait_for_pipeline(
        &pipelines,
        "app",
        "BranchesInSync=True/InSync",
        move |p| {
            branches_in_sync(p).is_some_and(|(s, r, m)| {
                s == "True" && r == "InSync" && m.starts_with(&format!("run {want}:"))
            })
        },
        REPORT_WAIT,
    )
    .await;
    let p = match p {
        Ok(p) => p,
        Err(e) => bail!(
            "{e:#}\nrunner log:\n{}",
            runner_log(&client, &node, &ns, &second).await
        ),
    };
    let since = serde_json::to_value(&p.status)?["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "BranchesInSync"))
        .map(|c| c["lastTransitionTime"].clone());
    // RFC 3339 UTC times of one format sort as strings.
    let (since, drift_since) = (
        since.and_then(|t| t.as_str().map(str::to_string)),
        drift_since.and_then(|t| t.as_str().map(str::to_string)),
    );
    assert!(
        since.is_some() && since >= drift_since,
        "{since:?} {drift_since:?}"
    );
    let run = runs.get(&second).await?;
    assert_eq!(
        run.annotations()
            .get("sparkwing.dev/branches-in-sync")
            .map(String::as_str),
        Some("true")
    );
    assert!(!run.annotations().contains_key("sparkwing.dev/branch-drift"));

    op.stop().await?;
    node.shutdown().await
}
