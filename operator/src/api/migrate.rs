//! `migrate --from-data-dir DIR`: copy a data directory written by the file store of earlier
//! versions into the configured stores. Its layout (docs/api.md of those versions):
//!
//! ```text
//! tokens.json, tokens.jsonl        token records (a snapshot and a journal of changes)
//! uploads/<id>.json                manifests
//! blobs/<sha[0..2]>/<sha>          blobs
//! state/<ns>/<run>/<job>.json      job states
//! archive/<ns>/<run>.json          archived runs ({"archivedAt", "run"})
//! logs/<ns>/<run>/<job>.jsonl      job logs
//! webhooks/deliveries/<sha>.json   delivery answers, by the sha256 of the delivery id
//! webhooks/pushes/<sha>.json       first answers to pushes, by the sha256 of the push
//! ```
//!
//! Idempotent: every write is an upsert, a blob already stored is skipped, a log line already
//! stored is a duplicate, a delivery recorded is kept. The source is only read, so migrating
//! in place (the embedded stores in the same directory) works too.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;
use sparkwing_state::{LogIndex, LogKey, LogLine, RunKey, StateError, TokenRecord};

use super::auth::Scope;
use super::manifest::{is_sha256_hex, Manifest};
use crate::store::{ArchivedRun, Store};

/// What a migration copied (or found copied already).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateReport {
    pub tokens: u64,
    pub uploads: u64,
    pub blobs: u64,
    pub job_states: u64,
    pub archived_runs: u64,
    pub logs: u64,
    pub log_lines: u64,
    pub deliveries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not what the file store wrote: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error(transparent)]
    State(#[from] StateError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError + '_ {
    move |source| MigrateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format(path: &Path, detail: impl std::fmt::Display) -> MigrateError {
    MigrateError::Format {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// The entries of `dir` (none when it does not exist), sorted.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, MigrateError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        out.push(e.map_err(io(dir))?.path());
    }
    out.sort();
    Ok(out)
}

fn stem<'a>(path: &'a Path, suffix: &str) -> Option<&'a str> {
    path.file_name()?.to_str()?.strip_suffix(suffix)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, MigrateError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| format(path, e))
}

/// A token record as the file store kept it.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct OldToken {
    id: String,
    hash: String,
    principal: String,
    scopes: Vec<String>,
    created: String,
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    upload: Option<String>,
    #[serde(default)]
    pool_uid: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum OldTokenOp {
    Add(OldToken),
    Revoke(String),
    Remove(String),
}

/// The token table: the snapshot, then the journal's complete entries.
fn old_tokens(dir: &Path) -> Result<Vec<OldToken>, MigrateError> {
    #[derive(Deserialize)]
    struct Snapshot {
        tokens: Vec<OldToken>,
    }
    let snapshot = dir.join("tokens.json");
    let mut records = if snapshot.is_file() {
        read_json::<Snapshot>(&snapshot)?.tokens
    } else {
        Vec::new()
    };
    let journal = dir.join("tokens.jsonl");
    if journal.is_file() {
        let text = std::fs::read(&journal).map_err(io(&journal))?;
        // A partial last entry (a crash during an append) was never acknowledged: skipped.
        for line in text.split_inclusive(|b| *b == b'\n') {
            if line.last() != Some(&b'\n') {
                break;
            }
            match serde_json::from_slice::<OldTokenOp>(line).map_err(|e| format(&journal, e))? {
                OldTokenOp::Add(t) => match records.iter_mut().find(|r| r.id == t.id) {
                    Some(r) => *r = t,
                    None => records.push(t),
                },
                OldTokenOp::Revoke(id) => {
                    if let Some(r) = records.iter_mut().find(|r| r.id == id) {
                        r.revoked = true;
                    }
                }
                OldTokenOp::Remove(id) => records.retain(|r| r.id != id),
            }
        }
    }
    Ok(records)
}

fn token_record(t: OldToken) -> TokenRecord {
    let created_ms = t
        .created
        .parse::<k8s_openapi::jiff::Timestamp>()
        .map_or(0, |c| c.as_millisecond());
    let run = t.scopes.iter().find_map(|s| match Scope::parse(s)? {
        Scope::Run { namespace, name } => Some(RunKey::new(namespace, name)),
        _ => None,
    });
    TokenRecord {
        id: t.id,
        hash: t.hash,
        principal: t.principal,
        scopes: t.scopes,
        created_ms,
        expires_ms: None,
        revoked: t.revoked,
        run,
        upload: t.upload,
        pool_uid: t.pool_uid,
    }
}

/// Lines of a log copied per append.
const LOG_BATCH: usize = 1000;

/// Copy one job's log: every complete line that parses (a damaged one is skipped, as reads
/// skipped it), in batches; then the log index, from what the stored log holds.
async fn migrate_log(store: &Store, path: &Path, key: &LogKey) -> Result<u64, MigrateError> {
    use tokio::io::AsyncBufReadExt;
    let file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut reader = tokio::io::BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut batch: Vec<LogLine> = Vec::with_capacity(LOG_BATCH);
    let (mut lines, mut bytes, mut last, mut capped) = (0u64, 0u64, 0u64, false);
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).await.map_err(io(path))?;
        let done = n == 0 || buf.last() != Some(&b'\n');
        if !done {
            if let Ok(l) = serde_json::from_slice::<LogLine>(&buf) {
                // Only lines that follow on (a damaged file may repeat or skip seqs).
                if l.seq == last + 1 {
                    last = l.seq;
                    lines += 1;
                    bytes += n as u64;
                    capped = l.truncated;
                    batch.push(l);
                }
            }
        }
        if batch.len() >= LOG_BATCH || (done && !batch.is_empty()) {
            store.content.append_log(key, &batch).await?;
            batch.clear();
        }
        if done {
            break;
        }
    }
    if last > 0 {
        store
            .meta
            .advance_log_index(
                key,
                &LogIndex {
                    next_seq: last + 1,
                    bytes,
                    lines,
                    capped,
                },
            )
            .await?;
    }
    Ok(lines)
}

/// Copy the file store in `dir` into `store` (see the module's documentation).
pub async fn migrate_data_dir(dir: &Path, store: &Store) -> Result<MigrateReport, MigrateError> {
    let mut report = MigrateReport::default();
    for t in old_tokens(dir)? {
        store.meta.insert_token(&token_record(t)).await?;
        report.tokens += 1;
    }
    for path in entries(&dir.join("uploads"))? {
        let Some(id) = stem(&path, ".json").filter(|id| is_sha256_hex(id)) else {
            continue;
        };
        let manifest: Manifest = read_json(&path)?;
        store.put_upload(id, &manifest).await?;
        report.uploads += 1;
    }
    for prefix in entries(&dir.join("blobs"))? {
        for path in entries(&prefix)? {
            let Some(sha) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !is_sha256_hex(sha) {
                continue;
            }
            if !store.content.blob_exists(sha).await? {
                let file = tokio::fs::File::open(&path).await.map_err(io(&path))?;
                let body = file_body(file);
                store.content.put_blob(sha, body).await?;
            }
            report.blobs += 1;
        }
    }
    for ns in entries(&dir.join("state"))? {
        for run in entries(&ns)? {
            for path in entries(&run)? {
                let (Some(ns), Some(run), Some(job)) = (
                    ns.file_name().and_then(|n| n.to_str()),
                    run.file_name().and_then(|n| n.to_str()),
                    stem(&path, ".json"),
                ) else {
                    continue;
                };
                let state: serde_json::Value = read_json(&path)?;
                store
                    .meta
                    .put_job_state(&RunKey::new(ns, run), job, &state)
                    .await?;
                report.job_states += 1;
            }
        }
    }
    for ns in entries(&dir.join("archive"))? {
        for path in entries(&ns)? {
            if stem(&path, ".json").is_none() {
                continue;
            }
            let record: ArchivedRun = read_json(&path)?;
            store.archive_record(&record).await?;
            report.archived_runs += 1;
        }
    }
    for ns in entries(&dir.join("logs"))? {
        for run in entries(&ns)? {
            for path in entries(&run)? {
                let (Some(ns), Some(run), Some(job)) = (
                    ns.file_name().and_then(|n| n.to_str()),
                    run.file_name().and_then(|n| n.to_str()),
                    stem(&path, ".jsonl"),
                ) else {
                    continue;
                };
                report.log_lines += migrate_log(store, &path, &LogKey::new(ns, run, job)).await?;
                report.logs += 1;
            }
        }
    }
    // The file names are the sha256 the API keys deliveries by (`delivery-<sha>`, `push-<sha>`).
    for (sub, prefix) in [("deliveries", "delivery"), ("pushes", "push")] {
        for path in entries(&dir.join("webhooks").join(sub))? {
            let Some(sha) = stem(&path, ".json") else {
                continue;
            };
            let answer: serde_json::Value = read_json(&path)?;
            store
                .meta
                .record_delivery(&format!("{prefix}-{sha}"), &answer)
                .await?;
            report.deliveries += 1;
        }
    }
    Ok(report)
}

/// A file as a blob body, a chunk at a time.
fn file_body(file: tokio::fs::File) -> sparkwing_state::ByteStream {
    use tokio::io::AsyncReadExt;
    Box::pin(futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    }))
}
