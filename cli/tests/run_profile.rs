//! `sparkwing run X --profile P`: the run executes here, is recorded locally, and is also an
//! external run on the profile's API (the real API, served in-process); with the API down it
//! still completes locally and `sparkwing runs push` delivers it later.

mod common;
mod runner_support;

use common::Sw;
use runner_support::{free_addr, Api};
use serde_json::Value;
use std::time::Duration;

/// A profile `ci` pointing at `url`, its token in $SW_TEST_TOKEN.
fn profile(sw: &mut Sw, url: &str, token: &str) {
    let path = sw.home().join("profiles.yaml");
    std::fs::write(
        &path,
        format!(
            "default: ci\nprofiles:\n  ci:\n    controller: {url}\n    token_env: SW_TEST_TOKEN\n    namespace: ci\n"
        ),
    )
    .unwrap();
    sw.env("SPARKWING_PROFILES", path.to_str().unwrap())
        .env("SW_TEST_TOKEN", token);
}

fn trigger_token(api: &Api) -> String {
    runner_support::block_on(api.state.store.create_token(
        "dev@example.com",
        vec!["runs:trigger".into(), "runs:read".into()],
        None,
    ))
    .unwrap()
    .0
}

/// The only run the API has in namespace `ci`.
fn only_run(api: &Api) -> (String, String) {
    let list = api.get("/api/v1/runs?namespace=ci");
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{list}");
    (
        runs[0]["namespace"].as_str().unwrap().to_string(),
        runs[0]["name"].as_str().unwrap().to_string(),
    )
}

fn assert_lines_run_on_api(api: &Api, ns: &str, name: &str, who: &str) -> Value {
    let count = api.texts(ns, name, "count");
    assert_eq!(count.len(), 1201);
    assert_eq!(api.texts(ns, name, "greet"), [format!("hello {who}")]);
    let run = api.run(ns, name);
    assert_eq!(
        run["run"]["spec"]["source"],
        serde_json::json!({"external": {}}),
        "{run}"
    );
    assert_eq!(run["run"]["spec"]["args"]["who"], who, "{run}");
    assert_eq!(run["phase"], "Succeeded", "{run}");
    assert_eq!(run["jobs"]["count"]["state"], "success", "{run}");
    assert_eq!(run["jobs"]["greet"]["state"], "success", "{run}");
    run
}

#[test]
fn run_profile_records_the_run_locally_and_on_the_api() {
    let api = Api::start();
    let mut sw = Sw::fixture("remote");
    let token = trigger_token(&api);
    profile(&mut sw, &api.url, &token);
    let out = sw.sw(["run", "lines", "--profile", "ci", "--who", "laptop"]);
    out.assert_code(0);
    let id = out.run_id();
    assert!(
        out.stderr
            .contains(&format!("run {id} recorded on {}", api.url)),
        "{out}"
    );
    let (ns, name) = only_run(&api);
    let run = assert_lines_run_on_api(&api, &ns, &name, "laptop");
    assert_eq!(run["triggeredBy"]["principal"], "dev@example.com", "{run}");
    // Recorded locally too, with the same lines.
    assert_eq!(sw.listed_run(&id)["status"], "success");
    let local = std::fs::read_to_string(sw.log_path(&id, "count")).unwrap();
    assert_eq!(local.lines().count(), 1201);
    // Everything arrived: a push has nothing left to do.
    let out = sw.sw(["runs", "push", &id, "--profile", "ci"]);
    out.assert_code(0);
    assert!(out.stdout.contains("is already on"), "{out}");
}

#[test]
fn run_profile_failing_pipeline_is_failed_on_the_api() {
    let api = Api::start();
    let mut sw = Sw::fixture("remote");
    let token = trigger_token(&api);
    profile(&mut sw, &api.url, &token);
    let out = sw.sw(["run", "fail", "--profile", "ci"]);
    out.assert_code(1);
    let (ns, name) = only_run(&api);
    let run = api.run(&ns, &name);
    assert_eq!(run["phase"], "Failed", "{run}");
    assert_eq!(run["jobs"]["broken"]["state"], "failed", "{run}");
    assert!(api
        .texts(&ns, &name, "broken")
        .contains(&"about to fail".to_string()));
}

#[test]
fn run_profile_with_the_api_down_completes_locally_and_push_delivers_it_later() {
    let down = format!("http://{}", free_addr());
    let mut sw = Sw::fixture("remote");
    profile(&mut sw, &down, "swt_whatever");
    let out = sw.sw(["run", "lines", "--profile", "ci", "--who", "offline"]);
    out.assert_code(0);
    let id = out.run_id();
    let hint = format!("sparkwing runs push {id} --profile ci");
    assert!(out.stderr.contains(&hint), "{out}");
    assert!(out.stderr.contains("cannot reach the API"), "{out}");
    assert_eq!(sw.listed_run(&id)["status"], "success");

    // The API is back (elsewhere): push the run there.
    let api = Api::start();
    let token = trigger_token(&api);
    profile(&mut sw, &api.url, &token);
    let out = sw.sw(["runs", "push", &id, "--profile", "ci"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("1201") || out.stdout.contains("1202"),
        "{out}"
    );
    let (ns, name) = only_run(&api);
    assert_lines_run_on_api(&api, &ns, &name, "offline");
    // The jobs' outputs came with their states, from the local store.
    assert_eq!(
        api.run(&ns, &name)["jobs"]["greet"]["outputs"],
        serde_json::json!({"greeting": "hello offline"})
    );
    // Pushing again does not make a second run.
    let out = sw.sw(["runs", "push", &id, "--profile", "ci"]);
    out.assert_code(0);
    assert!(out.stdout.contains("is already on"), "{out}");
    only_run(&api);
}

#[test]
fn run_profile_api_lost_mid_run_is_pushed_into_the_same_external_run() {
    let mut api = Api::start();
    let mut sw = Sw::fixture("remote");
    let token = trigger_token(&api);
    profile(&mut sw, &api.url, &token);
    let mut running = sw.spawn(["run", "slow", "--profile", "ci"]);
    let id = running.wait_run_id();
    // Delivered while the job runs (it waits 120 s for a signal).
    api.wait_for(
        Duration::from_secs(30),
        "the slow job's lines on the API",
        |api| {
            let list = api.get("/api/v1/runs?namespace=ci");
            let Some(run) = list["runs"].as_array().and_then(|r| r.first()) else {
                return false;
            };
            let name = run["name"].as_str().unwrap();
            api.log_jobs("ci", name).contains(&"wait".to_string())
                && api.lines("ci", name, "wait").len() == 3
        },
    );
    let (ns, name) = only_run(&api);
    // The API goes away; then the run is cancelled: its end and the finally job's lines stay
    // local.
    api.down();
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let out = running.finish_within(Duration::from_secs(120));
    out.assert_code(130);
    assert!(
        out.stderr
            .contains(&format!("sparkwing runs push {id} --profile ci")),
        "{out}"
    );
    assert_eq!(sw.listed_run(&id)["status"], "cancelled");

    api.up();
    assert!(api.lines(&ns, &name, "cleanup").is_empty());
    let out = sw.sw(["runs", "push", &id, "--profile", "ci"]);
    out.assert_code(0);
    assert!(out.stdout.contains(&format!("{ns}/{name}")), "{out}");
    // Into the same external run: no second one, each line once.
    assert_eq!(only_run(&api), (ns.clone(), name.clone()));
    assert_eq!(
        api.texts(&ns, &name, "wait"),
        ["before 1", "before 2", "before 3"]
    );
    assert_eq!(api.texts(&ns, &name, "cleanup"), ["cleanup ran"]);
    let run = api.run(&ns, &name);
    assert_eq!(run["phase"], "Cancelled", "{run}");
    assert_eq!(run["jobs"]["wait"]["state"], "cancelled", "{run}");
    assert_eq!(run["jobs"]["cleanup"]["state"], "success", "{run}");
}

#[test]
fn run_profile_never_sends_a_secret_arg_to_the_api() {
    let api = Api::start();
    let mut sw = Sw::fixture("remote");
    let token = trigger_token(&api);
    profile(&mut sw, &api.url, &token);
    let secret = "hunter2-secret-value";
    let out = sw.sw([
        "run",
        "lines",
        "--profile",
        "ci",
        "--n",
        "2",
        "--token",
        secret,
    ]);
    out.assert_code(0);
    let (ns, name) = only_run(&api);
    assert_eq!(
        api.texts(&ns, &name, "greet"),
        ["hello world", "token is ***"]
    );
    let run = api.run(&ns, &name);
    assert_eq!(run["run"]["spec"]["args"]["token"], "***", "{run}");
    assert_eq!(
        run["jobs"]["greet"]["outputs"]["auth"], "token=***",
        "{run}"
    );
    // Nowhere in the API's data: logs, job states, runs, archive.
    fn walk(dir: &std::path::Path, secret: &str) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, secret);
            } else {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                assert!(!text.contains(secret), "{} holds the secret", p.display());
            }
        }
    }
    walk(api.data.path(), secret);
    assert!(!run.to_string().contains(secret));
}

/// With `mirror_local: false` a run the API took whole is not kept locally; one it missed is.
#[test]
fn run_profile_without_mirror_local_keeps_only_what_the_api_missed() {
    let api = Api::start();
    let mut sw = Sw::fixture("remote");
    let token = trigger_token(&api);
    let write = |sw: &mut Sw, url: &str, token: &str| {
        let path = sw.home().join("profiles.yaml");
        std::fs::write(
            &path,
            format!(
                "default: ci\nprofiles:\n  ci:\n    controller: {url}\n    token_env: SW_TEST_TOKEN\n    namespace: ci\n    mirror_local: false\n"
            ),
        )
        .unwrap();
        sw.env("SPARKWING_PROFILES", path.to_str().unwrap())
            .env("SW_TEST_TOKEN", token);
    };
    write(&mut sw, &api.url, &token);
    let out = sw.sw(["run", "lines", "--profile", "ci", "--who", "remote-only"]);
    out.assert_code(0);
    let id = out.run_id();
    assert!(out.stderr.contains("not kept locally"), "{out}");
    let (ns, name) = only_run(&api);
    assert_lines_run_on_api(&api, &ns, &name, "remote-only");
    assert!(
        !sw.runs_list().iter().any(|r| r["id"] == id.as_str()),
        "run {id} is still in the local store"
    );
    assert!(!sw.run_dir(&id).exists(), "run {id}'s directory remains");

    // The API is down: nothing is lost, the run stays local with the push hint.
    let down = format!("http://{}", free_addr());
    write(&mut sw, &down, "swt_whatever");
    let out = sw.sw(["run", "lines", "--profile", "ci", "--who", "offline"]);
    out.assert_code(0);
    let id = out.run_id();
    assert!(
        out.stderr
            .contains(&format!("sparkwing runs push {id} --profile ci")),
        "{out}"
    );
    assert_eq!(sw.listed_run(&id)["status"], "success");
    assert_eq!(sw.log_records(&id, "count").len(), 1201);
}

#[test]
fn run_profile_reports_each_jobs_needs_and_a_gates_message() {
    let api = Api::start();
    let mut sw = Sw::fixture("gates");
    let token = trigger_token(&api);
    profile(&mut sw, &api.url, &token);
    let mut run = sw.spawn(["run", "ship", "--profile", "ci"]);
    let id = run.wait_run_id();
    api.wait_for(
        Duration::from_secs(60),
        "the gate waiting on the API",
        |api| {
            let list = api.get("/api/v1/runs?namespace=ci");
            let Some(r) = list["runs"].as_array().and_then(|r| r.first()) else {
                return false;
            };
            let (ns, name) = (
                r["namespace"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
            );
            api.run(ns, name)["jobs"]["approve"]["state"] == "waiting"
        },
    );
    let (ns, name) = only_run(&api);
    let jobs = api.run(&ns, &name)["jobs"].clone();
    assert_eq!(jobs["approve"]["gate"], true, "{jobs}");
    assert_eq!(jobs["approve"]["gateMessage"], "Ship it?", "{jobs}");
    assert_eq!(
        jobs["approve"]["needs"],
        serde_json::json!(["build"]),
        "{jobs}"
    );
    assert_eq!(
        jobs["deploy"]["needs"],
        serde_json::json!(["approve"]),
        "{jobs}"
    );
    // A job without needs reports none; a job that is no gate no gate fields.
    assert!(jobs["build"].get("needs").is_none(), "{jobs}");
    assert!(jobs["build"].get("gateMessage").is_none(), "{jobs}");
    sw.sw([
        "runs", "approve", "--run", &id, "--gate", "approve", "--as", "ana",
    ])
    .assert_code(0);
    run.finish().assert_code(0);
    let jobs = api.run(&ns, &name)["jobs"].clone();
    assert_eq!(jobs["deploy"]["state"], "success", "{jobs}");
    assert_eq!(
        jobs["deploy"]["needs"],
        serde_json::json!(["approve"]),
        "{jobs}"
    );
}
