//! A blocking client for the Sparkwing API (`docs/api.md`): uploads, runs, logs, job states and
//! tokens, over `ureq` with rustls.
//!
//! The bearer token is kept in the client and sent in a header; it is never part of an error
//! message, a `Debug` output or a log line.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sparkwing_core::upload_manifest::Manifest;

/// How long to wait for a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, body included (blobs up to 64 MiB compressed).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest silence on a log stream: the server sends a keep-alive comment every 15 s.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(45);
/// Most bytes read from a JSON answer.
const JSON_LIMIT: u64 = 64 * 1024 * 1024;
/// Most bytes read from an upload blob (the API's per-file limit).
const BLOB_LIMIT: u64 = 256 * 1024 * 1024;

/// What an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No answer: DNS, connect, TLS or a timeout.
    #[error("cannot reach the API at {url}: {message}; check the profile's controller URL and that the API is up")]
    Unreachable { url: String, message: String },
    /// The API answered an error (`{"error": code, "message": message}`).
    #[error("{message} (HTTP {status} {code})")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// A log batch left a hole: resend from `expected`.
    #[error("log gap in job {job}: the API expects seq {expected} next")]
    LogGap { job: String, expected: u64 },
    /// The answer was not what the API promises.
    #[error("cannot decode {what} from the API: {message}")]
    Decode { what: String, message: String },
}

impl RemoteError {
    /// True when the API could not be reached at all (worth a retry later).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RemoteError::Unreachable { .. })
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Status { status, .. } => Some(*status),
            RemoteError::LogGap { .. } => Some(409),
            _ => None,
        }
    }

    /// For a 403: the scope the token lacks (from `missing scope X`).
    pub fn missing_scope(&self) -> Option<&str> {
        match self {
            RemoteError::Status {
                status: 403,
                message,
                ..
            } => message.strip_prefix("missing scope "),
            _ => None,
        }
    }
}

/// `POST /api/v1/uploads`'s answer: the upload id and the blobs the server lacks.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct UploadAnswer {
    pub id: String,
    #[serde(default)]
    pub missing: Vec<String>,
}

/// A triggered run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    pub namespace: String,
    pub name: String,
    /// The run's runner token, when the server hands it out (it normally keeps it in a Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_token: Option<String>,
}

/// One log line, as posted by a runner and read back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The job (filled in by the client when reading one job's log).
    #[serde(default)]
    pub job: String,
    /// The job's line number, from 1.
    pub seq: u64,
    /// RFC 3339 time.
    #[serde(default)]
    pub ts: String,
    /// `stdout` or `stderr`.
    #[serde(default = "stdout")]
    pub stream: String,
    pub line: String,
}

fn stdout() -> String {
    "stdout".to_string()
}

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

/// A client for one API base URL and token.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

type Resp = ureq::http::Response<ureq::Body>;

impl ApiClient {
    /// A client for `base_url` (`http://` or `https://`, a trailing `/` is ignored).
    pub fn new(base_url: &str, token: &str) -> Result<ApiClient, RemoteError> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() < 9 {
            return Err(RemoteError::Unreachable {
                url: base_url.to_string(),
                message: "not an http:// or https:// URL; set one with `sparkwing profile set NAME --controller URL`".into(),
            });
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent(concat!("sparkwing/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let stream_agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(STREAM_READ_TIMEOUT))
            .user_agent(concat!("sparkwing/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(ApiClient {
            base,
            token: token.trim().to_string(),
            agent,
            stream_agent,
        })
    }

    /// The API's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn transport(&self, _url: &str, e: ureq::Error) -> RemoteError {
        RemoteError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        }
    }

    fn get(&self, path: &str) -> Result<Resp, RemoteError> {
        let url = self.url(path);
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", &self.auth())
            .call()
            .map_err(|e| self.transport(&url, e))?;
        check(resp)
    }

    fn delete(&self, path: &str) -> Result<Resp, RemoteError> {
        let url = self.url(path);
        let resp = self
            .agent
            .delete(&url)
            .header("Authorization", &self.auth())
            .call()
            .map_err(|e| self.transport(&url, e))?;
        check(resp)
    }

    fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Resp, RemoteError> {
        let url = self.url(path);
        let req = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        }
        .header("Authorization", &self.auth());
        let resp = match body {
            Some(b) => req.content_type("application/json").send(&b[..]),
            None => req.send_empty(),
        }
        .map_err(|e| self.transport(&url, e))?;
        check(resp)
    }

    fn send_json<T: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: &T,
    ) -> Result<Resp, RemoteError> {
        let bytes = serde_json::to_vec(body).map_err(|e| RemoteError::Decode {
            what: "the request body".into(),
            message: e.to_string(),
        })?;
        self.send(method, path, Some(bytes))
    }

    /// `GET /api/v1/whoami`: `{"principal","token","scopes"}`.
    pub fn whoami(&self) -> Result<serde_json::Value, RemoteError> {
        json_of(self.get("/api/v1/whoami")?, "whoami")
    }

    /// `POST /api/v1/uploads`: store the manifest, learn which blobs are missing.
    pub fn create_upload(&self, m: &Manifest) -> Result<UploadAnswer, RemoteError> {
        json_of(
            self.send_json("POST", "/api/v1/uploads", m)?,
            "the upload answer",
        )
    }

    /// `PUT /api/v1/blobs/{sha256}` with the gzip-compressed content.
    pub fn put_blob(&self, sha256: &str, gzipped: Vec<u8>) -> Result<(), RemoteError> {
        let url = self.url(&format!("/api/v1/blobs/{sha256}"));
        let resp = self
            .agent
            .put(&url)
            .header("Authorization", &self.auth())
            .content_type("application/gzip")
            .send(&gzipped[..])
            .map_err(|e| self.transport(&url, e))?;
        check(resp).map(drop)
    }

    /// `POST /api/v1/blobs`: many blobs in one gzip stream of `<sha256> <size>\n<content>`
    /// frames. Answers `(blobs, created)`; a 404 or 405 means an API from before batches.
    pub fn put_blobs(&self, gzipped: Vec<u8>) -> Result<(u64, u64), RemoteError> {
        let url = self.url("/api/v1/blobs");
        let resp = self
            .agent
            .post(&url)
            .header("Authorization", &self.auth())
            .content_type("application/gzip")
            .send(&gzipped[..])
            .map_err(|e| self.transport(&url, e))?;
        let v: serde_json::Value = json_of(check(resp)?, "blob batch answer")?;
        let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        Ok((n("blobs"), n("created")))
    }

    /// `GET /api/v1/uploads/{id}`: the canonical manifest.
    pub fn get_upload(&self, id: &str) -> Result<Manifest, RemoteError> {
        let v: serde_json::Value = json_of(self.get(&format!("/api/v1/uploads/{id}"))?, "upload")?;
        // The answer is `{"id", "missing", "files": <count>, "totalSize", "manifest": {"files": [...]}}`.
        let files = v
            .get("manifest")
            .and_then(|m| m.get("files"))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        serde_json::from_value(serde_json::json!({ "files": files })).map_err(|e| {
            RemoteError::Decode {
                what: format!("upload {id}"),
                message: e.to_string(),
            }
        })
    }

    /// `GET /api/v1/uploads/{id}/blobs/{sha256}`: the raw (uncompressed) content.
    pub fn get_upload_blob(&self, id: &str, sha256: &str) -> Result<Vec<u8>, RemoteError> {
        let mut resp = self.get(&format!("/api/v1/uploads/{id}/blobs/{sha256}"))?;
        resp.body_mut()
            .with_config()
            .limit(BLOB_LIMIT)
            .read_to_vec()
            .map_err(|e| RemoteError::Decode {
                what: format!("blob {sha256}"),
                message: e.to_string(),
            })
    }

    /// `POST /api/v1/runs`: create a PipelineRun.
    pub fn trigger(&self, body: &serde_json::Value) -> Result<RunRef, RemoteError> {
        json_of(self.send_json("POST", "/api/v1/runs", body)?, "the new run")
    }

    /// `GET /api/v1/runs[?namespace=]`: every run, newest first, page after page.
    pub fn list_runs(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, RemoteError> {
        let base = match namespace {
            Some(ns) => format!("/api/v1/runs?namespace={}&limit=500", query_escape(ns)),
            None => "/api/v1/runs?limit=500".to_string(),
        };
        // The server answers a page at a time (newest first); follow `next` to the end.
        let mut out = Vec::new();
        let mut path = base.clone();
        loop {
            let v: serde_json::Value = json_of(self.get(&path)?, "the run list")?;
            match v.get("runs") {
                Some(serde_json::Value::Array(a)) => out.extend(a.iter().cloned()),
                _ => {
                    return Err(RemoteError::Decode {
                        what: "the run list".into(),
                        message: "no `runs` array".into(),
                    })
                }
            }
            match v.get("next").and_then(|n| n.as_str()) {
                Some(cursor) => path = format!("{base}&cursor={}", query_escape(cursor)),
                None => return Ok(out),
            }
        }
    }

    /// `GET /api/v1/runs/{ns}/{name}`: the run, its PipelineRun and job states.
    pub fn get_run(&self, ns: &str, name: &str) -> Result<serde_json::Value, RemoteError> {
        json_of(
            self.get(&format!("/api/v1/runs/{ns}/{name}"))?,
            &format!("run {ns}/{name}"),
        )
    }

    /// `POST .../cancel` (`mode`: `Cancelled` by default, or `CancelledRunFinally`).
    pub fn cancel_run(&self, ns: &str, name: &str, mode: Option<&str>) -> Result<(), RemoteError> {
        let path = format!("/api/v1/runs/{ns}/{name}/cancel");
        match mode {
            Some(m) => self.send_json("POST", &path, &serde_json::json!({ "mode": m })),
            None => self.send("POST", &path, None),
        }
        .map(drop)
    }

    /// `PUT .../jobs/{job}`: a job's state (a JSON object).
    pub fn put_job_state(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        state: &serde_json::Value,
    ) -> Result<(), RemoteError> {
        self.send_json(
            "PUT",
            &format!("/api/v1/runs/{ns}/{name}/jobs/{job}"),
            state,
        )
        .map(drop)
    }

    /// `PUT .../branch-check`: the runner's comparison of its run's Pipeline push branches with
    /// the committed `sparkwing.yaml` (`{"inSync": bool, "message"?: ...}`).
    pub fn put_branch_check(
        &self,
        ns: &str,
        name: &str,
        check: &serde_json::Value,
    ) -> Result<(), RemoteError> {
        self.send_json(
            "PUT",
            &format!("/api/v1/runs/{ns}/{name}/branch-check"),
            check,
        )
        .map(drop)
    }

    /// `POST .../logs`: a batch of lines. A hole is [`RemoteError::LogGap`].
    pub fn post_logs(&self, ns: &str, name: &str, lines: &[LogLine]) -> Result<(), RemoteError> {
        self.send_json("POST", &format!("/api/v1/runs/{ns}/{name}/logs"), lines)
            .map(drop)
    }

    /// `POST .../finish`: archive the run and revoke its runner token.
    pub fn finish(
        &self,
        ns: &str,
        name: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), RemoteError> {
        let path = format!("/api/v1/runs/{ns}/{name}/finish");
        match body {
            Some(b) => self.send_json("POST", &path, b),
            None => self.send("POST", &path, None),
        }
        .map(drop)
    }

    /// `POST /api/v1/pools/{ns}/{pool}/claims` with a pool token: the runner token of `run`,
    /// which claimed the warm pod `pod`, and the attempt the claim names.
    pub fn claim_token(
        &self,
        ns: &str,
        pool: &str,
        pod: &str,
        run: &str,
    ) -> Result<(String, u32), RemoteError> {
        #[derive(Deserialize)]
        struct Answer {
            token: String,
            attempt: u32,
        }
        let a: Answer = json_of(
            self.send_json(
                "POST",
                &format!("/api/v1/pools/{ns}/{pool}/claims"),
                &serde_json::json!({"pod": pod, "run": run}),
            )?,
            "the claim answer",
        )?;
        Ok((a.token, a.attempt))
    }

    /// `GET .../logs`: the jobs that have a log.
    pub fn log_jobs(&self, ns: &str, name: &str) -> Result<Vec<String>, RemoteError> {
        #[derive(Deserialize)]
        struct Jobs {
            jobs: Vec<String>,
        }
        let j: Jobs = json_of(
            self.get(&format!("/api/v1/runs/{ns}/{name}/logs"))?,
            "the log's jobs",
        )?;
        Ok(j.jobs)
    }

    /// `GET .../logs?job=J&after=N`: a job's lines after `after`, page after page (the server
    /// answers at most a page, with `"more": true` when lines follow).
    pub fn read_logs(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        after: u64,
    ) -> Result<Vec<LogLine>, RemoteError> {
        #[derive(Deserialize)]
        struct Lines {
            lines: Vec<LogLine>,
            #[serde(default)]
            more: bool,
        }
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let l: Lines = json_of(
                self.get(&format!(
                    "/api/v1/runs/{ns}/{name}/logs?job={}&after={after}",
                    query_escape(job)
                ))?,
                "log lines",
            )?;
            let last = l.lines.last().map(|line| line.seq);
            out.extend(l.lines.into_iter().map(|mut line| {
                line.job = job.to_string();
                line
            }));
            match last {
                // A page that ends on a line must move on; one that does not would loop.
                Some(seq) if l.more && seq > after => after = seq,
                _ => break,
            }
        }
        Ok(out)
    }

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
            }
            if last != before {
                failures = 0;
            }
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
            .stream_agent
            .get(url)
            .header("Authorization", &self.auth())
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", &last.to_string())
            .call()
            .map_err(|e| self.transport(url, e))?;
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
                        let mut l: LogLine =
                            serde_json::from_str(&d).map_err(|e| RemoteError::Decode {
                                what: format!("a log line of job {job}"),
                                message: e.to_string(),
                            })?;
                        l.job = job.to_string();
                        let seq = seq.unwrap_or(l.seq);
                        if seq <= *last {
                            continue;
                        }
                        *last = seq;
                        if on_line(l) == Flow::Stop {
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

    /// `POST /api/v1/admin/tokens`: a new token (its secret is in `token`, shown once).
    pub fn create_token(
        &self,
        principal: &str,
        scopes: &[String],
    ) -> Result<serde_json::Value, RemoteError> {
        json_of(
            self.send_json(
                "POST",
                "/api/v1/admin/tokens",
                &serde_json::json!({ "principal": principal, "scopes": scopes }),
            )?,
            "the new token",
        )
    }

    /// `GET /api/v1/admin/tokens`: every token's record (no secrets).
    pub fn list_tokens(&self) -> Result<Vec<serde_json::Value>, RemoteError> {
        let v: serde_json::Value = json_of(self.get("/api/v1/admin/tokens")?, "the token list")?;
        match v.get("tokens") {
            Some(serde_json::Value::Array(a)) => Ok(a.clone()),
            _ => Err(RemoteError::Decode {
                what: "the token list".into(),
                message: "no `tokens` array".into(),
            }),
        }
    }

    /// `DELETE /api/v1/admin/tokens/{id}`.
    pub fn revoke_token(&self, id: &str) -> Result<(), RemoteError> {
        self.delete(&format!("/api/v1/admin/tokens/{}", query_escape(id)))
            .map(drop)
    }

    /// `GET /metrics` (no token): the Prometheus text.
    pub fn metrics(&self) -> Result<String, RemoteError> {
        let url = self.url("/metrics");
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| self.transport(&url, e))?;
        let mut resp = check(resp)?;
        resp.body_mut()
            .read_to_string()
            .map_err(|e| RemoteError::Decode {
                what: "metrics".into(),
                message: e.to_string(),
            })
    }
}

/// Turn an error status into [`RemoteError`]; pass a success through.
fn check(mut resp: Resp) -> Result<Resp, RemoteError> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let mut text = String::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(64 * 1024)
        .read_to_string(&mut text);
    let body: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let field = |k: &str| {
        body.as_ref()
            .and_then(|b| b.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let code = field("error").unwrap_or_else(|| match status {
        401 => "unauthorized".into(),
        403 => "forbidden".into(),
        404 => "not_found".into(),
        _ => "http_error".into(),
    });
    let mut message = field("message").unwrap_or_else(|| {
        let t = text.trim();
        if t.is_empty() {
            format!("HTTP {status}")
        } else {
            t.chars().take(300).collect()
        }
    });
    if code == "forbidden" {
        if let Some(scope) = field("scope") {
            if !message.contains(&scope) {
                message = format!("missing scope {scope}");
            }
        }
    }
    if code == "log_gap" {
        if let Some((job, expected)) = parse_log_gap(&message) {
            return Err(RemoteError::LogGap { job, expected });
        }
    }
    Err(RemoteError::Status {
        status,
        code,
        message,
    })
}

/// `job build: expected seq 7, got 8; ...` → (`build`, 7).
fn parse_log_gap(message: &str) -> Option<(String, u64)> {
    let rest = message.strip_prefix("job ")?;
    let (job, rest) = rest.split_once(": expected seq ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((job.to_string(), digits.parse().ok()?))
}

fn json_of<T: serde::de::DeserializeOwned>(mut resp: Resp, what: &str) -> Result<T, RemoteError> {
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(JSON_LIMIT)
        .read_to_vec()
        .map_err(|e| RemoteError::Decode {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| RemoteError::Decode {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// Percent-encode a query or path value (unreserved characters pass).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_gap_message_parses() {
        assert_eq!(
            parse_log_gap("job build: expected seq 7, got 8; send the missing lines first"),
            Some(("build".to_string(), 7))
        );
        assert_eq!(parse_log_gap("something else"), None);
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(ApiClient::new("ftp://x", "t").is_err());
        assert!(ApiClient::new("localhost:8080", "t").is_err());
        let c = ApiClient::new("http://127.0.0.1:1/", "t").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
    }

    #[test]
    fn debug_hides_the_token() {
        let c = ApiClient::new("http://127.0.0.1:1", "swt_secret").unwrap();
        assert!(!format!("{c:?}").contains("swt_secret"));
    }

    #[test]
    fn unreachable_names_the_url() {
        let c = ApiClient::new("http://127.0.0.1:1", "swt_secret").unwrap();
        let e = c.whoami().unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("http://127.0.0.1:1"), "{msg}");
        assert!(!msg.contains("swt_secret"), "{msg}");
    }

    #[test]
    fn escape() {
        assert_eq!(query_escape("a b/c"), "a%20b%2Fc");
    }
}
