//! Concurrency groups of cluster runs: `POST|DELETE /api/v1/runs/{ns}/{name}/concurrency`, the
//! run view's `concurrency`, and the ways an entry is freed (the run's end, its lease, a retried
//! attempt keeping its place, collection).

use std::time::{Duration, Instant};

use sparkwing_crds::pipeline_run::CancelMode;

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// A triggered run, running, with its runner token.
async fn running(f: &Fx) -> (String, String, String) {
    let up = f.upload(&[("a", "x")]).await;
    let (ns, name) = f.trigger_run(&up).await;
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    (ns, name, runner)
}

fn group_path(ns: &str, name: &str) -> String {
    format!("/api/v1/runs/{ns}/{name}/concurrency")
}

/// `POST .../concurrency` by the run's runner with `body`.
async fn look(f: &Fx, run: &(String, String, String), body: Value) -> Res {
    let (ns, name, runner) = run;
    f.json(Method::POST, &group_path(ns, name), runner, body)
        .await
}

/// A look that must answer 200; its body.
async fn look_ok(f: &Fx, run: &(String, String, String), body: Value) -> Value {
    let r = look(f, run, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()
}

fn deploy() -> Value {
    json!({"group": "deploy-prod"})
}

fn named(run: &(String, String, String)) -> String {
    format!("{}/{}", run.0, run.1)
}

#[tokio::test]
async fn a_second_run_of_a_group_of_one_waits_until_the_first_ends() {
    let f = fx().await;
    let a = running(&f).await;
    let b = running(&f).await;
    let v = look_ok(&f, &a, deploy()).await;
    assert_eq!(v["state"], "holding", "{v}");
    assert_eq!(
        (v["group"].clone(), v["limit"].clone()),
        (json!("deploy-prod"), json!(1))
    );
    assert!(
        v.get("holders").is_none() && v.get("waiting").is_none(),
        "{v}"
    );

    let line = format!(
        "waiting for concurrency group deploy-prod (1/1, held by run {})",
        named(&a)
    );
    for _ in 0..2 {
        let v = look_ok(&f, &b, deploy()).await;
        assert_eq!(v["state"], "waiting", "{v}");
        assert_eq!(v["holders"], json!([named(&a)]));
        assert_eq!(v["waiting"], line.as_str());
    }
    // The holder's renewal keeps it holding.
    let v = look_ok(&f, &a, json!({"group": "deploy-prod", "renew": true})).await;
    assert_eq!(v["state"], "holding", "{v}");
    // The run view shows where each run stands (`runs status --profile` prints it).
    let r = f
        .get(&format!("/api/v1/runs/{}/{}", b.0, b.1), &f.reader)
        .await;
    assert_eq!(
        r.json()["concurrency"]["waiting"],
        line.as_str(),
        "{}",
        r.body
    );
    let r = f
        .get(&format!("/api/v1/runs/{}/{}", a.0, a.1), &f.reader)
        .await;
    assert_eq!(r.json()["concurrency"]["state"], "holding", "{}", r.body);

    // The first run ends: its slot is free at once, and the second takes it.
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{}/{}/finish", a.0, a.1),
            &a.2,
            json!({"phase": "Succeeded"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = look_ok(&f, &b, deploy()).await;
    assert_eq!(v["state"], "holding", "{v}");
    let r = f
        .get(&format!("/api/v1/runs/{}/{}", a.0, a.1), &f.reader)
        .await;
    assert!(r.json().get("concurrency").is_none(), "{}", r.body);

    // Leaving frees it too (the runner's call when its run ends).
    let c = running(&f).await;
    assert_eq!(look_ok(&f, &c, deploy()).await["state"], "waiting");
    let r = f
        .call(
            Method::DELETE,
            &group_path(&b.0, &b.1),
            Some(&b.2),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(look_ok(&f, &c, deploy()).await["state"], "holding");
    // Another key is another group.
    let d = running(&f).await;
    assert_eq!(
        look_ok(&f, &d, json!({"group": "deploy-staging"})).await["state"],
        "holding"
    );
}

#[tokio::test]
async fn cancel_in_progress_cancels_the_older_runs_once_and_says_why() {
    let f = fx().await;
    let a = running(&f).await;
    let b = running(&f).await;
    let c = running(&f).await;
    let cip = json!({"group": "deploy-prod", "cancelInProgress": true});
    assert_eq!(look_ok(&f, &a, cip.clone()).await["state"], "holding");
    assert_eq!(look_ok(&f, &b, deploy()).await["state"], "waiting");
    // c cancels both older runs, the holder and the one queued ahead, and waits for the slot.
    let v = look_ok(&f, &c, cip.clone()).await;
    assert_eq!(v["state"], "waiting", "{v}");
    assert_eq!(v["cancelled"], json!([named(&a), named(&b)]));
    assert_eq!(v["ahead"], json!([named(&b)]));
    for old in [&a, &b] {
        let run = f.runs.run(&old.0, &old.1).unwrap();
        assert_eq!(run.spec.cancel, Some(CancelMode::Cancelled));
        assert_eq!(
            run.metadata.annotations.unwrap()[sparkwing_api::names::CANCELLED_BY_ANNOTATION],
            format!("concurrency group deploy-prod (run {})", named(&c))
        );
    }
    // Asked once: a second look cancels nothing.
    let v = look_ok(&f, &c, cip.clone()).await;
    assert!(v.get("cancelled").is_none(), "{v}");
    // The cancelled runs' runners end them (a cancelled run's finish frees its entry even as
    // Cancelled); then c holds the slot.
    for old in [&a, &b] {
        let r = f
            .json(
                Method::POST,
                &format!("/api/v1/runs/{}/{}/finish", old.0, old.1),
                &old.2,
                json!({"phase": "Cancelled"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(look_ok(&f, &c, cip).await["state"], "holding");
}

#[tokio::test]
async fn a_holder_whose_lease_ended_is_passed_over() {
    let f = fx_with(ApiConfig {
        group_lease: Duration::from_millis(300),
        ..ApiConfig::default()
    })
    .await;
    let a = running(&f).await;
    let b = running(&f).await;
    assert_eq!(look_ok(&f, &a, deploy()).await["state"], "holding");
    // a's runner was killed (`kill -9`): it never speaks again. b, looking every 50 ms (which
    // renews its own lease), takes the slot once a's lease ended.
    let started = Instant::now();
    let mut waited = 0;
    loop {
        let v = look_ok(&f, &b, deploy()).await;
        if v["state"] == "holding" {
            break;
        }
        waited += 1;
        assert_eq!(v["holders"], json!([named(&a)]), "{v}");
        assert!(started.elapsed() < DEADLINE, "b still waits: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waited > 0, "b took the slot before a's lease ended");
    // a's entry is gone: a renewal of its slot is refused, and a look queues it anew.
    let r = look(&f, &a, json!({"group": "deploy-prod", "renew": true})).await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        "no longer holds a slot",
    );
    let v = look_ok(&f, &a, deploy()).await;
    assert_eq!(v["state"], "waiting", "{v}");
    assert_eq!(v["holders"], json!([named(&b)]));
}

#[tokio::test]
async fn a_retried_attempt_keeps_its_place() {
    let f = fx().await;
    let a = running(&f).await;
    let b = running(&f).await;
    let c = running(&f).await;
    for run in [&a, &b] {
        f.runs.set_attempts(&run.0, &run.1, 1);
    }
    assert_eq!(look_ok(&f, &a, deploy()).await["state"], "holding");
    assert_eq!(look_ok(&f, &b, deploy()).await["state"], "waiting");
    assert_eq!(look_ok(&f, &c, deploy()).await["ahead"], json!([named(&b)]));
    // Both runners' pods were lost; the next attempts enter again: a still holds, b is still
    // ahead of c.
    let as_attempt = |run: &(String, String, String), attempt: &str, method: Method| {
        Request::builder()
            .method(method)
            .uri(group_path(&run.0, &run.1))
            .header("authorization", format!("Bearer {}", run.2))
            .header(sparkwing_api::names::ATTEMPT_HEADER, attempt)
            .body(Body::from(deploy().to_string()))
            .unwrap()
    };
    let r = f.send(as_attempt(&a, "2", Method::POST)).await;
    assert_eq!(r.json()["state"], "holding", "{}", r.body);
    let r = f.send(as_attempt(&b, "2", Method::POST)).await;
    let v = r.json();
    assert_eq!(
        (v["state"].clone(), v["ahead"].clone()),
        (json!("waiting"), Value::Null),
        "{v}"
    );
    assert_eq!(look_ok(&f, &c, deploy()).await["ahead"], json!([named(&b)]));
    // The lost attempt's late leave is refused (fenced): it frees nothing.
    let r = f.send(as_attempt(&a, "1", Method::DELETE)).await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "superseded",
        "superseded by attempt 2",
    );
    assert_eq!(
        look_ok(&f, &b, deploy()).await["holders"],
        json!([named(&a)])
    );
}

#[tokio::test]
async fn collection_frees_the_entries_of_runs_that_ended_or_are_gone() {
    let f = fx().await;
    let a = running(&f).await;
    let b = running(&f).await;
    let c = running(&f).await;
    assert_eq!(look_ok(&f, &a, deploy()).await["state"], "holding");
    assert_eq!(look_ok(&f, &b, deploy()).await["state"], "waiting");
    assert_eq!(look_ok(&f, &c, deploy()).await["state"], "waiting");
    // a ended without its finish reaching the API; b's PipelineRun was deleted.
    f.runs.set_phase(&a.0, &a.1, RunPhase::Failed);
    f.runs.delete(&b.0, &b.1);
    let r = f
        .json(Method::POST, "/api/v1/admin/gc", &f.admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(look_ok(&f, &c, deploy()).await["state"], "holding");
}

#[tokio::test]
async fn bad_requests_are_refused_clearly() {
    let f = fx().await;
    let a = running(&f).await;
    let b = running(&f).await;
    for (body, part) in [
        (
            json!({"group": "deploy prod"}),
            "is invalid: use 1 to 128 letters",
        ),
        (json!({"group": ".x"}), "is invalid"),
        (json!({"group": "g", "limit": 0}), "has limit 0"),
        (json!({"group": "g", "holding": true}), "unknown field"),
        (json!({"limit": 1}), "group"),
    ] {
        let r = look(&f, &a, body).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", part);
    }
    // Only the run's own runner enters its group.
    for token in [&b.2, &f.trigger] {
        let r = f
            .json(Method::POST, &group_path(&a.0, &a.1), token, deploy())
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    // A renewal of a slot never taken; a run that ended; a run that does not exist.
    let r = look(&f, &a, json!({"group": "g", "renew": true})).await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        "no longer holds a slot of concurrency group g",
    );
    f.runs.set_phase(&a.0, &a.1, RunPhase::Succeeded);
    let r = look(&f, &a, deploy()).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "already finished");
    f.runs.delete(&b.0, &b.1);
    let r = look(&f, &b, deploy()).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "not found");
}

/// The body of a look by job `job`'s attempt.
fn job_deploy(job: &str) -> Value {
    json!({"group": "deploy-prod", "job": job})
}

/// `DELETE .../concurrency?job=JOB` by the run's runner (the attempt of `job` ended).
async fn leave_job(f: &Fx, run: &(String, String, String), job: Option<&str>) -> Res {
    let path = match job {
        Some(j) => format!("{}?job={j}", group_path(&run.0, &run.1)),
        None => group_path(&run.0, &run.1),
    };
    f.call(Method::DELETE, &path, Some(&run.2), Body::empty())
        .await
}

#[tokio::test]
async fn a_job_of_another_run_waits_while_a_job_holds_the_group() {
    let f = fx().await;
    let a = running(&f).await;
    let b = running(&f).await;
    let v = look_ok(&f, &a, job_deploy("deploy")).await;
    assert_eq!(
        (v["state"].clone(), v["job"].clone()),
        (json!("holding"), json!("deploy")),
        "{v}"
    );
    // B's job waits behind A's job (named NS/NAME/JOB); so does A's other job, and A's own
    // run entry in a group of the same key is a third entry.
    let held = format!("{}/deploy", named(&a));
    for _ in 0..2 {
        let v = look_ok(&f, &b, job_deploy("deploy")).await;
        assert_eq!(v["state"], "waiting", "{v}");
        assert_eq!(v["holders"], json!([held.clone()]));
        assert_eq!(
            v["waiting"],
            format!("waiting for concurrency group deploy-prod (1/1, held by run {held})")
        );
    }
    let v = look_ok(&f, &a, job_deploy("smoke")).await;
    assert_eq!(v["ahead"], json!([format!("{}/deploy", named(&b))]), "{v}");
    assert_eq!(look_ok(&f, &a, deploy()).await["state"], "waiting");
    // The run view shows the run's own entry, not its jobs'.
    let r = f
        .get(&format!("/api/v1/runs/{}/{}", b.0, b.1), &f.reader)
        .await;
    assert!(r.json().get("concurrency").is_none(), "{}", r.body);
    // The holder's renewal names its job; a job that holds nothing has nothing to renew.
    let v = look_ok(
        &f,
        &a,
        json!({"group": "deploy-prod", "job": "deploy", "renew": true}),
    )
    .await;
    assert_eq!(v["state"], "holding", "{v}");
    let r = look(
        &f,
        &b,
        json!({"group": "deploy-prod", "job": "other", "renew": true}),
    )
    .await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        &format!(
            "job other of run {} no longer holds a slot of concurrency group deploy-prod",
            named(&b)
        ),
    );

    // The run's own leave frees its own entry only: A's job still holds.
    let r = leave_job(&f, &a, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(
        look_ok(&f, &b, job_deploy("deploy")).await["state"],
        "waiting"
    );
    // A's job's attempt ends: its leave frees the slot at once, and B's job (first in line)
    // takes it; A's other job still waits.
    let r = leave_job(&f, &a, Some("deploy")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(
        look_ok(&f, &b, job_deploy("deploy")).await["state"],
        "holding"
    );
    let v = look_ok(&f, &a, job_deploy("smoke")).await;
    assert_eq!(
        (v["state"].clone(), v["holders"].clone()),
        (json!("waiting"), json!([format!("{}/deploy", named(&b))])),
        "{v}"
    );
    // A retry of A's job queues again, at the back.
    let v = look_ok(&f, &a, job_deploy("deploy")).await;
    assert_eq!(v["ahead"], json!([format!("{}/smoke", named(&a))]), "{v}");

    // B's runner pod was lost: its next attempt keeps the job's slot while the lease holds.
    f.runs.set_attempts(&b.0, &b.1, 1);
    let again = Request::builder()
        .method(Method::POST)
        .uri(group_path(&b.0, &b.1))
        .header("authorization", format!("Bearer {}", b.2))
        .header(sparkwing_api::names::ATTEMPT_HEADER, "2")
        .body(Body::from(job_deploy("deploy").to_string()))
        .unwrap();
    let r = f.send(again).await;
    assert_eq!(r.json()["state"], "holding", "{}", r.body);

    // The run's end frees its jobs' entries too.
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{}/{}/finish", b.0, b.1),
            &b.2,
            json!({"phase": "Succeeded"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        look_ok(&f, &a, job_deploy("smoke")).await["state"],
        "holding"
    );
}

#[tokio::test]
async fn cancel_in_progress_from_a_job_cancels_the_older_runs_never_its_own() {
    let f = fx().await;
    let a = running(&f).await;
    let b = running(&f).await;
    let c = running(&f).await;
    // A's job holds, B's run entry waits, C's job "build" waits too.
    assert_eq!(
        look_ok(&f, &a, job_deploy("deploy")).await["state"],
        "holding"
    );
    assert_eq!(look_ok(&f, &b, deploy()).await["state"], "waiting");
    assert_eq!(
        look_ok(&f, &c, job_deploy("build")).await["state"],
        "waiting"
    );
    // C's job "deploy" cancels the older *runs* A and B (not its own run's job), once each.
    let cip = json!({"group": "deploy-prod", "job": "deploy", "cancelInProgress": true});
    let v = look_ok(&f, &c, cip.clone()).await;
    assert_eq!(v["state"], "waiting", "{v}");
    assert_eq!(v["cancelled"], json!([named(&a), named(&b)]), "{v}");
    for old in [&a, &b] {
        let run = f.runs.run(&old.0, &old.1).unwrap();
        assert_eq!(run.spec.cancel, Some(CancelMode::Cancelled));
        assert_eq!(
            run.metadata.annotations.unwrap()[sparkwing_api::names::CANCELLED_BY_ANNOTATION],
            format!("concurrency group deploy-prod (run {})", named(&c))
        );
    }
    assert!(f.runs.run(&c.0, &c.1).unwrap().spec.cancel.is_none());
    let v = look_ok(&f, &c, cip.clone()).await;
    assert!(v.get("cancelled").is_none(), "{v}");
    // The older runs end: C's "build" job is first, C's "deploy" waits for it.
    for old in [&a, &b] {
        let r = f
            .json(
                Method::POST,
                &format!("/api/v1/runs/{}/{}/finish", old.0, old.1),
                &old.2,
                json!({"phase": "Cancelled"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let v = look_ok(&f, &c, cip.clone()).await;
    assert_eq!(
        (v["state"].clone(), v["ahead"].clone()),
        (json!("waiting"), json!([format!("{}/build", named(&c))])),
        "{v}"
    );
    assert!(v.get("cancelled").is_none(), "{v}");
    assert_eq!(
        look_ok(&f, &c, job_deploy("build")).await["state"],
        "holding"
    );
}

#[tokio::test]
async fn bad_job_entries_are_refused_clearly() {
    let f = fx().await;
    let a = running(&f).await;
    for job in ["a b", ".x", ""] {
        let r = look(&f, &a, json!({"group": "g", "job": job})).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "is invalid");
    }
    let r = f
        .call(
            Method::DELETE,
            &format!("{}?jbo=deploy", group_path(&a.0, &a.1)),
            Some(&a.2),
            Body::empty(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "job=JOB");
    // Leaving a job that has no entry is fine.
    let r = leave_job(&f, &a, Some("deploy")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}
