//! API tests against the router (no socket).

use super::{router, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sparkwing_core::{JobState, RunPhase};
use sparkwing_engine::home::Home;
use sparkwing_engine::job_log::JobLog;
use sparkwing_engine::store::{NewJob, NewRun, Store};
use std::path::Path;
use std::time::Duration;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    home: Home,
    state: AppState,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home {
        root: dir.path().to_path_buf(),
        cache: dir.path().join("cache"),
    };
    let state = AppState::start(home.clone()).unwrap();
    Fixture {
        _dir: dir,
        home,
        state,
    }
}

/// Record a run. An unfinished run gets its run lock held, as a live `sparkwing run` holds it, so
/// readers do not reconcile it as abandoned; keep the returned lock for as long as it must look alive.
#[must_use = "an unfinished run looks abandoned once its lock is dropped"]
fn add_run(
    home: &Home,
    id: &str,
    pipeline: &str,
    status: RunPhase,
    created: i64,
) -> Option<std::fs::File> {
    let run_dir = home.run_dir(id);
    std::fs::create_dir_all(&run_dir).unwrap();
    let lock = (!status.is_terminal()).then(|| {
        let f = std::fs::File::create(Home::run_lock(&run_dir)).unwrap();
        f.lock().unwrap();
        f
    });
    let mut store = Store::open(&home.root).unwrap();
    let terminal = status.is_terminal();
    store
        .create_run(&NewRun {
            id: id.into(),
            pipeline: pipeline.into(),
            entrypoint: "Hello".into(),
            status,
            args_json: r#"{"name":"world","token":"***"}"#.into(),
            repo_root: "/src/demo".into(),
            git_branch: Some("main".into()),
            git_commit: Some("0123456789abcdef".into()),
            host: "box".into(),
            user: "ada".into(),
            pid: 1,
            runner: "process".into(),
            created_at: created,
            started_at: Some(created),
            finished_at: terminal.then_some(created + 1500),
            exit_code: terminal.then(|| crate::exit::ExitCode::of_run(status).code()),
            error: (status == RunPhase::Failed).then(|| "job failed: build".to_string()),
            log_dir: run_dir.to_string_lossy().into_owned(),
            retry_of: None,
        })
        .unwrap();
    store
        .insert_jobs(
            id,
            &[
                NewJob {
                    id: "build".into(),
                    needs: vec![],
                    optional: false,
                    finally: false,
                },
                NewJob {
                    id: "test".into(),
                    needs: vec!["build".into()],
                    optional: false,
                    finally: false,
                },
            ],
        )
        .unwrap();
    if terminal {
        store.job_started(id, "build", 1, created).unwrap();
        let state = if status == RunPhase::Succeeded {
            JobState::Success
        } else {
            JobState::Failed
        };
        store
            .job_finished(id, "build", state, None, Some(0), None, created + 1000)
            .unwrap();
        store
            .job_finished(
                id,
                "test",
                JobState::Cancelled,
                Some("upstream-failed"),
                None,
                None,
                created + 1000,
            )
            .unwrap();
        let mut log = JobLog::open(&Home::job_log(&run_dir, "build")).unwrap();
        log.append(created, 1, "stdout", "compiling <stuff>")
            .unwrap();
        log.append(created, 1, "stderr", "warning: careful")
            .unwrap();
        log.append(created, 1, "stdout", "done").unwrap();
    }
    lock
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, String) {
    get_with(state, uri, None).await
}

async fn get_with(state: &AppState, uri: &str, last_id: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().uri(uri);
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let res = router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
        .await
        .expect("the response ends")
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_json(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let (s, b) = get(state, uri).await;
    (s, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// Read a streaming body until `until` appears in what was read so far.
async fn read_until(body: &mut Body, seen: &mut String, until: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(until) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {until:?}; got {seen}"));
        match frame {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&d));
                }
            }
            _ => panic!("stream ended before {until:?}; got {seen}"),
        }
    }
}

#[tokio::test]
async fn dashboard_health_names_the_service() {
    let f = fixture();
    let (s, v) = get_json(&f.state, "/api/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["service"], super::SERVICE);
    assert_eq!(v["pid"], std::process::id());
}

#[tokio::test]
async fn dashboard_empty_store_says_how_to_start() {
    let f = fixture();
    let (s, v) = get_json(&f.state, "/api/runs").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["total"], 0);
    let (s, html) = get(&f.state, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("No runs yet"), "{html}");
    assert!(html.contains("sparkwing run &lt;pipeline&gt;"));
    let (_, html) = get(&f.state, "/pipelines").await;
    assert!(html.contains("No runs yet"));
}

#[tokio::test]
async fn dashboard_lists_runs_newest_first_with_filters() {
    let f = fixture();
    let _ = add_run(&f.home, "run-a", "hello", RunPhase::Succeeded, 1_000);
    let _ = add_run(&f.home, "run-b", "deploy", RunPhase::Failed, 2_000);
    let _ = add_run(&f.home, "run-c", "hello", RunPhase::Failed, 3_000);
    let (_, v) = get_json(&f.state, "/api/runs").await;
    let ids: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["run-c", "run-b", "run-a"]);
    assert_eq!(v["total"], 3);
    assert_eq!(v["runs"][0]["duration_ms"], 1500);
    let (_, v) = get_json(&f.state, "/api/runs?pipeline=hello&status=failed").await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["runs"][0]["id"], "run-c");
    let (_, v) = get_json(&f.state, "/api/runs?limit=1").await;
    assert_eq!(v["next_before"], "run-c");
    let (_, v) = get_json(&f.state, "/api/runs?limit=5&before=run-c").await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    let (s, v) = get_json(&f.state, "/api/runs?status=exploded").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("exploded"));
    let (s, html) = get(&f.state, "/runs?pipeline=hello").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("run-c") && !html.contains("run-b\""));
    assert!(
        html.contains("✗</span> failed"),
        "state has a word and a symbol"
    );
}

#[tokio::test]
async fn dashboard_run_detail_jobs_and_unknown_runs() {
    let f = fixture();
    let _ = add_run(&f.home, "run-x", "hello", RunPhase::Failed, 1_000);
    let (s, v) = get_json(&f.state, "/api/runs/run-x").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["args"]["token"], "***");
    assert_eq!(v["jobs"][1]["needs"][0], "build");
    assert_eq!(v["jobs"][1]["reason"], "upstream-failed");
    // The `run-` prefix may be left out, as on the command line.
    let (s, _) = get_json(&f.state, "/api/runs/x").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = get_json(&f.state, "/api/runs/run-nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("run-nope"));
    let (s, html) = get(&f.state, "/runs/run-nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(html.contains("Run not found"));
    let (s, html) = get(&f.state, "/runs/run-x").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("<svg class=\"dag\""));
    assert!(html.contains("data-from=\"build\" data-to=\"test\""));
    assert!(html.contains("cancelled: upstream-failed"));
    assert!(html.contains("job failed: build"));
    assert!(html.contains("0123456789"));
    let (_, v) = get_json(&f.state, "/api/runs/run-x/events").await;
    assert!(v["events"].is_array());
    let (s, _) = get(&f.state, "/no/such/page").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dashboard_job_logs_json_and_resumable_stream() {
    let f = fixture();
    let _ = add_run(&f.home, "run-l", "hello", RunPhase::Succeeded, 1_000);
    let (_, v) = get_json(&f.state, "/api/runs/run-l/jobs/build/logs?after=1").await;
    assert_eq!(v["records"].as_array().unwrap().len(), 2);
    assert_eq!(v["records"][0]["stream"], "stderr");
    assert_eq!(v["finished"], true);
    let (s, _) = get_json(&f.state, "/api/runs/run-l/jobs/nope/logs").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = get(&f.state, "/api/runs/run-l/jobs/build/logs/stream").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("id: 1\n") && body.contains("id: 3\n"),
        "{body}"
    );
    assert!(body.contains("event: end"));
    let (_, body) = get_with(
        &f.state,
        "/api/runs/run-l/jobs/build/logs/stream",
        Some("2"),
    )
    .await;
    assert!(
        !body.contains("id: 1\n") && !body.contains("id: 2\n"),
        "{body}"
    );
    assert!(body.contains("id: 3\n") && body.contains("\"line\":\"done\""));
    // A job that never ran ends at once.
    let (_, body) = get(&f.state, "/api/runs/run-l/jobs/test/logs/stream").await;
    assert!(body.contains("event: end") && body.contains("upstream-failed"));
}

#[tokio::test]
async fn dashboard_streams_log_lines_and_state_live() {
    let f = fixture();
    let _live = add_run(&f.home, "run-live", "hello", RunPhase::Running, 1_000);
    let mut store = Store::open(&f.home.root).unwrap();
    store.job_started("run-live", "build", 1, 1_000).unwrap();
    let log_path = Home::job_log(&f.home.run_dir("run-live"), "build");
    let mut log = JobLog::open(&log_path).unwrap();
    log.append(1, 1, "stdout", "first line").unwrap();

    let res = router(f.state.clone())
        .oneshot(
            Request::builder()
                .uri("/ui/runs/run-live/stream?job=build")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = res.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "first line").await;
    read_until(&mut body, &mut seen, "event: view").await;
    read_until(&mut body, &mut seen, "\"status\":\"running\"").await;
    assert!(seen.contains("st-running"), "{seen}");

    log.append(2, 1, "stdout", "second line").unwrap();
    read_until(&mut body, &mut seen, "second line").await;
    assert!(seen.contains("id: 2\n"));

    store
        .job_finished(
            "run-live",
            "build",
            JobState::Success,
            None,
            Some(0),
            None,
            2_000,
        )
        .unwrap();
    read_until(&mut body, &mut seen, "event: log-end").await;
    store
        .set_run_status("run-live", RunPhase::Succeeded, 2_500, Some(0), None)
        .unwrap();
    read_until(&mut body, &mut seen, "event: done").await;
    assert!(seen.contains("✓</span> passed"));
}

#[tokio::test]
async fn dashboard_runs_list_stream_sends_new_runs() {
    let f = fixture();
    let res = router(f.state.clone())
        .oneshot(
            Request::builder()
                .uri("/api/runs/stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = res.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "event: runs").await;
    let _live = add_run(&f.home, "run-new", "hello", RunPhase::Running, 5_000);
    read_until(&mut body, &mut seen, "run-new").await;
}

#[tokio::test]
async fn dashboard_pipelines_summarise_last_runs() {
    let f = fixture();
    let _ = add_run(&f.home, "run-1", "hello", RunPhase::Succeeded, 1_000);
    let _ = add_run(&f.home, "run-2", "hello", RunPhase::Failed, 2_000);
    let _ = add_run(&f.home, "run-3", "deploy", RunPhase::Succeeded, 1_500);
    let (_, v) = get_json(&f.state, "/api/pipelines").await;
    let p = &v["pipelines"];
    assert_eq!(p[0]["pipeline"], "hello");
    assert_eq!(p[0]["runs"], 2);
    assert_eq!(p[0]["last_run"]["id"], "run-2");
    assert_eq!(p[1]["pipeline"], "deploy");
    let (_, html) = get(&f.state, "/pipelines").await;
    assert!(html.contains("data-pipeline=\"hello\"") && html.contains("run-2"));
}

#[test]
fn dashboard_read_only_store_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let ro = Store::open_read_only(&dir.path().join("state.db")).unwrap();
    assert!(ro.list_runs(&Default::default()).unwrap().is_empty());
    assert!(Store::open_read_only(Path::new("/nonexistent/state.db")).is_err());
}

async fn post_json(state: &AppState, uri: &str, body: &str) -> (StatusCode, Value) {
    let res = router(state.clone())
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_waiting_gate_shows_its_buttons_and_a_post_records_the_decision() {
    let f = fixture();
    let _live = add_run(&f.home, "run-gate", "ship", RunPhase::Running, 1_000);
    let mut store = Store::open(&f.home.root).unwrap();
    let spec = sparkwing_core::gate::GateSpec {
        message: Some("Ship <it>?".into()),
        timeout_ms: None,
        on_timeout: sparkwing_core::gate::Decision::Reject,
    };
    store
        .insert_gates("run-gate", &[("test".to_string(), spec)])
        .unwrap();
    store.gate_waiting("run-gate", "test", 2_000).unwrap();

    let (code, page) = get(&f.state, "/runs/run-gate").await;
    assert_eq!(code, StatusCode::OK);
    assert!(page.contains("data-gate-decision=\"approve\""), "{page}");
    assert!(
        page.contains("data-gate-url=\"/api/runs/run-gate/gates/test\""),
        "{page}"
    );
    assert!(page.contains("Ship &lt;it&gt;?"), "{page}");

    let (code, body) = post_json(
        &f.state,
        "/api/runs/run-gate/gates/test",
        r#"{"decision":"maybe"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = post_json(
        &f.state,
        "/api/runs/run-gate/gates/nope",
        r#"{"decision":"approve"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("its gates: test"),
        "{body}"
    );
    let (code, body) = post_json(
        &f.state,
        "/api/runs/run-gate/gates/test",
        r#"{"decision":"approve","comment":"go","by":"ana"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["decision"], "approve");
    assert_eq!(body["by"], "ana");
    let decided = store.gate_decision("run-gate", "test").unwrap().unwrap();
    assert_eq!(
        (decided.by.as_str(), decided.comment.as_deref()),
        ("ana", Some("go"))
    );
    let (code, body) = post_json(
        &f.state,
        "/api/runs/run-gate/gates/test",
        r#"{"decision":"reject"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already approved by ana: go"),
        "{body}"
    );
    let (code, _) = post_json(
        &f.state,
        "/api/runs/run-nope/gates/test",
        r#"{"decision":"approve"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // Once decided, the page shows who decided instead of the buttons.
    let (_, page) = get(&f.state, "/runs/run-gate").await;
    assert!(page.contains("approved by ana: go"), "{page}");
    assert!(!page.contains("data-gate-decision"), "{page}");
}

#[tokio::test]
async fn dashboard_run_page_lists_artifacts_with_their_download_command() {
    let f = fixture();
    let _ = add_run(&f.home, "run-a", "hello", RunPhase::Succeeded, 1_000);
    let (_, html) = get(&f.state, "/runs/run-a").await;
    assert!(
        !html.contains("id=\"artifacts\""),
        "no artifacts, no section"
    );
    Store::open(&f.home.root)
        .unwrap()
        .record_artifact(
            "run-a",
            &sparkwing_engine::store::ArtifactRecord {
                job_id: "build".into(),
                name: "app".into(),
                path: "dist/<app>".into(),
                size_bytes: 2048,
                files: 1,
                created_at: 2_000,
            },
        )
        .unwrap();
    let (s, html) = get(&f.state, "/runs/run-a").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("<h2 id=\"h-artifacts\">Artifacts</h2>"),
        "{html}"
    );
    assert!(html.contains("<code>dist/&lt;app&gt;</code>"), "{html}");
    assert!(html.contains("2.0 KiB"), "{html}");
    assert!(
        html.contains("sparkwing runs artifacts --run run-a --download build/app"),
        "{html}"
    );
}

/// A fan-out's jobs (`test[3]`): their logs by a percent-encoded id, and the graph's template.
#[tokio::test]
async fn dashboard_shows_a_fan_outs_jobs_and_their_logs() {
    let f = fixture();
    let _ = add_run(&f.home, "run-f", "hello", RunPhase::Succeeded, 1_000);
    let mut store = Store::open(&f.home.root).unwrap();
    store
        .job_finished(
            "run-f",
            "test",
            JobState::Success,
            Some("fanned out into 4 jobs (test[0] … test[3])"),
            None,
            None,
            2_000,
        )
        .unwrap();
    store
        .insert_jobs(
            "run-f",
            &[NewJob {
                id: "test[3]".into(),
                needs: vec!["build".into()],
                optional: false,
                finally: false,
            }],
        )
        .unwrap();
    let run_dir = f.home.run_dir("run-f");
    let mut log = JobLog::open(&Home::job_log(&run_dir, "test[3]")).unwrap();
    log.append(1_500, 1, "stdout", "item=d").unwrap();
    let (s, v) = get_json(&f.state, "/api/runs/run-f/jobs/test%5B3%5D/logs").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["records"][0]["line"], "item=d");
    let (s, html) = get(&f.state, "/runs/run-f?job=test%5B3%5D").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("test[*]"), "{html}");
    assert!(html.contains("href=\"?job=test%5B3%5D#logs\""), "{html}");
}
