//! Router tests: `oneshot` requests against [`router`] with [`MemoryRuns`] and a temp data dir.

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
use super::*;

struct Fx {
    st: ApiState,
    runs: Arc<MemoryRuns>,
    _dir: tempfile::TempDir,
    admin: String,
    trigger: String,
    reader: String,
}

fn fx_with(config: ApiConfig) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(MemoryRuns::new());
    let st = ApiState::open(dir.path(), runs.clone(), config).unwrap();
    let mk = |p: &str, s: &[&str]| {
        st.tokens
            .create(
                &st.storage,
                p,
                s.iter().map(|s| s.to_string()).collect(),
                None,
            )
            .unwrap()
            .0
    };
    let admin = mk("root", &["admin"]);
    let trigger = mk("alice@example.com", &["runs:trigger", "runs:read"]);
    let reader = mk("bob", &["runs:read"]);
    Fx {
        st,
        runs,
        _dir: dir,
        admin,
        trigger,
        reader,
    }
}

fn fx() -> Fx {
    fx_with(ApiConfig::default())
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

#[tokio::test]
async fn api_incremental_upload_sends_only_missing_blobs() {
    let f = fx();
    let files = [
        ("src/main.rs", "fn main() {}"),
        ("README.md", "hi"),
        ("b", "hi"),
    ];
    let mut m = manifest(&files);
    m["files"]
        .as_array_mut()
        .unwrap()
        .push(json!({"path": "src/link", "symlink": "../README.md"}));
    let r = f
        .json(Method::POST, "/api/v1/uploads", &f.trigger, m.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let first = r.json();
    // Two distinct contents: "hi" is one blob.
    assert_eq!(first["missing"].as_array().unwrap().len(), 2);
    assert_eq!(first["files"], 4);
    for (_, c) in &files[..2] {
        let r = f
            .put_blob(&f.trigger, &sha256_hex(c.as_bytes()), c.as_bytes())
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // A blob sent twice is stored once.
    let r = f.put_blob(&f.trigger, &sha256_hex(b"hi"), b"hi").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["created"], false);

    // The unchanged tree, entries in another order: same id, nothing missing.
    m["files"].as_array_mut().unwrap().reverse();
    let r = f.json(Method::POST, "/api/v1/uploads", &f.trigger, m).await;
    assert_eq!(r.json()["id"], first["id"]);
    assert_eq!(r.json()["missing"], json!([]));

    let id = first["id"].as_str().unwrap();
    let r = f.get(&format!("/api/v1/uploads/{id}"), &f.trigger).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["manifest"]["files"][0]["path"], "README.md");
    let sha = sha256_hex(b"fn main() {}");
    let r = f
        .get(&format!("/api/v1/uploads/{id}/blobs/{sha}"), &f.trigger)
        .await;
    assert_eq!(r.body, "fn main() {}");
    let metrics = f.call(Method::GET, "/metrics", None, Body::empty()).await;
    assert!(
        metrics.body.contains("sparkwing_api_uploads_total 2"),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("sparkwing_api_blobs_written_total 2"));
    assert!(metrics
        .body
        .contains("route=\"/api/v1/blobs/{sha}\",code=\"201\"} 2"));
}

#[tokio::test]
async fn api_blob_with_wrong_hash_is_refused() {
    let f = fx();
    let r = f.put_blob(&f.trigger, &sha256_hex(b"one"), b"two").await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "hash_mismatch",
        "expected sha256",
    );
    assert!(!f.st.storage.has_blob(&sha256_hex(b"one")));
    assert!(!f.st.storage.has_blob(&sha256_hex(b"two")));
    let r = f
        .call(
            Method::PUT,
            &format!("/api/v1/blobs/{}", sha256_hex(b"x")),
            Some(&f.trigger),
            Body::from("not gzip"),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "gzip");
    let r = f.put_blob(&f.trigger, "not-a-sha", b"x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn api_upload_paths_that_escape_the_root_are_refused() {
    let f = fx();
    let h = sha256_hex(b"x");
    let cases = [
        json!({"path": "../x", "mode": 420, "size": 1, "sha256": h}),
        json!({"path": "/etc/passwd", "mode": 420, "size": 1, "sha256": h}),
        json!({"path": "a/../../b", "mode": 420, "size": 1, "sha256": h}),
        json!({"path": "a/link", "symlink": "../../outside"}),
        json!({"path": "link", "symlink": "/etc"}),
    ];
    for entry in cases {
        let r = f
            .json(
                Method::POST,
                "/api/v1/uploads",
                &f.trigger,
                json!({"files": [entry]}),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_manifest", "");
    }
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            json!({"files": [
                {"path": "a", "mode": 420, "size": 1, "sha256": h},
                {"path": "a", "mode": 420, "size": 1, "sha256": h},
            ]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_manifest", "duplicate");
}

#[tokio::test]
async fn api_oversized_bodies_are_413() {
    let mut config = ApiConfig::default();
    config.limits.blob_body = 256;
    config.limits.json_body = 64;
    config.limits.manifest_body = 128;
    config.limits.manifest.max_file_size = 1000;
    let f = fx_with(config);
    // Compressed body over the limit (random-ish content does not compress).
    let noise: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = f.put_blob(&f.trigger, &sha256_hex(&noise), &noise).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "compressed blob exceeds the limit of 256 bytes",
    );
    // A small body that decompresses past the file size limit.
    let zeros = vec![0u8; 5000];
    let r = f.put_blob(&f.trigger, &sha256_hex(&zeros), &zeros).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "decompressed blob",
    );
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "x".repeat(100), "source": {"git": {"url": "u", "revision": "r"}}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "trigger request",
    );
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&[("a", "1"), ("b", "2"), ("c", "3")]),
        )
        .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "manifest",
    );
}

#[tokio::test]
async fn api_manifest_limits_are_enforced() {
    let mut config = ApiConfig::default();
    config.limits.manifest.max_files = 2;
    let f = fx_with(config);
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&[("a", "1"), ("b", "2"), ("c", "3")]),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_manifest",
        "too many entries",
    );
}

#[tokio::test]
async fn api_trigger_fills_triggered_by_from_the_token() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let mut req = Request::post("/api/v1/runs")
        .header("authorization", format!("Bearer {}", f.trigger))
        .header("x-forwarded-for", "6.6.6.6")
        .body(Body::from(
            json!({"pipeline": "Build App", "args": {"env": "prod"},
                   "source": {"upload": {"id": id}}})
            .to_string(),
        ))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 40000))));
    let r = f.send(req).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let (ns, name) = (
        v["namespace"].as_str().unwrap(),
        v["name"].as_str().unwrap(),
    );
    assert_eq!(ns, "default");
    assert!(name.starts_with("build-app-"), "{name}");
    let run = f.runs.run(ns, name).unwrap();
    let by = run.spec.triggered_by.unwrap();
    assert_eq!(by.principal, "alice@example.com");
    assert_eq!(by.host.as_deref(), Some("10.1.2.3"));
    assert_eq!(by.via, TriggerVia::Cli);
    assert_eq!(run.spec.args["env"], "prod");
    assert!(matches!(run.spec.source, Source::Upload(ref u) if u.id == id));

    // The client cannot write triggeredBy.
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"upload": {"id": id}},
                   "triggeredBy": {"principal": "mallory", "via": "webhook"}}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "triggeredBy");

    // An upload that lacks blobs, or does not exist, cannot be run.
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&[("z", "zz")]),
        )
        .await;
    let partial = r.json()["id"].as_str().unwrap().to_string();
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"upload": {"id": partial}}}),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "lacks 1 blobs");
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"upload": {"id": "nope"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A local path needs admin.
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"local": {"path": "/src"}}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope admin",
    );
    // The spec's own checks apply.
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "timeout": "soon",
                   "source": {"git": {"url": "https://x/y.git", "revision": "main"}}}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "spec.timeout");
}

#[tokio::test]
async fn api_trigger_records_the_parent_of_a_sub_pipeline() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "child", "source": {"upload": {"id": id}},
                   "parent": {"run": "run-20261127-163356-1a2b3c", "job": "deploy", "host": "laptop.local"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let (ns, name) = (
        v["namespace"].as_str().unwrap().to_string(),
        v["name"].as_str().unwrap().to_string(),
    );
    let run = f.runs.run(&ns, &name).unwrap();
    let a = run.metadata.annotations.as_ref().unwrap();
    assert_eq!(a["sparkwing.dev/parent-run"], "run-20261127-163356-1a2b3c");
    assert_eq!(a["sparkwing.dev/parent-job"], "deploy");
    assert_eq!(a["sparkwing.dev/parent-host"], "laptop.local");
    let got = f
        .get(&format!("/api/v1/runs/{ns}/{name}"), &f.trigger)
        .await
        .json();
    assert_eq!(
        got["parent"],
        json!({"run": "run-20261127-163356-1a2b3c", "job": "deploy", "host": "laptop.local"}),
        "{got}"
    );
    let list = f.get("/api/v1/runs", &f.trigger).await.json();
    assert_eq!(list["runs"][0]["parent"]["job"], "deploy", "{list}");

    // A parent on a cluster (`ns/name`), without a host.
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "child", "source": {"upload": {"id": id}},
                   "parent": {"run": "ci/parent-1a2b3c4d", "job": "deploy"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let name2 = r.json()["name"].as_str().unwrap().to_string();
    let got = f
        .get(&format!("/api/v1/runs/{ns}/{name2}"), &f.trigger)
        .await
        .json();
    assert_eq!(
        got["parent"],
        json!({"run": "ci/parent-1a2b3c4d", "job": "deploy"}),
        "{got}"
    );
    // A run without a parent shows none.
    let (ns3, name3) = f.trigger_run(&id).await;
    let got = f
        .get(&format!("/api/v1/runs/{ns3}/{name3}"), &f.trigger)
        .await
        .json();
    assert!(got.get("parent").is_none(), "{got}");

    // Bad parents are refused before anything is created.
    let count = || async {
        f.get("/api/v1/runs", &f.trigger).await.json()["runs"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    let long = "r".repeat(254);
    for (parent, want) in [
        (json!({"run": "", "job": "deploy"}), "invalid parent.run"),
        (json!({"run": long, "job": "deploy"}), "invalid parent.run"),
        (
            json!({"run": "a/b/c", "job": "deploy"}),
            "invalid parent.run",
        ),
        (
            json!({"run": "../x", "job": "deploy"}),
            "invalid parent.run",
        ),
        (
            json!({"run": "run 1", "job": "deploy"}),
            "invalid parent.run",
        ),
        (json!({"run": "run-1", "job": "de/ploy"}), "parent.job"),
        (json!({"run": "run-1", "job": ""}), "parent.job"),
        (
            json!({"run": "run-1", "job": "deploy", "host": "a b"}),
            "invalid parent.host",
        ),
        (
            json!({"run": "run-1", "job": "deploy", "host": ""}),
            "invalid parent.host",
        ),
        (json!({"run": "run-1", "job": "deploy", "pid": 7}), "pid"),
        (json!({"run": "run-1"}), "job"),
    ] {
        let r = f
            .json(
                Method::POST,
                "/api/v1/runs",
                &f.trigger,
                json!({"pipeline": "child", "source": {"upload": {"id": id}}, "parent": parent}),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", want);
    }
    assert_eq!(count().await, before);
}

#[tokio::test]
async fn api_trigger_checks_run_settings_before_creating() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let trigger = |extra: Value| {
        let mut body = json!({"pipeline": "deploy", "source": {"upload": {"id": id}}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        f.json(Method::POST, "/api/v1/runs", &f.trigger, body)
    };
    let count = || async {
        f.get("/api/v1/runs", &f.trigger).await.json()["runs"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    for (extra, want) in [
        (json!({"timeout": "soon"}), "spec.timeout: "),
        (
            json!({"timeout": "0s"}),
            "timeout must be greater than zero",
        ),
        (
            json!({"maxAttempts": 0}),
            "maxAttempts must be between 1 and",
        ),
        (
            json!({"maxAttempts": 1000}),
            "maxAttempts must be between 1 and",
        ),
        (
            json!({"ttlSecondsAfterFinished": -1}),
            "ttlSecondsAfterFinished must not be negative",
        ),
    ] {
        let r = trigger(extra.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", want);
    }
    assert_eq!(count().await, before, "nothing created for bad settings");
    // Good ones reach the PipelineRun.
    let r =
        trigger(json!({"timeout": "30m", "maxAttempts": 1, "ttlSecondsAfterFinished": 60})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let run = f
        .runs
        .run(
            v["namespace"].as_str().unwrap(),
            v["name"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(run.spec.timeout.as_deref(), Some("30m"));
    assert_eq!(run.spec.max_attempts, 1);
    assert_eq!(run.spec.ttl_seconds_after_finished, Some(60));
}

#[tokio::test]
async fn api_trigger_records_the_pipeline_chain_and_refuses_cycles() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let trigger = |body: Value| f.json(Method::POST, "/api/v1/runs", &f.trigger, body);
    let r = trigger(
        json!({"pipeline": "deploy", "source": {"upload": {"id": id}},
                           "pipelineChain": ["ship", "build-2"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let run = f
        .runs
        .run(
            v["namespace"].as_str().unwrap(),
            v["name"].as_str().unwrap(),
        )
        .unwrap();
    let a = run.metadata.annotations.as_ref().unwrap();
    assert_eq!(a["sparkwing.dev/pipeline-chain"], "ship,build-2");
    // The runner reads it from the run view's PipelineRun.
    let got = f
        .get(
            &format!(
                "/api/v1/runs/{}/{}",
                v["namespace"].as_str().unwrap(),
                v["name"].as_str().unwrap()
            ),
            &f.trigger,
        )
        .await
        .json();
    assert_eq!(
        got["run"]["metadata"]["annotations"]["sparkwing.dev/pipeline-chain"], "ship,build-2",
        "{got}"
    );
    // An empty chain, or none, records nothing.
    for extra in [json!({"pipelineChain": []}), json!({})] {
        let mut body = json!({"pipeline": "deploy", "source": {"upload": {"id": id}}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = trigger(body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let v = r.json();
        let run = f
            .runs
            .run(
                v["namespace"].as_str().unwrap(),
                v["name"].as_str().unwrap(),
            )
            .unwrap();
        assert!(
            run.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key("sparkwing.dev/pipeline-chain")),
            "{:?}",
            run.metadata
        );
    }

    // A pipeline already in the chain, and bad chains, are refused before anything is created.
    let count = || async {
        f.get("/api/v1/runs", &f.trigger).await.json()["runs"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    let r = trigger(json!({"pipeline": "a", "source": {"upload": {"id": id}},
                           "pipelineChain": ["x", "a", "b"]}))
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "cycle of pipelines awaiting each other: a -> b -> a",
    );
    assert_eq!(
        r.json()["message"],
        "cycle of pipelines awaiting each other: a -> b -> a"
    );
    let deep: Vec<String> = (0..33).map(|i| format!("p{i}")).collect();
    let at_cap: Vec<String> = (0..32).map(|i| format!("p{i}")).collect();
    for (chain, want) in [
        (json!(deep), "at most 32"),
        (json!(["ok", "Upper"]), "invalid pipelineChain[1] \"Upper\""),
        (json!([""]), "invalid pipelineChain[0]"),
        (json!(["-x"]), "invalid pipelineChain[0]"),
        (json!(["a,b"]), "invalid pipelineChain[0]"),
        (json!(["a b"]), "invalid pipelineChain[0]"),
        (json!(["p".repeat(65)]), "invalid pipelineChain[0]"),
        (
            json!(["b", "c", "b"]),
            "pipelineChain: cycle of pipelines awaiting each other: b -> c -> b",
        ),
        (json!("a,b"), "expected a sequence"),
        (json!([1]), "expected a string"),
    ] {
        let r = trigger(
            json!({"pipeline": "deploy", "source": {"upload": {"id": id}},
                               "pipelineChain": chain}),
        )
        .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", want);
    }
    assert_eq!(count().await, before);
    // 32 deep is allowed.
    let r = trigger(
        json!({"pipeline": "deploy", "source": {"upload": {"id": id}},
                           "pipelineChain": at_cap}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test]
async fn api_bad_tokens_are_401_and_missing_scopes_403() {
    let f = fx();
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut req = Request::get("/api/v1/runs");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = f.send(req.body(Body::empty()).unwrap()).await;
        assert_error(
            &r,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        );
    }
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.reader,
            json!({"pipeline": "build", "source": {"git": {"url": "u", "revision": "r"}}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:trigger",
    );
    assert_eq!(r.json()["scope"], "runs:trigger");
    let r = f.get("/api/v1/admin/tokens", &f.trigger).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope admin",
    );
    let r = f
        .json(Method::POST, "/api/v1/uploads", &f.reader, manifest(&[]))
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:trigger",
    );
    // Health, readiness and metrics need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = f.call(Method::GET, path, None, Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    let r = f.get("/api/v1/whoami", &f.reader).await;
    assert_eq!(r.json()["principal"], "bob");
    assert_eq!(r.json()["scopes"], json!(["runs:read"]));
}

#[tokio::test]
async fn api_runner_credential_is_limited_to_its_run() {
    let f = fx();
    let mine = f.upload(&[("a", "mine")]).await;
    let other = f.upload(&[("b", "other")]).await;
    let (ns, name) = f.trigger_run(&mine).await;
    let (_, other_run) = f.trigger_run(&other).await;
    let runner = f
        .runs
        .runner_token(&ns, &name)
        .expect("runner token stored");
    assert!(runner.starts_with("swr_"));

    // Allowed: its upload, its logs, its job states, its run.
    let r = f.get(&format!("/api/v1/uploads/{mine}"), &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let sha = sha256_hex(b"mine");
    let r = f
        .get(&format!("/api/v1/uploads/{mine}/blobs/{sha}"), &runner)
        .await;
    assert_eq!(r.body, "mine");
    let batch = json!([{"job": "build", "seq": 1, "line": "hello"}]);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/logs"),
            &runner,
            batch.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/jobs/build"),
            &runner,
            json!({"state": "running"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &runner).await;
    assert_eq!(r.json()["jobs"]["build"]["state"], "running");

    // Refused: anything else, naming the scope.
    let r = f.get(&format!("/api/v1/uploads/{other}"), &runner).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:trigger",
    );
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{other_run}/logs"),
            &runner,
            batch.clone(),
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("missing scope run:{ns}/{other_run}"),
    );
    let r = f.get("/api/v1/runs", &runner).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:read",
    );
    let r = f
        .json(Method::POST, "/api/v1/uploads", &runner, manifest(&[]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/cancel"),
            Some(&runner),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Users with runs:trigger cannot write a run's logs either.
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/logs"),
            &f.trigger,
            batch,
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("missing scope run:{ns}/{name}"),
    );

    // Finishing archives the run and retires the credential.
    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            Some(&runner),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(f.st.storage.is_archived(&ns, &name));
    let r = f.get(&format!("/api/v1/uploads/{mine}"), &runner).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_revocation_applies_to_the_next_request() {
    let f = fx();
    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/tokens",
            &f.admin,
            json!({"principal": "ci", "scopes": ["runs:read"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let (token, id) = (v["token"].as_str().unwrap(), v["id"].as_str().unwrap());
    assert_eq!(f.get("/api/v1/runs", token).await.status, StatusCode::OK);

    // Only hashes are stored.
    let stored = std::fs::read_to_string(f.st.storage.root().join("tokens.json")).unwrap();
    assert!(!stored.contains(token));
    assert!(stored.contains(&sha256_hex(token.as_bytes())));

    let r = f.get("/api/v1/admin/tokens", &f.admin).await;
    let listed = r.json();
    let row = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(row["principal"], "ci");
    assert!(row.get("hash").is_none() && row.get("token").is_none());

    let r = f
        .call(
            Method::DELETE,
            &format!("/api/v1/admin/tokens/{id}"),
            Some(&f.admin),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = f.get("/api/v1/runs", token).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", "bearer");

    // Revocation survives a restart (the table is reloaded from disk).
    let reopened = TokenStore::open(&f.st.storage).unwrap();
    assert!(reopened.lookup(token).is_none());
    assert!(reopened.lookup(&f.admin).is_some());

    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/tokens",
            &f.admin,
            json!({"principal": "ci", "scopes": ["run:default/x"]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "valid scopes");
}

#[tokio::test]
async fn api_bootstrap_admin_token_from_file() {
    let f = fx();
    let path = f.st.storage.root().join("bootstrap");
    std::fs::write(&path, "swt_bootstrap-secret-0123456789\n").unwrap();
    assert!(f.st.bootstrap_admin_from_file(&path).unwrap());
    assert!(!f.st.bootstrap_admin_from_file(&path).unwrap());
    let r = f
        .get("/api/v1/whoami", "swt_bootstrap-secret-0123456789")
        .await;
    assert_eq!(r.json()["scopes"], json!(["admin"]));
    assert!(!f
        .st
        .bootstrap_admin_from_file(&f.st.storage.root().join("absent"))
        .unwrap());
    std::fs::write(&path, "short").unwrap();
    assert!(matches!(
        f.st.bootstrap_admin_from_file(&path),
        Err(ApiInitError::WeakBootstrapToken { .. })
    ));
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

#[tokio::test]
async fn api_log_ingest_is_idempotent_and_refuses_gaps() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();

    let r = post_logs(&f, &runner, &ns, &name, &[1, 2, 3]).await;
    assert_eq!(r.json(), json!({"accepted": 3, "duplicates": 0}));
    // The same batch again: a retry.
    let r = post_logs(&f, &runner, &ns, &name, &[1, 2, 3]).await;
    assert_eq!(r.json(), json!({"accepted": 0, "duplicates": 3}));
    // Overlapping, out of order.
    let r = post_logs(&f, &runner, &ns, &name, &[5, 2, 3, 4]).await;
    assert_eq!(r.json(), json!({"accepted": 2, "duplicates": 2}));
    // A gap: nothing of the batch is stored.
    let r = post_logs(&f, &runner, &ns, &name, &[6, 8]).await;
    assert_error(&r, StatusCode::CONFLICT, "log_gap", "expected seq 7, got 8");
    let r = post_logs(&f, &runner, &ns, &name, &[0]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = f
        .get(
            &format!("/api/v1/runs/{ns}/{name}/logs?job=build"),
            &f.reader,
        )
        .await;
    let seqs: Vec<u64> = r.json()["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let r = f
        .get(&format!("/api/v1/runs/{ns}/{name}/logs"), &f.reader)
        .await;
    assert_eq!(r.json(), json!({"jobs": ["build"]}));
    let r = f
        .get(
            &format!("/api/v1/runs/{ns}/{name}/logs?job=build&after=4"),
            &f.reader,
        )
        .await;
    assert_eq!(r.json()["lines"][0]["line"], "line 5");

    // A fresh process (no seq cache) continues from the stored file.
    let st2 = ApiState::open(f.st.storage.root(), f.runs.clone(), ApiConfig::default()).unwrap();
    let f2 = Fx {
        st: st2,
        runs: f.runs.clone(),
        _dir: tempfile::tempdir().unwrap(),
        admin: f.admin.clone(),
        trigger: f.trigger.clone(),
        reader: f.reader.clone(),
    };
    let r = post_logs(&f2, &runner, &ns, &name, &[5, 6]).await;
    assert_eq!(r.json(), json!({"accepted": 1, "duplicates": 1}));
}

#[tokio::test]
async fn api_follow_resumes_from_last_event_id_and_ends() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    post_logs(&f, &runner, &ns, &name, &[1, 2, 3]).await;
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);

    let req = Request::get(format!("/api/v1/runs/{ns}/{name}/logs/stream?job=build"))
        .header("authorization", format!("Bearer {}", f.reader))
        .header("last-event-id", "1")
        .body(Body::empty())
        .unwrap();
    let r = f.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!r.body.contains("id: 1\n"), "{}", r.body);
    let two = r.body.find("id: 2\n").expect("line 2");
    let three = r.body.find("id: 3\n").expect("line 3");
    let end = r.body.find("event: end").expect("end event");
    assert!(two < three && three < end, "{}", r.body);
    assert!(r.body.contains("\"line\":\"line 3\""), "{}", r.body);

    let r = f
        .get(
            &format!("/api/v1/runs/{ns}/{name}/logs/stream?job=build&after=2"),
            &f.reader,
        )
        .await;
    assert!(
        !r.body.contains("id: 2\n") && r.body.contains("id: 3\n"),
        "{}",
        r.body
    );
    let r = f
        .get(
            &format!("/api/v1/runs/{ns}/nope/logs/stream?job=build"),
            &f.reader,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_follow_streams_lines_posted_while_following() {
    let f = fx_with(ApiConfig {
        follow_poll: std::time::Duration::from_millis(20),
        ..ApiConfig::default()
    });
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    post_logs(&f, &runner, &ns, &name, &[1]).await;
    let req = Request::get(format!("/api/v1/runs/{ns}/{name}/logs/stream?job=build"))
        .header("authorization", format!("Bearer {}", f.reader))
        .body(Body::empty())
        .unwrap();
    let app = f.app();
    let follower = tokio::spawn(async move {
        let res = app.oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    post_logs(&f, &runner, &ns, &name, &[2]).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    f.runs.set_phase(&ns, &name, RunPhase::Failed);
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
        .await
        .expect("the follow ends with the run")
        .unwrap();
    assert!(
        body.contains("id: 1\n") && body.contains("id: 2\n"),
        "{body}"
    );
    assert!(body.contains("event: end"), "{body}");
}

#[tokio::test]
async fn api_archive_outlives_the_pipeline_run() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
    assert_eq!(r.json()["archived"], false);
    assert_eq!(r.json()["phase"], "Pending");

    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/cancel"),
            Some(&f.trigger),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(f.runs.run(&ns, &name).unwrap().spec.cancel.is_some());

    f.runs.set_phase(&ns, &name, RunPhase::Cancelled);
    let r = f.get("/api/v1/runs", &f.reader).await;
    assert_eq!(r.json()["runs"][0]["archived"], true);
    // ttlSecondsAfterFinished deletes the PipelineRun.
    f.runs.delete(&ns, &name);
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["live"].clone(), v["archived"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(v["phase"], "Cancelled");
    assert_eq!(v["triggeredBy"]["principal"], "alice@example.com");
    let r = f
        .get(&format!("/api/v1/runs?namespace={ns}"), &f.reader)
        .await;
    assert_eq!(r.json()["runs"][0]["name"], name.as_str());
    let r = f.get(&format!("/api/v1/runs/{ns}/never"), &f.reader).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "not found");
    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/runs/{ns}/never/cancel"),
            Some(&f.trigger),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_gc_removes_only_unreferenced_blobs() {
    let f = fx();
    let used = f.upload(&[("a", "shared"), ("b", "only-used")]).await;
    let (ns, name) = f.trigger_run(&used).await;
    let unused = f.upload(&[("a", "shared"), ("c", "only-unused")]).await;
    let gc = |grace: u64| {
        f.json(
            Method::POST,
            "/api/v1/admin/gc",
            &f.admin,
            json!({"graceSeconds": grace}),
        )
    };
    // Within the grace period everything stays.
    let r = gc(3600).await;
    assert_eq!(r.json()["blobsDeleted"], 0, "{}", r.body);

    let r = gc(0).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["blobsDeleted"], 1, "{v}");
    assert_eq!(v["uploadsDeleted"], 1, "{v}");
    let has = |c: &str| f.st.storage.has_blob(&sha256_hex(c.as_bytes()));
    assert!(has("shared") && has("only-used") && !has("only-unused"));
    assert!(f.st.storage.get_upload(&unused).unwrap().is_none());
    assert!(f.st.storage.get_upload(&used).unwrap().is_some());

    // Once the run is finished its upload may go too.
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = gc(0).await;
    assert_eq!(r.json()["blobsDeleted"], 2);
    assert!(!has("shared") && !has("only-used"));
    let r = f
        .json(Method::POST, "/api/v1/admin/gc", &f.trigger, json!({}))
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope admin",
    );
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

#[tokio::test]
async fn api_external_run_gets_its_token_and_records_its_end() {
    let f = fx();
    let (ns, name, token) = trigger_external(&f).await;
    assert!(token.starts_with("swr_"), "{token}");
    let run = f.runs.run(&ns, &name).unwrap();
    assert!(matches!(run.spec.source, Source::External(_)));
    assert_eq!(
        run.spec.triggered_by.as_ref().unwrap().principal,
        "alice@example.com"
    );
    // No Secret: nothing on the cluster runs it.
    assert_eq!(f.runs.runner_token(&ns, &name), None);
    // A run on the cluster gets no token in its answer.
    let id = f.upload(&[("a", "1")]).await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"upload": {"id": id}}}),
        )
        .await;
    assert!(r.json().get("runnerToken").is_none(), "{}", r.body);

    // The token posts the run's logs and job states.
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/logs"),
            &token,
            json!([{"job": "build", "seq": 1, "line": "hello"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/jobs/build"),
            &token,
            json!({"state": "succeeded"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);

    // The operator made it Running.
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let finish = format!("/api/v1/runs/{ns}/{name}/finish");
    // An external run's finish must say how it ended.
    for bad in [
        json!({}),
        json!({"phase": "Running"}),
        json!({"phase": "Done"}),
    ] {
        let r = f.json(Method::POST, &finish, &token, bad).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "");
    }
    let r = f
        .call(Method::POST, &finish, Some(&token), Body::empty())
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "phase");
    let r = f
        .json(
            Method::POST,
            &finish,
            &token,
            json!({"phase": "Failed", "message": "job test failed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["phase"], "Failed");
    let status = f.runs.run(&ns, &name).unwrap().status.unwrap();
    assert_eq!(status.phase, RunPhase::Failed);
    let cond = status.condition("Succeeded").unwrap();
    assert_eq!(
        (cond.reason.as_str(), cond.message.as_str()),
        ("Failed", "job test failed")
    );
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    // Archived with its end; the token is retired.
    assert!(f.st.storage.is_archived(&ns, &name));
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
    assert_eq!(r.json()["phase"], "Failed");
    assert_eq!(r.json()["jobs"]["build"]["state"], "succeeded");
    let r = f
        .json(Method::POST, &finish, &token, json!({"phase": "Succeeded"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_external_finish_keeps_an_end_already_recorded() {
    let f = fx();
    let (ns, name, token) = trigger_external(&f).await;
    // Cancelled (or timed out) by the operator before the executor finished.
    f.runs.set_phase(&ns, &name, RunPhase::Cancelled);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            &token,
            json!({"phase": "Succeeded"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["phase"], "Cancelled");
    assert_eq!(
        f.runs.run(&ns, &name).unwrap().status.unwrap().phase,
        RunPhase::Cancelled
    );
}

#[tokio::test]
async fn api_finish_body_is_ignored_for_runs_on_the_cluster() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            &runner,
            json!({"phase": "Succeeded", "message": "done"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The operator decides from the Job: the phase is untouched.
    assert_eq!(
        f.runs.run(&ns, &name).unwrap().status.unwrap().phase,
        RunPhase::Running
    );
}

#[test]
fn external_status_patch_is_a_guarded_apply_of_the_end_only() {
    use sparkwing_core::reconcile::run::record_external_end;
    use sparkwing_core::reconcile::status::{JobStatus, RunStatus};
    let prev = RunStatus {
        phase: RunPhase::Running,
        runner: Some("x".into()),
        attempts: 1,
        jobs: vec![JobStatus {
            name: "build".into(),
            state: "running".into(),
            ..JobStatus::default()
        }],
        ..RunStatus::default()
    };
    let end = record_external_end(&prev, RunPhase::Succeeded, "", 3, 1_000_000).unwrap();
    let body = runs::external_status_patch(&end, Some("17")).unwrap();
    assert_eq!(body["apiVersion"], "sparkwing.dev/v1alpha1");
    assert_eq!(body["kind"], "PipelineRun");
    assert_eq!(body["metadata"]["resourceVersion"], "17");
    let status = body["status"].as_object().unwrap();
    let mut keys: Vec<&str> = status.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "completionTime",
            "conditions",
            "observedGeneration",
            "phase",
            "startTime"
        ]
    );
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["conditions"][0]["reason"], "Succeeded");
    assert_eq!(status["observedGeneration"], 3);
}

#[tokio::test]
async fn jobs_left_open_by_a_lost_runner_end_with_the_run() {
    let f = fx();
    let up = f.upload(&[("a", "x")]).await;
    let (ns, name) = f.trigger_run(&up).await;
    for (job, state) in [
        ("build", "running"),
        ("test", "pending"),
        ("lint", "success"),
    ] {
        let r = f
            .json(
                Method::PUT,
                &format!("/api/v1/runs/{ns}/{name}/jobs/{job}"),
                &f.admin,
                json!({"state": state}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }
    // While the run goes on, the runner's word stands.
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let jobs = f
        .get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader)
        .await
        .json()["jobs"]
        .clone();
    assert_eq!(jobs["build"]["state"], "running");
    assert!(jobs["build"].get("settled").is_none());

    // The runner died: open jobs end with the run, finished ones keep their state.
    f.runs.set_phase(&ns, &name, RunPhase::Failed);
    let jobs = f
        .get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader)
        .await
        .json()["jobs"]
        .clone();
    assert_eq!(jobs["build"]["state"], "failed");
    assert_eq!(jobs["build"]["settled"], true);
    assert_eq!(jobs["test"]["state"], "failed");
    let why = jobs["build"]["reason"].as_str().unwrap();
    assert!(why.contains("the run ended Failed"), "{why}");
    assert_eq!(jobs["lint"]["state"], "success");
    assert!(jobs["lint"].get("settled").is_none());

    f.runs.set_phase(&ns, &name, RunPhase::Cancelled);
    let jobs = f
        .get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader)
        .await
        .json()["jobs"]
        .clone();
    assert_eq!(jobs["build"]["state"], "cancelled");
}

fn pool_token(f: &Fx, ns: &str, pool: &str) -> String {
    f.st.tokens
        .create(
            &f.st.storage,
            &format!("pool:{ns}/{pool}"),
            vec![format!("pool:{ns}/{pool}")],
            Some(auth::RunnerGrant::default()),
        )
        .unwrap()
        .0
}

#[tokio::test]
async fn api_pool_token_is_exchanged_for_the_claiming_runs_token() {
    let f = fx();
    let mine = f.upload(&[("a", "mine")]).await;
    let (ns, name) = f.trigger_run(&mine).await;
    let (_, other_run) = f.trigger_run(&mine).await;
    let pool = pool_token(&f, &ns, "warm");
    let claims = format!("/api/v1/pools/{ns}/warm/claims");
    let ask = |pod: &str, run: &str| json!({"pod": pod, "run": run});

    // An idle pod of the pool: not claimed yet.
    f.runs.set_pod_claim(
        &ns,
        "warm-1",
        PodClaim {
            pool: "warm".into(),
            pool_uid: "uid-warm".into(),
            claim: None,
        },
    );
    let r = f
        .json(Method::POST, &claims, &pool, ask("warm-1", &name))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "is not claimed (yet)");

    // Claimed for this run: the run's runner token, which reads its run and upload and posts
    // its logs, and nothing of another run.
    f.runs.set_pod_claim(
        &ns,
        "warm-1",
        PodClaim {
            pool: "warm".into(),
            pool_uid: "uid-warm".into(),
            claim: Some((name.clone(), 2)),
        },
    );
    let r = f
        .json(Method::POST, &claims, &pool, ask("warm-1", &name))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["attempt"], 2);
    let runner = v["token"].as_str().unwrap().to_string();
    assert!(runner.starts_with("swr_"), "{runner}");
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f.get(&format!("/api/v1/uploads/{mine}"), &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/logs"),
            &runner,
            json!([{"job": "build", "seq": 1, "line": "hello"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .get(&format!("/api/v1/runs/{ns}/{other_run}"), &runner)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "runs:read");

    // Asking for another run than the claim names.
    let r = f
        .json(Method::POST, &claims, &pool, ask("warm-1", &other_run))
        .await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        &format!("is claimed by run {name}, not {other_run}"),
    );

    // A pod of another pool: 403 naming that pool's scope.
    f.runs.set_pod_claim(
        &ns,
        "fast-1",
        PodClaim {
            pool: "fast".into(),
            pool_uid: "uid-fast".into(),
            claim: Some((name.clone(), 1)),
        },
    );
    let r = f
        .json(Method::POST, &claims, &pool, ask("fast-1", &name))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "pool:");
    assert_eq!(r.json()["scope"], format!("pool:{ns}/fast"));

    // The token of another pool, a runner token, a reader: 403 naming this pool's scope.
    let fast = pool_token(&f, &ns, "fast");
    for token in [&fast, &runner, &f.reader, &f.trigger] {
        let r = f
            .json(Method::POST, &claims, token, ask("warm-1", &name))
            .await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "pool:");
        assert_eq!(r.json()["scope"], format!("pool:{ns}/warm"));
    }
    // The token of an earlier pool of the same name (another uid): refused.
    let (stale, _) =
        f.st.tokens
            .create(
                &f.st.storage,
                "pool",
                vec![format!("pool:{ns}/warm")],
                Some(auth::RunnerGrant {
                    upload: None,
                    pool_uid: Some("uid-deleted-warm".into()),
                }),
            )
            .unwrap();
    let r = f
        .json(Method::POST, &claims, &stale, ask("warm-1", &name))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "pool:");
    // The pool token gives nothing else: no run, no logs, no trigger.
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &pool).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "runs:read");
    let r = f.get("/api/v1/runs", &pool).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // No such pod; a malformed body.
    let r = f
        .json(Method::POST, &claims, &pool, ask("gone", &name))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "pod");
    let r = f
        .json(Method::POST, &claims, &pool, json!({"pod": "warm-1"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // A finished run gets no new token.
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = f
        .json(Method::POST, &claims, &pool, ask("warm-1", &name))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "already finished");
}

#[test]
fn pod_claims_are_read_from_the_pods_owner_labels_and_annotations() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "warm-1", "namespace": "ci",
            "labels": {"sparkwing.dev/claimed-by": "r1"},
            "annotations": {"sparkwing.dev/run": "r1", "sparkwing.dev/attempt": "3"},
            "ownerReferences": [
                {"apiVersion": "sparkwing.dev/v1alpha1", "kind": "RunnerPool", "name": "warm",
                 "uid": "u1", "controller": true},
                {"apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun", "name": "r1",
                 "uid": "u2"}
            ]
        }
    }))
    .unwrap();
    assert_eq!(
        runs::pod_claim_of(&pod),
        Some(PodClaim {
            pool: "warm".into(),
            pool_uid: "u1".into(),
            claim: Some(("r1".into(), 3))
        })
    );
    // Annotations without the claim label (or the reverse) are not a claim.
    let mut idle = pod.clone();
    idle.metadata.labels = None;
    assert_eq!(runs::pod_claim_of(&idle).unwrap().claim, None);
    // A pod no pool controls is nobody's.
    let mut stray = pod;
    stray.metadata.owner_references.as_mut().unwrap()[0].controller = None;
    assert_eq!(runs::pod_claim_of(&stray), None);
}

fn blob_batch(blobs: &[&[u8]]) -> Vec<u8> {
    let mut stream = Vec::new();
    for b in blobs {
        stream.extend_from_slice(format!("{} {}\n", sha256_hex(b), b.len()).as_bytes());
        stream.extend_from_slice(b);
    }
    stream
}

#[tokio::test]
async fn a_blob_batch_stores_every_checked_blob_once_and_refuses_bad_frames() {
    let f = fx();
    let files = [("a", "alpha"), ("b", "beta\n"), ("c", "")];
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&files),
        )
        .await;
    assert_eq!(
        r.json()["missing"].as_array().unwrap().len(),
        3,
        "{}",
        r.body
    );
    let post = |body: Vec<u8>| {
        f.call(
            Method::POST,
            "/api/v1/blobs",
            Some(&f.trigger),
            Body::from(body),
        )
    };

    // A frame whose content does not match its hash: nothing of the batch is stored.
    let mut bad = blob_batch(&[b"alpha"]);
    bad.extend_from_slice(format!("{} 4\nbeta", sha256_hex(b"other")).as_bytes());
    let r = post(gzip(&bad)).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "hash_mismatch", "");
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&files),
        )
        .await;
    assert_eq!(
        r.json()["missing"].as_array().unwrap().len(),
        3,
        "{}",
        r.body
    );

    // Malformed frames name what is wrong.
    for (stream, why) in [
        (b"nonsense without a newline".to_vec(), "header line"),
        (
            format!("{} 99\nshort", sha256_hex(b"short")).into_bytes(),
            "ends inside",
        ),
        (b"ABC 1\nx".to_vec(), "64 lowercase hex"),
        (format!("{} -1\n", sha256_hex(b"")).into_bytes(), "decimal"),
    ] {
        let r = post(gzip(&stream)).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", why);
    }
    let r = post(b"not gzip".to_vec()).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "gzip");

    // The good batch: all three stored, then a resend creates none.
    let batch = gzip(&blob_batch(&[b"alpha", b"beta\n", b""]));
    let r = post(batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json(), json!({"blobs": 3, "created": 3, "bytes": 10}));
    let r = post(batch).await;
    assert_eq!(r.json(), json!({"blobs": 3, "created": 0, "bytes": 0}));
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&files),
        )
        .await;
    assert_eq!(r.json()["missing"], json!([]), "{}", r.body);

    // Scope and size limits as for single blobs.
    let r = f
        .call(
            Method::POST,
            "/api/v1/blobs",
            Some(&f.reader),
            Body::from(gzip(b"")),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "runs:trigger");
    let small = fx_with(ApiConfig {
        limits: Limits {
            blob_body: 64,
            ..Limits::default()
        },
        ..ApiConfig::default()
    });
    let r = small
        .call(
            Method::POST,
            "/api/v1/blobs",
            Some(&small.trigger),
            Body::from(vec![0u8; 65]),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
}

#[tokio::test]
async fn api_runner_reports_its_runs_branch_check_and_only_its_own() {
    use crate::api::runs::{BRANCHES_IN_SYNC_ANNOTATION, BRANCH_DRIFT_ANNOTATION};
    use sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION;
    let f = fx();
    let upload = f.upload(&[("a", "drift")]).await;
    let (ns, name) = f.trigger_run(&upload).await;
    let (_, other) = f.trigger_run(&upload).await;
    // Both play webhook runs: their Pipeline's push branches.
    for n in [&name, &other] {
        let mut run = f.runs.run(&ns, n).unwrap();
        run.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(PUSH_BRANCHES_ANNOTATION.to_string(), "main".to_string());
        f.runs.insert(run);
    }
    let annotations = |run: &str| f.runs.run(&ns, run).unwrap().metadata.annotations.unwrap();
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let path = format!("/api/v1/runs/{ns}/{name}/branch-check");
    let before = f.runs.run(&ns, &name).unwrap();
    let drift = "the Pipeline's push branches [main] differ from on.push.branches [main, release/*] in the committed sparkwing.yaml";

    // Drifted: both annotations, nothing else touched.
    let r = f
        .json(
            Method::PUT,
            &path,
            &runner,
            json!({"inSync": false, "message": drift}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let after = f.runs.run(&ns, &name).unwrap();
    let a = after.metadata.annotations.clone().unwrap();
    assert_eq!(a[BRANCHES_IN_SYNC_ANNOTATION], "false");
    assert_eq!(a[BRANCH_DRIFT_ANNOTATION], drift);
    assert_eq!(a[PUSH_BRANCHES_ANNOTATION], "main");
    assert_eq!(
        a.len(),
        before.metadata.annotations.as_ref().unwrap().len() + 2
    );
    assert_eq!(
        serde_json::to_value(&after.spec).unwrap(),
        serde_json::to_value(&before.spec).unwrap()
    );
    assert_eq!(after.status, before.status);
    assert_eq!(after.metadata.labels, before.metadata.labels);

    // In sync (a later attempt, say): the drift message goes.
    let r = f
        .json(Method::PUT, &path, &runner, json!({"inSync": true}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let a = annotations(&name);
    assert_eq!(a[BRANCHES_IN_SYNC_ANNOTATION], "true");
    assert!(!a.contains_key(BRANCH_DRIFT_ANNOTATION), "{a:?}");

    // Bad bodies: 400, nothing recorded.
    for bad in [
        json!({"inSync": "maybe"}),
        json!({"inSync": false}),
        json!({"inSync": false, "message": "  "}),
        json!({"inSync": false, "message": "two\nlines"}),
        json!({"inSync": false, "message": "x".repeat(5000)}),
        json!({"inSync": true, "message": "why"}),
        json!({"inSync": true, "extra": 1}),
        json!({}),
    ] {
        let r = f.json(Method::PUT, &path, &runner, bad.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "branch check");
    }
    let r = f
        .call(Method::PUT, &path, Some(&runner), Body::from("not json"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let a = annotations(&name);
    assert_eq!(a[BRANCHES_IN_SYNC_ANNOTATION], "true");

    // Another run's runner, and people without the run's scope: 403, nothing recorded.
    let other_runner = f.runs.runner_token(&ns, &other).unwrap();
    let r = f
        .json(
            Method::PUT,
            &path,
            &other_runner,
            json!({"inSync": false, "message": drift}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("missing scope run:{ns}/{name}"),
    );
    for token in [&f.trigger, &f.reader] {
        let r = f
            .json(Method::PUT, &path, token, json!({"inSync": true}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    let a = annotations(&name);
    assert_eq!(a[BRANCHES_IN_SYNC_ANNOTATION], "true");
    let o = annotations(&other);
    assert!(!o.contains_key(BRANCHES_IN_SYNC_ANNOTATION), "{o:?}");

    // A run not started by a push has nothing to compare: 409. No run: 404.
    let (_, triggered) = f.trigger_run(&upload).await;
    let token = f.runs.runner_token(&ns, &triggered).unwrap();
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{triggered}/branch-check"),
            &token,
            json!({"inSync": true}),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "push-branches");
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/no-such-run/branch-check"),
            &f.admin,
            json!({"inSync": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

/// Tests of issue 13 (the API under attack and under load), one or more per item.
mod hardening;
