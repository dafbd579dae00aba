//! What `sparkwing run` prints while a run goes: pretty lines on a terminal, JSON lines otherwise.

use serde_json::{json, Value};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// `job │ line`, colours when `color`.
    Pretty { color: bool },
    /// One JSON object per line: log records and events.
    Json,
}

const COLORS: [&str; 6] = ["36", "35", "33", "32", "34", "31"];

/// Writes to stdout; one lock per line so lines from parallel jobs never interleave.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub format: Format,
    pub run_id: String,
    width: usize,
}

impl Terminal {
    pub fn new(format: Format, run_id: &str) -> Self {
        Terminal {
            format,
            run_id: run_id.to_string(),
            width: 0,
        }
    }

    /// Align job names to the longest one.
    pub fn set_job_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.width = names
            .into_iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .min(24);
    }

    fn paint(&self, code: &str, text: &str) -> String {
        match self.format {
            Format::Pretty { color: true } => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_string(),
        }
    }

    fn write_line(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) must not kill the run: its record is still kept.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// A log line of a job.
    pub fn log_line(
        &self,
        job: &str,
        job_index: usize,
        ts: i64,
        seq: u64,
        stream: &str,
        line: &str,
    ) {
        match self.format {
            Format::Json => self.write_line(
                &json!({"ts": ts, "run": self.run_id, "job": job, "seq": seq, "stream": stream, "line": line})
                    .to_string(),
            ),
            Format::Pretty { .. } => {
                let name = format!("{job:<w$}", w = self.width);
                let name = self.paint(COLORS[job_index % COLORS.len()], &name);
                self.write_line(&format!("{name} │ {line}"));
            }
        }
    }

    /// An event: in JSON mode the whole record, in pretty mode the given human line (if any).
    pub fn event(
        &self,
        ts: i64,
        kind: &str,
        job: Option<&str>,
        payload: &Value,
        human: Option<String>,
    ) {
        match self.format {
            Format::Json => {
                let mut obj = json!({"ts": ts, "run": self.run_id, "event": kind});
                if let Some(j) = job {
                    obj["job"] = json!(j);
                }
                if let (Some(map), Some(extra)) = (obj.as_object_mut(), payload.as_object()) {
                    for (k, v) in extra {
                        map.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                self.write_line(&obj.to_string());
            }
            Format::Pretty { .. } => {
                if let Some(h) = human {
                    self.write_line(&h);
                }
            }
        }
    }

    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    pub fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
}

/// `1.2s`, `850ms`, `2m03s` (one definition, in core, shared with the dashboards).
pub use sparkwing_core::time::human_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(1234), "1.2s");
        assert_eq!(human_duration(123_000), "2m03s");
    }
}
