//! One attempt of one job: the pipeline binary under a supervisor (`supervisor.rs`) that keeps
//! everything the job starts below it, its output streamed line by line, stopped on timeout or
//! cancel through the supervisor.

use super::supervisor;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

/// Supervisors of the attempts running now, so a second Ctrl-C can kill them all at once from
/// the engine's loop, without waiting for each attempt's task to act.
pub type Supervisors = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i32>>>;

/// Kill every live attempt and everything it started.
pub fn kill_all(supervisors: &Supervisors) {
    if let Ok(g) = supervisors.lock() {
        for &pid in g.iter() {
            signal(Pid::from_raw(pid), supervisor::KILL_SIGNAL);
        }
    }
}

/// How long a stopped job gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a job's output is still read once its processes are gone. Only a process outside the
/// job's tree that holds a copy of its output pipe (passed over a socket) could keep it open.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A line a job printed.
#[derive(Debug)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
}

pub struct AttemptSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when stopped ([`STOP_GRACE`] for a job's process; longer for
    /// a sub-pipeline's `sparkwing`, so it can stop its own jobs first).
    pub stop_grace: Duration,
    /// stdout and stderr as one pipe, as on a terminal, so the log keeps the order in which lines
    /// were written (two pipes cannot tell which of two lines came first). Every line is then
    /// recorded as `stdout`. Off for a sub-pipeline's `sparkwing`, whose stdout carries records.
    pub merge_output: bool,
}

/// How an attempt's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    /// Stopped because the run was cancelled.
    Stopped,
    SpawnFailed(String),
    /// The job's caches or artifacts failed it (an artifact to consume or publish), before the
    /// process started or after it succeeded (`job_storage.rs`).
    StorageFailed(String),
}

/// What the engine can tell a running attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    /// Graceful: SIGTERM, then SIGKILL after the grace period.
    Stop,
    /// At once: SIGKILL.
    Kill,
}

fn signal(pid: Pid, sig: Signal) {
    // ESRCH (already gone) is fine: that is what we wanted.
    let _ = kill(pid, sig);
}

/// Run one attempt; every line goes to `lines`. Returns once the process has exited and its
/// output has been fully read.
pub async fn run_attempt(
    spec: AttemptSpec,
    lines: mpsc::UnboundedSender<Line>,
    mut control: watch::Receiver<Control>,
    supervisors: Supervisors,
) -> ProcessEnd {
    if !spec.cwd.is_dir() {
        return ProcessEnd::SpawnFailed(format!(
            "working directory {} does not exist",
            spec.cwd.display()
        ));
    }
    let mut cmd = Command::from(supervisor::command(&spec.program, &spec.args));
    cmd.current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        // Its own process group: a Ctrl-C on the terminal reaches the engine, which decides.
        .process_group(0);
    let merged = if spec.merge_output {
        match std::io::pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w))) {
            Ok((r, w1, w2)) => {
                cmd.stdout(Stdio::from(w1)).stderr(Stdio::from(w2));
                Some(r)
            }
            Err(e) => return ProcessEnd::SpawnFailed(format!("create the output pipe: {e}")),
        }
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        None
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ProcessEnd::SpawnFailed(format!("{}: {e}", spec.program.display())),
    };
    // The write ends now live only in the supervisor and below it.
    drop(cmd);
    let sup = Pid::from_raw(child.id().map(|id| id as i32).unwrap_or(0));
    if let Ok(mut g) = supervisors.lock() {
        g.insert(sup.as_raw());
    }
    let mut pumps = Vec::new();
    if let Some(r) = merged {
        match tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(r)) {
            Ok(r) => pumps.push(tokio::spawn(pump(r, Stream::Stdout, lines.clone()))),
            Err(e) => {
                signal(sup, supervisor::KILL_SIGNAL);
                let _ = child.wait().await;
                return ProcessEnd::SpawnFailed(format!("read the output pipe: {e}"));
            }
        }
    }
    if let Some(s) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(s, Stream::Stdout, lines.clone())));
    }
    if let Some(s) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(s, Stream::Stderr, lines.clone())));
    }
    drop(lines);

    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut reason: Option<ProcessEnd> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let status = loop {
        let timeout_sleep = async {
            match (reason.is_none(), deadline) {
                (true, Some(d)) => tokio::time::sleep_until(d).await,
                _ => std::future::pending::<()>().await,
            }
        };
        let kill_sleep = async {
            match kill_at {
                Some(k) => tokio::time::sleep_until(k).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            status = child.wait() => break status,
            _ = timeout_sleep => {
                reason = Some(ProcessEnd::TimedOut);
                signal(sup, supervisor::STOP_SIGNAL);
                kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
            _ = kill_sleep => {
                signal(sup, supervisor::KILL_SIGNAL);
                kill_at = None;
            }
            changed = control.changed() => {
                if changed.is_err() {
                    // The engine is gone; keep waiting for the process.
                    continue;
                }
                let c = *control.borrow();
                match c {
                    Control::Run => {}
                    Control::Stop => {
                        // A stop already under way (this one, a timeout's) keeps its SIGTERM
                        // and its deadline: the job is signalled once.
                        let under_way = reason.is_some();
                        if reason.is_none() || reason == Some(ProcessEnd::TimedOut) {
                            reason = Some(ProcessEnd::Stopped);
                        }
                        if !under_way {
                            signal(sup, supervisor::STOP_SIGNAL);
                            kill_at = Some(tokio::time::Instant::now() + spec.stop_grace);
                        }
                    }
                    Control::Kill => {
                        reason = Some(ProcessEnd::Stopped);
                        signal(sup, supervisor::KILL_SIGNAL);
                    }
                }
            }
        }
    };
    // The supervisor exits only once the job and all it started are gone, so the output pipe is
    // closed by now; the drain is bounded all the same.
    if let Ok(mut g) = supervisors.lock() {
        g.remove(&sup.as_raw());
    }
    let drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
    for mut h in pumps {
        if tokio::time::timeout_at(drain_until, &mut h).await.is_err() {
            h.abort();
        }
    }
    if let Some(r) = reason {
        return r;
    }
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(c), _) => ProcessEnd::Exited(c),
                (None, Some(sig)) => ProcessEnd::Signalled(sig),
                _ => ProcessEnd::Exited(-1),
            }
        }
        Err(e) => ProcessEnd::SpawnFailed(e.to_string()),
    }
}

async fn pump(reader: impl AsyncRead + Unpin, stream: Stream, lines: mpsc::UnboundedSender<Line>) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                if lines.send(Line { stream, text }).is_err() {
                    return;
                }
            }
        }
    }
}
