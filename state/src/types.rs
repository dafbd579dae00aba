//! The records the stores keep. Times are Unix milliseconds (UTC).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};

/// A run: `(namespace, name)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunKey {
    pub namespace: String,
    pub name: String,
}

impl RunKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RunKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A token record: its hash, never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// Lowercase hex sha256 of the whole token string.
    pub hash: String,
    pub principal: String,
    pub scopes: Vec<String>,
    pub created_ms: i64,
    /// When the record may be collected (runner and pool tokens); `None`: never.
    pub expires_ms: Option<i64>,
    pub revoked: bool,
    /// Runner tokens: the run they act for (revoked with it).
    pub run: Option<RunKey>,
    /// Runner tokens: the upload their run's source is.
    pub upload: Option<String>,
    /// Pool tokens: the RunnerPool's uid.
    pub pool_uid: Option<String>,
}

/// A dashboard login session: the hash of its cookie's secret, never the secret, and what the
/// API token it was made from allowed when it was made (the token itself is not kept).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Lowercase hex sha256 of the session secret (the cookie's value).
    pub hash: String,
    /// The id of the API token exchanged for it.
    pub token_id: String,
    pub principal: String,
    pub scopes: Vec<String>,
    /// The session's CSRF token: every state-changing request of the session carries it.
    pub csrf: String,
    pub created_ms: i64,
    /// After this the session is refused (and may be collected).
    pub expires_ms: i64,
}

/// What the runs list shows of a run, plus what it is filtered and ordered by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub key: RunKey,
    pub pipeline: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Cancelled`.
    pub phase: String,
    pub created_ms: i64,
    /// Set once the run is finished; retention only considers finished runs.
    pub finished_ms: Option<i64>,
    /// The list view's other fields, as the API serialises them.
    pub view: ViewJson,
}

/// A run's list view as stored: JSON text, checked but not parsed, so a reader parses only the
/// entries it answers with (a runs list reads more entries than it shows).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ViewJson(Box<serde_json::value::RawValue>);

impl ViewJson {
    /// `value` serialised.
    pub fn new(value: &impl Serialize) -> std::result::Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(ViewJson)
    }

    /// Stored text, checked to be one JSON value.
    pub fn from_text(text: String) -> std::result::Result<Self, serde_json::Error> {
        serde_json::value::RawValue::from_string(text).map(ViewJson)
    }

    pub fn text(&self) -> &str {
        self.0.get()
    }

    pub fn parse<T: serde::de::DeserializeOwned>(
        &self,
    ) -> std::result::Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

/// The same text: a view is stored and read back as written.
impl PartialEq for ViewJson {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

/// Server-side filters of the runs list; `None`: any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub namespace: Option<String>,
    pub pipeline: Option<String>,
    pub phase: Option<String>,
    /// Runs created at or after this time.
    pub since_ms: Option<i64>,
}

/// One page of the runs list.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    /// The cursor of the next page; `None` when no run follows.
    pub next: Option<String>,
}

/// Where a page ends: the last run's `(created, namespace, name)`. Opaque to clients: hex of
/// `created_ms \0 namespace \0 name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub created_ms: i64,
    pub namespace: String,
    pub name: String,
}

/// The cursor of the runs list that continues after `(created_ms, namespace, name)`: what a
/// caller merging the list with runs from elsewhere hands back as its own page's `next`.
pub fn run_cursor(created_ms: i64, namespace: &str, name: &str) -> String {
    Cursor {
        created_ms,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
    .encode()
}

/// The `(created_ms, namespace, name)` a cursor continues after; `Invalid` for one this layer
/// did not make.
pub fn parse_run_cursor(cursor: &str) -> Result<(i64, String, String)> {
    let c = Cursor::decode(cursor)?;
    Ok((c.created_ms, c.namespace, c.name))
}

impl Cursor {
    pub(crate) fn after(run: &RunSummary) -> Self {
        Cursor {
            created_ms: run.created_ms,
            namespace: run.key.namespace.clone(),
            name: run.key.name.clone(),
        }
    }

    pub(crate) fn encode(&self) -> String {
        hex::encode(format!(
            "{}\0{}\0{}",
            self.created_ms, self.namespace, self.name
        ))
    }

    pub(crate) fn decode(s: &str) -> Result<Self> {
        let bad = || StateError::invalid("cursor", s, "not a cursor this server gave");
        let bytes = hex::decode(s).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.split('\0');
        let (Some(created), Some(namespace), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Cursor {
            created_ms: created.parse().map_err(|_| bad())?,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

/// A decision on an approval gate of a run, as the API records it (`docs/state.md`): the first
/// one recorded stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateDecision {
    /// `approve` or `reject`.
    pub decision: String,
    /// Who decided: the token's principal, or `timeout`.
    pub by: String,
    /// When it was recorded (Unix ms).
    pub at_ms: i64,
    pub comment: Option<String>,
    /// The gate's timeout decided, not a person.
    pub timed_out: bool,
}

/// What recording a gate decision did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateRecorded {
    /// This call's decision was recorded.
    First,
    /// A decision was recorded before: it stands.
    Standing(GateDecision),
}

/// A webhook delivery as recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// This call recorded the answer: act on the delivery.
    First,
    /// The delivery was seen before: its first answer.
    Duplicate(serde_json::Value),
}

/// A stored manifest or blob as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredItem {
    /// The manifest's id or the blob's sha256.
    pub name: String,
    pub size: u64,
    /// Last written, Unix milliseconds.
    pub modified_ms: i64,
}

/// What a job's stored log holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogIndex {
    /// The seq the next line must have (1 for an empty log).
    pub next_seq: u64,
    pub bytes: u64,
    pub lines: u64,
    /// The log reached its size cap: later lines are dropped.
    pub capped: bool,
}

/// Which finished runs retention removes: those finished before `finished_before_ms`, and
/// those beyond the newest `keep_finished` finished runs (counted among all finished runs,
/// spared ones included), except the runs in `spare`. Unfinished runs are never removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub finished_before_ms: Option<i64>,
    pub keep_finished: Option<u64>,
    /// Runs kept whatever their age or rank: the API spares those whose PipelineRun still
    /// exists, so a run is never half removed under a live object.
    pub spare: std::collections::BTreeSet<RunKey>,
}

/// A dependency cache entry of cluster runs: its key within a namespace and a cache scope
/// (the runs sharing it, `sparkwing_core::chunked::cluster_cache_scope`), its chunk manifest
/// (JSON, opaque here), size and times (Unix ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRecord {
    pub namespace: String,
    pub scope: String,
    pub key: String,
    pub manifest: String,
    pub size_bytes: u64,
    pub created_ms: i64,
    pub last_used_ms: i64,
}

/// An artifact a job of a cluster run published: its chunk manifest (JSON, opaque here), size,
/// file count and when it was published (Unix ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub run: RunKey,
    pub job: String,
    pub name: String,
    pub manifest: String,
    pub size_bytes: u64,
    pub files: u64,
    pub created_ms: i64,
}

/// A memoized job's success in a cluster run (`docs/state.md#memo_results`): the namespace and
/// cache scope of its run (the runs sharing it), the job id, its input hash
/// (`sparkwing_core::memo::memo_hash`), the run's name, its outputs (a JSON object, opaque here)
/// and when it was recorded (Unix ms). Its artifacts are the run's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoRecord {
    pub namespace: String,
    pub scope: String,
    pub job: String,
    pub hash: String,
    pub run: String,
    pub outputs: String,
    pub finished_ms: i64,
}

/// A memoized job's input hash: 1 to 128 hex digits (it is a column value).
pub(crate) fn check_memo_hash(hash: &str) -> Result<()> {
    if hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StateError::invalid(
            "memo input hash",
            hash,
            "1 to 128 hex digits",
        ));
    }
    Ok(())
}

/// A cache scope: any text but an empty one (it is a column value, never a path).
pub(crate) fn check_scope(scope: &str) -> Result<()> {
    if scope.is_empty() || scope.len() > 2048 {
        return Err(StateError::invalid(
            "cache scope",
            scope,
            "1 to 2048 characters",
        ));
    }
    Ok(())
}

/// Names that become parts of file paths and object keys: letters, digits, `-`, `_`, `.`, not
/// starting with `.`, 1 to 253 characters.
pub(crate) fn check_name(what: &'static str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StateError::invalid(
            what,
            s,
            "letters, digits, '-', '_', '.' only, not starting with '.', 1 to 253 characters",
        ))
    }
}

/// A job's name: a name as [`check_name`] takes it, optionally ending in `[N]` (`test[3]`, a job a
/// fan-out or matrix expanded into).
pub(crate) fn check_job(s: &str) -> Result<()> {
    let base = match s.strip_suffix(']').and_then(|rest| rest.rsplit_once('[')) {
        Some((base, digits))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => s,
    };
    check_name("job", base).map_err(|_| {
        StateError::invalid(
            "job",
            s,
            "letters, digits, '-', '_', '.' only, not starting with '.', 1 to 253 characters, optionally ending in [N]",
        )
    })
}

/// A sha256 in lowercase hex.
pub(crate) fn check_sha256(s: &str) -> Result<()> {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(StateError::invalid(
            "sha256",
            s,
            "64 lowercase hexadecimal digits",
        ))
    }
}

pub(crate) fn check_run(run: &RunKey) -> Result<()> {
    check_name("namespace", &run.namespace)?;
    check_name("run name", &run.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_junk() {
        let c = Cursor {
            created_ms: 1_700_000_000_123,
            namespace: "ci".into(),
            name: "build-1".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for junk in ["", "zz", &hex::encode("1\0a"), &hex::encode("x\0a\0b")] {
            assert!(
                matches!(Cursor::decode(junk), Err(StateError::Invalid { .. })),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn names_refuse_traversal() {
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "a b", &"x".repeat(254)] {
            assert!(check_name("job", bad).is_err(), "{bad:?}");
        }
        check_name("job", "compile-1_x.y").unwrap();
    }

    #[test]
    fn job_names_may_be_a_fan_outs_jobs() {
        check_job("test[3]").unwrap();
        check_job("compile").unwrap();
        for bad in [
            "[3]", "test[]", "test[x]", "te[st[3]", "../x[1]", "test[3]]", ".a[1]",
        ] {
            assert!(check_job(bad).is_err(), "{bad:?}");
        }
    }
}
