//! Drives the `demo` example binary through the protocol, as the engine would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sparkwing::json::Value;

/// `cargo test` builds examples into `target/<profile>/examples`, next to `deps/` holding this test.
fn demo_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir
        .join("examples")
        .join(format!("demo{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "demo example not built at {}", bin.display());
    bin
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(demo_bin());
    cmd.args(args)
        .env_remove("SPARKWING_ARGS")
        .env_remove("SPARKWING_NEEDS_OUTPUTS")
        .env_remove("SPARKWING_OUTPUTS_FILE")
        .env_remove("DEPLOY_TOKEN")
        .env("SPARKWING_PROTOCOL", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("running demo: {e}"),
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn parse(text: &str) -> Value {
    match Value::parse(text) {
        Ok(v) => v,
        Err(e) => panic!("invalid JSON ({e}): {text}"),
    }
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparkwing-sdk-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("creating {}: {e}", dir.display());
    }
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

const ARGS: &str = r#"{"target":"prod"}"#;

#[test]
fn describe() {
    let r = run(&["describe"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = parse(&r.stdout);
    assert_eq!(doc.get("protocol"), Some(&Value::Int(1)));
    assert_eq!(
        doc.get("sdk_version").and_then(Value::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let pipelines = doc
        .get("pipelines")
        .and_then(Value::as_array)
        .unwrap_or(&[]);
    assert_eq!(pipelines.len(), 2);
    let hello = &pipelines[0];
    assert_eq!(
        hello.get("entrypoint").and_then(Value::as_str),
        Some("Hello")
    );
    assert_eq!(
        hello.get("about").and_then(Value::as_str),
        Some("Say hello, then check the greeting")
    );
    assert_eq!(
        hello.get("secrets").map(ToString::to_string),
        Some(r#"["DEPLOY_TOKEN"]"#.to_string())
    );
    let args: Vec<String> = hello
        .get("args")
        .and_then(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        args,
        [
            r#"{"name":"name","kind":"string","default":"world","help":"who to greet","required":false,"secret":false}"#,
            r#"{"name":"times","kind":"int","default":1,"help":"how often","required":false,"secret":false}"#,
            r#"{"name":"loud","kind":"bool","default":false,"help":"shout","required":false,"secret":false}"#,
            r#"{"name":"token","kind":"string","default":null,"help":"a secret arg","required":false,"secret":true}"#,
            r#"{"name":"target","kind":"string","default":null,"help":"","required":true,"secret":false}"#,
        ]
    );
}

#[test]
fn plan() {
    let r = run(&["plan", "Hello"], &[("SPARKWING_ARGS", ARGS)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = parse(&r.stdout);
    assert_eq!(doc.get("protocol"), Some(&Value::Int(1)));
    assert_eq!(doc.get("entrypoint").and_then(Value::as_str), Some("Hello"));
    let jobs = doc.get("jobs").and_then(Value::as_array).unwrap_or(&[]);
    let ids: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.get("id").and_then(Value::as_str))
        .collect();
    assert_eq!(
        ids,
        ["greet", "check", "cleanup", "lint", "deploy", "partial", "panics"]
    );
    assert_eq!(
        jobs[0].to_string(),
        concat!(
            r#"{"id":"greet","needs":[],"retries":2,"backoff_ms":200,"timeout_ms":60000,"#,
            r#""optional":false,"finally":false,"env":{"GREETING":"hi"},"workdir":"sub/dir","skip":null}"#
        )
    );
    assert_eq!(
        jobs[1].get("needs").map(ToString::to_string),
        Some(r#"["greet"]"#.into())
    );
    assert_eq!(jobs[2].get("finally"), Some(&Value::Bool(true)));
    assert_eq!(jobs[3].get("optional"), Some(&Value::Bool(true)));
    assert_eq!(
        jobs[4].get("skip").and_then(Value::as_str),
        Some("only when --loud")
    );

    let loud = run(
        &["plan", "Hello"],
        &[("SPARKWING_ARGS", r#"{"target":"prod","loud":true}"#)],
    );
    assert_eq!(loud.code, 0, "{}", loud.stderr);
    assert_eq!(
        parse(&loud.stdout)
            .get("jobs")
            .and_then(Value::as_array)
            .and_then(|j| j.get(4))
            .and_then(|j| j.get("skip")),
        Some(&Value::Null)
    );
}

#[test]
fn plan_failures() {
    let r = run(&["plan", "Nope"], &[]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("Hello, Failing"), "{}", r.stderr);

    let r = run(&["plan", "Failing"], &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot plan: no reason"), "{}", r.stderr);
    assert_eq!(r.stdout, "");

    // `target` is required and has no default, so the plan function's `args.string` fails... only if
    // it reads it; the demo does not, so missing required args are the engine's business.
    let r = run(
        &["plan", "Hello"],
        &[("SPARKWING_ARGS", r#"{"times":"x"}"#)],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("arg `times`: expected int"),
        "{}",
        r.stderr
    );

    let r = run(&["bogus"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("usage:"), "{}", r.stderr);

    let r = run(&["job", "Nope", "greet"], &[]);
    assert_eq!(r.code, 3);
}

#[test]
fn version() {
    let r = run(&["--version"], &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", r.stdout);
}

#[test]
fn job_success_writes_outputs_and_steps() {
    let outputs = temp_file("greet.json");
    let out_path = outputs.to_string_lossy().into_owned();
    let r = run(
        &["job", "Hello", "greet"],
        &[
            (
                "SPARKWING_ARGS",
                r#"{"target":"prod","name":"sdk","times":2}"#,
            ),
            ("SPARKWING_OUTPUTS_FILE", &out_path),
            ("SPARKWING_RUN_ID", "run-1"),
            ("SPARKWING_ATTEMPT", "1"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}", r.stdout);
    assert_eq!(
        lines[0],
        "\u{1e}sparkwing {\"event\":\"step_start\",\"step\":\"say\"}"
    );
    assert_eq!(lines[1], "hello sdk");
    let end = lines[2]
        .strip_prefix("\u{1e}sparkwing ")
        .map(parse)
        .unwrap_or(Value::Null);
    assert_eq!(end.get("event").and_then(Value::as_str), Some("step_end"));
    assert_eq!(end.get("step").and_then(Value::as_str), Some("say"));
    assert_eq!(end.get("ok"), Some(&Value::Bool(true)));
    assert!(end.get("duration_ms").and_then(Value::as_i64).is_some());
    assert_eq!(lines[4], "hello sdk");
    // Child output and our own records interleave in order because stdout is flushed before spawning.
    assert_eq!(lines[6], "second line");
    let written = std::fs::read_to_string(&outputs).unwrap_or_default();
    assert_eq!(parse(&written).to_string(), r#"{"version":"1.2.3"}"#);
}

#[test]
fn job_reads_inputs_and_secrets() {
    let needs = r#"{"greet":{"version":"1.2.3"}}"#;
    let r = run(
        &["job", "Hello", "check"],
        &[
            ("SPARKWING_ARGS", ARGS),
            ("SPARKWING_NEEDS_OUTPUTS", needs),
            ("DEPLOY_TOKEN", "s3cr3t"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "got 1.2.3\n");

    let r = run(
        &["job", "Hello", "check"],
        &[("SPARKWING_ARGS", ARGS), ("SPARKWING_NEEDS_OUTPUTS", needs)],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("error: secret `DEPLOY_TOKEN` is not set"),
        "{}",
        r.stderr
    );

    let r = run(
        &["job", "Hello", "check"],
        &[("SPARKWING_ARGS", ARGS), ("SPARKWING_NEEDS_OUTPUTS", "{}")],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("error: ") && r.stderr.contains("`greet`"),
        "{}",
        r.stderr
    );
}

#[test]
fn job_failures() {
    let r = run(&["job", "Hello", "lint"], &[("SPARKWING_ARGS", ARGS)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("error: command `false` failed: exit status 1"),
        "{}",
        r.stderr
    );

    let outputs = temp_file("partial.json");
    let out_path = outputs.to_string_lossy().into_owned();
    let r = run(
        &["job", "Hello", "partial"],
        &[
            ("SPARKWING_ARGS", ARGS),
            ("SPARKWING_OUTPUTS_FILE", &out_path),
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains(r#""event":"step_end","step":"fails","ok":false"#),
        "{}",
        r.stdout
    );
    let written = std::fs::read_to_string(&outputs).unwrap_or_default();
    assert_eq!(parse(&written).to_string(), r#"{"before":"set"}"#);

    let r = run(&["job", "Hello", "panics"], &[("SPARKWING_ARGS", ARGS)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("panicked: job went wrong"),
        "{}",
        r.stderr
    );

    let r = run(&["job", "Hello", "nope"], &[("SPARKWING_ARGS", ARGS)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no job `nope`"), "{}", r.stderr);

    let r = run(&["job", "Failing", "x"], &[]);
    assert_eq!(r.code, 1);
}
