//! Approval gates on `sparkwing run`: a gate waits once its needs succeeded; `runs approve|reject`
//! from another process decides it (who, when, why recorded and shown), a timeout decides its
//! default outcome, a cancel stops it; bad decisions are refused with their exit codes. Every job
//! of the `gates` fixture appends its name to `ran.txt`.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

/// The jobs that ran so far, in order.
fn ran(sw: &Sw) -> Vec<String> {
    std::fs::read_to_string(sw.root().join("ran.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Start `ship` and wait until its gate waits.
fn ship_waiting(sw: &Sw) -> (Running, String) {
    let mut run = sw.spawn(["run", "ship"]);
    let id = run.wait_run_id();
    wait_until(Duration::from_secs(60), "the gate to wait", || {
        sw.job_state(&id, "approve").as_deref() == Some("waiting")
    });
    (run, id)
}

fn gate_of(status: &Value) -> Value {
    status["gates"][0].clone()
}

#[test]
fn an_approved_gate_lets_its_dependents_run_and_records_who_when_why() {
    let sw = Sw::fixture("gates");
    let (run, id) = ship_waiting(&sw);
    // Nothing past the gate ran, and status says how to decide it.
    assert_eq!(ran(&sw), ["build"]);
    let pretty = sw.sw(["runs", "status", &id]);
    pretty.assert_code(1);
    assert!(
        pretty.stdout.contains(&format!(
            "gate approve: waiting for a decision (Ship it?) (sparkwing runs approve|reject --run {id} --gate approve)"
        )),
        "{pretty}"
    );
    assert!(
        pretty
            .stdout
            .lines()
            .any(|l| l.starts_with("approve") && l.contains("waiting")),
        "{pretty}"
    );
    let (_, status) = sw.status(&id);
    assert_eq!(gate_of(&status)["state"], "waiting");
    assert_eq!(gate_of(&status)["message"], "Ship it?");
    assert_eq!(gate_of(&status)["decided"], Value::Null);

    let decided = sw.sw([
        "runs",
        "approve",
        "--run",
        &id,
        "--gate",
        "approve",
        "--comment",
        "looks good",
        "--as",
        "ana",
    ]);
    decided.assert_code(0);
    assert!(
        decided.stdout.contains(&format!(
            "gate approve of run {id}: approved by ana: looks good"
        )),
        "{decided}"
    );
    let out = run.finish();
    out.assert_code(0);
    assert_eq!(ran(&sw), ["build", "deploy", "cleanup"]);

    let (code, status) = sw.status(&id);
    assert_eq!(code, 0);
    let gate = gate_of(&status);
    assert_eq!(gate["state"], "success");
    assert_eq!(gate["decided"]["decision"], "approve");
    assert_eq!(gate["decided"]["by"], "ana");
    assert_eq!(gate["decided"]["comment"], "looks good");
    assert_eq!(gate["decided"]["timed_out"], false);
    assert!(gate["decided"]["at_ms"].as_i64().unwrap_or(0) > 0, "{gate}");
    assert_eq!(
        find_job(&status, "approve")["reason"],
        "approved by ana: looks good"
    );
    let pretty = sw.sw(["runs", "status", &id]);
    assert!(
        pretty
            .stdout
            .contains("gate approve: approved by ana: looks good at "),
        "{pretty}"
    );

    // A decided gate of a finished run: refused (2), and an unknown gate is not found (5).
    let again = sw.sw(["runs", "reject", "--run", &id, "--gate", "approve"]);
    again.assert_code(2);
    assert!(
        again.stderr.contains("gate \"approve\" of run ")
            && again
                .stderr
                .contains("was already approved by ana: looks good"),
        "{again}"
    );
    let unknown = sw.sw(["runs", "approve", "--run", &id, "--gate", "nope"]);
    unknown.assert_code(5);
    assert!(
        unknown
            .stderr
            .contains("has no gate \"nope\"; its gates: approve"),
        "{unknown}"
    );
    let no_run = sw.sw(["runs", "approve", "--run", "run-nope", "--gate", "approve"]);
    no_run.assert_code(5);
}

#[test]
fn a_rejected_gate_fails_and_cancels_what_needs_it() {
    let sw = Sw::fixture("gates");
    let (run, id) = ship_waiting(&sw);
    let decided = sw.sw([
        "runs",
        "reject",
        &id,
        "--gate",
        "approve",
        "--comment",
        "not today",
        "--as",
        "bo",
    ]);
    decided.assert_code(0);
    let out = run.finish();
    out.assert_code(1);
    // The finally job still ran; deploy did not.
    assert_eq!(ran(&sw), ["build", "cleanup"]);
    let (_, status) = sw.status(&id);
    assert_eq!(find_job(&status, "approve")["state"], "failed");
    assert_eq!(
        find_job(&status, "approve")["reason"],
        "rejected by bo: not today"
    );
    assert_eq!(find_job(&status, "deploy")["state"], "cancelled");
    assert_eq!(find_job(&status, "deploy")["reason"], "upstream-failed");
    assert_eq!(gate_of(&status)["decided"]["decision"], "reject");
    assert_eq!(status["error"], "job failed: approve");
}

#[test]
fn a_timeout_records_the_default_outcome() {
    let sw = Sw::fixture("gates");
    let approved = sw.sw(["run", "timed", "--on-timeout", "approve"]);
    approved.assert_code(0);
    let id = approved.run_id();
    assert_eq!(ran(&sw), ["deploy"]);
    let (_, status) = sw.status(&id);
    let gate = gate_of(&status);
    assert_eq!(gate["decided"]["decision"], "approve");
    assert_eq!(gate["decided"]["by"], "timeout");
    assert_eq!(gate["decided"]["timed_out"], true);
    assert_eq!(
        find_job(&status, "approve")["reason"],
        "approved by timeout: no decision within 1s"
    );

    // Without on_timeout a timeout rejects.
    let rejected = sw.sw(["run", "timed", "--timeout-ms", "100"]);
    rejected.assert_code(1);
    let (_, status) = sw.status(&rejected.run_id());
    assert_eq!(gate_of(&status)["decided"]["decision"], "reject");
    assert_eq!(find_job(&status, "deploy")["reason"], "upstream-failed");
    assert_eq!(ran(&sw), ["deploy"]);
}

#[test]
fn cancel_while_a_gate_waits_cancels_the_run() {
    let sw = Sw::fixture("gates");
    let (run, id) = ship_waiting(&sw);
    sw.sw(["runs", "cancel", "--run", &id]).assert_code(0);
    let out = run.finish();
    out.assert_code(130);
    assert_eq!(ran(&sw), ["build", "cleanup"]);
    let (code, status) = sw.status(&id);
    assert_eq!(code, 130);
    assert_eq!(find_job(&status, "approve")["state"], "cancelled");
    assert_eq!(find_job(&status, "deploy")["state"], "cancelled");
    assert_eq!(gate_of(&status)["decided"], Value::Null);
    // A cancelled run's gate can no longer be decided.
    let late = sw.sw(["runs", "approve", "--run", &id, "--gate", "approve"]);
    late.assert_code(2);
    assert!(
        late.stderr.contains("already finished (cancelled)"),
        "{late}"
    );
}

#[test]
fn ctrl_c_while_a_gate_waits_cancels_the_run() {
    let sw = Sw::fixture("gates");
    let (run, id) = ship_waiting(&sw);
    run.signal(nix::sys::signal::Signal::SIGINT);
    run.finish().assert_code(130);
    assert_eq!(sw.job(&id, "approve")["state"], "cancelled");
}

#[test]
fn with_a_profile_the_decider_is_the_tokens_principal_not_as() {
    let sw = Sw::fixture("gates");
    // Refused before any profile is read or any API is asked.
    let out = sw.sw([
        "runs",
        "approve",
        "ci/ship-1",
        "--gate",
        "approve",
        "--as",
        "bob",
        "--profile",
        "nowhere",
    ]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(
            "--as is for local runs: with --profile the decision is recorded as the principal of the profile's token"
        ),
        "{out}"
    );
}
