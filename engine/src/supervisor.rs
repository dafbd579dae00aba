//! The supervisor of one job attempt: `sparkwing __supervise`, a small process between the engine
//! and the job's own process.
//!
//! A job may leave processes behind: a test server started with `setsid server &`, a daemon that
//! leaves the job's process group but keeps its stdout open. Signalling the job's process group
//! cannot reach them, and as long as they hold the job's output pipe the engine would wait for
//! them. The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): every process the job
//! starts, however it detaches, stays below it. So it can:
//!
//! - end the attempt when the job's own process exits: whatever is left is sent SIGTERM, then
//!   SIGKILL after [`LEFTOVER_GRACE`], and the supervisor exits only once all of it is gone (so
//!   the output pipe closes and a worker slot is free only when the processes really are);
//! - stop the job on the engine's word: SIGTERM forwards SIGTERM to the job's process group (a
//!   graceful stop), SIGUSR1 kills every descendant at once;
//! - die with the engine: its parent-death signal (SIGUSR2) kills every descendant at once, so
//!   `kill -9` of `sparkwing run` leaves no job running.
//!
//! It exits with the job's status (a signal is raised again on itself), so the engine reads the
//! job's own exit code or signal.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getppid, Pid};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// The hidden first argument that makes `sparkwing` a supervisor.
pub const SUBCOMMAND: &str = "__supervise";

/// How long processes a job left behind get between SIGTERM and SIGKILL once the job's own
/// process has exited.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// Engine → supervisor: stop gracefully (SIGTERM to the job's process group).
pub const STOP_SIGNAL: Signal = Signal::SIGTERM;
/// Engine → supervisor: kill the job and everything it started, now.
pub const KILL_SIGNAL: Signal = Signal::SIGUSR1;
/// Delivered by the kernel when the engine dies.
const PARENT_DIED_SIGNAL: Signal = Signal::SIGUSR2;

/// The command line that runs `program args` under a supervisor whose parent is this process.
pub fn command(program: &std::path::Path, args: &[String]) -> Command {
    // /proc/self/exe is this very binary even if the file was replaced since it started.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(SUBCOMMAND)
        .arg(std::process::id().to_string())
        .arg("--")
        .arg(program)
        .args(args);
    cmd
}

/// `sparkwing __supervise PARENT_PID -- PROGRAM ARGS...`; never returns.
pub fn main(args: &[std::ffi::OsString]) -> ! {
    let code = match supervise(args) {
        Ok(end) => exit_like(end),
        Err(e) => {
            eprintln!("sparkwing: {e}");
            127
        }
    };
    std::process::exit(code)
}

#[derive(Debug, Clone, Copy)]
enum End {
    Exited(i32),
    Signalled(Signal),
}

fn supervise(args: &[std::ffi::OsString]) -> Result<End, String> {
    let (parent, program, rest) = match args {
        [parent, dashdash, program, rest @ ..] if dashdash == "--" => {
            let parent: i32 = parent
                .to_str()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("{SUBCOMMAND}: bad parent pid {parent:?}"))?;
            (Pid::from_raw(parent), program, rest)
        }
        _ => {
            return Err(format!(
                "usage: sparkwing {SUBCOMMAND} PARENT_PID -- PROGRAM [ARGS...]"
            ))
        }
    };
    let sys = |what: &'static str| move |e: Errno| format!("{SUBCOMMAND}: {what}: {e}");
    nix::sys::prctl::set_child_subreaper(true).map_err(sys("become a subreaper"))?;
    nix::sys::prctl::set_pdeathsig(PARENT_DIED_SIGNAL).map_err(sys("set parent-death signal"))?;
    // The engine may have died before the line above: then nothing is started.
    if getppid() != parent {
        return Err(format!("{SUBCOMMAND}: the engine (pid {parent}) is gone"));
    }
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        STOP_SIGNAL,
        Signal::SIGINT,
        Signal::SIGHUP,
        KILL_SIGNAL,
        PARENT_DIED_SIGNAL,
    ] {
        mask.add(s);
    }
    mask.thread_block().map_err(sys("block signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys("signalfd"))?;

    let mut leader = Command::new(program);
    leader.args(rest).process_group(0);
    unblock_in_child(&mut leader, mask);
    let leader = leader
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
    let leader = Pid::from_raw(leader.id() as i32);

    let mut status: Option<End> = None;
    // When the leftovers get SIGKILL (set once the leader is gone, or on a stop's escalation).
    let mut kill_at: Option<Instant> = None;
    // A graceful stop was forwarded to the job's process group: its processes have had their
    // SIGTERM, and the engine sends the SIGKILL at the end of the stop's grace.
    let mut stopping = false;
    // Under a stop, the leftovers outside the job's group were sent SIGTERM once the leader died.
    let mut leftovers_told = false;
    loop {
        let timeout = match kill_at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("{SUBCOMMAND}: poll: {e}")),
        }
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => {}
                Ok(s) if s == KILL_SIGNAL => kill_all(Signal::SIGKILL),
                Ok(s) if s == PARENT_DIED_SIGNAL => {
                    // Also sent when the engine's thread that started us ends; only a new parent
                    // means the engine itself is gone.
                    if getppid() != parent {
                        kill_all(Signal::SIGKILL);
                    }
                }
                // SIGTERM, SIGINT, SIGHUP: a graceful stop of the job's own process group.
                // Once: a second SIGTERM could reach a job's trap while it runs (bash runs the
                // trap again).
                Ok(_) => {
                    if status.is_none() && !stopping {
                        stopping = true;
                        let _ = killpg(leader, Signal::SIGTERM);
                    }
                }
                Err(_) => {}
            }
        }
        let children_left = reap(leader, &mut status);
        if status.is_some() {
            if !children_left {
                return Ok(status.unwrap_or(End::Exited(0)));
            }
            match kill_at {
                // The leader died of a stop (a job binary's default for SIGTERM) while the
                // processes of its group still handle theirs: they keep the stop's whole grace
                // and get no second SIGTERM; only processes that left the group are told now.
                None if stopping => {
                    if !leftovers_told {
                        leftovers_told = true;
                        for pid in descendants(std::process::id() as i32) {
                            if read_pgid(pid) != Some(leader.as_raw()) {
                                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                            }
                        }
                    }
                }
                None => {
                    kill_all(Signal::SIGTERM);
                    kill_at = Some(Instant::now() + LEFTOVER_GRACE);
                }
                Some(at) if Instant::now() >= at => kill_all(Signal::SIGKILL),
                Some(_) => {}
            }
        }
    }
}

/// The signal mask is inherited through exec: the job must start with nothing blocked, or it
/// could never be stopped with SIGTERM.
#[allow(unsafe_code)]
fn unblock_in_child(cmd: &mut Command, mask: SigSet) {
    // SAFETY: the closure runs in the forked child before exec; it only calls pthread_sigmask,
    // which is async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || mask.thread_unblock().map_err(std::io::Error::from));
    }
}

/// Reap every child that has ended; record the leader's status. Whether any child is left.
fn reap(leader: Pid, status: &mut Option<End>) -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == leader => *status = Some(End::Exited(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == leader => {
                *status = Some(End::Signalled(sig))
            }
            Ok(WaitStatus::StillAlive) => return true,
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(_) => return false, // ECHILD: nothing below us any more
        }
    }
}

/// Send `sig` to every process below this one. A subreaper's descendants all stay below it, so
/// this reaches processes that left the job's process group or session.
fn kill_all(sig: Signal) {
    let me = std::process::id() as i32;
    for pid in descendants(me) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// The pids below `root`, read from /proc (parents before their children).
fn descendants(root: i32) -> Vec<i32> {
    let parent_of: Vec<(i32, i32)> = process_ids()
        .filter_map(|pid| Some((pid, read_ppid(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|&&(_, pp)| pp == p)
                .map(|&(c, _)| c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Every process id in /proc.
pub fn process_ids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
}

/// Field `n` (0: the state) after the command name of /proc/PID/stat (the name may hold spaces
/// and parentheses, so fields are counted after its last ')').
fn stat_field(pid: i32, n: usize) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n)?.parse().ok()
}

/// The parent pid.
fn read_ppid(pid: i32) -> Option<i32> {
    stat_field(pid, 1)
}

/// The process group.
fn read_pgid(pid: i32) -> Option<i32> {
    stat_field(pid, 2)
}

/// Exit as the job did: its exit code, or the same signal raised on ourselves.
fn exit_like(end: End) -> i32 {
    match end {
        End::Exited(code) => code,
        End::Signalled(sig) => {
            // Default disposition for the signal (Rust ignores SIGPIPE), then let it kill us.
            crate::signals::restore_default_signal(sig);
            let mut mask = SigSet::empty();
            mask.add(sig);
            let _ = mask.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            128 + sig as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_past_a_command_name_with_parentheses() {
        let me = std::process::id() as i32;
        assert_eq!(
            read_ppid(me),
            Some(std::os::unix::process::parent_id() as i32)
        );
        assert!(descendants(1).contains(&me));
        assert_eq!(read_pgid(me), Some(nix::unistd::getpgrp().as_raw()));
    }
}
