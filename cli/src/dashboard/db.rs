//! Read connections for handlers, and the watcher that notices commits.

use super::POLL;
use sparkwing_engine::home::Home;
use sparkwing_engine::store::{Store, StoreError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many idle read connections are kept.
const POOL_SIZE: usize = 8;
/// How often the watcher looks for runs whose process died.
const RECONCILE_EVERY: Duration = Duration::from_secs(3);

/// A small pool of read-only connections to `state.db`. `rusqlite::Connection` is `Send` but not
/// `Sync`, so a connection is taken out of the pool for the length of one blocking closure.
pub struct Db {
    path: PathBuf,
    idle: Mutex<Vec<Store>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a database task failed: {0}")]
    Join(String),
}

impl Db {
    pub fn new(path: PathBuf) -> Db {
        Db {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<Store, StoreError> {
        if let Some(s) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(s);
        }
        Store::open_read_only(&self.path)
    }

    fn put(&self, s: Store) {
        if let Ok(mut v) = self.idle.lock() {
            if v.len() < POOL_SIZE {
                v.push(s);
            }
        }
    }

    /// Run `f` with a read connection on the blocking pool.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = db.take()?;
            let out = f(&store);
            // A connection that failed may be broken: only healthy ones go back.
            if out.is_ok() {
                db.put(store);
            }
            out.map_err(DbError::from)
        })
        .await
        .map_err(|e| DbError::Join(e.to_string()))?
    }
}

/// Start the watcher thread: it polls `PRAGMA data_version` every [`POLL`] and bumps the
/// returned counter when another connection committed. Every few seconds, while runs are
/// unfinished, it also reconciles runs whose process died (a write, as any reader does).
pub fn spawn_watcher(db: Arc<Db>, home: Home) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    std::thread::Builder::new()
        .name("dashboard-watcher".into())
        .spawn(move || {
            let mut conn: Option<Store> = None;
            let mut last: Option<i64> = None;
            let mut last_reconcile = Instant::now() - RECONCILE_EVERY;
            loop {
                if tx.is_closed() {
                    return;
                }
                if conn.is_none() {
                    conn = Store::open_read_only(&db.path).ok();
                }
                let version = conn.as_ref().map(|c| c.data_version());
                match version {
                    Some(Ok(v)) => {
                        if last != Some(v) {
                            last = Some(v);
                            tx.send_modify(|n| *n += 1);
                        }
                    }
                    _ => conn = None,
                }
                if last_reconcile.elapsed() >= RECONCILE_EVERY {
                    last_reconcile = Instant::now();
                    let unfinished = conn
                        .as_ref()
                        .and_then(|c| c.unfinished_runs().ok())
                        .is_some_and(|r| !r.is_empty());
                    if unfinished {
                        // Failures here are the store's problem to report on the next read.
                        let _ = sparkwing_engine::abandoned::open_store(&home);
                    }
                }
                std::thread::sleep(POLL);
            }
        })
        .expect("spawn the dashboard watcher thread");
    rx
}
