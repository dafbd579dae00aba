//! Job semantics: failure and its dependents, optional and finally jobs, retries, timeouts,
//! outputs, skips, workdir and env.

use crate::common::*;
use serde_json::json;

#[test]
fn failing_job_cancels_dependents_but_not_independent_or_finally_jobs() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "dag"]);
    out.assert_code(1);
    let id = out.run_id();

    let finished = out.events("run_finished");
    assert_eq!(finished.len(), 1, "{out}");
    assert_eq!(finished[0]["status"], "failed");
    assert_eq!(finished[0]["exit_code"], 1);
    // The optional failure is not named: only the job that failed the run.
    assert_eq!(finished[0]["error"], "job failed: compile", "{out}");

    let run = sw.listed_run(&id);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 1);
    assert_eq!(run["error"], "job failed: compile");

    let (code, st) = sw.status(&id);
    assert_eq!(code, 1, "runs status exits 1 for a failed run");
    let job = |j: &str| find_job(&st, j);
    assert_eq!(job("compile")["state"], "failed");
    // The job failed because its command did: recorded with the command's own status.
    assert_eq!(job("compile")["reason"], "exit code 3");
    assert_eq!(job("compile")["exit_code"], 3);
    for dependent in ["package", "publish"] {
        assert_eq!(job(dependent)["state"], "cancelled", "{dependent}: {st:#}");
        assert_eq!(job(dependent)["reason"], "upstream-failed", "{dependent}");
        assert!(
            sw.log_lines(&id, dependent).is_empty(),
            "{dependent} must not run"
        );
    }
    assert_eq!(job("docs")["state"], "success");
    assert_eq!(sw.log_lines(&id, "docs"), ["docs built"]);
    assert_eq!(job("flaky-lint")["state"], "failed");
    assert_eq!(job("flaky-lint")["optional"], true);
    assert_eq!(job("report")["state"], "success");
    assert_eq!(sw.log_lines(&id, "report"), ["report ran"]);

    // Both streams are logged, in the order written (one pipe, recorded as stdout); the SDK
    // explains the failure last.
    let compile = sw.log_records(&id, "compile");
    let lines: Vec<&str> = compile
        .iter()
        .map(|r| r["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines[..2], ["compiling", "compile broke"], "{compile:?}");
    assert!(
        lines[2].starts_with("error: ") && lines[2].contains("exit status 3"),
        "{compile:?}"
    );
    assert!(
        compile.iter().all(|r| r["stream"] == "stdout"),
        "{compile:?}"
    );
    // The cancellation of dependents is an event too.
    assert!(
        out.events("job_cancelled")
            .iter()
            .any(|e| e["job"] == "package" && e["reason"] == "upstream-failed"),
        "{out}"
    );
}

#[test]
fn retries_outputs_skips_workdir_env_and_optional_failures() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "features"]);
    // An optional job fails; the run still succeeds.
    out.assert_code(0);
    let id = out.run_id();
    let (code, st) = sw.status(&id);
    assert_eq!(code, 0);
    assert_eq!(st["status"], "success");
    assert_eq!(st["error"], serde_json::Value::Null);
    let job = |j: &str| find_job(&st, j);

    // Retry: attempt 1 fails, attempt 2 passes.
    assert_eq!(job("flaky")["state"], "success");
    assert_eq!(job("flaky")["attempt"], 2);
    let retries = out.events("job_retry");
    assert_eq!(retries.len(), 1, "{out}");
    assert_eq!(retries[0]["job"], "flaky");
    assert_eq!(retries[0]["attempt"], 2);
    let flaky = sw.log_records(&id, "flaky");
    assert!(
        flaky
            .iter()
            .any(|r| r["attempt"] == 1 && r["line"] == "error: flaky fails on attempt 1"),
        "{flaky:?}"
    );
    assert!(
        flaky
            .iter()
            .any(|r| r["attempt"] == 2 && r["line"] == "flaky passed on attempt 2"),
        "{flaky:?}"
    );
    // One log across attempts: seq keeps counting.
    let seqs: Vec<u64> = flaky.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=flaky.len() as u64).collect::<Vec<_>>());

    // Outputs reach dependents and are stored.
    assert_eq!(
        job("producer")["outputs"],
        json!({"version": "1.2.3", "channel": "beta"})
    );
    assert_eq!(
        sw.log_lines(&id, "consumer"),
        ["consumed version=1.2.3 channel=beta"]
    );

    // A skipped job does not run and satisfies its dependents.
    assert_eq!(job("skipped")["state"], "skipped");
    assert_eq!(job("skipped")["reason"], "not needed today");
    assert!(sw.log_lines(&id, "skipped").is_empty());
    assert_eq!(job("after-skip")["state"], "success");
    assert_eq!(sw.log_lines(&id, "after-skip"), ["after-skip ran"]);

    // workdir (relative to the repository root) and env.
    let wd = sw.root().canonicalize().unwrap().join("sub/dir");
    assert_eq!(
        sw.log_lines(&id, "wd"),
        [
            format!("cwd={}", wd.display()),
            "workdir marker file".to_string(),
            "FEATURE_ENV=from-plan".to_string()
        ]
    );

    assert_eq!(job("opt-fail")["state"], "failed");
    assert_eq!(job("opt-fail")["reason"], "exit code 7");
    // Jobs that need a failed optional job are still cancelled.
    assert_eq!(job("after-opt")["state"], "cancelled");
    assert_eq!(job("after-opt")["reason"], "upstream-failed");
    assert!(sw.log_lines(&id, "after-opt").is_empty());
    assert!(
        sw.log_lines(&id, "opt-fail")
            .iter()
            .any(|l| l.starts_with("error: ") && l.contains("exit status 7")),
        "{:?}",
        sw.log_lines(&id, "opt-fail")
    );
}

#[test]
fn a_job_over_its_timeout_fails_with_a_timeout_reason() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "timeout"]);
    out.assert_code(1);
    let id = out.run_id();
    let slow = sw.job(&id, "slow");
    assert_eq!(slow["state"], "failed", "{slow}");
    let reason = slow["reason"].as_str().unwrap();
    assert!(reason.contains("timeout"), "reason: {reason}");
    // It was cut short, far before its `sleep 30` would have ended.
    let took = slow["finished_at"].as_i64().unwrap() - slow["started_at"].as_i64().unwrap();
    assert!(
        took < 20_000,
        "the job ran {took} ms despite a 300ms timeout"
    );
    assert_eq!(sw.log_lines(&id, "slow"), ["slow started"]);
    assert_eq!(sw.listed_run(&id)["error"], "job failed: slow");
    assert_run_processes_gone(&id);
}
