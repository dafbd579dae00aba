//! Concurrency groups on `sparkwing run`, across processes: a run over its group's limit waits
//! (FIFO, shown by `runs status`), or with `cancel_in_progress` cancels the older run; a holder
//! killed with `kill -9` frees its slot. The `deploy` fixture's job notes `start RUN` and
//! `end RUN` in `order.txt` and does not end while the workspace has `hold`.

use crate::common::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

fn order(sw: &Sw) -> Vec<String> {
    std::fs::read_to_string(sw.root().join("order.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn hold(sw: &Sw) {
    std::fs::write(sw.root().join("hold"), "").unwrap();
}

fn release(sw: &Sw) {
    std::fs::remove_file(sw.root().join("hold")).unwrap();
}

/// Start a deploy run and wait until its job started.
fn started(sw: &Sw, extra: &[&str]) -> (Running, String) {
    let mut args = vec!["run", "deploy"];
    args.extend_from_slice(extra);
    let mut run = sw.spawn(args);
    let id = run.wait_run_id();
    wait_until(DEADLINE, "the first run's job to start", || {
        order(sw).contains(&format!("start {id}"))
    });
    (run, id)
}

/// Start a deploy run and wait until it waits for its group.
fn queued(sw: &Sw, extra: &[&str]) -> (Running, String) {
    let mut args = vec!["run", "deploy"];
    args.extend_from_slice(extra);
    let mut run = sw.spawn(args);
    let id = run.wait_run_id();
    wait_until(DEADLINE, "the second run to wait for its group", || {
        sw.status(&id).1["concurrency"]["state"] == "waiting"
    });
    (run, id)
}

#[test]
fn a_second_run_of_a_group_of_one_waits_for_the_first_to_end() {
    let sw = Sw::fixture("gates");
    // Build once, so the runs below race on the group, not on compiling.
    sw.sw(["run", "deploy", "--env", "warmup"]).assert_code(0);
    let _ = std::fs::remove_file(sw.root().join("order.txt"));
    hold(&sw);
    let (first, a) = started(&sw, &[]);
    let (second, b) = queued(&sw, &[]);

    let (code, status) = sw.status(&b);
    assert_eq!(code, 1);
    assert_eq!(status["status"], "queued");
    let line = format!("waiting for concurrency group deploy-prod (1/1, held by run {a})");
    assert_eq!(status["concurrency"]["waiting"], line.as_str());
    assert_eq!(status["concurrency"]["group"], "deploy-prod");
    let pretty = sw.sw(["runs", "status", &b]);
    assert!(
        pretty.stdout.contains(&format!("waiting:  {line}")),
        "{pretty}"
    );
    // Another env is another group: it starts at once.
    let (other, _) = started(&sw, &["--env", "staging"]);
    assert!(!order(&sw).contains(&format!("start {b}")));

    release(&sw);
    first.finish().assert_code(0);
    second.finish().assert_code(0);
    other.finish().assert_code(0);
    let seen = order(&sw);
    let pos = |l: String| seen.iter().position(|s| *s == l).unwrap_or(usize::MAX);
    assert!(
        pos(format!("end {a}")) < pos(format!("start {b}")),
        "{seen:?}"
    );
    assert!(
        pos(format!("start {b}")) < pos(format!("end {b}")),
        "{seen:?}"
    );
    assert_eq!(sw.status(&b).1["concurrency"]["state"], "holding");
}

#[test]
fn cancel_in_progress_cancels_the_older_run() {
    let sw = Sw::fixture("gates");
    hold(&sw);
    let (first, a) = started(&sw, &["--cancel"]);
    let mut second = sw.spawn(["run", "deploy", "--cancel"]);
    let b = second.wait_run_id();
    let out = first.finish();
    out.assert_code(130);
    wait_until(DEADLINE, "the newer run to start", || {
        order(&sw).contains(&format!("start {b}"))
    });
    release(&sw);
    second.finish().assert_code(0);
    let (_, status) = sw.status(&a);
    assert_eq!(status["status"], "cancelled");
    let events = status["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| {
            e["kind"] == "cancel_requested"
                && e["payload"]["by"].as_str().is_some_and(|by| {
                    by.contains(&format!("concurrency group deploy-prod (run {b})"))
                })
        }),
        "{events:?}"
    );
    assert!(!order(&sw).contains(&format!("end {a}")));
}

#[test]
fn kill_9_of_the_holder_frees_the_group() {
    let sw = Sw::fixture("gates");
    hold(&sw);
    let (first, a) = started(&sw, &[]);
    let (second, b) = queued(&sw, &[]);
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.finish();
    wait_until(DEADLINE, "the queued run to take the slot", || {
        order(&sw).contains(&format!("start {b}"))
    });
    release(&sw);
    second.finish().assert_code(0);
    assert_eq!(sw.status(&b).1["concurrency"]["state"], "holding");
    // The killed run's own job (orphaned by kill -9) ends once released, like any process.
    wait_until(DEADLINE, "the killed run's job to end", || {
        run_processes(&a).is_empty()
    });
}

#[test]
fn a_job_of_a_group_waits_for_the_same_job_of_another_run() {
    let sw = Sw::fixture("gates");
    hold(&sw);
    let mut first = sw.spawn(["run", "job-group"]);
    let a = first.wait_run_id();
    wait_until(DEADLINE, "the first run's job to start", || {
        order(&sw).contains(&format!("start {a}"))
    });
    let mut second = sw.spawn(["run", "job-group"]);
    let b = second.wait_run_id();
    wait_until(
        DEADLINE,
        "the second run's job to wait for its group",
        || {
            let (_, st) = sw.status(&b);
            st["events"].as_array().is_some_and(|evs| {
                evs.iter()
                    .any(|e| e["kind"] == "concurrency_waiting" && e["job_id"] == "work")
            })
        },
    );
    // Its other job ran; the grouped one waits while the first run's holds the slot, and
    // `runs status` says so.
    assert_eq!(sw.job(&b, "prepare")["state"], "success");
    let line = format!("waiting for concurrency group shared-work (1/1, held by run {a}/work)");
    let (_, st) = sw.status(&b);
    assert_eq!(st["job_groups"][0]["job"], "work", "{st:#}");
    assert_eq!(st["job_groups"][0]["waiting"], line.as_str(), "{st:#}");
    let pretty = sw.sw(["runs", "status", &b]);
    assert!(
        pretty.stdout.contains(&format!("job work: {line}")),
        "{}",
        pretty.stdout
    );
    assert!(!order(&sw).contains(&format!("start {b}")));
    release(&sw);
    first.finish().assert_code(0);
    second.finish().assert_code(0);
    let seen = order(&sw);
    let pos = |l: String| seen.iter().position(|s| *s == l).unwrap_or(usize::MAX);
    assert!(
        pos(format!("end {a}")) < pos(format!("start {b}")),
        "{seen:?}"
    );
}

#[test]
fn a_jobs_cancel_in_progress_cancels_the_older_run_holding_its_group() {
    let sw = Sw::fixture("gates");
    hold(&sw);
    let mut first = sw.spawn(["run", "job-cancel"]);
    let a = first.wait_run_id();
    wait_until(DEADLINE, "the first run's deploy to start", || {
        order(&sw).contains(&format!("start {a}"))
    });
    let mut second = sw.spawn(["run", "job-cancel"]);
    let b = second.wait_run_id();
    // The second run's deploy finds the group full and cancels the first run.
    first.finish().assert_code(130);
    wait_until(DEADLINE, "the newer run's deploy to start", || {
        order(&sw).contains(&format!("start {b}"))
    });
    release(&sw);
    second.finish().assert_code(0);

    let (code, status) = sw.status(&a);
    assert_eq!(code, 130);
    assert_eq!(status["status"], "cancelled");
    assert_eq!(find_job(&status, "deploy")["state"], "cancelled");
    let events = status["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| {
            e["kind"] == "cancel_requested"
                && e["payload"]["by"].as_str()
                    == Some(format!("concurrency group job-deploy (run {b})").as_str())
        }),
        "{events:?}"
    );
    assert!(!order(&sw).contains(&format!("end {a}")));

    let (code, status) = sw.status(&b);
    assert_eq!(code, 0);
    assert_eq!(status["status"], "success");
    let events = status["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| {
            e["kind"] == "concurrency_cancelled_older"
                && e["job_id"] == "deploy"
                && e["payload"]["run"] == a.as_str()
        }),
        "{events:?}"
    );
}
