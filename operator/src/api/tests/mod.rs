//! Router tests: `oneshot` requests against [`router`] with [`MemoryRuns`] and the stores of
//! [`TestStore`] (embedded in a temp directory, or PostgreSQL + S3: one suite, two backends).
//! The fixture and helpers are here; the tests are by route group.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use flate2::write::GzEncoder;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_crds::pipeline_run::{Source, TriggerVia};
use tower::ServiceExt;

use super::manifest::sha256_hex;
use super::test_backend::TestStore;
use super::*;

struct Fx {
    st: ApiState,
    runs: Arc<MemoryRuns>,
    stores: TestStore,
    admin: String,
    trigger: String,
    reader: String,
}

async fn fx_with(config: ApiConfig) -> Fx {
    let stores = TestStore::new().await;
    let runs = Arc::new(MemoryRuns::new());
    let st = ApiState::new(stores.store.clone(), runs.clone(), config);
    let admin = token(&st, "root", &["admin"]).await;
    let trigger = token(&st, "alice@example.com", &["runs:trigger", "runs:read"]).await;
    let reader = token(&st, "bob", &["runs:read"]).await;
    Fx {
        st,
        runs,
        stores,
        admin,
        trigger,
        reader,
    }
}

async fn fx() -> Fx {
    fx_with(ApiConfig::default()).await
}

/// A token of `principal` with `scopes`.
async fn token(st: &ApiState, principal: &str, scopes: &[&str]) -> String {
    st.store
        .create_token(
            principal,
            scopes.iter().map(|s| s.to_string()).collect(),
            None,
        )
        .await
        .unwrap()
        .0
}

struct Res {
    status: StatusCode,
    body: String,
}

impl Res {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Fx {
    fn app(&self) -> Router {
        router(self.st.clone())
    }

    async fn send(&self, req: Request<Body>) -> Res {
        let res = self.app().oneshot(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Res {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Body) -> Res {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.send(req.body(body).unwrap()).await
    }

    async fn json(&self, method: Method, path: &str, token: &str, body: Value) -> Res {
        self.call(method, path, Some(token), Body::from(body.to_string()))
            .await
    }

    async fn get(&self, path: &str, token: &str) -> Res {
        self.call(Method::GET, path, Some(token), Body::empty())
            .await
    }

    async fn put_blob(&self, token: &str, sha: &str, content: &[u8]) -> Res {
        self.call(
            Method::PUT,
            &format!("/api/v1/blobs/{sha}"),
            Some(token),
            Body::from(gzip(content)),
        )
        .await
    }

    /// Upload `files` fully; returns the upload id.
    async fn upload(&self, files: &[(&str, &str)]) -> String {
        let r = self
            .json(
                Method::POST,
                "/api/v1/uploads",
                &self.trigger,
                manifest(files),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        for (_, content) in files {
            let sha = sha256_hex(content.as_bytes());
            let r = self.put_blob(&self.trigger, &sha, content.as_bytes()).await;
            assert!(r.status.is_success(), "{}", r.body);
        }
        r.json()["id"].as_str().unwrap().to_string()
    }

    async fn trigger_run(&self, upload: &str) -> (String, String) {
        let r = self
            .json(
                Method::POST,
                "/api/v1/runs",
                &self.trigger,
                json!({"pipeline": "build", "source": {"upload": {"id": upload}}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let v = r.json();
        (
            v["namespace"].as_str().unwrap().to_string(),
            v["name"].as_str().unwrap().to_string(),
        )
    }
}

/// A triggered, running run whose runner reported `build` done and the gate `approve-prod`
/// waiting (and a pending gate `approve-eu`); its runner token.
async fn waiting_run(f: &Fx) -> (String, String, String) {
    let up = f.upload(&[("a", "x")]).await;
    let (ns, name) = f.trigger_run(&up).await;
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    for (job, state) in [
        ("build", json!({"state": "success", "attempt": 1})),
        (
            "approve-prod",
            json!({"state": "waiting", "attempt": 1, "gate": true, "gateMessage": "Ship it?"}),
        ),
        (
            "approve-eu",
            json!({"state": "pending", "attempt": 0, "gate": true}),
        ),
    ] {
        let r = f
            .json(
                Method::PUT,
                &format!("/api/v1/runs/{ns}/{name}/jobs/{job}"),
                &runner,
                state,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }
    (ns, name, runner)
}

/// Play a webhook delivery or a schedule: run `ns/name` was started from the Pipeline `pipeline`.
fn started_from(f: &Fx, ns: &str, name: &str, pipeline: &str) {
    use kube::ResourceExt;
    let mut run = f.runs.run(ns, name).unwrap();
    run.annotations_mut().insert(
        crate::labels::PIPELINE_ANNOTATION.to_string(),
        pipeline.to_string(),
    );
    f.runs.insert(run);
}

/// The Pipeline `ns/deploy` with `approvers`.
fn deploy(ns: &str, approvers: &[&str]) -> sparkwing_crds::pipeline::Pipeline {
    use sparkwing_crds::pipeline::{Pipeline, PipelineSpec};
    let mut p = Pipeline::new(
        "deploy",
        PipelineSpec {
            repository: "https://example.com/acme/app.git".into(),
            pipeline: "deploy".into(),
            approvers: approvers.iter().map(|a| a.to_string()).collect(),
            ..PipelineSpec::default()
        },
    );
    p.metadata.namespace = Some(ns.into());
    p
}

fn gzip(content: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(content).unwrap();
    e.finish().unwrap()
}

fn manifest(files: &[(&str, &str)]) -> Value {
    json!({"files": files.iter().map(|(p, c)| json!({
        "path": p, "mode": 0o644, "size": c.len(), "sha256": sha256_hex(c.as_bytes())
    })).collect::<Vec<_>>()})
}

fn assert_error(r: &Res, status: StatusCode, code: &str, message_part: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"], code, "{}", r.body);
    assert!(
        v["message"].as_str().unwrap().contains(message_part),
        "want {message_part:?} in {}",
        r.body
    );
}

async fn post_logs(f: &Fx, token: &str, ns: &str, name: &str, seqs: &[u64]) -> Res {
    let batch: Vec<Value> = seqs
        .iter()
        .map(|s| json!({"job": "build", "seq": s, "ts": "2026-01-01T00:00:00Z", "line": format!("line {s}")}))
        .collect();
    f.json(
        Method::POST,
        &format!("/api/v1/runs/{ns}/{name}/logs"),
        token,
        Value::Array(batch),
    )
    .await
}

async fn trigger_external(f: &Fx) -> (String, String, String) {
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"external": {}}, "timeout": "1h"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    (
        v["namespace"].as_str().unwrap().to_string(),
        v["name"].as_str().unwrap().to_string(),
        v["runnerToken"]
            .as_str()
            .expect("an external run's token in the answer")
            .to_string(),
    )
}

async fn pool_token(f: &Fx, ns: &str, pool: &str) -> String {
    f.st.store
        .create_token(
            &format!("pool:{ns}/{pool}"),
            vec![format!("pool:{ns}/{pool}")],
            Some(crate::tokens::RunnerGrant::default()),
        )
        .await
        .unwrap()
        .0
}

fn blob_batch(blobs: &[&[u8]]) -> Vec<u8> {
    let mut stream = Vec::new();
    for b in blobs {
        stream.extend_from_slice(format!("{} {}\n", sha256_hex(b), b.len()).as_bytes());
        stream.extend_from_slice(b);
    }
    stream
}

// By route group (named so as not to shadow the API's own `auth` and `runs` modules).
mod admin;
mod concurrency;
mod dashboard;
mod data_dir_migration;
mod gates;
/// Tests of issue 13 (the API under attack and under load), one or more per item.
mod hardening;
mod job_pods;
mod logs;
mod memo;
mod pools;
mod rerun;
mod run_life;
mod storage;
mod tokens;
mod trigger;
mod uploads;
