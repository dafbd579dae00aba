//! Fan-out and matrix jobs (`docs/authoring.md#fan-out-and-matrix`): a producer's list expanded
//! into `test[i]` jobs at run time, a static matrix, their fan-ins, the cap, bad lists and
//! re-runs. Every job of the `fanout` fixture appends its id to `ran.txt`.

use crate::common::*;
use serde_json::Value;

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

fn job_ids(status: &Value) -> Vec<String> {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_list_fans_out_into_one_job_per_item_and_the_fan_in_reads_them_all() {
    let sw = Sw::fixture("fanout");
    let out = sw.sw(["run", "shards"]);
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(
        ran(&sw),
        ["report", "shards", "test[0]", "test[1]", "test[2]", "test[3]"]
    );
    let (_, status) = sw.status(&id);
    assert_eq!(
        job_ids(&status),
        ["shards", "test", "report", "test[0]", "test[1]", "test[2]", "test[3]"]
    );
    assert_eq!(
        state(&sw, &id, "test"),
        pair("success", "fanned out into 4 jobs (test[0] … test[3])")
    );
    for (i, item) in ["a", "b", "c", "d"].iter().enumerate() {
        let job = format!("test[{i}]");
        assert_eq!(state(&sw, &id, &job), pair("success", ""));
        assert_eq!(
            sw.log_lines(&id, &job),
            [format!("item={item} index={i} env={item}")]
        );
        assert_eq!(sw.job(&id, &job)["needs"], serde_json::json!(["shards"]));
    }
    assert_eq!(state(&sw, &id, "report"), pair("success", ""));
    assert_eq!(
        sw.log_lines(&id, "report"),
        ["results=r-a,r-b,r-c,r-d", "test[3]=r-d"]
    );
    // The expansion is an event of the template.
    let events = out.events("fan_out");
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["job"], "test");
    // One expanded job's log, by its id.
    let one = sw.sw(["runs", "logs", "--run", &id, "--job", "test[3]"]);
    one.assert_code(0);
    assert_eq!(one.stdout, "item=d index=3 env=d\n");
    let pretty = sw.sw(["runs", "status", "--run", &id]);
    pretty.assert_code(0);
    assert!(
        pretty
            .stdout
            .lines()
            .any(|l| l.starts_with("test[2]") && l.contains("success")),
        "{pretty}"
    );
}

#[test]
fn zero_items_expand_into_no_jobs_and_the_fan_in_runs() {
    let sw = Sw::fixture("fanout");
    let out = sw.sw(["run", "shards", "--list", "[]"]);
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(ran(&sw), ["report", "shards"]);
    assert_eq!(
        state(&sw, &id, "test"),
        pair("success", "fanned out into 0 jobs")
    );
    assert_eq!(job_ids(&sw.status(&id).1), ["shards", "test", "report"]);
    assert_eq!(sw.log_lines(&id, "report"), ["results="]);
}

#[test]
fn a_list_over_the_cap_or_not_a_list_fails_the_fan_out_saying_why() {
    let sw = Sw::fixture("fanout");
    let out = sw.sw(["run", "shards", "--count", "10000"]);
    out.assert_code(1);
    let id = out.run_id();
    let (st, reason) = state(&sw, &id, "test");
    assert_eq!(st, "failed");
    assert!(
        reason.contains("has 10000 items, over the cap of 1000 jobs per fan-out")
            && reason.contains("so the list has at most 1000"),
        "{reason}"
    );
    assert_eq!(
        state(&sw, &id, "report"),
        pair("cancelled", "upstream-failed")
    );
    assert_eq!(job_ids(&sw.status(&id).1), ["shards", "test", "report"]);
    assert_eq!(sw.status(&id).1["error"], "job failed: test");
    assert_eq!(ran(&sw), ["shards"]);

    let out = sw.sw(["run", "shards", "--list", "a,b"]);
    out.assert_code(1);
    let (_, reason) = state(&sw, &out.run_id(), "test");
    assert!(
        reason.contains(r#"output "list" of job "shards" is not a list"#)
            && reason.contains("JSON array of strings"),
        "{reason}"
    );

    let out = sw.sw(["run", "shards", "--unset"]);
    out.assert_code(1);
    let (_, reason) = state(&sw, &out.run_id(), "test");
    assert!(
        reason.contains(r#"job "shards" did not set output "list" (it set "other")"#),
        "{reason}"
    );
}

#[test]
fn a_failed_expanded_job_is_retried_alone_with_the_fan_in() {
    let sw = Sw::fixture("fanout");
    std::fs::write(sw.root().join("fail-c"), "").unwrap();
    let first = sw.sw(["run", "shards"]);
    first.assert_code(1);
    let old = first.run_id();
    ran(&sw);
    assert_eq!(state(&sw, &old, "test[2]"), pair("failed", "exit code 1"));
    assert_eq!(
        state(&sw, &old, "report"),
        pair("cancelled", "upstream-failed")
    );
    assert_eq!(sw.status(&old).1["error"], "job failed: test[2]");

    std::fs::write(sw.root().join("fixed"), "").unwrap();
    let retry = sw.sw(["runs", "retry", "--run", &old, "--failed"]);
    retry.assert_code(0);
    let new = retry.run_id();
    assert_eq!(ran(&sw), ["report", "test[2]"]);
    let reused = format!("reused from run {old}");
    assert_eq!(state(&sw, &new, "shards"), pair("reused", &reused));
    for job in ["test[0]", "test[1]", "test[3]"] {
        assert_eq!(state(&sw, &new, job), pair("reused", &reused));
    }
    assert_eq!(state(&sw, &new, "test[2]"), pair("success", ""));
    assert_eq!(sw.log_lines(&new, "report")[0], "results=r-a,r-b,r-c,r-d");

    // One expanded job by name: it and the fan-in run again.
    let named = sw.sw(["runs", "retry", "--run", &new, "--job", "test[1]"]);
    named.assert_code(0);
    assert_eq!(ran(&sw), ["report", "test[1]"]);
}

#[test]
fn a_matrix_runs_one_job_per_item_and_its_jobs_are_selectable() {
    let sw = Sw::fixture("fanout");
    let out = sw.sw(["run", "matrix"]);
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(ran(&sw), ["build[0]", "build[1]", "build[2]", "ship"]);
    assert_eq!(sw.log_lines(&id, "build[1]"), ["building macos"]);
    assert_eq!(
        sw.log_lines(&id, "ship"),
        ["shipping app-linux,app-macos,app-windows"]
    );
    assert_eq!(
        state(&sw, &id, "build"),
        pair("success", "fanned out into 3 jobs (build[0] … build[2])")
    );

    let only = sw.sw(["run", "matrix", "--sw-only", "build[1]"]);
    only.assert_code(0);
    assert_eq!(ran(&sw), ["build[1]"]);

    // A fan-out's jobs do not exist before the run: the flag says what to do instead.
    let bad = sw.sw(["run", "shards", "--sw-only", "test[2]"]);
    bad.assert_code(2);
    assert!(
        bad.stderr.contains(
            "--sw-only \"test[2]\": that job is expanded at run time by fan-out \"test\""
        ),
        "{bad}"
    );
}

fn golden(name: &str, actual: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/plan")
        .join(name);
    if std::env::var_os("SPARKWING_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (SPARKWING_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "{} differs", path.display());
}

#[test]
fn plans_show_templates_and_lint_refuses_reserved_ids() {
    let sw = Sw::fixture("fanout");
    let cases: &[(&[&str], &str)] = &[
        (&["pipeline", "plan", "shards"], "fanout.txt"),
        (&["pipeline", "plan", "shards", "-o", "dot"], "fanout.dot"),
        (&["pipeline", "plan", "shards", "-o", "json"], "fanout.json"),
        (&["pipeline", "plan", "matrix"], "matrix.txt"),
        (&["pipeline", "plan", "matrix", "-o", "dot"], "matrix.dot"),
        (&["pipeline", "plan", "matrix", "-o", "json"], "matrix.json"),
    ];
    for (args, file) in cases {
        let out = sw.sw(*args);
        out.assert_code(0);
        golden(file, &out.stdout);
    }
    let out = sw.sw(["pipeline", "lint", "-o", "json"]);
    out.assert_code(1);
    let lines = out.json_lines();
    let reserved = lines.iter().find(|l| l["pipeline"] == "reserved").unwrap();
    assert_eq!(reserved["findings"][0]["kind"], "reserved_id", "{out}");
    assert!(
        reserved["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ids NAME[i] are given to the jobs a fan-out or matrix expands into"),
        "{out}"
    );
    for ok in ["shards", "matrix"] {
        let l = lines.iter().find(|l| l["pipeline"] == ok).unwrap();
        assert_eq!(l["status"], "ok", "{out}");
    }
    assert!(!sw.home().join("state.db").exists());
}

#[test]
fn a_memoized_expanded_job_is_keyed_with_its_item() {
    let sw = Sw::fixture("fanout");
    sw.sw(["run", "memo"]).assert_code(0);
    assert_eq!(ran(&sw), ["work[0]", "work[1]"]);
    // The same ids with the items swapped: neither result fits.
    let swapped = sw.sw(["run", "memo", "--list", r#"["b","a"]"#]);
    swapped.assert_code(0);
    assert_eq!(ran(&sw), ["work[0]", "work[1]"]);
    let again = sw.sw(["run", "memo", "--list", r#"["b","a"]"#]);
    again.assert_code(0);
    assert!(ran(&sw).is_empty());
    let id = again.run_id();
    let first = swapped.run_id();
    for job in ["work[0]", "work[1]"] {
        assert_eq!(
            state(&sw, &id, job),
            pair("cached", &format!("cached from run {first}"))
        );
    }
    assert_eq!(sw.job(&id, "work[0]")["outputs"]["out"], "done-b");
}
