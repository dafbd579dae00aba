//! The API under attack and under load: metrics cardinality, token table, log durability and
//! range reads, paging, decompression budget, timeouts, webhook replays, manifest sizes, file
//! modes, temp files.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// ---- item 3: metrics cardinality ----

#[tokio::test]
async fn unknown_methods_are_one_metrics_series() {
    let f = fx();
    for i in 0..40 {
        // A valid method token nobody uses, long and new each time.
        let method = format!("X{}{}", "Q".repeat(2000), i);
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri("/api/v1/runs")
            .body(Body::empty())
            .unwrap();
        let r = f.send(req).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.body);
    }
    assert_eq!(f.st.metrics.request_series(), 1);
    let text = f.st.metrics.render();
    assert!(
        text.contains(
            "sparkwing_api_requests_total{method=\"other\",route=\"/api/v1/runs\",code=\"405\"} 40"
        ),
        "{text}"
    );
    assert!(text.len() < 8192, "{} bytes of metrics", text.len());
}

// ---- item 9: bearer scheme, file modes, temp files ----

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let f = fx();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let req = Request::builder()
            .uri("/api/v1/whoami")
            .header("authorization", format!("{scheme} {}", f.reader))
            .body(Body::empty())
            .unwrap();
        let r = f.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}: {}", r.body);
    }
    for value in [
        format!("Basic {}", f.reader),
        "Bearer ".into(),
        f.reader.clone(),
    ] {
        let req = Request::builder()
            .uri("/api/v1/whoami")
            .header("authorization", value.clone())
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            f.send(req).await.status,
            StatusCode::UNAUTHORIZED,
            "{value}"
        );
    }
}

#[tokio::test]
async fn tokens_blobs_and_logs_are_private_files() {
    let f = fx();
    let id = f.upload(&[("a", "secret source")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let r = post_logs(&f, &runner, &ns, &name, &[1]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let root = f.st.storage.root().to_path_buf();
    let sha = sha256_hex(b"secret source");
    for path in [
        root.join("tokens.json"),
        root.join("blobs").join(&sha[..2]).join(&sha),
        root.join("logs").join(&ns).join(&name).join("build.jsonl"),
        root.join("uploads").join(format!("{id}.json")),
    ] {
        assert_eq!(mode_of(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test]
async fn temp_files_of_interrupted_writes_are_collected() {
    let f = fx();
    let tmp = f.st.storage.root().join("tmp");
    let stale = tmp.join("0123456789abcdef");
    std::fs::write(&stale, b"half a blob").unwrap();
    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/gc",
            &f.admin,
            json!({"graceSeconds": 3600}),
        )
        .await;
    assert_eq!(r.json()["tmpDeleted"], 0, "{}", r.body);
    assert!(stale.exists(), "a young temp file may be a write under way");
    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/gc",
            &f.admin,
            json!({"graceSeconds": 0}),
        )
        .await;
    assert_eq!(r.json()["tmpDeleted"], 1, "{}", r.body);
    assert!(!stale.exists());
    // A restart removes them all: no write of the new process is under way yet.
    std::fs::write(&stale, b"half a manifest").unwrap();
    Storage::open(f.st.storage.root()).unwrap();
    assert!(!stale.exists());
}

// ---- item 1: a runner never starts before its credential exists ----

#[tokio::test]
async fn a_runs_token_secret_exists_before_the_run() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    // The operator starts a runner as soon as the run exists: its Secret must be there then.
    assert_eq!(f.runs.token_stored_at_create(&ns, &name), Some(true));
    assert!(f.runs.token_adopted(&ns, &name), "the run owns its Secret");
    let token = f.runs.runner_token(&ns, &name).unwrap();
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn a_run_that_cannot_be_created_leaves_no_credential() {
    let f = fx();
    let id = f.upload(&[("a", "1")]).await;
    // A backend that refuses to create the run after its Secret was stored.
    struct Refusing(Arc<MemoryRuns>);
    impl RunBackend for Refusing {
        fn create(
            &self,
            _: sparkwing_crds::pipeline_run::PipelineRun,
        ) -> futures::future::BoxFuture<
            '_,
            Result<sparkwing_crds::pipeline_run::PipelineRun, BackendError>,
        > {
            Box::pin(async { Err(BackendError::Other("refused".into())) })
        }
        fn get<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<sparkwing_crds::pipeline_run::PipelineRun>, BackendError>,
        > {
            self.0.get(ns, name)
        }
        fn list<'a>(
            &'a self,
            ns: Option<&'a str>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Vec<sparkwing_crds::pipeline_run::PipelineRun>, BackendError>,
        > {
            self.0.list(ns)
        }
        fn cancel<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
            mode: sparkwing_crds::pipeline_run::CancelMode,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<sparkwing_crds::pipeline_run::PipelineRun>, BackendError>,
        > {
            self.0.cancel(ns, name, mode)
        }
        fn write_external_status<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
            status: &'a sparkwing_core::reconcile::status::RunStatus,
            rv: Option<&'a str>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<sparkwing_crds::pipeline_run::PipelineRun>, BackendError>,
        > {
            self.0.write_external_status(ns, name, status, rv)
        }
        fn annotate<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
            a: &'a std::collections::BTreeMap<String, Option<String>>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<sparkwing_crds::pipeline_run::PipelineRun>, BackendError>,
        > {
            self.0.annotate(ns, name, a)
        }
        fn store_runner_token<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
            token: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<(), BackendError>> {
            self.0.store_runner_token(ns, name, token)
        }
        fn adopt_runner_token<'a>(
            &'a self,
            run: &'a sparkwing_crds::pipeline_run::PipelineRun,
        ) -> futures::future::BoxFuture<'a, Result<(), BackendError>> {
            self.0.adopt_runner_token(run)
        }
        fn delete_runner_token<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<(), BackendError>> {
            self.0.delete_runner_token(ns, name)
        }
        fn pod_claim<'a>(
            &'a self,
            ns: &'a str,
            pod: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<PodClaim>, BackendError>> {
            self.0.pod_claim(ns, pod)
        }
    }
    let mut st = f.st.clone();
    st.runs = Arc::new(Refusing(f.runs.clone()));
    let res = router(st)
        .oneshot(
            Request::post("/api/v1/runs")
                .header("authorization", format!("Bearer {}", f.trigger))
                .body(Body::from(
                    json!({"pipeline": "build", "source": {"upload": {"id": id}}}).to_string(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let runner_tokens: Vec<_> =
        f.st.tokens
            .list()
            .unwrap()
            .into_iter()
            .filter(|t| t.principal.starts_with("runner:") && !t.revoked)
            .collect();
    assert!(runner_tokens.is_empty(), "{runner_tokens:?}");
    assert!(f.runs.list(None).await.unwrap().is_empty());
}
