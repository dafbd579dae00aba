//! One attempt of one job: the pipeline binary in its own process group, its output streamed
//! line by line, stopped on timeout or cancel by signalling the whole group.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

/// Process groups of the attempts running now, so a second Ctrl-C can kill them all at once from
/// the engine's loop, without waiting for each attempt's task to act.
pub type ProcessGroups = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i32>>>;

/// SIGKILL every live attempt's process group.
pub fn kill_all(groups: &ProcessGroups) {
    if let Ok(g) = groups.lock() {
        for &pgid in g.iter() {
            signal_group(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// How long a stopped job gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

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

fn signal_group(pgid: Pid, sig: Signal) {
    // ESRCH (group already gone) is fine: that is what we wanted.
    let _ = killpg(pgid, sig);
}

/// Run one attempt; every line goes to `lines`. Returns once the process has exited and its
/// output has been fully read.
pub async fn run_attempt(
    spec: AttemptSpec,
    lines: mpsc::UnboundedSender<Line>,
    mut control: watch::Receiver<Control>,
    groups: ProcessGroups,
) -> ProcessEnd {
    if !spec.cwd.is_dir() {
        return ProcessEnd::SpawnFailed(format!(
            "working directory {} does not exist",
            spec.cwd.display()
        ));
    }
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ProcessEnd::SpawnFailed(format!("{}: {e}", spec.program.display())),
    };
    let pgid = Pid::from_raw(child.id().map(|id| id as i32).unwrap_or(0));
    if let Ok(mut g) = groups.lock() {
        g.insert(pgid.as_raw());
    }
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(pump(s, Stream::Stdout, lines.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(pump(s, Stream::Stderr, lines.clone())));
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
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
            _ = kill_sleep => {
                signal_group(pgid, Signal::SIGKILL);
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
                        if reason.is_none() || reason == Some(ProcessEnd::TimedOut) {
                            reason = Some(ProcessEnd::Stopped);
                        }
                        signal_group(pgid, Signal::SIGTERM);
                        kill_at = Some(tokio::time::Instant::now() + spec.stop_grace);
                    }
                    Control::Kill => {
                        reason = Some(ProcessEnd::Stopped);
                        signal_group(pgid, Signal::SIGKILL);
                    }
                }
            }
        }
    };
    // Whatever the job left behind in its group goes with it, so its pipes close.
    signal_group(pgid, Signal::SIGKILL);
    if let Ok(mut g) = groups.lock() {
        g.remove(&pgid.as_raw());
    }
    for h in [out, err].into_iter().flatten() {
        let _ = h.await;
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
