//! Log ingest throughput of the API: lines per second a runner can post, by batch size, against
//! the baseline of the same lines appended to a local JSONL file (what `sparkwing run` does).
//!
//! ```sh
//! cargo run -p sparkwing-operator --release --example bench_log_ingest -- --lines 200000
//! ```
//!
//! The API runs in this process on 127.0.0.1 with its embedded stores in a temp dir and the
//! in-memory run backend (ingest does not touch Kubernetes); the client is a plain keep-alive
//! HTTP/1.1 connection, so the figure is the server's cost plus one loopback round trip per batch.
//! Not a test: it asserts no timing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use sparkwing_operator::api::{self, ApiConfig, ApiState, MemoryRuns};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn line_json(job: &str, seq: u64) -> String {
    serde_json::json!({
        "job": job,
        "seq": seq,
        "ts": "2026-11-27T10:00:00.000Z",
        "stream": "stdout",
        "line": format!("   Compiling crate-{seq} v0.1.0 (/work/src/crate-{seq}) step {seq}"),
    })
    .to_string()
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn post(&mut self, path: &str, token: &str, body: &str) -> (u16, String) {
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut buf = vec![0; len];
        self.reader.read_exact(&mut buf).unwrap();
        (status, String::from_utf8_lossy(&buf).into_owned())
    }
}

fn main() -> anyhow::Result<()> {
    let total = arg("--lines", 200_000) as u64;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let state = rt.block_on(ApiState::open(
        dir.path(),
        Arc::new(MemoryRuns::new()),
        ApiConfig::default(),
    ))?;
    let (token, _) = rt.block_on(state.store.create_token(
        "bench",
        vec!["admin".to_string()],
        None,
    ))?;
    let addr = api::spawn_serving(&rt, state, "127.0.0.1:0")?;

    println!("log ingest: {total} lines of ~90 bytes per case");
    println!(
        "{:<34} {:>10} {:>14} {:>10}",
        "case", "seconds", "lines/s", "requests"
    );

    // Baseline: the same JSON lines appended to a local file, flushed once per 1000 lines.
    let local = dir.path().join("local.jsonl");
    let t = Instant::now();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&local)?);
        for seq in 1..=total {
            writeln!(f, "{}", line_json("build", seq))?;
            if seq % 1000 == 0 {
                f.flush()?;
            }
        }
        f.flush()?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>10.3} {:>14.0} {:>10}",
        "baseline: local JSONL append",
        secs,
        total as f64 / secs,
        "-"
    );

    for batch in [10u64, 100, 500, 2000] {
        // Fewer lines for small batches: one request each.
        let lines = if batch < 100 { total / 10 } else { total };
        let job = format!("batch-{batch}");
        let mut conn = Conn::open(addr);
        let t = Instant::now();
        let mut requests = 0;
        let mut seq = 1;
        while seq <= lines {
            let end = (seq + batch - 1).min(lines);
            let body = format!(
                "[{}]",
                (seq..=end)
                    .map(|s| line_json(&job, s))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let (status, text) = conn.post("/api/v1/runs/ci/bench/logs", &token, &body);
            assert_eq!(status, 200, "{text}");
            requests += 1;
            seq = end + 1;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{:<34} {:>10.3} {:>14.0} {:>10}",
            format!("API ingest, {batch} lines/request"),
            secs,
            lines as f64 / secs,
            requests
        );
        // Check nothing was lost: a retried final batch is all duplicates.
        let (status, text) = conn.post(
            "/api/v1/runs/ci/bench/logs",
            &token,
            &format!("[{}]", line_json(&job, lines)),
        );
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"duplicates\":1"), "{text}");
    }
    Ok(())
}
