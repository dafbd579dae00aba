//! Log lines and the rule both content stores apply to a batch: per job, lines at or below the
//! stored last seq are duplicates, the rest must follow on without a hole.
//!
//! Stored form, one JSON object per line: `{"seq":N,"ts":"…","stream":"stdout","line":"…"}`
//! (`"truncated":true` on a size cap's marker).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};
use crate::types::{check_job, check_run, RunKey};

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
        check_job(&self.job)
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

/// What a store's log feed tells followers on every replica (see
/// [`crate::MetadataStore::log_feed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFeedEvent {
    /// Stored lines of one job's log: contiguous seqs, in order.
    Lines {
        key: LogKey,
        lines: std::sync::Arc<Vec<LogLine>>,
    },
    /// The log of `key` now reaches `last_seq`, through lines too long to be told here: read
    /// them from the content store.
    Reached { key: LogKey, last_seq: u64 },
    /// The feed was interrupted and is back: anything may have been missed meanwhile.
    Resumed,
}

/// The most bytes of one message of a feed (PostgreSQL's NOTIFY payload is below 8,000 bytes).
pub const FEED_MESSAGE_MAX: usize = 7_800;

/// The message of a feed, as sent: `{"ns","run","job","lines":[…]}` or `{…,"last":N}`.
#[derive(Serialize, Deserialize)]
struct FeedMessage<'a> {
    ns: std::borrow::Cow<'a, str>,
    run: std::borrow::Cow<'a, str>,
    job: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    lines: Vec<LogLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<u64>,
}

/// `lines` of `key` as feed messages of at most `max` bytes each, in order: runs of lines that
/// fit one message, and for a line that alone does not, a message saying how far the log reaches.
pub fn feed_messages(key: &LogKey, lines: &[LogLine], max: usize) -> Vec<String> {
    let head = |lines: Vec<LogLine>, last: Option<u64>| FeedMessage {
        ns: key.run.namespace.as_str().into(),
        run: key.run.name.as_str().into(),
        job: key.job.as_str().into(),
        lines,
        last,
    };
    // A line costs its JSON plus a comma in the array; the envelope is measured once.
    let envelope =
        serde_json::to_string(&head(vec![LogLine::new(0, "")], None)).map_or(0, |s| s.len());
    let mut out = Vec::new();
    let mut chunk: Vec<LogLine> = Vec::new();
    let mut size = envelope;
    let flush = |chunk: &mut Vec<LogLine>, out: &mut Vec<String>| {
        if !chunk.is_empty() {
            let msg = head(std::mem::take(chunk), None);
            out.push(serde_json::to_string(&msg).expect("a feed message serialises"));
        }
    };
    for l in lines {
        let cost = serde_json::to_string(l).map_or(usize::MAX, |s| s.len() + 1);
        if envelope.saturating_add(cost) > max {
            flush(&mut chunk, &mut out);
            size = envelope;
            let msg = head(Vec::new(), Some(l.seq));
            out.push(serde_json::to_string(&msg).expect("a feed message serialises"));
            continue;
        }
        if size + cost > max {
            flush(&mut chunk, &mut out);
            size = envelope;
        }
        size += cost;
        chunk.push(l.clone());
    }
    flush(&mut chunk, &mut out);
    out
}

/// A feed message back as its event; `None` for one this version does not read.
pub fn parse_feed_message(payload: &str) -> Option<LogFeedEvent> {
    let m: FeedMessage = serde_json::from_str(payload).ok()?;
    let key = LogKey::new(&m.ns, &m.run, &m.job);
    if key.check().is_err() {
        return None;
    }
    match (m.lines.is_empty(), m.last) {
        (false, _) => Some(LogFeedEvent::Lines {
            key,
            lines: std::sync::Arc::new(m.lines),
        }),
        (true, Some(last_seq)) => Some(LogFeedEvent::Reached { key, last_seq }),
        (true, None) => None,
    }
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
    fn feed_messages_fit_and_parse_back_in_order() {
        let key = LogKey::new("ci", "r-1", "build");
        let mut all: Vec<LogLine> = (1..=300)
            .map(|s| LogLine::new(s, format!("line {s} {}", "x".repeat(40))))
            .collect();
        // A line too long for any message, in the middle.
        all[150].line = "y".repeat(9_000);
        let msgs = feed_messages(&key, &all, FEED_MESSAGE_MAX);
        assert!(
            msgs.len() > 2,
            "split into several messages: {}",
            msgs.len()
        );
        let mut seen = Vec::new();
        let mut reached = Vec::new();
        for m in &msgs {
            assert!(m.len() <= FEED_MESSAGE_MAX, "{} bytes", m.len());
            match parse_feed_message(m).expect("parses") {
                LogFeedEvent::Lines { key: k, lines } => {
                    assert_eq!(k, key);
                    seen.extend(lines.iter().map(|l| l.seq));
                }
                LogFeedEvent::Reached { key: k, last_seq } => {
                    assert_eq!(k, key);
                    reached.push(last_seq);
                    seen.push(last_seq);
                }
                LogFeedEvent::Resumed => unreachable!(),
            }
        }
        assert_eq!(seen, (1..=300).collect::<Vec<_>>());
        assert_eq!(reached, vec![151]);
        assert!(
            parse_feed_message("{\"ns\":\"../x\",\"run\":\"r\",\"job\":\"j\",\"last\":1}")
                .is_none()
        );
        assert!(parse_feed_message("not json").is_none());
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
