//! Caches and artifacts of cluster runs: `sparkwing runner` processes of runs of the `storage`
//! fixture against the real API (as the runner Jobs of a cluster would run them). One run saves
//! a cache that the next run, in a fresh workspace, restores; a producer hands an artifact to a
//! consumer through the API; `cache list|prune --profile` and `runs artifacts --profile
//! --download` read them back.

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

fn with_profile(sw: &mut Sw, api: &Api) {
    let profiles = sw.home().join("profiles.yaml");
    std::fs::write(
        &profiles,
        format!(
            "profiles:\n  ci:\n    controller: {}\n    token_env: SW_ADMIN\n    namespace: ci\n",
            api.url
        ),
    )
    .unwrap();
    sw.env("SPARKWING_PROFILES", profiles.to_str().unwrap())
        .env("SW_ADMIN", &api.admin);
}

/// Run `pipeline` on a runner to its end (exit 0); the run's namespace and name.
fn run_on_a_runner(sw: &Sw, api: &Api, pipeline: &str, upload: &str) -> (String, String) {
    let (ns, name, token) = api.trigger(pipeline, upload, json!({}));
    let out = Running::spawn(runner(sw, api, &ns, &name, &token)).finish_within(DEADLINE);
    out.assert_code(0);
    (ns, name)
}

/// The lines of `job`'s log in the API.
fn lines(api: &Api, ns: &str, name: &str, job: &str) -> Vec<String> {
    let page: Value = api.get(&format!("/api/v1/runs/{ns}/{name}/logs?job={job}"));
    page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_cache_saved_by_one_run_is_restored_by_the_next_and_an_artifact_passes_through_the_api() {
    let api = Api::start();
    let mut sw = Sw::fixture("storage");
    with_profile(&mut sw, &api);
    let upload = api.upload(sw.root());

    // Run A misses and saves; run B, in a workspace of its own, restores it (a hit).
    let (ns, a) = run_on_a_runner(&sw, &api, "deps", &upload);
    let la = lines(&api, &ns, &a, "build");
    assert!(la.iter().any(|l| l == "restored: none"), "{la:?}");
    assert!(
        la.iter()
            .any(|l| l.starts_with("cache deps: saved deps-v1-")),
        "{la:?}"
    );
    let (_, b) = run_on_a_runner(&sw, &api, "deps", &upload);
    let lb = lines(&api, &ns, &b, "build");
    assert!(lb.iter().any(|l| l == "restored: v1"), "{lb:?}");
    assert!(
        lb.iter()
            .any(|l| l.starts_with("cache deps: hit (key deps-v1-")),
        "{lb:?}"
    );

    // `cache list --profile`: the entry, in the scope of the pipeline, as a table and as JSON.
    let list = sw.sw(["cache", "list", "--profile", "ci"]);
    list.assert_code(0);
    assert!(list.stdout.contains("pipeline:deps"), "{list}");
    assert!(list.stdout.contains("1 entries"), "{list}");
    let json_list = sw.sw(["cache", "list", "--profile", "ci", "-o", "json"]);
    json_list.assert_code(0);
    let entries = json_list.json_lines();
    assert_eq!(entries.len(), 1, "{json_list}");
    assert_eq!(entries[0]["namespace"], "ci");
    let key = entries[0]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("deps-v1-"), "{key}");

    // A producer publishes dist, a consumer in another directory gets it.
    let (_, c) = run_on_a_runner(&sw, &api, "artifacts", &upload);
    let lc = lines(&api, &ns, &c, "check");
    assert!(lc.iter().any(|l| l == "got: app v1 guide"), "{lc:?}");
    let run = format!("{ns}/{c}");
    let listed = sw.sw(["runs", "artifacts", "--run", &run, "--profile", "ci"]);
    listed.assert_code(0);
    assert!(listed.stdout.contains("dist"), "{listed}");
    let to = tempfile::tempdir().unwrap();
    let got = sw.sw([
        "runs",
        "artifacts",
        "--run",
        &run,
        "--profile",
        "ci",
        "--download",
        "dist",
        "--to",
        to.path().to_str().unwrap(),
    ]);
    got.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(to.path().join("dist/app.txt")).unwrap(),
        "app v1\n"
    );
    assert_eq!(
        std::fs::read_to_string(to.path().join("dist/docs/guide.md")).unwrap(),
        "guide\n"
    );

    // Bad input: an artifact the run does not have, a key no entry has.
    let nope = sw.sw([
        "runs",
        "artifacts",
        "--run",
        &run,
        "--profile",
        "ci",
        "--download",
        "nope",
    ]);
    nope.assert_code(5);
    assert!(
        nope.stderr.contains(&format!(
            "artifact nope not found in run {run} (it has: build/dist)"
        )),
        "{nope}"
    );
    let prune = sw.sw(["cache", "prune", "--profile", "ci", "--key", "nope-1"]);
    prune.assert_code(5);
    assert!(
        prune.stderr.contains("cache entry nope-1 not found"),
        "{prune}"
    );
    let prune = sw.sw(["cache", "prune", "--profile", "ci", "--key", &key]);
    prune.assert_code(0);
    assert!(prune.stdout.contains(&format!("removed {key}")), "{prune}");
    let list = sw.sw(["cache", "list", "--profile", "ci", "-o", "json"]);
    assert!(list.json_lines().is_empty(), "{list}");
}
