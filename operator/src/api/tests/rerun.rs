//! `POST /api/v1/runs/{ns}/{name}/rerun`: a new run of a live or archived run's pipeline, source,
//! args and settings; who asked; the refusals.

use kube::ResourceExt;
use sparkwing_api::names::RERUN_OF_ANNOTATION;

use super::*;

async fn rerun(f: &Fx, token: &str, ns: &str, name: &str) -> Res {
    f.call(
        Method::POST,
        &format!("/api/v1/runs/{ns}/{name}/rerun"),
        Some(token),
        Body::empty(),
    )
    .await
}

/// The new run's namespace and name from a 201.
fn created(r: &Res) -> (String, String) {
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    assert!(v.get("runnerToken").is_none(), "{v}");
    (
        v["namespace"].as_str().unwrap().to_string(),
        v["name"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn api_rerun_starts_the_same_run_again_and_records_the_original() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.admin,
            json!({"pipeline": "build", "args": {"env": "prod"}, "namespace": "ci",
                   "source": {"upload": {"id": id}}, "runnerPool": "warm", "timeout": "30m",
                   "ttlSecondsAfterFinished": 600, "maxAttempts": 2}),
        )
        .await;
    let (ns, name) = created(&r);
    f.runs.set_phase(&ns, &name, RunPhase::Failed);

    let mut req = Request::post(format!("/api/v1/runs/{ns}/{name}/rerun"))
        .header("authorization", format!("Bearer {}", f.trigger))
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 40000))));
    let (new_ns, new_name) = created(&f.send(req).await);
    assert_eq!(new_ns, "ci");
    assert!(
        new_name.starts_with("build-") && new_name != name,
        "{new_name}"
    );
    let (old, new) = (
        f.runs.run(&ns, &name).unwrap(),
        f.runs.run(&new_ns, &new_name).unwrap(),
    );
    assert_eq!(new.spec.pipeline, "build");
    assert_eq!(new.spec.args, old.spec.args);
    assert!(matches!(new.spec.source, Source::Upload(ref u) if u.id == id));
    assert_eq!(new.spec.runner_pool.as_deref(), Some("warm"));
    assert_eq!(new.spec.timeout.as_deref(), Some("30m"));
    assert_eq!(new.spec.ttl_seconds_after_finished, Some(600));
    assert_eq!(new.spec.max_attempts, 2);
    assert!(new.spec.secrets.is_empty());
    // Who asked: the re-run's token, not the original's.
    let by = new.spec.triggered_by.as_ref().unwrap();
    assert_eq!(by.principal, "alice@example.com");
    assert_eq!(by.host.as_deref(), Some("10.1.2.3"));
    assert_eq!(by.via, TriggerVia::Cli);
    assert_eq!(
        new.annotations()[RERUN_OF_ANNOTATION],
        format!("{ns}/{name}")
    );
    // Made as a trigger makes it: its runner token is in its Secret, for this run and upload.
    let runner = f
        .runs
        .runner_token(&new_ns, &new_name)
        .expect("runner token");
    let r = f.get(&format!("/api/v1/uploads/{id}"), &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &runner).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // The run view names the original; the original's names none.
    let v = f
        .get(&format!("/api/v1/runs/{new_ns}/{new_name}"), &f.reader)
        .await
        .json();
    assert_eq!(v["rerunOf"], format!("{ns}/{name}"));
    let v = f
        .get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader)
        .await
        .json();
    assert!(v.get("rerunOf").is_none(), "{v}");
    let list = f.get("/api/v1/runs?namespace=ci", &f.reader).await.json();
    let listed = |n: &str| {
        list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(listed(&new_name)["rerunOf"], format!("{ns}/{name}"));
    assert!(listed(&name).get("rerunOf").is_none());

    // A re-run of the re-run names the re-run.
    let (_, third) = created(&rerun(&f, &f.trigger, &new_ns, &new_name).await);
    assert_eq!(
        f.runs.run(&new_ns, &third).unwrap().annotations()[RERUN_OF_ANNOTATION],
        format!("{new_ns}/{new_name}")
    );
}

#[tokio::test]
async fn api_rerun_reads_an_archived_run() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    // Reading the finished run archives it; then the PipelineRun goes.
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
    assert_eq!(r.json()["archived"], true, "{}", r.body);
    f.runs.delete(&ns, &name);
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
    assert_eq!(r.json()["live"], false, "{}", r.body);

    let (new_ns, new_name) = created(&rerun(&f, &f.trigger, &ns, &name).await);
    let new = f.runs.run(&new_ns, &new_name).unwrap();
    assert!(matches!(new.spec.source, Source::Upload(ref u) if u.id == id));
    assert_eq!(
        new.annotations()[RERUN_OF_ANNOTATION],
        format!("{ns}/{name}")
    );
}

#[tokio::test]
async fn api_rerun_refuses_readers_unknown_runs_collected_uploads_and_external_runs() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    f.runs.set_phase(&ns, &name, RunPhase::Failed);
    let before = f.runs.list(None).await.unwrap().len();

    let r = rerun(&f, &f.reader, &ns, &name).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:trigger",
    );
    let r = rerun(&f, &f.trigger, &ns, "no-such-run").await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("run {ns}/no-such-run not found"),
    );
    let r = rerun(&f, &f.trigger, &ns, "Bad_Name").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // Once the run finished, garbage collection may take its upload: trigger again instead.
    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/gc",
            &f.admin,
            json!({"graceSeconds": 0}),
        )
        .await;
    assert_eq!(r.json()["uploadsDeleted"], 1, "{}", r.body);
    let r = rerun(&f, &f.trigger, &ns, &name).await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        &format!("the upload {id} of run {ns}/{name} is gone"),
    );
    assert!(r.body.contains("from the working tree"), "{}", r.body);

    // A run executed outside the cluster has nothing here to run again.
    let (ens, ename, _) = trigger_external(&f).await;
    let r = rerun(&f, &f.trigger, &ens, &ename).await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        "executed outside the cluster",
    );
    assert_eq!(f.runs.list(None).await.unwrap().len(), before + 1);
}

#[tokio::test]
async fn api_rerun_of_a_fork_pull_request_stays_without_secrets() {
    use sparkwing_crds::pipeline_run::{TriggeredBy, TriggeringPullRequest};
    let f = fx().await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "namespace": "ci",
                   "source": {"git": {"url": "https://example.com/fork/app.git", "revision": "0123abcd"}}}),
        )
        .await;
    let (ns, name) = created(&r);
    // Play a pull request delivery from a fork (no Secrets), and a push run with Secrets.
    let mut fork = f.runs.run(&ns, &name).unwrap();
    fork.spec.triggered_by = Some(TriggeredBy {
        principal: "octocat".into(),
        host: None,
        via: TriggerVia::Webhook,
        delivery_id: Some("d-1".into()),
        pull_request: Some(TriggeringPullRequest {
            number: 12,
            base: "main".into(),
            head: "fix".into(),
            fork: true,
        }),
    });
    for (k, v) in [
        (crate::labels::PIPELINE_ANNOTATION, "app"),
        (crate::labels::FORK_ANNOTATION, "true"),
        (crate::labels::COMMIT_STATUS_ANNOTATION, "failure"),
    ] {
        fork.annotations_mut().insert(k.into(), v.into());
    }
    let mut pushed = fork.clone();
    pushed.metadata.name = Some("build-pushed".into());
    pushed.spec.secrets = vec!["deploy-keys".into()];
    f.runs.insert(fork);
    f.runs.insert(pushed);
    f.runs.set_phase(&ns, &name, RunPhase::Failed);
    f.runs.set_phase(&ns, "build-pushed", RunPhase::Failed);

    let (_, again) = created(&rerun(&f, &f.trigger, &ns, &name).await);
    let new = f.runs.run(&ns, &again).unwrap();
    assert!(new.spec.secrets.is_empty());
    assert!(matches!(new.spec.source, Source::Git(ref g) if g.revision == "0123abcd"));
    let by = new.spec.triggered_by.clone().unwrap();
    assert_eq!(by.principal, "alice@example.com");
    assert!(by.pull_request.is_some_and(|p| p.fork));
    assert_eq!(new.annotations()[crate::labels::FORK_ANNOTATION], "true");
    assert_eq!(new.annotations()[crate::labels::PIPELINE_ANNOTATION], "app");
    assert!(!new
        .annotations()
        .contains_key(crate::labels::COMMIT_STATUS_ANNOTATION));

    let (_, again) = created(&rerun(&f, &f.trigger, &ns, "build-pushed").await);
    assert_eq!(
        f.runs.run(&ns, &again).unwrap().spec.secrets,
        ["deploy-keys"]
    );
}
