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

/// Take one job's batch (any order; sorted here by seq) under a cap of `cap_bytes` stored bytes.
pub async fn ingest(
    meta: &dyn MetadataStore,
    content: &dyn ContentStore,
    key: &LogKey,
    mut lines: Vec<LogLine>,
    cap_bytes: u64,
) -> Result<IngestReport> {
    key.check()?;
    lines.sort_by_key(|l| l.seq);
    let index = meta.log_index(key).await?.unwrap_or(LogIndex {
        next_seq: 1,
        ..Default::default()
    });
    let last = content.log_last_seq(key).await?;
    if index.capped {
        // Past the cap nothing is stored and nothing is checked: a runner is never stuck retrying.
        let duplicates = lines.iter().filter(|l| l.seq <= last).count() as u64;
        return Ok(IngestReport {
            accepted: 0,
            duplicates,
            dropped: lines.len() as u64 - duplicates,
        });
    }
    let (first_new, duplicates) = logs::new_lines(key, last, &lines)?;
    let fresh = &lines[first_new..];
    let mut report = IngestReport {
        duplicates,
        ..Default::default()
    };
    if fresh.is_empty() {
        return Ok(report);
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
    let appended = content.append_log(key, &batch).await?;
    let stored = appended.accepted - u64::from(capped);
    report.accepted = stored;
    report.dropped = fresh.len() as u64 - stored;
    let last_seq = batch.last().map(|l| l.seq).unwrap_or(last);
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
    Ok(report)
}
