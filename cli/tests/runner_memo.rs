//! Memoized jobs of cluster runs: `sparkwing runner` processes of runs of the `storage`
//! fixture's `memo` pipeline against the real API (as the runner Jobs of a cluster would run
//! them, each in a workspace of its own). Run A runs the memoized `build` and records its
//! success; run B of the same pipeline takes it — `build` recorded `cached` from run A, its
//! output and artifact handed to the consumer `use` — and a run triggered with `noCache`
//! (`--sw-no-cache`) runs it again.

mod common;
mod runner_support;

use common::{Running, Sw};
use runner_support::Api;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(300);

/// The runner Job's command for attempt 1 of `ns/name`.
fn runner(sw: &Sw, api: &Api, ns: &str, name: &str, token: &str) -> Command {
    let mut c = sw.cmd(["runner", "--run", &format!("{ns}/{name}"), "--attempt", "1"]);
    c.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", token)
        .env("SPARKWING_RUN", name)
        .env("SPARKWING_NAMESPACE", ns)
        .env("SPARKWING_ATTEMPT", "1")
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", sw.home());
    c
}

/// Trigger `memo` from `upload` (with `noCache` when asked) and run it on a runner to its end
/// (exit 0): the run's name.
fn run_memo(sw: &Sw, api: &Api, upload: &str, no_cache: bool) -> String {
    let mut body = json!({"pipeline": "memo", "namespace": "ci",
        "source": {"upload": {"id": upload}}});
    if no_cache {
        body["noCache"] = json!(true);
    }
    let (status, v) = api.call(
        "POST",
        "/api/v1/runs",
        &api.admin,
        Some(body.to_string().into_bytes()),
    );
    assert_eq!(status, 201, "trigger: {v}");
    let name = v["name"].as_str().unwrap().to_string();
    let token = api.runs.runner_token("ci", &name).unwrap();
    let out = Running::spawn(runner(sw, api, "ci", &name, &token)).finish_within(DEADLINE);
    out.assert_code(0);
    name
}

/// Job `job`'s state object in the API.
fn job(api: &Api, name: &str, job: &str) -> Value {
    let view = api.get(&format!("/api/v1/runs/ci/{name}"));
    view["jobs"][job].clone()
}

fn lines(api: &Api, name: &str, job: &str) -> Vec<String> {
    api.texts("ci", name, job)
}

#[test]
fn a_memoized_job_of_a_cluster_run_is_cached_from_an_earlier_run_of_its_pipeline() {
    let api = Api::start();
    let sw = Sw::fixture("storage");
    let upload = api.upload(sw.root());

    // Run A: build runs and publishes bin; use gets it.
    let a = run_memo(&sw, &api, &upload, false);
    let build_a = job(&api, &a, "build");
    assert_eq!(build_a["state"], "success", "{build_a}");
    assert!(build_a.get("cachedFrom").is_none(), "{build_a}");
    let use_a = lines(&api, &a, "use");
    assert!(
        use_a.iter().any(|l| l == "used: bin plain one built=yes"),
        "{use_a:?}"
    );

    // Run B, in a fresh workspace: build does not run; its result is run A's.
    let b = run_memo(&sw, &api, &upload, false);
    let build_b = job(&api, &b, "build");
    assert_eq!(build_b["state"], "cached", "{build_b}");
    assert_eq!(build_b["cachedFrom"], a.as_str(), "{build_b}");
    assert_eq!(
        build_b["reason"],
        format!("cached from run {a}"),
        "{build_b}"
    );
    assert_eq!(build_b["outputs"], json!({"built": "yes"}), "{build_b}");
    assert_eq!(job(&api, &b, "detect")["state"], "success");
    let use_b = lines(&api, &b, "use");
    assert!(
        use_b.iter().any(|l| l == "used: bin plain one built=yes"),
        "{use_b:?}"
    );
    // The artifact is run B's too (as `runs artifacts` lists it), with run A's chunks.
    let listed = api.get(&format!("/api/v1/runs/ci/{b}/artifacts"));
    assert_eq!(listed["artifacts"][0]["job"], "build", "{listed}");
    assert_eq!(listed["artifacts"][0]["name"], "bin", "{listed}");
    let of = |run: &str| {
        api.get(&format!("/api/v1/runs/ci/{run}/artifacts/build/bin"))["manifest"].clone()
    };
    assert_eq!(of(&b), of(&a));
    let build_lines = lines(&api, &b, "build");
    assert!(
        build_lines
            .iter()
            .any(|l| l.starts_with("artifact bin published from out/bin")),
        "{build_lines:?}"
    );

    // `--sw-no-cache`: build runs again (a success of its own, not cached).
    let c = run_memo(&sw, &api, &upload, true);
    let build_c = job(&api, &c, "build");
    assert_eq!(build_c["state"], "success", "{build_c}");
    assert!(build_c.get("cachedFrom").is_none(), "{build_c}");
    let view = api.get(&format!("/api/v1/runs/ci/{c}"));
    assert_eq!(
        view["run"]["metadata"]["annotations"]["sparkwing.dev/no-cache"], "true",
        "{view}"
    );
}
