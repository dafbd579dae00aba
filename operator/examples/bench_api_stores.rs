//! The API on its two state backends (issue 14's figures), through HTTP on loopback. Prints
//! figures; asserts no timing.
//!
//! ```sh
//! cargo run -p sparkwing-operator --release --example bench_api_stores -- \
//!     [--backend embedded|shared|both] [--runs 10000] [--clients 200] [--requests 15] \
//!     [--log-mib 150] [--followers 20] [--lines 100]
//! ```
//!
//! Per backend — embedded (SQLite + files in a temp dir) and shared (PostgreSQL + the S3 test server,
//! started here as the tests start them) — in one process, with the runs of a "cluster" in memory
//! (`MemoryRuns`) shared by two API replicas on two ports over the same stores (embedded: one
//! pair of stores behind both, as the embedded stores serve one process):
//!
//! 1. `--runs` finished runs archived (their PipelineRuns gone), then the runs list's first page
//!    and pages by cursor (p50/p99 of 200 and of 100 requests);
//! 2. trigger p50/p99, one client, 100 triggers;
//! 3. `--clients` concurrent clients, `--requests` each, mixed: the runs list, a trigger, a log
//!    batch of 50 lines (each client posts to its own run as its runner): errors, p50/p99 by kind,
//!    the process's peak RSS (VmHWM, server and clients together);
//! 4. a `--log-mib` MiB log, then `?tail=100` p50/p99 (200 reads) and the RSS growth meanwhile;
//! 5. `--followers` SSE followers on replica B while a runner posts one line at a time to replica
//!    A: line posted → delivered to each follower, p50/p99 (`--lines` lines).
//!
//! Every request of 1–4 is a fresh connection (`Connection: close`), as independent clients are.

#[path = "common/http.rs"]
mod http;
#[path = "common/stores.rs"]
mod stores;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use http::{request, upload_one_file, vm_hwm_kib};
use sparkwing_api::client::{ApiClient, Flow};
use sparkwing_api::wire::{LogLine, LogStream};
use stores::{arg, embedded, num, p50_p99, serve_with_archive, shared, Backend, Served};

fn vm_hwm_mib() -> u64 {
    vm_hwm_kib() / 1024
}

struct Opts {
    runs: usize,
    clients: usize,
    requests: usize,
    log_mib: usize,
    followers: usize,
    lines: usize,
}

fn bench(rt: &tokio::runtime::Runtime, be: Backend, o: &Opts) {
    println!("\n== {}", be.name);
    let Served {
        admin,
        cluster,
        a,
        b,
    } = serve_with_archive(rt, &be, o.runs);
    let mut first: Vec<Duration> = (0..200)
        .map(|i| {
            let addr = if i % 2 == 0 { a } else { b };
            let t = Instant::now();
            let (s, body) = request(addr, "GET", "/api/v1/runs", &admin, b"");
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
            t.elapsed()
        })
        .collect();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/runs?cursor={c}"),
            None => "/api/v1/runs".to_string(),
        };
        let t = Instant::now();
        let (s, body) = request(a, "GET", &path, &admin, b"");
        pages.push(t.elapsed());
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        cursor = v["next"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    let mut filtered: Vec<Duration> = (0..100)
        .map(|_| {
            let t = Instant::now();
            let (s, _) = request(
                a,
                "GET",
                "/api/v1/runs?namespace=prod&phase=Failed",
                &admin,
                b"",
            );
            assert_eq!(s, 200);
            t.elapsed()
        })
        .collect();
    println!(
        "runs list, first page of 100: {}; {} pages by cursor: {}; namespace=prod&phase=Failed: {}",
        p50_p99(&mut first),
        pages.len(),
        p50_p99(&mut pages),
        p50_p99(&mut filtered)
    );

    // An upload to trigger from.
    let id = upload_one_file(a, &admin);
    let trigger_body =
        serde_json::json!({"pipeline": "build", "source": {"upload": {"id": id}}}).to_string();
    let trigger = |addr: SocketAddr| -> (u16, String) {
        let (s, body) = request(
            addr,
            "POST",
            "/api/v1/runs",
            &admin,
            trigger_body.as_bytes(),
        );
        let name = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["name"].as_str().map(str::to_string))
            .unwrap_or_default();
        (s, name)
    };

    // 2. Triggers, one client.
    let mut one: Vec<Duration> = (0..100)
        .map(|i| {
            let t = Instant::now();
            let (s, _) = trigger(if i % 2 == 0 { a } else { b });
            assert_eq!(s, 201);
            t.elapsed()
        })
        .collect();
    println!("trigger, one client: {}", p50_p99(&mut one));

    // 3. Mixed load: each client its own run (and runner token) to post logs to.
    let runs_of_clients: Vec<(String, String)> = (0..o.clients)
        .map(|_| {
            let (s, name) = trigger(a);
            assert_eq!(s, 201);
            let token = cluster.runner_token("ci", &name).expect("a runner token");
            (name, token)
        })
        .collect();
    let times: Arc<Mutex<[Vec<Duration>; 3]>> = Arc::default();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let rss_before = vm_hwm_mib();
    let t = Instant::now();
    let clients: Vec<_> = runs_of_clients
        .into_iter()
        .enumerate()
        .map(|(c, (run, token))| {
            let (times, errors, admin, trigger_body) = (
                times.clone(),
                errors.clone(),
                admin.clone(),
                trigger_body.clone(),
            );
            let requests = o.requests;
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut seq = 0u64;
                    for r in 0..requests {
                        let addr = if (c + r) % 2 == 0 { a } else { b };
                        let kind = (c + r) % 3;
                        let t = Instant::now();
                        let (s, body) = match kind {
                            0 => request(addr, "GET", "/api/v1/runs?namespace=ci", &admin, b""),
                            1 => request(addr, "POST", "/api/v1/runs", &admin, trigger_body.as_bytes()),
                            _ => {
                                let batch: Vec<serde_json::Value> = (0..50)
                                    .map(|_| {
                                        seq += 1;
                                        serde_json::json!({"job": "build", "seq": seq,
                                            "ts": "2026-12-04T10:00:00.000Z", "stream": "stdout",
                                            "line": format!("   Compiling crate-{seq} v0.1.0 step {seq}")})
                                    })
                                    .collect();
                                let body = serde_json::to_vec(&batch).unwrap();
                                request(addr, "POST", &format!("/api/v1/runs/ci/{run}/logs"), &token, &body)
                            }
                        };
                        let took = t.elapsed();
                        if (200..300).contains(&s) {
                            times.lock().unwrap()[kind].push(took);
                        } else {
                            errors.lock().unwrap().push(format!(
                                "{s}: {}",
                                String::from_utf8_lossy(&body)
                            ));
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let wall = t.elapsed();
    let mut times = times.lock().unwrap().clone();
    let errors = errors.lock().unwrap().clone();
    let mut all: Vec<Duration> = times.iter().flatten().copied().collect();
    println!(
        "{} clients × {} mixed requests in {:.1} s: {} errors{}; all {}; list {}; trigger {}; log batch {}; peak RSS {} -> {} MiB",
        o.clients,
        o.requests,
        wall.as_secs_f64(),
        errors.len(),
        errors.first().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        p50_p99(&mut all),
        p50_p99(&mut times[0]),
        p50_p99(&mut times[1]),
        p50_p99(&mut times[2]),
        rss_before,
        vm_hwm_mib()
    );

    // 4. A big log and its tail.
    let key = sparkwing_state::LogKey::new("ci", "seed-0", "build");
    let t = Instant::now();
    let mut seq = 0u64;
    rt.block_on(async {
        let mut written = 0usize;
        while written < o.log_mib << 20 {
            let batch: Vec<sparkwing_state::LogLine> = (0..2000)
                .map(|_| {
                    seq += 1;
                    let line = format!(
                        "   Compiling crate-{seq} v0.1.0 (/work/src/crate-{seq}) step {seq} {}",
                        "x".repeat(60)
                    );
                    written += line.len() + 80;
                    sparkwing_state::LogLine {
                        seq,
                        ts: "2026-12-04T10:00:00.000Z".into(),
                        stream: sparkwing_state::LogStream::Stdout,
                        line,
                        truncated: false,
                    }
                })
                .collect();
            // As the API ingests: the content, then the log index.
            sparkwing_state::ingest_lines(
                be.a.meta.as_ref(),
                be.a.content.as_ref(),
                &key,
                batch,
                u64::MAX,
            )
            .await
            .unwrap();
        }
    });
    println!(
        "a {} MiB log of {seq} lines written in {:.1} s",
        o.log_mib,
        t.elapsed().as_secs_f64()
    );
    let rss_before = vm_hwm_mib();
    let mut tails: Vec<Duration> = (0..200)
        .map(|i| {
            let t = Instant::now();
            let (s, body) = request(
                if i % 2 == 0 { a } else { b },
                "GET",
                "/api/v1/runs/ci/seed-0/logs?job=build&tail=100",
                &admin,
                b"",
            );
            let took = t.elapsed();
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["lines"][99]["seq"].as_u64(), Some(seq));
            took
        })
        .collect();
    println!(
        "tail 100 of it (200 reads, both replicas; the first read of each replica included): {}; peak RSS {} -> {} MiB",
        p50_p99(&mut tails),
        rss_before,
        vm_hwm_mib()
    );

    // 5. Followers on B, a runner posting to A.
    let (follow_run, runner) = {
        let (s, name) = trigger(a);
        assert_eq!(s, 201);
        let token = cluster.runner_token("ci", &name).unwrap();
        (name, token)
    };
    let url_a = format!("http://{a}");
    let url_b = format!("http://{b}");
    let posting = ApiClient::new(&url_a, &runner).unwrap();
    let (tx, rx) = mpsc::channel::<(usize, u64, Instant)>();
    let followers: Vec<_> = (0..o.followers)
        .map(|f| {
            let (tx, run, admin, url_b) =
                (tx.clone(), follow_run.clone(), admin.clone(), url_b.clone());
            std::thread::spawn(move || {
                let client = ApiClient::new(&url_b, &admin).unwrap();
                let ended = client.follow_logs("ci", &run, "follow", 0, 3, |l| {
                    if tx.send((f, l.seq, Instant::now())).is_err() {
                        return Flow::Stop;
                    }
                    Flow::Continue
                });
                if let Err(e) = ended {
                    eprintln!("follower {f}: {e}");
                }
            })
        })
        .collect();
    drop(tx);
    // Line 1 tells that every follower is connected.
    let post = |seq: u64| {
        posting
            .post_logs(
                "ci",
                &follow_run,
                &[LogLine {
                    job: "follow".into(),
                    seq,
                    ts: "2026-12-04T10:00:00.000Z".into(),
                    stream: LogStream::Stdout,
                    line: format!("line {seq}"),
                }],
            )
            .unwrap();
    };
    post(1);
    let mut connected = std::collections::BTreeSet::new();
    while connected.len() < o.followers {
        let (f, s, _) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every follower receives line 1");
        assert_eq!(s, 1);
        connected.insert(f);
    }
    let mut latencies = Vec::new();
    for seq in 2..=(o.lines as u64 + 1) {
        let sent = Instant::now();
        post(seq);
        let mut got = 0;
        while got < o.followers {
            let (_, s, at) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a follower receives the line");
            assert_eq!(s, seq);
            latencies.push(at.saturating_duration_since(sent));
            got += 1;
        }
    }
    println!(
        "{} followers on replica B, one line at a time posted to replica A ({} lines): posted -> delivered {}",
        o.followers,
        o.lines,
        p50_p99(&mut latencies)
    );
    // One more line, with nobody listening: each follower stops at it, before this backend's
    // stores go away under its server (a follow of a deleted data dir fails).
    drop(rx);
    post(o.lines as u64 + 2);
    for f in followers {
        f.join().unwrap();
    }
}

fn main() {
    let which = arg("--backend", "both");
    let o = Opts {
        runs: num("--runs", 10_000),
        clients: num("--clients", 200),
        requests: num("--requests", 15),
        log_mib: num("--log-mib", 150),
        followers: num("--followers", 20),
        lines: num("--lines", 100),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if which == "embedded" || which == "both" {
        let be = rt.block_on(embedded());
        bench(&rt, be, &o);
    }
    if which == "shared" || which == "both" {
        let be = rt.block_on(shared());
        bench(&rt, be, &o);
    }
}
