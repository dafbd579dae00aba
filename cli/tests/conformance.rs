//! Executor conformance: the same fixture pipelines run through every executor produce the same
//! ordered sequence of run and job state transitions (timestamps and ids stripped).
//!
//! The suite is written once over `TestExecutor`; the process and Docker executors implement it
//! here. The Kubernetes member is `e2e/tests/conformance.rs` (same fixture, compared with the
//! process executor by exit code and each job's final state, reason and attempt).

#[path = "common/mod.rs"]
mod common;
#[path = "docker_support/mod.rs"]
mod docker_support;

use common::*;
use docker_support::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;

/// How a run ended and what it went through.
#[derive(Debug)]
struct RunOutcome {
    code: i32,
    run_id: String,
    /// The run's final status and its transitions, normalised (see `transitions`).
    transitions: Vec<Value>,
    stdout: String,
    stderr: String,
}

/// What the suite needs from an executor.
trait TestExecutor {
    fn name(&self) -> &'static str;
    /// Prepare (e.g. build the runner image); called before each case.
    fn prepare(&self) {}
    /// `sparkwing run` flags selecting this executor.
    fn run_flags(&self) -> Vec<&'static str>;

    /// Run `pipeline` in `sw`'s project to its end; with `interrupt_after`, send SIGINT once that
    /// job's log shows the given line.
    fn run(&self, sw: &Sw, pipeline: &str, interrupt_after: Option<(&str, &str)>) -> RunOutcome {
        self.prepare();
        let mut args: Vec<&str> = vec!["run"];
        args.extend(self.run_flags());
        args.push(pipeline);
        let mut running = sw.spawn(&args);
        let id = running.wait_run_id();
        if let Some((job, line)) = interrupt_after {
            sw.wait_for_log_line(&id, job, line);
            running.signal(Signal::SIGINT);
        }
        let out = running.finish_within(Duration::from_secs(120));
        let (_, status) = sw.status(&id);
        assert_eq!(
            status["runner"],
            self.name(),
            "run {id} was not executed by {}",
            self.name()
        );
        RunOutcome {
            code: out.code,
            run_id: id,
            transitions: transitions(&status),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

struct Process;
impl TestExecutor for Process {
    fn name(&self) -> &'static str {
        "process"
    }
    fn run_flags(&self) -> Vec<&'static str> {
        vec![]
    }
}

struct Docker;
impl TestExecutor for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }
    fn prepare(&self) {
        require_docker();
    }
    fn run_flags(&self) -> Vec<&'static str> {
        vec!["--runner", "docker"]
    }
}

/// Pick the fields that describe transitions: event kinds with the job, state, reason, attempt
/// and run status they carry. Dropped: timestamps, ids, durations, paths, the signal's wording,
/// and `runner` events (the Docker executor's reconcile transitions, which the process executor
/// has no counterpart for).
fn transitions(status: &Value) -> Vec<Value> {
    let mut out = vec![
        json!({"final": status["status"], "exit_code": status["exit_code"], "error": status["error"]}),
    ];
    for e in status["events"].as_array().cloned().unwrap_or_default() {
        let kind = e["kind"].as_str().unwrap_or_default();
        if kind == "runner" {
            continue;
        }
        let p = &e["payload"];
        let mut t = json!({"kind": kind, "job": e["job_id"]});
        for key in ["state", "reason", "attempt", "status", "exit_code"] {
            if !p[key].is_null() {
                t[key] = p[key].clone();
            }
        }
        out.push(t);
    }
    for j in status["jobs"].as_array().cloned().unwrap_or_default() {
        out.push(json!({"job_row": j["job_id"], "state": j["state"], "reason": j["reason"], "attempt": j["attempt"], "exit_code": j["exit_code"]}));
    }
    out
}

fn executors() -> Vec<Box<dyn TestExecutor>> {
    let mut v: Vec<Box<dyn TestExecutor>> = vec![Box::new(Process)];
    if !skip_docker() {
        v.push(Box::new(Docker));
    }
    v
}

/// Run the case on every executor; each gets a fresh project and home. Returns the outcomes after
/// checking that they all match the first (the process executor's).
fn conform(pipeline: &str, interrupt_after: Option<(&str, &str)>) -> Vec<(Sw, RunOutcome)> {
    let mut results: Vec<(&'static str, Sw, RunOutcome)> = Vec::new();
    for ex in executors() {
        let sw = conformance_project();
        let out = ex.run(&sw, pipeline, interrupt_after);
        results.push((ex.name(), sw, out));
    }
    let (base_name, _, base) = &results[0];
    for (name, _, other) in &results[1..] {
        assert_eq!(
            base.code, other.code,
            "{pipeline}: exit code {base_name} vs {name}\n--- {name} stderr ---\n{}",
            other.stderr
        );
        assert_eq!(
            base.transitions, other.transitions,
            "{pipeline}: transitions differ between {base_name} and {name}\n{}",
            serde_json::to_string_pretty(&json!({base_name.to_string(): base.transitions, name.to_string(): other.transitions})).unwrap()
        );
        // The same lines are printed (only ids and times differ).
        assert_eq!(
            printed(&base.stdout),
            printed(&other.stdout),
            "{pipeline}: printed output differs between {base_name} and {name}"
        );
    }
    results.into_iter().map(|(_, sw, o)| (sw, o)).collect()
}

/// The printed JSON lines with volatile fields removed.
fn printed(stdout: &str) -> Vec<Value> {
    json_lines(stdout)
        .into_iter()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                for k in [
                    "ts",
                    "run",
                    "duration_ms",
                    "log_dir",
                    "binary",
                    "binary_key",
                    "runner",
                    "signal",
                ] {
                    o.remove(k);
                }
            }
            v
        })
        .collect()
}

fn kinds(o: &RunOutcome) -> Vec<String> {
    o.transitions[1..]
        .iter()
        .filter_map(|t| {
            t["kind"]
                .as_str()
                .map(|k| format!("{k}:{}", t["job"].as_str().unwrap_or("-")))
        })
        .collect()
}

#[test]
fn success() {
    for (_, o) in conform("success", None) {
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.transitions[0]["final"], "success");
        assert_eq!(
            kinds(&o),
            [
                "run_started:-",
                "plan:-",
                "job_started:first",
                "job_succeeded:first",
                "job_started:second",
                "job_succeeded:second",
                "run_finished:-"
            ]
        );
    }
}

#[test]
fn failure_with_upstream_failed_and_finally() {
    for (_, o) in conform("fail-upstream", None) {
        assert_eq!(o.code, 1, "{}", o.stderr);
        let rows: Vec<&Value> = o
            .transitions
            .iter()
            .filter(|t| !t["job_row"].is_null())
            .collect();
        assert_eq!(rows[0]["state"], "failed");
        assert_eq!(rows[1]["state"], "cancelled");
        assert_eq!(rows[1]["reason"], "upstream-failed");
        assert_eq!(rows[2]["state"], "success", "the finally job runs");
    }
}

#[test]
fn retry_then_pass() {
    for (_, o) in conform("retry", None) {
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(
            kinds(&o).contains(&"job_retry:flaky".to_string()),
            "{:?}",
            kinds(&o)
        );
        let row = o
            .transitions
            .iter()
            .find(|t| t["job_row"] == "flaky")
            .unwrap();
        assert_eq!(row["attempt"], 2);
    }
}

#[test]
fn job_timeout() {
    for (_, o) in conform("timeout", None) {
        assert_eq!(o.code, 1, "{}", o.stderr);
        let row = o
            .transitions
            .iter()
            .find(|t| t["job_row"] == "slow")
            .unwrap();
        assert_eq!(row["state"], "failed");
        assert!(
            row["reason"]
                .as_str()
                .unwrap_or_default()
                .starts_with("timeout"),
            "{row}"
        );
    }
}

#[test]
fn cancel_runs_finally() {
    for (sw, o) in conform("cancel-finally", Some(("long", "started"))) {
        assert_eq!(o.code, 130, "{}", o.stderr);
        assert_eq!(o.transitions[0]["final"], "cancelled");
        assert!(
            sw.root().join("finally-ran").is_file(),
            "the finally job did not run"
        );
        assert!(
            containers_with_label("sparkwing.dev/run", &o.run_id).is_empty(),
            "the runner container of {} is still there",
            o.run_id
        );
    }
}
