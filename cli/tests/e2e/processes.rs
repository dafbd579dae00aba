//! A job's processes: what a job leaves behind is stopped when it ends (and when its run is
//! cancelled or killed), a job fails with its command's own exit status, and its output keeps the
//! order in which it was written.

use crate::common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

/// Every process whose environment says it belongs to the run and is not the engine itself.
fn job_processes(id: &str, engine: i32) -> Vec<i32> {
    run_processes(id)
        .into_iter()
        .filter(|&p| p != engine)
        .collect()
}

fn pid_in(sw: &Sw, file: &str) -> i32 {
    let text = std::fs::read_to_string(sw.root().join(file)).unwrap();
    text.trim().parse().unwrap()
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purpose; /proc/PID/stat's third field is the state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = &stat[stat.rfind(')').unwrap() + 1..];
            after.split_whitespace().next() != Some("Z")
        }
        Err(_) => false,
    }
}

/// Start `pipeline` and wait until its `long` job has printed `started`.
fn start_long(sw: &Sw, pipeline: &str) -> (Running, String) {
    let mut run = sw.spawn(["run", pipeline]);
    let id = run.wait_run_id();
    sw.wait_for_log_line(&id, "long", "started");
    (run, id)
}

/// [`start_long`], then wait until the supervisor, the job, its bash, its sleep and the daemon
/// all run; returns the engine's pid too.
fn start_with_daemon(sw: &Sw) -> (Running, String, i32) {
    let (run, id) = start_long(sw, "daemon-cancel");
    let engine = run.pid();
    wait_until(Duration::from_secs(30), "the job's processes", || {
        job_processes(&id, engine).len() >= 5
    });
    (run, id, engine)
}

#[test]
fn a_daemon_left_holding_the_output_does_not_hold_the_job() {
    let sw = Sw::fixture("procs");
    // The daemon sleeps 300 s: a run that waited for it would not end within the deadline.
    let run = sw.spawn(["run", "daemon"]);
    let out = run.finish_within(Duration::from_secs(120));
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(sw.job(&id, "serve")["state"], "success");
    assert_eq!(sw.log_lines(&id, "serve"), ["daemon started"]);
    assert_eq!(sw.log_lines(&id, "after"), ["after ran"]);
    // What the job left behind was stopped with it.
    let daemon = pid_in(&sw, "daemon.pid");
    assert!(!alive(daemon), "the daemon {daemon} outlived its job");
    assert_run_processes_gone(&id);
}

#[test]
fn ctrl_c_with_a_daemon_still_runs_finally_and_exits_130() {
    let sw = Sw::fixture("procs");
    let (run, id) = start_long(&sw, "daemon-cancel");
    run.signal(Signal::SIGINT);
    // The grace is 5 s; the daemon and the job's sleep run for 300 s.
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    let (code, st) = sw.status(&id);
    assert_eq!(code, 130);
    assert_eq!(st["status"], "cancelled", "{st:#}");
    assert_eq!(find_job(&st, "long")["state"], "cancelled");
    assert_eq!(find_job(&st, "fin")["state"], "success");
    assert_eq!(sw.log_lines(&id, "fin"), ["finally ran"]);
    assert_run_processes_gone(&id);
}

#[test]
fn a_cancelled_job_gets_sigterm_it_can_handle() {
    let sw = Sw::fixture("procs");
    let (run, id) = start_long(&sw, "graceful");
    run.signal(Signal::SIGINT);
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    // The job's trap ran: SIGTERM reached it (not blocked), before any SIGKILL.
    assert_eq!(sw.log_lines(&id, "long"), ["started", "got SIGTERM"]);
    assert_run_processes_gone(&id);
}

#[test]
fn a_cancelled_jobs_processes_get_one_sigterm_and_the_whole_grace() {
    let sw = Sw::fixture("procs");
    let (run, id) = start_long(&sw, "wind-down");
    run.signal(Signal::SIGINT);
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    // The job's binary dies of its SIGTERM at once; its bash, in the same process group, had its
    // own SIGTERM and is neither signalled again nor killed before the cancel's 5 s grace.
    assert_eq!(
        sw.log_lines(&id, "long"),
        ["started", "got SIGTERM", "wound down"]
    );
    assert_eq!(sw.job(&id, "long")["state"], "cancelled");
    assert_run_processes_gone(&id);
}

#[test]
fn a_timed_out_job_ignoring_sigterm_keeps_its_worker_until_it_is_gone() {
    let sw = Sw::fixture("procs");
    let out = sw.sw(["run", "stubborn-timeout", "--sw-workers", "1"]);
    out.assert_code(0);
    let id = out.run_id();
    let stubborn = sw.job(&id, "stubborn");
    assert_eq!(stubborn["state"], "failed", "{stubborn}");
    assert!(
        stubborn["reason"]
            .as_str()
            .unwrap()
            .starts_with("timeout after"),
        "{stubborn}"
    );
    // `next` checked, when it started, that the stubborn job's sleep was gone.
    assert_eq!(sw.job(&id, "next")["state"], "success");
    assert_eq!(sw.log_lines(&id, "next"), ["stubborn is gone"]);
    assert_run_processes_gone(&id);
}

#[test]
fn kill_9_of_the_run_takes_its_jobs_and_their_daemons_with_it() {
    let sw = Sw::fixture("procs");
    let (run, id, _) = start_with_daemon(&sw);
    run.signal(Signal::SIGKILL);
    let out = run.finish_within(Duration::from_secs(30));
    assert_eq!(out.code, -1, "killed by a signal: {out}");
    // Nobody else kills them: they die with the run.
    assert_run_processes_gone(&id);
    let (code, st) = sw.status(&id);
    assert_eq!(code, 1);
    assert_eq!(st["status"], "failed");
}

#[test]
fn a_job_fails_with_its_commands_exit_status_or_signal() {
    let sw = Sw::fixture("procs");
    let out = sw.sw(["run", "exit-status"]);
    out.assert_code(1);
    let id = out.run_id();
    let (_, st) = sw.status(&id);
    let job = |j: &str| find_job(&st, j);
    assert_eq!(job("exit3")["state"], "failed");
    assert_eq!(job("exit3")["reason"], "exit code 3", "{st:#}");
    assert_eq!(job("exit3")["exit_code"], 3);
    assert_eq!(job("killed")["reason"], "killed by signal 9", "{st:#}");
    assert!(job("killed")["exit_code"].is_null(), "{st:#}");
    // Context added to the command's error keeps its status.
    assert_eq!(job("context")["reason"], "exit code 42", "{st:#}");
    assert_eq!(job("context")["exit_code"], 42);
    // A job's own error (no command behind it) is exit code 1, as the protocol says.
    assert_eq!(job("plain")["reason"], "exit code 1", "{st:#}");
    assert_eq!(job("plain")["exit_code"], 1);
    // The SDK's explanation is still in the log.
    assert!(sw
        .log_lines(&id, "exit3")
        .iter()
        .any(|l| l.starts_with("error: ") && l.contains("exit status 3")));
}

#[test]
fn stdout_and_stderr_keep_the_order_they_were_written_in() {
    let sw = Sw::fixture("procs");
    let out = sw.sw(["run", "order"]);
    out.assert_code(0);
    let id = out.run_id();
    let want: Vec<String> = (1..=200)
        .flat_map(|i| [format!("out {i}"), format!("err {i}")])
        .collect();
    assert_eq!(sw.log_lines(&id, "mixed"), want);
    // The terminal shows them in the same order.
    let printed: Vec<String> = out
        .json_lines()
        .iter()
        .filter(|l| l["job"] == "mixed" && l.get("line").is_some())
        .map(|l| l["line"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(printed, want);
}

#[test]
fn jobs_left_by_a_run_killed_with_its_supervisors_are_stopped_by_the_next_read() {
    let sw = Sw::fixture("procs");
    let (run, id, engine) = start_with_daemon(&sw);
    // Kill the run and every supervisor under it at once, as a crash of the whole tree would.
    let supervisors: Vec<i32> = job_processes(&id, engine)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|a| a == b"__supervise"))
                .unwrap_or(false)
        })
        .collect();
    assert!(!supervisors.is_empty());
    run.signal(Signal::SIGSTOP);
    for p in &supervisors {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), Signal::SIGKILL);
    }
    run.signal(Signal::SIGKILL);
    let out = run.finish_within(Duration::from_secs(30));
    assert_eq!(out.code, -1, "killed by a signal: {out}");
    // The job's bash, sleep and daemon are left, with nobody to stop them...
    assert!(!job_processes(&id, engine).is_empty());
    // ...until a read finds the run abandoned.
    let listed = sw.listed_run(&id);
    assert_eq!(listed["status"], "failed", "{listed}");
    assert_run_processes_gone(&id);
}
