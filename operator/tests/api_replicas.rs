//! Two API replicas on one PostgreSQL server and one S3 server, all real processes started here,
//! served over loopback HTTP: what one replica stores the other serves, a follower on one (the
//! API's log follow, the dashboard's run page stream) sees what the other ingests; and the
//! servers' faults — PostgreSQL stopped (503,
//! retryable; the API recovers by itself), the S3 server stopped (uploads fail clearly, nothing
//! half-written becomes visible), a replica gone during ingest (its client retries on the other:
//! no acknowledged line lost, no 500).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparkwing_api::wire::{
    ExternalSource, LogLine, LogStream, Source, TriggerRequest, UploadSource,
};
use sparkwing_api::{ApiClient, Flow};
use sparkwing_operator::api::manifest::{sha256_hex, Manifest};
use sparkwing_operator::api::{spawn_serving, ApiConfig, ApiState, MemoryRuns};
use sparkwing_operator::store::Store;
use sparkwing_state::test_support::{create_database, Postgres, S3Server};

/// The shared servers and a database of this test's own.
struct Shared {
    pg: Postgres,
    s3: S3Server,
    metadata: String,
    objects: String,
}

impl Shared {
    fn start(rt: &tokio::runtime::Runtime, db: &str) -> Shared {
        let s3 = std::thread::spawn(S3Server::start);
        let pg = Postgres::start();
        let s3 = s3.join().unwrap();
        rt.block_on(create_database(&pg.url("postgres"), db));
        Shared {
            metadata: pg.url(db),
            objects: format!("s3://{}/{db}", s3.bucket),
            pg,
            s3,
        }
    }

    /// A replica's own clients of the shared stores.
    fn store(&self, rt: &tokio::runtime::Runtime) -> Store {
        rt.block_on(async {
            Store::new(
                sparkwing_state::open_metadata(&self.metadata)
                    .await
                    .unwrap(),
                sparkwing_state::open_content_with(&self.objects, &self.s3.aws_config())
                    .await
                    .unwrap(),
            )
        })
    }
}

/// An API replica serving on a loopback port from a runtime of its own (dropping the runtime is
/// the replica going away: its listener and every connection close).
struct Replica {
    url: String,
    state: ApiState,
    rt: Option<tokio::runtime::Runtime>,
}

fn replica(shared: &Shared, runs: &Arc<MemoryRuns>) -> Replica {
    replica_with(shared, runs, ApiConfig::default().follow_poll)
}

/// A replica whose followers poll the log index every `follow_poll`.
fn replica_with(shared: &Shared, runs: &Arc<MemoryRuns>, follow_poll: Duration) -> Replica {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = ApiState::new(
        shared.store(&rt),
        runs.clone(),
        ApiConfig {
            default_namespace: "ci".into(),
            follow_poll,
            ..ApiConfig::default()
        },
    );
    let addr = spawn_serving(&rt, state.clone(), "127.0.0.1:0").unwrap();
    Replica {
        url: format!("http://{addr}"),
        state,
        rt: Some(rt),
    }
}

fn admin_token(rt: &tokio::runtime::Runtime, r: &Replica) -> String {
    rt.block_on(
        r.state
            .store
            .create_token("root", vec!["admin".into()], None),
    )
    .unwrap()
    .0
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn manifest(content: &[u8]) -> Manifest {
    serde_json::from_value(serde_json::json!({"files": [{
        "path": "main.rs", "mode": 420, "size": content.len(), "sha256": sha256_hex(content)
    }]}))
    .unwrap()
}

fn line(seq: u64) -> LogLine {
    LogLine {
        job: "build".into(),
        seq,
        ts: String::new(),
        stream: LogStream::Stdout,
        line: format!("line {seq}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn two_replicas_serve_one_state() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let shared = Shared::start(&setup, "replicas");
    let runs = Arc::new(MemoryRuns::new());
    let (a, b) = (replica(&shared, &runs), replica(&shared, &runs));
    let admin = admin_token(&setup, &a);
    let (ca, cb) = (
        ApiClient::new(&a.url, &admin).unwrap(),
        ApiClient::new(&b.url, &admin).unwrap(),
    );

    // An upload through A; its blob read back through B (the runner's fetch).
    let content = b"fn main() { println!(\"replicated\"); }\n";
    let up = ca.create_upload(&manifest(content)).unwrap();
    assert_eq!(up.missing, [sha256_hex(content)]);
    ca.put_blob(&sha256_hex(content), &gzip(content)).unwrap();
    assert!(cb.get_upload(&up.id).is_ok());
    assert_eq!(
        cb.get_upload_blob(&up.id, &sha256_hex(content)).unwrap(),
        content
    );

    // A run triggered through B; its runner ingests through A while a follower is on B.
    let run = cb
        .trigger(&TriggerRequest {
            namespace: Some("ci".into()),
            ..TriggerRequest::new("build", Source::Upload(UploadSource { id: up.id.clone() }))
        })
        .unwrap();
    let (ns, name) = (run.namespace.clone(), run.name.clone());
    let runner = ApiClient::new(&a.url, &runs.runner_token(&ns, &name).unwrap()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let follower = {
        let (cb, ns, name) = (cb.clone(), ns.clone(), name.clone());
        std::thread::spawn(move || {
            cb.follow_logs(&ns, &name, "build", 0, 3, |l| {
                let _ = tx.send((l.seq, Instant::now()));
                Flow::Continue
            })
        })
    };
    let n = 40u64;
    let mut latencies = Vec::new();
    for seq in 1..=n {
        let sent = Instant::now();
        let report = runner.post_logs(&ns, &name, &[line(seq)]).unwrap();
        assert_eq!(report.accepted, 1);
        let (got, at) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the follower on B gets the line ingested on A");
        assert_eq!(got, seq);
        latencies.push(at - sent);
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    eprintln!("line ingested on A → follower on B: p50 {p50:?}, p99 {p99:?} ({n} lines, follow_poll 100 ms)");
    assert!(p50 < Duration::from_secs(1), "p50 {p50:?}");
    // The run ends: the follower on B drains and gets its `end`.
    runs.set_phase(&ns, &name, sparkwing_core::RunPhase::Succeeded);
    let (_, last) = follower.join().unwrap().unwrap();
    assert_eq!(last, n);
    drop((a, b, shared));
}

#[test]
fn postgres_stopped_answers_503_retryable_and_recovers() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let mut shared = Shared::start(&setup, "pgfault");
    let runs = Arc::new(MemoryRuns::new());
    let a = replica(&shared, &runs);
    let admin = admin_token(&setup, &a);
    assert_eq!(get(&a.url, "/api/v1/runs", &admin).0, 200);
    shared.pg.stop();
    // The body says what happened and that the same request may succeed later.
    let (status, body) = get(&a.url, "/api/v1/runs", &admin);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert_eq!(body["retryable"], true, "{body}");
    assert_eq!(get(&a.url, "/readyz", "").0, 503);
    shared.pg.resume();
    // The same process answers again once PostgreSQL is back (its pool replaces dead
    // connections); a few requests may still meet them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&a.url, "/api/v1/runs", &admin);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503s while recovering: {body}");
        assert!(Instant::now() < deadline, "no recovery: {body}");
        std::thread::yield_now();
    }
    assert_eq!(get(&a.url, "/readyz", "").0, 200);
}

#[test]
fn s3_stopped_fails_uploads_clearly_and_leaves_nothing_half_written() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let mut shared = Shared::start(&setup, "s3fault");
    let runs = Arc::new(MemoryRuns::new());
    let a = replica(&shared, &runs);
    let admin = admin_token(&setup, &a);
    let ca = ApiClient::new(&a.url, &admin).unwrap();
    // Past the single-PUT size: a multipart upload on S3.
    let content: Vec<u8> = (0..9 * 1024 * 1024u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let sha = sha256_hex(&content);
    let up = ca.create_upload(&manifest(&content)).unwrap();
    shared.s3.stop();
    let err = ca.put_blob(&sha, &gzip(&content)).unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    shared.s3.resume();
    // Nothing of the failed upload is visible: the blob is still missing, and sending it again
    // creates it.
    let again = ca.create_upload(&manifest(&content)).unwrap();
    assert_eq!(again.id, up.id);
    assert_eq!(again.missing, std::slice::from_ref(&sha));
    let stored = ca.put_blob(&sha, &gzip(&content)).unwrap();
    assert!(stored.created);
    assert_eq!(ca.get_upload_blob(&up.id, &sha).unwrap(), content);
}

#[test]
fn a_replica_gone_during_ingest_loses_no_acknowledged_line() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let shared = Shared::start(&setup, "replicagone");
    let runs = Arc::new(MemoryRuns::new());
    let (mut a, b) = (replica(&shared, &runs), replica(&shared, &runs));
    let admin = admin_token(&setup, &a);
    let run = ApiClient::new(&a.url, &admin)
        .unwrap()
        .trigger(&TriggerRequest {
            namespace: Some("ci".into()),
            ..TriggerRequest::new("build", Source::External(ExternalSource {}))
        })
        .unwrap();
    let (ns, name) = (run.namespace.clone(), run.name.clone());
    let token = run.runner_token.clone().unwrap();
    let on_a = ApiClient::new(&a.url, &token).unwrap();
    let on_b = ApiClient::new(&b.url, &token).unwrap();
    // Batches of 50 through A; A goes away (its runtime dropped: listener and connections
    // closed, requests in flight cut) while a batch is being sent from another thread.
    let mut acked = 0u64;
    for batch in 0..10u64 {
        let lines: Vec<_> = (batch * 50 + 1..=batch * 50 + 50).map(line).collect();
        on_a.post_logs(&ns, &name, &lines).unwrap();
        acked = batch * 50 + 50;
    }
    let sender = {
        let on_a = on_a.clone();
        let (ns, name) = (ns.clone(), name.clone());
        std::thread::spawn(move || {
            let mut seq = acked;
            loop {
                let lines: Vec<_> = (seq + 1..=seq + 50).map(line).collect();
                match on_a.post_logs(&ns, &name, &lines) {
                    Ok(_) => seq += 50,
                    Err(e) => return (seq, e),
                }
            }
        })
    };
    // Let the sender get going, then take A down under it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let key = sparkwing_state::LogKey::new(&ns, &name, "build");
    while setup
        .block_on(b.state.store.meta.log_index(&key))
        .unwrap()
        .is_none_or(|i| i.next_seq <= acked + 100)
    {
        assert!(Instant::now() < deadline, "the sender made no progress");
        std::thread::yield_now();
    }
    a.rt.take().unwrap().shutdown_background();
    let (acked_on_a, err) = sender.join().unwrap();
    assert!(err.is_unreachable() || err.status().is_some(), "{err}");
    assert_ne!(err.status(), Some(500), "{err}");
    // The runner retries from its last acknowledged line on B: duplicates of a batch A stored
    // but did not acknowledge are ignored, nothing is missing.
    let lines: Vec<_> = (acked_on_a + 1..=acked_on_a + 80).map(line).collect();
    let report = on_b.post_logs(&ns, &name, &lines).unwrap();
    assert_eq!(report.accepted + report.duplicates, 80, "{report:?}");
    let total = acked_on_a + 80;
    let seqs: Vec<u64> = on_b
        .read_logs(&ns, &name, "build", 0)
        .unwrap()
        .iter()
        .map(|l| l.seq)
        .collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
}

/// A run of an external source through `r`: (namespace, name, runner token).
fn external_run(r: &Replica, admin: &str) -> (String, String, String) {
    let run = ApiClient::new(&r.url, admin)
        .unwrap()
        .trigger(&TriggerRequest {
            namespace: Some("ci".into()),
            ..TriggerRequest::new("build", Source::External(ExternalSource {}))
        })
        .unwrap();
    (run.namespace, run.name, run.runner_token.unwrap())
}

/// Wait until `cond` holds, for at most 30 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::yield_now();
    }
}

/// Replica A, and replica B whose followers poll once an hour (what reaches them in time came
/// through the log feed), with a run whose runner posts to A and B's feed already listening.
struct FeedPair {
    shared: Shared,
    runs: Arc<MemoryRuns>,
    a: Replica,
    b: Replica,
    admin: String,
    ns: String,
    name: String,
    runner: ApiClient,
    /// The last seq posted.
    seq: u64,
}

impl FeedPair {
    fn start(db: &str) -> FeedPair {
        let setup = tokio::runtime::Runtime::new().unwrap();
        let shared = Shared::start(&setup, db);
        let runs = Arc::new(MemoryRuns::new());
        let (a, b) = (
            replica(&shared, &runs),
            replica_with(&shared, &runs, Duration::from_secs(3600)),
        );
        let admin = admin_token(&setup, &a);
        let (ns, name, token) = external_run(&a, &admin);
        let runner = ApiClient::new(&a.url, &token).unwrap();
        // B's feed listens once it has heard a line (it connects in the background at start).
        let mut seq = 0;
        wait_for("B's log feed hears a line ingested on A", || {
            seq += 1;
            runner.post_logs(&ns, &name, &[line(seq)]).unwrap();
            b.state.metrics.log_feed_events.get() > 0
        });
        FeedPair {
            shared,
            runs,
            a,
            b,
            admin,
            ns,
            name,
            runner,
            seq,
        }
    }
}

#[test]
fn lines_reach_another_replicas_followers_through_the_log_feed_not_its_poll() {
    let FeedPair {
        shared,
        runs,
        a,
        b,
        admin,
        ns,
        name,
        runner,
        mut seq,
    } = FeedPair::start("logfeed");
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let follower = {
        let cb = ApiClient::new(&b.url, &admin).unwrap();
        let (ns, name) = (ns.clone(), name.clone());
        std::thread::spawn(move || {
            cb.follow_logs(&ns, &name, "build", 0, 0, |l| {
                let _ = tx.send(l.seq);
                Flow::Continue
            })
        })
    };
    // What was stored before the follower came: from the content store.
    for want in 1..=seq {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), want);
    }
    // Then live, one at a time, each posted only after the previous one arrived.
    for _ in 0..20 {
        seq += 1;
        runner.post_logs(&ns, &name, &[line(seq)]).unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the follower on B gets the line through the feed");
        assert_eq!(got, seq);
    }
    // A batch too big for one notification, with a line too long for any: every line, in order.
    let mut big: Vec<LogLine> = (seq + 1..=seq + 300).map(line).collect();
    big[100].line = "x".repeat(20_000);
    runner.post_logs(&ns, &name, &big).unwrap();
    for want in seq + 1..=seq + 300 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), want);
    }
    seq += 300;
    // The run ends: the follower, looking at the run every second whatever its poll, drains
    // and gets its `end`.
    runs.set_phase(&ns, &name, sparkwing_core::RunPhase::Succeeded);
    let (_, last) = follower.join().unwrap().unwrap();
    assert_eq!(last, seq);
    drop((a, b, shared));
}

/// A dashboard session on the replica at `url`: the `Cookie` header's value (`POST /login`).
fn dashboard_session(url: &str, token: &str) -> String {
    use std::io::Read as _;
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = format!("token={token}&next=/");
    write!(
        s,
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().split(';').next().unwrap().to_string())
        })
        .expect("a session cookie")
}

/// The run page's event stream `path` on `url`, read on a thread: the `id` (last seq) of each
/// `logs` event is sent on the channel.
fn dashboard_log_events(url: &str, path: &str, cookie: &str) -> std::sync::mpsc::Receiver<u64> {
    use std::io::BufRead as _;
    let addr = url.trim_start_matches("http://").to_string();
    let (path, cookie) = (path.to_string(), cookie.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut r = std::io::BufReader::new(s);
        let (mut event, mut id, mut line) = (String::new(), None, String::new());
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if let Some(v) = l.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().parse::<u64>().ok();
            } else if l.is_empty() {
                if let (true, Some(seq)) = (event == "logs", id) {
                    if tx.send(seq).is_err() {
                        return;
                    }
                }
                (event, id) = (String::new(), None);
            }
        }
    });
    rx
}

#[test]
fn a_dashboard_stream_on_another_replica_gets_lines_through_the_log_feed_not_the_store() {
    let FeedPair {
        shared,
        runs: _,
        a,
        b,
        admin,
        ns,
        name,
        runner,
        mut seq,
    } = FeedPair::start("dashfeed");
    let cookie = dashboard_session(&b.url, &admin);
    let events = dashboard_log_events(
        &b.url,
        &format!("/ui/runs/{ns}/{name}/stream?job=build"),
        &cookie,
    );
    // What was stored before the stream opened (from B's recent lines or the content store).
    let mut last = 0;
    while last < seq {
        last = events.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    assert_eq!(last, seq);
    let store_reads = b.state.metrics.log_follow_store_reads.get();
    // Then live, one at a time: each arrives, told by the feed, without a read of the store.
    for _ in 0..20 {
        seq += 1;
        runner.post_logs(&ns, &name, &[line(seq)]).unwrap();
        let got = events
            .recv_timeout(Duration::from_secs(10))
            .expect("the stream on B gets the line through the feed");
        assert_eq!(got, seq);
    }
    assert_eq!(
        b.state.metrics.log_follow_store_reads.get(),
        store_reads,
        "live lines were served from B's recent lines, not read from the content store"
    );
    drop((a, b, shared));
}

#[test]
fn a_follower_waits_out_a_postgres_outage_instead_of_failing() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let mut shared = Shared::start(&setup, "followoutage");
    let runs = Arc::new(MemoryRuns::new());
    let a = replica(&shared, &runs);
    let admin = admin_token(&setup, &a);
    let (ns, name, token) = external_run(&a, &admin);
    let runner = ApiClient::new(&a.url, &token).unwrap();
    runner.post_logs(&ns, &name, &[line(1)]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let follower = {
        let ca = ApiClient::new(&a.url, &admin).unwrap();
        let (ns, name) = (ns.clone(), name.clone());
        // No reconnects allowed: the stream itself must survive the outage.
        std::thread::spawn(move || {
            ca.follow_logs(&ns, &name, "build", 0, 0, |l| {
                let _ = tx.send(l.seq);
                Flow::Continue
            })
        })
    };
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
    shared.pg.stop();
    wait_for("the follower's reads fail on the outage", || {
        a.state.metrics.log_follow_retries.get() > 0
    });
    assert!(!follower.is_finished(), "the stream ended on the outage");
    shared.pg.resume();
    // The runner's post may meet a dead pooled connection first (503, retryable).
    wait_for("a line is taken once PostgreSQL is back", || {
        match runner.post_logs(&ns, &name, &[line(2)]) {
            Ok(_) => true,
            Err(e) => {
                assert_eq!(e.status(), Some(503), "{e}");
                false
            }
        }
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
    runs.set_phase(&ns, &name, sparkwing_core::RunPhase::Succeeded);
    let (end, last) = follower.join().unwrap().unwrap();
    assert_eq!(last, 2);
    assert_eq!(end, sparkwing_api::StreamEnd::End);
}

/// A GET with its status and JSON body, error answers included (`token` empty: none).
fn get(url: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    let answer = ApiClient::new(url, token)
        .unwrap()
        .call("GET", path, &[], None)
        .unwrap();
    (
        answer.status,
        serde_json::from_slice(&answer.body).unwrap_or_default(),
    )
}
