//! One attempt of one job of a run, alone: what a job pod runs (`sparkwing runner --job`,
//! `docs/runner.md#job-pods`). The run's coordinator decided the job runs now; this plans the
//! pipeline again to find the job (an expanded `test[3]` from its template and its item), runs
//! its attempt with its needs' outputs as the coordinator recorded them, its consumed artifacts
//! and caches through [`RunRequest::stores`], and reports its log, its states and its end with
//! its outputs through [`RunRequest::sink`] under the job's id. Nothing else of the run is
//! recorded: the coordinator owns the run.

use crate::dag_run::FailedCommand;
use crate::job_storage::{JobStorage, StorageEvent};
use crate::process::{self, Control, Line, ProcessEnd};
use crate::sink::{job_state_report, RunSink, SinkLine};
use crate::{now_ms, EngineError, RunRequest};
use serde_json::{Map, Value};
use sparkwing_core::mask::Masker;
use sparkwing_core::protocol::{JobSpec, PlanDoc, CONTROL_PREFIX};
use sparkwing_core::time::human_duration;
use sparkwing_core::{dag, fanout, JobState};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Which attempt of which job, with what its needs output.
#[derive(Debug, Clone, Default)]
pub struct OneJob {
    pub job: String,
    pub attempt: u32,
    /// A job expanded from a fan-out or matrix: its item (the coordinator's).
    pub item: Option<String>,
    /// Its needs' outputs, by job id, as the coordinator recorded them.
    pub needs_outputs: BTreeMap<String, BTreeMap<String, String>>,
}

/// Job `id` of `plan`: one of its jobs, or `NAME[i]` expanded from template `NAME` with `item`
/// (a fan-out's jobs exist only once the coordinator expanded them). Pure.
pub fn job_of(plan: &PlanDoc, id: &str, item: Option<&str>) -> Result<JobSpec, String> {
    let validated = dag::validate(plan).map_err(|e| format!("invalid plan: {e}"))?;
    if let Some(j) = validated.jobs.iter().find(|j| j.id == id) {
        return Ok(j.clone());
    }
    let Some((template, index)) = fanout::split_expanded_id(id) else {
        return Err(format!("job {id:?} is not in the plan"));
    };
    let t = validated
        .jobs
        .iter()
        .find(|j| j.id == template && j.is_template())
        .ok_or_else(|| {
            format!("job {id:?} is not in the plan (no fan-out or matrix {template:?})")
        })?;
    let item = item.ok_or_else(|| {
        format!("job {id:?} is expanded from {template:?}, but its item was not given")
    })?;
    let mut job = t
        .expand(&[item.to_string()])
        .pop()
        .ok_or_else(|| format!("job {id:?}: its template expanded into nothing"))?;
    job.id = id.to_string();
    if let Some(e) = &mut job.expanded {
        e.index = index;
    }
    Ok(job)
}

/// Reports the job's lines and states (masked, numbered from 1: the sink adds what earlier
/// attempts posted).
struct Reporter {
    sink: Arc<dyn RunSink>,
    masker: Masker,
    job: String,
    attempt: u32,
    started: i64,
    seq: u64,
    /// The job's needs, as the coordinator reports them (the dashboard's graph).
    needs: Vec<String>,
}

impl Reporter {
    fn line(&mut self, stream: &str, text: &str) {
        self.seq += 1;
        self.sink.log_line(SinkLine {
            job: self.job.clone(),
            seq: self.seq,
            ts_ms: now_ms(),
            stream: stream.to_string(),
            line: self.masker.mask(text).into_owned(),
        });
    }

    fn storage(&mut self, events: &[StorageEvent]) {
        for e in events {
            self.line("stdout", &e.log_line());
        }
    }

    fn running(&self) {
        let mut report = job_state_report(
            JobState::Running,
            self.attempt,
            Some(self.started),
            None,
            None,
            None,
        );
        report.needs = self.needs.clone();
        self.sink.job_state(&self.job, report);
    }

    fn end(
        &mut self,
        state: JobState,
        reason: Option<&str>,
        exit_code: Option<i32>,
        outputs: BTreeMap<String, String>,
    ) -> JobState {
        let reason = reason.map(|r| self.masker.mask(r).into_owned());
        if let Some(r) = &reason {
            if state != JobState::Success {
                self.line("stderr", &format!("job {} {state}: {r}", self.job));
            }
        }
        let mut report = job_state_report(
            state,
            self.attempt,
            Some(self.started),
            Some(now_ms()),
            exit_code,
            reason.as_deref(),
        );
        report.needs = self.needs.clone();
        report.outputs = (!outputs.is_empty()).then(|| {
            outputs
                .into_iter()
                .map(|(k, v)| (k, self.masker.mask(&v).into_owned()))
                .collect()
        });
        self.sink.job_state(&self.job, report);
        state
    }
}

/// Run `one` of the run `req` describes; answers the state reported (also reported through
/// `req.sink`, which the caller flushes).
pub async fn run(req: &RunRequest, one: OneJob) -> Result<JobState, EngineError> {
    let sink: Arc<dyn RunSink> = match &req.sink {
        Some(s) => s.clone(),
        None => {
            return Err(EngineError::Io {
                what: format!("job {}", one.job),
                source: std::io::Error::other("a job pod reports through a sink"),
            })
        }
    };
    let mut r = Reporter {
        sink,
        masker: crate::recorder::masker_for(req),
        job: one.job.clone(),
        attempt: one.attempt,
        started: now_ms(),
        seq: 0,
        needs: Vec::new(),
    };
    let (binary, root, pipeline, entrypoint, args) = (
        req.binary.path.clone(),
        req.repo_root.clone(),
        req.pipeline.clone(),
        req.info.entrypoint.clone(),
        req.args.clone(),
    );
    let planned = tokio::task::spawn_blocking(move || {
        crate::planning::plan(&binary, &root, &pipeline, &entrypoint, &args)
    })
    .await
    .map_err(|e| format!("planning stopped: {e}"))
    .and_then(|p| p.map_err(|e| e.to_string()));
    let plan = match planned {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("plan: {e}");
            return Ok(r.end(JobState::Failed, Some(&reason), None, BTreeMap::new()));
        }
    };
    let spec = match job_of(&plan, &one.job, one.item.as_deref()) {
        Ok(s) => s,
        Err(e) => return Ok(r.end(JobState::Failed, Some(&e), None, BTreeMap::new())),
    };
    r.needs = spec.needs.clone();
    r.running();
    let plan_jobs = dag::validate(&plan).map(|v| v.jobs).unwrap_or_default();
    let storage = JobStorage::of(&spec, &plan_jobs, &req.repo_root, req.stores.as_ref());
    let mut restored = Vec::new();
    if let Some(storage) = storage.clone() {
        let (events, ready) = tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            let ready = storage.before(&mut events);
            (events, ready)
        })
        .await
        .unwrap_or_else(|e| (Vec::new(), Err(format!("caches and artifacts: {e}"))));
        r.storage(&events);
        restored = events;
        if let Err(reason) = ready {
            return Ok(r.end(JobState::Failed, Some(&reason), None, BTreeMap::new()));
        }
    }
    let dir = req.home.root.join("tmp").join("job-outputs");
    std::fs::create_dir_all(&dir).map_err(crate::io_err(format!("create {}", dir.display())))?;
    let outputs_file = dir.join(format!("attempt-{}.json", one.attempt));
    let _ = std::fs::remove_file(&outputs_file);
    let needs_outputs: Map<String, Value> = one
        .needs_outputs
        .iter()
        .filter(|(job, _)| spec.needs.contains(job))
        .map(|(job, outputs)| {
            let o: Map<String, Value> = outputs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            (job.clone(), Value::Object(o))
        })
        .collect();
    let args_json = Value::Object(req.args.clone()).to_string();
    let attempt_spec = crate::job_command::attempt_spec(
        crate::job_command::JobCommand {
            binary: &req.binary.path,
            entrypoint: &req.info.entrypoint,
            pipeline: &req.pipeline,
            run_id: &one.job,
            args_json: &args_json,
            repo_root: &req.repo_root,
            outputs_file: &outputs_file,
            needs_outputs,
        },
        &spec,
        one.attempt,
    );
    // SIGTERM (the pod deleted: a cancel, the job's timeout) stops the job gracefully.
    let (control_tx, control_rx) = watch::channel(Control::Run);
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(crate::io_err("install the SIGTERM handler"))?;
    let stopper = tokio::spawn(async move {
        let mut term = term;
        if term.recv().await.is_some() {
            let _ = control_tx.send(Control::Stop);
        }
    });
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<Line>();
    let process = tokio::spawn(process::run_attempt(
        attempt_spec,
        line_tx,
        control_rx,
        process::Supervisors::default(),
    ));
    let mut failed_command = None;
    while let Some(line) = line_rx.recv().await {
        if line.stream == process::Stream::Stdout {
            if let Some(rest) = line.text.strip_prefix(CONTROL_PREFIX) {
                if let Ok(v) = serde_json::from_str::<Value>(rest) {
                    if v["event"] == "command_failed" {
                        failed_command = FailedCommand::from_record(&v);
                    }
                    continue;
                }
            }
        }
        r.line(line.stream.as_str(), &line.text);
    }
    let end = process.await.unwrap_or_else(|e| {
        ProcessEnd::SpawnFailed(format!("the job's process task stopped: {e}"))
    });
    stopper.abort();
    let (mut state, mut reason, exit_code) = match end {
        ProcessEnd::Exited(0) => (JobState::Success, None, Some(0)),
        ProcessEnd::Exited(c) => match failed_command {
            Some(f) => {
                let (reason, code) = f.reason();
                (JobState::Failed, Some(reason), code)
            }
            None => (JobState::Failed, Some(format!("exit code {c}")), Some(c)),
        },
        ProcessEnd::Signalled(s) => (
            JobState::Failed,
            Some(format!("killed by signal {s}")),
            None,
        ),
        ProcessEnd::TimedOut => (
            JobState::Failed,
            Some(format!(
                "timeout after {}",
                human_duration(spec.timeout_ms.unwrap_or(0) as i64)
            )),
            None,
        ),
        // Stopped by SIGTERM: the pod is being deleted, by its coordinator (a cancel, the job's
        // timeout), which already decided how the attempt ended, or by someone else (lost), which
        // its coordinator sees as a pod gone without an end. Either way the end is the
        // coordinator's to record: none is reported from here.
        ProcessEnd::Stopped => {
            r.line(
                "stderr",
                &format!(
                    "job {} stopped: its pod got SIGTERM (deleted); its coordinator records how the attempt ended",
                    one.job
                ),
            );
            return Ok(JobState::Cancelled);
        }
        ProcessEnd::SpawnFailed(m) | ProcessEnd::StorageFailed(m) => {
            (JobState::Failed, Some(m), None)
        }
    };
    let text = std::fs::read_to_string(&outputs_file).ok();
    let _ = std::fs::remove_file(&outputs_file);
    let mut outputs = BTreeMap::new();
    if state == JobState::Success {
        if let Some(storage) = storage {
            let (events, done) = tokio::task::spawn_blocking(move || {
                let mut events = Vec::new();
                let done = storage.after_success(&restored, &mut events);
                (events, done)
            })
            .await
            .unwrap_or_else(|e| (Vec::new(), Err(format!("caches and artifacts: {e}"))));
            r.storage(&events);
            if let Err(e) = done {
                state = JobState::Failed;
                reason = Some(e);
            }
        }
        if let Some(Ok(Value::Object(map))) = text.map(|t| serde_json::from_str::<Value>(&t)) {
            outputs = map
                .into_iter()
                .map(|(k, v)| {
                    let v = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (k, v)
                })
                .collect();
        }
    }
    Ok(r.end(state, reason.as_deref(), exit_code, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_core::fanout::FanOutSpec;

    fn plan() -> PlanDoc {
        let list = JobSpec::new("list");
        let mut test = JobSpec::new("test");
        test.needs = vec!["list".into()];
        test.fan_out = Some(FanOutSpec {
            job: "list".into(),
            output: "shards".into(),
        });
        PlanDoc {
            protocol: 1,
            entrypoint: "P".into(),
            jobs: vec![list, test],
            concurrency: None,
        }
    }

    #[test]
    fn a_job_of_the_plan_is_found_and_an_expanded_one_made_from_its_template() {
        assert_eq!(job_of(&plan(), "list", None).unwrap().id, "list");
        let j = job_of(&plan(), "test[3]", Some("d")).unwrap();
        assert_eq!(j.id, "test[3]");
        let e = j.expanded.unwrap();
        assert_eq!(
            (e.template.as_str(), e.index, e.item.as_str()),
            ("test", 3, "d")
        );
        assert_eq!(j.fan_out, None);
        assert_eq!(j.needs, vec!["list".to_string()]);
    }

    #[test]
    fn an_unknown_job_or_a_missing_item_is_said() {
        let e = job_of(&plan(), "nope", None).unwrap_err();
        assert!(e.contains("\"nope\" is not in the plan"), "{e}");
        let e = job_of(&plan(), "nope[1]", Some("x")).unwrap_err();
        assert!(e.contains("no fan-out or matrix \"nope\""), "{e}");
        let e = job_of(&plan(), "test[0]", None).unwrap_err();
        assert!(e.contains("its item was not given"), "{e}");
    }
}
