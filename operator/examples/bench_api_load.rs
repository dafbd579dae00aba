//! The API under load: `/healthz` and trigger latency with many runs stored while 20 clients
//! trigger at once, the runs list with those runs, and the memory of concurrent tail reads of a
//! big log. Prints figures; asserts no timing.
//!
//! ```sh
//! cargo run -p sparkwing-operator --release --example bench_api_load -- \
//!     --runs 3000 --concurrency 20 --triggers 10 --log-mib 150 --readers 8
//! ```
//!
//! In one process: the API on 127.0.0.1 (the embedded stores in a temp dir, runs in memory).
//! Seeding writes the stored state directly, as a server that has run `--runs` runs has it: a
//! token record per run, the runs in the backend (half finished and archived), and a job log of
//! `--log-mib` MiB. Then:
//!
//! 1. `/healthz` p50/p99 idle (200 probes);
//! 2. `--concurrency` clients trigger `--triggers` runs each while a prober times `/healthz`
//!    every 10 ms: trigger p50/p99 and `/healthz` p50/p99 under that load;
//! 3. `GET /api/v1/runs` (the first page, or every run on servers without paging) p50 of 5;
//! 4. `--readers` concurrent reads of the log's last 100 lines (`?after=`): wall time and the
//!    growth of the process's peak RSS (VmHWM).
//!
//! Every request is a fresh connection (`Connection: close`), as independent clients are.

#[path = "common/http.rs"]
mod http;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{quantile, request, upload_one_file, vm_hwm_kib};
use sparkwing_operator::api::{self, ApiConfig, ApiState, MemoryRuns};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn sha256_hex(b: &[u8]) -> String {
    api::manifest::sha256_hex(b)
}

fn main() {
    let runs = arg("--runs", 3000);
    let concurrency = arg("--concurrency", 20);
    let triggers = arg("--triggers", 10);
    let log_mib = arg("--log-mib", 150);
    let readers = arg("--readers", 8);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let admin = format!("swt_{}", "ab".repeat(32));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = Arc::new(MemoryRuns::new());
    let st = rt
        .block_on(ApiState::open(
            &data,
            backend.clone(),
            ApiConfig {
                default_namespace: "ci".into(),
                ..ApiConfig::default()
            },
        ))
        .unwrap();

    // ---- seed: a token per run (half of them revoked) and the admin's ----
    let t = Instant::now();
    let record = |id: String, token: &str, principal: String, scopes: Vec<String>, revoked| {
        sparkwing_state::TokenRecord {
            id,
            hash: sha256_hex(token.as_bytes()),
            principal,
            scopes,
            created_ms: 1_767_225_600_000,
            expires_ms: None,
            revoked,
            run: None,
            upload: Some("0".repeat(64)),
            pool_uid: None,
        }
    };
    let meta = st.store.meta.clone();
    rt.block_on(async {
        let admin_rec = record(
            "000000000000".into(),
            &admin,
            "bench".into(),
            vec!["admin".into()],
            false,
        );
        meta.insert_token(&admin_rec).await.unwrap();
        for i in 0..runs {
            let rec = record(
                format!("{:012x}", i + 1),
                &format!("swr_seed{i}"),
                format!("runner:ci/seed-{i}"),
                vec![format!("run:ci/seed-{i}")],
                i % 2 == 0,
            );
            meta.insert_token(&rec).await.unwrap();
        }
    });
    // ---- seed: the runs, half finished and archived ----
    for i in 0..runs {
        let mut run: sparkwing_crds::PipelineRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
            "metadata": {"name": format!("seed-{i}"), "namespace": "ci",
                         "creationTimestamp": format!("2026-01-01T{:02}:{:02}:{:02}Z", i / 3600 % 24, i / 60 % 60, i % 60)},
            "spec": {"pipeline": "build", "source": {"git": {"url": "https://example.test/r.git", "revision": "main"}}},
        }))
        .unwrap();
        if i % 2 == 0 {
            run.status = Some(sparkwing_core::reconcile::status::RunStatus {
                phase: sparkwing_core::reconcile::status::RunPhase::Succeeded,
                ..Default::default()
            });
            rt.block_on(st.store.archive(&run)).unwrap();
        }
        backend.insert(run);
    }
    // ---- seed: a big job log ----
    let log_dir = data.join("logs/ci/seed-1");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut log =
        std::io::BufWriter::new(std::fs::File::create(log_dir.join("build.jsonl")).unwrap());
    let mut seq = 0u64;
    let mut written = 0usize;
    while written < log_mib << 20 {
        seq += 1;
        let line = serde_json::json!({"seq": seq, "ts": "2026-11-27T10:00:00.000Z", "stream": "stdout",
            "line": format!("   Compiling crate-{seq} v0.1.0 (/work/src/crate-{seq}) step {seq} {}", "x".repeat(60))})
        .to_string();
        written += line.len() + 1;
        log.write_all(line.as_bytes()).unwrap();
        log.write_all(b"\n").unwrap();
    }
    log.flush().unwrap();
    drop(log);
    println!(
        "seeded {runs} runs ({} archived), {} token records, a {log_mib} MiB log of {seq} lines in {:.1} s",
        runs.div_ceil(2),
        runs + 1,
        t.elapsed().as_secs_f64()
    );

    let addr = api::spawn_serving(&rt, st, "127.0.0.1:0").unwrap();

    // An upload to trigger from.
    let id = upload_one_file(addr, &admin);

    // 1. /healthz idle.
    let mut idle: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let (s, _) = request(addr, "GET", "/healthz", "", b"");
            assert_eq!(s, 200);
            t.elapsed()
        })
        .collect();
    println!(
        "/healthz idle: p50 {}, p99 {}",
        ms(quantile(&mut idle, 0.5)),
        ms(quantile(&mut idle, 0.99))
    );

    // 2. Concurrent triggers with a /healthz prober.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probes = Arc::new(Mutex::new(Vec::new()));
    let prober = {
        let (done, probes) = (done.clone(), probes.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let (s, _) = request(addr, "GET", "/healthz", "", b"");
                assert_eq!(s, 200);
                probes.lock().unwrap().push(t.elapsed());
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let trigger_times = Arc::new(Mutex::new(Vec::new()));
    let t = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (times, id, admin) = (trigger_times.clone(), id.clone(), admin.clone());
            std::thread::spawn(move || {
                let body =
                    serde_json::json!({"pipeline": "build", "source": {"upload": {"id": id}}})
                        .to_string();
                for _ in 0..triggers {
                    let t = Instant::now();
                    let (s, b) = request(addr, "POST", "/api/v1/runs", &admin, body.as_bytes());
                    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
                    times.lock().unwrap().push(t.elapsed());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let wall = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    prober.join().unwrap();
    let mut tt = trigger_times.lock().unwrap().clone();
    let mut hp = probes.lock().unwrap().clone();
    println!(
        "{} triggers by {concurrency} clients in {:.2} s: trigger p50 {}, p99 {}; /healthz meanwhile ({} probes) p50 {}, p99 {}",
        tt.len(),
        wall.as_secs_f64(),
        ms(quantile(&mut tt, 0.5)),
        ms(quantile(&mut tt, 0.99)),
        hp.len(),
        ms(quantile(&mut hp, 0.5)),
        ms(quantile(&mut hp, 0.99)),
    );

    // 3. The runs list.
    let mut list: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let (s, b) = request(addr, "GET", "/api/v1/runs?namespace=ci", &admin, b"");
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            t.elapsed()
        })
        .collect();
    println!(
        "GET /api/v1/runs?namespace=ci with {} runs: p50 {}",
        runs + concurrency * triggers,
        ms(quantile(&mut list, 0.5))
    );

    // 4. Concurrent tail reads of the big log.
    let before = vm_hwm_kib();
    let t = Instant::now();
    let tail = seq.saturating_sub(100);
    let readers: Vec<_> = (0..readers)
        .map(|_| {
            let admin = admin.clone();
            std::thread::spawn(move || {
                let (s, b) = request(
                    addr,
                    "GET",
                    &format!("/api/v1/runs/ci/seed-1/logs?job=build&after={tail}"),
                    &admin,
                    b"",
                );
                assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                v["lines"].as_array().map_or(0, Vec::len)
            })
        })
        .collect();
    let got: Vec<usize> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    println!(
        "{} concurrent tail reads (after={tail}) of the {log_mib} MiB log: {:.2} s, {} lines each, peak RSS {} -> {} MiB (+{} MiB)",
        got.len(),
        t.elapsed().as_secs_f64(),
        got[0],
        before / 1024,
        vm_hwm_kib() / 1024,
        (vm_hwm_kib() - before) / 1024
    );
}
