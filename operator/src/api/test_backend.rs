//! The stores the API's tests run on. One suite, two backends: by default each fixture gets the
//! embedded stores in a temp directory; with [`BACKEND_ENV`]` = shared` it gets a database of its
//! own on a real PostgreSQL server and a prefix of its own in a bucket of a real S3 server, both
//! named by the environment. [`the_api_suite_passes_on_postgresql_and_s3`] starts those servers
//! and runs this test binary's API tests again against them, so `cargo test` covers both.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Store;

/// `shared`: the fixtures use the servers below instead of a temp directory.
pub const BACKEND_ENV: &str = "SPARKWING_API_TEST_BACKEND";
/// The PostgreSQL server's socket directory (user `postgres`, trust auth).
pub const PG_SOCKET_ENV: &str = "SPARKWING_API_TEST_PG_SOCKET";
/// The bucket on the S3 server named by the `AWS_*` variables.
pub const BUCKET_ENV: &str = "SPARKWING_API_TEST_BUCKET";

/// Whether this process runs the suite on the shared backend.
pub fn shared() -> bool {
    std::env::var(BACKEND_ENV).is_ok_and(|v| v == "shared")
}

/// A fixture's stores, and what keeps them (a temp directory) alive.
pub struct TestStore {
    pub store: Store,
    metadata: String,
    objects: String,
    dir: Option<tempfile::TempDir>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl TestStore {
    pub async fn new() -> TestStore {
        if !shared() {
            let dir = tempfile::tempdir().unwrap();
            let url = dir.path().to_str().unwrap().to_string();
            let store = Store::open(&url, &url).await.unwrap();
            return TestStore {
                store,
                metadata: url.clone(),
                objects: url,
                dir: Some(dir),
            };
        }
        let socket = std::env::var(PG_SOCKET_ENV).expect("the PostgreSQL socket directory");
        let bucket = std::env::var(BUCKET_ENV).expect("the S3 bucket");
        let db = format!(
            "api_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = |db: &str| format!("host={socket} user=postgres dbname={db}");
        sparkwing_state::test_support::create_database(&url("postgres"), &db).await;
        let metadata = url(&db);
        let objects = format!("s3://{bucket}/{db}");
        let store = Store::open(&metadata, &objects).await.unwrap();
        TestStore {
            store,
            metadata,
            objects,
            dir: None,
        }
    }

    /// Another client of the same stores: a restarted API, or another replica.
    pub async fn reopen(&self) -> Store {
        Store::open(&self.metadata, &self.objects).await.unwrap()
    }

    /// The data directory of the embedded stores (`None` on the shared backend).
    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }
}

/// The API's tests of this binary again, on a real PostgreSQL server and a real S3 server
/// (`tools/s3-test-server`) started here: every fixture gets a database and a bucket prefix of
/// its own.
#[test]
fn the_api_suite_passes_on_postgresql_and_s3() {
    use sparkwing_state::test_support::{Postgres, S3Server};
    if shared() {
        // This is the run on the shared backend itself.
        return;
    }
    let s3 = std::thread::spawn(S3Server::start);
    let pg = Postgres::start();
    let s3 = s3.join().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["api::tests::", "api::webhook_tests::", "--test-threads=4"])
        .env(BACKEND_ENV, "shared")
        .env(PG_SOCKET_ENV, pg.socket_dir())
        .env(BUCKET_ENV, &s3.bucket);
    for (k, v) in s3.aws_config() {
        child.env(k.to_uppercase(), v);
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .collect();
    assert!(
        out.status.success(),
        "the API suite on PostgreSQL + S3 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        summary.iter().any(|l| !l.contains(" 0 passed")),
        "no test ran on the shared backend:\n{stdout}"
    );
    eprintln!("on PostgreSQL + S3: {}", summary.join("; "));
}
