//! Harness of the `sparkwing` end-to-end tests: isolated homes, fixture projects copied into temp
//! dirs, one binary cache shared by every test (identical pipeline trees compile once), and
//! deadline-bounded process handling so a hang fails a test instead of stalling the suite.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sparkwing");

/// How long any single sparkwing invocation may take (it may have to compile, and wait for other
/// tests' compiles on a busy 2-core machine).
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(240);

/// The binary cache shared by all tests.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_TARGET_TMPDIR"),
        "/sparkwing-test-cache"
    ))
}

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn hello_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello")
}

/// Copy a directory tree, leaving out cargo `target/` dirs.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read dir {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let ty = entry.file_type().unwrap();
        let dst = to.join(&name);
        if ty.is_dir() {
            if name == "target" {
                continue;
            }
            copy_tree(&entry.path(), &dst);
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &dst)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// Poll `cond` until it holds; panics naming `what` once `deadline` has passed.
pub fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The result of one finished invocation.
#[derive(Debug, Clone)]
pub struct Out {
    /// The exit code; -1 if the process was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout's JSON lines (non-JSON lines are left out).
    pub fn json_lines(&self) -> Vec<Value> {
        json_lines(&self.stdout)
    }

    /// The run id from the `run_started` event of a JSON-format run.
    pub fn run_id(&self) -> String {
        run_id_of(&self.json_lines()).unwrap_or_else(|| panic!("no run_started event in {self}"))
    }

    /// The events of the given kind from a JSON-format run.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v["event"] == kind)
            .collect()
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code; {self}");
        self
    }

    pub fn stdout_json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self}"))
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn run_id_of(lines: &[Value]) -> Option<String> {
    lines
        .iter()
        .find(|v| v["event"] == "run_started")
        .and_then(|v| v["run"].as_str())
        .map(str::to_string)
}

/// A sparkwing process still running: its output is collected by reader threads.
pub struct Running {
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => into.lock().unwrap().push_str(&line),
            }
        }
    })
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start sparkwing");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout_so_far(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait for the `run_started` event and return the run id.
    pub fn wait_run_id(&mut self) -> String {
        let mut id = None;
        wait_until(COMMAND_DEADLINE, "the run_started event", || {
            id = run_id_of(&json_lines(&self.stdout_so_far()));
            if id.is_none() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "sparkwing exited ({status}) before starting a run:\n{}\n{}",
                        self.stdout_so_far(),
                        self.stderr_so_far()
                    );
                }
            }
            id.is_some()
        });
        id.unwrap()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("send {sig} to {}: {e}", self.pid()));
    }

    /// Wait for the process to exit within `deadline` (killing it and panicking otherwise).
    pub fn finish_within(mut self, deadline: Duration) -> Out {
        let end = Instant::now() + deadline;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for sparkwing") {
                break s;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "sparkwing did not exit within {deadline:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Out {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
        }
    }

    pub fn finish(self) -> Out {
        self.finish_within(COMMAND_DEADLINE)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failing test must not leave a run behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One test's world: its own SPARKWING_HOME and project root; the shared binary cache.
pub struct Sw {
    pub home: TempDir,
    pub root: TempDir,
    envs: Vec<(String, String)>,
}

impl Sw {
    /// An empty project root (no `.sparkwing/`).
    pub fn empty() -> Sw {
        let sw = Sw {
            home: tempfile::Builder::new()
                .prefix("sw-home-")
                .tempdir()
                .unwrap(),
            root: tempfile::Builder::new()
                .prefix("sw-repo-")
                .tempdir()
                .unwrap(),
            envs: Vec::new(),
        };
        // Git fields and project discovery walk up: nothing above the temp dir may interfere.
        for dir in sw.root().ancestors().skip(1) {
            assert!(
                !dir.join(".sparkwing").exists() && !dir.join(".git").exists(),
                "test precondition: {} must not contain .sparkwing or .git",
                dir.display()
            );
        }
        sw
    }

    /// A copy of `cli/tests/fixtures/<name>` as the project root.
    pub fn fixture(name: &str) -> Sw {
        let sw = Sw::empty();
        copy_tree(&fixture_dir(name), sw.root());
        sw
    }

    /// A copy of `examples/hello` as the project root.
    pub fn hello() -> Sw {
        let sw = Sw::empty();
        copy_tree(&hello_example(), sw.root());
        sw
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Set an environment variable for every later invocation.
    pub fn env(&mut self, k: &str, v: &str) -> &mut Self {
        self.envs.push((k.to_string(), v.to_string()));
        self
    }

    /// A `sparkwing` command in the project root, with this test's environment.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.root())
            .env("SPARKWING_HOME", self.home())
            .env("SPARKWING_CACHE_DIR", cache_dir())
            .env("SPARKWING_LOG_FORMAT", "json")
            .env_remove("SPARKWING_BOX_SLOTS")
            .env_remove("MY_TOKEN")
            .env_remove("MY_KEY")
            .env_remove("HELLO_TOKEN");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Run a command to completion.
    pub fn run_cmd(&self, cmd: Command) -> Out {
        Running::spawn(cmd).finish()
    }

    /// `sparkwing ARGS...` to completion.
    pub fn sw<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.run_cmd(self.cmd(args))
    }

    /// `sparkwing ARGS...` in the background.
    pub fn spawn<I, S>(&self, args: I) -> Running
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Running::spawn(self.cmd(args))
    }

    /// `runs list -o json`, one object per run.
    /// `sparkwing ARGS` with stdout and stderr on a pseudo-terminal (util-linux `script`), as a
    /// user at a terminal runs it, without the variables `unset`; what the terminal got is
    /// `stdout`.
    pub fn on_a_tty(&self, args: &[&str], unset: &[&str]) -> Out {
        let plain = self.cmd(args);
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let line: Vec<String> = std::iter::once(BIN)
            .chain(args.iter().copied())
            .map(quote)
            .collect();
        let mut c = Command::new("script");
        c.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]);
        if let Some(dir) = plain.get_current_dir() {
            c.current_dir(dir);
        }
        for (k, v) in plain.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        for k in unset {
            c.env_remove(k);
        }
        Running::spawn(c).finish_within(COMMAND_DEADLINE)
    }

    pub fn runs_list(&self) -> Vec<Value> {
        let out = self.sw(["runs", "list", "-o", "json", "--limit", "1000"]);
        out.assert_code(0);
        out.json_lines()
    }

    /// The run's record from `runs list -o json`.
    pub fn listed_run(&self, id: &str) -> Value {
        self.runs_list()
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("run {id} is not in runs list"))
    }

    /// `runs status --run ID -o json`: (exit code, document).
    pub fn status(&self, id: &str) -> (i32, Value) {
        let out = self.sw(["runs", "status", "--run", id, "-o", "json"]);
        let code = out.code;
        (code, out.stdout_json())
    }

    /// A job's state from `runs status -o json`; `None` while the run has not recorded the job
    /// (a run's id is known before its plan's jobs are written): for waits.
    pub fn job_state(&self, id: &str, job: &str) -> Option<String> {
        let (_, st) = self.status(id);
        st["jobs"].as_array()?.iter().find(|j| j["job_id"] == job)?["state"]
            .as_str()
            .map(str::to_owned)
    }

    /// A job's record from `runs status -o json`.
    pub fn job(&self, id: &str, job: &str) -> Value {
        let (_, st) = self.status(id);
        find_job(&st, job)
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.home().join("runs").join(id)
    }

    pub fn log_path(&self, id: &str, job: &str) -> PathBuf {
        self.run_dir(id).join(format!("{job}.log"))
    }

    /// A job's log records (empty if the file does not exist yet).
    pub fn log_records(&self, id: &str, job: &str) -> Vec<Value> {
        std::fs::read_to_string(self.log_path(id, job))
            .map(|t| json_lines(&t))
            .unwrap_or_default()
    }

    /// A job's log lines (the `line` fields).
    pub fn log_lines(&self, id: &str, job: &str) -> Vec<String> {
        self.log_records(id, job)
            .iter()
            .map(|r| r["line"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Wait until a job's log has a line equal to `line`.
    pub fn wait_for_log_line(&self, id: &str, job: &str, line: &str) {
        wait_until(
            Duration::from_secs(60),
            &format!("job {job} of run {id} to log {line:?}"),
            || self.log_lines(id, job).iter().any(|l| l == line),
        );
    }
}

impl Drop for Sw {
    fn drop(&mut self) {
        // The engine gives each project directory its own cargo target dir in the cache
        // (`<cache>/target/<sha256(project dir)[..8]>`); these temp projects never come back, so
        // remove theirs to keep the shared cache from growing with every test run.
        use sha2::{Digest, Sha256};
        let dir = self.root().join(".sparkwing");
        let mut candidates = vec![dir.clone()];
        if let Ok(c) = dir.canonicalize() {
            candidates.push(c);
        }
        for d in candidates {
            let digest = Sha256::digest(d.to_string_lossy().as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            let _ = std::fs::remove_dir_all(cache_dir().join("target").join(hex));
        }
    }
}

pub fn find_job(status: &Value, job: &str) -> Value {
    status["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == job))
        .cloned()
        .unwrap_or_else(|| panic!("no job {job} in {status:#}"))
}

/// Pids of live processes whose environment contains `entry` exactly (e.g.
/// `SPARKWING_RUN_ID=run-...`): every job process of a run, and whatever they started.
pub fn pids_with_env(entry: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // Zombies have exited already; they are not "running".
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            if state == Some("Z") {
                continue;
            }
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Every process of a run's jobs.
pub fn run_processes(run_id: &str) -> Vec<i32> {
    pids_with_env(&format!("SPARKWING_RUN_ID={run_id}"))
}

/// Wait until no process of the run's jobs is left.
pub fn assert_run_processes_gone(run_id: &str) {
    wait_until(
        Duration::from_secs(15),
        &format!("every job process of {run_id} to exit"),
        || run_processes(run_id).is_empty(),
    );
}
