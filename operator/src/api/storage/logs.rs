//! Job logs: `logs/<ns>/<run>/<job>.jsonl`, one JSON line per log line, in seq order.
//!
//! Durability: a batch is appended with one `write` and `fdatasync`ed before the ingest answers,
//! so an acknowledged line survives a crash of the process or the node. A crash during the
//! append can leave a partial last line; the first use of a log in a process (ingest or read)
//! truncates it to its last complete line, so a retried batch starts on a line of its own. A line
//! that does not parse (a file damaged otherwise) is skipped and logged, never failing a read.
//!
//! Reads are by range: per job the process keeps, once the log was first used, its length in
//! complete lines, its last seq and a sparse index (the byte offset of every
//! [`INDEX_STRIDE`]th line), so a read after seq N seeks near it and reads only the lines of its
//! answer (at most a page), never the whole file.
//!
//! A job's log is capped (`Limits::log_job_bytes`): the line that would pass the cap is replaced
//! by a marker line (`"truncated": true`, on stderr, saying so) and later lines are acknowledged
//! (`dropped` in the ingest answer) but not stored, so a runner is not stuck retrying.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{io, IngestError, IngestReport, LogRecord, Storage, StorageError, Stream};

/// Every this many lines the index keeps a byte offset.
pub const INDEX_STRIDE: u64 = 256;

/// `(namespace, run, job)`.
pub(super) type LogKey = (String, String, String);

/// What the process knows of one job's log after reading it once.
#[derive(Debug, Default)]
pub(super) struct JobLog {
    /// Highest stored seq (0: none).
    last_seq: u64,
    /// Bytes of complete lines: reads stop here.
    len: u64,
    /// Lines stored (the index counts them).
    lines: u64,
    /// `(seq, byte offset)` of every [`INDEX_STRIDE`]th line, ascending.
    index: Vec<(u64, u64)>,
    /// The log reached its cap: its last line is the marker.
    capped: bool,
}

impl JobLog {
    fn note(&mut self, seq: u64, offset: u64) {
        if self.lines.is_multiple_of(INDEX_STRIDE) {
            self.index.push((seq, offset));
        }
        self.lines += 1;
        self.last_seq = self.last_seq.max(seq);
    }

    /// Where to start reading for the first line after seq `after`.
    fn start_after(&self, after: u64) -> u64 {
        let i = self.index.partition_point(|(seq, _)| *seq <= after + 1);
        if i == 0 {
            0
        } else {
            self.index[i - 1].1
        }
    }
}

type Slot = Arc<Mutex<Option<JobLog>>>;

/// The per-job state of every log the process has used.
#[derive(Default)]
pub(super) struct Logs {
    jobs: Mutex<HashMap<LogKey, Slot>>,
}

impl Logs {
    fn slot(&self, key: &LogKey) -> Result<Slot, StorageError> {
        let mut jobs = self.jobs.lock().map_err(|_| StorageError::Poisoned)?;
        Ok(jobs.entry(key.clone()).or_default().clone())
    }
}

/// The seq of a stored line and whether it is the cap's marker; `None`: not a log line.
fn parse_line(line: &[u8]) -> Option<(u64, bool)> {
    let marker =
        line.ends_with(b",\"truncated\":true}\n") || line.ends_with(b",\"truncated\":true}");
    // Lines this module writes start `{"seq":N,`: read N without parsing the whole line, which
    // matters when a long log is indexed; anything else goes through the JSON parser.
    if let Some(rest) = line.strip_prefix(b"{\"seq\":") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && rest.get(digits) == Some(&b',') && line.ends_with(b"}\n") {
            if let Some(seq) = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|s| s.parse().ok())
            {
                return Some((seq, marker));
            }
        }
    }
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
        #[serde(default)]
        truncated: bool,
    }
    serde_json::from_slice::<Seq>(line)
        .ok()
        .map(|s| (s.seq, s.truncated))
}

/// Read a job's log once: its index, and the truncation of a partial last line.
fn load(path: &Path) -> Result<JobLog, StorageError> {
    let file = match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(JobLog::default()),
        Err(e) => return Err(io("opening", path)(e)),
    };
    let mut log = JobLog::default();
    let mut reader = BufReader::with_capacity(1 << 16, &file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut bad = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io("reading", path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        match parse_line(&line) {
            Some((seq, marker)) => {
                log.note(seq, offset);
                log.capped = marker;
            }
            None => bad += 1,
        }
        offset += n as u64;
    }
    if bad > 0 {
        tracing::warn!(path = %path.display(), lines = bad, "log lines that do not parse are skipped");
    }
    let size = file
        .metadata()
        .map_err(io("reading the size of", path))?
        .len();
    if size > offset {
        // A partial line an interrupted append left: never acknowledged, so nothing is lost; a
        // retried batch must start on a line of its own.
        file.set_len(offset)
            .map_err(io("truncating the partial last line of", path))?;
        file.sync_data().map_err(io("syncing", path))?;
        tracing::warn!(path = %path.display(), bytes = size - offset, "truncated a partial last log line");
    }
    log.len = offset;
    Ok(log)
}

/// What to read of a job's log: up to `max_lines` lines (and about `max_bytes` bytes) with a seq
/// above `after`, from byte `offset` (`None`: found through the index).
#[derive(Clone, Copy, Debug)]
pub struct LogRange {
    pub after: u64,
    pub offset: Option<u64>,
    pub max_lines: usize,
    pub max_bytes: usize,
}

/// Lines of a log read by range.
#[derive(Debug, Default)]
pub struct LogPage {
    pub lines: Vec<LogRecord>,
    /// The answer stopped at its line or byte limit: more lines follow.
    pub more: bool,
    /// Byte offset after the last line read (to continue from, see [`Storage::read_log_page`]).
    pub offset: u64,
}

/// The marker stored in place of the line that would pass a job's cap.
#[derive(Serialize)]
struct Marker<'a> {
    seq: u64,
    ts: &'a str,
    stream: Stream,
    line: String,
    truncated: bool,
}

impl Storage {
    pub(super) fn log_dir(&self, ns: &str, run: &str) -> PathBuf {
        self.root.join("logs").join(ns).join(run)
    }

    fn log_path(&self, ns: &str, run: &str, job: &str) -> PathBuf {
        self.log_dir(ns, run).join(format!("{job}.jsonl"))
    }

    /// Append a batch: per job, lines at or below the stored seq are duplicates and ignored,
    /// the next ones must follow without a gap. All or nothing: a gap in any job stores nothing.
    /// The lines are on disk (fdatasync) when this returns `Ok`.
    pub fn append_logs(
        &self,
        ns: &str,
        run: &str,
        batch: Vec<(String, LogRecord)>,
    ) -> Result<IngestReport, IngestError> {
        let mut by_job: BTreeMap<String, Vec<LogRecord>> = BTreeMap::new();
        for (job, rec) in batch {
            by_job.entry(job).or_default().push(rec);
        }
        // Lock every job of the batch, in key order (no two batches wait on each other).
        let slots = by_job
            .keys()
            .map(|job| {
                self.logs
                    .slot(&(ns.to_string(), run.to_string(), job.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut guards = Vec::with_capacity(slots.len());
        for slot in &slots {
            guards.push(slot.lock().map_err(|_| StorageError::Poisoned)?);
        }
        let mut report = IngestReport::default();
        let mut plan: Vec<(PathBuf, Vec<LogRecord>)> = Vec::new();
        for ((job, mut lines), guard) in by_job.into_iter().zip(guards.iter_mut()) {
            let path = self.log_path(ns, run, &job);
            if guard.is_none() {
                **guard = Some(load(&path)?);
            }
            let log = guard.as_ref().ok_or(StorageError::Poisoned)?;
            lines.sort_by_key(|l| l.seq);
            let mut next = log.last_seq + 1;
            let mut append = Vec::new();
            for l in lines {
                if l.seq < next {
                    report.duplicates += 1;
                } else if log.capped {
                    // Past the cap nothing is stored; the runner must not retry forever.
                    report.dropped += 1;
                } else if l.seq == next {
                    next += 1;
                    append.push(l);
                } else {
                    return Err(IngestError::Gap {
                        job,
                        expected: next,
                        got: l.seq,
                    });
                }
            }
            plan.push((path, append));
        }
        for ((path, lines), guard) in plan.into_iter().zip(guards.iter_mut()) {
            if lines.is_empty() {
                continue;
            }
            let log = guard.as_mut().ok_or(StorageError::Poisoned)?;
            let json = |v: &dyn erased::Ser, buf: &mut Vec<u8>| -> Result<(), StorageError> {
                v.write_to(buf).map_err(|source| StorageError::Json {
                    path: path.clone(),
                    source,
                })
            };
            let mut buf = Vec::new();
            let mut offsets = Vec::with_capacity(lines.len());
            let mut capped = false;
            for l in &lines {
                let start = buf.len();
                json(l, &mut buf)?;
                buf.push(b'\n');
                if log.len + buf.len() as u64 > self.log_cap {
                    buf.truncate(start);
                    let marker = Marker {
                        seq: l.seq,
                        ts: &l.ts,
                        stream: Stream::Stderr,
                        line: format!(
                            "sparkwing: this job's log reached its limit of {} bytes; later lines are dropped",
                            self.log_cap
                        ),
                        truncated: true,
                    };
                    json(&marker, &mut buf)?;
                    buf.push(b'\n');
                    offsets.push((l.seq, log.len + start as u64));
                    capped = true;
                    break;
                }
                offsets.push((l.seq, log.len + start as u64));
            }
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io("creating", dir))?;
            }
            let mut f = super::append_private(&path).map_err(io("opening", &path))?;
            let written = f
                .write_all(&buf)
                .and_then(|()| f.sync_data())
                .map_err(io("appending to", &path));
            if let Err(e) = written {
                // Leave no partial line behind: the batch was not acknowledged.
                let _ = f.set_len(log.len);
                return Err(e.into());
            }
            let stored = offsets.len() as u64 - u64::from(capped);
            for (seq, offset) in offsets {
                log.note(seq, offset);
            }
            log.len += buf.len() as u64;
            report.accepted += stored;
            if capped {
                log.capped = true;
                report.dropped += lines.len() as u64 - stored;
            }
        }
        Ok(report)
    }

    /// The state of a job's log, read once per process.
    fn job_log<T>(
        &self,
        ns: &str,
        run: &str,
        job: &str,
        f: impl FnOnce(&JobLog) -> T,
    ) -> Result<T, StorageError> {
        let slot = self
            .logs
            .slot(&(ns.to_string(), run.to_string(), job.to_string()))?;
        let mut guard = slot.lock().map_err(|_| StorageError::Poisoned)?;
        if guard.is_none() {
            *guard = Some(load(&self.log_path(ns, run, job))?);
        }
        Ok(f(guard.as_ref().ok_or(StorageError::Poisoned)?))
    }

    /// A page of a job's log ([`LogRange`]). Memory is in proportion to the answer, whatever the
    /// log's size.
    pub fn read_log_page(
        &self,
        ns: &str,
        run: &str,
        job: &str,
        range: LogRange,
    ) -> Result<LogPage, StorageError> {
        let LogRange {
            after,
            offset,
            max_lines,
            max_bytes,
        } = range;
        let (start, len) = self.job_log(ns, run, job, |log| {
            (offset.unwrap_or_else(|| log.start_after(after)), log.len)
        })?;
        let mut page = LogPage {
            offset: start,
            ..LogPage::default()
        };
        if start >= len {
            return Ok(page);
        }
        let path = self.log_path(ns, run, job);
        let mut f = fs::File::open(&path).map_err(io("opening", &path))?;
        f.seek(SeekFrom::Start(start))
            .map_err(io("seeking", &path))?;
        let mut reader = BufReader::with_capacity(1 << 16, f.take(len - start));
        let mut line = Vec::new();
        let mut bytes = 0usize;
        let mut bad = 0u64;
        loop {
            if page.lines.len() >= max_lines || bytes >= max_bytes {
                page.more = page.offset < len;
                break;
            }
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(io("reading", &path))?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            page.offset += n as u64;
            match serde_json::from_slice::<LogRecord>(&line) {
                Ok(rec) if rec.seq > after => {
                    bytes += n;
                    page.lines.push(rec);
                }
                Ok(_) => {}
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            tracing::warn!(path = %path.display(), lines = bad, "log lines that do not parse were skipped");
        }
        Ok(page)
    }

    /// Jobs that have a log.
    pub fn log_jobs(&self, ns: &str, run: &str) -> Result<Vec<String>, StorageError> {
        super::list_stems(&self.log_dir(ns, run), ".jsonl")
    }
}

/// Serializing either a line or the marker through one closure.
mod erased {
    pub trait Ser {
        fn write_to(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn write_to(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
            serde_json::to_writer(buf, self)
        }
    }
}
