//! Shared metadata: PostgreSQL through `tokio-postgres` and a `deadpool-postgres` pool.
//!
//! Migrations ([`crate::migrations`]) are versioned in the table `sparkwing_schema` and applied at
//! open inside one transaction holding an advisory lock, so replicas starting together apply each
//! migration once and the others wait, then see it applied. A database whose schema is newer than
//! this binary is refused. The pool hands out only connections not known closed, so after the
//! server restarts the next operation reconnects: no reopening of the store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::error::{Result, StateError};
use crate::groups::{self, GroupChange, GroupEntry};
use crate::migrations::{self, Dialect};
use crate::sqlite::{now_ms, page};
use crate::types::{check_job, check_memo_hash, check_name, check_run, check_scope, Cursor};
use crate::MemoRecord;
use crate::{
    ArtifactRecord, BlobLock, BlobLockMode, CacheRecord, Delivery, GateDecision, GateRecorded,
    LogFeedEvent, LogIndex, LogKey, LogLine, MetadataStore, RetentionPolicy, RunFilter, RunKey,
    RunPage, RunSummary, SessionRecord, TokenRecord, ViewJson,
};

pub use crate::migrations::SCHEMA_VERSION;

/// The advisory lock the migrations hold ("sparkwing" in ASCII, folded into an i64).
const MIGRATION_LOCK: i64 = 0x7370_6172_6b77_696e;
/// The advisory lock key of the blob lock (`crate::blob_lock`): "blobs" in ASCII.
const BLOB_LOCK: i64 = 0x0062_6c6f_6273;
/// Sessions a replica holds the blob lock on at once; more holders wait for one to end (each
/// holds a connection of its own, outside the pool, so holders never starve the pool).
const BLOB_LOCK_SESSIONS: usize = 8;

pub struct PgMetadata {
    pool: Pool,
    /// How to connect, for the log feed's own listening connection.
    config: tokio_postgres::Config,
    /// The log feed, started by the first subscriber.
    feed: std::sync::OnceLock<tokio::sync::broadcast::Sender<LogFeedEvent>>,
    /// The log feed's publisher's queue ([`publish_log_feed`]), started by the first publication.
    publisher: std::sync::OnceLock<tokio::sync::mpsc::Sender<Vec<String>>>,
    /// Permits for the sessions holding the blob lock ([`BLOB_LOCK_SESSIONS`]).
    blob_lock_sessions: Arc<tokio::sync::Semaphore>,
}

/// The channel the log feed's notifications are sent on.
const LOG_FEED_CHANNEL: &str = "sparkwing_logs";
/// Events a slow subscriber of the log feed may fall behind by before it misses some (it then
/// polls, as after a missed notification).
const LOG_FEED_BUFFER: usize = 4096;

/// Publications (one ingested batch's messages each) waiting for the feed's publisher; past it a
/// publication is refused, and followers on other replicas poll for its lines.
const LOG_FEED_QUEUE: usize = 1024;
/// Messages the publisher sends in one statement at most.
const LOG_FEED_STATEMENT: usize = 512;

/// The log feed's publisher: sends what is queued, many ingests' messages in one statement (in
/// queue order), on a connection of its own whose commits do not wait for the WAL flush. A
/// NOTIFY holds a database-wide lock through its commit, so publications each committed durably
/// by their ingest were committed one at a time, an fsync each: under 200 clients log batches
/// queued there for seconds. The feed is a shortcut, never the record (a lost publication costs
/// its followers a poll), so its commits need no flush. Ends when the store is dropped.
async fn publish_log_feed(
    config: tokio_postgres::Config,
    mut queue: tokio::sync::mpsc::Receiver<Vec<String>>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut last_attempt: Option<tokio::time::Instant> = None;
    while let Some(mut messages) = queue.recv().await {
        while messages.len() < LOG_FEED_STATEMENT {
            match queue.try_recv() {
                Ok(more) => messages.extend(more),
                Err(_) => break,
            }
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = None;
            // While the server is away, one attempt per 500 ms; the messages between are dropped.
            if last_attempt.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
                continue;
            }
            last_attempt = Some(tokio::time::Instant::now());
            client = connect_publisher(&config).await;
        }
        let Some(c) = &client else { continue };
        if let Err(e) = c.query(NOTIFY_LINES, &[&LOG_FEED_CHANNEL, &messages]).await {
            tracing::warn!(error = %e, "publishing log lines to the log feed");
            client = None;
        }
    }
}

async fn connect_publisher(config: &tokio_postgres::Config) -> Option<tokio_postgres::Client> {
    let (client, connection) = config.connect(NoTls).await.ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .ok()?;
    Some(client)
}

/// One statement: its notifications are delivered together, in order, at its commit.
const NOTIFY_LINES: &str =
    "SELECT pg_notify($1, m) FROM unnest($2::TEXT[]) WITH ORDINALITY AS t(m, i) ORDER BY i";

/// Send `event` to the feed's subscribers (none right now is no reason to stop); false once the
/// store that holds the sender is gone.
fn tell(tx: &tokio::sync::broadcast::WeakSender<LogFeedEvent>, event: LogFeedEvent) -> bool {
    match tx.upgrade() {
        Some(tx) => {
            let _ = tx.send(event);
            true
        }
        None => false,
    }
}

/// Keep one connection listening on [`LOG_FEED_CHANNEL`] and pass what arrives to `tx`; after a
/// lost connection, connect again and tell subscribers they may have missed events. Ends once the
/// store (which holds the sender) is gone.
async fn listen_for_log_lines(
    config: tokio_postgres::Config,
    tx: tokio::sync::broadcast::WeakSender<LogFeedEvent>,
) {
    use futures::StreamExt;
    let mut connected_before = false;
    while tx.strong_count() > 0 {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
            // The connection's messages are read by polling it: notifications come that way.
            let driver = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(n) = message {
                        if notes_tx.send(n).is_err() {
                            break;
                        }
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {LOG_FEED_CHANNEL}"))
                .await
                .is_ok()
            {
                if connected_before && !tell(&tx, LogFeedEvent::Resumed) {
                    driver.abort();
                    return;
                }
                connected_before = true;
                while let Some(note) = notes.recv().await {
                    let Some(event) = crate::logs::parse_feed_message(note.payload()) else {
                        continue;
                    };
                    if !tell(&tx, event) {
                        driver.abort();
                        return;
                    }
                }
            }
            driver.abort();
        }
        // A pause before connecting again, not a wait for a state: the server is away.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn classify(e: tokio_postgres::Error) -> StateError {
    let detail = e.to_string();
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exceptions; 53: insufficient resources; 57P01-57P03: the server is
        // shutting down or starting; 40001/40P01: serialisation failure, deadlock.
        let outage = code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01");
        let detail = format!("{} ({code})", db.message());
        return if outage {
            StateError::Unavailable {
                backend: "PostgreSQL",
                detail,
            }
        } else {
            StateError::Backend {
                backend: "PostgreSQL",
                detail,
            }
        };
    }
    // Without a server error: the connection (refused, closed, timed out) unless it is our
    // own conversion or configuration mistake.
    let ours = [
        "error serializing",
        "error deserializing",
        "invalid configuration",
    ];
    if ours.iter().any(|p| detail.starts_with(p)) {
        StateError::Backend {
            backend: "PostgreSQL",
            detail,
        }
    } else {
        StateError::Unavailable {
            backend: "PostgreSQL",
            detail: format!("{detail}{}", source_chain(&e)),
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn classify_pool(e: PoolError) -> StateError {
    match e {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(t) => StateError::Unavailable {
            backend: "PostgreSQL",
            detail: format!("no connection within the pool's timeout ({t:?})"),
        },
        PoolError::Closed => StateError::Unavailable {
            backend: "PostgreSQL",
            detail: "the connection pool is closed".into(),
        },
        other => StateError::Backend {
            backend: "PostgreSQL",
            detail: other.to_string(),
        },
    }
}

const CACHE_COLS: &str =
    "namespace, scope, cache_key, manifest, size_bytes, created_ms, last_used_ms";

fn cache_row(r: &Row) -> CacheRecord {
    CacheRecord {
        namespace: r.get(0),
        scope: r.get(1),
        key: r.get(2),
        manifest: r.get(3),
        size_bytes: r.get::<_, i64>(4) as u64,
        created_ms: r.get(5),
        last_used_ms: r.get(6),
    }
}

const ARTIFACT_COLS: &str = "namespace, run, job, name, manifest, size_bytes, files, created_ms";

const MEMO_COLS: &str = "namespace, scope, job, input_hash, run, outputs, finished_ms";

fn memo_row(r: &Row) -> MemoRecord {
    MemoRecord {
        namespace: r.get(0),
        scope: r.get(1),
        job: r.get(2),
        hash: r.get(3),
        run: r.get(4),
        outputs: r.get(5),
        finished_ms: r.get(6),
    }
}

fn artifact_row(r: &Row) -> ArtifactRecord {
    ArtifactRecord {
        run: RunKey::new(r.get::<_, String>(0), r.get::<_, String>(1)),
        job: r.get(2),
        name: r.get(3),
        manifest: r.get(4),
        size_bytes: r.get::<_, i64>(5) as u64,
        files: r.get::<_, i64>(6) as u64,
        created_ms: r.get(7),
    }
}

fn bad_row(e: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        location: "PostgreSQL".into(),
        detail: e.to_string(),
    }
}

fn gate_row(r: &Row, at: usize) -> GateDecision {
    GateDecision {
        decision: r.get(at),
        by: r.get(at + 1),
        at_ms: r.get(at + 2),
        comment: r.get(at + 3),
        timed_out: r.get(at + 4),
    }
}

impl PgMetadata {
    /// Connect (a pool) to `config` (a `postgres://` URL or `host=… user=…` pairs) and migrate.
    pub async fn open(config: &str) -> Result<Self> {
        let mut pg: tokio_postgres::Config = config.parse().map_err(|e| StateError::BadUrl {
            what: "metadata",
            url: redact(config),
            why: format!("not a PostgreSQL connection string: {e}"),
            forms: crate::error::METADATA_FORMS,
        })?;
        // A server gone without closing its connections (a partition) fails the statements sent
        // to it within 10 s instead of hanging them (TCP; a URL's own `tcp_user_timeout` wins).
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(Duration::from_secs(10));
        }
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                // A pooled connection is handed out again unless it is known closed: a server
                // that stops or restarts closes its connections, and they are replaced. No test
                // query per checkout: under load that round trip was one of every two.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StateError::Backend {
                backend: "PostgreSQL",
                detail: e.to_string(),
            })?;
        let store = PgMetadata {
            pool,
            config: pg,
            feed: std::sync::OnceLock::new(),
            publisher: std::sync::OnceLock::new(),
            blob_lock_sessions: Arc::new(tokio::sync::Semaphore::new(BLOB_LOCK_SESSIONS)),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(classify_pool)
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(classify)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(classify)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS sparkwing_schema (
                 version    BIGINT PRIMARY KEY,
                 applied_ms BIGINT NOT NULL
             )",
        )
        .await
        .map_err(classify)?;
        let found: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM sparkwing_schema",
                &[],
            )
            .await
            .map_err(classify)?
            .get(0);
        for (version, sql) in
            migrations::pending(found, Dialect::Postgres, "the PostgreSQL database")?
        {
            tx.batch_execute(&sql).await.map_err(classify)?;
            tx.execute(
                "INSERT INTO sparkwing_schema (version, applied_ms) VALUES ($1, $2)",
                &[&version, &now_ms()],
            )
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let client = self.client().await?;
        let st = client.prepare_cached(sql).await.map_err(classify)?;
        client.query(&st, params).await.map_err(classify)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let client = self.client().await?;
        let st = client.prepare_cached(sql).await.map_err(classify)?;
        client.execute(&st, params).await.map_err(classify)
    }
}

/// A connection string without its password, for error messages (also when it does not parse).
pub(crate) fn redact(config: &str) -> String {
    if let Some((scheme, rest)) = config.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            if let Some((user, _password)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}{path}");
            }
        }
        return config.to_string();
    }
    config
        .split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const TOKEN_COLS: &str =
    "id, hash, principal, scopes, created_ms, expires_ms, revoked, run_ns, run_name, upload, pool_uid";

const SESSION_COLS: &str = "hash, token_id, principal, scopes, csrf, created_ms, expires_ms";

fn session_row(r: &Row) -> Result<SessionRecord> {
    let scopes: String = r.get(3);
    Ok(SessionRecord {
        hash: r.get(0),
        token_id: r.get(1),
        principal: r.get(2),
        scopes: serde_json::from_str(&scopes).map_err(bad_row)?,
        csrf: r.get(4),
        created_ms: r.get(5),
        expires_ms: r.get(6),
    })
}

fn token_row(r: &Row) -> Result<TokenRecord> {
    let scopes: String = r.get(3);
    let run_ns: Option<String> = r.get(7);
    let run_name: Option<String> = r.get(8);
    Ok(TokenRecord {
        id: r.get(0),
        hash: r.get(1),
        principal: r.get(2),
        scopes: serde_json::from_str(&scopes).map_err(bad_row)?,
        created_ms: r.get(4),
        expires_ms: r.get(5),
        revoked: r.get(6),
        run: run_ns.zip(run_name).map(|(ns, n)| RunKey::new(ns, n)),
        upload: r.get(9),
        pool_uid: r.get(10),
    })
}

const RUN_COLS: &str = "namespace, name, pipeline, phase, created_ms, finished_ms, view";

fn run_row(r: &Row) -> Result<RunSummary> {
    let view: String = r.get(6);
    Ok(RunSummary {
        key: RunKey::new(r.get::<_, String>(0), r.get::<_, String>(1)),
        pipeline: r.get(2),
        phase: r.get(3),
        created_ms: r.get(4),
        finished_ms: r.get(5),
        view: ViewJson::from_text(view).map_err(bad_row)?,
    })
}

fn index_row(r: &Row) -> LogIndex {
    LogIndex {
        next_seq: r.get::<_, i64>(0) as u64,
        bytes: r.get::<_, i64>(1) as u64,
        lines: r.get::<_, i64>(2) as u64,
        capped: r.get(3),
    }
}

macro_rules! group_cols {
    () => {
        "namespace, run, job, position, holding, group_limit, cancel_in_progress, since_ms, lease_until_ms, cancel_asked"
    };
}
const GROUP_COLS: &str = group_cols!();

fn group_row(r: &Row, at: usize) -> GroupEntry {
    GroupEntry {
        run: RunKey::new(r.get::<_, String>(at), r.get::<_, String>(at + 1)),
        job: r.get(at + 2),
        position: r.get(at + 3),
        holding: r.get(at + 4),
        limit: u32::try_from(r.get::<_, i64>(at + 5)).unwrap_or(u32::MAX),
        cancel_in_progress: r.get(at + 6),
        since_ms: r.get(at + 7),
        lease_until_ms: r.get(at + 8),
        cancel_asked: r.get(at + 9),
    }
}

/// The transaction-scoped advisory lock of concurrency group `group`: the first 8 bytes of the
/// sha256 of `sparkwing-concurrency:GROUP`. Two groups sharing a lock only wait for each other.
fn group_lock(group: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("sparkwing-concurrency:{group}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

const GROUP_ENTRIES: &str = concat!(
    "SELECT ",
    group_cols!(),
    " FROM concurrency_slots WHERE group_key = $1 ORDER BY position, namespace, run, job"
);

#[async_trait]
impl MetadataStore for PgMetadata {
    async fn ping(&self) -> Result<()> {
        self.query("SELECT 1", &[]).await.map(drop)
    }

    async fn publish_log_lines(&self, key: &LogKey, lines: &[LogLine]) -> Result<()> {
        key.check()?;
        let messages = crate::logs::feed_messages(key, lines, crate::logs::FEED_MESSAGE_MAX);
        if messages.is_empty() {
            return Ok(());
        }
        let queue = self.publisher.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(LOG_FEED_QUEUE);
            tokio::spawn(publish_log_feed(self.config.clone(), rx));
            tx
        });
        queue.try_send(messages).map_err(|e| StateError::Unavailable {
            backend: "PostgreSQL",
            detail: match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => {
                    "the log feed's queue is full: followers on other replicas poll for these lines"
                }
                tokio::sync::mpsc::error::TrySendError::Closed(_) => "the log feed's publisher stopped",
            }
            .into(),
        })
    }

    fn log_feed(&self) -> Option<tokio::sync::broadcast::Receiver<LogFeedEvent>> {
        let tx = self.feed.get_or_init(|| {
            let (tx, _) = tokio::sync::broadcast::channel(LOG_FEED_BUFFER);
            tokio::spawn(listen_for_log_lines(self.config.clone(), tx.downgrade()));
            tx
        });
        Some(tx.subscribe())
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        let scopes = serde_json::to_string(&t.scopes).expect("strings serialise");
        let (run_ns, run_name) = (
            t.run.as_ref().map(|r| r.namespace.as_str()),
            t.run.as_ref().map(|r| r.name.as_str()),
        );
        self.execute(
            &format!(
                "INSERT INTO tokens ({TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (id) DO UPDATE SET hash = EXCLUDED.hash, principal = EXCLUDED.principal,
                   scopes = EXCLUDED.scopes, created_ms = EXCLUDED.created_ms,
                   expires_ms = EXCLUDED.expires_ms, revoked = EXCLUDED.revoked,
                   run_ns = EXCLUDED.run_ns, run_name = EXCLUDED.run_name,
                   upload = EXCLUDED.upload, pool_uid = EXCLUDED.pool_uid"
            ),
            &[
                &t.id,
                &t.hash,
                &t.principal,
                &scopes,
                &t.created_ms,
                &t.expires_ms,
                &t.revoked,
                &run_ns,
                &run_name,
                &t.upload,
                &t.pool_uid,
            ],
        )
        .await
        .map(drop)
    }

    async fn find_token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let rows = self
            .query(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = $1"),
                &[&hash],
            )
            .await?;
        rows.first().map(token_row).transpose()
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        self.execute("UPDATE tokens SET revoked = TRUE WHERE id = $1", &[&id])
            .await
            .map(|n| n > 0)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.query(
            &format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY created_ms, id"),
            &[],
        )
        .await?
        .iter()
        .map(token_row)
        .collect()
    }

    async fn collect_expired_tokens(&self, now_ms: i64) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .query(
                "DELETE FROM tokens WHERE expires_ms IS NOT NULL AND expires_ms <= $1 RETURNING id",
                &[&now_ms],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn insert_session(&self, t: &SessionRecord) -> Result<()> {
        let scopes = serde_json::to_string(&t.scopes).expect("strings serialise");
        self.execute(
            &format!(
                "INSERT INTO sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (hash) DO UPDATE SET token_id = EXCLUDED.token_id,
                   principal = EXCLUDED.principal, scopes = EXCLUDED.scopes,
                   csrf = EXCLUDED.csrf, created_ms = EXCLUDED.created_ms,
                   expires_ms = EXCLUDED.expires_ms"
            ),
            &[
                &t.hash,
                &t.token_id,
                &t.principal,
                &scopes,
                &t.csrf,
                &t.created_ms,
                &t.expires_ms,
            ],
        )
        .await
        .map(drop)
    }

    async fn find_session(&self, hash: &str) -> Result<Option<SessionRecord>> {
        let rows = self
            .query(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE hash = $1"),
                &[&hash],
            )
            .await?;
        rows.first().map(session_row).transpose()
    }

    async fn delete_session(&self, hash: &str) -> Result<bool> {
        self.execute("DELETE FROM sessions WHERE hash = $1", &[&hash])
            .await
            .map(|n| n > 0)
    }

    async fn collect_expired_sessions(&self, now_ms: i64) -> Result<u64> {
        self.execute("DELETE FROM sessions WHERE expires_ms <= $1", &[&now_ms])
            .await
    }

    async fn delete_token_sessions(&self, token_id: &str) -> Result<u64> {
        self.execute("DELETE FROM sessions WHERE token_id = $1", &[&token_id])
            .await
    }

    async fn revoke_run_tokens(&self, run: &RunKey) -> Result<u64> {
        self.execute(
            "UPDATE tokens SET revoked = TRUE WHERE run_ns = $1 AND run_name = $2 AND NOT revoked",
            &[&run.namespace, &run.name],
        )
        .await
    }

    async fn delete_token(&self, id: &str) -> Result<bool> {
        self.execute("DELETE FROM tokens WHERE id = $1", &[&id])
            .await
            .map(|n| n > 0)
    }

    async fn delete_run_tokens(&self, run: &RunKey) -> Result<u64> {
        self.execute(
            "DELETE FROM tokens WHERE run_ns = $1 AND run_name = $2",
            &[&run.namespace, &run.name],
        )
        .await
    }

    async fn upsert_run(&self, run: &RunSummary) -> Result<()> {
        check_run(&run.key)?;
        self.execute(
            &format!(
                "INSERT INTO runs ({RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (namespace, name) DO UPDATE SET pipeline = EXCLUDED.pipeline,
                   phase = EXCLUDED.phase, created_ms = EXCLUDED.created_ms,
                   finished_ms = EXCLUDED.finished_ms, view = EXCLUDED.view"
            ),
            &[
                &run.key.namespace,
                &run.key.name,
                &run.pipeline,
                &run.phase,
                &run.created_ms,
                &run.finished_ms,
                &run.view.text(),
            ],
        )
        .await
        .map(drop)
    }

    async fn get_run(&self, run: &RunKey) -> Result<Option<RunSummary>> {
        let rows = self
            .query(
                &format!("SELECT {RUN_COLS} FROM runs WHERE namespace = $1 AND name = $2"),
                &[&run.namespace, &run.name],
            )
            .await?;
        rows.first().map(run_row).transpose()
    }

    async fn get_runs(&self, runs: &[RunKey]) -> Result<Vec<RunSummary>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let namespaces: Vec<&str> = runs.iter().map(|r| r.namespace.as_str()).collect();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        self.query(
            &format!(
                "SELECT {RUN_COLS} FROM runs
                  WHERE (namespace, name) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))"
            ),
            &[&namespaces, &names],
        )
        .await?
        .iter()
        .map(run_row)
        .collect()
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RunPage> {
        let cursor = cursor.map(Cursor::decode).transpose()?;
        let limit = limit.max(1);
        let lim = limit as i64 + 1;
        let mut clauses = Vec::new();
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut arg = |v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            format!("${}", args.len())
        };
        if let Some(ns) = &filter.namespace {
            clauses.push(format!("namespace = {}", arg(Box::new(ns.clone()))));
        }
        if let Some(p) = &filter.pipeline {
            clauses.push(format!("pipeline = {}", arg(Box::new(p.clone()))));
        }
        if let Some(p) = &filter.phase {
            clauses.push(format!("phase = {}", arg(Box::new(p.clone()))));
        }
        if let Some(s) = filter.since_ms {
            clauses.push(format!("created_ms >= {}", arg(Box::new(s))));
        }
        if let Some(c) = cursor {
            let (t, ns, n) = (
                arg(Box::new(c.created_ms)),
                arg(Box::new(c.namespace)),
                arg(Box::new(c.name)),
            );
            clauses.push(format!(
                "(created_ms < {t} OR (created_ms = {t} AND (namespace > {ns} OR (namespace = {ns} AND name > {n}))))"
            ));
        }
        let lim_arg = arg(Box::new(lim));
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs {} ORDER BY created_ms DESC, namespace, name LIMIT {lim_arg}",
            if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            }
        );
        let args: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let mut runs = self
            .query(&sql, &args)
            .await?
            .iter()
            .map(run_row)
            .collect::<Result<Vec<_>>>()?;
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
        self.execute(
            "INSERT INTO job_states (namespace, run, job, state) VALUES ($1, $2, $3, $4)
             ON CONFLICT (namespace, run, job) DO UPDATE SET state = EXCLUDED.state",
            &[&run.namespace, &run.name, &job, &state.to_string()],
        )
        .await
        .map(drop)
    }

    async fn job_states(&self, run: &RunKey) -> Result<Vec<(String, serde_json::Value)>> {
        self.query(
            "SELECT job, state FROM job_states WHERE namespace = $1 AND run = $2 ORDER BY job",
            &[&run.namespace, &run.name],
        )
        .await?
        .iter()
        .map(|r| {
            let state: String = r.get(1);
            Ok((r.get(0), serde_json::from_str(&state).map_err(bad_row)?))
        })
        .collect()
    }

    async fn record_gate_decision(
        &self,
        run: &RunKey,
        gate: &str,
        d: &GateDecision,
    ) -> Result<GateRecorded> {
        check_run(run)?;
        check_name("gate", gate)?;
        let inserted = self
            .execute(
                "INSERT INTO gate_decisions
                   (namespace, run, gate, decision, decided_by, at_ms, comment, timed_out)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (namespace, run, gate) DO NOTHING",
                &[
                    &run.namespace,
                    &run.name,
                    &gate,
                    &d.decision,
                    &d.by,
                    &d.at_ms,
                    &d.comment,
                    &d.timed_out,
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(GateRecorded::First);
        }
        let standing = self
            .gate_decision(run, gate)
            .await?
            .ok_or_else(|| bad_row("gate decision vanished"))?;
        Ok(GateRecorded::Standing(standing))
    }

    async fn gate_decision(&self, run: &RunKey, gate: &str) -> Result<Option<GateDecision>> {
        let rows = self
            .query(
                "SELECT decision, decided_by, at_ms, comment, timed_out FROM gate_decisions
                 WHERE namespace = $1 AND run = $2 AND gate = $3",
                &[&run.namespace, &run.name, &gate],
            )
            .await?;
        Ok(rows.first().map(|r| gate_row(r, 0)))
    }

    async fn gate_decisions(&self, run: &RunKey) -> Result<Vec<(String, GateDecision)>> {
        let rows = self
            .query(
                "SELECT gate, decision, decided_by, at_ms, comment, timed_out FROM gate_decisions
                 WHERE namespace = $1 AND run = $2 ORDER BY gate",
                &[&run.namespace, &run.name],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), gate_row(r, 1))).collect())
    }

    async fn record_delivery(&self, id: &str, answer: &serde_json::Value) -> Result<Delivery> {
        let inserted = self
            .execute(
                "INSERT INTO deliveries (id, answer, received_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[&id, &answer.to_string(), &now_ms()],
            )
            .await?;
        if inserted == 1 {
            return Ok(Delivery::First);
        }
        let rows = self
            .query("SELECT answer FROM deliveries WHERE id = $1", &[&id])
            .await?;
        let first: String = rows
            .first()
            .ok_or_else(|| bad_row("delivery vanished"))?
            .get(0);
        Ok(Delivery::Duplicate(
            serde_json::from_str(&first).map_err(bad_row)?,
        ))
    }

    async fn find_delivery(&self, id: &str) -> Result<Option<(serde_json::Value, i64)>> {
        let rows = self
            .query(
                "SELECT answer, received_ms FROM deliveries WHERE id = $1",
                &[&id],
            )
            .await?;
        match rows.first() {
            Some(r) => {
                let answer: String = r.get(0);
                Ok(Some((
                    serde_json::from_str(&answer).map_err(bad_row)?,
                    r.get(1),
                )))
            }
            None => Ok(None),
        }
    }

    async fn delete_delivery(&self, id: &str) -> Result<bool> {
        self.execute("DELETE FROM deliveries WHERE id = $1", &[&id])
            .await
            .map(|n| n > 0)
    }

    async fn log_index(&self, key: &LogKey) -> Result<Option<LogIndex>> {
        Ok(self
            .query(
                "SELECT next_seq, bytes, lines, capped FROM log_index
                 WHERE namespace = $1 AND run = $2 AND job = $3",
                &[&key.run.namespace, &key.run.name, &key.job],
            )
            .await?
            .first()
            .map(index_row))
    }

    async fn advance_log_index(&self, key: &LogKey, ix: &LogIndex) -> Result<LogIndex> {
        key.check()?;
        // One statement: the upsert and the answer are atomic without a transaction. When the
        // stored index is ahead nothing is updated and RETURNING is empty: read it then.
        let rows = self
            .query(
                "INSERT INTO log_index AS l (namespace, run, job, next_seq, bytes, lines, capped)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (namespace, run, job) DO UPDATE SET next_seq = EXCLUDED.next_seq,
                   bytes = EXCLUDED.bytes, lines = EXCLUDED.lines, capped = EXCLUDED.capped
                 WHERE EXCLUDED.next_seq > l.next_seq
                    OR (EXCLUDED.next_seq = l.next_seq AND EXCLUDED.capped AND NOT l.capped)
                 RETURNING next_seq, bytes, lines, capped",
                &[
                    &key.run.namespace,
                    &key.run.name,
                    &key.job,
                    &(ix.next_seq as i64),
                    &(ix.bytes as i64),
                    &(ix.lines as i64),
                    &ix.capped,
                ],
            )
            .await?;
        match rows.first() {
            Some(r) => Ok(index_row(r)),
            None => self
                .log_index(key)
                .await?
                .ok_or_else(|| bad_row("log index vanished")),
        }
    }

    async fn log_jobs(&self, run: &RunKey) -> Result<Vec<String>> {
        Ok(self
            .query(
                "SELECT job FROM log_index WHERE namespace = $1 AND run = $2 ORDER BY job",
                &[&run.namespace, &run.name],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn change_group(&self, group: &str, change: GroupChange) -> Result<Vec<GroupEntry>> {
        check_name("concurrency group", group)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(classify)?;
        // Concurrent changes of the group, from any replica, wait here for each other: each
        // reads the entries the one before it wrote.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&group_lock(group)])
            .await
            .map_err(classify)?;
        let before: Vec<GroupEntry> = tx
            .query(GROUP_ENTRIES, &[&group])
            .await
            .map_err(classify)?
            .iter()
            .map(|r| group_row(r, 0))
            .collect();
        let mut after = before.clone();
        change(&mut after);
        let w = groups::writes(group, &before, &after)?;
        for (run, job) in &w.delete {
            tx.execute(
                "DELETE FROM concurrency_slots
                 WHERE group_key = $1 AND namespace = $2 AND run = $3 AND job = $4",
                &[&group, &run.namespace, &run.name, job],
            )
            .await
            .map_err(classify)?;
        }
        for e in &w.upsert {
            tx.execute(
                &format!(
                    "INSERT INTO concurrency_slots (group_key, {GROUP_COLS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (group_key, namespace, run, job) DO UPDATE SET
                       position = EXCLUDED.position, holding = EXCLUDED.holding,
                       group_limit = EXCLUDED.group_limit,
                       cancel_in_progress = EXCLUDED.cancel_in_progress,
                       since_ms = EXCLUDED.since_ms, lease_until_ms = EXCLUDED.lease_until_ms,
                       cancel_asked = EXCLUDED.cancel_asked"
                ),
                &[
                    &group,
                    &e.run.namespace,
                    &e.run.name,
                    &e.job,
                    &e.position,
                    &e.holding,
                    &(e.limit as i64),
                    &e.cancel_in_progress,
                    &e.since_ms,
                    &e.lease_until_ms,
                    &e.cancel_asked,
                ],
            )
            .await
            .map_err(classify)?;
        }
        let now: Vec<GroupEntry> = tx
            .query(GROUP_ENTRIES, &[&group])
            .await
            .map_err(classify)?
            .iter()
            .map(|r| group_row(r, 0))
            .collect();
        tx.commit().await.map_err(classify)?;
        Ok(now)
    }

    async fn run_groups(&self, run: &RunKey) -> Result<Vec<(String, Vec<GroupEntry>)>> {
        let rows = self
            .query(
                &format!(
                    "SELECT group_key, {GROUP_COLS} FROM concurrency_slots
                      WHERE group_key IN (SELECT group_key FROM concurrency_slots
                                           WHERE namespace = $1 AND run = $2)
                      ORDER BY group_key, position, namespace, run, job"
                ),
                &[&run.namespace, &run.name],
            )
            .await?;
        let mut out: Vec<(String, Vec<GroupEntry>)> = Vec::new();
        for r in &rows {
            let g: String = r.get(0);
            let e = group_row(r, 1);
            match out.last_mut() {
                Some((last, entries)) if *last == g => entries.push(e),
                _ => out.push((g, vec![e])),
            }
        }
        Ok(out)
    }

    async fn leave_groups(&self, run: &RunKey) -> Result<Vec<String>> {
        let rows = self
            .query(
                "DELETE FROM concurrency_slots WHERE namespace = $1 AND run = $2
                 RETURNING group_key",
                &[&run.namespace, &run.name],
            )
            .await?;
        let mut groups: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    async fn group_runs(&self) -> Result<Vec<RunKey>> {
        let rows = self
            .query(
                "SELECT DISTINCT namespace, run FROM concurrency_slots ORDER BY namespace, run",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| RunKey::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect())
    }

    async fn commit_cache_entry(&self, e: &CacheRecord) -> Result<bool> {
        check_name("namespace", &e.namespace)?;
        check_scope(&e.scope)?;
        check_name("cache key", &e.key)?;
        let n = self
            .execute(
                &format!(
                    "INSERT INTO cache_entries ({CACHE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (namespace, scope, cache_key) DO NOTHING"
                ),
                &[
                    &e.namespace,
                    &e.scope,
                    &e.key,
                    &e.manifest,
                    &(e.size_bytes as i64),
                    &e.created_ms,
                    &e.last_used_ms,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn cache_entry(
        &self,
        namespace: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<CacheRecord>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {CACHE_COLS} FROM cache_entries
                     WHERE namespace = $1 AND scope = $2 AND cache_key = $3"
                ),
                &[&namespace, &scope, &key],
            )
            .await?;
        Ok(rows.first().map(cache_row))
    }

    async fn list_cache_entries(&self, namespace: Option<&str>) -> Result<Vec<CacheRecord>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {CACHE_COLS} FROM cache_entries
                     WHERE $1::TEXT IS NULL OR namespace = $1
                     ORDER BY namespace COLLATE \"C\", scope COLLATE \"C\", cache_key COLLATE \"C\""
                ),
                &[&namespace],
            )
            .await?;
        Ok(rows.iter().map(cache_row).collect())
    }

    async fn touch_cache_entry(
        &self,
        namespace: &str,
        scope: &str,
        key: &str,
        at_ms: i64,
    ) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE cache_entries SET last_used_ms = GREATEST(last_used_ms, $4)
                 WHERE namespace = $1 AND scope = $2 AND cache_key = $3",
                &[&namespace, &scope, &key, &at_ms],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_cache_entry(&self, namespace: &str, scope: &str, key: &str) -> Result<bool> {
        let n = self
            .execute(
                "DELETE FROM cache_entries WHERE namespace = $1 AND scope = $2 AND cache_key = $3",
                &[&namespace, &scope, &key],
            )
            .await?;
        Ok(n > 0)
    }

    async fn put_artifact(&self, a: &ArtifactRecord) -> Result<()> {
        check_run(&a.run)?;
        check_job(&a.job)?;
        check_name("artifact", &a.name)?;
        self.execute(
            &format!(
                "INSERT INTO artifacts ({ARTIFACT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (namespace, run, job, name) DO UPDATE SET
                   manifest = EXCLUDED.manifest, size_bytes = EXCLUDED.size_bytes,
                   files = EXCLUDED.files, created_ms = EXCLUDED.created_ms"
            ),
            &[
                &a.run.namespace,
                &a.run.name,
                &a.job,
                &a.name,
                &a.manifest,
                &(a.size_bytes as i64),
                &(a.files as i64),
                &a.created_ms,
            ],
        )
        .await
        .map(drop)
    }

    async fn artifact(
        &self,
        run: &RunKey,
        job: &str,
        name: &str,
    ) -> Result<Option<ArtifactRecord>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {ARTIFACT_COLS} FROM artifacts
                     WHERE namespace = $1 AND run = $2 AND job = $3 AND name = $4"
                ),
                &[&run.namespace, &run.name, &job, &name],
            )
            .await?;
        Ok(rows.first().map(artifact_row))
    }

    async fn list_artifacts(&self, run: &RunKey) -> Result<Vec<ArtifactRecord>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {ARTIFACT_COLS} FROM artifacts WHERE namespace = $1 AND run = $2
                     ORDER BY job COLLATE \"C\", name COLLATE \"C\""
                ),
                &[&run.namespace, &run.name],
            )
            .await?;
        Ok(rows.iter().map(artifact_row).collect())
    }

    async fn lock_blobs(&self, mode: BlobLockMode) -> Result<BlobLock> {
        let permit = self
            .blob_lock_sessions
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StateError::Backend {
                backend: "PostgreSQL",
                detail: format!("blob lock sessions: {e}"),
            })?;
        // A session of its own: the lock lasts as long as the session, so dropping the client
        // (or this replica dying) releases it, and a holder never keeps a pooled connection.
        let (client, connection) =
            tokio::time::timeout(Duration::from_secs(5), self.config.connect(NoTls))
                .await
                .map_err(|_| StateError::Unavailable {
                    backend: "PostgreSQL",
                    detail: "connecting for the blob lock took over 5 s".into(),
                })?
                .map_err(classify)?;
        // Ends by itself once the client is dropped.
        tokio::spawn(connection);
        let sql = match mode {
            BlobLockMode::Reuse => "SELECT pg_advisory_lock_shared($1)",
            BlobLockMode::Sweep => "SELECT pg_advisory_lock($1)",
        };
        client.execute(sql, &[&BLOB_LOCK]).await.map_err(classify)?;
        Ok(BlobLock::new((client, permit)))
    }

    async fn chunk_manifests(&self) -> Result<Vec<String>> {
        let rows = self
            .query(
                "SELECT manifest FROM cache_entries UNION ALL SELECT manifest FROM artifacts",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn record_memo(&self, r: &MemoRecord) -> Result<()> {
        check_run(&RunKey::new(r.namespace.clone(), r.run.clone()))?;
        check_scope(&r.scope)?;
        check_job(&r.job)?;
        check_memo_hash(&r.hash)?;
        self.execute(
            &format!(
                "INSERT INTO memo_results ({MEMO_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (namespace, scope, job, input_hash, run) DO UPDATE SET
                   outputs = EXCLUDED.outputs, finished_ms = EXCLUDED.finished_ms"
            ),
            &[
                &r.namespace,
                &r.scope,
                &r.job,
                &r.hash,
                &r.run,
                &r.outputs,
                &r.finished_ms,
            ],
        )
        .await
        .map(drop)
    }

    async fn memo_results(
        &self,
        namespace: &str,
        scope: &str,
        job: &str,
        hash: &str,
    ) -> Result<Vec<MemoRecord>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {MEMO_COLS} FROM memo_results
                     WHERE namespace = $1 AND scope = $2 AND job = $3 AND input_hash = $4
                     ORDER BY finished_ms DESC, run COLLATE \"C\" DESC"
                ),
                &[&namespace, &scope, &job, &hash],
            )
            .await?;
        Ok(rows.iter().map(memo_row).collect())
    }

    async fn apply_retention(&self, policy: &RetentionPolicy) -> Result<Vec<RunKey>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let before = policy.finished_before_ms;
        let keep = policy.keep_finished.map(|k| k as i64);
        // One statement picks the runs, the spared are left out, and the delete by the picked
        // keys says which runs this call removed (a replica collecting at the same time removes
        // the others: each run is removed, and its content deleted, by one caller).
        let picked = tx
            .query(
                "SELECT namespace, name FROM runs
                  WHERE finished_ms IS NOT NULL AND $1::BIGINT IS NOT NULL AND finished_ms < $1
                 UNION
                 SELECT namespace, name FROM (
                     SELECT namespace, name FROM runs WHERE finished_ms IS NOT NULL
                      ORDER BY finished_ms DESC, namespace, name OFFSET COALESCE($2::BIGINT, 0)
                 ) AS beyond WHERE $2::BIGINT IS NOT NULL",
                &[&before, &keep],
            )
            .await
            .map_err(classify)?;
        let (namespaces, names): (Vec<String>, Vec<String>) = picked
            .iter()
            .map(|r| RunKey::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .filter(|k| !policy.spare.contains(k))
            .map(|k| (k.namespace, k.name))
            .unzip();
        let rows = tx
            .query(
                "DELETE FROM runs WHERE (namespace, name) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))
                 RETURNING namespace, name",
                &[&namespaces, &names],
            )
            .await
            .map_err(classify)?;
        let mut doomed: Vec<RunKey> = rows
            .iter()
            .map(|r| RunKey::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        doomed.sort();
        let (namespaces, names): (Vec<&str>, Vec<&str>) = doomed
            .iter()
            .map(|k| (k.namespace.as_str(), k.name.as_str()))
            .unzip();
        for sql in [
            "DELETE FROM job_states WHERE (namespace, run) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))",
            "DELETE FROM gate_decisions WHERE (namespace, run) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))",
            "DELETE FROM concurrency_slots WHERE (namespace, run) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))",
            "DELETE FROM log_index WHERE (namespace, run) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))",
            "DELETE FROM artifacts WHERE (namespace, run) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))",
            "DELETE FROM memo_results WHERE (namespace, run) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))",
            "DELETE FROM tokens WHERE (run_ns, run_name) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))",
        ] {
            tx.execute(sql, &[&namespaces, &names])
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(doomed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        for (given, shown) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:p@w@h:bad/db", "postgres://u:***@h:bad/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("host=/s user=u password=pw", "host=/s user=u password=***"),
        ] {
            assert_eq!(super::redact(given), shown);
        }
    }
}
