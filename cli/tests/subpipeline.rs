//! Sub-pipelines, locally: a job awaiting another pipeline with the real binary and a real fixture
//! (`cli/tests/fixtures/subpipeline`). The cluster case is in `subpipeline_remote.rs`.

mod common;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::Duration;

fn child_of(sw: &Sw, parent: &str) -> String {
    sw.job(parent, "deploy")["child_run"]
        .as_str()
        .unwrap_or_else(|| panic!("job deploy of {parent} names no child run"))
        .to_string()
}

#[test]
fn a_parent_awaits_a_child_that_succeeds() {
    let sw = Sw::fixture("subpipeline");
    let out = sw.sw(["run", "parent"]);
    out.assert_code(0);
    let parent = out.run_id();
    let (code, st) = sw.status(&parent);
    assert_eq!(code, 0);
    assert_eq!(st["status"], "success", "{st:#}");
    assert_eq!(st["parent_run_id"], Value::Null);
    let deploy = find_job(&st, "deploy");
    assert_eq!(deploy["state"], "success", "{deploy}");
    let child = child_of(&sw, &parent);
    assert_ne!(child, parent);
    // The child run is recorded with its parent.
    let (code, cst) = sw.status(&child);
    assert_eq!(code, 0);
    assert_eq!(cst["pipeline"], "child");
    assert_eq!(cst["status"], "success", "{cst:#}");
    assert_eq!(cst["parent_run_id"], parent.as_str());
    assert_eq!(cst["parent_job"], "deploy");
    assert_eq!(find_job(&cst, "work")["child_run"], Value::Null);
    // The child's lines are the awaiting job's log lines; the args reached the child.
    let lines = sw.log_lines(&parent, "deploy");
    assert!(
        lines.iter().any(|l| l == "work │ child says from-parent"),
        "{lines:?}"
    );
    assert_eq!(sw.log_lines(&child, "work"), ["child says from-parent"]);
    // The parent's own output says which run it awaited.
    let ev = out.events("child_run");
    assert_eq!(ev.len(), 1, "{out}");
    assert_eq!(ev[0]["child_run"], child.as_str());
    assert_eq!(ev[0]["pipeline"], "child");
    // Pretty status shows both links.
    let pretty = sw.sw(["runs", "status", "--run", &parent, "-o", "pretty"]);
    assert!(
        pretty.stdout.contains(&format!("child: {child}")),
        "{pretty}"
    );
    let pretty = sw.sw(["runs", "status", "--run", &child, "-o", "pretty"]);
    assert!(
        pretty
            .stdout
            .contains(&format!("parent:   {parent} job deploy")),
        "{pretty}"
    );
}

#[test]
fn a_failing_child_fails_the_awaiting_job_with_its_reason() {
    let sw = Sw::fixture("subpipeline");
    let out = sw.sw(["run", "parent", "--mode", "fail"]);
    out.assert_code(1);
    let parent = out.run_id();
    let child = child_of(&sw, &parent);
    let deploy = sw.job(&parent, "deploy");
    assert_eq!(deploy["state"], "failed", "{deploy}");
    assert_eq!(
        deploy["reason"],
        format!(
            "pipeline \"child\" (run {child}) failed: job work failed: exit code 1 (the deploy was refused)"
        ),
        "{deploy}"
    );
    let (code, st) = sw.status(&parent);
    assert_eq!(code, 1);
    assert_eq!(st["status"], "failed");
    let (code, cst) = sw.status(&child);
    assert_eq!(code, 1);
    assert_eq!(cst["status"], "failed");
    assert_eq!(cst["parent_run_id"], parent.as_str());
}

/// Start `parent --mode MODE` and wait until the child's job sleeps: (parent, its id, the child's).
fn start_sleeping(sw: &Sw, mode: &str) -> (Running, String, String) {
    let mut run = sw.spawn(["run", "parent", "--mode", mode]);
    let parent = run.wait_run_id();
    sw.wait_for_log_line(&parent, "deploy", "work │ child-sleeping");
    let child = child_of(sw, &parent);
    // The child's job process (bash may have exec'd the sleep in it).
    wait_until(Duration::from_secs(30), "the child's job processes", || {
        !run_processes(&child).is_empty()
    });
    (run, parent, child)
}

fn assert_both_cancelled(sw: &Sw, parent: &str, child: &str) {
    let (code, st) = sw.status(parent);
    assert_eq!(code, 130, "{st:#}");
    assert_eq!(st["status"], "cancelled");
    assert_eq!(find_job(&st, "deploy")["state"], "cancelled", "{st:#}");
    let (code, cst) = sw.status(child);
    assert_eq!(code, 130, "{cst:#}");
    assert_eq!(cst["status"], "cancelled");
    assert_eq!(find_job(&cst, "work")["state"], "cancelled", "{cst:#}");
    // No orphan: the child's engine (it carries the parent's run id) and its jobs are gone.
    assert_run_processes_gone(child);
    assert_run_processes_gone(parent);
    let pid = cst["pid"].as_i64().expect("the child run's pid");
    wait_until(
        Duration::from_secs(15),
        &format!("the child's sparkwing process {pid} to exit"),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().next())
                        == Some("Z")
                })
                .unwrap_or(true)
        },
    );
}

#[test]
fn ctrl_c_on_the_parent_cancels_the_child() {
    let sw = Sw::fixture("subpipeline");
    let (run, parent, child) = start_sleeping(&sw, "slow");
    run.signal(Signal::SIGINT);
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    assert_both_cancelled(&sw, &parent, &child);
}

#[test]
fn runs_cancel_of_the_parent_cancels_the_child() {
    let sw = Sw::fixture("subpipeline");
    let (run, parent, child) = start_sleeping(&sw, "slow");
    sw.sw(["runs", "cancel", "--run", &parent]).assert_code(0);
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    assert_both_cancelled(&sw, &parent, &child);
}

#[test]
fn a_child_job_that_ignores_sigterm_is_killed_by_the_child_not_orphaned() {
    let sw = Sw::fixture("subpipeline");
    let (run, parent, child) = start_sleeping(&sw, "stubborn");
    run.signal(Signal::SIGINT);
    // The child kills its job after its own grace; the parent waits longer than that for it.
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    assert!(!out.stderr.contains("second interrupt"), "{out}");
    assert_both_cancelled(&sw, &parent, &child);
}

#[test]
fn a_second_ctrl_c_kills_the_child_and_its_jobs_too() {
    let sw = Sw::fixture("subpipeline");
    // The child's job ignores SIGTERM: the first interrupt cannot stop it.
    let (run, parent, child) = start_sleeping(&sw, "stubborn");
    run.signal(Signal::SIGINT);
    wait_until(
        Duration::from_secs(30),
        "the child to start cancelling",
        || {
            sw.sw(["runs", "status", "--run", &child, "-o", "json"])
                .stdout
                .contains("run_cancelling")
        },
    );
    run.signal(Signal::SIGINT);
    let out = run.finish_within(Duration::from_secs(30));
    out.assert_code(130);
    assert!(out.stderr.contains("second interrupt"), "{out}");
    let (_, st) = sw.status(&parent);
    assert_eq!(st["status"], "cancelled", "{st:#}");
    let (_, cst) = sw.status(&child);
    assert_eq!(cst["status"], "cancelled", "{cst:#}");
    assert!(
        cst["error"]
            .as_str()
            .unwrap_or("")
            .contains("second interrupt"),
        "{cst:#}"
    );
    // The child's stubborn job went with it.
    assert_run_processes_gone(&child);
    assert_run_processes_gone(&parent);
}

#[test]
fn an_unknown_child_pipeline_is_refused_before_anything_runs() {
    let sw = Sw::fixture("subpipeline");
    let out = sw.sw(["run", "typo"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(
            "job \"deploy\" of pipeline \"typo\" awaits pipeline \"chlid\", which is not in sparkwing.yaml; did you mean \"child\"?"
        ),
        "{out}"
    );
    assert!(!out.stdout.contains("typo-prep-ran"), "{out}");
    assert!(sw.runs_list().is_empty(), "nothing may be recorded");
}

#[test]
fn a_static_cycle_is_refused_at_plan_time() {
    let sw = Sw::fixture("subpipeline");
    let out = sw.sw(["run", "cycle-a"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("cycle of pipelines awaiting each other: cycle-a -> cycle-b -> cycle-a"),
        "{out}"
    );
    assert!(!out.stdout.contains("cycle-a-ran"), "{out}");
    assert!(sw.runs_list().is_empty(), "nothing may be recorded");
}

#[test]
fn a_dynamic_cycle_is_refused_through_the_chain() {
    let mut sw = Sw::fixture("subpipeline");
    // Given by hand: a run of `child` whose ancestry already holds `child`.
    let mut cmd = sw.cmd(["run", "child"]);
    cmd.env("SPARKWING_PIPELINE_CHAIN", "parent,child");
    let out = sw.run_cmd(cmd);
    out.assert_code(2);
    assert!(
        out.stderr.contains(
            "refusing to run pipeline \"child\": cycle of pipelines awaiting each other: child -> child (SPARKWING_PIPELINE_CHAIN is \"parent,child\")"
        ),
        "{out}"
    );
    // A job body that runs `sparkwing run loop` inside a run of `loop`.
    sw.env("SW_BIN", BIN);
    let out = sw.sw(["run", "loop"]);
    out.assert_code(1);
    let id = out.run_id();
    let lines = sw.log_lines(&id, "again");
    assert!(
        lines.iter().any(|l| l.contains(
            "refusing to run pipeline \"loop\": cycle of pipelines awaiting each other: loop -> loop"
        )),
        "{lines:?}"
    );
    assert_eq!(
        sw.runs_list().len(),
        1,
        "the inner run must not be recorded"
    );
}
