//! Figures for the state layer (not a test): the runs list with 10,000 finished runs stored, and
//! reading the last 100 lines of a large log, on the embedded backend (SQLite + files) and the
//! shared one (PostgreSQL + an S3 server, started here as for the tests).
//!
//! `bash bench/state/run.sh` (release build). Options: `--runs N` (10000), `--log-mib M` (150),
//! `--only embedded|objects-on-files|shared`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sparkwing_state::test_support::{Postgres, S3Server};
use sparkwing_state::{
    open_content, open_content_with, open_metadata, ContentStore, LogKey, LogLine, MetadataStore,
    RunFilter, RunKey, RunSummary,
};

struct Args {
    runs: usize,
    log_mib: u64,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        runs: 10_000,
        log_mib: 150,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = value.parse().expect("--runs N"),
            "--log-mib" => a.log_mib = value.parse().expect("--log-mib M"),
            "--only" => a.only = Some(value),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn report(name: &str, samples: &mut [Duration]) {
    let n = samples.len();
    println!(
        "  {name:<44} n={n:<5} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        pct(samples, 0.5),
        pct(samples, 0.99),
        pct(samples, 1.0)
    );
}

async fn fill_runs(meta: &Arc<dyn MetadataStore>, n: usize) {
    let start = Instant::now();
    let pipelines = ["build", "test", "deploy", "lint"];
    let phases = ["Succeeded", "Failed", "Cancelled"];
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(n.div_ceil(8).max(1)) {
        let meta = meta.clone();
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for i in chunk {
                let created = 1_700_000_000_000 + i as i64 * 1_000;
                meta.upsert_run(&RunSummary {
                    key: RunKey::new(if i % 2 == 0 { "prod" } else { "ci" }, format!("run-{i:06}")),
                    pipeline: pipelines[i % 4].into(),
                    phase: phases[i % 3].into(),
                    created_ms: created,
                    finished_ms: Some(created + 60_000),
                    view: sparkwing_state::ViewJson::new(&serde_json::json!({"name": format!("run-{i:06}"), "triggeredBy": {"principal": "ci"}})).unwrap(),
                })
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    println!(
        "  stored {n} finished runs in {:.1} s (8 writers)",
        start.elapsed().as_secs_f64()
    );
}

async fn runs_list(meta: &Arc<dyn MetadataStore>) {
    // First pages, filtered and not, repeated.
    let filters = [
        RunFilter::default(),
        RunFilter {
            pipeline: Some("deploy".into()),
            ..Default::default()
        },
        RunFilter {
            namespace: Some("prod".into()),
            phase: Some("Failed".into()),
            ..Default::default()
        },
    ];
    for (name, f) in [
        "first page (100), no filter",
        "first page, pipeline=deploy",
        "first page, namespace+phase",
    ]
    .iter()
    .zip(&filters)
    {
        let mut samples = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let page = meta.list_runs(f, None, 100).await.unwrap();
            samples.push(t.elapsed());
            assert!(!page.runs.is_empty());
        }
        report(name, &mut samples);
    }
    // Every page, following cursors to the end.
    let mut samples = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let t = Instant::now();
        let page = meta
            .list_runs(&RunFilter::default(), cursor.as_deref(), 100)
            .await
            .unwrap();
        samples.push(t.elapsed());
        seen += page.runs.len();
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    report(&format!("every page by cursor ({seen} runs)"), &mut samples);
}

async fn big_log(
    content: &Arc<dyn ContentStore>,
    mib: u64,
    reopen: impl AsyncFnOnce() -> Arc<dyn ContentStore>,
) {
    let key = LogKey::new("ci", "run-big", "compile");
    let filler = "x".repeat(60);
    let target = mib * 1024 * 1024;
    let (mut bytes, mut seq) = (0u64, 0u64);
    let start = Instant::now();
    while bytes < target {
        let batch: Vec<LogLine> = (seq + 1..=seq + 2_000)
            .map(|s| {
                let mut l = LogLine::new(s, format!("{s:>9} compiling crate number {s} {filler}"));
                l.ts = "2026-01-01T10:00:00.000Z".into();
                l
            })
            .collect();
        let r = content.append_log(&key, &batch).await.unwrap();
        bytes += r.bytes;
        seq += 2_000;
    }
    println!(
        "  wrote a {:.0} MiB log ({seq} lines, batches of 2,000) in {:.1} s",
        bytes as f64 / 1048576.0,
        start.elapsed().as_secs_f64()
    );
    // A fresh process's view: its first read pays for learning the log (the file's index, or
    // the object listing); later reads do not.
    let content = reopen().await;
    let rss0 = rss_mib();
    let t = Instant::now();
    let tail = content.read_log_tail(&key, 100).await.unwrap();
    let first = t.elapsed();
    assert_eq!(tail.len(), 100);
    assert_eq!(tail.last().unwrap().seq, seq);
    println!(
        "  tail 100, first read after open            {:>8.2} ms",
        first.as_secs_f64() * 1000.0
    );
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let tail = content.read_log_tail(&key, 100).await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(tail.len(), 100);
    }
    report("tail 100, warm", &mut samples);
    let mut samples = Vec::new();
    for i in 0..200u64 {
        let after = (i * 7_919) % seq.saturating_sub(1_000).max(1);
        let t = Instant::now();
        let page = content.read_log_after(&key, after, 1_000).await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(page.first().unwrap().seq, after + 1);
    }
    report("1,000 lines after a random seq, warm", &mut samples);
    println!(
        "  RSS during the reads: {:.0} MiB (before: {:.0} MiB; the log is {:.0} MiB)",
        rss_mib(),
        rss0,
        bytes as f64 / 1048576.0
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    let want = |b: &str| a.only.as_deref().is_none_or(|o| o == b);
    if want("embedded") {
        println!("embedded (SQLite + files, temp dir)");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let meta = open_metadata(&root).await.unwrap();
        fill_runs(&meta, a.runs).await;
        runs_list(&meta).await;
        let content = open_content(&format!("{root}/content")).await.unwrap();
        let r = root.clone();
        big_log(&content, a.log_mib, async move || {
            open_content(&format!("{r}/content")).await.unwrap()
        })
        .await;
    }
    if want("objects-on-files") {
        // The shared backend's log code on a local file system: what the object layout costs
        // without an S3 server's per-request cost.
        println!("object layout on a local file system (file://), logs only");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/objects", dir.path().display());
        let content = open_content(&url).await.unwrap();
        big_log(&content, a.log_mib, async move || {
            open_content(&url).await.unwrap()
        })
        .await;
    }
    if want("shared") {
        println!("shared (PostgreSQL + s3s-fs on loopback)");
        let (pg, s3) = tokio::task::spawn_blocking(|| (Postgres::start(), S3Server::start()))
            .await
            .unwrap();
        let meta = open_metadata(&pg.url("postgres")).await.unwrap();
        fill_runs(&meta, a.runs).await;
        runs_list(&meta).await;
        let url = format!("s3://{}/state", s3.bucket);
        let content = open_content_with(&url, &s3.aws_config()).await.unwrap();
        let cfg = s3.aws_config();
        big_log(&content, a.log_mib, async move || {
            open_content_with(&url, &cfg).await.unwrap()
        })
        .await;
        drop((pg, s3));
    }
}
