//! Shared content: an object store through the `object_store` crate (S3-compatible, or a local
//! file system for a mounted volume).
//!
//! ```text
//! <prefix>/blobs/<sha[0..2]>/<sha>
//! <prefix>/manifests/<id>
//! <prefix>/logs/<ns>/<run>/<job>/<first seq>-<last seq>.jsonl   (seqs zero-padded to 20 digits)
//! <prefix>/archive/<ns>/<run>.json
//! ```
//!
//! Objects appear whole or not at all (a single PUT, or a multipart upload completed only after
//! the blob's hash was verified; otherwise aborted). A log batch is one immutable object named by
//! its first and last seq, acknowledged once the store accepted it, so replicas appending to one
//! job never overwrite each other: two overlapping batches are two objects, and reads skip lines
//! already read. Per job the process caches the list of segments and refreshes it from the last
//! known name (an S3 `StartAfter` listing), not from the start; a read whose range the known
//! segments already hold lists nothing.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Result, StateError};
use crate::logs::{self, AppendReport, LogKey, LogLine};
use crate::types::{check_name, check_run, check_sha256, RunKey};
use crate::{ByteStream, ContentStore, StoredItem};

/// Blobs up to this size are one PUT; larger ones a multipart upload.
const SINGLE_PUT_MAX: usize = 8 * 1024 * 1024;

pub struct ObjectContent {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Which store, for messages (`s3://bucket/prefix`, `file:///dir`).
    name: String,
    logs: Mutex<HashMap<LogKey, Arc<tokio::sync::Mutex<Segments>>>>,
}

/// The known segments of one job's log, ascending by `(first, last)`.
#[derive(Default)]
struct Segments {
    list: Vec<Segment>,
    last_seq: u64,
}

struct Segment {
    first: u64,
    last: u64,
    path: Path,
}

fn classify(store: &str, e: object_store::Error) -> StateError {
    use object_store::Error::*;
    match e {
        // What the client gives up on after its retries: refused connections, timeouts, 5xx.
        Generic { .. } => StateError::Unavailable {
            backend: "object store",
            detail: format!("{store}: {e}"),
        },
        other => StateError::Backend {
            backend: "object store",
            detail: format!("{store}: {other}"),
        },
    }
}

fn segment_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.jsonl")
}

fn parse_segment(path: &Path) -> Option<(u64, u64)> {
    let name = path.filename()?.strip_suffix(".jsonl")?;
    let (first, last) = name.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

impl ObjectContent {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, name: String) -> Self {
        ObjectContent {
            store,
            prefix,
            name,
            logs: Mutex::default(),
        }
    }

    fn err(&self, e: object_store::Error) -> StateError {
        classify(&self.name, e)
    }

    fn key(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.child(*part);
        }
        p
    }

    fn blob_key(&self, sha: &str) -> Path {
        self.key(&["blobs", &sha[..2], sha])
    }

    fn log_dir(&self, key: &LogKey) -> Path {
        self.key(&["logs", &key.run.namespace, &key.run.name, &key.job])
    }

    fn archive_key(&self, run: &RunKey) -> Path {
        self.key(&["archive", &run.namespace, &format!("{}.json", run.name)])
    }

    async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| self.err(e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn size_opt(&self, path: &Path) -> Result<Option<u64>> {
        match self.store.head(path).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Delete `path`; false when it was not there. (S3 answers a delete of a missing key with
    /// success, hence the look first.)
    async fn delete_opt(&self, path: &Path) -> Result<bool> {
        if self.size_opt(path).await?.is_none() {
            return Ok(false);
        }
        match self.store.delete(path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Every object under `dir` (at any depth) by its last name part.
    async fn list_items(&self, dir: &Path) -> Result<Vec<StoredItem>> {
        let mut listing = self.store.list(Some(dir));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.err(e))?;
            if let Some(name) = meta.location.filename() {
                out.push(StoredItem {
                    name: name.to_string(),
                    size: meta.size,
                    modified_ms: meta.last_modified.timestamp_millis(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn segments(&self, key: &LogKey) -> Arc<tokio::sync::Mutex<Segments>> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.entry(key.clone()).or_default().clone()
    }

    /// Add the segments written since the last look (by any replica).
    async fn refresh(&self, key: &LogKey, segs: &mut Segments) -> Result<()> {
        let dir = self.log_dir(key);
        let listing = match segs.list.last() {
            Some(s) => self.store.list_with_offset(Some(&dir), &s.path),
            None => self.store.list(Some(&dir)),
        };
        let mut found: Vec<Segment> = listing
            .map_err(|e| self.err(e))
            .try_filter_map(|meta| async move {
                Ok(parse_segment(&meta.location).map(|(first, last)| Segment {
                    first,
                    last,
                    path: meta.location,
                }))
            })
            .try_collect()
            .await?;
        if found.is_empty() {
            return Ok(());
        }
        found.sort_by_key(|s| (s.first, s.last));
        segs.last_seq = segs
            .last_seq
            .max(found.iter().map(|s| s.last).max().unwrap_or(0));
        segs.list.extend(found);
        segs.list.sort_by_key(|s| (s.first, s.last));
        Ok(())
    }

    /// Lines after `after`, at most `limit`, from the known segments.
    async fn read_segments(
        &self,
        segs: &Segments,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        let mut out: Vec<LogLine> = Vec::new();
        // Segments are sorted by first seq; skip those that end at or before `after`.
        let mut last = after;
        for seg in segs.list.iter().filter(|s| s.last > after) {
            if out.len() >= limit {
                break;
            }
            if seg.last <= last {
                continue; // overlapped by what was read already
            }
            let Some(bytes) = self.get_opt(&seg.path).await? else {
                continue; // deleted meanwhile (retention)
            };
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Some(l) = logs::decode(line) {
                    if l.seq == last + 1 && out.len() < limit {
                        last = l.seq;
                        out.push(l);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ContentStore for ObjectContent {
    async fn put_blob(&self, sha256: &str, mut body: ByteStream) -> Result<u64> {
        check_sha256(sha256)?;
        let mut writer =
            BufWriter::with_capacity(self.store.clone(), self.blob_key(sha256), SINGLE_PUT_MAX);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let failure = loop {
            match body.next().await {
                None => break None,
                Some(Err(source)) => {
                    break Some(StateError::Body {
                        sha256: sha256.to_string(),
                        source,
                    })
                }
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    if let Err(e) = writer.put(chunk).await {
                        break Some(self.err(e));
                    }
                }
            }
        };
        let failure = failure.or_else(|| {
            let actual = hex::encode(hasher.finalize());
            (actual != sha256).then(|| StateError::HashMismatch {
                expected: sha256.to_string(),
                actual,
            })
        });
        if let Some(e) = failure {
            // Nothing was made visible: a pending multipart upload is aborted, a small body was
            // never sent.
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .shutdown()
            .await
            .map_err(|e| StateError::Unavailable {
                backend: "object store",
                detail: format!("{}: completing blob {sha256}: {e}", self.name),
            })?;
        Ok(size)
    }

    async fn get_blob(&self, sha256: &str) -> Result<Option<ByteStream>> {
        check_sha256(sha256)?;
        match self.store.get(&self.blob_key(sha256)).await {
            Ok(r) => Ok(Some(Box::pin(
                r.into_stream().map_err(std::io::Error::other),
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn get_blob_range(&self, sha256: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        check_sha256(sha256)?;
        let key = self.blob_key(sha256);
        let Some(size) = self.size_opt(&key).await? else {
            return Ok(None);
        };
        let (start, end) = (range.start.min(size), range.end.min(size));
        if start >= end {
            return Ok(Some(Bytes::new()));
        }
        match self.store.get_range(&key, start..end).await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn blob_size(&self, sha256: &str) -> Result<Option<u64>> {
        check_sha256(sha256)?;
        self.size_opt(&self.blob_key(sha256)).await
    }

    async fn delete_blob(&self, sha256: &str) -> Result<bool> {
        check_sha256(sha256)?;
        self.delete_opt(&self.blob_key(sha256)).await
    }

    async fn put_manifest(&self, id: &str, manifest: Bytes) -> Result<()> {
        check_name("upload id", id)?;
        self.store
            .put(&self.key(&["manifests", id]), PutPayload::from(manifest))
            .await
            .map(drop)
            .map_err(|e| self.err(e))
    }

    async fn get_manifest(&self, id: &str) -> Result<Option<Bytes>> {
        check_name("upload id", id)?;
        self.get_opt(&self.key(&["manifests", id])).await
    }

    async fn delete_manifest(&self, id: &str) -> Result<bool> {
        check_name("upload id", id)?;
        self.delete_opt(&self.key(&["manifests", id])).await
    }

    async fn list_manifests(&self) -> Result<Vec<StoredItem>> {
        self.list_items(&self.key(&["manifests"])).await
    }

    async fn list_blobs(&self) -> Result<Vec<StoredItem>> {
        self.list_items(&self.key(&["blobs"])).await
    }

    async fn append_log(&self, key: &LogKey, lines: &[LogLine]) -> Result<AppendReport> {
        key.check()?;
        let slot = self.segments(key);
        let mut segs = slot.lock().await;
        if segs.list.is_empty() {
            self.refresh(key, &mut segs).await?;
        }
        let (first_new, duplicates) = match logs::new_lines(key, segs.last_seq, lines) {
            Ok(r) => r,
            // Another replica may have appended since this one last looked: look, then decide.
            Err(StateError::LogGap { .. }) => {
                self.refresh(key, &mut segs).await?;
                logs::new_lines(key, segs.last_seq, lines)?
            }
            Err(e) => return Err(e),
        };
        let fresh = &lines[first_new..];
        let mut report = AppendReport {
            accepted: fresh.len() as u64,
            duplicates,
            bytes: 0,
        };
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
            return Ok(report);
        };
        let bytes = logs::encode(fresh);
        report.bytes = bytes.len() as u64;
        let path = self.log_dir(key).child(segment_name(first.seq, last.seq));
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.err(e))?;
        segs.last_seq = last.seq;
        segs.list.push(Segment {
            first: first.seq,
            last: last.seq,
            path,
        });
        Ok(report)
    }

    async fn read_log_after(&self, key: &LogKey, after: u64, limit: usize) -> Result<Vec<LogLine>> {
        key.check()?;
        let slot = self.segments(key);
        let mut segs = slot.lock().await;
        // Segments never change once written: when the known ones already hold the whole range,
        // no listing is needed.
        if segs.last_seq < after.saturating_add(limit as u64) {
            self.refresh(key, &mut segs).await?;
        }
        self.read_segments(&segs, after, limit).await
    }

    async fn read_log_tail(&self, key: &LogKey, n: usize) -> Result<Vec<LogLine>> {
        key.check()?;
        let slot = self.segments(key);
        let mut segs = slot.lock().await;
        self.refresh(key, &mut segs).await?;
        // Seqs are contiguous from 1: the last n lines are those after last_seq - n.
        let after = segs.last_seq.saturating_sub(n as u64);
        self.read_segments(&segs, after, n).await
    }

    async fn log_last_seq(&self, key: &LogKey) -> Result<u64> {
        key.check()?;
        let slot = self.segments(key);
        let mut segs = slot.lock().await;
        self.refresh(key, &mut segs).await?;
        Ok(segs.last_seq)
    }

    async fn delete_run_logs(&self, run: &RunKey) -> Result<()> {
        check_run(run)?;
        {
            let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
            logs.retain(|k, _| k.run != *run);
        }
        let dir = self.key(&["logs", &run.namespace, &run.name]);
        let paths = self.store.list(Some(&dir)).map_ok(|m| m.location).boxed();
        self.store
            .delete_stream(paths)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| self.err(e))
    }

    async fn put_archive(&self, run: &RunKey, archive: Bytes) -> Result<()> {
        check_run(run)?;
        self.store
            .put(&self.archive_key(run), PutPayload::from(archive))
            .await
            .map(drop)
            .map_err(|e| self.err(e))
    }

    async fn get_archive(&self, run: &RunKey) -> Result<Option<Bytes>> {
        check_run(run)?;
        self.get_opt(&self.archive_key(run)).await
    }

    async fn delete_archive(&self, run: &RunKey) -> Result<bool> {
        check_run(run)?;
        self.delete_opt(&self.archive_key(run)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_seq_and_parse_back() {
        let a = segment_name(9, 10);
        let b = segment_name(11, 200);
        assert!(a < b);
        let p = Path::from("logs/ci/r/j").child(b.as_str());
        assert_eq!(parse_segment(&p), Some((11, 200)));
        assert_eq!(parse_segment(&Path::from("logs/ci/r/j/x.jsonl")), None);
    }
}
