//! What a job body works with: commands, steps, outputs, inputs and secrets.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use crate::args::Args;
use crate::error::{CommandEnd, Error, Result};
use crate::json::Value;

/// Prefix of a control record line on stdout: the record separator byte, then `sparkwing `.
pub(crate) const CONTROL_PREFIX: &str = "\u{1e}sparkwing ";

/// The running job, handed to its body. Only job bodies can run commands: plans stay pure.
pub struct Job {
    run_id: String,
    job_id: String,
    pipeline: String,
    attempt: u32,
    workspace: PathBuf,
    args: Args,
    outputs: Vec<(String, String)>,
    outputs_file: Option<PathBuf>,
    needs_outputs: Value,
    /// A job expanded from a fan-out or matrix: its index and item.
    item: Option<(usize, String)>,
}

impl Job {
    /// Reads the job's context from the protocol's environment variables. Missing variables get
    /// defaults so a job can also be run by hand while debugging.
    pub(crate) fn from_env(
        job_id: &str,
        args: Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Job> {
        let needs_outputs = match env("SPARKWING_NEEDS_OUTPUTS") {
            None => Value::Object(Vec::new()),
            Some(text) => match Value::parse(&text) {
                Ok(v @ Value::Object(_)) => v,
                Ok(other) => {
                    return Err(Error::msg(format!(
                        "SPARKWING_NEEDS_OUTPUTS: expected a JSON object, got {}",
                        other.type_name()
                    )))
                }
                Err(e) => return Err(Error::msg(format!("SPARKWING_NEEDS_OUTPUTS: {e}"))),
            },
        };
        let workspace = match env("SPARKWING_WORKSPACE") {
            Some(w) if !w.is_empty() => PathBuf::from(w),
            _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        Ok(Job {
            run_id: env("SPARKWING_RUN_ID").unwrap_or_default(),
            job_id: job_id.to_string(),
            pipeline: env("SPARKWING_PIPELINE").unwrap_or_default(),
            attempt: env("SPARKWING_ATTEMPT")
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(1),
            workspace,
            args,
            outputs: Vec::new(),
            outputs_file: env("SPARKWING_OUTPUTS_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            needs_outputs,
            item: env("SPARKWING_ITEM").map(|item| {
                let index = env("SPARKWING_ITEM_INDEX")
                    .and_then(|i| i.trim().parse().ok())
                    .unwrap_or(0);
                (index, item)
            }),
        })
    }

    /// For a job expanded from [`Plan::fan_out`](crate::Plan::fan_out) or
    /// [`Plan::matrix`](crate::Plan::matrix) (`test[3]`): its item (`SPARKWING_ITEM`). `None`
    /// for other jobs.
    pub fn item(&self) -> Option<&str> {
        self.item.as_ref().map(|(_, item)| item.as_str())
    }

    /// For a job expanded from a fan-out or matrix: its index, from 0 (`SPARKWING_ITEM_INDEX`,
    /// the `3` of `test[3]`). `None` for other jobs.
    pub fn item_index(&self) -> Option<usize> {
        self.item.as_ref().map(|(index, _)| *index)
    }

    /// Reads output `key` of every job fan-out or matrix `template` (one of this job's needs)
    /// expanded into, in index order (`template[0]` first); empty when it expanded into none.
    /// A job that did not set `key` (or was skipped) is an error naming it; read one job's
    /// output with [`Job::input`] and its id (`job.input("test[3]", key)`).
    pub fn inputs(&self, template: &str, key: &str) -> Result<Vec<String>> {
        let Value::Object(needs) = &self.needs_outputs else {
            return Ok(Vec::new());
        };
        let mut found: Vec<(usize, &str)> = needs
            .iter()
            .filter_map(|(id, _)| {
                crate::fanout::index_under(id, template).map(|i| (i, id.as_str()))
            })
            .collect();
        if found.is_empty() && self.needs_outputs.get(template).is_none() {
            return Err(Error::msg(format!(
                "no outputs of `{template}` are available (it must be in this job's needs)"
            )));
        }
        found.sort();
        found
            .into_iter()
            .map(|(_, id)| self.input(id, key))
            .collect()
    }

    /// Records an output holding a list (a JSON array of strings), the form a
    /// [`Plan::fan_out`](crate::Plan::fan_out) reads its items from.
    pub fn output_list<I, S>(&mut self, key: impl Into<String>, items: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list = Value::Array(items.into_iter().map(|s| Value::from(s.as_ref())).collect());
        self.output(key, list.to_string());
    }

    /// The run id, e.g. `run-20261127-120102-a1b2c3`.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// This job's id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The pipeline name from `sparkwing.yaml`.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The attempt number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The absolute path of the repository root (the job's own working directory is its `workdir`).
    pub fn workspace(&self) -> PathBuf {
        self.workspace.clone()
    }

    /// The run's arguments.
    pub fn args(&self) -> &Args {
        &self.args
    }

    /// Prints a log line on stdout.
    pub fn log(&self, message: &str) {
        print_line(message);
    }

    /// Runs `bash -c script`, streaming its output; fails if it exits non-zero.
    pub fn bash(&self, script: &str) -> Result<()> {
        self.bash_cmd(script).run()
    }

    /// Runs `bash -c script` and returns its stdout, trimmed; stderr still streams to the log.
    pub fn bash_output(&self, script: &str) -> Result<String> {
        self.bash_cmd(script).output()
    }

    fn bash_cmd(&self, script: &str) -> Cmd {
        let mut cmd = self.cmd("bash").arg("-c").arg(script);
        cmd.display = Some(script.to_string());
        cmd
    }

    /// Runs `program` with `args` (no shell), streaming its output; fails if it exits non-zero.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<()> {
        self.cmd(program).args(args).run()
    }

    /// Runs `program` with `args` and returns its stdout, trimmed; stderr still streams to the log.
    pub fn exec_output(&self, program: &str, args: &[&str]) -> Result<String> {
        self.cmd(program).args(args).output()
    }

    /// Starts building a command: `job.cmd("cargo").args(["build", "--release"]).env("K", "v").run()?`.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
            display: None,
        }
    }

    /// Runs `f` as a named step, recording its start, end, success and duration as control records.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut Job) -> Result<T>) -> Result<T> {
        self.run_step(name, false, f)
    }

    /// Runs `f` as a named step whose failure does not fail the job: the error is logged
    /// (`step NAME failed; the job goes on: MESSAGE`), the step is recorded failed with
    /// `"continue_on_error": true`, and this returns `None` so the job goes on. A panic still
    /// fails the job.
    pub fn step_continue_on_error<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Job) -> Result<T>,
    ) -> Option<T> {
        match self.run_step(name, true, f) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("step {name} failed; the job goes on: {e}");
                None
            }
        }
    }

    fn run_step<T>(
        &mut self,
        name: &str,
        continue_on_error: bool,
        f: impl FnOnce(&mut Job) -> Result<T>,
    ) -> Result<T> {
        print_control(&Value::object([
            ("event", Value::from("step_start")),
            ("step", Value::from(name)),
        ]));
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        let ok = matches!(result, Ok(Ok(_)));
        let mut end = vec![
            ("event", Value::from("step_end")),
            ("step", Value::from(name)),
            ("ok", Value::Bool(ok)),
            (
                "duration_ms",
                Value::Int(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)),
            ),
        ];
        // Only a failed step that the job survives says so; other records read as before.
        if continue_on_error && matches!(result, Ok(Err(_))) {
            end.push(("continue_on_error", Value::Bool(true)));
        }
        print_control(&Value::object(end));
        match result {
            Ok(r) => r,
            // The step_end record is out; let the panic continue to the job's handler.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Records an output that jobs needing this one read with [`Job::input`]. A repeated key replaces
    /// the earlier value.
    pub fn output(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.outputs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.outputs.push((key, value)),
        }
        // Written now as well, so outputs survive a later crash; a failure here is reported by the
        // final write when the body returns.
        let _ = self.write_outputs();
    }

    /// Reads output `key` of job `job`, which must be in this job's `needs`.
    pub fn input(&self, job: &str, key: &str) -> Result<String> {
        let Some(outputs) = self.needs_outputs.get(job) else {
            return Err(Error::msg(format!(
                "no outputs of job `{job}` are available (it must be in this job's needs, and not skipped)"
            )));
        };
        match outputs.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
            None => Err(Error::msg(format!("job `{job}` has no output `{key}`"))),
        }
    }

    /// Reads a secret from the environment; an unset or empty variable is an error naming it.
    pub fn secret(&self, name: &str) -> Result<String> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(Error::msg(format!("secret `{name}` is empty"))),
            Err(std::env::VarError::NotPresent) => {
                Err(Error::msg(format!("secret `{name}` is not set")))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::msg(format!("secret `{name}` is not valid UTF-8")))
            }
        }
    }

    /// Writes the outputs recorded so far to `SPARKWING_OUTPUTS_FILE`, if set.
    pub(crate) fn write_outputs(&self) -> Result<()> {
        let Some(path) = &self.outputs_file else {
            return Ok(());
        };
        let doc = Value::object(
            self.outputs
                .iter()
                .map(|(k, v)| (k.as_str(), Value::from(v.as_str()))),
        );
        std::fs::write(path, doc.to_string() + "\n")
            .map_err(|e| Error::from(e).context(format!("writing outputs to {}", path.display())))
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("run_id", &self.run_id)
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

/// A command to run from a job, built with [`Job::cmd`]. Output streams to the job log unless captured.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    /// How errors name the command (bash scripts are shown as written).
    display: Option<String>,
}

impl Cmd {
    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Runs the command in `dir` (relative to the job's working directory).
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        c.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.dir {
            c.current_dir(dir);
        }
        c
    }

    fn name(&self) -> String {
        if let Some(d) = &self.display {
            return d.clone();
        }
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn check(&self, status: ExitStatus) -> Result<()> {
        if status.success() {
            return Ok(());
        }
        let err = Error::msg(format!(
            "command `{}` failed: {}",
            self.name(),
            describe_status(status)
        ));
        Err(match command_end(status) {
            Some(end) => err.with_command_end(end),
            None => err,
        })
    }

    fn start_error(&self, e: std::io::Error) -> Error {
        Error::msg(format!("command `{}` could not start: {e}", self.name()))
    }

    /// Runs the command with output streaming to the job log; fails if it exits non-zero.
    pub fn run(&self) -> Result<()> {
        flush_stdout();
        let status = self.command().status().map_err(|e| self.start_error(e))?;
        self.check(status)
    }

    /// Runs the command and returns its stdout, trimmed; stderr still streams to the log.
    pub fn output(&self) -> Result<String> {
        flush_stdout();
        let out = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| self.start_error(e))?;
        self.check(out.status)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn command_end(status: ExitStatus) -> Option<CommandEnd> {
    if let Some(code) = status.code() {
        return Some(CommandEnd::Exited(code));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Some(CommandEnd::Signalled(signal));
        }
    }
    None
}

fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

/// Quotes an argument for display only, so error messages show what ran unambiguously.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Child processes write to the same stdout fd; anything we buffered must go out first to keep order.
fn flush_stdout() {
    let _ = std::io::stdout().flush();
}

/// Prints a line on stdout and flushes it. Write errors (a closed pipe) are ignored: logging must not
/// fail the job.
pub(crate) fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints a control record (see protocol.md).
pub(crate) fn print_control(record: &Value) {
    print_line(&format!("{CONTROL_PREFIX}{record}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(needs: &str) -> Job {
        let needs = needs.to_string();
        let env = move |k: &str| (k == "SPARKWING_NEEDS_OUTPUTS").then(|| needs.clone());
        match Job::from_env("j", Args::default(), &env) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_without_env() {
        let j = job("{}");
        assert_eq!(j.attempt(), 1);
        assert_eq!(j.run_id(), "");
        assert_eq!(j.job_id(), "j");
        assert!(j.workspace().is_absolute());
    }

    #[test]
    fn inputs() {
        let j = job(r#"{"build":{"version":"1.2.3","n":5}}"#);
        assert_eq!(j.input("build", "version").ok(), Some("1.2.3".to_string()));
        assert_eq!(j.input("build", "n").ok(), Some("5".to_string()));
        assert_eq!(
            j.input("build", "nope").map_err(|e| e.to_string()),
            Err("job `build` has no output `nope`".to_string())
        );
        assert!(j
            .input("other", "version")
            .map_err(|e| e.to_string())
            .err()
            .is_some_and(|e| e.contains("job `other`")));
    }

    #[test]
    fn bad_needs_outputs_is_an_error() {
        let env = |k: &str| (k == "SPARKWING_NEEDS_OUTPUTS").then(|| "[1]".to_string());
        assert!(Job::from_env("j", Args::default(), &env).is_err());
    }

    #[test]
    fn commands() {
        let j = job("{}");
        assert!(j.bash("true").is_ok());
        assert_eq!(
            j.bash("exit 3").map_err(|e| e.to_string()),
            Err("command `exit 3` failed: exit status 3".to_string())
        );
        assert_eq!(
            j.bash_output("echo ' 1.2.3 '").ok(),
            Some("1.2.3".to_string())
        );
        assert_eq!(
            j.exec_output("echo", &["a", "b c"]).ok(),
            Some("a b c".to_string())
        );
        assert_eq!(
            j.exec("false", &["it's", "x"]).map_err(|e| e.to_string()),
            Err(r"command `false 'it'\''s' x` failed: exit status 1".to_string())
        );
        assert!(j
            .exec("/nonexistent/prog", &[])
            .map_err(|e| e.to_string())
            .err()
            .is_some_and(|e| e.starts_with("command `/nonexistent/prog` could not start:")));
        assert_eq!(
            j.cmd("bash")
                .args(["-c", "echo $SW_X; pwd"])
                .env("SW_X", "v")
                .dir("/")
                .output()
                .ok(),
            Some("v\n/".to_string())
        );
    }

    #[test]
    fn step_passes_results_through() {
        let mut j = job("{}");
        assert_eq!(j.step("s", |_| Ok(5)).ok(), Some(5));
        assert!(j
            .step("s", |j| j.bash("false"))
            .map_err(|e| e.to_string())
            .is_err_and(|e| e.contains("`false`")));
    }

    #[test]
    fn outputs_replace_by_key() {
        let mut j = job("{}");
        j.output("a", "1");
        j.output("b", "2");
        j.output("a", "3");
        assert_eq!(
            j.outputs,
            vec![
                ("a".to_string(), "3".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
    }
}
