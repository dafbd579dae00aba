//! `sparkwing runner --run NS/NAME --attempt N` against the real API: the source comes from an
//! upload, the pipeline runs with the local engine, logs, job states and the end go back to the
//! API. Each test runs the real binary as the operator's runner Job would.

mod common;
mod runner_support;

use common::{Running, Sw};
use runner_support::Api;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// The runner Job's command and environment, with this test's home and the shared cache.
fn runner_cmd(sw: &Sw, api: &Api, ns: &str, name: &str, token: &str) -> Command {
    attempt_cmd(sw, api, ns, name, token, 1)
}

fn attempt_cmd(sw: &Sw, api: &Api, ns: &str, name: &str, token: &str, attempt: u32) -> Command {
    let attempt_text = attempt.to_string();
    let mut c = sw.cmd([
        "runner",
        "--run",
        &format!("{ns}/{name}"),
        "--attempt",
        &attempt_text,
    ]);
    c.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", token)
        .env("SPARKWING_RUN", name)
        .env("SPARKWING_NAMESPACE", ns)
        .env("SPARKWING_ATTEMPT", &attempt_text)
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", sw.home());
    c
}

#[test]
fn runner_executes_an_uploaded_run_and_reports_every_line_and_state() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("lines", &upload, json!({"who": "cluster"}));
    let out = sw.run_cmd(runner_cmd(&sw, &api, &ns, &name, &token));
    out.assert_code(0);

    // Every line, in order, with seq 1..n (checked by `texts`).
    let count = api.texts(&ns, &name, "count");
    assert_eq!(count.len(), 1201, "{out}");
    // Both streams in the order written (one pipe; every line recorded as stdout): the stderr
    // line comes last.
    let all = api.lines(&ns, &name, "count");
    let lines: Vec<&str> = all.iter().map(|l| l["line"].as_str().unwrap()).collect();
    let mut want: Vec<String> = (1..=1200).map(|i| format!("line {i}")).collect();
    want.push("done counting".into());
    assert_eq!(lines, want);
    assert!(all.iter().all(|l| l["stream"] == "stdout"));
    // The run's args reached the pipeline.
    assert_eq!(api.texts(&ns, &name, "greet"), ["hello cluster"]);

    // The same lines as the runner's local log (same seq).
    let local_id = out.run_id();
    let local: Vec<(u64, String)> = std::fs::read_to_string(sw.log_path(&local_id, "count"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let remote: Vec<(u64, String)> = api
        .lines(&ns, &name, "count")
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(local, remote);

    // Job states, and the run finished (archived, its runner token revoked).
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["count"]["state"], "success", "{run}");
    assert_eq!(run["jobs"]["count"]["exitCode"], 0, "{run}");
    assert_eq!(run["jobs"]["greet"]["state"], "success", "{run}");
    assert!(run["jobs"]["greet"]["finishedAt"].is_string(), "{run}");
    assert_eq!(run["archived"], true, "finish was not called: {run}");
    let (status, v) = api.call("GET", &format!("/api/v1/runs/{ns}/{name}"), &token, None);
    assert_eq!(
        status, 401,
        "the runner token still works after finish: {v}"
    );
}

#[test]
fn runner_of_a_failing_pipeline_exits_1_and_reports_the_failure() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("fail", &upload, json!({}));
    let out = sw.run_cmd(runner_cmd(&sw, &api, &ns, &name, &token));
    out.assert_code(1);
    let lines = api.texts(&ns, &name, "broken");
    assert!(lines.contains(&"about to fail".to_string()), "{lines:?}");
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["broken"]["state"], "failed", "{run}");
    // The job's bash step exits 3: the job is recorded with that status.
    assert_eq!(run["jobs"]["broken"]["exitCode"], 3, "{run}");
    assert_eq!(run["jobs"]["broken"]["reason"], "exit code 3", "{run}");
    assert_eq!(run["archived"], true, "{run}");
}

#[test]
fn runner_refuses_a_tampered_blob_naming_the_path() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let upload = api.upload(sw.root());
    // Change main.rs's stored blob behind the API's back.
    let main_rs = std::fs::read(sw.root().join(".sparkwing/src/main.rs")).unwrap();
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&main_rs)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let blob = api.data.path().join("blobs").join(&sha[..2]).join(&sha);
    assert!(blob.is_file(), "blob layout: {}", blob.display());
    // Same size (the API refuses a trigger whose blobs contradict the manifest's sizes): only
    // the runner's hash check can catch this.
    let mut tampered = main_rs.clone();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b' ' { b'\n' } else { b' ' };
    std::fs::write(&blob, tampered).unwrap();

    let (ns, name, token) = api.trigger("lines", &upload, json!({}));
    let out = sw.run_cmd(runner_cmd(&sw, &api, &ns, &name, &token));
    out.assert_code(1);
    assert!(
        out.stderr
            .contains(".sparkwing/src/main.rs: the fetched content does not match"),
        "{out}"
    );
    // Reported as the `source` pseudo-job, and the run ended.
    let lines = api.texts(&ns, &name, "source");
    assert!(lines[0].contains(".sparkwing/src/main.rs"), "{lines:?}");
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["source"]["state"], "failed", "{run}");
    assert_eq!(run["archived"], true, "{run}");
}

#[test]
fn runner_with_a_bad_token_or_no_environment_fails_clearly() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let upload = api.upload(sw.root());
    let (ns, name, _token) = api.trigger("lines", &upload, json!({}));
    let bad = format!("swr_{}", "0".repeat(64));
    let out = sw.run_cmd(runner_cmd(&sw, &api, &ns, &name, &bad));
    out.assert_code(9);
    assert!(out.stderr.contains("HTTP 401"), "{out}");
    assert!(
        out.stderr
            .contains("the token is missing, invalid or revoked"),
        "{out}"
    );

    let mut cmd = runner_cmd(&sw, &api, &ns, &name, "x");
    cmd.env_remove("SPARKWING_API_URL");
    let out = sw.run_cmd(cmd);
    out.assert_code(8);
    assert!(out.stderr.contains("SPARKWING_API_URL is not set"), "{out}");
    let mut cmd = runner_cmd(&sw, &api, &ns, &name, "x");
    cmd.env_remove("SPARKWING_API_TOKEN");
    let out = sw.run_cmd(cmd);
    out.assert_code(8);
    assert!(
        out.stderr.contains("SPARKWING_API_TOKEN is not set"),
        "{out}"
    );

    // `runner` still has its subcommand.
    let out = sw.sw(["runner", "--help"]);
    out.assert_code(0);
    assert!(out.stdout.contains("gc"), "{out}");
    // A warm runner needs its pool credential and pod facts from the environment.
    let out = sw.sw(["runner", "--warm", "--pool", "ci/default"]);
    out.assert_code(8);
    assert!(out.stderr.contains("SPARKWING_API_URL is not set"), "{out}");
}

#[test]
fn runner_sigterm_cancels_runs_finally_and_delivers_the_lines() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("slow", &upload, json!({}));
    let mut running = Running::spawn(runner_cmd(&sw, &api, &ns, &name, &token));
    running.wait_run_id();
    // The job is running and its first lines arrived (well before it ends): now cancel.
    api.wait_for(
        Duration::from_secs(30),
        "the slow job's lines on the API",
        |api| {
            api.log_jobs(&ns, &name).contains(&"wait".to_string())
                && api.lines(&ns, &name, "wait").len() == 3
        },
    );
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let out = running.finish_within(Duration::from_secs(120));
    out.assert_code(130);
    assert_eq!(
        api.texts(&ns, &name, "wait"),
        ["before 1", "before 2", "before 3"]
    );
    assert_eq!(api.texts(&ns, &name, "cleanup"), ["cleanup ran"]);
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["wait"]["state"], "cancelled", "{run}");
    assert_eq!(run["jobs"]["cleanup"]["state"], "success", "{run}");
    assert_eq!(run["archived"], true, "{run}");
}

#[test]
fn runner_reports_a_compile_failure_as_the_compile_pseudo_job() {
    let api = Api::start();
    let sw = Sw::fixture("compile-error");
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("broken", &upload, json!({}));
    let out = sw.run_cmd(runner_cmd(&sw, &api, &ns, &name, &token));
    out.assert_code(1);
    // cargo's messages are the pseudo-job's log, the error last.
    let lines = api.texts(&ns, &name, "compile");
    assert!(
        lines.iter().any(|l| l.contains("undefined_thing_xyz")),
        "{lines:?}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("compile error: compiling .sparkwing/ failed"),
        "{lines:?}"
    );
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["compile"]["state"], "failed", "{run}");
    assert_eq!(run["archived"], true, "{run}");
}

#[test]
fn runner_runs_a_local_source_in_place_and_fails_an_unreachable_git_source() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let trigger = |source| api.trigger_lines(source);
    let (name, token) = trigger(json!({"local": {"path": sw.root()}}));
    let out = sw.run_cmd(runner_cmd(&sw, &api, "ci", &name, &token));
    out.assert_code(0);
    assert_eq!(api.texts("ci", &name, "count").len(), 4);

    let (name, token) =
        trigger(json!({"git": {"url": "https://example.invalid/x.git", "revision": "main"}}));
    let out = sw.run_cmd(runner_cmd(&sw, &api, "ci", &name, &token));
    out.assert_code(1);
    // A git source is fetched (cli/tests/git_source.rs); an unreachable one fails the source job.
    assert!(
        out.stderr
            .contains("fetching the source (git https://example.invalid/x.git at main) failed"),
        "{out}"
    );
    assert_eq!(api.run("ci", &name)["jobs"]["source"]["state"], "failed");
}

/// SIGKILL every process whose environment names the local run `run_id` (the jobs a killed
/// runner left behind).
fn kill_jobs_of(run_id: &str) {
    let needle = format!("SPARKWING_RUN_ID={run_id}\0");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if String::from_utf8_lossy(&env).contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn runner_of_a_later_attempt_continues_the_earlier_attempts_lines() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("slow", &upload, json!({}));
    // Attempt 1 is lost after its first lines: SIGKILL, no finish, the token stays valid.
    let mut first = Running::spawn(attempt_cmd(&sw, &api, &ns, &name, &token, 1));
    let first_id = first.wait_run_id();
    api.wait_for(Duration::from_secs(30), "attempt 1's lines", |api| {
        api.log_jobs(&ns, &name).contains(&"wait".to_string())
            && api.lines(&ns, &name, "wait").len() == 3
    });
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.finish_within(Duration::from_secs(30));
    kill_jobs_of(&first_id);

    // Attempt 2 (a new pod) runs again; its lines follow attempt 1's.
    let mut second = Running::spawn(attempt_cmd(&sw, &api, &ns, &name, &token, 2));
    second.wait_run_id();
    api.wait_for(Duration::from_secs(30), "attempt 2's lines", |api| {
        api.lines(&ns, &name, "wait").len() == 6
    });
    second.signal(nix::sys::signal::Signal::SIGTERM);
    second
        .finish_within(Duration::from_secs(120))
        .assert_code(130);
    assert_eq!(
        api.texts(&ns, &name, "wait"),
        ["before 1", "before 2", "before 3", "before 1", "before 2", "before 3"]
    );
    assert_eq!(api.texts(&ns, &name, "cleanup"), ["cleanup ran"]);
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["wait"]["state"], "cancelled", "{run}");
}

#[test]
fn runner_reports_each_jobs_outputs_masked_and_runs_status_profile_shows_them() {
    let api = Api::start();
    let mut sw = Sw::fixture("remote");
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
    let upload = api.upload(sw.root());
    let secret = "hunter2-secret-value";
    let (ns, name, token) = api.trigger(
        "lines",
        &upload,
        json!({"who": "cluster", "n": "2", "token": secret}),
    );
    let out = sw.run_cmd(runner_cmd(&sw, &api, &ns, &name, &token));
    out.assert_code(0);

    // The job's end carried its outputs, the secret masked as in the local store.
    let run = api.run(&ns, &name);
    let want = json!({"greeting": "hello cluster", "auth": "token=***"});
    assert_eq!(run["jobs"]["greet"]["outputs"], want, "{run}");
    assert!(run["jobs"]["count"].get("outputs").is_none(), "{run}");
    // (The test triggered through the API with the arg in clear: only the job states matter.)
    assert!(!run["jobs"].to_string().contains(secret), "{run}");
    let local = sw.job(&out.run_id(), "greet");
    assert_eq!(local["outputs"], want, "{local}");

    // `runs status --profile` prints them as the local `runs status` does.
    let run_ref = format!("{ns}/{name}");
    // (No operator here: the PipelineRun stays Pending, so the exit code is not the point.)
    let json_status = sw.sw(["runs", "status", &run_ref, "--profile", "ci", "-o", "json"]);
    let v = json_status.stdout_json();
    assert_eq!(v["jobs"]["greet"]["outputs"], want, "{v}");
    assert!(!v["jobs"].to_string().contains(secret), "{v}");
    let status = sw.sw(["runs", "status", &run_ref, "--profile", "ci"]);
    assert!(
        status
            .stdout
            .contains(&format!("{:24} output auth=token=***\n", ""))
            && status
                .stdout
                .contains(&format!("{:24} output greeting=hello cluster\n", "")),
        "{status}"
    );
    let local_status = sw.sw(["runs", "status", &out.run_id()]);
    assert!(
        local_status
            .stdout
            .contains(&format!("{:24} output greeting=hello cluster\n", "")),
        "{local_status}"
    );
}

/// The park the API recorded on run `ns/name` (`sparkwing.dev/parked`), if any.
fn parked_of(api: &Api, ns: &str, name: &str) -> Option<serde_json::Value> {
    let run = api.runs.run(ns, name)?;
    let a = run.metadata.annotations?;
    serde_json::from_str(a.get("sparkwing.dev/parked")?).ok()
}

/// The jobs that ran in the last attempt of `ns/name` (the `gates` fixture's jobs note their
/// names in the workspace, which each attempt fetches anew).
fn ran(sw: &Sw, ns: &str, name: &str) -> Vec<String> {
    let path = sw
        .home()
        .join("work")
        .join(format!("{ns}-{name}"))
        .join("ran.txt");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_runner_parks_while_only_its_gate_waits_and_the_next_attempt_resumes_the_run() {
    let api = Api::start();
    let sw = Sw::fixture("gates");
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("ship", &upload, json!({}));
    // Attempt 1: build runs, then only the gate waits: the runner reports the park and waits to
    // be stopped.
    let first = Running::spawn(attempt_cmd(&sw, &api, &ns, &name, &token, 1));
    api.wait_for(Duration::from_secs(300), "the park", |api| {
        parked_of(api, &ns, &name).is_some()
    });
    assert_eq!(
        parked_of(&api, &ns, &name),
        Some(json!({"attempt": 1, "gates": ["approve"], "decided": false}))
    );
    assert_eq!(ran(&sw, &ns, &name), ["build"]);
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["approve"]["state"], "waiting", "{run}");
    assert_eq!(run["jobs"]["deploy"]["state"], "pending", "{run}");
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.finish_within(Duration::from_secs(30)).assert_code(0);

    // Approved while parked: the park is marked decided.
    let (status, v) = api.call(
        "POST",
        &format!("/api/v1/runs/{ns}/{name}/gates/approve"),
        &api.admin,
        Some(br#"{"decision":"approve","comment":"go"}"#.to_vec()),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(parked_of(&api, &ns, &name).unwrap()["decided"], true);

    // Attempt 2 resumes: build is not run again, the gate takes the decision, the rest runs.
    let out = sw.run_cmd(attempt_cmd(&sw, &api, &ns, &name, &token, 2));
    out.assert_code(0);
    assert_eq!(ran(&sw, &ns, &name), ["deploy", "cleanup"]);
    let run = api.run(&ns, &name);
    let jobs = &run["jobs"];
    assert_eq!(
        (
            jobs["build"]["state"].clone(),
            jobs["build"]["attempt"].clone()
        ),
        (json!("success"), json!(1)),
        "{run}"
    );
    assert_eq!(jobs["approve"]["state"], "success", "{run}");
    assert_eq!(jobs["approve"]["reason"], "approved by root: go", "{run}");
    assert_eq!(jobs["deploy"]["state"], "success", "{run}");
    assert_eq!(jobs["cleanup"]["state"], "success", "{run}");
}
