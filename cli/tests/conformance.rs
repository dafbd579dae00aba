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
    /// `runs status -o json` of the run.
    status: Value,
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
            status,
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
/// and run status they carry, and what the storage and fan-out events say (a cache's outcome and
/// key, an artifact's name and path, a fan-out's items and jobs). Dropped: timestamps, ids,
/// durations, sizes, the signal's wording, and `runner` events (the Docker executor's reconcile
/// transitions, which the process executor has no counterpart for).
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
        let detail: &[&str] = match kind {
            "cache_restored" => &["cache", "key", "outcome", "restored_key"],
            "cache_saved" => &["cache", "key", "saved"],
            "artifact_published" => &["artifact", "path", "files"],
            "artifact_consumed" => &["artifact", "path"],
            "fan_out" => &["from", "output", "items", "jobs"],
            _ => &[],
        };
        for key in ["state", "reason", "attempt", "status", "exit_code"]
            .iter()
            .chain(detail)
        {
            if !p[*key].is_null() {
                t[*key] = p[*key].clone();
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

/// How the outcomes of two executors are compared.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// The whole sequence of transitions and printed lines (a serial pipeline).
    Serial,
    /// Each job's own transitions and printed lines in order, and the run's; how jobs that run
    /// at once interleave is left out (a fan-out's expanded jobs).
    PerJob,
}

/// Run the case on every executor; each gets a fresh project and home. Returns the outcomes after
/// checking that they all match the first (the process executor's).
fn conform(pipeline: &str, interrupt_after: Option<(&str, &str)>) -> Vec<(Sw, RunOutcome)> {
    conform_runs(pipeline, 1, interrupt_after, |_| {}, Order::Serial)
        .into_iter()
        .map(|(sw, mut runs)| (sw, runs.remove(0)))
        .collect()
}

/// Run the case `runs` times in a row on every executor, each executor with a fresh project and
/// home kept for all its runs (so caches and memoized results carry over); `between(sw)` is
/// called before every run but the first. Run N's outcome must match run N of the first
/// executor (the process executor's), with the ids of the executor's earlier runs written
/// `<run K>` (a memoized job is `cached from run <run 1>`).
fn conform_runs(
    pipeline: &str,
    runs: usize,
    interrupt_after: Option<(&str, &str)>,
    between: impl Fn(&Sw),
    order: Order,
) -> Vec<(Sw, Vec<RunOutcome>)> {
    let mut results: Vec<(&'static str, Sw, Vec<RunOutcome>)> = Vec::new();
    for ex in executors() {
        let sw = conformance_project();
        let mut outs: Vec<RunOutcome> = Vec::new();
        for n in 0..runs {
            if n > 0 {
                between(&sw);
            }
            let started = std::time::Instant::now();
            let mut out = ex.run(&sw, pipeline, interrupt_after);
            eprintln!(
                "{pipeline} run {} on {}: {:?}",
                n + 1,
                ex.name(),
                started.elapsed()
            );
            let earlier: Vec<String> = outs.iter().map(|o| o.run_id.clone()).collect();
            for t in &mut out.transitions {
                name_runs(t, &earlier);
            }
            outs.push(out);
        }
        results.push((ex.name(), sw, outs));
    }
    let (base_name, _, base_runs) = &results[0];
    for (name, _, other_runs) in &results[1..] {
        for (n, (base, other)) in base_runs.iter().zip(other_runs).enumerate() {
            let what = format!("{pipeline} (run {})", n + 1);
            let earlier: Vec<String> = other_runs[..n].iter().map(|o| o.run_id.clone()).collect();
            let base_earlier: Vec<String> =
                base_runs[..n].iter().map(|o| o.run_id.clone()).collect();
            assert_eq!(
                base.code, other.code,
                "{what}: exit code {base_name} vs {name}\n--- {name} stderr ---\n{}",
                other.stderr
            );
            assert_eq!(
                arranged(&base.transitions, order),
                arranged(&other.transitions, order),
                "{what}: transitions differ between {base_name} and {name}\n{}",
                serde_json::to_string_pretty(&json!({base_name.to_string(): base.transitions, name.to_string(): other.transitions})).unwrap()
            );
            // The same lines are printed (only ids and times differ).
            assert_eq!(
                arranged(&printed(&base.stdout, &base_earlier), order),
                arranged(&printed(&other.stdout, &earlier), order),
                "{what}: printed output differs between {base_name} and {name}"
            );
        }
    }
    results.into_iter().map(|(_, sw, o)| (sw, o)).collect()
}

/// Write each of `earlier` (run ids) found in a string of `v` as `<run K>` (K from 1).
fn name_runs(v: &mut Value, earlier: &[String]) {
    match v {
        Value::String(s) => {
            for (k, id) in earlier.iter().enumerate() {
                if s.contains(id.as_str()) {
                    *s = s.replace(id.as_str(), &format!("<run {}>", k + 1));
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| name_runs(x, earlier)),
        Value::Object(o) => o.values_mut().for_each(|x| name_runs(x, earlier)),
        _ => {}
    }
}

/// `items` as compared under `order`: unchanged when serial; else grouped by job (a record's
/// `job`, `job_row` or, for run-level records, `-`), each group in its order, groups by name.
fn arranged(items: &[Value], order: Order) -> Value {
    if order == Order::Serial {
        return json!(items);
    }
    let mut groups: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for v in items {
        let job = ["job", "job_row"]
            .iter()
            .find_map(|k| v[*k].as_str())
            .unwrap_or("-")
            .to_string();
        groups.entry(job).or_default().push(v.clone());
    }
    json!(groups)
}

/// A duration in a log line (`… in 40 ms)`) written `in _ ms`: it differs from run to run.
fn mask_millis(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find(" in ") {
        out.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(" ms") {
            out.push('_');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// The printed JSON lines with volatile fields removed, durations in lines masked and the ids
/// of `earlier` runs named (see `name_runs`).
fn printed(stdout: &str, earlier: &[String]) -> Vec<Value> {
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
                if let Some(Value::String(line)) = o.get_mut("line") {
                    *line = mask_millis(line);
                }
            }
            name_runs(&mut v, earlier);
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

/// The normalised events of `kind`.
fn events<'a>(o: &'a RunOutcome, kind: &str) -> Vec<&'a Value> {
    o.transitions.iter().filter(|t| t["kind"] == kind).collect()
}

/// A job's final row (state, reason, attempt).
fn row<'a>(o: &'a RunOutcome, job: &str) -> &'a Value {
    o.transitions
        .iter()
        .find(|t| t["job_row"] == job)
        .unwrap_or_else(|| panic!("no job {job} in {:#?}", o.transitions))
}

/// The lines a job printed, in order.
fn job_lines(o: &RunOutcome, job: &str) -> Vec<String> {
    json_lines(&o.stdout)
        .into_iter()
        .filter(|v| v["job"] == job)
        .filter_map(|v| v["line"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn dependency_cache_misses_then_hits() {
    // Between the runs `deps/` goes, as in a fresh checkout: the second run finds it only
    // through the cache.
    let drop_deps = |sw: &Sw| std::fs::remove_dir_all(sw.root().join("deps")).unwrap();
    for (sw, runs) in conform_runs("cache", 2, None, drop_deps, Order::Serial) {
        let (first, second) = (&runs[0], &runs[1]);
        for o in &runs {
            assert_eq!(o.code, 0, "{}", o.stderr);
            assert_eq!(row(o, "deps")["state"], "success");
        }
        let restored = events(first, "cache_restored");
        assert_eq!(restored.len(), 1, "{restored:?}");
        assert_eq!(restored[0]["outcome"], "miss");
        let key = restored[0]["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("deps-"), "{key}");
        let saved = events(first, "cache_saved");
        assert_eq!(saved.len(), 1, "{saved:?}");
        assert_eq!(
            (&saved[0]["saved"], &saved[0]["key"]),
            (&json!("saved"), &json!(key))
        );
        assert!(job_lines(first, "deps").contains(&"deps fetched".to_string()));
        let caches = &first.status["caches"];
        assert_eq!(
            (&caches[0]["outcome"], &caches[0]["saved"]),
            (&json!("miss"), &json!("saved")),
            "{caches}"
        );

        let restored = events(second, "cache_restored");
        assert_eq!(restored.len(), 1, "{restored:?}");
        assert_eq!(
            (&restored[0]["outcome"], &restored[0]["key"]),
            (&json!("hit"), &json!(key))
        );
        assert!(
            events(second, "cache_saved").is_empty(),
            "a hit is not saved again"
        );
        assert!(
            job_lines(second, "deps").contains(&"deps restored: serde 1.0.200".to_string()),
            "{:?}",
            job_lines(second, "deps")
        );
        // What `runs status` records of the cache.
        let caches = &second.status["caches"];
        assert_eq!(caches[0]["outcome"], "hit", "{caches}");
        assert!(sw.home().join("caches/entries").join(&key).is_dir());
    }
}

#[test]
fn artifact_passes_from_producer_to_consumer() {
    for (sw, o) in conform("artifact", None) {
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(row(&o, "make")["state"], "success");
        assert_eq!(row(&o, "check")["state"], "success");
        let published = events(&o, "artifact_published");
        assert_eq!(published.len(), 1, "{published:?}");
        assert_eq!(published[0]["job"], "make");
        assert_eq!(published[0]["artifact"], "report");
        let consumed = events(&o, "artifact_consumed");
        assert_eq!(consumed.len(), 1, "{consumed:?}");
        assert_eq!(consumed[0]["job"], "check");
        assert_eq!(
            job_lines(&o, "check").last().map(String::as_str),
            Some("report checked")
        );
        assert_eq!(
            std::fs::read_to_string(sw.root().join("consumer/out/report.txt")).unwrap(),
            "report body\n"
        );
    }
}

#[test]
fn memoized_job_is_cached_from_the_first_run() {
    // The consumer's copy of the artifact goes between the runs: the second run's comes from the
    // first run's artifact, which the cached job brings.
    let drop_copy = |sw: &Sw| std::fs::remove_dir_all(sw.root().join("consumer/memo-out")).unwrap();
    for (_, runs) in conform_runs("memo", 2, None, drop_copy, Order::Serial) {
        let (first, second) = (&runs[0], &runs[1]);
        for o in &runs {
            assert_eq!(o.code, 0, "{}", o.stderr);
            assert_eq!(row(o, "use")["state"], "success");
            assert!(
                job_lines(o, "use").contains(&"value 42, file 42".to_string()),
                "{:?}",
                job_lines(o, "use")
            );
        }
        assert_eq!(row(first, "compute")["state"], "success");
        assert!(job_lines(first, "compute").contains(&"computing".to_string()));
        assert_eq!(row(second, "compute")["state"], "cached");
        assert_eq!(row(second, "compute")["reason"], "cached from run <run 1>");
        assert!(
            !job_lines(second, "compute").contains(&"computing".to_string()),
            "the cached job ran"
        );
        assert!(kinds(second).contains(&"job_cached:compute".to_string()));
    }
}

#[test]
fn fan_out_matrix_and_fan_in() {
    for (_, mut runs) in conform_runs("fan-out", 1, None, |_| {}, Order::PerJob) {
        let o = runs.remove(0);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let fanned = events(&o, "fan_out");
        assert_eq!(fanned.len(), 1, "{fanned:?}");
        assert_eq!(
            fanned[0]["jobs"],
            json!(["test[0]", "test[1]", "test[2]", "test[3]"])
        );
        assert_eq!(row(&o, "test")["state"], "success");
        assert_eq!(
            row(&o, "test")["reason"],
            "fanned out into 4 jobs (test[0] … test[3])"
        );
        for (i, item) in ["a", "b", "c", "d"].iter().enumerate() {
            let job = format!("test[{i}]");
            assert_eq!(row(&o, &job)["state"], "success");
            assert!(job_lines(&o, &job).contains(&format!("testing {item}")));
        }
        for job in ["pkg[0]", "pkg[1]"] {
            assert_eq!(row(&o, job)["state"], "success");
        }
        // A template runs nothing: attempt 0, in its row and in the event that ended it (what a
        // cluster's runner reports to the API), as each job's final event and row agree.
        assert_eq!(row(&o, "test")["attempt"], 0);
        assert_eq!(row(&o, "pkg")["attempt"], 0);
        for r in o.transitions.iter().filter(|t| !t["job_row"].is_null()) {
            let job = &r["job_row"];
            let end = o
                .transitions
                .iter()
                .rfind(|t| &t["job"] == job && t["kind"] == "job_succeeded")
                .unwrap_or_else(|| panic!("no job_succeeded for {job}"));
            assert_eq!(
                end["attempt"], r["attempt"],
                "job {job}: event {end} row {r}"
            );
        }
        assert_eq!(row(&o, "sum")["state"], "success");
        assert!(
            job_lines(&o, "sum")
                .contains(&"tests a-ok,b-ok,c-ok,d-ok; packages x-packed,y-packed".to_string()),
            "{:?}",
            job_lines(&o, "sum")
        );
    }
}
