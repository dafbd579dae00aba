//! `sparkwing runs retry`: a new run, linked to the old one, executes exactly the jobs to retry and
//! what needs them (and `finally` jobs); the rest are `reused` with their old outputs. Every job of
//! the `retry` fixture appends its name to `ran.txt`, which tells which jobs a run executed.

use crate::common::*;
use serde_json::json;

/// The jobs that ran since the last call, sorted; empties `ran.txt`.
fn ran(sw: &Sw) -> Vec<String> {
    let path = sw.root().join("ran.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    let mut jobs: Vec<String> = text.lines().map(str::to_string).collect();
    jobs.sort();
    jobs
}

fn state(sw: &Sw, id: &str, job: &str) -> (String, String) {
    let j = sw.job(id, job);
    (
        j["state"].as_str().unwrap_or_default().to_string(),
        j["reason"].as_str().unwrap_or_default().to_string(),
    )
}

fn pair(state: &str, reason: &str) -> (String, String) {
    (state.to_string(), reason.to_string())
}

#[test]
fn retry_of_a_failed_run_re_executes_exactly_the_failed_part() {
    let sw = Sw::fixture("retry");
    let first = sw.sw(["run", "release", "--channel", "beta"]);
    first.assert_code(1);
    let old = first.run_id();
    assert_eq!(ran(&sw), ["cleanup", "lint", "prepare", "test"]);
    assert_eq!(
        state(&sw, &old, "ship"),
        pair("cancelled", "upstream-failed")
    );

    std::fs::write(sw.root().join("fixed"), "").unwrap();
    let retry = sw.sw(["runs", "retry", "--run", &old]);
    retry.assert_code(0);
    let new = retry.run_id();
    assert_ne!(new, old);
    // test failed, ship never ran, cleanup is a finally job; prepare and lint are reused.
    assert_eq!(ran(&sw), ["cleanup", "ship", "test"]);
    let reused = format!("reused from run {old}");
    assert_eq!(state(&sw, &new, "prepare"), pair("reused", &reused));
    assert_eq!(state(&sw, &new, "lint"), pair("reused", &reused));
    assert_eq!(state(&sw, &new, "test"), pair("success", ""));
    assert_eq!(state(&sw, &new, "ship"), pair("success", ""));
    assert_eq!(state(&sw, &new, "cleanup"), pair("success", ""));
    // The reused output feeds ship's condition and its input; the old run's args are used.
    assert_eq!(sw.job(&new, "prepare")["outputs"], json!({"version": "7"}));
    assert_eq!(
        sw.log_lines(&new, "ship"),
        ["shipped version=7 channel=beta"]
    );
    assert!(sw.log_lines(&new, "prepare").is_empty());
    let (code, status) = sw.status(&new);
    assert_eq!(code, 0);
    assert_eq!(status["retry_of"], json!(old));
    assert_eq!(status["args"]["channel"], "beta");
    assert_eq!(sw.status(&old).1["retry_of"], json!(null));
    let pretty = sw.sw(["runs", "status", &new]);
    assert!(
        pretty.stdout.contains(&format!("retry of: {old}\n")),
        "{pretty}"
    );
    assert!(
        pretty
            .stdout
            .lines()
            .any(|l| l.starts_with("prepare") && l.contains("reused") && l.ends_with(&reused)),
        "{pretty}"
    );

    // Nothing failed in the retry: --failed (the default too) has nothing to do.
    let again = sw.sw(["runs", "retry", &new, "--failed"]);
    again.assert_code(2);
    assert!(
        again.stderr.contains(&format!(
            "cannot retry run {new}: run {new} has no failed, cancelled or unfinished job: nothing to retry"
        )),
        "{again}"
    );
    assert_eq!(sw.runs_list().len(), 2);

    // --job: the named job and what needs it (and the finally job), on a successful run.
    let named = sw.sw([
        "runs", "retry", "--run", &new, "--job", "lint", "--job", "prepare",
    ]);
    named.assert_code(0);
    let third = named.run_id();
    assert_eq!(ran(&sw), ["cleanup", "lint", "prepare", "ship", "test"]);
    let named = sw.sw(["runs", "retry", "--run", &third, "--job", "test"]);
    named.assert_code(0);
    let fourth = named.run_id();
    assert_eq!(ran(&sw), ["cleanup", "ship", "test"]);
    assert_eq!(
        state(&sw, &fourth, "lint"),
        pair("reused", &format!("reused from run {third}"))
    );
}

#[test]
fn a_retry_that_fails_again_exits_like_the_run() {
    let sw = Sw::fixture("retry");
    let first = sw.sw(["run", "release"]);
    first.assert_code(1);
    let old = first.run_id();
    ran(&sw);
    let retry = sw.sw(["runs", "retry", &old]);
    retry.assert_code(1);
    let new = retry.run_id();
    assert_eq!(ran(&sw), ["cleanup", "test"]);
    assert_eq!(state(&sw, &new, "test").0, "failed");
    assert_eq!(
        state(&sw, &new, "ship"),
        pair("cancelled", "upstream-failed")
    );
    let (code, status) = sw.status(&new);
    assert_eq!(code, 1);
    assert_eq!(status["retry_of"], json!(old));

    // --job leaving a failure out: that failure is kept (not run), so the re-run fails too.
    let lint = sw.sw(["runs", "retry", &old, "--job", "lint"]);
    lint.assert_code(1);
    let third = lint.run_id();
    assert_eq!(ran(&sw), ["cleanup", "lint"]);
    assert_eq!(
        state(&sw, &third, "test"),
        pair("failed", &format!("failed in run {old}: exit code 1"))
    );
    assert_eq!(
        state(&sw, &third, "ship"),
        pair(
            "cancelled",
            &format!("cancelled in run {old}: upstream-failed")
        )
    );
    assert_eq!(state(&sw, &third, "lint"), pair("success", ""));
    assert!(sw.log_lines(&third, "test").is_empty());
    assert_eq!(sw.status(&third).1["error"], "job failed: test");
}

#[test]
fn bad_retries_say_why_with_their_exit_codes_and_record_nothing() {
    let sw = Sw::fixture("retry");
    let out = sw.sw(["runs", "retry", "--run", "run-20000101-000000-abcdef"]);
    out.assert_code(5);
    assert!(out.stderr.contains("not found"), "{out}");

    let first = sw.sw(["run", "release"]);
    first.assert_code(1);
    let old = first.run_id();

    let out = sw.sw(["runs", "retry", &old, "--job", "nope"]);
    out.assert_code(5);
    assert!(
        out.stderr.contains(&format!(
            "run {old} has no job \"nope\" (jobs: prepare, test, ship, lint, cleanup)"
        )),
        "{out}"
    );
    let out = sw.sw(["runs", "retry", &old, "--job", "test", "--failed"]);
    out.assert_code(2);

    // The code changed: lint is no longer in the plan.
    std::fs::write(sw.root().join("no-lint"), "").unwrap();
    let out = sw.sw(["runs", "retry", &old]);
    out.assert_code(3);
    assert!(
        out.stderr.contains(&format!(
            "the pipeline's current plan has no job \"lint\" that run {old} had"
        )),
        "{out}"
    );
    std::fs::remove_file(sw.root().join("no-lint")).unwrap();

    // A run still running cannot be retried.
    std::fs::write(sw.root().join("hold"), "").unwrap();
    let mut held = sw.spawn(["run", "release"]);
    let live = held.wait_run_id();
    wait_until(COMMAND_DEADLINE, "test to start", || {
        sw.job_state(&live, "test").as_deref() == Some("running")
    });
    let out = sw.sw(["runs", "retry", &live]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(&format!("run {live} is still running")),
        "{out}"
    );
    std::fs::remove_file(sw.root().join("hold")).unwrap();
    held.finish().assert_code(1);

    let out = sw.sw(["runs", "retry", &old, "--profile", "x"]);
    out.assert_code(2);
    assert!(out.stderr.contains("not supported yet"), "{out}");
    // Only the two runs started by `run`.
    assert_eq!(sw.runs_list().len(), 2);
}
