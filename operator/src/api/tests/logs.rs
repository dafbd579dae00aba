//! Logs: idempotent ingest, gaps, and following a job's log.

use super::*;

#[tokio::test]
async fn api_log_ingest_is_idempotent_and_refuses_gaps() {
    let f = fx().await;
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

    // A fresh process (or another replica: no seq cache) continues from the stored log.
    let st2 = ApiState::new(
        f.stores.reopen().await,
        f.runs.clone(),
        ApiConfig::default(),
    );
    let f2 = Fx {
        st: st2,
        runs: f.runs.clone(),
        stores: TestStore::new().await,
        admin: f.admin.clone(),
        trigger: f.trigger.clone(),
        reader: f.reader.clone(),
    };
    let r = post_logs(&f2, &runner, &ns, &name, &[5, 6]).await;
    assert_eq!(r.json(), json!({"accepted": 1, "duplicates": 1}));
}

#[tokio::test]
async fn api_follow_resumes_from_last_event_id_and_ends() {
    let f = fx().await;
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
    })
    .await;
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
async fn api_log_tail_reads_the_last_lines_and_refuses_bad_ranges() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let seqs: Vec<u64> = (1..=50).collect();
    let r = post_logs(&f, &runner, &ns, &name, &seqs).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let path = |q: &str| format!("/api/v1/runs/{ns}/{name}/logs?job=build&{q}");
    let r = f.get(&path("tail=3"), &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got: Vec<u64> = r.json()["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [48, 49, 50]);
    assert_eq!(r.json()["more"], false);
    // More than the log holds: all of it.
    let r = f.get(&path("tail=500"), &f.reader).await;
    assert_eq!(r.json()["lines"].as_array().unwrap().len(), 50);
    for (q, part) in [
        ("tail=0", "tail 0"),
        ("tail=10001", "tail 10001"),
        ("tail=3&after=2", "without after or limit"),
        ("tail=3&limit=2", "without after or limit"),
    ] {
        let r = f.get(&path(q), &f.reader).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", part);
    }
}
