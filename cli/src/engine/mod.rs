//! The local engine: runs one pipeline's plan as processes, records everything in the store and
//! the log files, and prints it. Decisions (what starts, what is cancelled, how the run ends) are
//! made by `sparkwing_core::Scheduler`; this module only does them.

pub mod job_log;
pub mod output;
pub mod process;
pub mod sink;
pub mod subpipeline;
pub mod supervisor;

use crate::box_slots::{BoxSlotError, BoxSlots, SlotGuard, Ticket};
use crate::compile::Compiled;
use crate::exit::ExitCode;
use crate::home::Home;
use crate::store::{NewJob, NewRun, Store, StoreError};
use job_log::JobLog;
use output::{human_duration, Terminal};
use process::{AttemptSpec, Control, Line, ProcessEnd};
use serde_json::{json, Map, Value};
use sparkwing_api::wire::{JobStateReport, ReportedJobState};
use sparkwing_core::mask::{self, Masker};
use sparkwing_core::protocol::{PipelineInfo, PlanDoc, CONTROL_PREFIX, PROTOCOL_VERSION};
use sparkwing_core::scheduler::{Action, AttemptOutcome};
use sparkwing_core::{dag, JobState, RunStatus, Scheduler};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

pub use output::Format;
pub use sink::{RunPhase, RunSink, SinkLine};

/// How long the engine waits for its sink to deliver what is queued when the run ends.
pub const SINK_FLUSH_DEADLINE: Duration = Duration::from_secs(60);

/// Everything a run needs, resolved by the `run` command.
pub struct RunRequest {
    pub home: Home,
    pub repo_root: PathBuf,
    pub pipeline: String,
    pub info: PipelineInfo,
    pub binary: BinaryRef,
    /// Resolved args, secrets in clear (given to the pipeline binary only).
    pub args: Map<String, Value>,
    pub workers: usize,
    pub format: Format,
    /// The host gate, when a cap is set.
    pub box_slots: Option<BoxGate>,
    /// What executes the run: `process` (this process) or `docker` (a runner container).
    pub runner: String,
    /// A second destination for the run's lines, job states and end (the cluster API).
    pub sink: Option<Arc<dyn RunSink>>,
}

/// The compiled pipeline binary a run uses.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BinaryRef {
    pub path: PathBuf,
    /// `cached` or `compiled`.
    pub source: String,
    pub key: String,
}

impl From<&Compiled> for BinaryRef {
    fn from(c: &Compiled) -> Self {
        BinaryRef {
            path: c.binary.clone(),
            source: c.source.to_string(),
            key: c.key.clone(),
        }
    }
}

/// A run that is recorded and admitted: what `drive` needs to execute it.
pub struct Admitted {
    pub run_id: String,
    pub run_dir: PathBuf,
    rec: Recorder,
    created: i64,
    _slot: Option<SlotGuard>,
    /// Held by the process that owns the run (the host side); a runner container has none.
    _run_lock: Option<File>,
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
}

impl Admitted {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn run_dir(&self) -> &std::path::Path {
        &self.run_dir
    }

    /// Wait for the next SIGINT or SIGTERM (the host side of a run driven by another executor).
    /// Returns the signal's name.
    pub async fn next_signal(&mut self) -> &'static str {
        tokio::select! {
            _ = self.sigint.recv() => "SIGINT",
            _ = self.sigterm.recv() => "SIGTERM",
        }
    }

    /// The run's store (the same SQLite file a runner writes through its bind mount).
    pub fn store(&mut self) -> &mut Store {
        &mut self.rec.store
    }

    /// End the run from the outside (its runner could not finish it: OOM, killed, never
    /// started): jobs not yet finished are recorded `cancelled`, then the run, printed like the
    /// engine prints its own end.
    pub fn finish_from_outside(
        &mut self,
        status: RunStatus,
        reason: String,
    ) -> Result<ExitCode, EngineError> {
        let now = now_ms();
        let run_id = self.run_id.clone();
        for job in self.rec.store.jobs(&run_id)? {
            if !job.state.is_terminal() {
                self.rec.store.job_finished(
                    &run_id,
                    &job.job_id,
                    JobState::Cancelled,
                    Some(&reason),
                    None,
                    None,
                    now,
                )?;
            }
        }
        finish(&mut self.rec, status, Some(reason), self.created)
    }
}

/// The outcome of admission: admitted, or already finished (declined or cancelled while queued).
pub enum Admission {
    Admitted(Box<Admitted>),
    Done(ExitCode),
}

/// Admission through box slots (`--sw-box-slots`).
pub struct BoxGate {
    pub slots: BoxSlots,
    /// Fail at once instead of queueing when every slot is taken.
    pub no_wait: bool,
}

/// How often the stderr line repeats while a run waits for a box slot.
const WAITING_LINE_EVERY: Duration = Duration::from_secs(5);
/// How often a queued run looks for a free slot; a freed slot is taken within about this long.
const SLOT_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    BoxSlots(#[from] BoxSlotError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `run-YYYYMMDD-HHMMSS-xxxxxx` in UTC: sorts by time, random enough for many runs a second.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let when = sparkwing_core::time::format_utc(now.as_millis() as i64, "%Y%m%d-%H%M%S");
    let mut seed = now.subsec_nanos() as u64 ^ ((std::process::id() as u64) << 32);
    // splitmix64 step: cheap, and good enough to spread ids of runs started in the same second.
    seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("run-{when}-{:06x}", z & 0xff_ffff)
}

/// Records events to the store and prints them, masking secrets on the way.
struct Recorder {
    store: Store,
    run_id: String,
    masker: Masker,
    term: Terminal,
    sink: Option<Arc<dyn RunSink>>,
}

impl Recorder {
    fn event(
        &mut self,
        job: Option<&str>,
        kind: &str,
        payload: Value,
        human: Option<String>,
    ) -> Result<(), EngineError> {
        let ts = now_ms();
        let payload = self.masker.mask_json(&payload);
        self.store
            .append_event(&self.run_id, job, kind, &payload, ts)?;
        let human = human.map(|h| self.masker.mask(&h).into_owned());
        self.term.event(ts, kind, job, &payload, human);
        Ok(())
    }

    /// Tell the sink a job's state (no-op without a sink).
    fn sink_state(&self, job: &str, state: JobStateReport) {
        if let Some(s) = &self.sink {
            s.job_state(job, state);
        }
    }
}

struct JobRuntime {
    log: JobLog,
    control: Option<watch::Sender<Control>>,
    started_ms: i64,
    outputs: BTreeMap<String, String>,
    /// For an await job's attempt: what its child run printed so far.
    child: Option<subpipeline::ChildTracker>,
    /// The attempt's `command_failed` control record: the job failed because a command did, and
    /// is recorded with that command's exit code or signal.
    failed_command: Option<FailedCommand>,
}

/// How the command that failed a job ended (from the SDK's `command_failed` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailedCommand {
    Exited(i32),
    Signalled(i32),
}

impl FailedCommand {
    fn from_record(v: &Value) -> Option<FailedCommand> {
        let int = |k: &str| v[k].as_i64().and_then(|n| i32::try_from(n).ok());
        match (int("exit_code"), int("signal")) {
            (Some(c), _) if c != 0 => Some(FailedCommand::Exited(c)),
            (_, Some(s)) if s > 0 => Some(FailedCommand::Signalled(s)),
            _ => None,
        }
    }

    /// The job's reason and exit code.
    fn reason(self) -> (String, Option<i32>) {
        match self {
            FailedCommand::Exited(c) => (format!("exit code {c}"), Some(c)),
            FailedCommand::Signalled(s) => (format!("killed by signal {s}"), None),
        }
    }
}

enum Msg {
    Line {
        job: usize,
        attempt: u32,
        line: Line,
    },
    AttemptEnded {
        job: usize,
        end: ProcessEnd,
    },
    RetryDue {
        job: usize,
        attempt: u32,
    },
}

fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The run's lock: held for the life of this process, so readers can tell a live run from one
/// whose process died (they can take the lock only in the second case).
fn take_run_lock(run_dir: &std::path::Path) -> Result<File, EngineError> {
    let path = Home::run_lock(run_dir);
    let f = File::create(&path).map_err(io_err(format!("create {}", path.display())))?;
    f.lock()
        .map_err(io_err(format!("lock {}", path.display())))?;
    Ok(f)
}

/// Execute a run from start to end in this process; returns the process exit code.
pub async fn execute(req: RunRequest) -> Result<ExitCode, EngineError> {
    execute_with_id(req).await.map(|(_, code)| code)
}

/// [`execute`], also returning the id of the run it recorded (`None` when admission ended it
/// before it was planned).
pub async fn execute_with_id(req: RunRequest) -> Result<(Option<String>, ExitCode), EngineError> {
    match admit(&req).await? {
        Admission::Admitted(a) => {
            let id = a.run_id.clone();
            drive(&req, *a).await.map(|code| (Some(id), code))
        }
        Admission::Done(code) => Ok((None, code)),
    }
}

/// The run's secret values, each with what it is called: `.secret(NAME)` environment variables
/// (`NAME`), then secret args (`--name`).
fn secrets_of(req: &RunRequest) -> Vec<(String, String)> {
    let mut secrets: Vec<(String, String)> = req
        .info
        .secrets
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
        .collect();
    secrets.extend(
        sparkwing_core::args::secret_values(&req.info.args, &req.args)
            .into_iter()
            .map(|(name, v)| (format!("--{name}"), v)),
    );
    secrets
}

fn masker_for(req: &RunRequest) -> Masker {
    Masker::new(secrets_of(req).into_iter().map(|(_, v)| v))
}

/// Record (and show) a warning for each secret too short to be masked.
fn warn_unmasked(rec: &mut Recorder, req: &RunRequest) -> Result<(), EngineError> {
    let secrets = secrets_of(req);
    let named = secrets.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    for u in mask::unmasked(named) {
        let message = u.to_string();
        if rec.term.format == Format::Json {
            // stdout is for machines then; a person reads stderr.
            eprintln!("warning: {message}");
        }
        let human = format!("{} {message}", rec.term.yellow("warning:"));
        rec.event(
            None,
            "secret_not_masked",
            json!({"secret": u.name, "line": u.line, "chars": u.chars, "min_chars": mask::MIN_SECRET_LEN, "message": message}),
            Some(human),
        )?;
    }
    Ok(())
}

/// Continue a run the host already recorded and admitted (inside a runner container).
pub async fn resume(req: &RunRequest, run_id: &str) -> Result<ExitCode, EngineError> {
    let sigint = signal(SignalKind::interrupt()).map_err(io_err("install SIGINT handler"))?;
    let sigterm = signal(SignalKind::terminate()).map_err(io_err("install SIGTERM handler"))?;
    let store = Store::open(&req.home.root)?;
    let run = store.find_run(run_id)?;
    let rec = Recorder {
        store,
        run_id: run.id.clone(),
        masker: masker_for(req),
        term: Terminal::new(req.format, &run.id),
        sink: req.sink.clone(),
    };
    let admitted = Admitted {
        run_id: run.id.clone(),
        run_dir: PathBuf::from(&run.log_dir),
        rec,
        created: run.started_at.unwrap_or(run.created_at),
        _slot: None,
        _run_lock: None,
        sigint,
        sigterm,
    };
    drive(req, admitted).await
}

/// Admission (box slots) and recording: everything before the plan.
pub async fn admit(req: &RunRequest) -> Result<Admission, EngineError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("install SIGINT handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("install SIGTERM handler"))?;
    // Admission first: a run that may not start is not recorded at all with --sw-no-wait.
    let mut _slot: Option<SlotGuard> = None;
    let mut ticket: Option<Ticket> = None;
    if let Some(gate) = &req.box_slots {
        match gate.slots.try_acquire_now()? {
            Some(g) => _slot = Some(g),
            None if gate.no_wait => {
                eprintln!("error: box slots full (max={})", gate.slots.max());
                return Ok(Admission::Done(ExitCode::BoxSlotsFull));
            }
            None => ticket = Some(gate.slots.enqueue()?),
        }
    }
    let run_id = new_run_id();
    let run_dir = req.home.run_dir(&run_id);
    std::fs::create_dir_all(&run_dir).map_err(io_err(format!("create {}", run_dir.display())))?;
    let run_lock = take_run_lock(&run_dir)?;
    let masker = masker_for(req);
    let redacted = sparkwing_core::args::redacted(&req.info.args, &req.args);
    let git = crate::git::read(&req.repo_root);
    let mut store = Store::open(&req.home.root)?;
    let created = now_ms();
    store.create_run(&NewRun {
        id: run_id.clone(),
        pipeline: req.pipeline.clone(),
        entrypoint: req.info.entrypoint.clone(),
        status: if ticket.is_some() {
            RunStatus::Queued
        } else {
            RunStatus::Running
        },
        args_json: Value::Object(redacted.clone()).to_string(),
        repo_root: req.repo_root.to_string_lossy().into_owned(),
        git_branch: git.branch,
        git_commit: git.commit,
        host: host_name(),
        user: user_name(),
        pid: std::process::id() as i64,
        runner: req.runner.clone(),
        created_at: created,
        started_at: if ticket.is_some() {
            None
        } else {
            Some(created)
        },
        finished_at: None,
        exit_code: None,
        error: None,
        log_dir: run_dir.to_string_lossy().into_owned(),
    })?;
    let mut rec = Recorder {
        store,
        run_id: run_id.clone(),
        masker,
        term: Terminal::new(req.format, &run_id),
        sink: req.sink.clone(),
    };
    let start_line = format!(
        "{} {} {}",
        rec.term.dim("run"),
        run_id,
        rec.term
            .dim(&format!("({}, binary {})", req.pipeline, req.binary.source))
    );
    rec.event(
        None,
        "run_started",
        json!({"pipeline": req.pipeline, "args": redacted, "binary": req.binary.source, "binary_key": req.binary.key, "runner": req.runner, "log_dir": run_dir}),
        Some(start_line),
    )?;
    warn_unmasked(&mut rec, req)?;

    if let (Some(gate), true) = (&req.box_slots, ticket.is_some()) {
        let waited_from = std::time::Instant::now();
        rec.event(
            None,
            "queued",
            json!({"max": gate.slots.max(), "active": gate.slots.active()}),
            None,
        )?;
        let mut next_line = tokio::time::Instant::now();
        loop {
            if let Some(g) = gate.slots.try_acquire(&mut ticket)? {
                _slot = Some(g);
                break;
            }
            if tokio::time::Instant::now() >= next_line {
                eprintln!(
                    "waiting for box slot ({} active, max {})",
                    gate.slots.active(),
                    gate.slots.max()
                );
                next_line += WAITING_LINE_EVERY;
            }
            let interrupted = tokio::select! {
                _ = tokio::time::sleep(SLOT_POLL) => false,
                _ = sigint.recv() => true,
                _ = sigterm.recv() => true,
            };
            if interrupted {
                // Leave the queue before recording, so the next run is not held up.
                ticket.take();
                let code = finish(
                    &mut rec,
                    RunStatus::Cancelled,
                    Some("cancelled while waiting for a box slot".into()),
                    created,
                )?;
                return Ok(Admission::Done(code));
            }
        }
        let now = now_ms();
        rec.store
            .set_run_status(&run_id, RunStatus::Running, now, None, None)?;
        rec.event(None, "admitted", json!({"waited_ms": waited_from.elapsed().as_millis() as u64, "slot": _slot.as_ref().map(|g| g.index)}), None)?;
    }

    Ok(Admission::Admitted(Box::new(Admitted {
        run_id,
        run_dir,
        rec,
        created,
        _slot,
        _run_lock: Some(run_lock),
        sigint,
        sigterm,
    })))
}

/// Plan and run the DAG of an admitted run, then record how it ended.
pub async fn drive(req: &RunRequest, admitted: Admitted) -> Result<ExitCode, EngineError> {
    let Admitted {
        run_id,
        run_dir,
        mut rec,
        created,
        _slot,
        _run_lock,
        mut sigint,
        mut sigterm,
    } = admitted;
    let args_json = Value::Object(req.args.clone()).to_string();
    // Plan, unless interrupted first.
    let plan = tokio::select! {
        p = plan(req, &args_json) => p,
        _ = sigint.recv() => Err("cancelled while planning".to_string()),
        _ = sigterm.recv() => Err("cancelled while planning".to_string()),
    };
    let plan = match plan {
        Ok(p) => p,
        Err(msg) => {
            let status = if msg.starts_with("cancelled") {
                RunStatus::Cancelled
            } else {
                RunStatus::Failed
            };
            return finish(&mut rec, status, Some(format!("plan: {msg}")), created);
        }
    };
    let validated = match dag::validate(&plan) {
        Ok(v) => v,
        Err(e) => {
            rec.event(None, "plan_invalid", json!({"error": e.to_string()}), None)?;
            return finish(
                &mut rec,
                RunStatus::Failed,
                Some(format!("invalid plan: {e}")),
                created,
            );
        }
    };
    let new_jobs: Vec<NewJob> = validated
        .jobs
        .iter()
        .map(|j| NewJob {
            id: j.id.clone(),
            needs: j.needs.clone(),
            optional: j.optional,
            finally: j.finally,
        })
        .collect();
    rec.store.insert_jobs(&run_id, &new_jobs)?;
    for j in &new_jobs {
        rec.sink_state(
            &j.id,
            sink::job_state_report(JobState::Pending, 0, None, None, None, None),
        );
    }
    rec.term
        .set_job_names(validated.jobs.iter().map(|j| j.id.as_str()));
    rec.event(
        None,
        "plan",
        json!({"jobs": validated.jobs.iter().map(|j| json!({"id": j.id, "needs": j.needs})).collect::<Vec<_>>()}),
        None,
    )?;

    let mut jobs: Vec<JobRuntime> = Vec::with_capacity(validated.jobs.len());
    for j in &validated.jobs {
        let path = Home::job_log(&run_dir, &j.id);
        jobs.push(JobRuntime {
            log: JobLog::open(&path).map_err(io_err(format!("open {}", path.display())))?,
            control: None,
            started_ms: 0,
            outputs: BTreeMap::new(),
            child: None,
            failed_command: None,
        });
    }
    let mut sched = Scheduler::new(validated, req.workers);
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut ctx = Ctx {
        supervisors: process::Supervisors::default(),
        req,
        run_id: &run_id,
        run_dir: &run_dir,
        args_json: &args_json,
        tx: tx.clone(),
    };
    let actions = sched.poll();
    apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
    let mut interrupts = 0u32;
    while !sched.is_done() {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    Msg::Line { job, attempt, line } => on_line(&mut rec, &sched, &mut jobs, job, attempt, line)?,
                    Msg::AttemptEnded { job, end } => {
                        let actions = on_attempt_end(&mut ctx, &mut rec, &mut sched, &mut jobs, job, end)?;
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                    Msg::RetryDue { job, attempt } => {
                        let actions = if sched.is_cancelling() {
                            sched.attempt_finished(job, AttemptOutcome::Killed)
                        } else {
                            vec![Action::Start { job, attempt }]
                        };
                        if sched.job(job).state == JobState::Cancelled {
                            record_terminal(&mut rec, &sched, &mut jobs, job, None)?;
                        }
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                }
            }
            _ = sigint.recv() => {
                interrupts += 1;
                on_interrupt(&mut ctx, &mut rec, &mut sched, &mut jobs, interrupts, "SIGINT")?;
            }
            _ = sigterm.recv() => {
                interrupts += 1;
                on_interrupt(&mut ctx, &mut rec, &mut sched, &mut jobs, interrupts, "SIGTERM")?;
            }
        }
        if interrupts >= 2 {
            // Second interrupt: everything was killed; do not wait for anything else.
            return finish(
                &mut rec,
                RunStatus::Cancelled,
                Some("cancelled (killed at once by a second interrupt)".into()),
                created,
            );
        }
    }
    drop(tx);
    let (status, error) = sched.outcome();
    finish(&mut rec, status, error, created)
}

struct Ctx<'a> {
    supervisors: process::Supervisors,
    req: &'a RunRequest,
    run_id: &'a str,
    run_dir: &'a std::path::Path,
    args_json: &'a str,
    tx: mpsc::UnboundedSender<Msg>,
}

fn finish(
    rec: &mut Recorder,
    status: RunStatus,
    error: Option<String>,
    started: i64,
) -> Result<ExitCode, EngineError> {
    let error = error.map(|e| rec.masker.mask(&e).into_owned());
    let now = now_ms();
    let code = status.exit_code();
    rec.store
        .set_run_status(&rec.run_id, status, now, Some(code), error.as_deref())?;
    let took = human_duration(now - started);
    let human = match status {
        RunStatus::Success => format!(
            "{} run {} succeeded in {took}",
            rec.term.green("✓"),
            rec.run_id
        ),
        RunStatus::Cancelled => format!(
            "{} run {} cancelled after {took}",
            rec.term.yellow("■"),
            rec.run_id
        ),
        _ => format!(
            "{} run {} failed after {took}: {}",
            rec.term.red("✗"),
            rec.run_id,
            error.clone().unwrap_or_default()
        ),
    };
    rec.event(
        None,
        "run_finished",
        json!({"status": status.as_str(), "error": error, "exit_code": code, "duration_ms": now - started}),
        Some(human),
    )?;
    if let Some(s) = &rec.sink {
        s.run_finished(RunPhase::from_status(status), error.clone());
        // The end of the run: the only place the engine waits for its sink.
        let report = s.flush(std::time::Instant::now() + SINK_FLUSH_DEADLINE);
        if !report.is_complete() {
            eprintln!("warning: run {}: {report}", rec.run_id);
        }
    }
    Ok(ExitCode::of_run(status))
}

/// Ask the binary for the plan.
async fn plan(req: &RunRequest, args_json: &str) -> Result<PlanDoc, String> {
    let out = tokio::process::Command::new(&req.binary.path)
        .arg("plan")
        .arg(&req.info.entrypoint)
        .env("SPARKWING_PROTOCOL", PROTOCOL_VERSION.to_string())
        .env("SPARKWING_ARGS", args_json)
        .env("SPARKWING_PIPELINE", &req.pipeline)
        .current_dir(&req.repo_root)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot start the pipeline binary: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = stderr.trim();
        return Err(if msg.is_empty() {
            format!("the plan function failed ({})", out.status)
        } else {
            msg.to_string()
        });
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the pipeline binary printed an invalid plan: {e}"))
}

fn apply(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    actions: Vec<Action>,
) -> Result<(), EngineError> {
    for action in actions {
        match action {
            Action::Start { job, attempt } => start(ctx, rec, sched, jobs, job, attempt)?,
            Action::Retry {
                job,
                attempt,
                after_ms,
            } => {
                let id = sched.plan().jobs[job].id.clone();
                let reason = sched.job(job).reason.clone().unwrap_or_default();
                let human = format!(
                    "{} {id} attempt {} failed ({reason}); retrying in {}",
                    rec.term.yellow("↻"),
                    attempt - 1,
                    human_duration(after_ms as i64)
                );
                rec.event(
                    Some(&id),
                    "job_retry",
                    json!({"attempt": attempt, "after_ms": after_ms, "reason": reason}),
                    Some(human),
                )?;
                let reason = rec.masker.mask(&reason).into_owned();
                rec.sink_state(
                    &id,
                    sink::job_state_report(
                        ReportedJobState::Retrying,
                        attempt - 1,
                        Some(jobs[job].started_ms),
                        None,
                        None,
                        Some(&reason),
                    ),
                );
                let tx = ctx.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    let _ = tx.send(Msg::RetryDue { job, attempt });
                });
            }
            Action::Settled { job } => record_terminal(rec, sched, jobs, job, None)?,
        }
    }
    Ok(())
}

fn start(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    attempt: u32,
) -> Result<(), EngineError> {
    let spec = &sched.plan().jobs[job];
    let now = now_ms();
    rec.store.job_started(ctx.run_id, &spec.id, attempt, now)?;
    if attempt == 1 {
        jobs[job].started_ms = now;
    }
    let human = format!(
        "{} {}{}",
        rec.term.dim("▶"),
        spec.id,
        if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        }
    );
    rec.event(
        Some(&spec.id),
        "job_started",
        json!({"attempt": attempt}),
        Some(human),
    )?;
    rec.sink_state(
        &spec.id,
        sink::job_state_report(
            JobState::Running,
            attempt,
            Some(jobs[job].started_ms),
            None,
            None,
            None,
        ),
    );

    let mut needs_outputs = Map::new();
    for &n in &sched.plan().needs[job] {
        let outputs: Map<String, Value> = jobs[n]
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        needs_outputs.insert(sched.plan().jobs[n].id.clone(), Value::Object(outputs));
    }
    let outputs_file = ctx.run_dir.join(format!("{}.outputs.json", spec.id));
    let _ = std::fs::remove_file(&outputs_file);
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend([
        (
            "SPARKWING_PROTOCOL".to_string(),
            PROTOCOL_VERSION.to_string(),
        ),
        ("SPARKWING_ARGS".to_string(), ctx.args_json.to_string()),
        ("SPARKWING_RUN_ID".to_string(), ctx.run_id.to_string()),
        ("SPARKWING_PIPELINE".to_string(), ctx.req.pipeline.clone()),
        ("SPARKWING_JOB".to_string(), spec.id.clone()),
        ("SPARKWING_ATTEMPT".to_string(), attempt.to_string()),
        (
            "SPARKWING_WORKSPACE".to_string(),
            ctx.req.repo_root.to_string_lossy().into_owned(),
        ),
        (
            "SPARKWING_OUTPUTS_FILE".to_string(),
            outputs_file.to_string_lossy().into_owned(),
        ),
        (
            "SPARKWING_NEEDS_OUTPUTS".to_string(),
            Value::Object(needs_outputs).to_string(),
        ),
    ]);
    let cwd = match &spec.workdir {
        Some(w) => ctx.req.repo_root.join(w),
        None => ctx.req.repo_root.clone(),
    };
    let attempt_spec = match &spec.awaits {
        // An await job: the child pipeline runs as `sparkwing run` (or `pipeline trigger`).
        Some(a) => {
            jobs[job].child = Some(subpipeline::ChildTracker::new(a));
            subpipeline::attempt_spec(
                a,
                &ctx.req.pipeline,
                ctx.run_id,
                &spec.id,
                &ctx.req.repo_root,
                spec.env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                spec.timeout_ms.map(Duration::from_millis),
            )
        }
        None => {
            // A job body that starts `sparkwing run` itself passes the ancestry on too.
            env.push((
                sparkwing_core::subpipeline::CHAIN_ENV.to_string(),
                sparkwing_core::subpipeline::extend_chain(
                    &subpipeline::own_chain(),
                    &ctx.req.pipeline,
                ),
            ));
            AttemptSpec {
                program: ctx.req.binary.path.clone(),
                args: vec![
                    "job".into(),
                    ctx.req.info.entrypoint.clone(),
                    spec.id.clone(),
                ],
                cwd,
                env,
                timeout: spec.timeout_ms.map(Duration::from_millis),
                stop_grace: process::STOP_GRACE,
                merge_output: true,
            }
        }
    };
    let initial = if sched.is_cancelling() && !spec.finally {
        Control::Stop
    } else {
        Control::Run
    };
    let (control_tx, control_rx) = watch::channel(initial);
    jobs[job].control = Some(control_tx);
    let tx = ctx.tx.clone();
    let supervisors = ctx.supervisors.clone();
    tokio::spawn(async move {
        let (line_tx, mut line_rx) = mpsc::unbounded_channel::<Line>();
        let forward_tx = tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(line) = line_rx.recv().await {
                if forward_tx.send(Msg::Line { job, attempt, line }).is_err() {
                    return;
                }
            }
        });
        let end = process::run_attempt(attempt_spec, line_tx, control_rx, supervisors).await;
        let _ = forward.await;
        let _ = tx.send(Msg::AttemptEnded { job, end });
    });
    Ok(())
}

fn on_line(
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    attempt: u32,
    line: Line,
) -> Result<(), EngineError> {
    let id = sched.plan().jobs[job].id.clone();
    let mut line = line;
    if let Some(child) = &mut jobs[job].child {
        match child.see(&line) {
            subpipeline::Seen::Log(stream, text) => line = Line { stream, text },
            subpipeline::Seen::Nothing => return Ok(()),
            subpipeline::Seen::Child(run) => {
                let (pipeline, profile) = (child.pipeline.clone(), child.profile.clone());
                rec.store.set_job_child(&rec.run_id.clone(), &id, &run)?;
                let human = format!(
                    "{} {id} awaits pipeline {pipeline} as run {run}",
                    rec.term.dim("↳")
                );
                return rec.event(
                    Some(&id),
                    "child_run",
                    json!({"child_run": run, "pipeline": pipeline, "profile": profile}),
                    Some(human),
                );
            }
        }
        // The child's lines are log lines, never control records of this job.
        let text = rec.masker.mask(&line.text).into_owned();
        return log_line(rec, jobs, job, &id, attempt, line.stream, text);
    }
    if line.stream == process::Stream::Stdout {
        if let Some(rest) = line.text.strip_prefix(CONTROL_PREFIX) {
            if let Ok(v) = serde_json::from_str::<Value>(rest) {
                let kind = v["event"].as_str().unwrap_or("control").to_string();
                let human = match kind.as_str() {
                    "step_start" => Some(format!(
                        "{} {id} › {}",
                        rec.term.dim("·"),
                        v["step"].as_str().unwrap_or("?")
                    )),
                    "step_end" if v["ok"] == Value::Bool(false) => Some(format!(
                        "{} {id} › {} failed",
                        rec.term.red("·"),
                        v["step"].as_str().unwrap_or("?")
                    )),
                    _ => None,
                };
                if kind == "command_failed" {
                    jobs[job].failed_command = FailedCommand::from_record(&v);
                }
                rec.event(Some(&id), &kind, v, human)?;
                return Ok(());
            }
        }
    }
    let text = rec.masker.mask(&line.text).into_owned();
    log_line(rec, jobs, job, &id, attempt, line.stream, text)
}

/// Append one (masked) log line to a job's log, the terminal and the sink.
fn log_line(
    rec: &mut Recorder,
    jobs: &mut [JobRuntime],
    job: usize,
    id: &str,
    attempt: u32,
    stream: process::Stream,
    text: String,
) -> Result<(), EngineError> {
    let ts = now_ms();
    let seq = jobs[job]
        .log
        .append(ts, attempt, stream.as_str(), &text)
        .map_err(io_err(format!("write log of job {id}")))?;
    rec.term.log_line(id, job, ts, seq, stream.as_str(), &text);
    if let Some(s) = &rec.sink {
        s.log_line(SinkLine {
            job: id.to_string(),
            seq,
            ts_ms: ts,
            stream: stream.as_str().to_string(),
            line: text,
        });
    }
    Ok(())
}

fn on_attempt_end(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    end: ProcessEnd,
) -> Result<Vec<Action>, EngineError> {
    jobs[job].control = None;
    let spec = sched.plan().jobs[job].clone();
    let failed_command = jobs[job].failed_command.take();
    let (mut outcome, exit_code) = match &end {
        ProcessEnd::Exited(0) => (AttemptOutcome::Success, Some(0)),
        // The job failed because a command did: record the command's own status.
        ProcessEnd::Exited(_) if failed_command.is_some() => {
            let (reason, code) = failed_command
                .map(FailedCommand::reason)
                .unwrap_or_default();
            (AttemptOutcome::Failed { reason }, code)
        }
        ProcessEnd::Exited(c) => (
            AttemptOutcome::Failed {
                reason: format!("exit code {c}"),
            },
            Some(*c),
        ),
        ProcessEnd::Signalled(s) => (
            AttemptOutcome::Failed {
                reason: format!("killed by signal {s}"),
            },
            None,
        ),
        ProcessEnd::TimedOut => (
            AttemptOutcome::Failed {
                reason: format!(
                    "timeout after {}",
                    human_duration(spec.timeout_ms.unwrap_or(0) as i64)
                ),
            },
            None,
        ),
        ProcessEnd::Stopped => (AttemptOutcome::Killed, None),
        ProcessEnd::SpawnFailed(m) => (AttemptOutcome::Failed { reason: m.clone() }, None),
    };
    // An await job fails with its child's reason.
    if let (AttemptOutcome::Failed { reason }, Some(child)) = (&mut outcome, jobs[job].child.take())
    {
        if let Some(r) = child.reason(&end) {
            *reason = r;
        }
    }
    // Outputs may hold secrets: read them into memory, then remove the file (only the masked
    // copy is stored).
    let path = ctx.run_dir.join(format!("{}.outputs.json", spec.id));
    let outputs_text = std::fs::read_to_string(&path).ok();
    let _ = std::fs::remove_file(&path);
    if outcome == AttemptOutcome::Success {
        if let Some(text) = outputs_text {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text) {
                jobs[job].outputs = map
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect();
            }
        }
    }
    let actions = sched.attempt_finished(job, outcome);
    if sched.job(job).state.is_terminal() {
        record_terminal(rec, sched, jobs, job, exit_code)?;
    }
    Ok(actions)
}

/// Store and print a job's terminal state.
fn record_terminal(
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    exit_code: Option<i32>,
) -> Result<(), EngineError> {
    let spec = &sched.plan().jobs[job];
    let progress = sched.job(job);
    let now = now_ms();
    let outputs = if jobs[job].outputs.is_empty() {
        None
    } else {
        let v: Map<String, Value> = jobs[job]
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Some(rec.masker.mask_json(&Value::Object(v)).to_string())
    };
    let reason = progress
        .reason
        .as_deref()
        .map(|r| rec.masker.mask(r).into_owned());
    rec.store.job_finished(
        &rec.run_id.clone(),
        &spec.id,
        progress.state,
        reason.as_deref(),
        exit_code,
        outputs.as_deref(),
        now,
    )?;
    let took = if jobs[job].started_ms > 0 {
        human_duration(now - jobs[job].started_ms)
    } else {
        String::new()
    };
    let why = reason.clone().map(|r| format!(": {r}")).unwrap_or_default();
    let optional = if spec.optional && progress.state == JobState::Failed {
        " (optional)"
    } else {
        ""
    };
    let human = match progress.state {
        JobState::Success => format!(
            "{} {} {}",
            rec.term.green("✓"),
            spec.id,
            rec.term.dim(&took)
        ),
        JobState::Failed => format!(
            "{} {}{optional} {}{why}",
            rec.term.red("✗"),
            spec.id,
            rec.term.dim(&took)
        ),
        JobState::Skipped => format!("{} {} skipped{why}", rec.term.dim("○"), spec.id),
        _ => format!(
            "{} {} {}{why}",
            rec.term.yellow("■"),
            spec.id,
            progress.state
        ),
    };
    rec.sink_state(
        &spec.id,
        sink::job_state_report(
            progress.state,
            progress.attempt,
            Some(jobs[job].started_ms),
            Some(now),
            exit_code,
            reason.as_deref(),
        ),
    );
    let kind = match progress.state {
        JobState::Success => "job_succeeded",
        JobState::Failed => "job_failed",
        JobState::Skipped => "job_skipped",
        _ => "job_cancelled",
    };
    rec.event(
        Some(&spec.id),
        kind,
        json!({"state": progress.state.as_str(), "reason": reason, "attempt": progress.attempt, "exit_code": exit_code}),
        Some(human),
    )
}

fn on_interrupt(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    count: u32,
    signal_name: &str,
) -> Result<(), EngineError> {
    if count == 1 {
        let (stop, actions) = sched.cancel();
        let human = format!(
            "{} {signal_name}: cancelling the run (running jobs get SIGTERM; finally jobs still run). Press Ctrl-C again to kill at once.",
            rec.term.yellow("■")
        );
        eprintln!("{human}");
        rec.event(None, "run_cancelling", json!({"signal": signal_name}), None)?;
        for j in stop {
            if let Some(c) = &jobs[j].control {
                let _ = c.send(Control::Stop);
            }
        }
        apply(ctx, rec, sched, jobs, actions)?;
    } else {
        eprintln!(
            "{} second interrupt: killing every job now",
            rec.term.red("■")
        );
        // A local sub-pipeline's jobs are in process groups of their own: its `sparkwing run`
        // kills them (its own second interrupt) before this one kills it.
        subpipeline::kill_local_children(
            &rec.store,
            jobs.iter().filter_map(|rt| rt.child.as_ref()),
        );
        // Kill here, synchronously: the run ends right after this, and the attempts' tasks may
        // never get to act on their Kill message.
        process::kill_all(&ctx.supervisors);
        let now = now_ms();
        for (j, rt) in jobs.iter_mut().enumerate() {
            if let Some(c) = &rt.control {
                let _ = c.send(Control::Kill);
            }
            let state = sched.job(j).state;
            if !state.is_terminal() {
                let id = sched.plan().jobs[j].id.clone();
                rec.store.job_finished(
                    ctx.run_id,
                    &id,
                    JobState::Cancelled,
                    Some("killed"),
                    None,
                    None,
                    now,
                )?;
                rec.sink_state(
                    &id,
                    sink::job_state_report(
                        JobState::Cancelled,
                        sched.job(j).attempt,
                        Some(rt.started_ms),
                        Some(now),
                        None,
                        Some("killed"),
                    ),
                );
            }
        }
        rec.event(None, "run_killed", json!({"signal": signal_name}), None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_look_right() {
        let id = new_run_id();
        assert!(id.starts_with("run-20"), "{id}");
        assert_eq!(id.len(), "run-20261127-120102-a1b2c3".len(), "{id}");
    }
}
