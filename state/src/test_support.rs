//! Real servers for tests (feature `test-support`): PostgreSQL from Debian's binaries on a temp
//! data directory and a unix socket, and an S3-compatible server as its own process
//! (`tools/s3-test-server`: the `s3s-fs` crate's store, served with `TCP_NODELAY`).
//! Each is stopped when dropped. Readiness is a condition polled against a deadline.
//!
//! `scripts/setup-test-deps.sh` installs both: apt's `postgresql`, the system user
//! `sparkwing-pg` (postgres refuses to run as root) and the S3 server built once under
//! `/var/tmp/sparkwing-ci/s3-test-server`. `SPARKWING_PG_BIN` (a directory with `initdb` and
//! `pg_ctl`) and `SPARKWING_S3_SERVER` (the server binary, ours or `s3s-fs`, which takes the same
//! flags; or `SPARKWING_S3_SERVER_ROOT`, where the setup script installed it) override where they
//! are looked for.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The system user postgres runs as when the tests run as root.
pub const PG_USER: &str = "sparkwing-pg";
/// Where `scripts/setup-test-deps.sh` installs the S3 server.
pub const S3_SERVER_DEFAULT: &str =
    "/var/tmp/sparkwing-ci/s3-test-server/bin/sparkwing-s3-test-server";

const SETUP: &str = "run scripts/setup-test-deps.sh (as root) to install it";

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Poll `ready` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !ready() {
        assert!(
            Instant::now() < until,
            "{what} not ready within {deadline:?}"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SPARKWING_PG_BIN") {
        return p.into();
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no PostgreSQL under /usr/lib/postgresql/*/bin; {SETUP}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `(uid, gid)` of [`PG_USER`], created when missing.
fn pg_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, PG_USER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_USER,
        ]));
    }
    (
        id("-u").expect("the user exists"),
        id("-g").expect("the user exists"),
    )
}

/// Create database `db` on the server that `url` (a connection string of another database on
/// it) reaches: a test of another process (given the server's URL) gets a database of its own.
pub async fn create_database(url: &str, db: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .expect("create database");
    drop(client);
    let _ = task.await;
}

/// A PostgreSQL server on a temp data directory, reachable on a unix socket in it.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Run as this user (the tests run as root).
    user: Option<(u32, u32)>,
    running: bool,
}

impl Postgres {
    /// initdb and start. Blocking (a second or two).
    pub fn start() -> Postgres {
        let bin = pg_bin();
        let user = is_root().then(pg_user);
        let dir = tempfile::Builder::new()
            .prefix("sparkwing-pg-")
            .tempdir()
            .expect("a temp dir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the temp dir");
        }
        let mut pg = Postgres {
            dir,
            bin,
            user,
            running: false,
        };
        let data = pg.data_dir();
        run(pg.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]));
        pg.resume();
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// A connection string for database `db` (key-value form, over the socket).
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} user=postgres dbname={db}",
            self.socket_dir().display()
        )
    }

    /// Create a database (each test its own, on one server).
    pub async fn create_database(&self, db: &str) {
        create_database(&self.url("postgres"), db).await
    }

    /// Stop the server (fast shutdown: sessions are closed).
    pub fn stop(&mut self) {
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-m", "fast", "-w", "-t", "60"]));
        self.running = false;
    }

    /// Start the server again (after [`Postgres::stop`]); returns once it accepts connections.
    pub fn resume(&mut self) {
        let opts = format!(
            "-k {} -c listen_addresses='' -c max_connections=200",
            self.socket_dir().display()
        );
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &opts, "-w", "-t", "60", "start"]));
        self.running = true;
        let ready = self.command("pg_isready");
        let socket = self.socket_dir().to_path_buf();
        let mut ready = ready;
        ready.arg("-h").arg(socket).args(["-U", "postgres", "-q"]);
        wait_until("PostgreSQL", Duration::from_secs(60), || {
            ready.status().is_ok_and(|s| s.success())
        });
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["stop", "-m", "immediate", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// An S3-compatible server on a loopback port, storing under a temp directory.
pub struct S3Server {
    root: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

fn s3_server() -> PathBuf {
    let p: PathBuf = match (
        std::env::var_os("SPARKWING_S3_SERVER"),
        std::env::var_os("SPARKWING_S3_SERVER_ROOT"),
    ) {
        (Some(bin), _) => bin.into(),
        (None, Some(root)) => PathBuf::from(root).join("bin/sparkwing-s3-test-server"),
        (None, None) => S3_SERVER_DEFAULT.into(),
    };
    assert!(p.exists(), "no S3 server at {}; {SETUP}", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl S3Server {
    /// Start with one bucket, `sparkwing`.
    pub fn start() -> S3Server {
        let root = tempfile::Builder::new()
            .prefix("sparkwing-s3-")
            .tempdir()
            .expect("a temp dir");
        let bucket = "sparkwing".to_string();
        // The server serves each directory under its root as a bucket.
        std::fs::create_dir(root.path().join(&bucket)).expect("the bucket's directory");
        let mut s = S3Server {
            root,
            port: free_port(),
            child: None,
            bucket,
            access_key: "sparkwing-test".into(),
            secret_key: "sparkwing-test-secret".into(),
        };
        s.resume();
        s
    }

    /// The endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The settings a client needs, as the `AWS_*` variables name them.
    pub fn aws_config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint_url", self.endpoint()),
            ("aws_access_key_id", self.access_key.clone()),
            ("aws_secret_access_key", self.secret_key.clone()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
        ]
    }

    /// Where the bucket's objects are on disk.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(&self.bucket)
    }

    /// Kill the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and directory; returns once it accepts connections.
    pub fn resume(&mut self) {
        let child = Command::new(s3_server())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                &self.access_key,
                "--secret-key",
                &self.secret_key,
            ])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the S3 server");
        self.child = Some(child);
        let port = self.port;
        let child = self.child.as_mut().expect("just set");
        wait_until("the S3 server", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the S3 server exited at start: {status}");
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
