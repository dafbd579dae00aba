//! Per-host concurrency (`--sw-box-slots`), end to end with real `sparkwing run` processes.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sparkwing");
const DEADLINE: Duration = Duration::from_secs(60);

struct Env {
    home: tempfile::TempDir,
    work: tempfile::TempDir,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

impl Env {
    fn new() -> Env {
        let work = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/box_fixture"),
            work.path(),
        );
        Env {
            home: tempfile::tempdir().unwrap(),
            work,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("SPARKWING_HOME", self.home.path())
            .env(
                "SPARKWING_CACHE_DIR",
                concat!(env!("CARGO_TARGET_TMPDIR"), "/sparkwing-test-cache"),
            )
            .env("SPARKWING_LOG_FORMAT", "json")
            .env_remove("SPARKWING_BOX_SLOTS")
            .current_dir(self.work.path());
        c
    }

    fn release_file(&self, name: &str) -> PathBuf {
        self.work.path().join(format!("release-{name}"))
    }

    /// A holding run named `name`; `slots_env` sets SPARKWING_BOX_SLOTS.
    fn hold(&self, name: &str, slots_env: Option<&str>, extra: &[&str]) -> Command {
        let mut c = self.cmd();
        if let Some(v) = slots_env {
            c.env("SPARKWING_BOX_SLOTS", v);
        }
        c.args(["run", "hold", "--release"])
            .arg(self.release_file(name))
            .args(extra);
        c
    }

    /// Start a holding run in the background.
    fn spawn_hold(&self, name: &str, extra: &[&str]) -> Child {
        self.hold(name, None, extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn release(&self, name: &str) {
        std::fs::write(self.release_file(name), "go").unwrap();
    }

    fn runs(&self) -> Vec<Value> {
        let out = self
            .cmd()
            .args(["runs", "list", "-o", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn count(&self, status: &str) -> usize {
        self.runs().iter().filter(|r| r["status"] == status).count()
    }

    /// Build the fixture once (outside any timing) so later runs start at once.
    fn warm(&self) {
        self.release("warm");
        let out = self.hold("warm", None, &[]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn queued_runs_start_in_arrival_order() {
    let env = Env::new();
    env.warm();
    let a = env.spawn_hold("a", &["--sw-box-slots", "1"]);
    wait_until("a running", || env.count("running") == 1);
    let b = env.spawn_hold("b", &["--sw-box-slots", "1"]);
    wait_until("b queued", || env.count("queued") == 1);
    let c = env.spawn_hold("c", &["--sw-box-slots", "1"]);
    wait_until("c queued", || env.count("queued") == 2);
    // Release in reverse so a wrong order would show: c and b are free to finish as soon as
    // they start; only admission order decides who starts first.
    env.release("c");
    env.release("b");
    env.release("a");
    let outs: Vec<Output> = [a, b, c].into_iter().map(finish).collect();
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let b_err = String::from_utf8_lossy(&outs[1].stderr).into_owned();
    assert!(
        b_err.contains("waiting for box slot (1 active, max 1)"),
        "{b_err}"
    );
    let mut runs = env.runs();
    runs.retain(|r| {
        r["args"]["release"]
            .as_str()
            .is_some_and(|s| !s.ends_with("warm"))
    });
    runs.sort_by_key(|r| r["started_at"].as_i64().unwrap());
    let order: Vec<String> = runs
        .iter()
        .map(|r| {
            r["args"]["release"]
                .as_str()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(order, ["a", "b", "c"]);
    // Queued runs were created in arrival order too, before they started.
    assert!(runs[1]["created_at"].as_i64() < runs[2]["created_at"].as_i64());
    assert!(runs[1]["started_at"].as_i64() > runs[1]["created_at"].as_i64());
}

#[test]
fn a_killed_holder_frees_its_slot_at_once() {
    let env = Env::new();
    env.warm();
    let mut a = env.spawn_hold("a", &["--sw-box-slots", "1"]);
    wait_until("a running", || env.count("running") == 1);
    let b = env.spawn_hold("b", &["--sw-box-slots", "1"]);
    wait_until("b queued", || env.count("queued") == 1);
    a.kill().unwrap(); // SIGKILL: no cleanup runs in the holder
    let killed_at = Instant::now();
    a.wait().unwrap();
    wait_until("b admitted", || {
        env.runs().iter().any(|r| {
            r["status"] == "running" && r["args"]["release"].as_str().unwrap().ends_with("-b")
        })
    });
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "b started {took:?} after the holder died"
    );
    env.release("b");
    env.release("a"); // a's orphaned job process exits too
    assert!(finish(b).status.success());
    // The killed holder's run is reconciled to failed, never left running.
    let a_run = env
        .runs()
        .into_iter()
        .find(|r| r["args"]["release"].as_str().unwrap().ends_with("-a"))
        .unwrap();
    assert_eq!(a_run["status"], "failed");
}

#[test]
fn ctrl_c_while_waiting_leaves_the_queue_cleanly() {
    let env = Env::new();
    env.warm();
    let a = env.spawn_hold("a", &["--sw-box-slots", "1"]);
    wait_until("a running", || env.count("running") == 1);
    let b = env.spawn_hold("b", &["--sw-box-slots", "1"]);
    wait_until("b queued", || env.count("queued") == 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = finish(b);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b_run = env
        .runs()
        .into_iter()
        .find(|r| r["args"]["release"].as_str().unwrap().ends_with("-b"))
        .unwrap();
    assert_eq!(b_run["status"], "cancelled");
    assert!(b_run["error"]
        .as_str()
        .unwrap()
        .contains("waiting for a box slot"));
    let leftovers: Vec<String> = std::fs::read_dir(env.home.path().join("box-slots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ticket-") || n.starts_with(".ticket-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "queue entries left behind: {leftovers:?}"
    );
    env.release("a");
    assert!(finish(a).status.success());
    // The slot is free and nobody is queued: a no-wait run goes straight through.
    env.release("c");
    let c = env
        .hold("c", None, &["--sw-box-slots", "1", "--sw-no-wait"])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", stderr(&c));
}

#[test]
fn no_wait_fails_when_full_and_runs_when_free_and_the_flag_beats_the_env() {
    let env = Env::new();
    env.warm();
    env.release("free");
    let free = env
        .hold("free", None, &["--sw-box-slots", "1", "--sw-no-wait"])
        .output()
        .unwrap();
    assert!(free.status.success(), "{}", stderr(&free));

    // The holder takes its slot through the environment variable.
    let holder = env
        .hold("h", Some("1"), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("holder running", || env.count("running") == 1);
    let before = env.runs().len();
    let full = env
        .hold("x", Some("1"), &["--sw-no-wait"])
        .output()
        .unwrap();
    assert_eq!(full.status.code(), Some(75));
    assert!(
        stderr(&full).contains("box slots full (max=1)"),
        "{}",
        stderr(&full)
    );
    assert_eq!(env.runs().len(), before, "a declined run is not recorded");
    // The flag wins over the environment: with two slots the run goes through.
    env.release("y");
    let flag = env
        .hold("y", Some("1"), &["--sw-box-slots", "2", "--sw-no-wait"])
        .output()
        .unwrap();
    assert!(flag.status.success(), "{}", stderr(&flag));
    // A bad environment value is a clear usage error.
    let bad = env.hold("y", Some("lots"), &[]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("SPARKWING_BOX_SLOTS"),
        "{}",
        stderr(&bad)
    );
    env.release("h");
    assert!(finish(holder).status.success());
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
