//! `pipeline trigger`, `runs ... --profile` and `token` against the real API
//! (`sparkwing_operator::api::router` on `MemoryRuns`), served in-process on 127.0.0.1:0. The test
//! plays the cluster's part: it reads triggered runs from the backend, posts logs and job states
//! as a runner would, and sets the runs' phase.

mod common;

use common::{wait_until, Out, Running, Sw};
use serde_json::{json, Value};
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_operator::api::{spawn_serving, ApiConfig, ApiState, MemoryRuns, RunBackend};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

struct Api {
    url: String,
    state: ApiState,
    runs: Arc<MemoryRuns>,
    admin: String,
    alice: String,
    reader: String,
    rt: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
}

impl Api {
    fn start() -> Api {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let runs = Arc::new(MemoryRuns::new());
        let state = rt
            .block_on(ApiState::open(
                data.path(),
                runs.clone(),
                ApiConfig::default(),
            ))
            .unwrap();
        let mk = |p: &str, s: &[&str]| {
            rt.block_on(state.store.create_token(
                p,
                s.iter().map(|s| s.to_string()).collect(),
                None,
            ))
            .unwrap()
            .0
        };
        let admin = mk("root", &["admin"]);
        let alice = mk("alice@example.com", &["runs:trigger", "runs:read"]);
        let reader = mk("bob", &["runs:read"]);
        let addr = spawn_serving(&rt, state.clone(), "127.0.0.1:0").unwrap();
        Api {
            url: format!("http://{addr}"),
            state,
            runs,
            admin,
            alice,
            reader,
            rt,
            _data: data,
        }
    }

    /// Every run in the backend, as (namespace, name, spec JSON).
    fn runs(&self) -> Vec<(String, String, Value)> {
        let list = self.rt.block_on(self.runs.list(None)).unwrap();
        list.into_iter()
            .map(|r| {
                (
                    r.metadata.namespace.clone().unwrap_or_default(),
                    r.metadata.name.clone().unwrap_or_default(),
                    serde_json::to_value(&r.spec).unwrap(),
                )
            })
            .collect()
    }

    fn metric(&self, name: &str) -> u64 {
        let text = http("GET", &format!("{}/metrics", self.url), None, None).1;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    /// As the run's runner: post log lines and a job state.
    fn runner_posts(&self, ns: &str, name: &str, job: &str, lines: &[&str], state: &str) {
        let base = format!("{}/api/v1/runs/{ns}/{name}", self.url);
        let body: Vec<Value> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                json!({"job": job, "seq": i + 1, "ts": "2026-01-01T10:00:00Z", "stream": "stdout", "line": l})
            })
            .collect();
        let (code, text) = http(
            "POST",
            &format!("{base}/logs"),
            Some(&self.admin),
            Some(json!(body)),
        );
        assert_eq!(code, 200, "{text}");
        let (code, text) = http(
            "PUT",
            &format!("{base}/jobs/{job}"),
            Some(&self.admin),
            Some(json!({"state": state, "attempt": 1})),
        );
        assert_eq!(code, 204, "{text}");
    }
}

fn http(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, String) {
    // `http://host:port` and the path after it.
    let at = url
        .match_indices('/')
        .nth(2)
        .map(|(i, _)| i)
        .unwrap_or(url.len());
    let (base, path) = url.split_at(at);
    let client = sparkwing_api::ApiClient::new(base, token.unwrap_or("")).unwrap();
    let body = (method != "GET").then(|| body.unwrap_or(json!({})).to_string());
    let answer = client
        .call(
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_deref().map(str::as_bytes),
        )
        .unwrap();
    (
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    )
}

/// A project and a profiles file pointing at `api`.
fn world(api: &Api) -> Sw {
    let mut sw = Sw::empty();
    let root = sw.root().to_path_buf();
    write(
        &root,
        ".sparkwing/sparkwing.yaml",
        "pipelines:\n  - name: build\n    entrypoint: Build\n",
    );
    write(&root, ".sparkwing/src/main.rs", "fn main() {}\n");
    write(
        &root,
        ".sparkwing/Cargo.toml",
        "[package]\nname = \"demo-pipelines\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(&root, "README.md", "# demo\n");
    write(&root, "scripts/build.sh", "#!/bin/sh\necho building\n");
    std::fs::set_permissions(
        root.join("scripts/build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&root, ".gitignore", "*.log\n");
    write(&root, "noise.log", "ignored\n");
    std::os::unix::fs::symlink("scripts/build.sh", root.join("build")).unwrap();
    let profiles = sw.home().join("profiles.yaml");
    let url = &api.url;
    std::fs::write(
        &profiles,
        format!(
            "default: ci\nprofiles:\n  ci:\n    controller: {url}\n    token_env: SW_ALICE\n    namespace: ci\n  reader:\n    controller: {url}\n    token_env: SW_READER\n    namespace: ci\n  admin:\n    controller: {url}\n    token_env: SW_ADMIN\n  bare:\n    token_env: SW_ALICE\n  noenv:\n    controller: {url}\n    token_env: SW_NOT_SET_ANYWHERE\n  bad:\n    controller: {url}\n    token: swt_0000000000000000000000000000000000000000000000000000000000000000\n  down:\n    controller: http://127.0.0.1:1\n    token: swt_whatever\n"
        ),
    )
    .unwrap();
    sw.env("SPARKWING_PROFILES", profiles.to_str().unwrap())
        .env("SW_ALICE", &api.alice)
        .env("SW_READER", &api.reader)
        .env("SW_ADMIN", &api.admin);
    sw
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn sw(w: &Sw, args: &[&str]) -> Out {
    let mut c = w.cmd(args);
    c.env_remove("SPARKWING_PROFILE");
    Running::spawn(c).finish_within(DEADLINE)
}

fn no_secret(out: &Out, api: &Api) {
    for t in [&api.admin, &api.alice, &api.reader] {
        assert!(
            !out.stdout.contains(t.as_str()) && !out.stderr.contains(t.as_str()),
            "a token was printed: {out}"
        );
    }
}

#[test]
fn trigger_detach_uploads_triggers_and_records_who() {
    let api = Api::start();
    let w = world(&api);
    std::os::unix::fs::symlink("/etc/hostname", w.root().join("outside")).unwrap();
    let out = sw(
        &w,
        &[
            "pipeline",
            "trigger",
            "build",
            "--profile",
            "ci",
            "--detach",
            "--env",
            "prod",
            "--fast",
        ],
    );
    out.assert_code(0);
    no_secret(&out, &api);
    let name = out.stdout.trim().to_string();
    assert!(name.starts_with("ci/build-"), "{out}");
    // 6 files (.gitignore, .sparkwing/{Cargo.toml,sparkwing.yaml,src/main.rs}, README.md,
    // scripts/build.sh), noise.log ignored, one symlink.
    assert!(out.stderr.contains("uploaded 6 of 6 files"), "{out}");
    assert!(
        out.stderr.contains(
            "warning: not uploaded: outside: symlink to /etc/hostname leaves the project"
        ),
        "{out}"
    );
    let runs = api.runs();
    let (_, _, spec) = runs
        .iter()
        .find(|(ns, n, _)| format!("{ns}/{n}") == name)
        .unwrap_or_else(|| panic!("run {name} not in the backend: {runs:?}"));
    assert_eq!(spec["triggeredBy"]["principal"], "alice@example.com");
    assert_eq!(spec["pipeline"], "build");
    assert_eq!(spec["args"], json!({"env": "prod", "fast": "true"}));
    let id = spec["source"]["upload"]["id"].as_str().unwrap().to_string();
    // The upload holds the tree: modes, the symlink, no ignored file.
    let (code, text) = http(
        "GET",
        &format!("{}/api/v1/uploads/{id}", api.url),
        Some(&api.admin),
        None,
    );
    assert_eq!(code, 200, "{text}");
    let up: Value = serde_json::from_str(&text).unwrap();
    let files = up["manifest"]["files"].as_array().unwrap().clone();
    let by_path = |p: &str| {
        files
            .iter()
            .find(|f| f["path"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("{p} not in {files:?}"))
    };
    assert_eq!(by_path("scripts/build.sh")["mode"], 0o755);
    assert_eq!(by_path("build")["symlink"], "scripts/build.sh");
    assert!(!files.iter().any(|f| f["path"] == "noise.log"));
}

#[test]
fn trigger_passes_timeout_and_max_attempts_and_bad_ones_are_refused() {
    let api = Api::start();
    let w = world(&api);
    let out = sw(
        &w,
        &[
            "pipeline",
            "trigger",
            "build",
            "--detach",
            "--sw-timeout",
            "45m",
            "--sw-max-attempts=1",
            "--env",
            "prod",
        ],
    );
    out.assert_code(0);
    let name = out.stdout.trim().to_string();
    let runs = api.runs();
    let (_, _, spec) = runs
        .iter()
        .find(|(ns, n, _)| format!("{ns}/{n}") == name)
        .unwrap_or_else(|| panic!("run {name} not in the backend: {runs:?}"));
    assert_eq!(spec["timeout"], "45m", "{spec}");
    assert_eq!(spec["maxAttempts"], 1, "{spec}");
    assert_eq!(spec["args"], json!({"env": "prod"}), "{spec}");

    // Refused by the API (the PipelineRun's own checks), exit 2 naming the field; nothing created.
    let before = api.runs().len();
    for (flags, want) in [
        (["--sw-timeout", "soon"], "spec.timeout"),
        (
            ["--sw-max-attempts", "11"],
            "spec.maxAttempts must be between 1 and 10",
        ),
    ] {
        let mut args = vec!["pipeline", "trigger", "build", "--detach"];
        args.extend(flags);
        let out = sw(&w, &args);
        out.assert_code(2);
        assert!(out.stderr.contains(want), "{out}");
    }
    // Not a number: refused before anything is uploaded.
    let out = sw(
        &w,
        &[
            "pipeline",
            "trigger",
            "build",
            "--detach",
            "--sw-max-attempts",
            "x",
        ],
    );
    out.assert_code(2);
    assert!(out.stderr.contains("whole number"), "{out}");
    assert!(!out.stderr.contains("uploaded"), "{out}");
    assert_eq!(api.runs().len(), before);
}

/// [`Sw::on_a_tty`] without the profile the world sets.
fn sw_on_a_tty(w: &Sw, args: &[&str]) -> Out {
    w.on_a_tty(args, &["SPARKWING_PROFILE"])
}

#[test]
fn the_upload_shows_a_progress_bar_on_a_terminal_only() {
    let api = Api::start();
    let w = world(&api);
    let args = ["pipeline", "trigger", "build", "--detach"];
    let tty = sw_on_a_tty(&w, &args);
    tty.assert_code(0);
    // The last frame is always drawn: every file sent, the bar full; then the line is cleared
    // before the summary.
    let full = format!("uploading [{}] 6/6 files", "#".repeat(30));
    assert!(tty.stdout.contains(&full), "{tty}");
    let after_bar = &tty.stdout[tty.stdout.rfind(&full).unwrap()..];
    assert!(after_bar.contains("\r\x1b[2K"), "{tty}");
    assert!(after_bar.contains("uploaded 6 of 6 files"), "{tty}");
    // Not a terminal: no bar, no escape codes. Unchanged tree: nothing to send, no bar either.
    write(w.root(), "README.md", "# changed for a second upload\n");
    let piped = sw(&w, &args);
    piped.assert_code(0);
    assert!(!piped.stderr.contains("uploading ["), "{piped}");
    assert!(!piped.stderr.contains('\x1b'), "{piped}");
    let unchanged = sw_on_a_tty(&w, &args);
    unchanged.assert_code(0);
    assert!(!unchanged.stdout.contains("uploading ["), "{unchanged}");
    assert!(
        unchanged.stdout.contains("uploaded 0 of 6 files"),
        "{unchanged}"
    );
}

#[test]
fn retrigger_sends_only_the_manifest_and_a_change_sends_one_blob() {
    let api = Api::start();
    let w = world(&api);
    let args = ["pipeline", "trigger", "build", "--detach", "-o", "json"];
    let first = sw(&w, &args);
    first.assert_code(0);
    let v = first.stdout_json();
    assert_eq!(v["upload"]["blobsSent"], 6, "{first}");
    let blobs_after_first = api.metric("sparkwing_api_blobs_written_total");
    assert_eq!(blobs_after_first, 6);

    let again = sw(&w, &args);
    again.assert_code(0);
    let v2 = again.stdout_json();
    assert_eq!(v2["upload"]["blobsSent"], 0, "{again}");
    assert_eq!(v2["upload"]["compressedBytesSent"], 0, "{again}");
    assert_eq!(v2["upload"]["unchangedFiles"], 6, "{again}");
    assert_eq!(v2["upload"]["id"], v["upload"]["id"]);
    assert!(
        again.stderr.contains("uploaded 0 of 6 files (0 B of "),
        "{again}"
    );
    assert!(again.stderr.contains("0 bytes sent compressed"), "{again}");
    assert_eq!(
        api.metric("sparkwing_api_blobs_written_total"),
        blobs_after_first
    );
    assert_ne!(v2["name"], v["name"], "a new run each time");

    write(w.root(), "README.md", "# demo, changed\n");
    let third = sw(&w, &args);
    third.assert_code(0);
    let v3 = third.stdout_json();
    assert_eq!(v3["upload"]["blobsSent"], 1, "{third}");
    assert_eq!(v3["upload"]["uploadedFiles"], 1, "{third}");
    assert_eq!(v3["upload"]["bytesSent"], "# demo, changed\n".len());
    assert!(v3["upload"]["compressedBytesSent"].as_u64().unwrap() > 0);
    assert_eq!(
        api.metric("sparkwing_api_blobs_written_total"),
        blobs_after_first + 1
    );
}

/// Trigger without --detach; once the run exists, act as its runner, then finish it in `phase`.
fn follow_until(api: &Api, w: &Sw, phase: RunPhase, json: bool) -> Out {
    let mut args = vec!["pipeline", "trigger", "build", "--profile", "ci"];
    if json {
        args.extend(["-o", "json"]);
    }
    let mut c = w.cmd(args);
    c.env_remove("SPARKWING_PROFILE");
    let run = Running::spawn(c);
    let mut found = None;
    wait_until(DEADLINE, "the triggered run in the backend", || {
        found = api.runs().into_iter().next();
        found.is_some()
    });
    let (ns, name, _) = found.unwrap();
    api.runs.set_phase(&ns, &name, RunPhase::Running);
    api.runner_posts(
        &ns,
        &name,
        "compile",
        &["compiling demo", "compiled"],
        "success",
    );
    api.runner_posts(
        &ns,
        &name,
        "test",
        &["running 3 tests", "test result: ok"],
        "running",
    );
    wait_until(DEADLINE, "the follower printing the log", || {
        run.stdout_so_far().contains("test result: ok")
    });
    api.runs.set_phase(&ns, &name, phase);
    let out = run.finish_within(DEADLINE);
    no_secret(&out, api);
    out
}

#[test]
fn follow_prints_job_logs_and_states_and_exits_0_on_success() {
    let api = Api::start();
    let w = world(&api);
    let out = follow_until(&api, &w, RunPhase::Succeeded, false);
    out.assert_code(0);
    for want in [
        "compile │ compiling demo",
        "compile │ compiled",
        "test │ running 3 tests",
        "· compile success",
        "· test running",
        "Succeeded",
    ] {
        assert!(out.stdout.contains(want), "missing {want:?}: {out}");
    }
    assert!(out.stderr.contains("bytes sent compressed"), "{out}");
}

#[test]
fn follow_exits_1_when_the_run_failed() {
    let api = Api::start();
    let w = world(&api);
    let out = follow_until(&api, &w, RunPhase::Failed, true);
    out.assert_code(1);
    let lines = out.json_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["job"] == "compile" && l["line"] == "compiled" && l["seq"] == 2),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l["event"] == "job_state"
            && l["job"] == "test"
            && l["state"]["state"] == "running"),
        "{out}"
    );
    let end = lines.last().unwrap();
    assert_eq!(end["event"], "end", "{out}");
    assert_eq!(end["phase"], "Failed", "{out}");
    assert_eq!(end["upload"]["files"], 6, "{out}");
}

/// The whole loop: trigger and follow while the real runner (`sparkwing runner --run`, as the
/// operator's runner Job) fetches the upload, compiles, runs and reports; the test plays only the
/// operator's last part, setting the phase once the runner exited.
#[test]
fn trigger_follows_a_real_runner_to_the_end() {
    let api = Api::start();
    let mut w = Sw::fixture("remote");
    let profiles = w.home().join("profiles.yaml");
    std::fs::write(
        &profiles,
        format!(
            "profiles:\n  ci:\n    controller: {}\n    token_env: SW_ALICE\n    namespace: ci\n",
            api.url
        ),
    )
    .unwrap();
    w.env("SPARKWING_PROFILES", profiles.to_str().unwrap())
        .env("SW_ALICE", &api.alice);
    let mut c = w.cmd([
        "pipeline",
        "trigger",
        "lines",
        "--profile",
        "ci",
        "--who",
        "cluster",
    ]);
    c.env_remove("SPARKWING_PROFILE");
    let follow = Running::spawn(c);
    // The run is created first, its runner token stored just after.
    let mut found = None;
    wait_until(DEADLINE, "the triggered run and its runner token", || {
        found = api.runs().into_iter().next().and_then(|(ns, name, _)| {
            let token = api.runs.runner_token(&ns, &name)?;
            Some((ns, name, token))
        });
        found.is_some()
    });
    let (ns, name, token) = found.unwrap();
    let mut r = w.cmd(["runner", "--run", &format!("{ns}/{name}"), "--attempt", "1"]);
    r.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", &token)
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", w.home());
    let runner = Running::spawn(r).finish();
    runner.assert_code(0);
    api.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let out = follow.finish_within(DEADLINE);
    out.assert_code(0);
    assert!(out.stdout.contains("greet │ hello cluster"), "{out}");
    for i in [1, 600, 1200] {
        let want = format!("count │ line {i}\n");
        assert_eq!(out.stdout.matches(&want).count(), 1, "{want:?} once: {out}");
    }
    assert!(out.stdout.contains("· count success"), "{out}");
}

#[test]
fn ctrl_c_stops_following_without_cancelling() {
    let api = Api::start();
    let w = world(&api);
    let mut c = w.cmd(["pipeline", "trigger", "build", "--profile", "ci"]);
    c.env_remove("SPARKWING_PROFILE");
    let run = Running::spawn(c);
    wait_until(DEADLINE, "the follow to start", || {
        run.stderr_so_far().contains("following it")
    });
    let (ns, name, _) = api.runs().into_iter().next().unwrap();
    run.signal(nix::sys::signal::Signal::SIGINT);
    let out = run.finish_within(DEADLINE);
    out.assert_code(130);
    let hint = format!("sparkwing runs cancel {ns}/{name} --profile ci");
    assert!(out.stderr.contains(&hint), "{out}");
    let spec = serde_json::to_value(&api.runs.run(&ns, &name).unwrap().spec).unwrap();
    assert!(
        spec.get("cancel").is_none_or(Value::is_null),
        "cancelled: {spec}"
    );
}

#[test]
fn profile_and_token_problems_are_clear() {
    let api = Api::start();
    let w = world(&api);
    let trig = |p: &str| {
        sw(
            &w,
            &["pipeline", "trigger", "build", "--profile", p, "--detach"],
        )
    };

    let out = trig("bare");
    out.assert_code(2);
    assert!(out.stderr.contains("has no controller"), "{out}");
    assert!(
        out.stderr
            .contains("sparkwing profile set bare --controller URL"),
        "{out}"
    );

    let out = trig("noenv");
    out.assert_code(2);
    assert!(out.stderr.contains("SW_NOT_SET_ANYWHERE"), "{out}");

    let out = trig("bad");
    out.assert_code(9);
    assert!(
        out.stderr.contains("refused the token of profile \"bad\""),
        "{out}"
    );
    assert!(out.stderr.contains("401"), "{out}");
    assert!(!out.stderr.contains("swt_0000"), "{out}");

    let out = trig("reader");
    out.assert_code(9);
    assert!(out.stderr.contains("lacks the scope runs:trigger"), "{out}");

    let out = trig("down");
    out.assert_code(9);
    assert!(
        out.stderr
            .contains("cannot reach the API at http://127.0.0.1:1"),
        "{out}"
    );
    assert!(out.stderr.contains("profile \"down\""), "{out}");

    // $SPARKWING_PROFILE picks the profile when --profile is not given.
    let mut c = w.cmd(["pipeline", "trigger", "build", "--detach"]);
    c.env("SPARKWING_PROFILE", "reader");
    let out = Running::spawn(c).finish_within(DEADLINE);
    out.assert_code(9);
    assert!(out.stderr.contains("profile \"reader\""), "{out}");

    // Nothing was triggered by any of them.
    assert!(api.runs().is_empty());
}

#[test]
fn runs_list_status_logs_cancel_against_the_api() {
    let api = Api::start();
    let w = world(&api);
    let out = sw(&w, &["pipeline", "trigger", "build", "--detach"]);
    out.assert_code(0);
    let full = out.stdout.trim().to_string();
    let (ns, name) = full.split_once('/').unwrap();
    api.runner_posts(
        ns,
        name,
        "compile",
        &["line one", "line two", "line three"],
        "running",
    );

    let list = sw(&w, &["runs", "list", "--profile", "reader"]);
    list.assert_code(0);
    assert!(
        list.stdout.contains(&full) && list.stdout.contains("alice@example.com"),
        "{list}"
    );
    let list = sw(&w, &["runs", "list", "--profile", "reader", "-o", "json"]);
    assert_eq!(list.json_lines()[0]["name"], name, "{list}");

    // Running (not finished): like a local run, status exits 0 only once it succeeded.
    let st = sw(&w, &["runs", "status", name, "--profile", "reader"]);
    assert!(st.stdout.contains(&format!("run:      {full}")), "{st}");
    assert!(st.stdout.contains("compile"), "{st}");
    let st = sw(
        &w,
        &["runs", "status", &full, "--profile", "admin", "-o", "json"],
    );
    assert_eq!(
        st.stdout_json()["jobs"]["compile"]["state"],
        "running",
        "{st}"
    );

    let logs = sw(
        &w,
        &["runs", "logs", &full, "--profile", "reader", "--tail", "2"],
    );
    logs.assert_code(0);
    assert_eq!(logs.stdout, "line two\nline three\n", "{logs}");
    let missing = sw(
        &w,
        &[
            "runs",
            "logs",
            &full,
            "--profile",
            "reader",
            "--job",
            "nope",
        ],
    );
    missing.assert_code(5);

    // --follow ends once the run is finished and the log drained.
    let mut c = w.cmd(["runs", "logs", &full, "--profile", "reader", "--follow"]);
    c.env_remove("SPARKWING_PROFILE");
    let follow = Running::spawn(c);
    wait_until(DEADLINE, "the existing lines", || {
        follow.stdout_so_far().contains("line three")
    });
    api.runner_posts(
        ns,
        name,
        "compile",
        &["line one", "line two", "line three", "line four"],
        "success",
    );
    api.runs.set_phase(ns, name, RunPhase::Succeeded);
    let f = follow.finish_within(DEADLINE);
    f.assert_code(0);
    assert!(f.stdout.contains("compile │ line four"), "{f}");
    assert_eq!(f.stdout.matches("line three").count(), 1, "{f}");

    let st = sw(&w, &["runs", "status", &full, "--profile", "reader"]);
    st.assert_code(0);
    let wait = sw(&w, &["runs", "wait", &full, "--profile", "reader"]);
    wait.assert_code(0);
    assert!(wait.stdout.contains("Succeeded"), "{wait}");

    // Cancel: a reader may not; alice may.
    let out = sw(&w, &["pipeline", "trigger", "build", "--detach"]);
    let second = out.stdout.trim().to_string();
    let no = sw(&w, &["runs", "cancel", &second, "--profile", "reader"]);
    no.assert_code(9);
    assert!(no.stderr.contains("runs:trigger"), "{no}");
    let yes = sw(&w, &["runs", "cancel", &second, "--profile", "ci"]);
    yes.assert_code(0);
    assert!(yes.stdout.contains("cancelling run"), "{yes}");
    let (sns, sname) = second.split_once('/').unwrap();
    let spec = serde_json::to_value(&api.runs.run(sns, sname).unwrap().spec).unwrap();
    assert_eq!(spec["cancel"], "CancelledRunFinally");

    let gone = sw(
        &w,
        &["runs", "status", "ci/nope-00000000", "--profile", "reader"],
    );
    gone.assert_code(5);
}

#[test]
fn tokens_create_list_revoke() {
    let api = Api::start();
    let w = world(&api);
    let out = sw(
        &w,
        &[
            "token",
            "create",
            "carol@example.com",
            "--scope",
            "runs:read",
            "--scope",
            "runs:trigger",
            "--profile",
            "admin",
            "-o",
            "json",
        ],
    );
    out.assert_code(0);
    let v = out.stdout_json();
    let token = v["token"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("swt_"));
    let live = |t: &str| api.rt.block_on(api.state.store.lookup_token(t)).unwrap();
    assert!(live(&token).is_some());

    let pretty = sw(
        &w,
        &[
            "token",
            "create",
            "dave",
            "--scope",
            "runs:read",
            "--profile",
            "admin",
        ],
    );
    pretty.assert_code(0);
    assert!(pretty.stdout.trim().starts_with("swt_"), "{pretty}");
    assert!(pretty.stderr.contains("shown once"), "{pretty}");

    let list = sw(&w, &["token", "list", "--profile", "admin"]);
    list.assert_code(0);
    assert!(
        list.stdout.contains(&id) && list.stdout.contains("carol@example.com"),
        "{list}"
    );
    assert!(!list.stdout.contains(&token), "{list}");

    let rev = sw(&w, &["token", "revoke", &id, "--profile", "admin"]);
    rev.assert_code(0);
    assert!(live(&token).is_none());
    let list = sw(&w, &["token", "list", "--profile", "admin", "-o", "json"]);
    let carol = list
        .json_lines()
        .into_iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(carol["revoked"], true);

    // Without admin: the 403 names the scope.
    let no = sw(&w, &["token", "list", "--profile", "ci"]);
    no.assert_code(9);
    assert!(no.stderr.contains("lacks the scope admin"), "{no}");
    let bad = sw(
        &w,
        &[
            "token",
            "create",
            "x",
            "--scope",
            "root",
            "--profile",
            "admin",
        ],
    );
    bad.assert_code(2);
}

#[test]
fn runs_rerun_starts_a_cluster_run_again() {
    let api = Api::start();
    let w = world(&api);
    let out = sw(
        &w,
        &["pipeline", "trigger", "build", "--detach", "--env", "prod"],
    );
    out.assert_code(0);
    let full = out.stdout.trim().to_string();
    let (ns, name) = full.split_once('/').unwrap();
    api.runs.set_phase(ns, name, RunPhase::Failed);

    // A reader may not; alice may, by NAME in the profile's namespace or NS/NAME.
    let no = sw(&w, &["runs", "rerun", &full, "--profile", "reader"]);
    no.assert_code(9);
    assert!(no.stderr.contains("runs:trigger"), "{no}");
    let yes = sw(&w, &["runs", "rerun", name, "--profile", "ci"]);
    yes.assert_code(0);
    let again = yes.stdout.trim().to_string();
    let (ans, aname) = again.split_once('/').unwrap();
    assert_eq!(ans, ns, "{yes}");
    assert_ne!(aname, name);
    let (old, new) = (
        api.runs.run(ns, name).unwrap(),
        api.runs.run(ans, aname).unwrap(),
    );
    assert_eq!(new.spec.source, old.spec.source);
    assert_eq!(new.spec.args, old.spec.args);
    assert_eq!(
        new.metadata.annotations.as_ref().unwrap()["sparkwing.dev/rerun-of"],
        full
    );

    let json = sw(
        &w,
        &["runs", "rerun", &again, "--profile", "ci", "-o", "json"],
    );
    json.assert_code(0);
    let v = json.stdout_json();
    assert_eq!(v["namespace"], ns, "{json}");
    assert_eq!(v["rerunOf"], again.as_str(), "{json}");
    assert_eq!(v["profile"], "ci", "{json}");
    assert!(api.runs.run(ns, v["name"].as_str().unwrap()).is_some());

    let gone = sw(
        &w,
        &["runs", "rerun", "ci/nope-00000000", "--profile", "ci"],
    );
    gone.assert_code(5);
    no_secret(&yes, &api);
}
