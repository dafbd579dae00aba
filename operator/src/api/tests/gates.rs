//! Approval gates of cluster runs: `POST|GET /api/v1/runs/{ns}/{name}/gates/{gate}`.

use super::*;

fn gate_path(ns: &str, name: &str, gate: &str) -> String {
    format!("/api/v1/runs/{ns}/{name}/gates/{gate}")
}

#[tokio::test]
async fn approving_needs_approvals_write_and_the_first_decision_stands() {
    let f = fx().await;
    let (ns, name, runner) = waiting_run(&f).await;
    let path = gate_path(&ns, &name, "approve-prod");
    let approve = json!({"decision": "approve", "comment": "looks good"});

    // Reading and triggering runs is not deciding them; nor is being the run's runner.
    for token in [&f.reader, &f.trigger, &runner] {
        let r = f.json(Method::POST, &path, token, approve.clone()).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "approvals:write");
        assert_eq!(r.json()["scope"], "approvals:write");
    }
    let r = f.get(&path, &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"namespace": ns, "name": name, "gate": "approve-prod"})
    );

    let ana = token(&f.st, "ana@example.com", &["approvals:write"]).await;
    let r = f.json(Method::POST, &path, &ana, approve.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    assert_eq!(v["decided"]["decision"], "approve");
    assert_eq!(v["decided"]["by"], "ana@example.com");
    assert_eq!(v["decided"]["comment"], "looks good");
    assert!(v["decided"].get("timedOut").is_none(), "{v}");

    // The run's runner reads it (to relay it to its engine), as does a reader.
    for token in [&runner, &f.reader] {
        let r = f.get(&path, token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.json()["decided"], v["decided"]);
    }

    // A second decision, a person's or the timeout's: 409 naming the standing one.
    let bo = token(&f.st, "bo", &["approvals:write"]).await;
    let r = f
        .json(Method::POST, &path, &bo, json!({"decision": "reject"}))
        .await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        &format!("gate \"approve-prod\" of run {ns}/{name} was already approved by ana@example.com: looks good"),
    );
    let r = f
        .json(
            Method::POST,
            &path,
            &runner,
            json!({"decision": "reject", "timedOut": true}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        "already approved by ana",
    );
    // Admin implies approvals:write.
    let r = f
        .json(Method::POST, &path, &f.admin, json!({"decision": "reject"}))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "already approved");
    assert_eq!(
        f.get(&path, &f.reader).await.json()["decided"],
        v["decided"]
    );
}

#[tokio::test]
async fn the_runner_records_its_gates_timeout_and_only_its_own() {
    let f = fx().await;
    let (ns, name, runner) = waiting_run(&f).await;
    let (ns2, name2, other_runner) = waiting_run(&f).await;
    let path = gate_path(&ns, &name, "approve-prod");
    let timeout =
        json!({"decision": "reject", "comment": "no decision within 1m", "timedOut": true});
    // A person cannot claim to be the timeout; another run's runner cannot decide this run.
    let ana = token(&f.st, "ana", &["approvals:write"]).await;
    for token in [&ana, &other_runner] {
        let r = f.json(Method::POST, &path, token, timeout.clone()).await;
        assert_error(
            &r,
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("run:{ns}/{name}"),
        );
    }
    let r = f.get(&path, &other_runner).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = f.json(Method::POST, &path, &runner, timeout).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let d = &r.json()["decided"];
    assert_eq!(
        (
            d["decision"].clone(),
            d["by"].clone(),
            d["timedOut"].clone()
        ),
        (json!("reject"), json!("timeout"), json!(true))
    );
    // The other run's gate is its own.
    let r = f
        .get(&gate_path(&ns2, &name2, "approve-prod"), &f.reader)
        .await;
    assert!(r.json().get("decided").is_none(), "{}", r.body);
}

#[tokio::test]
async fn unknown_gates_and_runs_gates_not_waiting_and_finished_runs_are_refused() {
    let f = fx().await;
    let (ns, name, _) = waiting_run(&f).await;
    let ana = token(&f.st, "ana", &["approvals:write"]).await;
    let approve = json!({"decision": "approve"});
    let post = |gate: &str| gate_path(&ns, &name, gate);

    let r = f
        .json(Method::POST, &post("nope"), &ana, approve.clone())
        .await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("run {ns}/{name} has no gate \"nope\"; its gates: "),
    );
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("approve-prod"));
    // A job that is not a gate is no gate.
    let r = f
        .json(Method::POST, &post("build"), &ana, approve.clone())
        .await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        "has no gate \"build\"",
    );
    let r = f
        .json(
            Method::POST,
            &gate_path(&ns, "never", "approve-prod"),
            &ana,
            approve.clone(),
        )
        .await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("run {ns}/never not found"),
    );
    let r = f
        .get(&gate_path(&ns, "never", "approve-prod"), &f.reader)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "not found");

    // A gate whose needs have not ended.
    let r = f
        .json(Method::POST, &post("approve-eu"), &ana, approve.clone())
        .await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        "is not waiting for a decision (it is pending); a gate can be decided once the jobs it needs have finished",
    );

    // Bad bodies and names.
    for bad in [
        json!({"decision": "maybe"}),
        json!({}),
        json!({"decision": "approve", "by": "someone"}),
        json!({"decision": "approve", "comment": "a\u{7}b"}),
        json!({"decision": "approve", "comment": "x".repeat(3000)}),
    ] {
        let r = f
            .json(Method::POST, &post("approve-prod"), &ana, bad.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    let r = f
        .json(Method::POST, &post(".hidden"), &ana, approve.clone())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // The run ended (cancelled while the gate waited): too late, live or archived.
    f.runs.set_phase(&ns, &name, RunPhase::Cancelled);
    let r = f
        .json(Method::POST, &post("approve-prod"), &ana, approve.clone())
        .await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        &format!(
            "run {ns}/{name} already finished (cancelled); its gates can no longer be decided"
        ),
    );
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
    assert_eq!(r.json()["archived"], true, "{}", r.body);
    f.runs.delete(&ns, &name);
    let r = f
        .json(Method::POST, &post("approve-prod"), &ana, approve)
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "already finished");
    let r = f.get(&post("approve-prod"), &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.json().get("decided").is_none(), "{}", r.body);
}

#[tokio::test]
async fn approvers_of_the_runs_pipeline_decide_without_the_scope() {
    let mut f = fx().await;
    let pipelines = Arc::new(MemoryPipelines::default());
    f.st =
        f.st.clone()
            .with_webhooks(Webhooks::new(None, pipelines.clone()));
    let (ns, name, runner) = waiting_run(&f).await;
    let path = gate_path(&ns, &name, "approve-prod");
    let approve = json!({"decision": "approve", "comment": "ship it"});
    let ana = token(&f.st, "ana@example.com", &["runs:read"]).await;
    let bo = token(&f.st, "bo", &["runs:read", "runs:trigger"]).await;
    let refused = |r: &Res, why: &str| {
        assert_error(
            r,
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("missing scope approvals:write; {why}"),
        );
        assert_eq!(r.json()["scope"], "approvals:write", "{}", r.body);
    };

    // A run not started from a Pipeline has no approvers.
    let r = f.json(Method::POST, &path, &ana, approve.clone()).await;
    refused(
        &r,
        &format!("run {ns}/{name} was not started from a Pipeline, so it has no approvers"),
    );
    // Started from deploy, which is gone since.
    started_from(&f, &ns, &name, "deploy");
    let r = f.json(Method::POST, &path, &ana, approve.clone()).await;
    refused(
        &r,
        &format!("the run's Pipeline {ns}/deploy no longer exists, so it has no approvers"),
    );
    // deploy lists nobody; a Pipeline of the same name elsewhere does not count.
    pipelines.set(vec![
        deploy(&ns, &[]),
        deploy("elsewhere", &["ana@example.com"]),
    ]);
    let r = f.json(Method::POST, &path, &ana, approve.clone()).await;
    refused(
        &r,
        &format!("Pipeline {ns}/deploy lists no approvers (spec.approvers)"),
    );

    // deploy lists ana and team-leads (and, wrongly, the run's runner).
    let runner_principal = format!("runner:{ns}/{name}");
    pipelines.set(vec![deploy(
        &ns,
        &["ana@example.com", "team-leads", &runner_principal],
    )]);
    let r = f.json(Method::POST, &path, &bo, approve.clone()).await;
    refused(
        &r,
        &format!("bo is not in spec.approvers of Pipeline {ns}/deploy"),
    );
    // A runner's token is never an approver.
    let r = f.json(Method::POST, &path, &runner, approve.clone()).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope approvals:write",
    );
    assert_eq!(r.json()["message"], "missing scope approvals:write");
    // An approver is held to the same rule as anyone: the pending gate is not waiting yet.
    let r = f
        .json(
            Method::POST,
            &gate_path(&ns, &name, "approve-eu"),
            &ana,
            approve.clone(),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "is not waiting");
    // ana decides, recorded as her principal.
    let r = f.json(Method::POST, &path, &ana, approve.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let d = &r.json()["decided"];
    assert_eq!(
        (d["by"].clone(), d["comment"].clone()),
        (json!("ana@example.com"), json!("ship it"))
    );
    assert_eq!(f.get(&path, &f.reader).await.json()["decided"], *d);

    // A token of a listed team principal decides another run of the Pipeline.
    let (ns2, name2, _) = waiting_run(&f).await;
    started_from(&f, &ns2, &name2, "deploy");
    let leads = token(&f.st, "team-leads", &["runs:read"]).await;
    let r = f
        .json(
            Method::POST,
            &gate_path(&ns2, &name2, "approve-prod"),
            &leads,
            json!({"decision": "reject"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.json()["decided"]["by"], "team-leads");

    // Once the run is gone, its Pipeline's approvers no longer apply.
    f.runs.set_phase(&ns, &name, RunPhase::Cancelled);
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &f.reader).await;
    assert_eq!(r.json()["archived"], true, "{}", r.body);
    f.runs.delete(&ns, &name);
    let r = f
        .json(
            Method::POST,
            &gate_path(&ns, &name, "approve-eu"),
            &ana,
            approve,
        )
        .await;
    refused(
        &r,
        &format!("run {ns}/{name} is not live (unknown, or finished and removed), so no Pipeline's approvers apply"),
    );
}

/// The park the API recorded on run `ns/name` (`sparkwing.dev/parked`), if any.
fn parked_of(f: &Fx, ns: &str, name: &str) -> Option<Value> {
    let run = f.runs.run(ns, name)?;
    let a = run.metadata.annotations?;
    serde_json::from_str(a.get("sparkwing.dev/parked")?).ok()
}

#[tokio::test]
async fn a_parked_run_is_recorded_on_the_run_and_a_decision_marks_it_decided() {
    let f = fx().await;
    let (ns, name, runner) = waiting_run(&f).await;
    let finish = format!("/api/v1/runs/{ns}/{name}/finish");
    let park = json!({"message": "waiting for gate approve-prod",
        "parked": {"attempt": 1, "gates": ["approve-prod"], "deadlineMs": 1_700_000_000_000i64}});
    // Bad parks are refused and record nothing.
    for (body, want) in [
        (
            json!({"phase": "Succeeded", "parked": {"attempt": 1, "gates": ["approve-prod"]}}),
            "either \"phase\" or \"parked\"",
        ),
        (
            json!({"parked": {"attempt": 1, "gates": []}}),
            "the gates it waits for",
        ),
        (
            json!({"parked": {"attempt": 0, "gates": ["approve-prod"]}}),
            "the attempt that parked",
        ),
    ] {
        let r = f.json(Method::POST, &finish, &runner, body).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", want);
    }
    assert_eq!(parked_of(&f, &ns, &name), None);
    let r = f.json(Method::POST, &finish, &runner, park.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        parked_of(&f, &ns, &name),
        Some(
            json!({"attempt": 1, "gates": ["approve-prod"], "deadlineMs": 1_700_000_000_000i64, "decided": false})
        )
    );
    // Not an end: the runner's token still works.
    let r = f.get(&gate_path(&ns, &name, "approve-prod"), &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A decision on the parked gate marks the park decided.
    let ana = token(&f.st, "ana", &["approvals:write"]).await;
    let r = f
        .json(
            Method::POST,
            &gate_path(&ns, &name, "approve-prod"),
            &ana,
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(parked_of(&f, &ns, &name).unwrap()["decided"], true);

    // Decided before the park reached the API: recorded decided at once.
    let (ns, name, runner) = waiting_run(&f).await;
    let r = f
        .json(
            Method::POST,
            &gate_path(&ns, &name, "approve-prod"),
            &ana,
            json!({"decision": "reject"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            &runner,
            park,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(parked_of(&f, &ns, &name).unwrap()["decided"], true);
}
