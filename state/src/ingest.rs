//! A job's log batch as the API takes it: the content store appends, the metadata's log index
//! follows, and a per-job size cap ends the log with a marker (`docs/api.md`, "Logs").
//!
//! Order: the lines are appended (durable) first, the index advanced after. A crash between the
//! two leaves the index behind the content, never ahead: the next batch's seqs are checked against
//! the content store, and the index only moves forward. The byte count, and so the cap, may then
//! lag by that batch: the cap is a bound on growth, not an exact size.

use serde::Serialize;

use crate::error::Result;
use crate::logs::{self, LogKey, LogLine, LogStream};
use crate::{ContentStore, LogIndex, MetadataStore};

/// How a batch was taken.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Lines stored.
    pub accepted: u64,
    /// Lines already stored, ignored.
    pub duplicates: u64,
    /// Lines past the cap: acknowledged, not stored.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The marker stored, with the seq of the line that would pass the cap, in its place.
pub fn cap_marker(seq: u64, ts: &str, cap_bytes: u64) -> LogLine {
    LogLine {
        seq,
        ts: ts.to_string(),
        stream: LogStream::Stderr,
        line: format!(
            "sparkwing: this job's log reached its limit of {cap_bytes} bytes; later lines are dropped"
        ),
        truncated: true,
    }
}

/// A batch as taken: the report, and the lines now stored (for followers: the lines accepted and
/// a cap's marker, in seq order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    pub report: IngestReport,
    pub stored: Vec<LogLine>,
}

/// Take one job's batch (any order; sorted here by seq) under a cap of `cap_bytes` stored bytes.
pub async fn ingest(
    meta: &dyn MetadataStore,
    content: &dyn ContentStore,
    key: &LogKey,
    lines: Vec<LogLine>,
    cap_bytes: u64,
) -> Result<IngestReport> {
    Ok(ingest_lines(meta, content, key, lines, cap_bytes)
        .await?
        .report)
}

/// [`ingest`], with the lines stored.
///
/// The log index says where the log ends without asking the content store (a listing, on an
/// object store). The index may lag the content by a batch whose writer died between the two:
/// then the batch seems to leave a hole after the index, and the content store's own last seq
/// decides.
pub async fn ingest_lines(
    meta: &dyn MetadataStore,
    content: &dyn ContentStore,
    key: &LogKey,
    lines: Vec<LogLine>,
    cap_bytes: u64,
) -> Result<Ingested> {
    key.check()?;
    let index = meta.log_index(key).await?;
    ingest_lines_at(meta, content, key, index, lines, cap_bytes).await
}

/// [`ingest_lines`] from the log's index as its caller has just read it (one query fewer). An
/// index read earlier than this call is safe: the content store skips lines it already holds,
/// and the index only moves forward.
pub async fn ingest_lines_at(
    meta: &dyn MetadataStore,
    content: &dyn ContentStore,
    key: &LogKey,
    index: Option<LogIndex>,
    mut lines: Vec<LogLine>,
    cap_bytes: u64,
) -> Result<Ingested> {
    key.check()?;
    lines.sort_by_key(|l| l.seq);
    let index = index.unwrap_or(LogIndex {
        next_seq: 1,
        ..Default::default()
    });
    let indexed_last = index.next_seq.saturating_sub(1);
    if index.capped {
        // Past the cap nothing is stored and nothing is checked: a runner is never stuck retrying.
        let duplicates = lines.iter().filter(|l| l.seq <= indexed_last).count() as u64;
        return Ok(Ingested {
            report: IngestReport {
                accepted: 0,
                duplicates,
                dropped: lines.len() as u64 - duplicates,
            },
            stored: Vec::new(),
        });
    }
    let (first_new, _) = match logs::new_lines(key, indexed_last, &lines) {
        Ok(r) => r,
        Err(crate::StateError::LogGap { .. }) => {
            let last = content.log_last_seq(key).await?;
            logs::new_lines(key, last, &lines)?
        }
        Err(e) => return Err(e),
    };
    let fresh = &lines[first_new..];
    let mut report = IngestReport {
        duplicates: first_new as u64,
        ..Default::default()
    };
    if fresh.is_empty() {
        return Ok(Ingested {
            report,
            stored: Vec::new(),
        });
    }
    // As many lines as fit; the first that does not becomes the marker.
    let mut bytes = index.bytes;
    let mut batch = Vec::with_capacity(fresh.len());
    let mut capped = false;
    for l in fresh {
        let size = logs::encode(std::slice::from_ref(l)).len() as u64;
        if bytes + size > cap_bytes {
            batch.push(cap_marker(l.seq, &l.ts, cap_bytes));
            capped = true;
            break;
        }
        bytes += size;
        batch.push(l.clone());
    }
    // The content store skips what it already holds (lines the index had not caught up with).
    let appended = content.append_log(key, &batch).await?;
    let stored_lines = appended.accepted - u64::from(capped && appended.accepted > 0);
    report.accepted = stored_lines;
    report.duplicates += appended.duplicates;
    report.dropped = fresh.len() as u64 - appended.duplicates - stored_lines;
    let last_seq = batch.last().map_or(indexed_last, |l| l.seq);
    meta.advance_log_index(
        key,
        &LogIndex {
            next_seq: last_seq + 1,
            bytes: index.bytes + appended.bytes,
            lines: index.lines + appended.accepted,
            capped,
        },
    )
    .await?;
    let skip = appended.duplicates as usize;
    Ok(Ingested {
        report,
        stored: batch.into_iter().skip(skip).collect(),
    })
}
