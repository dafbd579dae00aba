//! A run's life after its trigger: the archive, external runs and their end, finish, jobs a lost runner left open, branch checks.

use super::*;

#[tokio::test]
async fn api_archive_outlives_the_pipeline_run() {
    let f = fx().await;
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
async fn api_external_run_gets_its_token_and_records_its_end() {
    let f = fx().await;
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
    // A fan-out's job id comes percent-encoded as one path segment and is decoded.
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/jobs/test%5B3%5D"),
            &token,
            json!({"state": "succeeded"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/jobs/test%5Bx%5D"),
            &token,
            json!({"state": "succeeded"}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid job name",
    );
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
    assert_eq!(
        r.json()["jobs"]["test[3]"]["state"],
        "succeeded",
        "{}",
        r.body
    );

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
    assert!(f.st.store.archived(&ns, &name).await.unwrap().is_some());
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
    let f = fx().await;
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
    let f = fx().await;
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

/// `method path` with a runner `token` naming `attempt` (`Sparkwing-Attempt`).
async fn as_attempt(
    f: &Fx,
    method: Method,
    path: &str,
    token: &str,
    attempt: &str,
    body: Value,
) -> Res {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header(sparkwing_api::names::ATTEMPT_HEADER, attempt)
        .body(Body::from(body.to_string()))
        .unwrap();
    f.send(req).await
}

/// A runner whose pod was lost gets SIGTERM and finishes `Cancelled` while the operator may
/// still start another attempt: that finish must not revoke the token the next attempt uses,
/// and once a newer attempt exists every call of the old one is refused.
#[tokio::test]
async fn api_a_lost_attempt_keeps_the_runs_token_and_is_fenced_once_superseded() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let finish = format!("/api/v1/runs/{ns}/{name}/finish");
    let logs = format!("/api/v1/runs/{ns}/{name}/logs");
    let line = |seq: u64, text: &str| json!([{"job": "build", "seq": seq, "ts": "2026-01-01T00:00:00Z", "line": text}]);
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    f.runs.set_attempts(&ns, &name, 1);
    let r = as_attempt(&f, Method::POST, &logs, &runner, "1", line(1, "one")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Attempt 1 stopped by a signal: archived, the token kept.
    let r = as_attempt(
        &f,
        Method::POST,
        &finish,
        &runner,
        "1",
        json!({"phase": "Cancelled", "message": "SIGTERM"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(f.st.store.archived(&ns, &name).await.unwrap().is_some());
    assert_eq!(
        f.get("/api/v1/whoami", &runner).await.status,
        StatusCode::OK
    );
    // The operator starts attempt 2; its first call makes attempt 1 stale on this replica at
    // once (no re-read of the run needed).
    let r = as_attempt(
        &f,
        Method::GET,
        &format!("/api/v1/runs/{ns}/{name}"),
        &runner,
        "2",
        json!(null),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for (method, path, body) in [
        (Method::POST, &logs, line(2, "late")),
        (Method::POST, &finish, json!({"phase": "Failed"})),
        (
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/jobs/build"),
            json!({"state": "failed"}),
        ),
    ] {
        let r = as_attempt(&f, method, path, &runner, "1", body).await;
        assert_error(
            &r,
            StatusCode::CONFLICT,
            "superseded",
            "attempt 1 was superseded by attempt 2; this runner must stop",
        );
    }
    // Nothing of the late attempt was taken: attempt 2 continues after seq 1, and the token
    // still works.
    let r = as_attempt(&f, Method::POST, &logs, &runner, "2", line(2, "two")).await;
    assert_eq!(r.json(), json!({"accepted": 1, "duplicates": 0}));
    assert_eq!(
        f.get("/api/v1/whoami", &runner).await.status,
        StatusCode::OK
    );
    // A malformed attempt is a 400.
    let r = as_attempt(&f, Method::POST, &logs, &runner, "two", line(3, "x")).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "Sparkwing-Attempt",
    );
    // Attempt 2 ends the pipeline: the token is revoked at once.
    let r = as_attempt(
        &f,
        Method::POST,
        &finish,
        &runner,
        "2",
        json!({"phase": "Succeeded"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        f.get("/api/v1/whoami", &runner).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Another replica learns of a newer attempt from the run's `status.attempts`.
#[tokio::test]
async fn api_a_superseded_attempt_is_refused_from_the_runs_status() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    f.runs.set_attempts(&ns, &name, 3);
    let r = as_attempt(
        &f,
        Method::PUT,
        &format!("/api/v1/runs/{ns}/{name}/branch-check"),
        &runner,
        "2",
        json!({"inSync": true}),
    )
    .await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "superseded",
        "attempt 2 was superseded by attempt 3",
    );
    // The header means nothing on a token that is not a runner's.
    let r = as_attempt(
        &f,
        Method::GET,
        &format!("/api/v1/runs/{ns}/{name}"),
        &f.reader,
        "1",
        json!(null),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn api_finish_cancelled_of_an_ended_run_revokes_and_the_sweep_expires_the_rest() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let finish = format!("/api/v1/runs/{ns}/{name}/finish");
    f.runs.set_attempts(&ns, &name, 1);
    // A Cancelled finish while the run is still Running keeps the token...
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let body = json!({"phase": "Cancelled"});
    let r = f.json(Method::POST, &finish, &runner, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        f.get("/api/v1/whoami", &runner).await.status,
        StatusCode::OK
    );
    // ...until the run has ended: the sweep expires it...
    f.runs.set_phase(&ns, &name, RunPhase::Cancelled);
    assert_eq!(expire_runner_tokens(&f.st).await.unwrap(), 1);
    assert_eq!(
        f.get("/api/v1/whoami", &runner).await.status,
        StatusCode::UNAUTHORIZED
    );
    // ...and a Cancelled finish of a run that has ended revokes at once.
    let (ns, name) = f.trigger_run(&id).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    f.runs.set_phase(&ns, &name, RunPhase::Cancelled);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            &runner,
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        f.get("/api/v1/whoami", &runner).await.status,
        StatusCode::UNAUTHORIZED
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
    let body = crate::runs::backend::external_status_patch(&end, Some("17")).unwrap();
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
    let f = fx().await;
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

#[tokio::test]
async fn api_runner_reports_its_runs_branch_check_and_only_its_own() {
    use crate::runs::backend::{BRANCHES_IN_SYNC_ANNOTATION, BRANCH_DRIFT_ANNOTATION};
    use sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION;
    let f = fx().await;
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

#[tokio::test]
async fn api_job_states_carry_their_outputs_within_the_cap() {
    use sparkwing_api::wire::MAX_JOB_OUTPUTS_BYTES;
    let f = fx().await;
    let (ns, name, token) = trigger_external(&f).await;
    let job = |j: &str| format!("/api/v1/runs/{ns}/{name}/jobs/{j}");
    // A job's end with its outputs (masked by the runner), read back with the run.
    let r = f
        .json(
            Method::PUT,
            &job("detect"),
            &token,
            json!({"state": "success", "attempt": 1, "outputs": {"version": "1.2.3", "token": "***"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // A runner before outputs: no field, accepted as before.
    let r = f
        .json(
            Method::PUT,
            &job("build"),
            &token,
            json!({"state": "success", "attempt": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // Exactly at the cap: accepted.
    let at_cap = "x".repeat(MAX_JOB_OUTPUTS_BYTES - 1);
    let r = f
        .json(
            Method::PUT,
            &job("full"),
            &token,
            json!({"state": "success", "attempt": 1, "outputs": {"v": at_cap}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // Over it: 413 naming the job and the cap; nothing stored.
    let r = f
        .json(
            Method::PUT,
            &job("huge"),
            &token,
            json!({"state": "success", "attempt": 1, "outputs": {"v": format!("{at_cap}x")}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!(
            "job huge: its outputs hold {} bytes",
            MAX_JOB_OUTPUTS_BYTES + 1
        ),
    );
    assert!(r
        .body
        .contains(&format!("limit of {MAX_JOB_OUTPUTS_BYTES} bytes per job")));
    // Other shapes: 400 saying what an output is.
    for (bad, says) in [
        (json!(["v"]), "must be a JSON object"),
        (json!({"n": 1}), "output \"n\" is not a string"),
    ] {
        let r = f
            .json(
                Method::PUT,
                &job("odd"),
                &token,
                json!({"state": "success", "outputs": bad}),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", says);
    }
    let jobs = f
        .get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader)
        .await
        .json()["jobs"]
        .clone();
    assert_eq!(
        jobs["detect"]["outputs"],
        json!({"version": "1.2.3", "token": "***"}),
        "{jobs}"
    );
    assert!(jobs["build"].get("outputs").is_none(), "{jobs}");
    assert_eq!(
        jobs["full"]["outputs"]["v"].as_str().unwrap().len(),
        MAX_JOB_OUTPUTS_BYTES - 1
    );
    assert!(
        jobs.get("huge").is_none() && jobs.get("odd").is_none(),
        "{jobs}"
    );
    // A later attempt's report replaces the state, outputs with it (they are its end's).
    let r = f
        .json(
            Method::PUT,
            &job("full"),
            &token,
            json!({"state": "running", "attempt": 2}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);

    // The run ends and its PipelineRun goes: the archived run answers the same outputs.
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            &token,
            json!({"phase": "Succeeded"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    f.runs.delete(&ns, &name);
    let v = f
        .get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader)
        .await
        .json();
    assert_eq!(v["live"], false, "{v}");
    assert_eq!(
        v["jobs"]["detect"]["outputs"],
        json!({"version": "1.2.3", "token": "***"}),
        "{v}"
    );
    assert!(v["jobs"]["full"].get("outputs").is_none(), "{v}");
}
