//! `sparkwing dashboard start|status|kill`, and the hidden `serve` that `start` runs detached.
//!
//! `start` writes `$SPARKWING_HOME/dashboard.pid` (the pid, then the address, one a line) and
//! sends the server's output to `$SPARKWING_HOME/dashboard.log`.

use super::{CliError, CmdResult};
use crate::cli::DashboardAddr;
use crate::dashboard::{self, AppState};
use crate::exit::ExitCode;
use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use sparkwing_engine::home::Home;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long `start` waits for the new server to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long `kill` waits after SIGTERM before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

fn pid_file(home: &Home) -> PathBuf {
    home.root.join("dashboard.pid")
}

fn log_file(home: &Home) -> PathBuf {
    home.root.join("dashboard.log")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

#[derive(Debug, Clone, Copy)]
struct Recorded {
    pid: i32,
    addr: SocketAddr,
}

fn read_pid_file(home: &Home) -> Option<Recorded> {
    let text = std::fs::read_to_string(pid_file(home)).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let addr = lines.next()?.trim().parse().ok()?;
    Some(Recorded { pid, addr })
}

fn write_pid_file(home: &Home, pid: u32, addr: SocketAddr) -> std::io::Result<()> {
    let path = pid_file(home);
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n{addr}\n"))?;
    std::fs::rename(tmp, path)
}

fn remove_pid_file_if(home: &Home, pid: i32) {
    if read_pid_file(home).is_some_and(|r| r.pid == pid) {
        let _ = std::fs::remove_file(pid_file(home));
    }
}

fn alive(pid: i32) -> bool {
    match send_signal(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// `GET /api/health` over a plain socket: the JSON body, if something answered with JSON.
fn health(addr: SocketAddr) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /api/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body.trim()).ok()
}

/// Whether `pid` is a sparkwing dashboard serving on `addr`.
fn is_our_dashboard(r: Recorded) -> bool {
    if let Some(h) = health(r.addr) {
        return h["service"] == dashboard::SERVICE && h["pid"].as_i64() == Some(r.pid as i64);
    }
    // Not answering (starting, or hung): recognise it by its command line.
    std::fs::read(format!("/proc/{}/cmdline", r.pid))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.contains(&&b"dashboard"[..]) && args.contains(&&b"serve"[..])
        })
        .unwrap_or(false)
}

/// SIGTERM, then SIGKILL after [`KILL_GRACE`]. Returns whether the process is gone.
fn stop(pid: i32) -> bool {
    let p = Pid::from_raw(pid);
    if send_signal(p, Signal::SIGTERM).is_err() {
        return !alive(pid);
    }
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = send_signal(p, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The running dashboard of this `SPARKWING_HOME`, if any; a stale pid file is removed.
fn running(home: &Home) -> Option<Recorded> {
    let r = read_pid_file(home)?;
    if alive(r.pid) && is_our_dashboard(r) {
        return Some(r);
    }
    remove_pid_file_if(home, r.pid);
    None
}

fn port_taken(addr: SocketAddr) -> CliError {
    let msg = match health(addr) {
        Some(h) if h["service"] == dashboard::SERVICE => format!(
            "{addr} is already used by the sparkwing dashboard of another SPARKWING_HOME ({}); stop it with `SPARKWING_HOME={} sparkwing dashboard kill`, or pass --addr 127.0.0.1:PORT",
            h["home"].as_str().unwrap_or("?"),
            h["home"].as_str().unwrap_or("?"),
        ),
        _ => format!(
            "{addr} is already in use by another program; pass a free address with --addr 127.0.0.1:PORT"
        ),
    };
    CliError::new(ExitCode::Usage, msg)
}

fn log_tail(home: &Home) -> String {
    let text = std::fs::read_to_string(log_file(home)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

pub fn start(args: DashboardAddr) -> CmdResult {
    let home = Home::from_env();
    std::fs::create_dir_all(&home.root).map_err(|e| {
        CliError::new(
            ExitCode::Store,
            format!("cannot create {}: {e}", home.root.display()),
        )
    })?;
    if let Some(old) = running(&home) {
        if !stop(old.pid) {
            return Err(CliError::new(
                ExitCode::Internal,
                format!("the running dashboard (pid {}) did not stop", old.pid),
            ));
        }
        remove_pid_file_if(&home, old.pid);
        eprintln!(
            "stopped the previous dashboard (pid {}, {})",
            old.pid,
            url(old.addr)
        );
    }
    match std::net::TcpListener::bind(args.addr) {
        Ok(l) => drop(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(port_taken(args.addr)),
        Err(e) => {
            return Err(CliError::new(
                ExitCode::Usage,
                format!("cannot listen on {}: {e}", args.addr),
            ))
        }
    }
    let log = std::fs::File::create(log_file(&home))?;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["dashboard", "serve", "--addr", &args.addr.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    write_pid_file(&home, pid, args.addr)?;
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            remove_pid_file_if(&home, pid as i32);
            let tail = log_tail(&home);
            let port_msg = tail.contains("in use");
            if port_msg {
                return Err(port_taken(args.addr));
            }
            return Err(CliError::new(
                ExitCode::Internal,
                format!(
                    "the dashboard exited as it started ({status}); its log, {}:\n{tail}",
                    log_file(&home).display()
                ),
            ));
        }
        if let Some(h) = health(args.addr) {
            if h["service"] == dashboard::SERVICE && h["pid"].as_u64() == Some(pid as u64) {
                break;
            }
        }
        if Instant::now() >= deadline {
            stop(pid as i32);
            remove_pid_file_if(&home, pid as i32);
            return Err(CliError::new(
                ExitCode::Internal,
                format!(
                    "the dashboard did not accept connections on {} within {}s; see {}",
                    args.addr,
                    START_DEADLINE.as_secs(),
                    log_file(&home).display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{}", url(args.addr));
    eprintln!(
        "dashboard running (pid {pid}); log {}; stop it with `sparkwing dashboard kill`",
        log_file(&home).display()
    );
    Ok(ExitCode::Success)
}

pub fn status() -> CmdResult {
    let home = Home::from_env();
    match running(&home) {
        Some(r) => {
            println!("{}", url(r.addr));
            Ok(ExitCode::Success)
        }
        None => {
            eprintln!("the dashboard is not running; start it with `sparkwing dashboard start`");
            Ok(ExitCode::RunFailed)
        }
    }
}

pub fn kill() -> CmdResult {
    let home = Home::from_env();
    let Some(r) = running(&home) else {
        eprintln!("the dashboard is not running");
        return Ok(ExitCode::Success);
    };
    if !stop(r.pid) {
        return Err(CliError::new(
            ExitCode::Internal,
            format!("the dashboard (pid {}) did not stop", r.pid),
        ));
    }
    remove_pid_file_if(&home, r.pid);
    eprintln!("stopped the dashboard (pid {})", r.pid);
    Ok(ExitCode::Success)
}

/// Serve in the foreground until SIGTERM or SIGINT.
pub fn serve(args: DashboardAddr) -> CmdResult {
    let home = Home::from_env();
    let state = AppState::start(home.clone())?;
    let rt = sparkwing_engine::runtime::build()?;
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.addr).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(port_taken(args.addr))
            }
            Err(e) => {
                return Err(CliError::new(
                    ExitCode::Usage,
                    format!("cannot listen on {}: {e}", args.addr),
                ))
            }
        };
        let pid = std::process::id();
        write_pid_file(&home, pid, args.addr)?;
        // A closed terminal must not end a detached dashboard.
        let _hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        println!(
            "sparkwing dashboard (pid {pid}) serving {} at {}",
            home.root.display(),
            url(args.addr)
        );
        let out = dashboard::serve(listener, state).await;
        remove_pid_file_if(&home, pid as i32);
        println!("sparkwing dashboard (pid {pid}) stopped");
        out.map_err(CliError::from)?;
        Ok(ExitCode::Success)
    })
}
