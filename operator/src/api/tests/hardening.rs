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
    let f = fx().await;
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
    let f = fx().await;
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
    let f = fx().await;
    let id = f.upload(&[("a", "secret source")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let r = post_logs(&f, &runner, &ns, &name, &[1]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Files exist on the embedded stores only (PostgreSQL and S3 keep their own).
    let Some(root) = f.stores.data_dir() else {
        return;
    };
    let sha = sha256_hex(b"secret source");
    for path in [
        root.join("state.db"),
        root.join("blobs").join(&sha[..2]).join(&sha),
        root.join("logs").join(&ns).join(&name).join("build.jsonl"),
        root.join("manifests").join(&id),
    ] {
        assert_eq!(mode_of(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test]
async fn temp_files_of_interrupted_writes_are_collected() {
    let f = fx().await;
    let Some(root) = f.stores.data_dir() else {
        // An object store has no temp files: an object is whole or absent.
        return;
    };
    let stale = root.join("tmp").join("0123456789abcdef");
    std::fs::write(&stale, b"half a blob").unwrap();
    // A write under way is never collected by GC...
    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/gc",
            &f.admin,
            json!({"graceSeconds": 0}),
        )
        .await;
    assert_eq!(r.json()["tmpDeleted"], 0, "{}", r.body);
    assert!(stale.exists(), "a temp file may be a write under way");
    // ...but a restart removes them all: no write of the new process is under way yet.
    f.stores.reopen().await;
    assert!(!stale.exists());
}

// ---- item 1: a runner never starts before its credential exists ----

#[tokio::test]
async fn a_runs_token_secret_exists_before_the_run() {
    let f = fx().await;
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
    let f = fx().await;
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
            Result<Vec<std::sync::Arc<sparkwing_crds::pipeline_run::PipelineRun>>, BackendError>,
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
        f.st.store
            .list_tokens()
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.principal.starts_with("runner:") && !t.revoked)
            .collect();
    assert!(runner_tokens.is_empty(), "{runner_tokens:?}");
    assert!(f.runs.list(None).await.unwrap().is_empty());
}

// ---- a real API process (items 2, 6 and 7): this test binary, run as a child ----

/// The environment variable that makes [`child_api_server`] serve (its data and address dir).
const CHILD_DIR_ENV: &str = "SPARKWING_TEST_API_CHILD_DIR";

/// Not a test of its own: the API server the process tests start as their child (this test
/// binary run with `--ignored --exact` and [`CHILD_DIR_ENV`] set). It serves `<dir>/data` with
/// the admin token in `<dir>/admin-token`, writes its address to `<dir>/addr`, and serves until
/// it is killed.
#[test]
#[ignore = "the child server of the process tests"]
fn child_api_server() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV).map(std::path::PathBuf::from) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let st = rt
        .block_on(ApiState::open(
            dir.join("data"),
            Arc::new(MemoryRuns::new()),
            ApiConfig::default(),
        ))
        .unwrap();
    rt.block_on(st.bootstrap_admin_from_file(&dir.join("admin-token")))
        .unwrap();
    let addr = spawn_serving(&rt, st, "127.0.0.1:0").unwrap();
    std::fs::write(dir.join("addr.tmp"), addr.to_string()).unwrap();
    std::fs::rename(dir.join("addr.tmp"), dir.join("addr")).unwrap();
    rt.block_on(std::future::pending::<()>());
}

/// An API process started from this test binary; killed (SIGKILL) when dropped.
struct ApiProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

const ADMIN_TOKEN: &str = "swt_process-test-admin-token-0123456789abcdef";

impl ApiProcess {
    fn start(dir: &std::path::Path) -> ApiProcess {
        std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
        let _ = std::fs::remove_file(dir.join("addr"));
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "api::tests::hardening::child_api_server",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut p = ApiProcess {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(a) = std::fs::read_to_string(dir.join("addr")) {
                p.addr = a.parse().unwrap();
                return p;
            }
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("the API process exited: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the API process did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `kill -9`, and wait for it.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One HTTP/1.1 request with the admin token; `(status, body)`.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        http_request(self.addr, method, path, ADMIN_TOKEN, body)
    }

    /// A line of `/proc/<pid>/<file>` (`VmHWM:`, `rchar:`) as a number.
    fn proc_value(&self, file: &str, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/{file}", self.pid())).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/{file}"))
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out[head_end + 4..].to_vec())
}

fn log_batch(job: &str, seqs: std::ops::RangeInclusive<u64>, line: &str) -> Vec<u8> {
    let batch: Vec<Value> = seqs
        .map(|s| json!({"job": job, "seq": s, "ts": "", "line": format!("{line} {s}")}))
        .collect();
    serde_json::to_vec(&batch).unwrap()
}

// ---- item 2: a torn log line ----

#[test]
fn a_torn_log_line_after_kill_9_does_not_break_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let logs = "/api/v1/runs/ci/build-1/logs";
    let api = ApiProcess::start(dir.path());
    let (status, body) = api.request("POST", logs, &log_batch("build", 1..=3, "line"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    api.kill();
    // What a kill -9 in the middle of an append leaves: part of line 4, no newline.
    let file = dir.path().join("data/logs/ci/build-1/build.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        br#"{"seq":4,"ts":"","stream":"stdout","line":"torn"#,
    )
    .unwrap();
    drop(f);

    let api = ApiProcess::start(dir.path());
    // The runner retries the batch it got no answer for.
    let (status, body) = api.request("POST", logs, &log_batch("build", 4..=5, "line"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["accepted"], 2, "{v}");
    let (status, body) = api.request("GET", &format!("{logs}?job=build"), b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let lines: Vec<_> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["seq"].as_u64().unwrap(),
                l["line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        (1..=5)
            .map(|s| (s, format!("line {s}")))
            .collect::<Vec<_>>()
    );
    let (status, _) = api.request("POST", logs, &log_batch("build", 6..=6, "line"));
    assert_eq!(status, 200);
    // Acknowledged lines survive the next kill -9 (they were synced before the answer).
    api.kill();
    let api = ApiProcess::start(dir.path());
    let (_, body) = api.request("GET", &format!("{logs}?job=build&after=5"), b"");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["lines"][0]["line"], "line 6", "{v}");
}

#[tokio::test]
async fn one_bad_log_line_never_fails_a_read() {
    let f = fx().await;
    let r = post_logs(&f, &f.admin, "ci", "run-1", &[1, 2]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A damaged file (written before this process): a line that is not JSON in the middle.
    let Some(root) = f.stores.data_dir() else {
        // Object stores keep whole objects: no line is ever damaged in place.
        return;
    };
    let file = root.join("logs/ci/run-2/build.jsonl");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        concat!(
            r#"{"seq":1,"ts":"","stream":"stdout","line":"one"}"#,
            "\n",
            r#"{"seq":2,"ts":"","stream":"stdout","line":"tw{"seq":2,"ts":"","stream":"stdout","line":"two"}"#,
            "\n",
            r#"{"seq":3,"ts":"","stream":"stdout","line":"three"}"#,
            "\n",
        ),
    )
    .unwrap();
    let r = f
        .get("/api/v1/runs/ci/run-2/logs?job=build", &f.admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seqs: Vec<u64> = r.json()["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 3]);
    let r = post_logs(&f, &f.admin, "ci", "run-2", &[4]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

// ---- item 6: log reads by range, the cap ----

#[tokio::test]
async fn log_reads_are_pages_from_the_index() {
    let f = fx().await;
    let n = sparkwing_state::files::INDEX_STRIDE * 10 + 7;
    for chunk in (1..=n).collect::<Vec<_>>().chunks(1000) {
        let r = post_logs(&f, &f.admin, "ci", "big", chunk).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let seqs = |r: &Res| -> Vec<u64> {
        r.json()["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect()
    };
    let r = f
        .get(
            &format!("/api/v1/runs/ci/big/logs?job=build&after={}", n - 3),
            &f.admin,
        )
        .await;
    assert_eq!(seqs(&r), [n - 2, n - 1, n]);
    assert_eq!(r.json()["more"], false);
    let r = f
        .get(
            "/api/v1/runs/ci/big/logs?job=build&after=300&limit=50",
            &f.admin,
        )
        .await;
    assert_eq!(seqs(&r), (301..=350).collect::<Vec<_>>());
    assert_eq!(r.json()["more"], true);
    let r = f
        .get("/api/v1/runs/ci/big/logs?job=build&limit=0", &f.admin)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "limit 0");
    // A fresh process (no index yet) answers the same from the stored log.
    let store = f.stores.reopen().await;
    let lines = store
        .content
        .read_log_after(
            &sparkwing_state::LogKey::new("ci", "big", "build"),
            n - 1,
            10,
        )
        .await
        .unwrap();
    assert_eq!(lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [n]);
}

#[tokio::test]
async fn a_jobs_log_is_capped_with_a_marker() {
    let mut config = ApiConfig::default();
    config.limits.log_job_bytes = 2000;
    let f = fx_with(config).await;
    let r = post_logs(&f, &f.admin, "ci", "chatty", &(1..=100).collect::<Vec<_>>()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    let accepted = v["accepted"].as_u64().unwrap();
    assert!(accepted > 0 && accepted < 100, "{v}");
    assert_eq!(accepted + v["dropped"].as_u64().unwrap(), 100, "{v}");
    let key = sparkwing_state::LogKey::new("ci", "chatty", "build");
    let size =
        f.st.store
            .meta
            .log_index(&key)
            .await
            .unwrap()
            .unwrap()
            .bytes;
    // The cap, plus the marker line.
    assert!(size <= 2000 + 200, "{size} bytes");
    // Later lines are acknowledged (no gap, no retry loop) and dropped.
    let r = post_logs(&f, &f.admin, "ci", "chatty", &[101, 102]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["dropped"], 2, "{}", r.body);
    let r = f
        .get("/api/v1/runs/ci/chatty/logs?job=build", &f.admin)
        .await;
    let lines = r.json()["lines"].as_array().unwrap().clone();
    let last = lines.last().unwrap();
    assert_eq!(last["seq"].as_u64().unwrap(), accepted + 1, "{last}");
    assert_eq!(last["stream"], "stderr");
    assert!(
        last["line"]
            .as_str()
            .unwrap()
            .contains("reached its limit of 2000 bytes"),
        "{last}"
    );
    // The cap is known again after a restart (or on another replica).
    let store = f.stores.reopen().await;
    let r = sparkwing_state::ingest(
        store.meta.as_ref(),
        store.content.as_ref(),
        &key,
        vec![sparkwing_state::LogLine::new(103, "x")],
        2000,
    )
    .await
    .unwrap();
    assert_eq!((r.accepted, r.dropped), (0, 1));
}

#[test]
fn a_tail_read_of_a_big_log_reads_in_proportion_to_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiProcess::start(dir.path());
    let logs = "/api/v1/runs/ci/big/logs";
    let filler = "x".repeat(200);
    let per_batch = 15_000u64;
    let batches = 8;
    for b in 0..batches {
        let (status, body) = api.request(
            "POST",
            logs,
            &log_batch("build", b * per_batch + 1..=(b + 1) * per_batch, &filler),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let n = batches * per_batch;
    let size = std::fs::metadata(dir.path().join("data/logs/ci/big/build.jsonl"))
        .unwrap()
        .len();
    assert!(size > 20 << 20, "{size}");
    // A restarted process indexes the log once...
    api.kill();
    let api = ApiProcess::start(dir.path());
    let (status, _) = api.request("GET", &format!("{logs}?job=build&after={}", n - 1), b"");
    assert_eq!(status, 200);
    // ...then a tail read reads about its answer, not the file.
    let before = api.proc_value("io", "rchar:");
    let (status, body) = api.request("GET", &format!("{logs}?job=build&after={}", n - 10), b"");
    assert_eq!(status, 200);
    let read = api.proc_value("io", "rchar:") - before;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["lines"].as_array().unwrap().len(), 10);
    assert!(read < 1 << 20, "a tail read of 10 lines read {read} bytes");
}

// ---- item 4: the token table ----

#[tokio::test]
async fn runner_tokens_expire_when_their_run_ends_in_any_way() {
    let f = fx_with(ApiConfig {
        orphan_token_grace: std::time::Duration::ZERO,
        ..ApiConfig::default()
    })
    .await;
    let id = f.upload(&[("a", "1")]).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        let (ns, name) = f.trigger_run(&id).await;
        let token = f.runs.runner_token(&ns, &name).unwrap();
        runs.push((ns, name, token));
    }
    let whoami = |t: String| {
        let f = &f;
        async move { f.get("/api/v1/whoami", &t).await.status }
    };
    f.runs
        .set_phase(&runs[0].0, &runs[0].1, RunPhase::Cancelled);
    // A timeout ends a run Failed.
    f.runs.set_phase(&runs[1].0, &runs[1].1, RunPhase::Failed);
    // ttlSecondsAfterFinished, or kubectl delete.
    f.runs.delete(&runs[2].0, &runs[2].1);
    assert_eq!(expire_runner_tokens(&f.st).await.unwrap(), 3);
    for (_, _, t) in &runs[..3] {
        assert_eq!(whoami(t.clone()).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(whoami(runs[3].2.clone()).await, StatusCode::OK);
    // The expired records are gone, not kept revoked forever.
    let runner_records =
        f.st.store
            .meta
            .list_tokens()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.principal.starts_with("runner:"))
            .count();
    assert_eq!(runner_records, 1);
    // ...and stay gone after a restart.
    let reopened = f.stores.reopen().await;
    assert!(reopened.lookup_token(&runs[0].2).await.unwrap().is_none());
    assert!(reopened.lookup_token(&runs[3].2).await.unwrap().is_some());
    // A run's finish expires its token at once.
    let (ns, name, token) = &runs[3];
    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            Some(token),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(whoami(token.clone()).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_whose_run_is_not_created_yet_is_kept() {
    let f = fx().await;
    // Minted for a run being created (the Secret is written before the run exists).
    let (token, _) =
        f.st.store
            .create_token(
                "runner:default/soon",
                vec!["run:default/soon".into()],
                Some(crate::tokens::RunnerGrant::default()),
            )
            .await
            .unwrap();
    assert_eq!(expire_runner_tokens(&f.st).await.unwrap(), 0);
    assert!(f.st.store.lookup_token(&token).await.unwrap().is_some());
}

/// No token table in the process: a token minted through one API replica is accepted by
/// another at once, and a revocation through either applies to the next request on both.
#[tokio::test]
async fn tokens_are_shared_by_replicas_through_the_store() {
    let f = fx().await;
    let other = Fx {
        st: ApiState::new(
            f.stores.reopen().await,
            f.runs.clone(),
            ApiConfig::default(),
        ),
        runs: f.runs.clone(),
        stores: TestStore::new().await,
        admin: f.admin.clone(),
        trigger: f.trigger.clone(),
        reader: f.reader.clone(),
    };
    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/tokens",
            &f.admin,
            json!({"principal": "ci", "scopes": ["runs:read"]}),
        )
        .await;
    let v = r.json();
    let (token, id) = (v["token"].as_str().unwrap(), v["id"].as_str().unwrap());
    assert_eq!(
        other.get("/api/v1/whoami", token).await.status,
        StatusCode::OK
    );
    let r = other
        .call(
            Method::DELETE,
            &format!("/api/v1/admin/tokens/{id}"),
            Some(&other.admin),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        f.get("/api/v1/whoami", token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A trigger on one replica: its runner token works on the other.
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let r = post_logs(&other, &runner, &ns, &name, &[1]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

// ---- item 8: header and body timeouts, connection cap ----

async fn serve_for_test(config: ApiConfig) -> (Fx, SocketAddr) {
    let f = fx_with(config).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_on(listener, f.st.clone(), std::future::pending()));
    (f, addr)
}

/// Read until the peer closes or `deadline` passes; `None` on the deadline.
async fn read_until_closed(
    s: &mut tokio::net::TcpStream,
    deadline: std::time::Duration,
) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_headers_are_cut_off_by_the_header_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let (_f, addr) = serve_for_test(ApiConfig {
        header_timeout: std::time::Duration::from_millis(300),
        ..ApiConfig::default()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let closed = read_until_closed(&mut s, std::time::Duration::from_secs(10)).await;
    assert!(
        closed.is_some(),
        "a connection with partial headers was kept open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408() {
    use tokio::io::AsyncWriteExt as _;
    let (f, addr) = serve_for_test(ApiConfig {
        body_timeout: std::time::Duration::from_millis(300),
        ..ApiConfig::default()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        f.trigger,
        100 << 20
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b' '; 1024]).await.unwrap();
    let answer = read_until_closed(&mut s, std::time::Duration::from_secs(10))
        .await
        .expect("no answer to a stalled body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    use tokio::io::AsyncWriteExt as _;
    let (_f, addr) = serve_for_test(ApiConfig {
        max_connections: 2,
        ..ApiConfig::default()
    })
    .await;
    let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Both slots are held: the third connection is not served...
    assert!(
        read_until_closed(&mut third, std::time::Duration::from_millis(500))
            .await
            .is_none(),
        "a connection past the cap was served"
    );
    // ...until one closes.
    drop(idle1);
    let answer = read_until_closed(&mut third, std::time::Duration::from_secs(10))
        .await
        .expect("the waiting connection was not served");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

// ---- item 7: decompression memory ----

#[test]
fn concurrent_gzip_bombs_do_not_grow_memory() {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiProcess::start(dir.path());
    // 128 MiB of zeros, about 128 KiB compressed, under a wrong address.
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = std::sync::Arc::new(e.finish().unwrap());
    let baseline = api.proc_value("status", "VmHWM:");
    let addr = api.addr;
    let sha = "0".repeat(64);
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let (bomb, sha) = (bomb.clone(), sha.clone());
            std::thread::spawn(move || {
                http_request(
                    addr,
                    "PUT",
                    &format!("/api/v1/blobs/{sha}"),
                    ADMIN_TOKEN,
                    &bomb,
                )
            })
        })
        .collect();
    for r in requests {
        let (status, body) = r.join().unwrap();
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("hash_mismatch"));
    }
    let peak = api.proc_value("status", "VmHWM:");
    // kB: what the bombs added is a few buffers, not their 512 MiB of content.
    assert!(
        peak - baseline < 64 << 10,
        "peak RSS grew by {} KiB",
        peak - baseline
    );
    // Nothing of them is left in tmp/.
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_uploads_wait_for_the_memory_budget() {
    let mut config = ApiConfig::default();
    config.limits.blob_memory_budget = 1 << 20;
    let f = fx_with(config).await;
    // Someone holds the whole budget.
    let held =
        f.st.blob_budget
            .clone()
            .acquire_many_owned(f.st.blob_budget_kib() as u32)
            .await
            .unwrap();
    let content = b"waits for memory".to_vec();
    let sha = sha256_hex(&content);
    let app = f.app();
    let token = f.trigger.clone();
    let put = tokio::spawn(async move {
        app.oneshot(
            Request::put(format!("/api/v1/blobs/{sha}"))
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(gzip(&content)))
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
    });
    tokio::task::yield_now().await;
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), async {
            while !put.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .is_err(),
        "an upload went past the memory budget"
    );
    drop(held);
    assert_eq!(put.await.unwrap(), StatusCode::CREATED);
    assert_eq!(
        f.st.blob_budget.available_permits(),
        f.st.blob_budget_kib(),
        "the budget is given back"
    );
}

// ---- item 9: manifest sizes ----

#[tokio::test]
async fn declared_sizes_must_match_the_stored_blobs() {
    let f = fx().await;
    let content = "x".repeat(1000);
    let sha = sha256_hex(content.as_bytes());
    let lying = json!({"files": [{"path": "big", "mode": 0o644, "size": 1, "sha256": sha}]});
    // The blob comes after the manifest: the trigger checks it.
    let r = f
        .json(Method::POST, "/api/v1/uploads", &f.trigger, lying.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = f.put_blob(&f.trigger, &sha, content.as_bytes()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"upload": {"id": id}}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_manifest",
        "big: declared size 1 bytes, but its blob",
    );
    assert!(f.runs.list(None).await.unwrap().is_empty());
    // The blob is there already: the upload itself is refused.
    let r = f
        .json(Method::POST, "/api/v1/uploads", &f.trigger, lying)
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_manifest",
        "holds 1000 bytes",
    );
}

// ---- item 5: the runs list is paged, filtered on the server ----

#[tokio::test]
async fn the_runs_list_is_paged_by_cursor_with_filters() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let mut names = Vec::new();
    for i in 0..7i64 {
        let pipeline = if i % 2 == 0 { "build" } else { "test" };
        let r = f
            .json(
                Method::POST,
                "/api/v1/runs",
                &f.trigger,
                json!({"pipeline": pipeline, "source": {"upload": {"id": id}}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let name = r.json()["name"].as_str().unwrap().to_string();
        // One second apart, oldest first (as the API server stamps them).
        let mut run = f.runs.run("default", &name).unwrap();
        run.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z"
                    .parse::<k8s_openapi::jiff::Timestamp>()
                    .unwrap()
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i))
                    .unwrap(),
            ));
        f.runs.insert(run);
        names.push(name);
    }
    // The oldest run finished and was deleted: it is in the archive only.
    f.runs.set_phase("default", &names[0], RunPhase::Succeeded);
    f.runs.set_phase("default", &names[2], RunPhase::Succeeded);
    let r = f
        .get(&format!("/api/v1/runs/default/{}", names[0]), &f.reader)
        .await;
    assert_eq!(r.json()["archived"], true, "{}", r.body);
    f.runs.delete("default", &names[0]);

    let page = |q: String| {
        let f = &f;
        async move {
            let r = f.get(&format!("/api/v1/runs?{q}"), &f.reader).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let v = r.json();
            let got: Vec<String> = v["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
                .collect();
            (got, v["next"].as_str().map(str::to_string), v)
        }
    };
    let newest_first: Vec<String> = names.iter().rev().cloned().collect();
    let (p1, next, _) = page("limit=3".into()).await;
    assert_eq!(p1, newest_first[..3]);
    let (p2, next, _) = page(format!("limit=3&cursor={}", next.unwrap())).await;
    assert_eq!(p2, newest_first[3..6]);
    let (p3, next, v) = page(format!("limit=3&cursor={}", next.unwrap())).await;
    assert_eq!(p3, newest_first[6..]);
    assert_eq!(next, None);
    assert_eq!(
        (&v["runs"][0]["live"], &v["runs"][0]["archived"]),
        (&json!(false), &json!(true))
    );
    // A page that ends exactly at the last run has no next.
    let (all, next, _) = page("limit=7".into()).await;
    assert_eq!((all.len(), next), (7, None));

    let (tests, _, _) = page("pipeline=test".into()).await;
    assert_eq!(
        tests,
        [names[5].clone(), names[3].clone(), names[1].clone()]
    );
    let (done, _, _) = page("phase=Succeeded&pipeline=build".into()).await;
    assert_eq!(done, [names[2].clone(), names[0].clone()]);
    // `since`: created at or after, live and archived alike (runs 0..7 are 00:00:00..00:00:06).
    let (recent, _, _) = page("since=2026-01-01T00:00:04Z".into()).await;
    assert_eq!(recent, newest_first[..3]);
    let (all_since, _, _) = page("since=2026-01-01T00:00:00Z&limit=2".into()).await;
    assert_eq!(all_since, newest_first[..2]);
    let (built, _, _) = page("since=2026-01-01T00:00:00%2B00:00&pipeline=build".into()).await;
    assert_eq!(
        built,
        [
            names[6].clone(),
            names[4].clone(),
            names[2].clone(),
            names[0].clone()
        ]
    );
    let (none, next, _) = page("since=2027-01-01T00:00:00Z".into()).await;
    assert_eq!((none.len(), next), (0, None));

    for (q, part) in [
        ("limit=0", "limit 0"),
        ("limit=501", "limit 501"),
        ("cursor=zz", "invalid cursor"),
        ("phase=Done", "invalid phase"),
        ("since=yesterday", "invalid since"),
    ] {
        let r = f.get(&format!("/api/v1/runs?{q}"), &f.reader).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", part);
    }
}

/// Finished runs whose PipelineRun is kept are both live and in the index: pages of them are
/// whole and in order, each run once, however the index's pages fall.
#[tokio::test]
async fn the_runs_list_pages_runs_both_live_and_archived() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let mut names = Vec::new();
    for i in 0..7i64 {
        let (ns, name) = f.trigger_run(&id).await;
        let mut run = f.runs.run(&ns, &name).unwrap();
        run.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z"
                    .parse::<k8s_openapi::jiff::Timestamp>()
                    .unwrap()
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i))
                    .unwrap(),
            ));
        f.runs.insert(run);
        f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
        // Read once: a finished live run is archived then.
        let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
        assert_eq!(r.json()["archived"], true, "{}", r.body);
        names.push(name);
    }
    let newest_first: Vec<String> = names.iter().rev().cloned().collect();
    for limit in [1usize, 2, 3, 7] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                None => format!("limit={limit}"),
                Some(c) => format!("limit={limit}&cursor={c}"),
            };
            let r = f.get(&format!("/api/v1/runs?{q}"), &f.reader).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let v = r.json();
            let page: Vec<String> = v["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    assert_eq!(r["live"], true, "{r}");
                    r["name"].as_str().unwrap().to_string()
                })
                .collect();
            assert!(page.len() <= limit, "{page:?}");
            seen.extend(page);
            match v["next"].as_str() {
                Some(n) => cursor = Some(n.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, newest_first, "pages of {limit}");
    }
}

#[tokio::test]
async fn the_runs_list_reads_no_archive_file_per_run() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = f.get("/api/v1/runs", &f.reader).await;
    assert_eq!(r.json()["runs"][0]["archived"], true);
    // The run index answers: the archives are not read again (here: gone).
    let key = sparkwing_state::RunKey::new(&ns, &name);
    assert!(f.st.store.content.delete_archive(&key).await.unwrap());
    let r = f.get("/api/v1/runs", &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["runs"][0]["archived"], true);
    assert!(
        f.st.store
            .content
            .get_archive(&key)
            .await
            .unwrap()
            .is_none(),
        "a listed run that was archived is not written again"
    );
}
