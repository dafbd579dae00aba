//! `/api/v1/runs/{ns}/{name}/logs`: runners post lines, people read pages and follow a stream.

use serde::{Deserialize, Serialize};

/// Where a line came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    #[default]
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line of a job, as a runner posts it (`POST .../logs` takes an array of them) and as
/// [`crate::ApiClient::follow_logs`] hands it on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub job: String,
    /// 1 for a job's first line, then +1 per line.
    pub seq: u64,
    /// RFC 3339 time.
    #[serde(default)]
    pub ts: String,
    #[serde(default)]
    pub stream: LogStream,
    pub line: String,
}

/// One line of one job's log as the API stores and reads it back (a page's `lines`, a stream
/// event's `data`): a [`LogLine`] without its job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub seq: u64,
    #[serde(default)]
    pub ts: String,
    #[serde(default)]
    pub stream: LogStream,
    pub line: String,
}

impl LogRecord {
    /// This line as one of `job`'s.
    pub fn of_job(self, job: &str) -> LogLine {
        LogLine {
            job: job.to_string(),
            seq: self.seq,
            ts: self.ts,
            stream: self.stream,
            line: self.line,
        }
    }
}

/// How a log batch was taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Lines appended.
    pub accepted: u64,
    /// Lines already stored (a retried or overlapping batch), ignored.
    pub duplicates: u64,
    /// Lines past the job's log cap: acknowledged, not stored (the log ends with a marker).
    /// Shown only when there are some.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub dropped: u64,
}

/// `GET .../logs`: without `?job=`, the jobs that have a log; with it, one page of its lines.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum LogPage {
    Lines {
        job: String,
        lines: Vec<LogRecord>,
        /// The page stopped at its limit: read on with `after` = the last line's seq.
        more: bool,
    },
    Jobs {
        jobs: Vec<String>,
    },
}
