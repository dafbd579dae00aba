//! TEST INFRASTRUCTURE: the `sparkwing` CLI run as a user runs it against the bed's API: a copy of
//! a fixture project in a temporary directory (`-C <project>`), a profiles file
//! (`SPARKWING_PROFILES`) whose token comes from a variable (`token_env`), and `SPARKWING_HOME` in
//! a temporary directory. The binary is the one the real runner mounts
//! ([`crate::real_runner::sparkwing_binary`]).
//!
//! ```no_run
//! # async fn example(url: &str, token: &str) -> anyhow::Result<()> {
//! use sparkwing_e2e::cli::{Cli, Profile};
//! use std::time::Duration;
//!
//! let cli = Cli::new(std::path::Path::new("tests/fixtures/remote"), token)?;
//! cli.set_profiles(&[Profile::new("ci", url).namespace("ns").pool("real")])?;
//! let out = cli.run(&["pipeline", "trigger", "hello", "--profile", "ci"], Duration::from_secs(60)).await?;
//! assert_eq!(out.code, 0, "{out}");
//! # Ok(())
//! # }
//! ```

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::{EnvVar, HostPathVolumeSource, Volume, VolumeMount};
use sparkwing_crds::runner_pool::RunnerPoolSpec;
use tokio::io::AsyncReadExt as _;

/// The variable the profiles' `token_env` names.
pub const TOKEN_ENV: &str = "SPARKWING_E2E_CLI_TOKEN";
/// Where [`with_binary_cache`] mounts the shared binary cache in runner pods.
pub const POD_CACHE_DIR: &str = "/cache/sparkwing";

/// One profile of the profiles file; the token is always `token_env: `[`TOKEN_ENV`].
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub controller: String,
    pub namespace: Option<String>,
    pub pool: Option<String>,
}

impl Profile {
    pub fn new(name: &str, controller: &str) -> Profile {
        Profile {
            name: name.to_string(),
            controller: controller.to_string(),
            namespace: None,
            pool: None,
        }
    }

    pub fn namespace(mut self, ns: &str) -> Profile {
        self.namespace = Some(ns.to_string());
        self
    }

    pub fn pool(mut self, pool: &str) -> Profile {
        self.pool = Some(pool.to_string());
        self
    }
}

/// A finished command.
#[derive(Debug, Clone)]
pub struct CliOut {
    /// The exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// How long it ran.
    pub took: Duration,
}

impl std::fmt::Display for CliOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// A command still running; its output is collected as it comes. Killed when dropped.
pub struct CliRunning {
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

fn collect(
    mut stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    into.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&text);
                }
            }
        }
    })
}

impl CliRunning {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn stdout_so_far(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `NS/NAME` of the run a `pipeline trigger` started, once it printed it; fails after
    /// `wait` showing the output so far.
    pub async fn wait_triggered_run(&self, wait: Duration) -> Result<String> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(full) = triggered_run(&self.stderr_so_far()) {
                return Ok(full);
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "no run triggered within {wait:?}: {}{}",
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Waits for the exit within `wait`; kills it and fails (showing the output) otherwise.
    pub async fn finish(mut self, wait: Duration) -> Result<CliOut> {
        let status = match tokio::time::timeout(wait, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "sparkwing did not exit within {wait:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
        };
        let took = self.started.elapsed();
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
        }
        Ok(CliOut {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
            took,
        })
    }
}

/// A user's side: the project, the home, the profiles file and the token.
pub struct Cli {
    /// The `sparkwing` binary.
    pub bin: PathBuf,
    /// `SPARKWING_CACHE_DIR` of every command, when set (else `<home>/cache`).
    pub cache: Option<PathBuf>,
    token: String,
    project: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Cli {
    /// A copy of `fixture` (a project root holding `.sparkwing/`; `target/` dirs left out) and an
    /// empty home, with `token` as the profiles' token.
    pub fn new(fixture: &Path, token: &str) -> Result<Cli> {
        let project = tempfile::Builder::new()
            .prefix("sw-e2e-project-")
            .tempdir()?;
        copy_tree(fixture, project.path())
            .with_context(|| format!("copying the fixture {}", fixture.display()))?;
        let home = tempfile::Builder::new().prefix("sw-e2e-home-").tempdir()?;
        Ok(Cli {
            bin: crate::real_runner::sparkwing_binary()?,
            cache: None,
            token: token.to_string(),
            project,
            home,
        })
    }

    /// The project root (`-C`).
    pub fn project(&self) -> &Path {
        self.project.path()
    }

    /// `SPARKWING_HOME`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The profiles file (`SPARKWING_PROFILES`).
    pub fn profiles_file(&self) -> PathBuf {
        self.home().join("profiles.yaml")
    }

    /// (Re)writes the profiles file.
    pub fn set_profiles(&self, profiles: &[Profile]) -> Result<()> {
        let mut yaml = String::from("profiles:\n");
        for p in profiles {
            yaml.push_str(&format!(
                "  {}:\n    controller: {}\n    token_env: {TOKEN_ENV}\n",
                p.name, p.controller
            ));
            if let Some(ns) = &p.namespace {
                yaml.push_str(&format!("    namespace: {ns}\n"));
            }
            if let Some(pool) = &p.pool {
                yaml.push_str(&format!("    pool: {pool}\n"));
            }
        }
        std::fs::write(self.profiles_file(), yaml)?;
        Ok(())
    }

    /// `sparkwing ARGS` with this user's environment, in the project root.
    pub fn command<I, S>(&self, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = tokio::process::Command::new(&self.bin);
        c.args(args)
            .current_dir(self.project())
            .env("SPARKWING_HOME", self.home())
            .env("SPARKWING_PROFILES", self.profiles_file())
            .env(TOKEN_ENV, &self.token)
            .env("SPARKWING_LOG_FORMAT", "pretty")
            .env("NO_COLOR", "1")
            .env_remove("SPARKWING_PROFILE")
            .env_remove("SPARKWING_CACHE_DIR")
            .env_remove("SPARKWING_BOX_SLOTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cache) = &self.cache {
            c.env("SPARKWING_CACHE_DIR", cache);
        }
        c
    }

    /// `sparkwing ARGS` in the background.
    pub fn spawn<I, S>(&self, args: I) -> Result<CliRunning>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = self.command(args).spawn().context("starting sparkwing")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().context("stdout")?, stdout.clone()),
            collect(child.stderr.take().context("stderr")?, stderr.clone()),
        ];
        Ok(CliRunning {
            child,
            stdout,
            stderr,
            readers,
            started: Instant::now(),
        })
    }

    /// `sparkwing ARGS` to its end, within `wait`.
    pub async fn run<I, S>(&self, args: I, wait: Duration) -> Result<CliOut>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn(args)?.finish(wait).await
    }
}

/// Copies a directory tree, leaving out cargo `target/` dirs.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let dst = to.join(entry.file_name());
        if ty.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&entry.path(), &dst)?;
            }
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &dst)?;
        }
    }
    Ok(())
}

/// `spec` with a binary cache shared by its runner pods: the host directory `host_dir` (created,
/// mode 0777 so uid 65532 can write it) mounted read-write at [`POD_CACHE_DIR`] and
/// `SPARKWING_CACHE_DIR` pointing there. The runner's compile cache is keyed by content and
/// locked per key, so runs of an unchanged `.sparkwing/` compile once.
pub fn with_binary_cache(mut spec: RunnerPoolSpec, host_dir: &Path) -> Result<RunnerPoolSpec> {
    std::fs::create_dir_all(host_dir)
        .with_context(|| format!("creating {}", host_dir.display()))?;
    std::fs::set_permissions(host_dir, std::fs::Permissions::from_mode(0o777))?;
    spec.env.push(EnvVar {
        name: "SPARKWING_CACHE_DIR".to_string(),
        value: Some(POD_CACHE_DIR.to_string()),
        value_from: None,
    });
    spec.volumes.push(Volume {
        name: "binary-cache".to_string(),
        host_path: Some(HostPathVolumeSource {
            path: host_dir.to_string_lossy().into_owned(),
            type_: Some("Directory".to_string()),
        }),
        ..Volume::default()
    });
    spec.volume_mounts.push(VolumeMount {
        name: "binary-cache".to_string(),
        mount_path: POD_CACHE_DIR.to_string(),
        ..VolumeMount::default()
    });
    Ok(spec)
}

/// `NS/NAME` from a `pipeline trigger`'s `triggered NS/NAME …` line on stderr.
pub fn triggered_run(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("triggered "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}
