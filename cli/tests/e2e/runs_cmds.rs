//! `runs logs`, `runs status`, `runs wait` and unknown run ids.

use crate::common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn runs_logs_all_jobs_one_job_and_tail() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "logs"]);
    out.assert_code(0);
    let id = out.run_id();

    let all = sw.sw(["runs", "logs", "--run", &id]);
    all.assert_code(0);
    let expected: Vec<String> = (1..=5)
        .map(|i| format!("alpha │ alpha {i}"))
        .chain((1..=3).map(|i| format!("beta │ beta {i}")))
        .collect();
    assert_eq!(all.stdout.lines().collect::<Vec<_>>(), expected, "{all}");

    let one = sw.sw(["runs", "logs", "--run", &id, "--job", "beta"]);
    one.assert_code(0);
    assert_eq!(one.stdout, "beta 1\nbeta 2\nbeta 3\n");

    let tail = sw.sw(["runs", "logs", "--run", &id, "--tail", "3"]);
    tail.assert_code(0);
    assert_eq!(
        tail.stdout.lines().collect::<Vec<_>>(),
        [
            "alpha │ alpha 3",
            "alpha │ alpha 4",
            "alpha │ alpha 5",
            "beta │ beta 1",
            "beta │ beta 2",
            "beta │ beta 3"
        ]
    );

    let json = sw.sw(["runs", "logs", "--run", &id, "--job", "alpha", "-o", "json"]);
    json.assert_code(0);
    let recs = json.json_lines();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[4]["seq"], 5);
    assert_eq!(recs[4]["job"], "alpha");
    assert_eq!(recs[4]["line"], "alpha 5");

    let bad = sw.sw(["runs", "logs", "--run", &id, "--job", "gamma"]);
    bad.assert_code(5);
    assert!(bad.stderr.contains("no job \"gamma\""), "{bad}");
    assert!(bad.stderr.contains("alpha, beta"), "{bad}");
}

#[test]
fn runs_logs_follow_returns_when_the_run_finishes() {
    let sw = Sw::fixture("rich");
    let mut run = sw.spawn(["run", "slow-logs"]);
    let id = run.wait_run_id();
    let follow = sw.sw(["runs", "logs", "--run", &id, "--follow"]);
    follow.assert_code(0);
    let lines: Vec<&str> = follow.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "tick 1",
            "tick 2",
            "tick 3",
            "tick 4",
            "tick 5",
            "last line"
        ],
        "{follow}"
    );
    // It returned because the run finished.
    assert_eq!(sw.listed_run(&id)["status"], "success");
    run.finish().assert_code(0);
}

#[test]
fn runs_status_exit_codes_follow_the_run() {
    let sw = Sw::fixture("rich");
    let ok = sw.sw(["run", "logs"]);
    ok.assert_code(0);
    let ok_id = ok.run_id();
    let failed = sw.sw(["run", "timeout"]);
    failed.assert_code(1);
    let failed_id = failed.run_id();

    let st = sw.sw(["runs", "status", "--run", &ok_id]);
    st.assert_code(0);
    assert!(st.stdout.contains("status:   success"), "{st}");
    assert!(st.stdout.contains("alpha"), "{st}");
    let st = sw.sw(["runs", "status", "--run", &failed_id]);
    st.assert_code(1);
    assert!(st.stdout.contains("status:   failed"), "{st}");
    assert!(st.stdout.contains("error:    job failed: slow"), "{st}");

    // `runs wait` on finished runs exits like `runs status`.
    sw.sw(["runs", "wait", "--run", &ok_id]).assert_code(0);
    sw.sw(["runs", "wait", "--run", &failed_id]).assert_code(1);

    // Filters.
    let only_failed = sw.sw(["runs", "list", "-o", "json", "--status", "failed"]);
    only_failed.assert_code(0);
    let ids: Vec<_> = only_failed
        .json_lines()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, std::slice::from_ref(&failed_id));
    let by_pipeline = sw.sw(["runs", "list", "-o", "json", "--pipeline", "logs"]);
    assert_eq!(by_pipeline.json_lines().len(), 1);
    assert_eq!(by_pipeline.json_lines()[0]["id"], ok_id.as_str());
    let bad = sw.sw(["runs", "list", "--status", "exploded"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("unknown status \"exploded\""), "{bad}");
}

#[test]
fn runs_wait_times_out_on_a_live_run() {
    let sw = Sw::fixture("rich");
    let mut run = sw.spawn(["run", "interrupt"]);
    let id = run.wait_run_id();
    sw.wait_for_log_line(&id, "long", "started");
    let wait = sw.sw(["runs", "wait", "--run", &id, "--timeout", "200ms"]);
    wait.assert_code(6);
    assert!(wait.stderr.contains("still running"), "{wait}");
    run.signal(Signal::SIGINT);
    run.finish_within(Duration::from_secs(60)).assert_code(130);
    // Finished (cancelled): `runs wait` exits like its status.
    sw.sw(["runs", "wait", "--run", &id, "--timeout", "200ms"])
        .assert_code(130);
}

#[test]
fn unknown_run_ids_exit_5() {
    let sw = Sw::fixture("rich");
    for args in [
        vec!["runs", "status", "--run", "run-20000101-000000-abcdef"],
        vec!["runs", "logs", "--run", "run-20000101-000000-abcdef"],
        vec!["runs", "wait", "--run", "run-20000101-000000-abcdef"],
        vec!["runs", "cancel", "--run", "run-20000101-000000-abcdef"],
    ] {
        let out = sw.sw(&args);
        out.assert_code(5);
        assert!(
            out.stderr
                .contains("run run-20000101-000000-abcdef not found"),
            "{args:?}: {out}"
        );
    }
}
