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
