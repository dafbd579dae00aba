//! Stopping runs: Ctrl-C (once and twice), `runs cancel`, and a sparkwing process that dies.

use crate::common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

/// Start `pipeline` and wait until its `long` job is running its `sleep`.
fn start_long(sw: &Sw, pipeline: &str) -> (Running, String) {
    let mut run = sw.spawn(["run", pipeline]);
    let id = run.wait_run_id();
    sw.wait_for_log_line(&id, "long", "started");
    // The job process, its bash and the sleep.
    wait_until(Duration::from_secs(30), "the job's processes", || {
        run_processes(&id).len() >= 3
    });
    (run, id)
}

fn assert_cancelled_with_finally(sw: &Sw, id: &str) {
    let (code, st) = sw.status(id);
    assert_eq!(code, 130, "runs status exits 130 for a cancelled run");
    assert_eq!(st["status"], "cancelled", "{st:#}");
    assert_eq!(st["exit_code"], 130);
    let long = find_job(&st, "long");
    assert_eq!(long["state"], "cancelled", "{long}");
    assert_eq!(long["reason"], "cancelled", "{long}");
    let after = find_job(&st, "after-long");
    assert_eq!(after["state"], "cancelled", "{after}");
    assert!(sw.log_lines(id, "after-long").is_empty());
    assert_eq!(find_job(&st, "fin")["state"], "success");
    assert_eq!(sw.log_lines(id, "fin"), ["finally ran"]);
    assert!(
        sw.root().join("finally-ran").is_file(),
        "the finally job did not run"
    );
    assert_run_processes_gone(id);
}

#[test]
fn ctrl_c_cancels_runs_finally_jobs_and_leaves_no_process() {
    let sw = Sw::fixture("rich");
    let (run, id) = start_long(&sw, "interrupt");
    run.signal(Signal::SIGINT);
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    assert!(out.stderr.contains("SIGINT: cancelling the run"), "{out}");
    let finished = out.events("run_finished");
    assert_eq!(finished.len(), 1, "{out}");
    assert_eq!(finished[0]["status"], "cancelled");
    assert_cancelled_with_finally(&sw, &id);
}

#[test]
fn second_ctrl_c_kills_at_once() {
    let sw = Sw::fixture("rich");
    let (run, id) = start_long(&sw, "interrupt-slow-finally");
    run.signal(Signal::SIGINT);
    // The first interrupt stops `long`; the finally job starts and sleeps.
    sw.wait_for_log_line(&id, "slowfin", "finally started");
    run.signal(Signal::SIGINT);
    // Far less than the finally job's 30 s sleep.
    let out = run.finish_within(Duration::from_secs(15));
    out.assert_code(130);
    assert!(out.stderr.contains("second interrupt"), "{out}");
    let (code, st) = sw.status(&id);
    assert_eq!(code, 130);
    assert_eq!(st["status"], "cancelled");
    assert!(
        st["error"].as_str().unwrap().contains("second interrupt"),
        "{st:#}"
    );
    assert_eq!(find_job(&st, "long")["state"], "cancelled");
    assert_eq!(find_job(&st, "slowfin")["state"], "cancelled");
    // Killed means killed: no job process (the finally job's sleep included) outlives the run.
    assert_run_processes_gone(&id);
}

#[test]
fn runs_cancel_from_another_process_cancels_a_live_run() {
    let sw = Sw::fixture("rich");
    let (run, id) = start_long(&sw, "interrupt");
    // While it runs it is listed as running (its process is alive).
    assert_eq!(sw.listed_run(&id)["status"], "running");
    // The `run-` prefix may be left out.
    let short = id.trim_start_matches("run-");
    let cancel = sw.sw(["runs", "cancel", "--run", short]);
    cancel.assert_code(0);
    assert!(
        cancel.stdout.contains(&format!("cancelling run {id}")),
        "{cancel}"
    );
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    assert_cancelled_with_finally(&sw, &id);
    let (_, st) = sw.status(&id);
    assert!(
        st["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "cancel_requested"),
        "{st:#}"
    );
    // Cancelling a finished run changes nothing.
    let again = sw.sw(["runs", "cancel", "--run", &id]);
    again.assert_code(0);
    assert!(again.stdout.contains("already finished"), "{again}");
    assert_eq!(sw.listed_run(&id)["status"], "cancelled");
}

#[test]
fn a_run_whose_process_died_is_shown_failed_never_running() {
    let sw = Sw::fixture("rich");
    let (run, id) = start_long(&sw, "interrupt");
    let pid = run.pid();
    run.signal(Signal::SIGKILL);
    let out = run.finish_within(Duration::from_secs(30));
    assert_eq!(out.code, -1, "killed by a signal: {out}");
    for p in run_processes(&id) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
    }
    assert_run_processes_gone(&id);

    let run = sw.listed_run(&id);
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("exited before the run finished"), "{error}");
    assert!(error.contains(&format!("pid {pid}")), "{error}");
    let (code, st) = sw.status(&id);
    assert_eq!(code, 1);
    assert_eq!(st["status"], "failed");
    // No job is left running or pending either.
    for job in st["jobs"].as_array().unwrap() {
        assert_eq!(job["state"], "cancelled", "{job}");
        assert_eq!(job["reason"], "run-abandoned", "{job}");
    }
    assert!(
        st["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "run_abandoned"),
        "{st:#}"
    );
    let wait = sw.sw(["runs", "wait", "--run", &id, "--timeout", "5s"]);
    wait.assert_code(1);
    // Following the logs of a dead run returns instead of waiting forever.
    let follow = sw.sw(["runs", "logs", "--run", &id, "--follow"]);
    follow.assert_code(0);
    assert_eq!(follow.stdout, "long │ started\n");
    assert!(sw.runs_list().iter().all(|r| r["status"] != "running"));
}
