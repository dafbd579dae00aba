//! The cluster dashboard's figures (issue 18), through HTTP on loopback. Prints figures; asserts
//! no timing.
//!
//! ```sh
//! cargo run -p sparkwing-operator --release --example bench_dashboard -- \
//!     [--backend embedded|shared|both] [--runs 10000] [--live 300] [--requests 200] \
//!     [--streams 5] [--lines 100]
//! ```
//!
//! Per backend — embedded (SQLite + files in a temp dir) and shared (PostgreSQL + the tests' S3
//! server, started here as the tests start them) — with the cluster's live runs in memory
//! (`MemoryRuns`) and two API replicas on two ports over the same stores (embedded: one pair of
//! stores behind both):
//!
//! 1. `--runs` finished runs archived and `--live` live ones, a session from `POST /login`, then
//!    the runs page (`GET /`), a filtered page (`/runs?namespace=prod&phase=Failed`) and a run's
//!    page, `--requests` each on fresh connections with the session cookie: p50/p99;
//! 2. `--streams` run pages' event streams (`/ui/runs/{ns}/{name}/stream?job=J`) open on replica
//!    B while a runner posts one line at a time to replica A (embedded: both on one replica, as
//!    its stores serve one process): line posted → its `logs` event read by each stream, p50/p99
//!    over `--lines` lines.

#[path = "common/http.rs"]
mod http;
#[path = "common/stores.rs"]
mod stores;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::{request, upload_one_file};
use sparkwing_api::client::ApiClient;
use sparkwing_api::wire::{LogLine, LogStream};
use stores::{arg, embedded, num, p50_p99, serve_with_archive, shared, Backend, Served};

/// One request on a fresh connection with extra headers: (status, head, body).
fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, out[end + 4..].to_vec())
}

struct Opts {
    runs: usize,
    live: usize,
    requests: usize,
    streams: usize,
    lines: usize,
}

/// Read one server-sent event stream until it ends, sending `(stream, seq, arrival)` for the
/// last seq of each `logs` event.
fn read_stream(
    addr: SocketAddr,
    path: &str,
    cookie: &str,
    stream: usize,
    tx: mpsc::Sender<(usize, u64, Instant)>,
) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (mut event, mut id) = (String::new(), None::<u64>);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if l.is_empty() {
            if event == "logs" {
                if let Some(seq) = id {
                    if tx.send((stream, seq, Instant::now())).is_err() {
                        return;
                    }
                }
            }
            event.clear();
            id = None;
        }
    }
}

fn bench(rt: &tokio::runtime::Runtime, be: Backend, o: &Opts) {
    println!("\n== {}", be.name);
    let Served {
        admin,
        cluster,
        a,
        b,
    } = serve_with_archive(rt, &be, o.runs);
    let id = upload_one_file(a, &admin);
    let trigger_body =
        serde_json::json!({"pipeline": "build", "source": {"upload": {"id": id}}}).to_string();
    let trigger = |addr: SocketAddr| -> String {
        let (s, body) = request(
            addr,
            "POST",
            "/api/v1/runs",
            &admin,
            trigger_body.as_bytes(),
        );
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for _ in 0..o.live {
        trigger(a);
    }
    let (s, head, body) = request_with(
        a,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("token={admin}&next=/").as_bytes(),
    );
    assert_eq!(s, 303, "{}", String::from_utf8_lossy(&body));
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let page = |addr: SocketAddr, path: &str| -> Duration {
        let t = Instant::now();
        let (s, _, body) = request_with(addr, "GET", path, &[("Cookie", &cookie)], b"");
        let took = t.elapsed();
        assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&body));
        took
    };
    let mut runs_page: Vec<Duration> = (0..o.requests)
        .map(|i| page(if i % 2 == 0 { a } else { b }, "/"))
        .collect();
    let mut filtered: Vec<Duration> = (0..o.requests)
        .map(|i| {
            page(
                if i % 2 == 0 { a } else { b },
                "/runs?namespace=prod&phase=Failed",
            )
        })
        .collect();
    let mut run_page: Vec<Duration> = (0..o.requests)
        .map(|i| page(if i % 2 == 0 { a } else { b }, "/runs/prod/seed-7"))
        .collect();
    println!(
        "{} archived + {} live runs: runs page {}; namespace=prod&phase=Failed {}; a run's page {}",
        o.runs,
        o.live,
        p50_p99(&mut runs_page),
        p50_p99(&mut filtered),
        p50_p99(&mut run_page),
    );

    // 2. Run pages' streams on B, a runner posting to A.
    let run = trigger(a);
    let runner = cluster.runner_token("ci", &run).expect("a runner token");
    let posting = ApiClient::new(&format!("http://{a}"), &runner).unwrap();
    let post = |seq: u64| {
        posting
            .post_logs(
                "ci",
                &run,
                &[LogLine {
                    job: "build".into(),
                    seq,
                    ts: "2026-12-04T10:00:00.000Z".into(),
                    stream: LogStream::Stdout,
                    line: format!("line {seq}"),
                }],
            )
            .unwrap();
    };
    let (tx, rx) = mpsc::channel::<(usize, u64, Instant)>();
    let path = format!("/ui/runs/ci/{run}/stream?job=build");
    // The embedded stores serve one API process: its streams are on the replica that ingests.
    let (at, where_) = if be.servers.is_some() {
        (b, "on B, lines posted to A")
    } else {
        (a, "on the replica the lines are posted to")
    };
    for f in 0..o.streams {
        let (tx, path, cookie) = (tx.clone(), path.clone(), cookie.clone());
        std::thread::spawn(move || read_stream(at, &path, &cookie, f, tx));
    }
    drop(tx);
    // Line 1 tells that every stream is open.
    post(1);
    let mut open = std::collections::BTreeSet::new();
    while open.len() < o.streams {
        let (f, seq, _) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every stream reads line 1");
        assert_eq!(seq, 1);
        open.insert(f);
    }
    let mut delays = Vec::new();
    for seq in 2..=(o.lines as u64 + 1) {
        let sent = Instant::now();
        post(seq);
        let mut got = 0;
        while got < o.streams {
            let (_, s, at) = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("line {seq} reaches every stream"));
            if s == seq {
                delays.push(at - sent);
                got += 1;
            }
        }
    }
    println!(
        "{} run-page streams {where_}, one line at a time ({} lines): line posted -> its logs event read: {}",
        o.streams,
        o.lines,
        p50_p99(&mut delays)
    );
}

fn main() {
    let o = Opts {
        runs: num("--runs", 10_000),
        live: num("--live", 300),
        requests: num("--requests", 200),
        streams: num("--streams", 5),
        lines: num("--lines", 100),
    };
    let backend = arg("--backend", "both");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if backend == "embedded" || backend == "both" {
        let be = rt.block_on(embedded());
        bench(&rt, be, &o);
    }
    if backend == "shared" || backend == "both" {
        let be = rt.block_on(shared());
        bench(&rt, be, &o);
    }
}
