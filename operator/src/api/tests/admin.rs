//! Admin: garbage collection.

use super::*;

#[tokio::test]
async fn api_gc_removes_only_unreferenced_blobs() {
    let f = fx().await;
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
    let content = &f.st.store.content;
    for (c, kept) in [
        ("shared", true),
        ("only-used", true),
        ("only-unused", false),
    ] {
        let has = content
            .blob_exists(&sha256_hex(c.as_bytes()))
            .await
            .unwrap();
        assert_eq!(has, kept, "{c}");
    }
    assert!(f.st.store.get_upload(&unused).await.unwrap().is_none());
    assert!(f.st.store.get_upload(&used).await.unwrap().is_some());

    // Once the run is finished its upload may go too.
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = gc(0).await;
    assert_eq!(r.json()["blobsDeleted"], 2);
    for c in ["shared", "only-used"] {
        let has = content
            .blob_exists(&sha256_hex(c.as_bytes()))
            .await
            .unwrap();
        assert!(!has, "{c}");
    }
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

#[tokio::test]
async fn retention_removes_finished_runs_whose_object_is_gone_with_their_logs_and_archive() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (ns, name) = f.trigger_run(&id).await;
        let runner = f.runs.runner_token(&ns, &name).unwrap();
        let r = post_logs(&f, &runner, &ns, &name, &[1, 2]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
        runs.push((ns, name));
    }
    // Listing archives the finished runs on the way.
    let r = f.get("/api/v1/runs", &f.reader).await;
    assert_eq!(r.json()["runs"].as_array().unwrap().len(), 3, "{}", r.body);
    // Two PipelineRuns are deleted (ttlSecondsAfterFinished); the third still exists.
    for (ns, name) in &runs[..2] {
        f.runs.delete(ns, name);
    }
    let gc = |body: Value| f.json(Method::POST, "/api/v1/admin/gc", &f.admin, body);
    // No retention configured: nothing is removed.
    let r = gc(json!({})).await;
    assert_eq!(r.json()["runsDeleted"], 0, "{}", r.body);
    // Keep none: the two whose object is gone are removed, the live one is spared.
    let r = gc(json!({"retainFinishedRuns": 0})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["runsDeleted"], 2, "{}", r.body);
    for (i, (ns, name)) in runs.iter().enumerate() {
        let kept = i == 2;
        let key = sparkwing_state::RunKey::new(ns, name);
        let archive = f.st.store.content.get_archive(&key).await.unwrap();
        assert_eq!(archive.is_some(), kept, "archive of {name}");
        let log = sparkwing_state::LogKey::new(ns, name, "build");
        let lines =
            f.st.store
                .content
                .read_log_after(&log, 0, 10)
                .await
                .unwrap();
        assert_eq!(lines.len(), if kept { 2 } else { 0 }, "log of {name}");
        let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
        let want = if kept {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(r.status, want, "{name}: {}", r.body);
    }
    let r = f.get("/api/v1/runs", &f.reader).await;
    assert_eq!(r.json()["runs"].as_array().unwrap().len(), 1, "{}", r.body);
    // Counted: two collections, both ok, two runs removed.
    let text = f.st.metrics.render();
    assert!(
        text.contains("sparkwing_api_gc_runs_deleted_total 2"),
        "{text}"
    );
    assert_eq!(f.st.metrics.collections("ok"), 2);
    assert!(
        !text.contains("sparkwing_api_gc_last_success_timestamp_seconds 0.0"),
        "{text}"
    );
}

#[tokio::test]
async fn retention_by_age_keeps_younger_runs_and_bad_bodies_are_refused() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    f.runs.set_phase(&ns, &name, RunPhase::Failed);
    let r = f.get("/api/v1/runs", &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    f.runs.delete(&ns, &name);
    let gc = |body: Value| f.json(Method::POST, "/api/v1/admin/gc", &f.admin, body);
    // Finished just now: younger than a day.
    let r = gc(json!({"retainFinishedDays": 1})).await;
    assert_eq!(r.json()["runsDeleted"], 0, "{}", r.body);
    let r = gc(json!({"retainFinishedDays": 0})).await;
    assert_eq!(r.json()["runsDeleted"], 1, "{}", r.body);
    let r = gc(json!({"retainFinishedDays": -1})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "gc request");
}

#[tokio::test]
async fn a_serving_api_collects_by_itself_every_period() {
    let f = fx_with(ApiConfig {
        gc_every: Some(std::time::Duration::from_millis(50)),
        retention: crate::api::collect::Retention {
            max_age: None,
            max_runs: Some(0),
        },
        ..ApiConfig::default()
    })
    .await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = f.get("/api/v1/runs", &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    f.runs.delete(&ns, &name);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = tokio::spawn(serve_on(listener, f.st.clone(), std::future::pending()));
    let key = sparkwing_state::RunKey::new(&ns, &name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The run leaves the index mid-collection; the collection is counted once it ends.
    while f.st.store.meta.get_run(&key).await.unwrap().is_some()
        || f.st.metrics.collections("ok") == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the periodic collection did not remove the run and end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(f.st.metrics.collections("error"), 0);
    served.abort();
}
