//! Runtime conditions (`when`): decided as each job becomes ready, from its needs' outputs, the
//! run's branch and failed needs; a false one skips the job with the condition as its reason.

use crate::common::*;

#[test]
fn conditions_start_or_skip_jobs_with_their_reason() {
    let sw = Sw::fixture("rich");
    // The run's branch is read from .git/HEAD.
    std::fs::create_dir(sw.root().join(".git")).unwrap();
    std::fs::write(sw.root().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let out = sw.sw(["run", "conditions"]);
    // `broken` is optional: the run succeeds.
    out.assert_code(0);
    let id = out.run_id();
    let job = |j: &str| sw.job(&id, j);
    let ran = |j: &str| {
        assert_eq!(job(j)["state"], "success", "{j}: {}", job(j));
        assert_eq!(sw.log_lines(&id, j), [format!("{j} ran")]);
    };
    let skipped = |j: &str, reason: &str| {
        assert_eq!(job(j)["state"], "skipped", "{j}: {}", job(j));
        assert_eq!(job(j)["reason"], reason, "{j}");
        assert!(sw.log_lines(&id, j).is_empty(), "{j} ran");
    };
    ran("build");
    skipped("docs", "condition false: detect.docs == \"yes\"");
    // A job skipped by its condition satisfies its dependents, as any skipped job.
    ran("after-docs");
    ran("on-main");
    skipped("off-main", "condition false: not branch == \"main\"");
    assert_eq!(job("broken")["state"], "failed");
    ran("notify");
    assert_eq!(job("ship")["state"], "cancelled");
    assert_eq!(job("ship")["reason"], "upstream-failed");
    skipped("all-good", "condition false: upstream failed");

    // continue_on_error: the failed step is recorded and the job goes on to succeed.
    assert_eq!(job("lenient")["state"], "success", "{}", job("lenient"));
    let lines = sw.log_lines(&id, "lenient");
    assert!(lines.iter().any(|l| l == "shaky step"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("step shaky failed; the job goes on: ")
                && l.contains("exit status 5")),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("lenient went on (shaky gave nothing: true)")
    );
    let ends = out.events("step_end");
    let shaky = ends
        .iter()
        .find(|e| e["job"] == "lenient" && e["step"] == "shaky")
        .unwrap_or_else(|| panic!("no step_end of shaky in {out}"));
    assert_eq!(shaky["ok"], false);
    assert_eq!(shaky["continue_on_error"], true);
    let solid = ends
        .iter()
        .find(|e| e["job"] == "lenient" && e["step"] == "solid")
        .unwrap();
    assert_eq!(solid["ok"], true);
    assert!(solid.get("continue_on_error").is_none(), "{solid}");
}

#[test]
fn a_condition_on_a_job_that_is_not_a_need_is_a_plan_error() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "bad-when"]);
    out.assert_code(1);
    let id = out.run_id();
    assert_eq!(out.events("plan_invalid").len(), 1, "{out}");
    let run = sw.listed_run(&id);
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "job \"deploy\" has a condition on the outputs of \"detect\", which is not a job it needs"
        ),
        "{run}"
    );
    assert!(sw.log_lines(&id, "deploy").is_empty());
    // The same error before running: plan exits 1 and names it.
    let plan = sw.sw(["pipeline", "plan", "bad-when"]);
    plan.assert_code(1);
    assert!(
        plan.stderr.contains("add \"detect\" to its needs"),
        "{plan}"
    );
}
