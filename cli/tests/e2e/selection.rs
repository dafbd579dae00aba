//! `--sw-only`, `--sw-start-at`, `--sw-stop-at` on a fresh run: the jobs left out are recorded
//! `skipped` with the flag as the reason; `finally` jobs always run.

use crate::common::*;

fn states(sw: &Sw, id: &str, jobs: &[&str]) -> Vec<(String, String)> {
    jobs.iter()
        .map(|j| {
            let job = sw.job(id, j);
            (
                job["state"].as_str().unwrap_or_default().to_string(),
                job["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pair(state: &str, reason: &str) -> (String, String) {
    (state.to_string(), reason.to_string())
}

#[test]
fn only_start_at_and_stop_at_run_exactly_the_selected_jobs() {
    let sw = Sw::fixture("rich");
    // dag: compile fails when it runs; with --sw-only docs it does not, and the finally job runs.
    let out = sw.sw(["run", "dag", "--sw-only", "docs"]);
    out.assert_code(0);
    let id = out.run_id();
    let only = "not selected (--sw-only docs)";
    assert_eq!(
        states(
            &sw,
            &id,
            &["compile", "package", "docs", "flaky-lint", "report"]
        ),
        [
            pair("skipped", only),
            pair("skipped", only),
            pair("success", ""),
            pair("skipped", only),
            pair("success", ""),
        ]
    );
    assert!(sw.log_lines(&id, "compile").is_empty());
    assert_eq!(sw.log_lines(&id, "report"), ["report ran"]);

    // features: producer and what needs it; a plan-time skip keeps its own reason.
    let out = sw.sw(["run", "features", "--sw-start-at=producer"]);
    out.assert_code(0);
    let id = out.run_id();
    let start = "not selected (--sw-start-at producer)";
    assert_eq!(
        states(
            &sw,
            &id,
            &["flaky", "producer", "consumer", "skipped", "wd"]
        ),
        [
            pair("skipped", start),
            pair("success", ""),
            pair("success", ""),
            pair("skipped", "not needed today"),
            pair("skipped", start),
        ]
    );
    assert_eq!(
        sw.log_lines(&id, "consumer"),
        ["consumed version=1.2.3 channel=beta"]
    );

    // logs: alpha -> beta; stop at alpha.
    let out = sw.sw(["run", "logs", "--sw-stop-at", "alpha"]);
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(
        states(&sw, &id, &["alpha", "beta"]),
        [
            pair("success", ""),
            pair("skipped", "not selected (--sw-stop-at alpha)")
        ]
    );
}

#[test]
fn a_dry_run_shows_what_the_selection_leaves_out() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "logs", "--sw-stop-at", "alpha", "--sw-dry-run"]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[4], "alpha  -", "{out}");
    assert_eq!(
        lines[5], "beta   alpha  skipped: not selected (--sw-stop-at alpha)",
        "{out}"
    );
    let out = sw.sw(["run", "logs", "--sw-only", "gamma", "--sw-dry-run"]);
    out.assert_code(2);
    assert!(out.stderr.contains("names no job \"gamma\""), "{out}");
    assert!(!sw.home().join("state.db").exists());
}

#[test]
fn a_bad_selection_exits_2_and_records_nothing() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "logs", "--sw-only", "gamma"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("--sw-only names no job \"gamma\" of this plan (jobs: alpha, beta)"),
        "{out}"
    );
    let out = sw.sw([
        "run",
        "logs",
        "--sw-only",
        "alpha",
        "--sw-start-at",
        "alpha",
    ]);
    out.assert_code(2);
    assert!(out.stderr.contains("cannot be combined"), "{out}");
    let out = sw.sw([
        "run",
        "logs",
        "--sw-start-at",
        "beta",
        "--sw-stop-at",
        "alpha",
    ]);
    out.assert_code(2);
    assert!(out.stderr.contains("leave no job"), "{out}");
    let out = sw.sw(["run", "logs", "--sw-only"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--sw-only needs a job id"), "{out}");
    let out = sw.sw(["pipeline", "trigger", "logs", "--sw-only", "alpha"]);
    out.assert_code(2);
    assert!(out.stderr.contains("are for `sparkwing run`"), "{out}");
    let list = sw.sw(["runs", "list", "-o", "json"]);
    list.assert_code(0);
    assert!(list.json_lines().is_empty(), "{list}");
}
