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

/// The run's events of `kind`, oldest first.
fn events_of(sw: &Sw, id: &str, kind: &str) -> Vec<Value> {
    let (_, status) = sw.status(id);
    status["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// Start `ship` with one box slot and wait until its gate waits and it gave its slot up.
fn ship_parked(sw: &Sw) -> (Running, String) {
    let mut run = sw.spawn(["run", "ship", "--sw-box-slots", "1"]);
    let id = run.wait_run_id();
    wait_until(
        Duration::from_secs(60),
        "the gate to wait and the run to free its box slot",
        || !events_of(sw, &id, "box_slot_released").is_empty(),
    );
    (run, id)
}

/// The `deploy` fixture's `order.txt`: `start RUN` and `end RUN` lines.
fn order(sw: &Sw) -> Vec<String> {
    std::fs::read_to_string(sw.root().join("order.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_waiting_gate_frees_the_box_slot_for_other_runs() {
    let sw = Sw::fixture("gates");
    let (a, id) = ship_parked(&sw);
    assert_eq!(sw.job_state(&id, "approve").as_deref(), Some("waiting"));
    let released = events_of(&sw, &id, "box_slot_released");
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["payload"]["reason"], "waiting for gate approve");
    assert!(
        a.stdout_so_far().contains("box_slot_released"),
        "{}",
        a.stdout_so_far()
    );
    // The parked run keeps its lock: it is still running, and its gate can be decided.
    assert_eq!(sw.status(&id).1["status"], "running");

    // Another run of the host is admitted at once (it would exit 75 with the slot taken).
    let other = sw.sw(["run", "deploy", "--sw-box-slots", "1", "--sw-no-wait"]);
    other.assert_code(0);
    assert_eq!(ran(&sw), ["build"]);

    // Approved: the parked run takes a slot again, then runs what needed the gate.
    sw.sw(["runs", "approve", "--run", &id, "--gate", "approve"])
        .assert_code(0);
    a.finish().assert_code(0);
    assert_eq!(ran(&sw), ["build", "deploy", "cleanup"]);
    let (_, status) = sw.status(&id);
    let kinds: Vec<String> = status["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .filter(|k| {
            [
                "box_slot_released",
                "gate_decided",
                "queued",
                "admitted",
                "job_started",
            ]
            .contains(&k.as_str())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "job_started",
            "box_slot_released",
            "gate_decided",
            "queued",
            "admitted",
            "job_started",
            "job_started"
        ],
        "{status}"
    );
    let queued = events_of(&sw, &id, "queued");
    assert_eq!(queued[0]["payload"]["jobs"], serde_json::json!(["deploy"]));
    assert_eq!(queued[0]["payload"]["max"], 1);
}

#[test]
fn after_approval_a_parked_run_queues_behind_the_run_holding_the_slot() {
    let sw = Sw::fixture("gates");
    let (a, id) = ship_parked(&sw);
    // Run B takes the free slot and holds it (its job waits while `hold` exists).
    std::fs::write(sw.root().join("hold"), "").unwrap();
    let mut b = sw.spawn(["run", "deploy", "--sw-box-slots", "1"]);
    let b_id = b.wait_run_id();
    wait_until(Duration::from_secs(60), "run B's job to start", || {
        order(&sw).contains(&format!("start {b_id}"))
    });

    sw.sw(["runs", "approve", "--run", &id, "--gate", "approve"])
        .assert_code(0);
    wait_until(
        Duration::from_secs(60),
        "the approved run to queue for a box slot",
        || !events_of(&sw, &id, "queued").is_empty(),
    );
    // It waits in the queue: deploy has not started while B holds the slot.
    assert_eq!(sw.job_state(&id, "approve").as_deref(), Some("success"));
    assert_eq!(sw.job_state(&id, "deploy").as_deref(), Some("pending"));
    assert!(events_of(&sw, &id, "admitted").is_empty());
    assert_eq!(ran(&sw), ["build"]);

    std::fs::remove_file(sw.root().join("hold")).unwrap();
    b.finish().assert_code(0);
    let out = a.finish();
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("waiting for box slot (1 active, max 1)"),
        "{out}"
    );
    assert_eq!(ran(&sw), ["build", "deploy", "cleanup"]);
    // It took the slot only once B had ended.
    let b_finished = sw.listed_run(&b_id)["finished_at"]
        .as_i64()
        .unwrap_or(i64::MAX);
    let admitted = events_of(&sw, &id, "admitted");
    assert_eq!(admitted.len(), 1, "{admitted:?}");
    assert!(
        admitted[0]["ts"].as_i64().unwrap_or(0) >= b_finished,
        "admitted {admitted:?} before B finished at {b_finished}"
    );
}

#[test]
fn cancel_while_queued_again_after_a_gate_cancels_the_run() {
    let sw = Sw::fixture("gates");
    // `timed` has no finally job: once cancelled it has nothing left to run.
    let mut a = sw.spawn([
        "run",
        "timed",
        "--timeout-ms",
        "600000",
        "--sw-box-slots",
        "1",
    ]);
    let id = a.wait_run_id();
    wait_until(
        Duration::from_secs(60),
        "the run to free its box slot",
        || !events_of(&sw, &id, "box_slot_released").is_empty(),
    );
    std::fs::write(sw.root().join("hold"), "").unwrap();
    let mut b = sw.spawn(["run", "deploy", "--sw-box-slots", "1"]);
    let b_id = b.wait_run_id();
    wait_until(Duration::from_secs(60), "run B's job to start", || {
        order(&sw).contains(&format!("start {b_id}"))
    });
    sw.sw(["runs", "approve", "--run", &id, "--gate", "approve"])
        .assert_code(0);
    wait_until(
        Duration::from_secs(60),
        "the approved run to queue for a box slot",
        || !events_of(&sw, &id, "queued").is_empty(),
    );

    sw.sw(["runs", "cancel", "--run", &id]).assert_code(0);
    a.finish().assert_code(130);
    let (code, status) = sw.status(&id);
    assert_eq!(code, 130);
    assert_eq!(status["status"], "cancelled");
    assert_eq!(find_job(&status, "deploy")["state"], "cancelled");
    assert!(ran(&sw).is_empty(), "{:?}", ran(&sw));
    // It left the queue: no ticket is left behind, and B still holds the slot.
    let tickets: Vec<String> = std::fs::read_dir(sw.home().join("box-slots"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ticket"))
        .collect();
    assert!(tickets.is_empty(), "{tickets:?}");
    assert!(!order(&sw).contains(&format!("end {b_id}")));
    std::fs::remove_file(sw.root().join("hold")).unwrap();
    b.finish().assert_code(0);
}
