//! Embedded metadata: one SQLite database in WAL mode. Every call runs on tokio's blocking pool,
//! never on an async worker. Writes go through one connection behind a mutex (SQLite writes one
//! at a time anyway); reads through a small pool of read-only connections, so a lookup (every
//! request's token) never waits behind a commit: WAL lets readers run beside the writer.
//!
//! The schema is the append-only migrations of [`crate::migrations`]: migration N brings
//! `user_version` from N-1 to N, each in its own transaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{io_error, join_error, Result, StateError};
use crate::groups::{self, GroupChange, GroupEntry};
use crate::migrations::{self, Dialect};
use crate::types::{check_job, check_memo_hash, check_name, check_run, check_scope, Cursor};
use crate::MemoRecord;
use crate::{
    ArtifactRecord, BlobLock, BlobLockMode, CacheRecord, Delivery, GateDecision, GateRecorded,
    LogIndex, LogKey, MetadataStore, RetentionPolicy, RunFilter, RunKey, RunPage, RunSummary,
    SessionRecord, TokenRecord, ViewJson,
};

pub use crate::migrations::SCHEMA_VERSION;

pub struct SqliteMetadata {
    /// The writer thread's queue ([`write_batches`]).
    writes: std::sync::mpsc::Sender<Box<dyn Write>>,
    /// Idle read connections (opened on demand, at most [`IDLE_READERS`] kept).
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

/// Read connections kept open while idle.
const IDLE_READERS: usize = 8;

/// Writes committed together at most: one transaction, one fsync.
const WRITE_BATCH: usize = 64;

/// A write waiting for the writer thread.
trait Write: Send {
    /// Run it on `conn`, inside the batch's transaction and a savepoint of its own (a failed
    /// write is rolled back alone). An error here is the savepoint's own: the batch fails.
    fn run(&mut self, conn: &mut Connection) -> rusqlite::Result<()>;
    /// Answer its caller once the batch's commit is known (`Err`: nothing was committed).
    fn answer(self: Box<Self>, committed: std::result::Result<(), &rusqlite::Error>);
}

struct PendingWrite<T, F> {
    f: Option<F>,
    out: Option<rusqlite::Result<T>>,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
    path: Arc<PathBuf>,
}

impl<T, F> Write for PendingWrite<T, F>
where
    T: Send,
    F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        let Some(f) = self.f.take() else {
            return Ok(());
        };
        conn.execute_batch("SAVEPOINT write")?;
        // A panicking write is rolled back like a failed one; its caller gets no answer (its
        // receiver reports the write lost) and the thread goes on with the others.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)));
        match &out {
            Ok(Ok(_)) => conn.execute_batch("RELEASE write")?,
            _ => conn.execute_batch("ROLLBACK TO write; RELEASE write")?,
        }
        self.out = out.ok();
        Ok(())
    }

    fn answer(self: Box<Self>, committed: std::result::Result<(), &rusqlite::Error>) {
        let Some(out) = self.out else {
            // Never run (the batch failed before its turn: `BEGIN` busy, an earlier savepoint):
            // the batch's error is its answer, retryable when SQLite was busy. Run and panicked:
            // no answer, and its caller reports the write lost.
            if let (Err(e), true) = (committed, self.f.is_some()) {
                let _ = self.reply.send(Err(classify_ref(&self.path, e)));
            }
            return;
        };
        let answer = match (committed, out) {
            (Ok(()), Ok(v)) => Ok(v),
            (Ok(()), Err(e)) => Err(classify(&self.path, e)),
            (Err(e), _) => Err(classify_ref(&self.path, e)),
        };
        let _ = self.reply.send(answer);
    }
}

/// The writer thread: take the writes queued, run them in one immediate transaction and commit
/// it (with `synchronous = FULL`, one fsync for all), then answer each. Many concurrent writers
/// thus share a commit's fsync instead of queueing one each; a write is still answered only once
/// it is durable. Ends when the store is dropped.
fn write_batches(mut conn: Connection, writes: std::sync::mpsc::Receiver<Box<dyn Write>>) {
    while let Ok(first) = writes.recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match writes.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let ran = conn
            .execute_batch("BEGIN IMMEDIATE")
            .and_then(|()| batch.iter_mut().try_for_each(|w| w.run(&mut conn)))
            .and_then(|()| conn.execute_batch("COMMIT"));
        if ran.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for w in batch {
            w.answer(ran.as_ref().map(|_| ()));
        }
    }
}

/// Statements prepared once per connection and kept: every request looks up its token, and a
/// statement's preparation costs more than most of these queries.
trait CachedStatements {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn query_row_cached<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl CachedStatements for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Statements kept per connection (rusqlite's default is 16; the store has about 60).
const STATEMENT_CACHE: usize = 96;

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl SqliteMetadata {
    /// Open (creating if needed) the database at `path`, migrated to this binary's schema.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_waiting(path, BUSY_TIMEOUT).await
    }

    /// [`Self::open`], its writes waiting at most `busy` for another process's write lock.
    async fn open_waiting(path: &Path, busy: Duration) -> Result<Self> {
        let path = path.to_path_buf();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&p, busy))
            .await
            .map_err(join_error)??;
        let (writes, queue) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_batches(conn, queue))
            .map_err(|e| crate::error::io_error(&path, e))?;
        Ok(SqliteMetadata {
            writes,
            readers: Arc::new(Mutex::new(Vec::new())),
            path,
        })
    }

    /// Run the read-only `f` on a read connection, on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let idle = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match idle {
                Some(c) => c,
                None => open_reader(&path).map_err(|e| classify(&path, e))?,
            };
            let out = f(&conn).map_err(|e| classify(&path, e));
            let mut idle = readers.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(join_error)?
    }

    /// Run `f` on the writer thread, in a batch of writes committed together; answered once
    /// its batch is committed.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lost = || StateError::Backend {
            backend: "SQLite",
            detail: format!(
                "{}: the write was lost (the writer stopped, or the write panicked)",
                self.path.display()
            ),
        };
        self.writes
            .send(Box::new(PendingWrite {
                f: Some(f),
                out: None,
                reply,
                path: Arc::new(self.path.clone()),
            }))
            .map_err(|_| lost())?;
        answer.await.map_err(|_| lost())?
    }
}

fn classify(path: &Path, e: rusqlite::Error) -> StateError {
    classify_ref(path, &e)
}

fn classify_ref(path: &Path, e: &rusqlite::Error) -> StateError {
    let location = path.display().to_string();
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StateError::Unavailable {
                backend: "SQLite",
                detail: format!("{location}: {e}"),
            }
        }
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            StateError::Corrupt {
                location,
                detail: e.to_string(),
            }
        }
        _ => StateError::Backend {
            backend: "SQLite",
            detail: format!("{location}: {e}"),
        },
    }
}

/// How long a statement waits for another connection's lock before it fails busy (retryable).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn open_blocking(path: &Path, busy: Duration) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| crate::error::io_error(dir, e))?;
    }
    let err = |e| classify(path, e);
    let mut conn = Connection::open(path).map_err(err)?;
    // Token hashes and run records are nobody else's; SQLite gives its -wal and -shm files the
    // database file's mode.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| crate::error::io_error(path, e))?;
    }
    conn.busy_timeout(busy).map_err(err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The first statement that reads the header: a file that is not a database fails here.
    conn.query_row_cached("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(err)?;
    // FULL: a commit is fsynced before it returns, so an acknowledged token or index entry
    // survives a power loss, not only a crash of the process.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(err)?;
    let found: i64 = conn
        .query_row_cached("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let location = path.display().to_string();
    for (version, sql) in migrations::pending(found, Dialect::Sqlite, &location)? {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(&sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(conn)
}

fn json_col(s: String) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

const TOKEN_COLS: &str =
    "id, hash, principal, scopes, created_ms, expires_ms, revoked, run_ns, run_name, upload, pool_uid";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scopes: String = r.get(3)?;
    let run_ns: Option<String> = r.get(7)?;
    let run_name: Option<String> = r.get(8)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        hash: r.get(1)?,
        principal: r.get(2)?,
        scopes: serde_json::from_str(&scopes).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
        })?,
        created_ms: r.get(4)?,
        expires_ms: r.get(5)?,
        revoked: r.get(6)?,
        run: run_ns.zip(run_name).map(|(ns, n)| RunKey::new(ns, n)),
        upload: r.get(9)?,
        pool_uid: r.get(10)?,
    })
}

const SESSION_COLS: &str = "hash, token_id, principal, scopes, csrf, created_ms, expires_ms";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let scopes: String = r.get(3)?;
    Ok(SessionRecord {
        hash: r.get(0)?,
        token_id: r.get(1)?,
        principal: r.get(2)?,
        scopes: serde_json::from_str(&scopes).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
        })?,
        csrf: r.get(4)?,
        created_ms: r.get(5)?,
        expires_ms: r.get(6)?,
    })
}

const RUN_COLS: &str = "namespace, name, pipeline, phase, created_ms, finished_ms, view";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    Ok(RunSummary {
        key: RunKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
        pipeline: r.get(2)?,
        phase: r.get(3)?,
        created_ms: r.get(4)?,
        finished_ms: r.get(5)?,
        view: ViewJson::from_text(r.get(6)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, e.into())
        })?,
    })
}

const GATE_COLS: &str = "decision, decided_by, at_ms, comment, timed_out";

fn gate_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<GateDecision> {
    Ok(GateDecision {
        decision: r.get(at)?,
        by: r.get(at + 1)?,
        at_ms: r.get(at + 2)?,
        comment: r.get(at + 3)?,
        timed_out: r.get(at + 4)?,
    })
}

fn index_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogIndex> {
    Ok(LogIndex {
        next_seq: r.get::<_, i64>(0)? as u64,
        bytes: r.get::<_, i64>(1)? as u64,
        lines: r.get::<_, i64>(2)? as u64,
        capped: r.get(3)?,
    })
}

const GROUP_COLS: &str = "namespace, run, job, position, holding, group_limit, cancel_in_progress, since_ms, lease_until_ms, cancel_asked";

const CACHE_COLS: &str =
    "namespace, scope, cache_key, manifest, size_bytes, created_ms, last_used_ms";

fn cache_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CacheRecord> {
    Ok(CacheRecord {
        namespace: r.get(0)?,
        scope: r.get(1)?,
        key: r.get(2)?,
        manifest: r.get(3)?,
        size_bytes: r.get::<_, i64>(4)? as u64,
        created_ms: r.get(5)?,
        last_used_ms: r.get(6)?,
    })
}

const ARTIFACT_COLS: &str = "namespace, run, job, name, manifest, size_bytes, files, created_ms";

fn artifact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArtifactRecord> {
    Ok(ArtifactRecord {
        run: RunKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
        job: r.get(2)?,
        name: r.get(3)?,
        manifest: r.get(4)?,
        size_bytes: r.get::<_, i64>(5)? as u64,
        files: r.get::<_, i64>(6)? as u64,
        created_ms: r.get(7)?,
    })
}

const MEMO_COLS: &str = "namespace, scope, job, input_hash, run, outputs, finished_ms";

fn memo_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MemoRecord> {
    Ok(MemoRecord {
        namespace: r.get(0)?,
        scope: r.get(1)?,
        job: r.get(2)?,
        hash: r.get(3)?,
        run: r.get(4)?,
        outputs: r.get(5)?,
        finished_ms: r.get(6)?,
    })
}

fn group_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<GroupEntry> {
    Ok(GroupEntry {
        run: RunKey::new(r.get::<_, String>(at)?, r.get::<_, String>(at + 1)?),
        job: r.get(at + 2)?,
        position: r.get(at + 3)?,
        holding: r.get(at + 4)?,
        limit: u32::try_from(r.get::<_, i64>(at + 5)?).unwrap_or(u32::MAX),
        cancel_in_progress: r.get(at + 6)?,
        since_ms: r.get(at + 7)?,
        lease_until_ms: r.get(at + 8)?,
        cancel_asked: r.get(at + 9)?,
    })
}

/// The entries of `group`, in arrival order.
fn group_entries(c: &Connection, group: &str) -> rusqlite::Result<Vec<GroupEntry>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {GROUP_COLS} FROM concurrency_slots WHERE group_key = ?1
         ORDER BY position, namespace, run, job"
    ))?;
    let rows = st.query_map([group], |r| group_row(r, 0))?;
    rows.collect()
}

#[async_trait]
impl MetadataStore for SqliteMetadata {
    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row_cached("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        let t = t.clone();
        let scopes = serde_json::to_string(&t.scopes).expect("strings serialise");
        self.call(move |c| {
            c.execute_cached(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, principal = excluded.principal,
                       scopes = excluded.scopes, created_ms = excluded.created_ms,
                       expires_ms = excluded.expires_ms, revoked = excluded.revoked,
                       run_ns = excluded.run_ns, run_name = excluded.run_name,
                       upload = excluded.upload, pool_uid = excluded.pool_uid"
                ),
                params![
                    t.id,
                    t.hash,
                    t.principal,
                    scopes,
                    t.created_ms,
                    t.expires_ms,
                    t.revoked,
                    t.run.as_ref().map(|r| &r.namespace),
                    t.run.as_ref().map(|r| &r.name),
                    t.upload,
                    t.pool_uid
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn find_token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let hash = hash.to_string();
        self.read(move |c| {
            c.query_row_cached(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = ?1"),
                [hash],
                token_row,
            )
            .optional()
        })
        .await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.call(move |c| {
            c.execute_cached("UPDATE tokens SET revoked = 1 WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TOKEN_COLS} FROM tokens ORDER BY created_ms, id"
            ))?;
            let rows = st.query_map([], token_row)?;
            rows.collect()
        })
        .await
    }

    async fn collect_expired_tokens(&self, now_ms: i64) -> Result<Vec<String>> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "DELETE FROM tokens WHERE expires_ms IS NOT NULL AND expires_ms <= ?1 RETURNING id",
            )?;
            let rows = st.query_map([now_ms], |r| r.get(0))?;
            let mut ids: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
            ids.sort();
            Ok(ids)
        })
        .await
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<()> {
        let t = session.clone();
        let scopes = serde_json::to_string(&t.scopes).expect("strings serialise");
        self.call(move |c| {
            c.execute_cached(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (hash) DO UPDATE SET token_id = excluded.token_id,
                       principal = excluded.principal, scopes = excluded.scopes,
                       csrf = excluded.csrf, created_ms = excluded.created_ms,
                       expires_ms = excluded.expires_ms"
                ),
                params![
                    t.hash,
                    t.token_id,
                    t.principal,
                    scopes,
                    t.csrf,
                    t.created_ms,
                    t.expires_ms
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn find_session(&self, hash: &str) -> Result<Option<SessionRecord>> {
        let hash = hash.to_string();
        self.read(move |c| {
            c.query_row_cached(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE hash = ?1"),
                [hash],
                session_row,
            )
            .optional()
        })
        .await
    }

    async fn delete_session(&self, hash: &str) -> Result<bool> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.execute_cached("DELETE FROM sessions WHERE hash = ?1", [hash])
                .map(|n| n > 0)
        })
        .await
    }

    async fn collect_expired_sessions(&self, now_ms: i64) -> Result<u64> {
        self.call(move |c| {
            c.execute_cached("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms])
                .map(|n| n as u64)
        })
        .await
    }

    async fn delete_token_sessions(&self, token_id: &str) -> Result<u64> {
        let token_id = token_id.to_string();
        self.call(move |c| {
            c.execute_cached("DELETE FROM sessions WHERE token_id = ?1", [token_id])
                .map(|n| n as u64)
        })
        .await
    }

    async fn revoke_run_tokens(&self, run: &RunKey) -> Result<u64> {
        let run = run.clone();
        self.call(move |c| {
            c.execute_cached(
                "UPDATE tokens SET revoked = 1 WHERE run_ns = ?1 AND run_name = ?2 AND revoked = 0",
                params![run.namespace, run.name],
            )
            .map(|n| n as u64)
        })
        .await
    }

    async fn delete_token(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.call(move |c| {
            c.execute_cached("DELETE FROM tokens WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
        .await
    }

    async fn delete_run_tokens(&self, run: &RunKey) -> Result<u64> {
        let run = run.clone();
        self.call(move |c| {
            c.execute_cached(
                "DELETE FROM tokens WHERE run_ns = ?1 AND run_name = ?2",
                params![run.namespace, run.name],
            )
            .map(|n| n as u64)
        })
        .await
    }

    async fn upsert_run(&self, run: &RunSummary) -> Result<()> {
        check_run(&run.key)?;
        let run = run.clone();
        self.call(move |c| {
            c.execute_cached(
                &format!(
                    "INSERT INTO runs ({RUN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (namespace, name) DO UPDATE SET pipeline = excluded.pipeline,
                       phase = excluded.phase, created_ms = excluded.created_ms,
                       finished_ms = excluded.finished_ms, view = excluded.view"
                ),
                params![
                    run.key.namespace,
                    run.key.name,
                    run.pipeline,
                    run.phase,
                    run.created_ms,
                    run.finished_ms,
                    run.view.text().to_string()
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn get_run(&self, run: &RunKey) -> Result<Option<RunSummary>> {
        let run = run.clone();
        self.read(move |c| {
            c.query_row_cached(
                &format!("SELECT {RUN_COLS} FROM runs WHERE namespace = ?1 AND name = ?2"),
                params![run.namespace, run.name],
                run_row,
            )
            .optional()
        })
        .await
    }

    async fn get_runs(&self, runs: &[RunKey]) -> Result<Vec<RunSummary>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let runs = runs.to_vec();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUN_COLS} FROM runs WHERE namespace = ?1 AND name = ?2"
            ))?;
            let mut out = Vec::with_capacity(runs.len());
            for run in &runs {
                if let Some(s) = st
                    .query_row(params![run.namespace, run.name], run_row)
                    .optional()?
                {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RunPage> {
        let cursor = cursor.map(Cursor::decode).transpose()?;
        let limit = limit.max(1);
        let mut clauses = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |v: rusqlite::types::Value| {
            args.push(v);
            format!("?{}", args.len())
        };
        if let Some(ns) = &filter.namespace {
            clauses.push(format!("namespace = {}", arg(ns.clone().into())));
        }
        if let Some(p) = &filter.pipeline {
            clauses.push(format!("pipeline = {}", arg(p.clone().into())));
        }
        if let Some(p) = &filter.phase {
            clauses.push(format!("phase = {}", arg(p.clone().into())));
        }
        if let Some(s) = filter.since_ms {
            clauses.push(format!("created_ms >= {}", arg(s.into())));
        }
        if let Some(c) = &cursor {
            let (t, ns, n) = (
                arg(c.created_ms.into()),
                arg(c.namespace.clone().into()),
                arg(c.name.clone().into()),
            );
            clauses.push(format!(
                "(created_ms < {t} OR (created_ms = {t} AND (namespace > {ns} OR (namespace = {ns} AND name > {n}))))"
            ));
        }
        let lim = arg((limit as i64 + 1).into());
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs {} ORDER BY created_ms DESC, namespace, name LIMIT {lim}",
            if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            }
        );
        let mut runs = self
            .read(move |c| {
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(params_from_iter(args), run_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(page(&mut runs, limit))
    }

    async fn put_job_state(
        &self,
        run: &RunKey,
        job: &str,
        state: &serde_json::Value,
    ) -> Result<()> {
        check_run(run)?;
        check_job(job)?;
        let (run, job, state) = (run.clone(), job.to_string(), state.to_string());
        self.call(move |c| {
            c.execute_cached(
                "INSERT INTO job_states (namespace, run, job, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, run, job) DO UPDATE SET state = excluded.state",
                params![run.namespace, run.name, job, state],
            )
            .map(drop)
        })
        .await
    }

    async fn job_states(&self, run: &RunKey) -> Result<Vec<(String, serde_json::Value)>> {
        let run = run.clone();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT job, state FROM job_states WHERE namespace = ?1 AND run = ?2 ORDER BY job",
            )?;
            let rows = st.query_map(params![run.namespace, run.name], |r| {
                Ok((r.get(0)?, json_col(r.get(1)?)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn record_gate_decision(
        &self,
        run: &RunKey,
        gate: &str,
        d: &GateDecision,
    ) -> Result<GateRecorded> {
        check_run(run)?;
        check_name("gate", gate)?;
        let (run, gate, d) = (run.clone(), gate.to_string(), d.clone());
        self.call(move |c| {
            let tx = c.savepoint()?;
            let inserted = tx.execute_cached(
                &format!(
                    "INSERT INTO gate_decisions (namespace, run, gate, {GATE_COLS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (namespace, run, gate) DO NOTHING"
                ),
                params![
                    run.namespace,
                    run.name,
                    gate,
                    d.decision,
                    d.by,
                    d.at_ms,
                    d.comment,
                    d.timed_out
                ],
            )?;
            let out = if inserted == 1 {
                GateRecorded::First
            } else {
                GateRecorded::Standing(tx.query_row_cached(
                    &format!(
                        "SELECT {GATE_COLS} FROM gate_decisions
                         WHERE namespace = ?1 AND run = ?2 AND gate = ?3"
                    ),
                    params![run.namespace, run.name, gate],
                    |r| gate_row(r, 0),
                )?)
            };
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn gate_decision(&self, run: &RunKey, gate: &str) -> Result<Option<GateDecision>> {
        let (run, gate) = (run.clone(), gate.to_string());
        self.read(move |c| {
            c.query_row_cached(
                &format!(
                    "SELECT {GATE_COLS} FROM gate_decisions
                     WHERE namespace = ?1 AND run = ?2 AND gate = ?3"
                ),
                params![run.namespace, run.name, gate],
                |r| gate_row(r, 0),
            )
            .optional()
        })
        .await
    }

    async fn gate_decisions(&self, run: &RunKey) -> Result<Vec<(String, GateDecision)>> {
        let run = run.clone();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT gate, {GATE_COLS} FROM gate_decisions
                 WHERE namespace = ?1 AND run = ?2 ORDER BY gate"
            ))?;
            let rows = st.query_map(params![run.namespace, run.name], |r| {
                Ok((r.get(0)?, gate_row(r, 1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn record_delivery(&self, id: &str, answer: &serde_json::Value) -> Result<Delivery> {
        let (id, answer) = (id.to_string(), answer.to_string());
        self.call(move |c| {
            let tx = c.savepoint()?;
            let inserted = tx.execute_cached(
                "INSERT INTO deliveries (id, answer, received_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                params![id, answer, now_ms()],
            )?;
            let out = if inserted == 1 {
                Delivery::First
            } else {
                let first: String = tx.query_row_cached(
                    "SELECT answer FROM deliveries WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )?;
                Delivery::Duplicate(json_col(first)?)
            };
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn find_delivery(&self, id: &str) -> Result<Option<(serde_json::Value, i64)>> {
        let id = id.to_string();
        self.read(move |c| {
            let row: Option<(String, i64)> = c
                .query_row_cached(
                    "SELECT answer, received_ms FROM deliveries WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            row.map(|(answer, at)| Ok((json_col(answer)?, at)))
                .transpose()
        })
        .await
    }

    async fn delete_delivery(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.call(move |c| {
            c.execute_cached("DELETE FROM deliveries WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
        .await
    }

    async fn log_index(&self, key: &LogKey) -> Result<Option<LogIndex>> {
        let key = key.clone();
        self.read(move |c| {
            c.query_row_cached(
                "SELECT next_seq, bytes, lines, capped FROM log_index
                 WHERE namespace = ?1 AND run = ?2 AND job = ?3",
                params![key.run.namespace, key.run.name, key.job],
                index_row,
            )
            .optional()
        })
        .await
    }

    async fn advance_log_index(&self, key: &LogKey, index: &LogIndex) -> Result<LogIndex> {
        key.check()?;
        let (key, ix) = (key.clone(), *index);
        self.call(move |c| {
            let tx = c.savepoint()?;
            tx.execute_cached(
                "INSERT INTO log_index (namespace, run, job, next_seq, bytes, lines, capped)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (namespace, run, job) DO UPDATE SET next_seq = excluded.next_seq,
                   bytes = excluded.bytes, lines = excluded.lines, capped = excluded.capped
                 WHERE excluded.next_seq > log_index.next_seq
                    OR (excluded.next_seq = log_index.next_seq AND excluded.capped AND NOT log_index.capped)",
                params![
                    key.run.namespace,
                    key.run.name,
                    key.job,
                    ix.next_seq as i64,
                    ix.bytes as i64,
                    ix.lines as i64,
                    ix.capped
                ],
            )?;
            let now = tx.query_row_cached(
                "SELECT next_seq, bytes, lines, capped FROM log_index
                 WHERE namespace = ?1 AND run = ?2 AND job = ?3",
                params![key.run.namespace, key.run.name, key.job],
                index_row,
            )?;
            tx.commit()?;
            Ok(now)
        })
        .await
    }

    async fn log_jobs(&self, run: &RunKey) -> Result<Vec<String>> {
        let run = run.clone();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT job FROM log_index WHERE namespace = ?1 AND run = ?2 ORDER BY job",
            )?;
            let rows = st.query_map(params![run.namespace, run.name], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn change_group(&self, group: &str, change: GroupChange) -> Result<Vec<GroupEntry>> {
        check_name("concurrency group", group)?;
        let group = group.to_string();
        // One writer at a time, and an immediate transaction: the read and the write of a group
        // are one step for every process on this database.
        self.call(move |c| {
            let tx = c.savepoint()?;
            let before = group_entries(&tx, &group)?;
            let mut after = before.clone();
            change(&mut after);
            let w = match groups::writes(&group, &before, &after) {
                Ok(w) => w,
                Err(e) => return Ok(Err(e)),
            };
            for (run, job) in &w.delete {
                tx.execute_cached(
                    "DELETE FROM concurrency_slots
                     WHERE group_key = ?1 AND namespace = ?2 AND run = ?3 AND job = ?4",
                    params![group, run.namespace, run.name, job],
                )?;
            }
            for e in &w.upsert {
                tx.execute_cached(
                    &format!(
                        "INSERT INTO concurrency_slots (group_key, {GROUP_COLS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                         ON CONFLICT (group_key, namespace, run, job) DO UPDATE SET
                           position = excluded.position, holding = excluded.holding,
                           group_limit = excluded.group_limit,
                           cancel_in_progress = excluded.cancel_in_progress,
                           since_ms = excluded.since_ms, lease_until_ms = excluded.lease_until_ms,
                           cancel_asked = excluded.cancel_asked"
                    ),
                    params![
                        group,
                        e.run.namespace,
                        e.run.name,
                        e.job,
                        e.position,
                        e.holding,
                        e.limit as i64,
                        e.cancel_in_progress,
                        e.since_ms,
                        e.lease_until_ms,
                        e.cancel_asked
                    ],
                )?;
            }
            let now = group_entries(&tx, &group)?;
            tx.commit()?;
            Ok(Ok(now))
        })
        .await?
    }

    async fn run_groups(&self, run: &RunKey) -> Result<Vec<(String, Vec<GroupEntry>)>> {
        let run = run.clone();
        self.read(move |c| {
            let names: Vec<String> = {
                let mut st = c.prepare_cached(
                    "SELECT DISTINCT group_key FROM concurrency_slots WHERE namespace = ?1 AND run = ?2
                     ORDER BY group_key",
                )?;
                let rows = st.query_map(params![run.namespace, run.name], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            names
                .into_iter()
                .map(|g| {
                    let entries = group_entries(c, &g)?;
                    Ok((g, entries))
                })
                .collect()
        })
        .await
    }

    async fn leave_groups(&self, run: &RunKey) -> Result<Vec<String>> {
        let run = run.clone();
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "DELETE FROM concurrency_slots WHERE namespace = ?1 AND run = ?2
                 RETURNING group_key",
            )?;
            let rows = st.query_map(params![run.namespace, run.name], |r| r.get(0))?;
            let mut groups: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
            groups.sort();
            groups.dedup();
            Ok(groups)
        })
        .await
    }

    async fn group_runs(&self) -> Result<Vec<RunKey>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT namespace, run FROM concurrency_slots ORDER BY namespace, run",
            )?;
            let rows = st.query_map([], |r| {
                Ok(RunKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn commit_cache_entry(&self, e: &CacheRecord) -> Result<bool> {
        check_name("namespace", &e.namespace)?;
        check_scope(&e.scope)?;
        check_name("cache key", &e.key)?;
        let e = e.clone();
        self.call(move |c| {
            c.execute_cached(
                &format!(
                    "INSERT INTO cache_entries ({CACHE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (namespace, scope, cache_key) DO NOTHING"
                ),
                params![
                    e.namespace,
                    e.scope,
                    e.key,
                    e.manifest,
                    e.size_bytes as i64,
                    e.created_ms,
                    e.last_used_ms
                ],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn cache_entry(
        &self,
        namespace: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<CacheRecord>> {
        let (ns, scope, key) = (namespace.to_string(), scope.to_string(), key.to_string());
        self.read(move |c| {
            c.query_row_cached(
                &format!(
                    "SELECT {CACHE_COLS} FROM cache_entries
                     WHERE namespace = ?1 AND scope = ?2 AND cache_key = ?3"
                ),
                params![ns, scope, key],
                cache_row,
            )
            .optional()
        })
        .await
    }

    async fn list_cache_entries(&self, namespace: Option<&str>) -> Result<Vec<CacheRecord>> {
        let ns = namespace.map(str::to_string);
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {CACHE_COLS} FROM cache_entries WHERE ?1 IS NULL OR namespace = ?1
                 ORDER BY namespace, scope, cache_key"
            ))?;
            let rows = st.query_map(params![ns], cache_row)?;
            rows.collect()
        })
        .await
    }

    async fn touch_cache_entry(
        &self,
        namespace: &str,
        scope: &str,
        key: &str,
        at_ms: i64,
    ) -> Result<bool> {
        let (ns, scope, key) = (namespace.to_string(), scope.to_string(), key.to_string());
        self.call(move |c| {
            c.execute_cached(
                "UPDATE cache_entries SET last_used_ms = MAX(last_used_ms, ?4)
                 WHERE namespace = ?1 AND scope = ?2 AND cache_key = ?3",
                params![ns, scope, key, at_ms],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn delete_cache_entry(&self, namespace: &str, scope: &str, key: &str) -> Result<bool> {
        let (ns, scope, key) = (namespace.to_string(), scope.to_string(), key.to_string());
        self.call(move |c| {
            c.execute_cached(
                "DELETE FROM cache_entries WHERE namespace = ?1 AND scope = ?2 AND cache_key = ?3",
                params![ns, scope, key],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn put_artifact(&self, a: &ArtifactRecord) -> Result<()> {
        check_run(&a.run)?;
        check_job(&a.job)?;
        check_name("artifact", &a.name)?;
        let a = a.clone();
        self.call(move |c| {
            c.execute_cached(
                &format!(
                    "INSERT INTO artifacts ({ARTIFACT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (namespace, run, job, name) DO UPDATE SET
                       manifest = excluded.manifest, size_bytes = excluded.size_bytes,
                       files = excluded.files, created_ms = excluded.created_ms"
                ),
                params![
                    a.run.namespace,
                    a.run.name,
                    a.job,
                    a.name,
                    a.manifest,
                    a.size_bytes as i64,
                    a.files as i64,
                    a.created_ms
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn artifact(
        &self,
        run: &RunKey,
        job: &str,
        name: &str,
    ) -> Result<Option<ArtifactRecord>> {
        let (run, job, name) = (run.clone(), job.to_string(), name.to_string());
        self.read(move |c| {
            c.query_row_cached(
                &format!(
                    "SELECT {ARTIFACT_COLS} FROM artifacts
                     WHERE namespace = ?1 AND run = ?2 AND job = ?3 AND name = ?4"
                ),
                params![run.namespace, run.name, job, name],
                artifact_row,
            )
            .optional()
        })
        .await
    }

    async fn list_artifacts(&self, run: &RunKey) -> Result<Vec<ArtifactRecord>> {
        let run = run.clone();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ARTIFACT_COLS} FROM artifacts WHERE namespace = ?1 AND run = ?2
                 ORDER BY job, name"
            ))?;
            let rows = st.query_map(params![run.namespace, run.name], artifact_row)?;
            rows.collect()
        })
        .await
    }

    async fn lock_blobs(&self, mode: BlobLockMode) -> Result<BlobLock> {
        // A lock file beside the database: `flock` on it orders every handle and process on
        // this node (a database of one node has no other replica).
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".blob-lock");
        let path = self.path.with_file_name(name);
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_error(&path, e))?;
            match mode {
                BlobLockMode::Reuse => file.lock_shared(),
                BlobLockMode::Sweep => file.lock(),
            }
            .map_err(|e| io_error(&path, e))?;
            Ok(BlobLock::new(file))
        })
        .await
        .map_err(join_error)?
    }

    async fn chunk_manifests(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT manifest FROM cache_entries UNION ALL SELECT manifest FROM artifacts",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn record_memo(&self, r: &MemoRecord) -> Result<()> {
        check_run(&RunKey::new(r.namespace.clone(), r.run.clone()))?;
        check_scope(&r.scope)?;
        check_job(&r.job)?;
        check_memo_hash(&r.hash)?;
        let r = r.clone();
        self.call(move |c| {
            c.execute_cached(
                &format!(
                    "INSERT INTO memo_results ({MEMO_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (namespace, scope, job, input_hash, run) DO UPDATE SET
                       outputs = excluded.outputs, finished_ms = excluded.finished_ms"
                ),
                params![
                    r.namespace,
                    r.scope,
                    r.job,
                    r.hash,
                    r.run,
                    r.outputs,
                    r.finished_ms
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn memo_results(
        &self,
        namespace: &str,
        scope: &str,
        job: &str,
        hash: &str,
    ) -> Result<Vec<MemoRecord>> {
        let (ns, scope, job, hash) = (
            namespace.to_string(),
            scope.to_string(),
            job.to_string(),
            hash.to_string(),
        );
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {MEMO_COLS} FROM memo_results
                 WHERE namespace = ?1 AND scope = ?2 AND job = ?3 AND input_hash = ?4
                 ORDER BY finished_ms DESC, run DESC"
            ))?;
            let rows = st.query_map(params![ns, scope, job, hash], memo_row)?;
            rows.collect()
        })
        .await
    }

    async fn apply_retention(&self, policy: &RetentionPolicy) -> Result<Vec<RunKey>> {
        let policy = policy.clone();
        self.call(move |c| {
            let tx = c.savepoint()?;
            let mut doomed = std::collections::BTreeSet::new();
            if let Some(before) = policy.finished_before_ms {
                let mut st = tx.prepare(
                    "SELECT namespace, name FROM runs WHERE finished_ms IS NOT NULL AND finished_ms < ?1",
                )?;
                for r in st.query_map([before], |r| Ok(RunKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                    doomed.insert(r?);
                }
            }
            if let Some(keep) = policy.keep_finished {
                let mut st = tx.prepare(
                    "SELECT namespace, name FROM runs WHERE finished_ms IS NOT NULL
                     ORDER BY finished_ms DESC, namespace, name LIMIT -1 OFFSET ?1",
                )?;
                for r in st.query_map([keep as i64], |r| Ok(RunKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                    doomed.insert(r?);
                }
            }
            doomed.retain(|k| !policy.spare.contains(k));
            for run in &doomed {
                let p = params![run.namespace, run.name];
                tx.execute_cached("DELETE FROM runs WHERE namespace = ?1 AND name = ?2", p)?;
                tx.execute_cached("DELETE FROM job_states WHERE namespace = ?1 AND run = ?2", p)?;
                tx.execute_cached("DELETE FROM gate_decisions WHERE namespace = ?1 AND run = ?2", p)?;
                tx.execute_cached("DELETE FROM concurrency_slots WHERE namespace = ?1 AND run = ?2", p)?;
                tx.execute_cached("DELETE FROM log_index WHERE namespace = ?1 AND run = ?2", p)?;
                tx.execute_cached("DELETE FROM artifacts WHERE namespace = ?1 AND run = ?2", p)?;
                tx.execute_cached("DELETE FROM memo_results WHERE namespace = ?1 AND run = ?2", p)?;
                tx.execute_cached("DELETE FROM tokens WHERE run_ns = ?1 AND run_name = ?2", p)?;
            }
            tx.commit()?;
            Ok(doomed.into_iter().collect())
        })
        .await
    }
}

/// Cut a `limit + 1` answer to a page and its cursor.
pub(crate) fn page(runs: &mut Vec<RunSummary>, limit: usize) -> RunPage {
    let more = runs.len() > limit;
    runs.truncate(limit);
    RunPage {
        next: if more {
            runs.last().map(|r| Cursor::after(r).encode())
        } else {
            None
        },
        runs: std::mem::take(runs),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes queued together share a commit, yet each stands or falls alone: a failing write
    /// is rolled back without its batch, a panicking one is reported lost, and the writer goes
    /// on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_committed_together_fail_and_panic_alone() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(
            SqliteMetadata::open(&dir.path().join("state.db"))
                .await
                .unwrap(),
        );
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move {
                    match i % 3 {
                        0 => m
                            .call(move |c| {
                                c.execute_cached(
                                    "INSERT INTO deliveries (id, answer, received_ms) VALUES (?1, '1', 0)",
                                    [format!("d{i}")],
                                )
                            })
                            .await
                            .map(drop),
                        1 => m
                            .call(|c| c.execute_cached("INSERT INTO no_such_table VALUES (1)", []))
                            .await
                            .map(drop),
                        _ => m.call(|_| -> rusqlite::Result<()> { panic!("a write that panics") }).await,
                    }
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let answer = t.await.unwrap();
            match i % 3 {
                0 => answer.unwrap(),
                1 => assert!(
                    answer
                        .as_ref()
                        .is_err_and(|e| e.to_string().contains("no such table")),
                    "{answer:?}"
                ),
                _ => assert!(
                    answer
                        .as_ref()
                        .is_err_and(|e| e.to_string().contains("write was lost")),
                    "{answer:?}"
                ),
            }
        }
        for i in (0..60).step_by(3) {
            assert!(
                m.find_delivery(&format!("d{i}")).await.unwrap().is_some(),
                "write d{i} was rolled back with a failing one"
            );
        }
        m.record_delivery("after", &serde_json::json!(1))
            .await
            .unwrap();
        assert!(m.find_delivery("after").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_batch_that_cannot_begin_answers_busy_retryable_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let m = SqliteMetadata::open_waiting(&path, Duration::from_millis(50))
            .await
            .unwrap();
        // Another process holds the write lock past the store's busy timeout.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = m
            .record_delivery("d1", &serde_json::json!(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StateError::Unavailable { .. }) && err.retryable(),
            "{err}"
        );
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(
            m.record_delivery("d1", &serde_json::json!(1))
                .await
                .unwrap(),
            Delivery::First
        );
    }

    #[tokio::test]
    async fn a_list_by_namespace_or_phase_walks_an_index_in_the_list_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteMetadata::open(&path).await.unwrap());
        let c = Connection::open(&path).unwrap();
        for filter in [
            "namespace = 'ci'",
            "phase = 'Failed'",
            "pipeline = 'build'",
            "namespace = 'ci' AND phase = 'Failed'",
            "1",
        ] {
            let plan: Vec<String> = c
                .prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT {RUN_COLS} FROM runs WHERE {filter} \
                     ORDER BY created_ms DESC, namespace, name LIMIT 101"
                ))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(
                plan.iter().all(|step| !step.contains("TEMP B-TREE")),
                "{filter}: {plan:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteMetadata::open(&path).await.unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(c);
        let err = SqliteMetadata::open(&path).await.err().unwrap();
        assert!(
            matches!(err, StateError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        assert!(!err.retryable());
    }

    #[tokio::test]
    async fn reopening_keeps_the_schema_and_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let m = SqliteMetadata::open(&path).await.unwrap();
        m.record_delivery("d1", &serde_json::json!(1))
            .await
            .unwrap();
        drop(m);
        let m = SqliteMetadata::open(&path).await.unwrap();
        assert_eq!(
            m.record_delivery("d1", &serde_json::json!(2))
                .await
                .unwrap(),
            Delivery::Duplicate(serde_json::json!(1))
        );
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_corrupt_not_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = SqliteMetadata::open(&path).await.err().unwrap();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(!err.retryable());
    }
}
