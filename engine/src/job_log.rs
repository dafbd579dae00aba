//! Per-job log files: `runs/<run>/<job>.log`, one JSON object per line with a sequence number
//! (1, 2, ... across all attempts) and a unix-millisecond timestamp. Secrets are masked before a
//! line is written anywhere.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub seq: u64,
    pub ts: i64,
    pub attempt: u32,
    pub stream: String,
    pub line: String,
}

/// An open job log. Each record is written with one `write` call so a concurrent reader
/// (`runs logs --follow`, the dashboard) never sees half a line.
#[derive(Debug)]
pub struct JobLog {
    file: File,
    next_seq: u64,
}

impl JobLog {
    pub fn open(path: &Path) -> std::io::Result<JobLog> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(JobLog { file, next_seq: 1 })
    }

    /// Append a record; returns its sequence number.
    pub fn append(
        &mut self,
        ts: i64,
        attempt: u32,
        stream: &str,
        line: &str,
    ) -> std::io::Result<u64> {
        let seq = self.next_seq;
        let rec = LogRecord {
            seq,
            ts,
            attempt,
            stream: stream.to_string(),
            line: line.to_string(),
        };
        let mut bytes = serde_json::to_vec(&rec).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.next_seq += 1;
        Ok(seq)
    }
}

/// Read a job log; a torn last line (a writer died mid-write) is skipped.
pub fn read(path: &Path) -> std::io::Result<Vec<LogRecord>> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Vec<LogRecord> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<LogRecord>(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_continue_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut log = JobLog::open(&p).unwrap();
        assert_eq!(log.append(1, 1, "stdout", "one").unwrap(), 1);
        assert_eq!(log.append(2, 2, "stderr", "two \"quoted\"").unwrap(), 2);
        let recs = read(&p).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].line, "two \"quoted\"");
        assert_eq!(recs[1].attempt, 2);
        std::fs::write(
            &p,
            format!("{}{{\"seq\":3,", std::fs::read_to_string(&p).unwrap()),
        )
        .unwrap();
        assert_eq!(read(&p).unwrap().len(), 2);
    }
}
