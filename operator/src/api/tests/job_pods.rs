//! The own pods of placed jobs: `POST|GET|DELETE /api/v1/runs/{ns}/{name}/job-pods/{job}/{attempt}`
//! on the run's runner token, with [`MemoryRuns`] keeping the pods.

use super::*;

/// A triggered run, running, with its runner token and job `test[3]` reported pending.
async fn running(f: &Fx) -> (String, String, String) {
    let up = f.upload(&[("a", "x")]).await;
    let (ns, name) = f.trigger_run(&up).await;
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/jobs/test%5B3%5D"),
            &runner,
            json!({"state": "pending", "attempt": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    (ns, name, runner)
}

fn pod_path(ns: &str, name: &str, job: &str, attempt: u32) -> String {
    format!("/api/v1/runs/{ns}/{name}/job-pods/{job}/{attempt}")
}

fn placed() -> Value {
    json!({"placement": {"cpu": "100m", "memory": "64Mi"}, "item": "d"})
}

#[tokio::test]
async fn a_runner_starts_looks_at_and_deletes_a_job_pod() {
    let f = fx().await;
    let (ns, name, runner) = running(&f).await;
    let path = pod_path(&ns, &name, "test%5B3%5D", 1);
    // Nothing yet.
    let r = f.get(&path, &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["phase"], "gone");
    let r = f.json(Method::POST, &path, &runner, placed()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    assert_eq!(v["phase"], "pending");
    let pod = v["name"].as_str().unwrap().to_string();
    assert!(
        pod.starts_with(&format!("{name}-test-3-")) && pod.ends_with("-j1"),
        "{pod}"
    );
    // Asking again finds the same pod.
    let r = f.json(Method::POST, &path, &runner, placed()).await;
    assert_eq!(r.json()["name"], pod.as_str());
    let pods = f.runs.job_pods_of(&ns, &name);
    assert_eq!(pods.len(), 1);
    assert_eq!((pods[0].0.as_str(), pods[0].1), ("test[3]", 1));
    assert_eq!(pods[0].2.cpu.as_deref(), Some("100m"));
    assert_eq!(pods[0].2.memory.as_deref(), Some("64Mi"));
    assert_eq!(f.get(&path, &runner).await.json()["phase"], "pending");
    let r = f
        .call(Method::DELETE, &path, Some(&runner), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(f.runs.job_pods_of(&ns, &name).is_empty());
    assert_eq!(f.get(&path, &runner).await.json()["phase"], "gone");
    // Deleting what is gone is fine.
    let r = f
        .call(Method::DELETE, &path, Some(&runner), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

#[tokio::test]
async fn another_runs_token_and_people_are_refused() {
    let f = fx().await;
    let (ns, name, _) = running(&f).await;
    let (_, _, other) = running(&f).await;
    let path = pod_path(&ns, &name, "test%5B3%5D", 1);
    for token in [other.as_str(), f.trigger.as_str(), f.reader.as_str()] {
        let r = f.json(Method::POST, &path, token, placed()).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "run:");
        let r = f.get(&path, token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = f
            .call(Method::DELETE, &path, Some(token), Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    assert!(f.runs.job_pods_of(&ns, &name).is_empty());
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let f = fx().await;
    let (ns, name, runner) = running(&f).await;
    let post = |job: &str, attempt: &str, body: Value| {
        let path = format!("/api/v1/runs/{ns}/{name}/job-pods/{job}/{attempt}");
        let (f, runner) = (&f, runner.clone());
        async move { f.json(Method::POST, &path, &runner, body).await }
    };
    // A job its coordinator never reported.
    let r = post("deploy", "1", placed()).await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("job deploy of run {ns}/{name} is unknown"),
    );
    // A job without placement.
    let r = post("test%5B3%5D", "1", json!({"placement": null})).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "job test[3] has no placement",
    );
    let r = post("test%5B3%5D", "1", json!({})).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "has no placement",
    );
    // An invalid placement, as at plan time.
    let r = post("test%5B3%5D", "1", json!({"placement": {"memory": "8GB"}})).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "job test[3] placement: memory \"8GB\" is not a Kubernetes quantity",
    );
    // An unknown field, a bad attempt, a bad job name.
    let r = post("test%5B3%5D", "1", json!({"placement": {}, "pod": "x"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = post("test%5B3%5D", "0", placed()).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "attempt \"0\" is not a number from 1",
    );
    let r = post("a%20b", "1", placed()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // A finished run starts none.
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = post("test%5B3%5D", "1", placed()).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "is finished");
    assert!(f.runs.job_pods_of(&ns, &name).is_empty());
}
