//! Router tests of `POST /webhooks/github`: `oneshot` requests with [`MemoryRuns`],
//! [`MemoryPipelines`] and the test stores (embedded, or PostgreSQL + S3).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kube::ResourceExt;
use serde_json::{json, Value};
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_crds::pipeline::{
    Pipeline, PipelineSpec, PipelineTriggers, PullRequestTrigger, PushTrigger, PIPELINE_LABEL,
};
use sparkwing_crds::pipeline_run::{CancelMode, GitSource, Source, TriggerVia};
use tower::ServiceExt;

use super::test_backend::TestStore;
use super::webhook::signature_header;
use super::*;

const SECRET: &[u8] = b"It's a Secret to Everybody";
const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

struct Fx {
    st: ApiState,
    runs: Arc<MemoryRuns>,
    stores: TestStore,
}

fn pipeline(name: &str, branches: &[&str]) -> Pipeline {
    let mut p = Pipeline::new(
        name,
        PipelineSpec {
            repository: "git@github.com:acme/app.git".into(),
            pipeline: "build".into(),
            path: None,
            triggers: PipelineTriggers {
                push: Some(PushTrigger {
                    branches: branches.iter().map(|s| s.to_string()).collect(),
                    ..PushTrigger::default()
                }),
                ..PipelineTriggers::default()
            },
            runner_pool: Some("warm".into()),
            ..PipelineSpec::default()
        },
    );
    p.metadata.namespace = Some("ci".into());
    p
}

async fn fx(secret: Option<&[u8]>) -> Fx {
    let stores = TestStore::new().await;
    let runs = Arc::new(MemoryRuns::new());
    let pipelines = Arc::new(MemoryPipelines::new(vec![
        pipeline("app", &["main", "release/*"]),
        pipeline("app-nightly", &["nightly"]),
    ]));
    let st = ApiState::new(stores.store.clone(), runs.clone(), ApiConfig::default())
        .with_webhooks(Webhooks::new(secret.map(<[u8]>::to_vec), pipelines));
    Fx { st, runs, stores }
}

fn push_body(git_ref: &str, deleted: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": git_ref,
        "before": "a10867b14bb761a232cd80139fbd4c0d33264240",
        "after": if deleted { "0".repeat(40) } else { SHA.to_string() },
        "created": false,
        "deleted": deleted,
        "repository": {
            "id": 1296269,
            "full_name": "acme/app",
            "html_url": "https://github.com/acme/app",
            "clone_url": "https://github.com/acme/app.git",
            "ssh_url": "git@github.com:acme/app.git"
        },
        "pusher": {"name": "octocat"},
        "sender": {"login": "octocat"}
    }))
    .unwrap()
}

struct Res {
    status: StatusCode,
    json: Value,
}

impl Fx {
    async fn deliver(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> Res {
        let mut req = Request::post("/webhooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery);
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        let res = router(self.st.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        Res {
            status,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn signed(&self, event: &str, delivery: &str, body: Vec<u8>) -> Res {
        let sig = signature_header(SECRET, &body);
        self.deliver(event, delivery, body, Some(sig)).await
    }

    async fn run_count(&self) -> usize {
        self.runs.list(None).await.unwrap().len()
    }

    async fn metrics(&self) -> String {
        let res = router(self.st.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[tokio::test]
async fn a_signed_push_creates_a_run_and_a_redelivery_creates_nothing() {
    let f = fx(Some(SECRET)).await;
    let r = f
        .signed("push", "d-1", push_body("refs/heads/main", false))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["deliveryId"], "d-1");
    assert_eq!(r.json["branch"], "main");
    assert_eq!(r.json["commit"], SHA);
    let runs = r.json["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "{}", r.json);
    assert_eq!(runs[0]["namespace"], "ci");
    assert_eq!(runs[0]["pipeline"], "app");
    let name = runs[0]["name"].as_str().unwrap().to_string();

    let run = f.runs.run("ci", &name).unwrap();
    assert_eq!(run.labels()[PIPELINE_LABEL], "app");
    assert_eq!(run.spec.pipeline, "build");
    assert_eq!(run.spec.runner_pool.as_deref(), Some("warm"));
    assert_eq!(
        run.spec.source,
        Source::Git(GitSource {
            url: "https://github.com/acme/app.git".into(),
            revision: SHA.into()
        })
    );
    let by = run.spec.triggered_by.unwrap();
    assert_eq!(
        (by.principal.as_str(), by.via, by.delivery_id.as_deref()),
        ("webhook:octocat", TriggerVia::Webhook, Some("d-1"))
    );
    // Its runner has a credential, like a triggered run's.
    assert!(f.runs.runner_token("ci", &name).is_some());

    // GitHub's "Redeliver": same id, same answer, no second run.
    let again = f
        .signed("push", "d-1", push_body("refs/heads/main", false))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_eq!(again.json["runs"], json!(runs));
    assert_eq!(again.json["redelivery"], true);
    assert_eq!(f.run_count().await, 1);

    // The same signed push re-posted under a new delivery id (the id is not signed): the same
    // answer, no new run (it would get the Pipeline's secrets).
    let replay = f
        .signed("push", "d-2", push_body("refs/heads/main", false))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.json);
    assert_eq!(replay.json["runs"], json!(runs));
    assert_eq!(replay.json["deliveryId"], "d-1");
    assert_eq!(replay.json["redelivery"], true);
    assert_eq!(f.run_count().await, 1);

    let m = f.metrics().await;
    assert!(
        m.contains("sparkwing_api_webhook_runs_created_total 1"),
        "{m}"
    );
    assert!(
        m.contains("sparkwing_api_webhook_redeliveries_total 2"),
        "{m}"
    );
    assert!(
        m.contains("sparkwing_api_webhook_deliveries_total 3"),
        "{m}"
    );
}

#[tokio::test]
async fn the_delivery_record_survives_a_restart() {
    let first = fx(Some(SECRET)).await;
    let r = first
        .signed("push", "d-9", push_body("refs/heads/main", false))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A new API process (or another replica) on the same stores and runs.
    let st = ApiState::new(
        first.stores.reopen().await,
        first.runs.clone(),
        ApiConfig::default(),
    )
    .with_webhooks(Webhooks::new(
        Some(SECRET.to_vec()),
        Arc::new(MemoryPipelines::new(vec![pipeline("app", &["main"])])),
    ));
    let g = Fx {
        st,
        runs: first.runs.clone(),
        stores: TestStore::new().await,
    };
    let again = g
        .signed("push", "d-9", push_body("refs/heads/main", false))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["runs"], r.json["runs"]);
    assert_eq!(g.run_count().await, 1);
}

#[tokio::test]
async fn signatures_are_checked_before_anything_else() {
    let f = fx(Some(SECRET)).await;
    let body = push_body("refs/heads/main", false);
    // Missing, wrong secret, other body, malformed: 401, nothing created.
    for sig in [
        None,
        Some(signature_header(b"wrong", &body)),
        Some(signature_header(SECRET, b"{}")),
        Some("sha256=nothex".to_string()),
    ] {
        let r = f.deliver("push", "d-1", body.clone(), sig.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{sig:?}: {}", r.json);
        assert_eq!(r.json["error"], "unauthorized");
    }
    // Even an unparseable body is a 401 when unsigned: it is never parsed.
    let r = f.deliver("push", "d-1", b"not json".to_vec(), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.run_count().await, 0);
    assert!(f
        .metrics()
        .await
        .contains("sparkwing_api_webhook_rejected_total 5"));
}

#[tokio::test]
async fn without_a_secret_every_delivery_is_a_500_saying_how_to_configure_it() {
    let f = fx(None).await;
    let body = push_body("refs/heads/main", false);
    for sig in [None, Some(signature_header(SECRET, &body))] {
        let r = f.deliver("push", "d-1", body.clone(), sig).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.json["error"], "webhook_not_configured");
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.contains("--webhook-secret-file"), "{msg}");
    }
    assert_eq!(f.run_count().await, 0);
}

#[tokio::test]
async fn ping_ignored_pushes_malformed_payloads_and_big_bodies() {
    let f = fx(Some(SECRET)).await;
    let r = f
        .signed(
            "ping",
            "p-1",
            br#"{"zen":"Design for failure.","hook_id":1}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (StatusCode::OK, json!({"pong": true}))
    );

    for (event, body, want) in [
        ("push", push_body("refs/tags/v1.0", false), "tag push"),
        ("push", push_body("refs/heads/main", true), "deleted"),
        (
            "push",
            push_body("refs/heads/feature/x", false),
            "matching branch",
        ),
        ("issues", b"{}".to_vec(), "not handled"),
    ] {
        let r = f.signed(event, "i-1", body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{want}: {}", r.json);
        assert!(
            r.json["ignored"].as_str().unwrap().contains(want),
            "{want}: {}",
            r.json
        );
    }
    let mut other_repo: Value =
        serde_json::from_slice(&push_body("refs/heads/main", false)).unwrap();
    other_repo["repository"] = json!({"clone_url": "https://github.com/acme/elsewhere.git"});
    let r = f
        .signed("push", "i-2", serde_json::to_vec(&other_repo).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.json["ignored"]
        .as_str()
        .unwrap()
        .contains("no Pipeline for repository"));

    // Signed but malformed: 400.
    for body in [
        b"not json".to_vec(),
        b"{\"ref\":\"refs/heads/main\"}".to_vec(),
    ] {
        let r = f.signed("push", "m-1", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
        assert!(r.json["message"]
            .as_str()
            .unwrap()
            .contains("malformed push payload"));
    }
    // A release branch matches `release/*`.
    let r = f
        .signed("push", "r-1", push_body("refs/heads/release/1.0", false))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(f.run_count().await, 1);

    // Over 1 MiB: 413 before anything else.
    let big = vec![b' '; (1 << 20) + 1];
    let r = f.signed("push", "b-1", big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json["error"], "payload_too_large");
}

#[tokio::test]
async fn a_push_delivered_again_after_the_window_is_a_new_run() {
    let mut f = fx(Some(SECRET)).await;
    let mut config = (*f.st.config).clone();
    config.push_replay_window = std::time::Duration::ZERO;
    f.st.config = Arc::new(config);
    let first = f
        .signed("push", "w-1", push_body("refs/heads/main", false))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.json);
    let second = f
        .signed("push", "w-2", push_body("refs/heads/main", false))
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.json);
    assert_ne!(
        second.json["runs"][0]["name"],
        first.json["runs"][0]["name"]
    );
    assert_eq!(f.run_count().await, 2);
    // Another branch at the same commit is another push.
    let f = fx(Some(SECRET)).await;
    f.signed("push", "b-1", push_body("refs/heads/main", false))
        .await;
    let other = f
        .signed("push", "b-2", push_body("refs/heads/release/1.0", false))
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.json);
}

const HEAD_SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

/// A `pull_request` delivery's body as GitHub sends it (trimmed of fields Sparkwing does not
/// read); `head_repo` is the head's `owner/name` (a fork when not `acme/app`).
fn pull_request_body(action: &str, number: u64, head_sha: &str, head_repo: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": action,
        "number": number,
        "pull_request": {
            "id": 1,
            "number": number,
            "state": "open",
            "locked": false,
            "title": "Amazing new feature",
            "user": {"login": "hubot"},
            "head": {
                "label": "hubot:new-topic",
                "ref": "new-topic",
                "sha": head_sha,
                "user": {"login": "hubot"},
                "repo": {
                    "id": 1296270,
                    "full_name": head_repo,
                    "html_url": format!("https://github.com/{head_repo}"),
                    "clone_url": format!("https://github.com/{head_repo}.git"),
                    "ssh_url": format!("git@github.com:{head_repo}.git")
                }
            },
            "base": {
                "label": "acme:main",
                "ref": "main",
                "sha": SHA,
                "repo": {
                    "id": 1296269,
                    "full_name": "acme/app",
                    "html_url": "https://github.com/acme/app",
                    "clone_url": "https://github.com/acme/app.git",
                    "ssh_url": "git@github.com:acme/app.git"
                }
            }
        },
        "repository": {"id": 1296269, "full_name": "acme/app", "clone_url": "https://github.com/acme/app.git"},
        "sender": {"login": "hubot"}
    }))
    .unwrap()
}

fn pr_pipeline(name: &str, trigger: PullRequestTrigger) -> Pipeline {
    let mut p = pipeline(name, &[]);
    p.spec.triggers.push = None;
    p.spec.triggers.pull_request = Some(trigger);
    p.spec.secrets = vec!["deploy-key".into()];
    p
}

async fn fx_with(pipelines: Vec<Pipeline>) -> Fx {
    let stores = TestStore::new().await;
    let runs = Arc::new(MemoryRuns::new());
    let st = ApiState::new(stores.store.clone(), runs.clone(), ApiConfig::default()).with_webhooks(
        Webhooks::new(
            Some(SECRET.to_vec()),
            Arc::new(MemoryPipelines::new(pipelines)),
        ),
    );
    Fx { st, runs, stores }
}

#[tokio::test]
async fn pull_request_deliveries_start_runs_of_the_head_and_closed_is_ignored() {
    let f = fx_with(vec![pr_pipeline(
        "app-pr",
        PullRequestTrigger {
            branches: vec!["main".into()],
            ..PullRequestTrigger::default()
        },
    )])
    .await;
    let r = f
        .signed(
            "pull_request",
            "pr-1",
            pull_request_body("opened", 1347, HEAD_SHA, "acme/app"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["pullRequest"], 1347);
    assert_eq!(r.json["branch"], "main");
    assert_eq!(r.json["commit"], HEAD_SHA);
    let name = r.json["runs"][0]["name"].as_str().unwrap().to_string();
    let run = f.runs.run("ci", &name).unwrap();
    assert_eq!(
        run.spec.source,
        Source::Git(GitSource {
            url: "https://github.com/acme/app.git".into(),
            revision: HEAD_SHA.into()
        })
    );
    let a = run.annotations();
    assert_eq!(a["sparkwing.dev/pull-request"], "1347");
    assert_eq!(a["sparkwing.dev/base-branch"], "main");
    assert_eq!(a["sparkwing.dev/commit"], HEAD_SHA);
    assert_eq!(run.spec.secrets, ["deploy-key"]);
    assert!(f.runs.runner_token("ci", &name).is_some());

    // The same event again under a new id: a replay, nothing new.
    let replay = f
        .signed(
            "pull_request",
            "pr-2",
            pull_request_body("opened", 1347, HEAD_SHA, "acme/app"),
        )
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.json);
    assert_eq!(replay.json["redelivery"], true);

    let closed = f
        .signed(
            "pull_request",
            "pr-3",
            pull_request_body("closed", 1347, HEAD_SHA, "acme/app"),
        )
        .await;
    assert_eq!(closed.status, StatusCode::ACCEPTED, "{}", closed.json);
    assert_eq!(
        closed.json["ignored"],
        "pull request #1347 action \"closed\" starts no run (only opened, synchronize, reopened)"
    );
    assert_eq!(f.run_count().await, 1);
    // Signed like a push: an unsigned pull request is refused before it is read.
    let unsigned = f
        .deliver(
            "pull_request",
            "pr-4",
            pull_request_body("opened", 1, HEAD_SHA, "acme/app"),
            None,
        )
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_fork_pull_request_runs_without_secrets_or_warm_runner() {
    let f = fx_with(vec![pr_pipeline("app-pr", PullRequestTrigger::default())]).await;
    let r = f
        .signed(
            "pull_request",
            "pr-fork",
            pull_request_body("opened", 8, HEAD_SHA, "mallory/app"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let name = r.json["runs"][0]["name"].as_str().unwrap();
    let run = f.runs.run("ci", name).unwrap();
    assert_eq!(run.annotations()["sparkwing.dev/fork"], "true");
    assert!(run.spec.secrets.is_empty());
    assert_eq!(run.spec.runner_pool, None);
    assert_eq!(
        run.spec.source,
        Source::Git(GitSource {
            url: "https://github.com/mallory/app.git".into(),
            revision: HEAD_SHA.into()
        })
    );
}

#[tokio::test]
async fn a_newer_push_to_a_pull_request_cancels_the_older_run() {
    let cancel = |on| PullRequestTrigger {
        cancel_in_progress: on,
        ..PullRequestTrigger::default()
    };
    let f = fx_with(vec![
        pr_pipeline("app-pr", cancel(true)),
        pr_pipeline("app-keep", cancel(false)),
    ])
    .await;
    let first = f
        .signed(
            "pull_request",
            "pr-a",
            pull_request_body("opened", 5, HEAD_SHA, "acme/app"),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.json);
    let names: Vec<String> = first.json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    // runs[0] is app-keep, runs[1] app-pr (namespace, then name).
    f.runs.set_phase("ci", &names[1], RunPhase::Running);
    f.runs.set_phase("ci", &names[0], RunPhase::Running);
    let newer = "1111111111111111111111111111111111111111";
    let second = f
        .signed(
            "pull_request",
            "pr-b",
            pull_request_body("synchronize", 5, newer, "acme/app"),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.json);
    assert_eq!(
        second.json["cancelled"],
        json!([{"namespace": "ci", "name": names[1]}])
    );
    assert_eq!(
        f.runs.run("ci", &names[1]).unwrap().spec.cancel,
        Some(CancelMode::Cancelled)
    );
    assert_eq!(f.runs.run("ci", &names[0]).unwrap().spec.cancel, None);
    assert_eq!(f.run_count().await, 4);
}

#[tokio::test]
async fn a_push_whose_files_miss_every_path_filter_is_ignored_with_the_reasons() {
    let mut docs = pipeline("docs", &["main"]);
    docs.spec.triggers.push.as_mut().unwrap().paths = vec!["docs/**".into()];
    let mut code = pipeline("code", &["main"]);
    code.spec.triggers.push.as_mut().unwrap().paths_ignore = vec!["**/*.md".into()];
    let f = fx_with(vec![docs, code]).await;
    let body = |files: &[&str]| {
        let mut v: Value = serde_json::from_slice(&push_body("refs/heads/main", false)).unwrap();
        v["commits"] = json!([{"id": SHA, "added": files, "removed": [], "modified": []}]);
        serde_json::to_vec(&v).unwrap()
    };
    let r = f.signed("push", "p-1", body(&["README.md"])).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(
        r.json["ignored"],
        "no Pipeline of repository https://github.com/acme/app.git matches the changed files of the push to \"main\": ci/code: every changed file matches pathsIgnore [\"**/*.md\"]; ci/docs: no changed file matches paths [\"docs/**\"]"
    );
    let r = f.signed("push", "p-2", body(&["src/lib.rs"])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["runs"][0]["pipeline"], "code");
    assert_eq!(
        r.json["skipped"],
        json!([{"namespace": "ci", "pipeline": "docs", "reason": "no changed file matches paths [\"docs/**\"]"}])
    );
    assert_eq!(f.run_count().await, 1);
}

/// GitHub's `GET /repos/{o}/{r}/pulls/{n}/files` on loopback, answering `files`; returns its URL
/// and the requests' paths and Authorization headers.
async fn files_api(
    files: Vec<&'static str>,
) -> (String, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
            let s = s.clone();
            let files = files.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                s.lock().unwrap().push((uri.to_string(), auth));
                let listed: Vec<Value> = files
                    .iter()
                    .map(|f| json!({"sha": "bbcd538c8e72b8c175046e27cc8f907076331401", "filename": f, "status": "modified", "additions": 1, "deletions": 0, "changes": 1}))
                    .collect();
                axum::Json(Value::Array(listed))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn a_pull_requests_files_are_listed_through_github_for_its_path_filters() {
    let mut api = pr_pipeline(
        "api",
        PullRequestTrigger {
            paths: vec!["api/**".into()],
            ..PullRequestTrigger::default()
        },
    );
    api.spec.github = Some(sparkwing_crds::pipeline::GitHubSettings {
        secret_ref: Some("github".into()),
    });
    let (url, seen) = files_api(vec!["web/index.html", "README.md"]).await;
    let stores = TestStore::new().await;
    let runs = Arc::new(MemoryRuns::new());
    let pipelines = Arc::new(MemoryPipelines::new(vec![api]));
    pipelines.set_credentials(
        "github",
        crate::github::Credentials::Token("ghp_files".into()),
    );
    let client = crate::github::GitHubClient::new(&url, crate::github::Backoff::default()).unwrap();
    let st = ApiState::new(stores.store.clone(), runs.clone(), ApiConfig::default())
        .with_webhooks(Webhooks::new(Some(SECRET.to_vec()), pipelines).with_github(client));
    let f = Fx { st, runs, stores };
    let r = f
        .signed(
            "pull_request",
            "pr-files",
            pull_request_body("opened", 12, HEAD_SHA, "acme/app"),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(
        r.json["ignored"],
        "no Pipeline of repository https://github.com/acme/app.git matches the changed files of pull request #12: ci/api: no changed file matches paths [\"api/**\"]"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            "/repos/acme/app/pulls/12/files?per_page=100&page=1".to_string(),
            "Bearer ghp_files".to_string()
        )]
    );
    assert_eq!(f.run_count().await, 0);
}

/// Two replicas of the API (two states, one pair of stores, one cluster) receive copies of one
/// push under different delivery ids at the same time: its runs are created once, and both
/// answer with them.
#[tokio::test]
async fn a_push_replayed_to_two_replicas_at_once_creates_its_runs_once() {
    let a = fx(Some(SECRET)).await;
    let pipelines = Arc::new(MemoryPipelines::new(vec![
        pipeline("app", &["main", "release/*"]),
        pipeline("app-nightly", &["nightly"]),
    ]));
    let b = Fx {
        st: ApiState::new(a.st.store.clone(), a.runs.clone(), ApiConfig::default())
            .with_webhooks(Webhooks::new(Some(SECRET.to_vec()), pipelines)),
        runs: a.runs.clone(),
        stores: TestStore::new().await,
    };
    for round in 0..5 {
        let git_ref = format!("refs/heads/release/{round}");
        let (da, db) = (format!("a-{round}"), format!("b-{round}"));
        let (ra, rb) = tokio::join!(
            a.signed("push", &da, push_body(&git_ref, false)),
            b.signed("push", &db, push_body(&git_ref, false)),
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CREATED],
            "{} / {}",
            ra.json,
            rb.json
        );
        assert_eq!(ra.json["runs"], rb.json["runs"], "round {round}");
        assert_eq!(ra.json["runs"].as_array().unwrap().len(), 1);
        assert_eq!(a.run_count().await, round + 1, "round {round}");
    }
}
