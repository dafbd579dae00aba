//! Embedded content: files under one directory.
//!
//! ```text
//! <root>/
//!   blobs/<sha[0..2]>/<sha>        by sha256, written once
//!   manifests/<id>                 by upload id
//!   logs/<ns>/<run>/<job>.jsonl    one JSON line per log line, in seq order
//!   archive/<ns>/<run>.json        finished runs
//!   tmp/                           writes in progress, renamed into place
//! ```
//!
//! Durability: whole files are written to `tmp/`, `fsync`ed, renamed into place and the
//! directory `fsync`ed before a call returns, so a reader never sees half a file and an
//! acknowledged write survives a crash. A log batch is one `write` and `fdatasync` before the
//! append returns. A crash during an append can leave a partial last line (never acknowledged):
//! the first use of a log in a process truncates it to its last complete line.
//!
//! Reads of a log cost memory in proportion to the answer: per job the process keeps, from that
//! first use, the length of its complete lines, its last seq and a sparse index (the offset of
//! every [`INDEX_STRIDE`]th line); `after` seeks near its line, `tail` reads backwards from the
//! end. Every file operation runs on tokio's blocking pool. Files are created mode 0600.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::{io_error, join_error, Result, StateError};
use crate::logs::{self, AppendReport, LogKey, LogLine};
use crate::types::{check_name, check_run, check_sha256, RunKey};
use crate::{ByteStream, ContentStore, StoredItem};

/// Every this many lines the log index keeps a byte offset.
pub const INDEX_STRIDE: u64 = 256;
const CHUNK: usize = 64 * 1024;

pub struct FileContent {
    root: PathBuf,
    logs: Arc<Mutex<HashMap<LogKey, Slot>>>,
    tmp_counter: AtomicU64,
}

type Slot = Arc<Mutex<Option<JobLog>>>;

/// What the process knows of one job's log after its first use.
#[derive(Debug, Default)]
struct JobLog {
    last_seq: u64,
    /// Bytes of complete lines.
    len: u64,
    lines: u64,
    /// `(seq, offset)` of every [`INDEX_STRIDE`]th line.
    index: Vec<(u64, u64)>,
}

impl JobLog {
    fn note(&mut self, seq: u64, offset: u64) {
        if self.lines.is_multiple_of(INDEX_STRIDE) {
            self.index.push((seq, offset));
        }
        self.lines += 1;
        self.last_seq = self.last_seq.max(seq);
    }

    /// An offset at or before the first line after seq `after`.
    fn start_after(&self, after: u64) -> u64 {
        let i = self.index.partition_point(|(seq, _)| *seq <= after + 1);
        if i == 0 {
            0
        } else {
            self.index[i - 1].1
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(join_error)?
}

fn not_found<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The files of `dir` (not its subdirectories) with their sizes and modification times; a file
/// removed while listing is left out.
fn list_files(dir: &Path) -> Result<Vec<StoredItem>> {
    let mut out = Vec::new();
    let entries = match not_found(fs::read_dir(dir)).map_err(|e| io_error(dir, e))? {
        Some(entries) => entries,
        None => return Ok(out),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        out.push(StoredItem {
            name: entry.file_name().to_string_lossy().into_owned(),
            size: meta.len(),
            modified_ms,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `fsync` a directory so a rename or a new file in it is durable.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

impl FileContent {
    /// Open (creating) the store in `root`. Files left in `tmp/` by interrupted writes are
    /// removed: no write of this process is under way yet.
    pub async fn open(root: &Path) -> Result<Self> {
        let root = root.to_path_buf();
        let r = root.clone();
        blocking(move || {
            for d in ["blobs", "manifests", "logs", "archive", "tmp"] {
                let p = r.join(d);
                fs::create_dir_all(&p).map_err(|e| io_error(&p, e))?;
            }
            let tmp = r.join("tmp");
            for entry in fs::read_dir(&tmp).map_err(|e| io_error(&tmp, e))? {
                let entry = entry.map_err(|e| io_error(&tmp, e))?;
                let _ = fs::remove_file(entry.path());
            }
            Ok(())
        })
        .await?;
        Ok(FileContent {
            root,
            logs: Arc::default(),
            tmp_counter: AtomicU64::new(0),
        })
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    fn blob_path(&self, sha: &str) -> PathBuf {
        self.root.join("blobs").join(&sha[..2]).join(sha)
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.root.join("manifests").join(id)
    }

    fn archive_path(&self, run: &RunKey) -> PathBuf {
        self.root
            .join("archive")
            .join(&run.namespace)
            .join(format!("{}.json", run.name))
    }

    fn log_path(&self, key: &LogKey) -> PathBuf {
        self.root
            .join("logs")
            .join(&key.run.namespace)
            .join(&key.run.name)
            .join(format!("{}.jsonl", key.job))
    }

    fn slot(&self, key: &LogKey) -> Slot {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.entry(key.clone()).or_default().clone()
    }

    async fn write_whole(&self, path: PathBuf, bytes: Bytes) -> Result<()> {
        let tmp = self.tmp_path();
        blocking(move || write_atomic(&tmp, &path, &bytes)).await
    }

    async fn read_whole(&self, path: PathBuf) -> Result<Option<Bytes>> {
        blocking(move || {
            not_found(fs::read(&path))
                .map(|o| o.map(Bytes::from))
                .map_err(|e| io_error(&path, e))
        })
        .await
    }

    async fn remove(&self, path: PathBuf) -> Result<bool> {
        blocking(move || {
            not_found(fs::remove_file(&path))
                .map(|o| o.is_some())
                .map_err(|e| io_error(&path, e))
        })
        .await
    }

    /// Run `f` on a job's loaded log, serialised with every other use of it in this process.
    async fn with_log<T: Send + 'static>(
        &self,
        key: &LogKey,
        f: impl FnOnce(&Path, &mut JobLog) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        key.check()?;
        let slot = self.slot(key);
        let path = self.log_path(key);
        blocking(move || {
            let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                *guard = Some(load(&path)?);
            }
            let log = guard.as_mut().expect("loaded above");
            let out = f(&path, log);
            if matches!(
                out,
                Err(StateError::Backend { .. } | StateError::Unavailable { .. })
            ) {
                // An IO failure: what is on disk is the truth, read it again on the next use. (Not
                // after a refused batch: a client sending gaps must not cost a rescan each time.)
                *guard = None;
            }
            out
        })
        .await
    }
}

/// Files are created mode 0600: sources, logs and archives are nobody else's on the node.
fn private(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600)
}

/// Write `bytes` to `tmp`, `fsync`, rename to `path`, `fsync` its directory.
fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("store paths have a parent");
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let result = (|| {
        let mut f = private(
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )
        .open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(tmp);
        return Err(io_error(path, e));
    }
    sync_dir(dir)
}

/// Read a job's log once: its index, and the truncation of a partial last line.
fn load(path: &Path) -> Result<JobLog> {
    let file = match not_found(fs::OpenOptions::new().read(true).write(true).open(path))
        .map_err(|e| io_error(path, e))?
    {
        Some(f) => f,
        None => return Ok(JobLog::default()),
    };
    let mut log = JobLog::default();
    let mut reader = BufReader::with_capacity(CHUNK, &file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            // A torn tail: a crash during an append that was never acknowledged.
            file.set_len(offset).map_err(|e| io_error(path, e))?;
            file.sync_data().map_err(|e| io_error(path, e))?;
            break;
        }
        if let Some(l) = logs::decode(&line[..n - 1]) {
            log.note(l.seq, offset);
        }
        offset += n as u64;
    }
    log.len = offset;
    Ok(log)
}

/// Lines from `start` up to `end` (complete lines only) with seq after `after`, at most `limit`.
fn read_forward(
    path: &Path,
    start: u64,
    end: u64,
    after: u64,
    limit: usize,
) -> Result<Vec<LogLine>> {
    let mut out = Vec::new();
    if start >= end || limit == 0 {
        return Ok(out);
    }
    let mut f = fs::File::open(path).map_err(|e| io_error(path, e))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| io_error(path, e))?;
    let mut reader = BufReader::with_capacity(CHUNK, f.take(end - start));
    let mut line = Vec::new();
    while out.len() < limit {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        if let Some(l) = logs::decode(line.strip_suffix(b"\n").unwrap_or(&line)) {
            if l.seq > after {
                out.push(l);
            }
        }
    }
    Ok(out)
}

/// The last `n` lines before `end`, reading backwards a chunk at a time.
fn read_backward(path: &Path, end: u64, n: usize) -> Result<Vec<LogLine>> {
    if n == 0 || end == 0 {
        return Ok(Vec::new());
    }
    let mut f = fs::File::open(path).map_err(|e| io_error(path, e))?;
    // Bytes from `pos` to `end`, gathered backwards until they hold `n` whole lines.
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = end;
    loop {
        // The last byte is the final newline; n lines need n newlines before it, or the start.
        let newlines = buf.iter().rev().skip(1).filter(|&&b| b == b'\n').count();
        if newlines >= n || pos == 0 {
            break;
        }
        let step = (CHUNK as u64).min(pos);
        pos -= step;
        let mut chunk = vec![0u8; step as usize];
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| io_error(path, e))?;
        f.read_exact(&mut chunk).map_err(|e| io_error(path, e))?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let mut lines: Vec<LogLine> = buf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(logs::decode)
        .collect();
    // When `pos > 0` the first piece may be a partial line: it does not parse, or it is beyond n.
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

/// A blob being received into `tmp/`: removed when dropped unless renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[async_trait]
impl ContentStore for FileContent {
    async fn put_blob(&self, sha256: &str, mut body: ByteStream) -> Result<u64> {
        check_sha256(sha256)?;
        let tmp_path = self.tmp_path();
        // Removes the temp file on every path: after the rename it is gone already.
        let _guard = TempFile(Some(tmp_path.clone()));
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true).mode(0o600);
        let file = options
            .open(&tmp_path)
            .await
            .map_err(|e| io_error(&tmp_path, e))?;
        let mut file = tokio::io::BufWriter::with_capacity(CHUNK, file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| StateError::Body {
                sha256: sha256.to_string(),
                source,
            })?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(|e| io_error(&tmp_path, e))?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            return Err(StateError::HashMismatch {
                expected: sha256.to_string(),
                actual,
            });
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| io_error(&tmp_path, e))?;
        let file = file.into_inner();
        file.sync_all().await.map_err(|e| io_error(&tmp_path, e))?;
        drop(file);
        let dest = self.blob_path(sha256);
        blocking(move || {
            let dir = dest.parent().expect("blob paths have a parent");
            fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            if !dest.exists() {
                fs::rename(&tmp_path, &dest).map_err(|e| io_error(&dest, e))?;
                sync_dir(dir)?;
            }
            Ok(())
        })
        .await?;
        Ok(size)
    }

    async fn get_blob(&self, sha256: &str) -> Result<Option<ByteStream>> {
        check_sha256(sha256)?;
        let path = self.blob_path(sha256);
        let Some(file) =
            not_found(tokio::fs::File::open(&path).await).map_err(|e| io_error(&path, e))?
        else {
            return Ok(None);
        };
        let stream = futures::stream::try_unfold(file, |mut file| async move {
            let mut buf = vec![0u8; CHUNK];
            let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), file)))
        });
        Ok(Some(Box::pin(stream)))
    }

    async fn get_blob_range(&self, sha256: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        check_sha256(sha256)?;
        let path = self.blob_path(sha256);
        blocking(move || {
            let Some(mut f) = not_found(fs::File::open(&path)).map_err(|e| io_error(&path, e))?
            else {
                return Ok(None);
            };
            let size = f.metadata().map_err(|e| io_error(&path, e))?.len();
            let (start, end) = (range.start.min(size), range.end.min(size));
            let mut buf = vec![0u8; end.saturating_sub(start) as usize];
            f.seek(SeekFrom::Start(start))
                .map_err(|e| io_error(&path, e))?;
            f.read_exact(&mut buf).map_err(|e| io_error(&path, e))?;
            Ok(Some(Bytes::from(buf)))
        })
        .await
    }

    async fn blob_size(&self, sha256: &str) -> Result<Option<u64>> {
        check_sha256(sha256)?;
        let path = self.blob_path(sha256);
        not_found(tokio::fs::metadata(&path).await)
            .map(|m| m.map(|m| m.len()))
            .map_err(|e| io_error(&path, e))
    }

    async fn delete_blob(&self, sha256: &str) -> Result<bool> {
        check_sha256(sha256)?;
        self.remove(self.blob_path(sha256)).await
    }

    async fn put_manifest(&self, id: &str, manifest: Bytes) -> Result<()> {
        check_name("upload id", id)?;
        self.write_whole(self.manifest_path(id), manifest).await
    }

    async fn get_manifest(&self, id: &str) -> Result<Option<Bytes>> {
        check_name("upload id", id)?;
        self.read_whole(self.manifest_path(id)).await
    }

    async fn delete_manifest(&self, id: &str) -> Result<bool> {
        check_name("upload id", id)?;
        self.remove(self.manifest_path(id)).await
    }

    async fn list_manifests(&self) -> Result<Vec<StoredItem>> {
        let dir = self.root.join("manifests");
        blocking(move || list_files(&dir)).await
    }

    async fn list_blobs(&self) -> Result<Vec<StoredItem>> {
        let dir = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for prefix in fs::read_dir(&dir).map_err(|e| io_error(&dir, e))? {
                let prefix = prefix.map_err(|e| io_error(&dir, e))?.path();
                if prefix.is_dir() {
                    out.extend(list_files(&prefix)?);
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn append_log(&self, key: &LogKey, lines: &[LogLine]) -> Result<AppendReport> {
        let (key2, lines) = (key.clone(), lines.to_vec());
        self.with_log(key, move |path, log| {
            let (first_new, duplicates) = logs::new_lines(&key2, log.last_seq, &lines)?;
            let fresh = &lines[first_new..];
            let mut report = AppendReport {
                accepted: fresh.len() as u64,
                duplicates,
                bytes: 0,
            };
            if fresh.is_empty() {
                return Ok(report);
            }
            let bytes = logs::encode(fresh);
            let dir = path.parent().expect("log paths have a parent");
            let new_file = !path.exists();
            fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            let mut f = private(fs::OpenOptions::new().create(true).append(true))
                .open(path)
                .map_err(|e| io_error(path, e))?;
            let written = f.write_all(&bytes).and_then(|()| f.sync_data());
            if let Err(e) = written {
                // Undo a partial append so the file ends on a complete line; `with_log`
                // reloads (and repairs) the log on its next use anyway.
                let _ = f.set_len(log.len);
                return Err(io_error(path, e));
            }
            if new_file {
                sync_dir(dir)?;
            }
            let mut offset = log.len;
            for (l, encoded) in fresh.iter().zip(bytes.split_inclusive(|&b| b == b'\n')) {
                log.note(l.seq, offset);
                offset += encoded.len() as u64;
            }
            log.len = offset;
            report.bytes = bytes.len() as u64;
            Ok(report)
        })
        .await
    }

    async fn read_log_after(&self, key: &LogKey, after: u64, limit: usize) -> Result<Vec<LogLine>> {
        self.with_log(key, move |path, log| {
            read_forward(path, log.start_after(after), log.len, after, limit)
        })
        .await
    }

    async fn read_log_tail(&self, key: &LogKey, n: usize) -> Result<Vec<LogLine>> {
        self.with_log(key, move |path, log| read_backward(path, log.len, n))
            .await
    }

    async fn log_last_seq(&self, key: &LogKey) -> Result<u64> {
        self.with_log(key, |_, log| Ok(log.last_seq)).await
    }

    async fn delete_run_logs(&self, run: &RunKey) -> Result<()> {
        check_run(run)?;
        let dir = self.root.join("logs").join(&run.namespace).join(&run.name);
        let logs = self.logs.clone();
        let run = run.clone();
        blocking(move || {
            let mut logs = logs.lock().unwrap_or_else(|p| p.into_inner());
            logs.retain(|k, _| k.run != run);
            not_found(fs::remove_dir_all(&dir))
                .map(drop)
                .map_err(|e| io_error(&dir, e))
        })
        .await
    }

    async fn put_archive(&self, run: &RunKey, archive: Bytes) -> Result<()> {
        check_run(run)?;
        self.write_whole(self.archive_path(run), archive).await
    }

    async fn get_archive(&self, run: &RunKey) -> Result<Option<Bytes>> {
        check_run(run)?;
        self.read_whole(self.archive_path(run)).await
    }

    async fn delete_archive(&self, run: &RunKey) -> Result<bool> {
        check_run(run)?;
        self.remove(self.archive_path(run)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_torn_tail_is_cut_on_first_use_and_the_retried_batch_appends_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let key = LogKey::new("ci", "run-1", "build");
        let store = FileContent::open(dir.path()).await.unwrap();
        let batch: Vec<_> = (1..=3)
            .map(|s| LogLine::new(s, format!("line {s}")))
            .collect();
        store.append_log(&key, &batch).await.unwrap();
        let path = store.log_path(&key);
        drop(store);
        // A crash in the middle of appending seq 4.
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"ts\":\"\",\"str").unwrap();
        drop(f);

        let store = FileContent::open(dir.path()).await.unwrap();
        assert_eq!(store.log_last_seq(&key).await.unwrap(), 3);
        let retry: Vec<_> = (3..=5)
            .map(|s| LogLine::new(s, format!("line {s}")))
            .collect();
        let r = store.append_log(&key, &retry).await.unwrap();
        assert_eq!((r.accepted, r.duplicates), (2, 1));
        let all = store.read_log_after(&key, 0, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().all(|l| logs::decode(l.as_bytes()).is_some()),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_damaged_line_is_skipped_by_reads() {
        let dir = tempfile::tempdir().unwrap();
        let key = LogKey::new("ci", "run-1", "build");
        let store = FileContent::open(dir.path()).await.unwrap();
        store
            .append_log(&key, &[LogLine::new(1, "a")])
            .await
            .unwrap();
        let path = store.log_path(&key);
        drop(store);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage\n").unwrap();
        drop(f);
        let store = FileContent::open(dir.path()).await.unwrap();
        store
            .append_log(&key, &[LogLine::new(2, "b")])
            .await
            .unwrap();
        let tail = store.read_log_tail(&key, 5).await.unwrap();
        assert_eq!(tail.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2]);
    }

    #[tokio::test]
    async fn a_refused_batch_keeps_the_index_an_io_failure_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileContent::open(dir.path()).await.unwrap();
        let key = LogKey::new("ci", "run-1", "build");
        store
            .append_log(&key, &[LogLine::new(1, "a")])
            .await
            .unwrap();
        let gap = store.append_log(&key, &[LogLine::new(3, "c")]).await;
        assert!(matches!(gap, Err(StateError::LogGap { .. })));
        assert!(
            store.slot(&key).lock().unwrap().is_some(),
            "a gap forced a rescan"
        );
        // The log's directory replaced by a file: the append fails with an IO error.
        let run_dir = store.log_path(&key).parent().unwrap().to_path_buf();
        fs::remove_dir_all(&run_dir).unwrap();
        fs::write(&run_dir, b"").unwrap();
        let io = store.append_log(&key, &[LogLine::new(2, "b")]).await;
        assert!(matches!(io, Err(StateError::Backend { .. })), "{io:?}");
        assert!(store.slot(&key).lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FileContent::open(dir.path()).await.unwrap();
        let key = LogKey::new("ci", "run-1", "build");
        store
            .append_log(&key, &[LogLine::new(1, "a")])
            .await
            .unwrap();
        store
            .put_manifest("m", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let data = b"blob".to_vec();
        let sha = hex::encode(Sha256::digest(&data));
        let body: ByteStream = Box::pin(futures::stream::iter(vec![Ok(Bytes::from(data))]));
        store.put_blob(&sha, body).await.unwrap();
        for p in [
            store.log_path(&key),
            store.manifest_path("m"),
            store.blob_path(&sha),
        ] {
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[tokio::test]
    async fn files_left_in_tmp_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(FileContent::open(dir.path()).await.unwrap());
        let stale = dir.path().join("tmp").join("1-1");
        fs::write(&stale, b"half").unwrap();
        drop(FileContent::open(dir.path()).await.unwrap());
        assert!(!stale.exists());
    }
}
