//! The API's state layer: what the API stores, behind two traits, each with an embedded and a
//! shared implementation (see `docs/state.md`).
//!
//! - [`MetadataStore`]: tokens, the run index, job states, gate decisions, webhook deliveries,
//!   the log index, concurrency groups of cluster runs and retention. Embedded: SQLite ([`sqlite::SqliteMetadata`]); shared:
//!   PostgreSQL ([`postgres::PgMetadata`]).
//! - [`ContentStore`]: blobs by sha256, manifests, log segments, run archives. Embedded: files
//!   in one directory ([`files::FileContent`]); shared: an object store
//!   ([`objects::ObjectContent`]: S3-compatible, or a local file system).
//!
//! [`open_metadata`] and [`open_content`] pick the implementation from a URL.

pub mod blob_lock;
pub mod error;
pub mod files;
pub mod groups;
pub mod ingest;
pub mod logs;
pub mod migrations;
pub mod objects;
pub mod open;
pub mod postgres;
pub mod sqlite;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod types;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use blob_lock::{BlobLock, BlobLockMode};
pub use error::{Result, StateError};
pub use groups::{change_group_with, GroupChange, GroupEntry};
pub use ingest::{ingest, ingest_lines, ingest_lines_at, IngestReport, Ingested};
pub use logs::{AppendReport, LogFeedEvent, LogKey, LogLine, LogStream};
pub use open::{open_content, open_content_with, open_metadata};
pub use types::{
    parse_run_cursor, run_cursor, ArtifactRecord, CacheRecord, Delivery, GateDecision,
    GateRecorded, LogIndex, MemoRecord, RetentionPolicy, RunFilter, RunKey, RunPage, RunSummary,
    SessionRecord, StoredItem, TokenRecord, ViewJson,
};

/// Bytes as they arrive (a request body), for [`ContentStore::put_blob`].
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Records: small, queried, transactional.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// Whether the database answers (a readiness probe).
    async fn ping(&self) -> Result<()>;

    // Tokens (hashes only; the token itself is never stored).
    /// Insert a token record; an existing id is replaced.
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    /// The record whose hash is `hash` (revoked or not; the caller decides).
    async fn find_token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Mark a token revoked; false when no token has that id.
    async fn revoke_token(&self, id: &str) -> Result<bool>;
    /// Every record, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Delete the records whose expiry is at or before `now_ms`; their ids.
    async fn collect_expired_tokens(&self, now_ms: i64) -> Result<Vec<String>>;

    // Dashboard sessions (hashes only; the session secret is never stored).
    /// Insert a session; an existing hash is replaced.
    async fn insert_session(&self, session: &SessionRecord) -> Result<()>;
    /// The session whose hash is `hash` (expired or not; the caller decides).
    async fn find_session(&self, hash: &str) -> Result<Option<SessionRecord>>;
    /// Delete a session (logout); false when none has that hash.
    async fn delete_session(&self, hash: &str) -> Result<bool>;
    /// Delete the sessions whose expiry is at or before `now_ms`; how many.
    async fn collect_expired_sessions(&self, now_ms: i64) -> Result<u64>;
    /// Delete every session made from the token `token_id` (it was revoked); how many.
    async fn delete_token_sessions(&self, token_id: &str) -> Result<u64>;
    /// Revoke every token minted for a run (a cancelled, finished or deleted run); how many.
    async fn revoke_run_tokens(&self, run: &RunKey) -> Result<u64>;
    /// Delete a token record (a runner or pool token is forgotten, not kept revoked); false when
    /// no token has that id.
    async fn delete_token(&self, id: &str) -> Result<bool>;
    /// Delete every token record minted for a run; how many.
    async fn delete_run_tokens(&self, run: &RunKey) -> Result<u64>;

    // The run index (live and archived runs' list views).
    /// Insert or replace a run's summary.
    async fn upsert_run(&self, run: &RunSummary) -> Result<()>;
    async fn get_run(&self, run: &RunKey) -> Result<Option<RunSummary>>;
    /// The summaries of those of `runs` that are indexed, in one lookup (any order).
    async fn get_runs(&self, runs: &[RunKey]) -> Result<Vec<RunSummary>>;
    /// Newest first (then namespace, name); `next` continues after the page's last run, stable
    /// however many runs are added meanwhile.
    async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RunPage>;

    // Job states: the last one a runner posted, per job.
    async fn put_job_state(&self, run: &RunKey, job: &str, state: &serde_json::Value)
        -> Result<()>;
    /// `(job, state)` by job name.
    async fn job_states(&self, run: &RunKey) -> Result<Vec<(String, serde_json::Value)>>;

    // Approval gate decisions: the first decision on a gate of a run stands.
    /// Record `decision` on `gate` of `run` unless one is recorded; [`GateRecorded::Standing`]
    /// with the recorded one otherwise.
    async fn record_gate_decision(
        &self,
        run: &RunKey,
        gate: &str,
        decision: &GateDecision,
    ) -> Result<GateRecorded>;
    /// The decision recorded on `gate` of `run`, if any.
    async fn gate_decision(&self, run: &RunKey, gate: &str) -> Result<Option<GateDecision>>;
    /// Every decision recorded on a run's gates, by gate name.
    async fn gate_decisions(&self, run: &RunKey) -> Result<Vec<(String, GateDecision)>>;

    // Webhook deliveries: the first answer to a delivery id wins.
    /// Record `answer` for `id` unless one is recorded; what is recorded now.
    async fn record_delivery(&self, id: &str, answer: &serde_json::Value) -> Result<Delivery>;
    /// The answer recorded for `id` and when it was recorded (Unix ms).
    async fn find_delivery(&self, id: &str) -> Result<Option<(serde_json::Value, i64)>>;
    /// Forget a delivery (a record past its replay window, to be recorded anew).
    async fn delete_delivery(&self, id: &str) -> Result<bool>;

    // The log index: per job, what its stored log holds.
    async fn log_index(&self, key: &LogKey) -> Result<Option<LogIndex>>;
    /// Store `index` unless a stored one is at least as far (`next_seq`): concurrent writers
    /// never move a log's index backwards. The index now stored.
    async fn advance_log_index(&self, key: &LogKey, index: &LogIndex) -> Result<LogIndex>;
    /// The jobs of a run that have a log, by name.
    async fn log_jobs(&self, run: &RunKey) -> Result<Vec<String>>;

    // The log feed: lines stored through one replica, told to the followers of every replica.
    /// Tell every subscriber of [`Self::log_feed`] (on any replica) that `lines` of `key` are
    /// stored. Best effort by design: a follower that misses it finds the lines at its next poll
    /// of the log index. May return once the lines are queued for sending (PostgreSQL). Without a
    /// feed (one process), nothing to do.
    async fn publish_log_lines(&self, _key: &LogKey, _lines: &[LogLine]) -> Result<()> {
        Ok(())
    }
    /// A subscription to the lines every replica publishes (this one's included), in the order
    /// each replica published them; `None` when the store has no feed (the embedded store serves
    /// one process, whose followers are woken in-process).
    fn log_feed(&self) -> Option<tokio::sync::broadcast::Receiver<LogFeedEvent>> {
        None
    }

    // Concurrency groups of cluster runs ([`groups`]): one entry per run in a group.
    /// Apply `change` to the entries of `group` (in arrival order) and store what it changed, in
    /// one transaction; changes of the same group, from any replica, run one after the other.
    /// A change that leaves a run twice, a limit of 0 or a bad name stores nothing
    /// ([`StateError::Invalid`]). The entries after the change, in arrival order.
    async fn change_group(&self, group: &str, change: GroupChange) -> Result<Vec<GroupEntry>>;
    /// The groups `run` has an entry in, each with all its entries in arrival order.
    async fn run_groups(&self, run: &RunKey) -> Result<Vec<(String, Vec<GroupEntry>)>>;
    /// Remove every entry of `run` (it ended, or is gone); the groups it left.
    async fn leave_groups(&self, run: &RunKey) -> Result<Vec<String>>;
    /// Every run that has an entry in some group (for collection: entries of runs that ended or
    /// are gone are removed).
    async fn group_runs(&self) -> Result<Vec<RunKey>>;

    // Dependency caches of cluster runs, by namespace, scope and key: the first commit of a key
    // stands.
    /// Store `entry` unless its key is stored in its namespace and scope; false when one was
    /// (the stored entry is kept whole).
    async fn commit_cache_entry(&self, entry: &CacheRecord) -> Result<bool>;
    async fn cache_entry(
        &self,
        namespace: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<CacheRecord>>;
    /// Every entry (of `namespace`, when given), by namespace, scope, key.
    async fn list_cache_entries(&self, namespace: Option<&str>) -> Result<Vec<CacheRecord>>;
    /// Mark an entry used at `at_ms` (restored); false when there is none.
    async fn touch_cache_entry(
        &self,
        namespace: &str,
        scope: &str,
        key: &str,
        at_ms: i64,
    ) -> Result<bool>;
    /// False when there was none.
    async fn delete_cache_entry(&self, namespace: &str, scope: &str, key: &str) -> Result<bool>;

    // Artifacts of cluster runs, by run, job and name.
    /// Store `artifact`, replacing one of the same run, job and name (a later attempt's).
    async fn put_artifact(&self, artifact: &ArtifactRecord) -> Result<()>;
    async fn artifact(&self, run: &RunKey, job: &str, name: &str)
        -> Result<Option<ArtifactRecord>>;
    /// A run's artifacts, by job, name.
    async fn list_artifacts(&self, run: &RunKey) -> Result<Vec<ArtifactRecord>>;
    /// The manifests of every cache entry and artifact (for collection: their chunks are kept).
    async fn chunk_manifests(&self) -> Result<Vec<String>>;
    /// Take the blob lock in `mode` ([`blob_lock`]), waiting while the other mode holds it; it is
    /// held until the answer is dropped.
    async fn lock_blobs(&self, mode: BlobLockMode) -> Result<BlobLock>;

    // Memoized jobs of cluster runs, by namespace, cache scope, job and input hash.
    /// Store `record`, replacing one of the same run (its namespace, scope, job and hash).
    async fn record_memo(&self, record: &MemoRecord) -> Result<()>;
    /// The successes of `job` with input `hash` in `namespace` and `scope`, newest first.
    async fn memo_results(
        &self,
        namespace: &str,
        scope: &str,
        job: &str,
        hash: &str,
    ) -> Result<Vec<MemoRecord>>;

    /// Remove finished runs (and their job states, gate decisions, group entries, log index, artifacts, memo results and run tokens)
    /// that the policy picks; the runs removed, so their content can be deleted.
    async fn apply_retention(&self, policy: &RetentionPolicy) -> Result<Vec<RunKey>>;
}

/// Bytes: blobs, manifests, logs, archives.
#[async_trait]
pub trait ContentStore: Send + Sync {
    /// Store a blob whose sha256 (lowercase hex) is `sha256`, streamed from `body`; visible only
    /// once complete and verified (a wrong hash: [`StateError::HashMismatch`], nothing stored).
    /// Returns the size; a blob already stored is kept (and the body still verified).
    async fn put_blob(&self, sha256: &str, body: ByteStream) -> Result<u64>;
    /// The blob's bytes as a stream; `None` when absent.
    async fn get_blob(&self, sha256: &str) -> Result<Option<ByteStream>>;
    /// Bytes `range` of a blob (clamped to its end); `None` when absent.
    async fn get_blob_range(&self, sha256: &str, range: Range<u64>) -> Result<Option<Bytes>>;
    async fn blob_size(&self, sha256: &str) -> Result<Option<u64>>;
    async fn blob_exists(&self, sha256: &str) -> Result<bool> {
        Ok(self.blob_size(sha256).await?.is_some())
    }
    /// False when there was none.
    async fn delete_blob(&self, sha256: &str) -> Result<bool>;

    /// Manifests by upload id (written whole, replaced whole).
    async fn put_manifest(&self, id: &str, manifest: Bytes) -> Result<()>;
    async fn get_manifest(&self, id: &str) -> Result<Option<Bytes>>;
    async fn delete_manifest(&self, id: &str) -> Result<bool>;
    /// Every manifest, for garbage collection (by id; `modified_ms`: last written).
    async fn list_manifests(&self) -> Result<Vec<StoredItem>>;
    /// Every blob, for garbage collection (by sha256; `modified_ms`: when stored).
    async fn list_blobs(&self) -> Result<Vec<StoredItem>>;

    /// Append a batch of one job's lines, in seq order: lines at or below the stored last seq are
    /// duplicates (ignored), the rest must follow on without a hole ([`StateError::LogGap`],
    /// nothing stored). Returns once the lines are durable.
    async fn append_log(&self, key: &LogKey, lines: &[LogLine]) -> Result<AppendReport>;
    /// At most `limit` lines after seq `after`, in order.
    async fn read_log_after(&self, key: &LogKey, after: u64, limit: usize) -> Result<Vec<LogLine>>;
    /// The last `n` lines, in order.
    async fn read_log_tail(&self, key: &LogKey, n: usize) -> Result<Vec<LogLine>>;
    /// The highest stored seq (0: none).
    async fn log_last_seq(&self, key: &LogKey) -> Result<u64>;
    /// Delete every log of a run.
    async fn delete_run_logs(&self, run: &RunKey) -> Result<()>;

    /// A finished run's archive (the whole resource, as the API serialises it).
    async fn put_archive(&self, run: &RunKey, archive: Bytes) -> Result<()>;
    async fn get_archive(&self, run: &RunKey) -> Result<Option<Bytes>>;
    async fn delete_archive(&self, run: &RunKey) -> Result<bool>;
}
