//! Log lines and the rule both content stores apply to a batch: per job, lines at or below the
//! stored last seq are duplicates, the rest must follow on without a hole.
//!
//! Stored form, one JSON object per line: `{"seq":N,"ts":"…","stream":"stdout","line":"…"}`
//! (`"truncated":true` on a size cap's marker).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};
use crate::types::{check_name, check_run, RunKey};

/// A job's log: `(namespace, run, job)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogKey {
    pub run: RunKey,
    pub job: String,
}

impl LogKey {
    pub fn new(namespace: &str, run: &str, job: &str) -> Self {
        LogKey {
            run: RunKey::new(namespace, run),
            job: job.to_string(),
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        check_run(&self.run)?;
        check_name("job", &self.job)
    }
}

/// Where a line came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    #[default]
    Stdout,
    Stderr,
}

/// One log line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub seq: u64,
    #[serde(default)]
    pub ts: String,
    #[serde(default)]
    pub stream: LogStream,
    pub line: String,
    /// The marker stored in place of the line that would pass a job's size cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl LogLine {
    pub fn new(seq: u64, line: impl Into<String>) -> Self {
        LogLine {
            seq,
            ts: String::new(),
            stream: LogStream::Stdout,
            line: line.into(),
            truncated: false,
        }
    }
}

/// How a batch was taken.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Lines stored.
    pub accepted: u64,
    /// Lines already stored (a retried or overlapping batch), ignored.
    pub duplicates: u64,
    /// Bytes stored (encoded lines), for the log index.
    pub bytes: u64,
}

/// The part of `lines` to store after `last_seq`: skips duplicates, refuses a hole or a batch out
/// of order. Returns `(index of the first new line, duplicates)`.
pub(crate) fn new_lines(key: &LogKey, last_seq: u64, lines: &[LogLine]) -> Result<(usize, u64)> {
    let mut expected = last_seq + 1;
    let mut first_new = lines.len();
    let mut duplicates = 0;
    for (i, l) in lines.iter().enumerate() {
        if first_new == lines.len() && l.seq <= last_seq {
            duplicates += 1;
            continue;
        }
        if l.seq != expected {
            return Err(StateError::LogGap {
                job: key.job.clone(),
                expected,
                got: l.seq,
            });
        }
        if first_new == lines.len() {
            first_new = i;
        }
        expected += 1;
    }
    Ok((first_new, duplicates))
}

/// Encode lines as stored, one per line.
pub(crate) fn encode(lines: &[LogLine]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        // A LogLine has only strings, numbers and bools: serialising cannot fail.
        serde_json::to_writer(&mut out, l).expect("a log line serialises");
        out.push(b'\n');
    }
    out
}

/// Decode one stored line (without its newline); `None` for a damaged one, which readers skip.
pub(crate) fn decode(line: &[u8]) -> Option<LogLine> {
    serde_json::from_slice(line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(seqs: &[u64]) -> Vec<LogLine> {
        seqs.iter()
            .map(|&s| LogLine::new(s, format!("l{s}")))
            .collect()
    }

    #[test]
    fn duplicates_are_skipped_and_holes_refused() {
        let key = LogKey::new("ci", "r", "j");
        assert_eq!(new_lines(&key, 0, &lines(&[1, 2])).unwrap(), (0, 0));
        assert_eq!(new_lines(&key, 2, &lines(&[1, 2, 3])).unwrap(), (2, 2));
        assert_eq!(new_lines(&key, 3, &lines(&[2, 3])).unwrap(), (2, 2));
        assert!(matches!(
            new_lines(&key, 2, &lines(&[4])),
            Err(StateError::LogGap {
                expected: 3,
                got: 4,
                ..
            })
        ));
        assert!(matches!(
            new_lines(&key, 0, &lines(&[1, 3])),
            Err(StateError::LogGap {
                expected: 2,
                got: 3,
                ..
            })
        ));
        // A duplicate after new lines is out of order, not a duplicate.
        assert!(new_lines(&key, 1, &lines(&[2, 1])).is_err());
    }

    #[test]
    fn lines_round_trip() {
        let mut l = LogLine::new(7, "a \"quoted\"\nline");
        l.truncated = true;
        let bytes = encode(std::slice::from_ref(&l));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode(&bytes[..bytes.len() - 1]).unwrap(), l);
        assert!(decode(b"{\"seq\":1,\"li").is_none());
    }
}
