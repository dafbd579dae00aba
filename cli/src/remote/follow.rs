//! Following a remote run: each job's log over server-sent events (one thread per job, resumed
//! with `Last-Event-ID`), and the run itself polled for job states and its phase, until the run
//! is finished and every log is drained.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use sparkwing_api::wire::LogLine;
use sparkwing_api::{ApiClient, Flow, RemoteError, StreamEnd};
use sparkwing_core::reconcile::status::RunPhase;

/// How often the run is polled.
const POLL: Duration = Duration::from_millis(500);
/// Reconnects of a log stream in a row without a new line before giving up on it.
const RECONNECTS: u32 = 5;
/// After the run finished: how long to wait for the log streams to drain.
const DRAIN: Duration = Duration::from_secs(60);
/// How long the API may be unreachable while following before giving up.
const OUTAGE: Duration = Duration::from_secs(60);

/// How lines and states are printed.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// One JSON object per line (log lines and events) instead of `job │ line`.
    pub json: bool,
    /// Colours (pretty mode on a terminal).
    pub color: bool,
}

impl Style {
    pub fn detect(json: bool) -> Style {
        let out = crate::printer::Printer::json_if(json);
        Style {
            json: out.json(),
            color: out.color(),
        }
    }
}

const COLORS: [&str; 6] = ["36", "35", "33", "32", "34", "31"];

/// Prints what a follow sees, one lock per line (its colours and JSON as `printer::Printer` decides).
pub struct FollowPrinter {
    style: Style,
    run: String,
    jobs: Vec<String>,
    /// Prefix pretty lines with their job (`job │ line`).
    pub prefix: bool,
    /// Print job state and phase changes (not only log lines).
    pub events: bool,
}

impl FollowPrinter {
    pub fn new(style: Style, run: &str) -> FollowPrinter {
        FollowPrinter {
            style,
            run: run.to_string(),
            jobs: Vec::new(),
            prefix: true,
            events: true,
        }
    }

    fn index(&mut self, job: &str) -> usize {
        match self.jobs.iter().position(|j| j == job) {
            Some(i) => i,
            None => {
                self.jobs.push(job.to_string());
                self.jobs.len() - 1
            }
        }
    }

    fn write(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }

    /// `job │ line`, or the line's JSON.
    pub fn line(&mut self, l: &LogLine) {
        if self.style.json {
            self.write(
                &json!({"run": self.run, "job": l.job, "seq": l.seq, "ts": l.ts, "stream": l.stream.as_str(), "line": l.line})
                    .to_string(),
            );
            return;
        }
        if !self.prefix {
            self.write(&l.line);
            return;
        }
        let i = self.index(&l.job);
        let name = if self.style.color {
            format!("\x1b[{}m{}\x1b[0m", COLORS[i % COLORS.len()], l.job)
        } else {
            l.job.clone()
        };
        self.write(&format!("{name} │ {}", l.line));
    }

    /// A job's new state: `· build running`.
    pub fn job_state(&mut self, job: &str, state: &Value) {
        if !self.events {
            return;
        }
        if self.style.json {
            self.write(
                &json!({"run": self.run, "event": "job_state", "job": job, "state": state})
                    .to_string(),
            );
            return;
        }
        let s = state
            .get("state")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| state.to_string());
        let mut text = format!("· {job} {s}");
        if let Some(r) = state.get("reason").and_then(Value::as_str) {
            text.push_str(&format!(" ({r})"));
        }
        self.write(&text);
    }

    /// The run's new phase: `run ci/build-1a2b3c4d: Running`.
    pub fn phase(&mut self, phase: RunPhase) {
        if !self.events {
            return;
        }
        if self.style.json {
            self.write(&json!({"run": self.run, "event": "phase", "phase": phase}).to_string());
        } else {
            self.write(&format!("run {}: {}", self.run, phase.phase_str()));
        }
    }
}

/// How a follow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The run finished with this phase and every log line was printed.
    Finished(RunPhase),
    /// `interrupted` was set (Ctrl-C) before the run finished.
    Interrupted,
}

enum Msg {
    Line(LogLine),
    Done {
        job: String,
        last: u64,
        result: Result<StreamEnd, RemoteError>,
    },
}

/// Which logs a follow prints.
#[derive(Debug, Clone, Default)]
pub struct Select {
    /// Only this job's log (default: every job's).
    pub job: Option<String>,
    /// Lines already printed per job: the follow starts after them.
    pub after: BTreeMap<String, u64>,
}

/// Follow run `ns/name` until it is finished and its logs are drained, or `interrupted` is set.
/// `api` is polled for the run; `logs` serves the log streams.
pub fn follow_run(
    api: &ApiClient,
    logs: &ApiClient,
    ns: &str,
    name: &str,
    select: &Select,
    printer: &mut FollowPrinter,
    interrupted: &AtomicBool,
) -> Result<Outcome, RemoteError> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut followed: BTreeSet<String> = BTreeSet::new();
    let mut running = 0usize;
    let mut states: BTreeMap<String, Value> = BTreeMap::new();
    // None until the first poll: its phase is always printed.
    let mut phase: Option<RunPhase> = None;
    // Lines seen per job, for a fallback read when a stream gave up.
    let mut seen: BTreeMap<String, u64> = select.after.clone();
    let mut failed_streams: Vec<(String, u64, RemoteError)> = Vec::new();
    let mut finished_at: Option<Instant> = None;
    let mut unreachable_since: Option<Instant> = None;
    let mut logs_served = true;
    let result = loop {
        if interrupted.load(Ordering::SeqCst) {
            break Outcome::Interrupted;
        }
        // The run: phase and job states. A few failures in a row to reach it are waited out.
        let run = match api.get_run(ns, name) {
            Ok(r) => {
                unreachable_since = None;
                r
            }
            Err(e) if e.is_unreachable() => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > OUTAGE {
                    return Err(e);
                }
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => return Err(e),
        };
        let now_phase = run.phase;
        if let Some(jobs) = &run.jobs {
            for (job, state) in jobs {
                if states.get(job) != Some(state) {
                    printer.job_state(job, state);
                    states.insert(job.clone(), state.clone());
                }
            }
        }
        if phase != Some(now_phase) {
            printer.phase(now_phase);
            phase = Some(now_phase);
        }
        let over = now_phase.is_terminal();
        // Logs: a stream per job that has one (an API without logs: job states only).
        let jobs_with_logs = if logs_served {
            match logs.log_jobs(ns, name) {
                Ok(j) => j,
                Err(RemoteError::Status { status: 404, .. }) => {
                    logs_served = false;
                    tracing::info!(
                        "note: {} serves no logs; following job states only",
                        logs.base_url()
                    );
                    Vec::new()
                }
                Err(e) if e.is_unreachable() => Vec::new(),
                Err(e) => return Err(e),
            }
        } else {
            Vec::new()
        };
        for job in jobs_with_logs {
            if select.job.as_ref().is_some_and(|j| *j != job) {
                continue;
            }
            if followed.insert(job.clone()) {
                let start = select.after.get(&job).copied().unwrap_or(0);
                running += 1;
                let (client, tx, stop) = (logs.clone(), tx.clone(), stop.clone());
                let (ns, name) = (ns.to_string(), name.to_string());
                std::thread::spawn(move || {
                    let mut last = start;
                    let result = client.follow_logs(&ns, &name, &job, start, RECONNECTS, |l| {
                        last = l.seq;
                        if stop.load(Ordering::SeqCst) || tx.send(Msg::Line(l)).is_err() {
                            return Flow::Stop;
                        }
                        Flow::Continue
                    });
                    let result = result.map(|(end, l)| {
                        last = l;
                        end
                    });
                    let _ = tx.send(Msg::Done { job, last, result });
                });
            }
        }
        if over && finished_at.is_none() {
            finished_at = Some(Instant::now());
        }
        // Print what arrives until the next poll.
        let until = Instant::now() + POLL;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || interrupted.load(Ordering::SeqCst) {
                break;
            }
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(Msg::Line(l)) => {
                    seen.insert(l.job.clone(), l.seq);
                    printer.line(&l);
                }
                Ok(Msg::Done { job, last, result }) => {
                    running -= 1;
                    if let Err(e) = result {
                        failed_streams.push((job, last, e));
                    }
                }
                Err(_) => {}
            }
        }
        if over && running == 0 {
            break Outcome::Finished(now_phase);
        }
        if finished_at.is_some_and(|t| t.elapsed() > DRAIN) {
            break Outcome::Finished(now_phase);
        }
    };
    stop.store(true, Ordering::SeqCst);
    // Streams that gave up: read what they missed once, now that the run is over.
    if let Outcome::Finished(_) = &result {
        for (job, _, e) in failed_streams {
            let after = seen.get(&job).copied().unwrap_or(0);
            match logs.read_logs(ns, name, &job, after) {
                Ok(lines) => lines.iter().for_each(|l| printer.line(l)),
                Err(_) => return Err(e),
            }
        }
    }
    Ok(result)
}

/// On Ctrl-C (SIGINT) print `message` to stderr and exit 130, from a small thread: following
/// stops at once, and nothing is cancelled. Returns once the handler is in place.
pub fn exit_on_ctrl_c(message: String) {
    use tokio::signal::unix::SignalKind;
    sparkwing_engine::runtime::on_signal(&[SignalKind::interrupt()], move || {
        eprintln!();
        eprintln!("{message}");
        std::process::exit(crate::exit::ExitCode::Cancelled.code());
    });
}
