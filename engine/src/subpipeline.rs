//! Await jobs: a job that starts another pipeline and awaits its result (`docs/subpipelines.md`).
//!
//! The engine runs such a job as the `sparkwing` binary itself, in the job's own process group like
//! any attempt, so timeouts and cancels reach it the same way:
//! - locally: `sparkwing run CHILD [ARGS] --sw-parent RUN/JOB` (JSON log format), which records
//!   the child run with its parent and cancels itself on SIGTERM;
//! - on a profile: `sparkwing pipeline trigger CHILD --profile P -o json --sw-cancel-on-interrupt
//!   [ARGS] --sw-parent RUN/JOB`, which records the parent on the PipelineRun, follows the remote
//!   run to its end and cancels it on SIGTERM.
//!
//! The child's output becomes the awaiting job's log lines (`child-job │ line`), the child's run id
//! is recorded on the job, and a failed child's failed jobs and their errors are the job's reason.
//! Before a run starts, [`preflight`] checks every awaited pipeline against `sparkwing.yaml` and
//! plans it, refusing unknown pipelines and cycles of pipelines awaiting each other.

use super::process::{AttemptSpec, Line, ProcessEnd, Stream};
use crate::project::Project;
use serde_json::{Map, Value};
use sparkwing_core::protocol::{AwaitSpec, Describe, PlanDoc};
use sparkwing_core::subpipeline::{self, SubpipelineError, CHAIN_ENV};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The chain a cluster run's runner learnt from its PipelineRun; it replaces the environment's.
static INHERITED_CHAIN: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

/// The ancestry chain of this process's run: what [`inherit_chain`] set (a cluster run's runner),
/// else `SPARKWING_PIPELINE_CHAIN`.
pub fn own_chain() -> Vec<String> {
    let inherited = INHERITED_CHAIN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    inherited.unwrap_or_else(|| {
        std::env::var(CHAIN_ENV)
            .map(|c| subpipeline::parse_chain(&c))
            .unwrap_or_default()
    })
}

/// A cluster run's ancestry, from its `sparkwing.dev/pipeline-chain` annotation: the run's jobs
/// and children carry it on as this process's own chain (rather than by `setenv` in a process
/// whose threads already read the environment).
pub fn inherit_chain(chain: Vec<String>) {
    *INHERITED_CHAIN.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain);
}

pub use sparkwing_core::subpipeline::CHAIN_ANNOTATION;

/// The process an await job's attempt runs.
pub fn attempt_spec(
    a: &AwaitSpec,
    pipeline: &str,
    run_id: &str,
    job: &str,
    repo_root: &Path,
    mut env: Vec<(String, String)>,
    timeout: Option<Duration>,
) -> AttemptSpec {
    let program = std::env::current_exe().unwrap_or_else(|_| "sparkwing".into());
    let mut args: Vec<String> = match &a.profile {
        None => vec!["run".into(), a.pipeline.clone()],
        Some(p) => vec![
            "pipeline".into(),
            "trigger".into(),
            a.pipeline.clone(),
            "--profile".into(),
            p.clone(),
            "-o".into(),
            "json".into(),
            "--sw-cancel-on-interrupt".into(),
        ],
    };
    args.extend(["-C".to_string(), repo_root.to_string_lossy().into_owned()]);
    args.extend(a.arg_tokens());
    // The child records its parent: locally in the runs database, on a cluster on its PipelineRun.
    args.extend(["--sw-parent".to_string(), format!("{run_id}/{job}")]);
    env.extend([
        ("SPARKWING_LOG_FORMAT".to_string(), "json".to_string()),
        (
            CHAIN_ENV.to_string(),
            subpipeline::extend_chain(&own_chain(), pipeline),
        ),
        ("SPARKWING_RUN_ID".to_string(), run_id.to_string()),
        ("SPARKWING_JOB".to_string(), job.to_string()),
    ]);
    AttemptSpec {
        program,
        args,
        cwd: repo_root.to_path_buf(),
        env,
        timeout,
        stop_grace: CHILD_STOP_GRACE,
        merge_output: false,
    }
}

/// A stopped sub-pipeline's grace: its `sparkwing` gives its own jobs [`super::process::STOP_GRACE`]
/// before killing them, and must not be killed first (its jobs would be left running).
pub const CHILD_STOP_GRACE: Duration = Duration::from_secs(15);

/// What one line of the child's output means for the awaiting job.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// A log line of the awaiting job.
    Log(Stream, String),
    /// The child run's id became known (a local run id, or `namespace/name`).
    Child(String),
    /// Nothing to log.
    Nothing,
}

/// Reads one attempt's child output: its run id, its lines, why it failed.
#[derive(Debug, Default)]
pub struct ChildTracker {
    pub pipeline: String,
    pub profile: Option<String>,
    pub run: Option<String>,
    /// Failed child jobs in order, with their reasons.
    failed: Vec<(String, String)>,
    /// The last `error: ...` line each child job printed.
    job_errors: BTreeMap<String, String>,
    /// The child run's own error (`run_finished`), or its phase on a cluster.
    run_error: Option<String>,
    /// The last `error: ...` line of the child `sparkwing` itself (a refused run).
    own_error: Option<String>,
}

impl ChildTracker {
    pub fn new(a: &AwaitSpec) -> ChildTracker {
        ChildTracker {
            pipeline: a.pipeline.clone(),
            profile: a.profile.clone(),
            ..ChildTracker::default()
        }
    }

    pub fn see(&mut self, line: &Line) -> Seen {
        let text = line.text.as_str();
        if line.stream == Stream::Stderr {
            if let Some(e) = text.strip_prefix("error: ") {
                self.own_error = Some(e.to_string());
            }
            // `pipeline trigger` names the remote run on stderr.
            if let Some(rest) = text.strip_prefix("triggered ") {
                if self.run.is_none() {
                    if let Some(name) = rest.split_whitespace().next() {
                        self.run = Some(name.to_string());
                        return Seen::Child(name.to_string());
                    }
                }
            }
            return Seen::Log(Stream::Stderr, text.to_string());
        }
        let Ok(Value::Object(v)) = serde_json::from_str::<Value>(text) else {
            return Seen::Log(line.stream, text.to_string());
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let job = s("job").unwrap_or_default();
        if let Some(l) = s("line") {
            let stream = if s("stream").as_deref() == Some("stderr") {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            // A job's stdout and stderr are one stream: the SDK's `error:` line is its last.
            if let Some(e) = l.strip_prefix("error: ") {
                self.job_errors.insert(job.clone(), e.to_string());
            }
            return Seen::Log(stream, format!("{job} │ {l}"));
        }
        match s("event").as_deref() {
            Some("run_started") if self.run.is_none() => match s("run") {
                Some(id) => {
                    self.run = Some(id.clone());
                    Seen::Child(id)
                }
                None => Seen::Nothing,
            },
            Some("job_failed") => {
                let reason = s("reason").unwrap_or_default();
                let line = format!("✗ {job} failed: {reason}");
                self.failed.push((job, reason));
                Seen::Log(Stream::Stdout, line)
            }
            Some("job_cancelled") => Seen::Log(Stream::Stdout, format!("■ {job} cancelled")),
            Some("job_succeeded") => Seen::Log(Stream::Stdout, format!("✓ {job}")),
            Some("run_finished") => {
                self.run_error = s("error");
                Seen::Log(
                    Stream::Stdout,
                    format!(
                        "run {} {}",
                        s("run").unwrap_or_default(),
                        s("status").unwrap_or_default()
                    ),
                )
            }
            // `pipeline trigger -o json`: job states and the end.
            Some("job_state") => {
                let state = v.get("state").cloned().unwrap_or(Value::Null);
                let st = state.get("state").and_then(Value::as_str).unwrap_or("");
                if st == "failed" {
                    let reason = state
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    self.failed.push((job.clone(), reason));
                }
                if st.is_empty() {
                    Seen::Nothing
                } else {
                    Seen::Log(Stream::Stdout, format!("· {job} {st}"))
                }
            }
            Some("end") => {
                let phase = s("phase").unwrap_or_default();
                if phase != "Succeeded" {
                    self.run_error = Some(phase.to_lowercase());
                }
                Seen::Log(
                    Stream::Stdout,
                    format!("run {} {phase}", s("run").unwrap_or_default()),
                )
            }
            _ => Seen::Nothing,
        }
    }

    fn what(&self) -> String {
        let mut w = format!("pipeline {:?}", self.pipeline);
        if let Some(p) = &self.profile {
            w.push_str(&format!(" on profile {p:?}"));
        }
        if let Some(r) = &self.run {
            w.push_str(&format!(" (run {r})"));
        }
        w
    }

    /// The awaiting job's reason when its attempt failed with `end`; `None` keeps the engine's.
    pub fn reason(&self, end: &ProcessEnd) -> Option<String> {
        let ProcessEnd::Exited(code) = end else {
            return None;
        };
        if *code == 0 {
            return None;
        }
        if *code == crate::exit::ExitCode::Cancelled.code() && self.failed.is_empty() {
            return Some(format!("{} was cancelled", self.what()));
        }
        if !self.failed.is_empty() {
            let jobs: Vec<String> = self
                .failed
                .iter()
                .map(|(job, reason)| {
                    let mut t = format!("job {job} failed");
                    if !reason.is_empty() {
                        t.push_str(&format!(": {reason}"));
                    }
                    if let Some(e) = self.job_errors.get(job) {
                        t.push_str(&format!(" ({e})"));
                    }
                    t
                })
                .collect();
            return Some(format!("{} failed: {}", self.what(), jobs.join("; ")));
        }
        if let Some(e) = self.run_error.as_ref().or(self.own_error.as_ref()) {
            return Some(format!("{} failed: {e}", self.what()));
        }
        Some(format!("{} failed (exit code {code})", self.what()))
    }
}

/// How long a second interrupt waits for local children to kill their own jobs.
const CHILD_KILL_DEADLINE: Duration = Duration::from_secs(5);

/// On a second interrupt: SIGINT every live local child run's `sparkwing` (its second interrupt:
/// the first came with the cancel) so it kills its jobs' process groups and records itself
/// cancelled, and wait for that (up to [`CHILD_KILL_DEADLINE`]). Killing it outright would leave
/// its jobs running.
pub fn kill_local_children<'a>(
    store: &crate::store::Store,
    children: impl Iterator<Item = &'a ChildTracker>,
) {
    let live: Vec<String> = children
        .filter(|c| c.profile.is_none())
        .filter_map(|c| c.run.clone())
        .filter(|id| {
            let Ok(Some(run)) = store.get_run(id) else {
                return false;
            };
            if run.status.is_terminal() {
                return false;
            }
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(run.pid as i32),
                nix::sys::signal::Signal::SIGINT,
            )
            .is_ok()
        })
        .collect();
    let end = std::time::Instant::now() + CHILD_KILL_DEADLINE;
    while std::time::Instant::now() < end
        && live.iter().any(|id| {
            store
                .get_run(id)
                .ok()
                .flatten()
                .is_some_and(|r| !r.status.is_terminal())
        })
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Before a run of `pipeline` starts: plan it, and check the pipelines it awaits (and theirs) exist
/// in `sparkwing.yaml` and await no ancestor. A plan that cannot be made here is left to the run,
/// which records why; a child's args that do not resolve refuse the run.
pub fn preflight(
    project: &Project,
    describe: &Describe,
    binary: &Path,
    pipeline: &str,
    entrypoint: &str,
    args: &Map<String, Value>,
    chain: &[String],
) -> Result<(), SubpipelineError> {
    let Ok(root) = crate::planning::plan(binary, &project.root, pipeline, entrypoint, args) else {
        return Ok(());
    };
    if subpipeline::awaits(&root).is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = project
        .config
        .pipelines
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut plan_child = |a: &AwaitSpec| -> Result<Option<PlanDoc>, String> {
        let Some(cfg) = project.pipeline(&a.pipeline) else {
            return Ok(None);
        };
        let Some(info) = describe.entrypoint(&cfg.entrypoint) else {
            return Err(format!(
                "its entrypoint {:?} is not registered in .sparkwing/",
                cfg.entrypoint
            ));
        };
        let resolved =
            sparkwing_core::args::resolve(&info.args, &cfg.arg_defaults(), &a.arg_tokens())
                .map_err(|e| e.to_string())?;
        Ok(
            crate::planning::plan(binary, &project.root, &cfg.name, &cfg.entrypoint, &resolved)
                .ok(),
        )
    };
    subpipeline::check_plan(pipeline, &root, chain, &known, &mut plan_child)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(text: &str) -> Line {
        Line {
            stream: Stream::Stdout,
            text: text.to_string(),
        }
    }

    fn err(text: &str) -> Line {
        Line {
            stream: Stream::Stderr,
            text: text.to_string(),
        }
    }

    fn tracker(profile: Option<&str>) -> ChildTracker {
        ChildTracker::new(&AwaitSpec {
            pipeline: "deploy".into(),
            args: BTreeMap::new(),
            profile: profile.map(str::to_string),
        })
    }

    #[test]
    fn a_local_child_run() {
        let mut t = tracker(None);
        assert_eq!(
            t.see(&out(r#"{"ts":1,"run":"run-c","event":"run_started"}"#)),
            Seen::Child("run-c".into())
        );
        assert_eq!(
            t.see(&out(
                r#"{"ts":1,"run":"run-c","job":"push","seq":1,"stream":"stdout","line":"pushing"}"#
            )),
            Seen::Log(Stream::Stdout, "push │ pushing".into())
        );
        t.see(&out(r#"{"ts":1,"run":"run-c","job":"push","seq":2,"stream":"stderr","line":"error: refused"}"#));
        t.see(&out(
            r#"{"ts":1,"run":"run-c","event":"job_failed","job":"push","reason":"exit code 1"}"#,
        ));
        t.see(&out(r#"{"ts":1,"run":"run-c","event":"run_finished","status":"failed","error":"job failed: push"}"#));
        assert_eq!(t.reason(&ProcessEnd::Exited(0)), None);
        assert_eq!(t.reason(&ProcessEnd::Stopped), None);
        assert_eq!(
            t.reason(&ProcessEnd::Exited(1)).as_deref(),
            Some("pipeline \"deploy\" (run run-c) failed: job push failed: exit code 1 (refused)")
        );
    }

    #[test]
    fn a_refused_or_cancelled_child() {
        let mut t = tracker(None);
        assert_eq!(
            t.see(&err("error: unknown pipeline \"x\"")),
            Seen::Log(Stream::Stderr, "error: unknown pipeline \"x\"".into())
        );
        assert_eq!(
            t.reason(&ProcessEnd::Exited(2)).as_deref(),
            Some("pipeline \"deploy\" failed: unknown pipeline \"x\"")
        );
        let mut t = tracker(None);
        t.see(&out(r#"{"run":"run-c","event":"run_started"}"#));
        assert_eq!(
            t.reason(&ProcessEnd::Exited(130)).as_deref(),
            Some("pipeline \"deploy\" (run run-c) was cancelled")
        );
    }

    #[test]
    fn a_triggered_child_refused_for_a_cycle() {
        // `pipeline trigger` exits 2 before any run exists: the awaiting job fails with its error.
        let mut t = tracker(Some("prod"));
        t.see(&err(
            "uploaded 0 of 3 files (0 B of 1 KiB, 0 bytes sent compressed; 3 unchanged)",
        ));
        t.see(&err("error: refusing to run pipeline \"deploy\" on profile \"prod\": cycle of pipelines awaiting each other: deploy -> ship -> deploy (SPARKWING_PIPELINE_CHAIN is \"deploy,ship\"; the API at http://api refused it)"));
        assert_eq!(
            t.reason(&ProcessEnd::Exited(2)).as_deref(),
            Some("pipeline \"deploy\" on profile \"prod\" failed: refusing to run pipeline \"deploy\" on profile \"prod\": cycle of pipelines awaiting each other: deploy -> ship -> deploy (SPARKWING_PIPELINE_CHAIN is \"deploy,ship\"; the API at http://api refused it)")
        );
    }

    #[test]
    fn a_triggered_child() {
        let mut t = tracker(Some("prod"));
        assert_eq!(
            t.see(&err(
                "triggered ci/deploy-1a2b on profile \"prod\"; following it"
            )),
            Seen::Child("ci/deploy-1a2b".into())
        );
        assert_eq!(
            t.see(&out(r#"{"run":"ci/deploy-1a2b","job":"push","seq":1,"ts":1,"stream":"stdout","line":"hi"}"#)),
            Seen::Log(Stream::Stdout, "push │ hi".into())
        );
        t.see(&out(r#"{"run":"ci/deploy-1a2b","event":"job_state","job":"push","state":{"state":"failed","reason":"exit code 3"}}"#));
        t.see(&out(
            r#"{"run":"ci/deploy-1a2b","event":"end","phase":"Failed"}"#,
        ));
        assert_eq!(
            t.reason(&ProcessEnd::Exited(1)).as_deref(),
            Some("pipeline \"deploy\" on profile \"prod\" (run ci/deploy-1a2b) failed: job push failed: exit code 3")
        );
    }
}
