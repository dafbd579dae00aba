//! TEST INFRASTRUCTURE: a git server on the host — `git daemon --export-all` serving the bare
//! repositories under a temporary directory as `git://<address>:<port>/<name>.git` — and a
//! work tree to make commits and push them there. The address is where the shared bed's pods
//! reach the host (the real node's bridge gateway, or 127.0.0.1 for the emulator's host-network
//! containers), so runner pods fetch from it as from any git host.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// How long the daemon may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(20);

/// Run `git` in `dir` with a fixed identity; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Sparkwing E2E",
            "-c",
            "user.email=e2e@sparkwing.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running git {args:?} (is git installed?)"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `git daemon` on `<address>:<free port>`, the address where the shared bed's pods reach the
/// host (the real node's gateway, or 127.0.0.1); killed when dropped.
pub struct GitServer {
    /// Holds `<name>.git` bare repositories.
    pub base: tempfile::TempDir,
    /// The daemon's address.
    pub address: std::net::Ipv4Addr,
    /// The daemon's port.
    pub port: u16,
    child: Child,
}

impl GitServer {
    /// Start the daemon and wait until it accepts connections.
    pub fn start() -> Result<GitServer> {
        let base = tempfile::tempdir().context("the git server's directory")?;
        let address = crate::bed::TestBed::shared_host_address_for_pods();
        let port = std::net::TcpListener::bind((address, 0))?
            .local_addr()?
            .port();
        // `git daemon` would run `git-daemon` as its child, which killing `git` leaves behind:
        // start `git-daemon` itself.
        let exec_path = git(base.path(), &["--exec-path"])?;
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--informative-errors")
            .arg(format!("--base-path={}", base.path().display()))
            .arg(format!("--listen={address}"))
            .arg(format!("--port={port}"))
            .arg(base.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting git daemon")?;
        let mut server = GitServer {
            base,
            address,
            port,
            child,
        };
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect((address, port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("git daemon exited at start ({status})");
            }
            if Instant::now() >= deadline {
                bail!("git daemon does not accept connections on {address}:{port} after {START_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// `git://<address>:<port>/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("git://{}:{}/{name}.git", self.address, self.port)
    }

    /// Create the empty bare repository `<name>.git`; returns its path.
    pub fn create_repo(&self, name: &str) -> Result<PathBuf> {
        let path = self.base.path().join(format!("{name}.git"));
        git(
            self.base.path(),
            &["init", "-q", "--bare", path.to_str().context("a path")?],
        )?;
        Ok(path)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A work tree whose commits are pushed to a [`GitServer`] repository.
pub struct WorkTree {
    pub dir: tempfile::TempDir,
    remote: PathBuf,
}

impl WorkTree {
    /// A new work tree with `remote` (a bare repository path) as where it pushes.
    pub fn new(remote: &Path) -> Result<WorkTree> {
        let dir = tempfile::tempdir().context("a work tree")?;
        git(dir.path(), &["init", "-q"])?;
        Ok(WorkTree {
            dir,
            remote: remote.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Commit everything as `message`; returns the commit's sha.
    pub fn commit_all(&self, message: &str) -> Result<String> {
        git(self.path(), &["add", "-A"])?;
        git(self.path(), &["commit", "-q", "-m", message])?;
        git(self.path(), &["rev-parse", "HEAD"])
    }

    /// Push HEAD to `branch` of the remote.
    pub fn push(&self, branch: &str) -> Result<()> {
        let remote = self.remote.to_str().context("a path")?;
        git(
            self.path(),
            &["push", "-q", remote, &format!("HEAD:refs/heads/{branch}")],
        )?;
        Ok(())
    }
}
