//! The `hello` example, end to end: what is printed, stored and logged.

use crate::common::*;
use serde_json::json;
use std::process::Command;

fn jobs_in(out: &Out, kind: &str) -> Vec<String> {
    out.events(kind)
        .iter()
        .map(|e| e["job"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn hello_runs_end_to_end_and_is_recorded() {
    let sw = Sw::hello();
    let out = sw.sw(["run", "hello", "--name", "tester"]);
    out.assert_code(0);

    // JSON mode: every stdout line is one JSON object of this run.
    let lines = out.json_lines();
    assert_eq!(lines.len(), out.stdout.lines().count(), "{out}");
    let id = out.run_id();
    assert!(lines.iter().all(|l| l["run"] == id.as_str()), "{out}");

    let started = out.events("run_started");
    assert_eq!(started.len(), 1, "{out}");
    assert_eq!(started[0]["pipeline"], "hello");
    // `times` comes from sparkwing.yaml, `name` from the command line, `deploy` from the code.
    assert_eq!(
        started[0]["args"],
        json!({"name": "tester", "times": 2, "deploy": false})
    );
    assert!(
        matches!(started[0]["binary"].as_str(), Some("compiled" | "cached")),
        "{out}"
    );
    assert_eq!(lines[0]["event"], "run_started", "first line: {out}");

    let mut ran = jobs_in(&out, "job_succeeded");
    ran.sort();
    assert_eq!(ran, ["build", "cleanup", "greet", "lint", "test"], "{out}");
    let mut began = jobs_in(&out, "job_started");
    began.sort();
    assert_eq!(
        began,
        ["build", "cleanup", "greet", "lint", "test"],
        "{out}"
    );
    let skipped = out.events("job_skipped");
    assert_eq!(skipped.len(), 1, "{out}");
    assert_eq!(skipped[0]["job"], "deploy");
    assert_eq!(skipped[0]["reason"], "pass --deploy to deploy");
    // Steps are control records, recorded as events.
    assert!(
        out.events("step_end")
            .iter()
            .any(|e| e["job"] == "build" && e["step"] == "compile" && e["ok"] == true),
        "{out}"
    );
    // Log lines are printed as they come.
    let greet_lines: Vec<&str> = lines
        .iter()
        .filter(|l| l["job"] == "greet" && l.get("line").is_some())
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert_eq!(greet_lines, ["hello, tester! (1)", "hello, tester! (2)"]);

    let finished = out.events("run_finished");
    assert_eq!(finished.len(), 1, "{out}");
    assert_eq!(finished[0]["status"], "success");
    assert_eq!(finished[0]["exit_code"], 0);
    assert_eq!(finished[0]["error"], serde_json::Value::Null);
    assert_eq!(
        lines.last().unwrap()["event"],
        "run_finished",
        "last line: {out}"
    );

    // The store.
    let run = sw.listed_run(&id);
    assert_eq!(run["status"], "success");
    assert_eq!(run["pipeline"], "hello");
    assert_eq!(run["entrypoint"], "Hello");
    assert_eq!(run["exit_code"], 0);
    assert_eq!(run["error"], serde_json::Value::Null);
    assert_eq!(
        run["args"],
        json!({"name": "tester", "times": 2, "deploy": false})
    );
    assert_eq!(
        run["git_branch"],
        serde_json::Value::Null,
        "not a git repo: {run}"
    );
    assert_eq!(
        run["git_commit"],
        serde_json::Value::Null,
        "not a git repo: {run}"
    );
    assert_eq!(
        run["repo_root"],
        sw.root().canonicalize().unwrap().to_string_lossy().as_ref()
    );
    assert_eq!(run["log_dir"], sw.run_dir(&id).to_string_lossy().as_ref());
    assert!(run["pid"].as_i64().unwrap() > 0);
    assert!(run["finished_at"].as_i64().unwrap() >= run["started_at"].as_i64().unwrap());

    let (code, st) = sw.status(&id);
    assert_eq!(code, 0, "runs status of a successful run");
    for (job, state) in [
        ("greet", "success"),
        ("lint", "success"),
        ("build", "success"),
        ("test", "success"),
        ("deploy", "skipped"),
        ("cleanup", "success"),
    ] {
        assert_eq!(find_job(&st, job)["state"], state, "job {job}: {st:#}");
    }
    assert_eq!(
        find_job(&st, "build")["outputs"],
        json!({"version": "v1.2.3"})
    );
    assert_eq!(find_job(&st, "test")["needs"], json!(["build", "greet"]));
    assert_eq!(find_job(&st, "cleanup")["finally"], true);

    // Per-job log files: seq 1.., a timestamp, the attempt and the stream.
    let greet = sw.log_records(&id, "greet");
    assert_eq!(greet.len(), 2, "{greet:?}");
    let mut last_ts = 0;
    for (i, r) in greet.iter().enumerate() {
        assert_eq!(r["seq"], (i + 1) as u64, "{r}");
        assert_eq!(r["attempt"], 1, "{r}");
        assert_eq!(r["stream"], "stdout", "{r}");
        let ts = r["ts"].as_i64().unwrap();
        assert!(ts >= last_ts && ts > 1_600_000_000_000, "{r}");
        last_ts = ts;
    }
    assert_eq!(greet[1]["line"], "hello, tester! (2)");
    assert_eq!(sw.log_lines(&id, "test"), ["testing artifact v1.2.3"]);
    assert_eq!(sw.log_lines(&id, "lint"), ["formatting looks fine"]);
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn hello_in_a_git_repo_records_branch_and_commit() {
    let sw = Sw::hello();
    git(sw.root(), &["init", "-q", "-b", "e2e-branch"]);
    git(sw.root(), &["add", "-A"]);
    git(sw.root(), &["commit", "-q", "-m", "hello"]);
    let sha = git(sw.root(), &["rev-parse", "HEAD"]);

    let out = sw.sw(["run", "hello"]);
    out.assert_code(0);
    let run = sw.listed_run(&out.run_id());
    assert_eq!(run["git_branch"], "e2e-branch", "{run}");
    assert_eq!(run["git_commit"], sha.as_str(), "{run}");
    assert_eq!(
        run["args"],
        json!({"name": "world", "times": 2, "deploy": false})
    );
}

#[test]
fn pretty_output_on_request_and_bad_log_format() {
    let mut sw = Sw::fixture("rich");
    sw.env("SPARKWING_LOG_FORMAT", "pretty");
    let out = sw.sw(["run", "logs"]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    // Not a terminal: no colours.
    assert!(!out.stdout.contains('\x1b'), "{out}");
    assert!(lines[0].starts_with("run run-"), "{out}");
    assert!(lines[0].contains("(logs, binary "), "{out}");
    assert!(lines.contains(&"alpha │ alpha 1"), "{out}");
    assert!(
        lines.contains(&"beta  │ beta 3"),
        "names are aligned: {out}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("✓ run run-") && last.contains(" succeeded in "),
        "{out}"
    );

    sw.env("SPARKWING_LOG_FORMAT", "fancy");
    let out = sw.sw(["run", "logs"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("SPARKWING_LOG_FORMAT=\"fancy\" is not a log format; use pretty or json"),
        "{out}"
    );
}

/// On a terminal `run` colours job names and states; `NO_COLOR` turns every colour off, and the
/// lines stay the same.
#[test]
fn run_on_a_terminal_is_coloured_unless_no_color_is_set() {
    let sw = Sw::hello();
    let args = ["run", "hello", "--name", "tty"];
    let coloured = sw.on_a_tty(&args, &["SPARKWING_LOG_FORMAT", "NO_COLOR"]);
    coloured.assert_code(0);
    assert!(coloured.stdout.contains("\x1b["), "{coloured}");
    assert!(coloured.stdout.contains("hello, tty!"), "{coloured}");

    let mut plain_sw = Sw::hello();
    plain_sw.env("NO_COLOR", "1");
    let plain = plain_sw.on_a_tty(&args, &["SPARKWING_LOG_FORMAT"]);
    plain.assert_code(0);
    assert!(!plain.stdout.contains("\x1b["), "{plain}");
    assert!(plain.stdout.contains("hello, tty!"), "{plain}");
}
