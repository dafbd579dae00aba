//! Following a job's log over server-sent events, resumed with `Last-Event-ID` when the
//! connection drops.

use std::io::{BufRead as _, BufReader};
use std::time::Duration;

use super::error::check;
use super::{query_escape, ApiClient, RemoteError};
use crate::wire::{LogLine, LogRecord};

/// How a log stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The server sent `event: end`: the run is over and every line was sent.
    End,
    /// The callback asked to stop.
    Stopped,
}

/// What the log stream callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

impl ApiClient {
    /// Follow a job's log over server-sent events (`.../logs/stream`), from the line after
    /// `after`, calling `on_line` for each line in order. A dropped connection is resumed with
    /// `Last-Event-ID` (up to `reconnects` times in a row without progress). Returns how it ended
    /// and the last seq seen.
    pub fn follow_logs(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        after: u64,
        reconnects: u32,
        mut on_line: impl FnMut(LogLine) -> Flow,
    ) -> Result<(StreamEnd, u64), RemoteError> {
        let url = self.url(&format!(
            "/api/v1/runs/{ns}/{name}/logs/stream?job={}",
            query_escape(job)
        ));
        let mut last = after;
        let mut failures = 0u32;
        loop {
            let before = last;
            let attempt = self.stream_once(&url, job, &mut last, &mut on_line);
            let broke = match attempt {
                Ok(Some(end)) => return Ok((end, last)),
                // The stream closed without `end`: reconnect.
                Ok(None) => RemoteError::Unreachable {
                    url: self.base.clone(),
                    message: format!("the log stream of job {job} kept closing without its end"),
                },
                Err(e) if e.is_unreachable() => e,
                Err(e) => return Err(e),
            };
            if last == before {
                failures += 1;
                if failures > reconnects {
                    return Err(broke);
                }
            } else {
                failures = 0;
            }
            // Back off before reconnecting (a pause between attempts, not a wait for a state).
            std::thread::sleep(Duration::from_millis(200 * u64::from(failures.min(10) + 1)));
        }
    }

    /// One connection of [`Self::follow_logs`]: `Ok(None)` when it closed without `end`.
    fn stream_once(
        &self,
        url: &str,
        job: &str,
        last: &mut u64,
        on_line: &mut impl FnMut(LogLine) -> Flow,
    ) -> Result<Option<StreamEnd>, RemoteError> {
        let resp = self
            .authorized(self.stream_agent.get(url))
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", &last.to_string())
            .call()
            .map_err(|e| self.transport(e))?;
        let resp = check(resp)?;
        let reader = BufReader::new(resp.into_body().into_reader());
        let mut event = String::new();
        let mut data = String::new();
        let mut id: Option<u64> = None;
        for line in reader.lines() {
            let line = line.map_err(|e| RemoteError::Unreachable {
                url: self.base.clone(),
                message: format!("the log stream broke: {e}"),
            })?;
            if line.is_empty() {
                // Dispatch the event.
                let ev = std::mem::take(&mut event);
                let d = std::mem::take(&mut data);
                let seq = id.take();
                match ev.as_str() {
                    "end" => return Ok(Some(StreamEnd::End)),
                    "error" => {
                        return Err(RemoteError::Status {
                            status: 500,
                            code: "internal".into(),
                            message: format!("the API failed reading the log of job {job}: {d}"),
                        })
                    }
                    "" | "message" if !d.is_empty() => {
                        let record: LogRecord = serde_json::from_str(&d).map_err(|e| {
                            RemoteError::decode(format!("a log line of job {job}"), e)
                        })?;
                        let seq = seq.unwrap_or(record.seq);
                        if seq <= *last {
                            continue;
                        }
                        *last = seq;
                        if on_line(record.of_job(job)) == Flow::Stop {
                            return Ok(Some(StreamEnd::Stopped));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => event = value.to_string(),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                "id" => id = value.trim().parse().ok(),
                _ => {}
            }
        }
        Ok(None)
    }
}
