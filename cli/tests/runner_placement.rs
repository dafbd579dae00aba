//! A cluster run whose plan places jobs (`docs/authoring.md#placement`), run by
//! `sparkwing runner` against the real API, started by hand (no `POD_NAME`): it runs every job
//! itself, placed or not, with one note naming the placed jobs (in a cluster's pod placed jobs
//! get pods of their own: `e2e/tests/job_pods.rs`).

mod common;
mod runner_support;

use common::Sw;
use runner_support::Api;
use serde_json::json;

#[test]
fn a_runner_runs_placed_jobs_itself_and_says_so_once() {
    let api = Api::start();
    let sw = Sw::fixture("placement");
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("placed", &upload, json!({}));
    let mut cmd = sw.cmd(["runner", "--run", &format!("{ns}/{name}"), "--attempt", "1"]);
    cmd.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", &token)
        .env("SPARKWING_RUN", &name)
        .env("SPARKWING_NAMESPACE", &ns)
        .env("SPARKWING_ATTEMPT", "1")
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", sw.home())
        .env_remove("POD_NAME");
    let out = sw.run_cmd(cmd);
    out.assert_code(0);
    let notes: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| l.contains("placement ignored"))
        .collect();
    assert_eq!(
        notes,
        ["note: placement ignored for jobs build, lint: this runner is not in a cluster's pod (POD_NAME is not set), so it executes every job itself"],
        "{out}"
    );
    // The placed jobs ran like the others, and the dependent read the placed job's output.
    let run = api.run(&ns, &name);
    for job in ["build", "lint", "report"] {
        assert_eq!(run["jobs"][job]["state"], "success", "{job}: {run}");
    }
    let report = api.texts(&ns, &name, "report");
    assert!(
        report.iter().any(|l| l == "report of build 1.2.3"),
        "{report:?}"
    );
}

/// `sparkwing runner --run NS/NAME --attempt 1 --job JOB --job-attempt N` with the run's token.
fn job_pod_cmd(
    sw: &Sw,
    api: &Api,
    ns: &str,
    name: &str,
    token: &str,
    job: &str,
) -> std::process::Command {
    let mut cmd = sw.cmd([
        "runner",
        "--run",
        &format!("{ns}/{name}"),
        "--attempt",
        "1",
        "--job",
        job,
        "--job-attempt",
        "2",
    ]);
    cmd.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", token)
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", sw.home())
        .env_remove("POD_NAME");
    cmd
}

#[test]
fn a_job_pod_runs_its_one_job_and_reports_it_under_the_job_id() {
    let api = Api::start();
    let sw = Sw::fixture("placement");
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("placed", &upload, json!({}));
    // The coordinator recorded `build`'s end with its outputs, and `report` pending.
    for (job, state) in [
        (
            "build",
            json!({"state": "success", "attempt": 1, "outputs": {"version": "1.2.3"}}),
        ),
        (
            "report",
            json!({"state": "pending", "attempt": 0, "needs": ["build", "lint"]}),
        ),
    ] {
        let (status, v) = api.call(
            "PUT",
            &format!("/api/v1/runs/{ns}/{name}/jobs/{job}"),
            &token,
            Some(state.to_string().into_bytes()),
        );
        assert_eq!(status, 204, "{v}");
    }
    let out = sw.run_cmd(job_pod_cmd(&sw, &api, &ns, &name, &token, "report"));
    out.assert_code(0);
    let run = api.run(&ns, &name);
    let report = &run["jobs"]["report"];
    assert_eq!(report["state"], "success", "{run}");
    assert_eq!(report["attempt"], 2, "{run}");
    assert_eq!(report["needs"], json!(["build", "lint"]), "{run}");
    assert_eq!(
        api.texts(&ns, &name, "report"),
        ["report of build 1.2.3"],
        "the job's log, and only its own lines"
    );
    // Nothing else of the run was recorded: no other job, no end.
    assert_eq!(run["jobs"]["build"]["state"], "success");
    assert!(run["jobs"].get("lint").is_none(), "{run}");
    assert_eq!(run["phase"], "Pending", "{run}");
    assert_eq!(api.log_jobs(&ns, &name), ["report"]);

    // A job the plan does not have fails its attempt, saying so in its log.
    let out = sw.run_cmd(job_pod_cmd(&sw, &api, &ns, &name, &token, "nope"));
    out.assert_code(1);
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["nope"]["state"], "failed", "{run}");
    let log = api.texts(&ns, &name, "nope");
    assert!(
        log.iter()
            .any(|l| l.contains("job \"nope\" is not in the plan")),
        "{log:?}"
    );
}

#[test]
fn a_job_pod_whose_setup_fails_fails_its_job_with_the_reason_in_its_log() {
    let api = Api::start();
    let sw = Sw::fixture("placement");
    // A source without .sparkwing/.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README"), "no pipelines here\n").unwrap();
    let upload = api.upload(empty.path());
    let (ns, name, token) = api.trigger("placed", &upload, json!({}));
    let out = sw.run_cmd(job_pod_cmd(&sw, &api, &ns, &name, &token, "build"));
    out.assert_code(1);
    let run = api.run(&ns, &name);
    let build = &run["jobs"]["build"];
    assert_eq!(build["state"], "failed", "{run}");
    assert_eq!(build["attempt"], 2, "{run}");
    let reason = build["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("job pod setup (compile): the source has no usable .sparkwing/"),
        "{reason}"
    );
    let log = api.texts(&ns, &name, "build");
    assert!(
        log.iter().any(|l| l.contains("no usable .sparkwing/")),
        "{log:?}"
    );
    // The run goes on under its coordinator: no end, no pseudo-job.
    assert!(run["jobs"].get("compile").is_none(), "{run}");
}

#[test]
fn job_without_its_attempt_is_a_usage_error() {
    let sw = Sw::fixture("placement");
    let out = sw.run_cmd(sw.cmd([
        "runner",
        "--run",
        "ci/x",
        "--attempt",
        "1",
        "--job",
        "build",
    ]));
    out.assert_code(2);
    assert!(out.stderr.contains("--job-attempt"), "{out}");
}
