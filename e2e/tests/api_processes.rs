//! Two `sparkwing-operator api` processes — the real binary, as the chart's `api.replicas: 2`
//! runs it — on one PostgreSQL server and one S3 server (`tools/s3-test-server`), both started
//! here, with the test bed's kube-apiserver holding the runs. One replica is killed with SIGKILL
//! in the middle of a blob upload and in the middle of a log ingest: nothing half-written becomes
//! visible, the client's retries through the other replica lose no acknowledged line, and no
//! request answers 500, before or after the killed replica is started again.
//!
//! The binary is `target/<profile>/sparkwing-operator` (`make test-e2e` builds it). No runner
//! runs: the test plays the runner with the run's own token (an external run).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparkwing_api::wire::{ExternalSource, LogLine, LogStream, Source, TriggerRequest};
use sparkwing_api::{ApiClient, Flow};
use sparkwing_e2e::TestBed;
use sparkwing_state::test_support::{create_database, Postgres, S3Server};

/// Anything here, on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// `target/<profile>/sparkwing-operator`, next to this test's directory.
fn operator_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("a cargo target directory")
        .join("sparkwing-operator");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first (`cargo build -p sparkwing-operator --bin \
         sparkwing-operator`, which `make test-e2e` does)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shared stores' servers and what a replica needs to reach them.
struct Shared {
    _pg: Postgres,
    s3: S3Server,
    metadata: String,
    objects: String,
}

/// One `sparkwing-operator api` process on a fixed port (a restart keeps it).
struct Replica {
    name: &'static str,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Replica {
    fn new(name: &'static str, bed: &TestBed, shared: &Shared, ns: &str, admin: &Path) -> Replica {
        let port = free_port();
        let args = [
            "api",
            "--api-addr",
            &format!("127.0.0.1:{port}"),
            "--metadata",
            &shared.metadata,
            "--objects",
            &shared.objects,
            "--namespace",
            ns,
            "--bootstrap-admin-token-file",
            &admin.to_string_lossy(),
            "--gc-interval-seconds",
            "0",
        ]
        .map(String::from)
        .to_vec();
        let mut env: Vec<(String, String)> = shared
            .s3
            .aws_config()
            .into_iter()
            .map(|(k, v)| (k.to_uppercase(), v))
            .collect();
        env.push((
            "KUBECONFIG".into(),
            bed.kubeconfig_path().to_string_lossy().into_owned(),
        ));
        env.push(("RUST_LOG".into(), "info".into()));
        let mut r = Replica {
            name,
            port,
            child: None,
            log: bed.dir().join(format!("api-{name}-{port}.log")),
            args,
            env,
        };
        r.start();
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(operator_binary())
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if raw(self.port, "GET", "/readyz", "", b"").is_some_and(|(s, _)| s == 200) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("replica {} exited ({status}):\n{}", self.name, self.tail());
            }
            assert!(
                Instant::now() < deadline,
                "replica {} not ready:\n{}",
                self.name,
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no cleanup, requests in flight cut.
    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One request on a fresh connection: `(status, body)`, `None` when the connection failed.
fn raw(port: u16, method: &str, path: &str, token: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &out[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return Some((status, dechunk(body)?));
    }
    Some((status, body.to_vec()))
}

/// An HTTP/1.1 chunked body's content (`None` when it is cut short).
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

fn line(seq: u64) -> LogLine {
    LogLine {
        job: "build".into(),
        seq,
        ts: "2026-12-04T10:00:00.000Z".into(),
        stream: LogStream::Stdout,
        line: format!("line {seq} {}", "x".repeat(80)),
    }
}

/// The bed, the shared servers, two replicas and an admin token they both know.
struct Env {
    _ns: sparkwing_e2e::TestNamespace,
    a: Replica,
    b: Replica,
    admin: String,
    _shared: Shared,
}

async fn env(hint: &str) -> Env {
    let bed = TestBed::shared().await.unwrap();
    bed.install_crds().await.unwrap();
    let ns = bed.namespace(hint).await.unwrap();
    let db = hint.replace('-', "_");
    let (pg, s3) = tokio::task::spawn_blocking(|| {
        let s3 = std::thread::spawn(S3Server::start);
        (Postgres::start(), s3.join().unwrap())
    })
    .await
    .unwrap();
    create_database(&pg.url("postgres"), &db).await;
    let shared = Shared {
        metadata: pg.url(&db),
        objects: format!("s3://{}/{db}", s3.bucket),
        _pg: pg,
        s3,
    };
    let admin = format!("swt_{}", "e2".repeat(24));
    let admin_file = bed.dir().join(format!("{hint}-admin-token"));
    std::fs::write(&admin_file, &admin).unwrap();
    let name = ns.name().to_string();
    let (a, b, shared) = tokio::task::spawn_blocking(move || {
        let a = Replica::new("a", bed, &shared, &name, &admin_file);
        let b = Replica::new("b", bed, &shared, &name, &admin_file);
        (a, b, shared)
    })
    .await
    .unwrap();
    Env {
        _ns: ns,
        a,
        b,
        admin,
        _shared: shared,
    }
}

/// `len` pseudo-random bytes (gzip cannot shrink them) from `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// SIGKILL of a replica during a blob's PUT — once with half the body sent (the replica is
/// reading it), once with all of it sent (the replica is storing it: above the object store's
/// single-PUT size, a multipart upload) — then through the other replica: the blob is either
/// missing (and a retry stores it) or whole, never partial; the killed replica, started again,
/// serves every blob whole; no replica answered 500.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_during_an_upload_leaves_nothing_half_written() {
    let mut env = env("api-kill-upload").await;
    tokio::task::spawn_blocking(move || {
        let mut blobs = Vec::new();
        for (seed, sent_half) in [(7u64, true), (11, false)] {
            let content = noise(12 << 20, seed);
            let sha = sha256_hex(&content);
            let body = gzip(&content);
            let manifest = serde_json::json!({"files": [{"path": "big.bin", "mode": 420,
                "size": content.len(), "sha256": sha}]})
            .to_string();
            let upload = |port: u16| -> serde_json::Value {
                let (s, answer) = raw(
                    port,
                    "POST",
                    "/api/v1/uploads",
                    &env.admin,
                    manifest.as_bytes(),
                )
                .expect("an upload answer");
                assert_eq!(s, 200, "{}", String::from_utf8_lossy(&answer));
                serde_json::from_slice(&answer).unwrap()
            };
            let first = upload(env.b.port);
            assert_eq!(first["missing"], serde_json::json!([sha]));

            let mut conn = TcpStream::connect(("127.0.0.1", env.a.port)).unwrap();
            write!(
                conn,
                "PUT /api/v1/blobs/{sha} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
                 Content-Length: {}\r\n\r\n",
                env.admin,
                body.len()
            )
            .unwrap();
            // write_all returns once A has taken most of it (socket buffers hold far less than
            // 6 MiB): A is inside the request when it dies.
            let sent = if sent_half {
                body.len() / 2
            } else {
                body.len()
            };
            conn.write_all(&body[..sent]).unwrap();
            env.a.kill();
            drop(conn);

            let after = upload(env.b.port);
            let missing = after["missing"] == serde_json::json!([sha]);
            eprintln!(
                "killed with {} of the body sent: the blob is {}",
                if sent_half { "half" } else { "all" },
                if missing { "missing" } else { "stored whole" }
            );
            if missing {
                let (s, put) = raw(
                    env.b.port,
                    "PUT",
                    &format!("/api/v1/blobs/{sha}"),
                    &env.admin,
                    &body,
                )
                .unwrap();
                assert_eq!(s, 201, "{}", String::from_utf8_lossy(&put));
            } else {
                assert_eq!(after["missing"], serde_json::json!([]), "{after}");
            }
            assert_eq!(upload(env.b.port)["missing"], serde_json::json!([]));
            env.a.start();
            blobs.push((first["id"].as_str().unwrap().to_string(), sha, content));
        }
        // Every blob, read through A (started again), is the whole content.
        for (id, sha, content) in &blobs {
            let (s, got) = raw(
                env.a.port,
                "GET",
                &format!("/api/v1/uploads/{id}/blobs/{sha}"),
                &env.admin,
                b"",
            )
            .unwrap();
            assert_eq!(s, 200);
            assert!(
                got == *content,
                "blob {sha} read through A differs from its content"
            );
        }
        let run = ApiClient::new(&env.a.url(), &env.admin)
            .unwrap()
            .trigger(&TriggerRequest::new(
                "build",
                Source::Upload(sparkwing_api::wire::UploadSource {
                    id: blobs[1].0.clone(),
                }),
            ))
            .unwrap();
        assert!(!run.name.is_empty());
        for r in [&env.a, &env.b] {
            let (_, metrics) = raw(r.port, "GET", "/metrics", "", b"").unwrap();
            let text = String::from_utf8_lossy(&metrics);
            assert!(
                !text
                    .lines()
                    .any(|l| l.starts_with("sparkwing_api_requests_total")
                        && l.contains("code=\"500\"")),
                "replica {} answered 500:\n{text}",
                r.name
            );
        }
    })
    .await
    .unwrap();
}

/// SIGKILL of the replica a runner posts its log to, mid-batch: the runner goes on through the
/// other replica from its last acknowledged line; the log is every line once, in order, read
/// through either replica, and a follower on B saw exactly that.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_during_log_ingest_loses_no_acknowledged_line() {
    let mut env = env("api-kill-ingest").await;
    tokio::task::spawn_blocking(move || {
        const TOTAL: u64 = 20_000;
        const BATCH: u64 = 200;
        let admin_b = ApiClient::new(&env.b.url(), &env.admin).unwrap();
        let run = admin_b
            .trigger(&TriggerRequest::new(
                "build",
                Source::External(ExternalSource {}),
            ))
            .unwrap();
        let (ns, name) = (run.namespace.clone(), run.name.clone());
        let token = run.runner_token.clone().expect("an external run's token");
        let follower = {
            let client = ApiClient::new(&env.b.url(), &env.admin).unwrap();
            let (ns, name) = (ns.clone(), name.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                client
                    .follow_logs(&ns, &name, "build", 0, 5, |l| {
                        seen.push(l.seq);
                        if l.seq >= TOTAL {
                            Flow::Stop
                        } else {
                            Flow::Continue
                        }
                    })
                    .unwrap();
                seen
            })
        };
        let acked = Arc::new(AtomicU64::new(0));
        let writer = {
            let acked = acked.clone();
            let (on_a, on_b) = (
                ApiClient::new(&env.a.url(), &token).unwrap(),
                ApiClient::new(&env.b.url(), &token).unwrap(),
            );
            let (ns, name) = (ns.clone(), name.clone());
            std::thread::spawn(move || {
                let mut on_b_now = false;
                let mut failures = 0;
                let mut seq = 0;
                while seq < TOTAL {
                    let lines: Vec<LogLine> = (seq + 1..=seq + BATCH).map(line).collect();
                    let client = if on_b_now { &on_b } else { &on_a };
                    match client.post_logs(&ns, &name, &lines) {
                        Ok(report) => {
                            assert_eq!(report.accepted + report.duplicates, BATCH, "{report:?}");
                            seq += BATCH;
                            acked.store(seq, Ordering::SeqCst);
                        }
                        // A is gone: the same batch again, through B.
                        Err(e) if e.is_unreachable() && !on_b_now => {
                            on_b_now = true;
                            failures += 1;
                        }
                        Err(e) => panic!("batch after seq {seq}: {e}"),
                    }
                }
                failures
            })
        };
        let deadline = Instant::now() + WAIT;
        while acked.load(Ordering::SeqCst) < TOTAL / 4 {
            assert!(Instant::now() < deadline, "the writer made no progress");
            std::thread::yield_now();
        }
        env.a.kill();
        let failures = writer.join().unwrap();
        assert_eq!(failures, 1, "the writer switched to B once");
        let want: Vec<u64> = (1..=TOTAL).collect();
        let through_b: Vec<u64> = admin_b
            .read_logs(&ns, &name, "build", 0)
            .unwrap()
            .iter()
            .map(|l| l.seq)
            .collect();
        assert!(
            through_b == want,
            "B has {} lines, not 1..={TOTAL} once each",
            through_b.len()
        );
        assert!(
            follower.join().unwrap() == want,
            "the follower on B saw every line once"
        );
        env.a.start();
        let admin_a = ApiClient::new(&env.a.url(), &env.admin).unwrap();
        let through_a: Vec<u64> = admin_a
            .read_logs(&ns, &name, "build", 0)
            .unwrap()
            .iter()
            .map(|l| l.seq)
            .collect();
        assert!(through_a == want, "A, started again, reads the same log");
    })
    .await
    .unwrap();
}
