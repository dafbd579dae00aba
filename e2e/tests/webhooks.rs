//! Push webhooks end to end: a git server on loopback (`git daemon`) hosting a repository with
//! `.sparkwing/`, a `Pipeline` pointing at it, the operator with its API in-process and a pool of
//! the real runner. A signed push delivery creates a run that checks out exactly the pushed commit
//! and succeeds; a redelivery creates nothing; a bad signature is 401 and creates nothing; the
//! Pipeline's `status.lastRun` names the run and its phase. A signed pull request delivery runs the
//! pull request's head commit and posts its commit statuses to a loopback GitHub API.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use sparkwing_crds::pipeline::{Pipeline, PIPELINE_LABEL};
use sparkwing_e2e::run_status::phase;
use sparkwing_e2e::webhook::{deliver, push_payload, sign, LoopbackGitHub, PushCluster};
use sparkwing_operator::api::webhook::signature_header;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_runs_exactly_the_pushed_commit_once() -> Result<()> {
    let bed = PushCluster::start("webhooks").await?;
    let api = bed.api();

    // The repository: two commits on main, the older one is pushed in the event.
    let tree = &bed.tree;
    let yaml = tree.path().join(".sparkwing/sparkwing.yaml");
    std::fs::write(&yaml, sparkwing_yaml("first-commit"))?;
    let first = tree.commit_all("first")?;
    std::fs::write(&yaml, sparkwing_yaml("second-commit"))?;
    let second = tree.commit_all("second")?;
    tree.push("main")?;
    ensure!(first != second);
    let url = &bed.url;

    let pipelines = bed.pipelines();
    bed.create_pipeline(json!({})).await?;
    let runs = bed.runs();
    let count_runs = || async {
        Ok::<_, anyhow::Error>(
            runs.list(&ListParams::default().labels(PIPELINE_LABEL))
                .await?
                .items
                .len(),
        )
    };

    let body = push_payload(url, &first);
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
    let signature = sign(&body);
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
                bed.runner_logs(&name).await
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let log = bed.runner_logs(&name).await;
    ensure!(
        phase(&run) == "Succeeded",
        "run {name} ended {}: {:#?}\nrunner log:\n{log}",
        phase(&run),
        run.status
    );
    let greet = api
        .admin(
            "GET",
            &format!("/api/v1/runs/{}/{name}/logs?job=greet", bed.ns.name()),
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
            .is_some_and(|l| l.name == name && l.phase.phase_str() == "Succeeded")
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
    bed.shutdown().await
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
    let bed = PushCluster::start("webhook-drift").await?;

    // Two commits: the first's sparkwing.yaml runs on pushes to main and release/*, the
    // Pipeline's only main (drifted); the second's only main (in sync).
    let tree = &bed.tree;
    let yaml = tree.path().join(".sparkwing/sparkwing.yaml");
    std::fs::write(&yaml, sparkwing_yaml_on("drifted", "main, \"release/*\""))?;
    let drifted = tree.commit_all("drifted")?;
    std::fs::write(&yaml, sparkwing_yaml_on("in-sync", "main"))?;
    let in_sync = tree.commit_all("in sync")?;
    tree.push("main")?;

    let pipelines = bed.pipelines();
    bed.create_pipeline(json!({})).await?;
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

    // Push `commit`; wait until the Pipeline's BranchesInSync is `want` (status, reason) as that
    // push's run reported it; (the run, the Pipeline), or the runner's log.
    let push_until =
        |delivery: &'static str, commit: String, want: (&'static str, &'static str)| {
            let (bed, pipelines) = (&bed, &pipelines);
            async move {
                let (status, answer) = bed.push(delivery, &commit).await?;
                ensure!(status == 201, "{delivery}: {status} {answer}");
                let run = answer["runs"][0]["name"]
                    .as_str()
                    .map(str::to_string)
                    .context("the created run")?;
                let prefix = format!("run {run}:");
                let p = wait_for_pipeline(
                    pipelines,
                    "app",
                    &format!("BranchesInSync={}/{}", want.0, want.1),
                    move |p| {
                        branches_in_sync(p).is_some_and(|(s, r, m)| {
                            s == want.0 && r == want.1 && m.starts_with(&prefix)
                        })
                    },
                    REPORT_WAIT,
                )
                .await;
                match p {
                    Ok(p) => Ok((run, p)),
                    Err(e) => bail!("{e:#}\nrunner log:\n{}", bed.runner_logs(&run).await),
                }
            }
        };

    // The drifted commit: False/Drifted, naming both lists and the fix.
    let (first, p) = push_until("e2e-drift-1", drifted, ("False", "Drifted")).await?;
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
    let runs = bed.runs();
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
    let (second, p) = push_until("e2e-drift-2", in_sync, ("True", "InSync")).await?;
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

    bed.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_runs_its_head_commit_and_posts_commit_statuses() -> Result<()> {
    let github = LoopbackGitHub::start().await?;
    let github_url = github.url.clone();
    let bed = PushCluster::start_configured("webhook-pr", move |mut c| {
        c.github_api_url = github_url;
        c.dashboard_url = Some("https://sparkwing.example.com".into());
        c
    })
    .await?;
    let api = bed.api();

    // main, and the pull request's branch one commit ahead of it.
    let tree = &bed.tree;
    let yaml = tree.path().join(".sparkwing/sparkwing.yaml");
    std::fs::write(&yaml, sparkwing_yaml("main-commit"))?;
    tree.commit_all("main")?;
    tree.push("main")?;
    std::fs::write(&yaml, sparkwing_yaml("pr-head"))?;
    let head = tree.commit_all("the pull request")?;
    tree.push("feature")?;

    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(bed.client.clone(), bed.ns.name());
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "github-statuses"},
                "stringData": {"token": "ghp_e2e"}
            }))?,
        )
        .await?;
    bed.create_pipeline(json!({
        "triggers": {"pullRequest": {"branches": ["main"]}},
        "github": {"secretRef": "github-statuses"}
    }))
    .await?;

    let body =
        sparkwing_e2e::webhook::pull_request_payload(&bed.url, "opened", 7, "feature", &head);
    let delivered = Instant::now();
    let (status, answer) = deliver(api, "pull_request", "e2e-pr-1", &body, &sign(&body)).await?;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["pullRequest"], 7, "{answer}");
    assert_eq!(answer["commit"], head.as_str(), "{answer}");
    let name = answer["runs"][0]["name"]
        .as_str()
        .context("a run")?
        .to_string();
    let runs = bed.runs();
    let run = runs.get(&name).await?;
    assert_eq!(
        serde_json::to_value(&run.spec.source)?,
        json!({"git": {"url": bed.url, "revision": head}})
    );
    let a = run.annotations();
    assert_eq!(a["sparkwing.dev/pull-request"], "7");
    assert_eq!(a["sparkwing.dev/base-branch"], "main");
    assert_eq!(a["sparkwing.dev/branch"], "feature");

    // `pending` reaches GitHub while the run compiles.
    let pending = github.wait_for("pending", WAIT).await?;
    eprintln!(
        "figure: webhook delivery -> commit status pending posted: {} ms",
        pending.at.duration_since(delivered).as_millis()
    );
    assert_eq!(pending.path, format!("/repos/e2e/app/statuses/{head}"));
    assert_eq!(pending.authorization, "Bearer ghp_e2e");
    assert_eq!(pending.body["context"], "sparkwing/app");
    assert_eq!(
        pending.body["target_url"],
        format!(
            "https://sparkwing.example.com/runs/{}/{name}",
            bed.ns.name()
        )
    );

    // The run is of the head commit; then `success`.
    let success = match github.wait_for("success", COMPILE_WAIT).await {
        Ok(s) => s,
        Err(e) => bail!("{e:#}\nrunner log:\n{}", bed.runner_logs(&name).await),
    };
    assert_eq!(success.path, pending.path);
    let run = runs.get(&name).await?;
    assert_eq!(phase(&run), "Succeeded");
    let greet = api
        .admin(
            "GET",
            &format!("/api/v1/runs/{}/{name}/logs?job=greet", bed.ns.name()),
            None,
        )
        .await?
        .ok()?
        .text();
    assert!(greet.contains("hello pr-head"), "{greet}");
    // Posted once per state, recorded on the run.
    let states: Vec<String> = github
        .posted
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body["state"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(states, ["pending", "success"]);
    let p = wait_for_pipeline(
        &bed.pipelines(),
        "app",
        "CommitStatus=True",
        |p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "CommitStatus" && c.reason == "Posted")
            })
        },
        WAIT,
    )
    .await?;
    assert!(p.status.is_some());
    bed.shutdown().await
}
