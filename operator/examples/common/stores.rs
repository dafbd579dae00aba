//! What the API benches on the state backends share: their options, the two backends (embedded:
//! SQLite + files in a temp dir; shared: PostgreSQL + the S3 test server, started here as the
//! tests start them), finished runs to archive, p50/p99. Included by each bench with
//! `#[path = "common/stores.rs"] mod stores;`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparkwing_operator::api::{self, ApiConfig, ApiState, MemoryRuns};
use sparkwing_operator::store::Store;
use sparkwing_state::test_support::{create_database, Postgres, S3Server};

use super::http::quantile;

pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

pub fn num(name: &str, default: usize) -> usize {
    arg(name, &default.to_string())
        .parse()
        .unwrap_or_else(|_| panic!("{name} takes a number"))
}

pub fn p50_p99(v: &mut [Duration]) -> String {
    let (a, b) = (quantile(v, 0.5), quantile(v, 0.99));
    format!(
        "p50 {:.2} ms, p99 {:.2} ms",
        a.as_secs_f64() * 1000.0,
        b.as_secs_f64() * 1000.0
    )
}

/// What one backend needs to stay up: the servers of the shared one, the temp dir of both.
pub struct Backend {
    pub name: &'static str,
    pub a: Store,
    pub b: Store,
    pub servers: Option<(Postgres, S3Server)>,
    pub _dir: tempfile::TempDir,
}

pub async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_string_lossy().into_owned();
    // The embedded stores are for one API process: both servers share one pair of stores (a
    // second process's file index would not see the first one's appends).
    let a = Store::open(&url, &url).await.unwrap();
    let b = a.clone();
    Backend {
        name: "embedded (SQLite + files; one store behind both servers)",
        a,
        b,
        servers: None,
        _dir: dir,
    }
}

pub async fn shared() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (pg, s3) = tokio::task::spawn_blocking(|| (Postgres::start(), S3Server::start()))
        .await
        .unwrap();
    create_database(&pg.url("postgres"), "bench").await;
    let objects = format!("s3://{}/bench", s3.bucket);
    let open = || async {
        Store::new(
            sparkwing_state::open_metadata(&pg.url("bench"))
                .await
                .unwrap(),
            sparkwing_state::open_content_with(&objects, &s3.aws_config())
                .await
                .unwrap(),
        )
    };
    let (a, b) = (open().await, open().await);
    Backend {
        name: "shared (PostgreSQL + the S3 test server)",
        a,
        b,
        servers: Some((pg, s3)),
        _dir: dir,
    }
}

pub fn finished_run(i: usize) -> sparkwing_crds::PipelineRun {
    let pipeline = ["build", "test", "deploy", "lint"][i % 4];
    let mut run: sparkwing_crds::PipelineRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": format!("seed-{i}"), "namespace": if i.is_multiple_of(2) { "ci" } else { "prod" },
                     "creationTimestamp": format!("2026-01-{:02}T{:02}:{:02}:{:02}Z", 1 + i / 86_400 % 28, i / 3600 % 24, i / 60 % 60, i % 60)},
        "spec": {"pipeline": pipeline,
                 "source": {"git": {"url": "https://example.test/r.git", "revision": "main"}}},
    }))
    .unwrap();
    run.status = Some(sparkwing_core::reconcile::status::RunStatus {
        phase: if i.is_multiple_of(7) {
            sparkwing_core::reconcile::status::RunPhase::Failed
        } else {
            sparkwing_core::reconcile::status::RunPhase::Succeeded
        },
        ..Default::default()
    });
    run
}

/// Two API replicas serving `be` (A on its store `a`, B on `b`) over one "cluster" of live runs
/// in memory, with an admin token and `runs` finished runs archived (8 writers).
pub struct Served {
    pub admin: String,
    pub cluster: Arc<MemoryRuns>,
    pub a: SocketAddr,
    pub b: SocketAddr,
}

pub fn serve_with_archive(rt: &tokio::runtime::Runtime, be: &Backend, runs: usize) -> Served {
    let admin = format!("swt_{}", "cd".repeat(32));
    let cluster = Arc::new(MemoryRuns::new());
    let config = || ApiConfig {
        default_namespace: "ci".into(),
        gc_every: None,
        ..ApiConfig::default()
    };
    let st_a = ApiState::new(be.a.clone(), cluster.clone(), config());
    let st_b = ApiState::new(be.b.clone(), cluster.clone(), config());
    rt.block_on(async {
        let rec = sparkwing_state::TokenRecord {
            id: "000000000000".into(),
            hash: api::manifest::sha256_hex(admin.as_bytes()),
            principal: "bench".into(),
            scopes: vec!["admin".into()],
            created_ms: 1_767_225_600_000,
            expires_ms: None,
            revoked: false,
            run: None,
            upload: None,
            pool_uid: None,
        };
        be.a.meta.insert_token(&rec).await.unwrap();
    });
    let t = Instant::now();
    rt.block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (store, next) = (be.a.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= runs {
                            break;
                        }
                        store.archive(&finished_run(i)).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    });
    println!(
        "archived {runs} finished runs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Served {
        admin,
        a: api::spawn_serving(rt, st_a, "127.0.0.1:0").unwrap(),
        b: api::spawn_serving(rt, st_b, "127.0.0.1:0").unwrap(),
        cluster,
    }
}
