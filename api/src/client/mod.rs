//! The one blocking client of the Sparkwing API (`docs/api.md`), over `ureq` with rustls:
//! uploads, runs, logs (read and follow), job states, tokens; the CLI, the runner and the
//! end-to-end tests all use it.
//!
//! The bearer token is kept in the client and sent in a header; it is never part of an error
//! message, a `Debug` output or a log line.

mod error;
mod sse;

use std::time::Duration;

use serde::Serialize;
use sparkwing_core::upload_manifest::Manifest;

use crate::wire::{
    ArtifactList, ArtifactPut, ArtifactView, CacheCommit, CacheList, CacheLookup, CachePrune,
    CachePruned, MemoLookup, MemoLookupRequest, MemoPut, MemoRecorded, StoreAnswer,
};
use crate::wire::{
    BlobAnswer, BlobBatchAnswer, BranchCheck, CancelMode, CancelRequest, ClaimAnswer, ClaimRequest,
    CreateTokenRequest, CreatedRun, CreatedToken, FinishRequest, GateAnswer, GateDecisionRequest,
    GroupRequest, GroupStatus, IngestReport, JobStateReport, LogLine, LogPage, RunList, RunView,
    TokenInfo, TokenList, TriggerRequest, UploadAnswer, WhoAmI,
};
use crate::wire::{JobPodRequest, JobPodView};
pub use error::RemoteError;
use error::{check, Resp};
pub use sse::{Flow, StreamEnd};

/// How long to wait for a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, body included (blobs up to 64 MiB compressed).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How many times a GET is sent again after its connection broke ([`connection_broke`]).
const GET_RESENDS: u32 = 2;
/// Longest silence on a log stream: the server sends a keep-alive comment every 15 s.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(45);
/// Most bytes read from a JSON answer.
const JSON_LIMIT: u64 = 64 * 1024 * 1024;
/// Most bytes read from an upload blob (the API's per-file limit).
const BLOB_LIMIT: u64 = 256 * 1024 * 1024;

/// Any answer, error statuses included ([`ApiClient::call`]).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A client for one API base URL and token.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    /// Empty: no `Authorization` header (health, metrics, webhooks).
    token: String,
    /// The runner attempt sent with every call ([`crate::names::ATTEMPT_HEADER`]), if any.
    attempt: Option<u32>,
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

impl ApiClient {
    /// A client for `base_url` (`http://` or `https://`, a trailing `/` is ignored) with
    /// `token` (an empty one sends no `Authorization` header).
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
            attempt: None,
            agent,
            stream_agent,
        })
    }

    /// The same API with another token.
    pub fn with_token(&self, token: &str) -> ApiClient {
        ApiClient {
            token: token.trim().to_string(),
            ..self.clone()
        }
    }

    /// The same API, each call naming runner attempt `attempt` (a runner's client).
    pub fn with_attempt(&self, attempt: u32) -> ApiClient {
        ApiClient {
            attempt: Some(attempt),
            ..self.clone()
        }
    }

    /// The API's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let req = match self.attempt {
            Some(a) => req.header(crate::names::ATTEMPT_HEADER, &a.to_string()),
            None => req,
        };
        if self.token.is_empty() {
            req
        } else {
            req.header("Authorization", &format!("Bearer {}", self.token))
        }
    }

    fn transport(&self, e: ureq::Error) -> RemoteError {
        RemoteError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        }
    }

    /// One request with extra `headers` (a body's `Content-Type` among them), its answer
    /// whatever its status: for callers that look at statuses themselves (tests of the API's
    /// refusals, webhook deliveries).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Answer, RemoteError> {
        let url = self.url(path);
        let resp = match method {
            "GET" | "DELETE" | "HEAD" => {
                let mut req = self.authorized(match method {
                    "GET" => self.agent.get(&url),
                    "HEAD" => self.agent.head(&url),
                    _ => self.agent.delete(&url),
                });
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.call()
            }
            "POST" | "PUT" | "PATCH" => {
                let mut req = self.authorized(match method {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                });
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                match body {
                    Some(b) => req.send(b),
                    None => req.send_empty(),
                }
            }
            other => {
                return Err(RemoteError::InvalidRequest(format!(
                    "method {other:?}: GET, HEAD, DELETE, POST, PUT or PATCH"
                )))
            }
        }
        .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let body = read_limited(resp, BLOB_LIMIT, "the answer")?;
        Ok(Answer { status, body })
    }

    /// A GET, sent again (at most [`GET_RESENDS`] times, on a new connection) when the connection
    /// broke under it: a kept-alive connection the server closed just as it was reused fails the
    /// request without the server having seen it. A GET changes nothing, so sending it again is
    /// safe; a refused or timed-out connection is not retried (the API is not there).
    fn get(&self, path: &str) -> Result<Resp, RemoteError> {
        let url = self.url(path);
        let mut resends = 0;
        let resp = loop {
            match self.authorized(self.agent.get(&url)).call() {
                Ok(resp) => break resp,
                Err(e) if resends < GET_RESENDS && connection_broke(&e) => resends += 1,
                Err(e) => return Err(self.transport(e)),
            }
        };
        check(resp)
    }

    fn delete(&self, path: &str) -> Result<Resp, RemoteError> {
        let resp = self
            .authorized(self.agent.delete(&self.url(path)))
            .call()
            .map_err(|e| self.transport(e))?;
        check(resp)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<Resp, RemoteError> {
        let url = self.url(path);
        let req = self.authorized(match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        });
        let resp = match body {
            Some(b) => req.content_type(content_type).send(b),
            None => req.send_empty(),
        }
        .map_err(|e| self.transport(e))?;
        check(resp)
    }

    fn send_json<T: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: &T,
    ) -> Result<Resp, RemoteError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| RemoteError::decode("the request body", e))?;
        self.send(method, path, "application/json", Some(&bytes))
    }

    /// `GET /api/v1/whoami`.
    pub fn whoami(&self) -> Result<WhoAmI, RemoteError> {
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
    pub fn put_blob(&self, sha256: &str, gzipped: &[u8]) -> Result<BlobAnswer, RemoteError> {
        json_of(
            self.send(
                "PUT",
                &format!("/api/v1/blobs/{sha256}"),
                "application/gzip",
                Some(gzipped),
            )?,
            "the blob answer",
        )
    }

    /// `POST /api/v1/blobs`: many blobs in one gzip stream of `<sha256> <size>\n<content>`
    /// frames. A 404 or 405 means an API from before batches.
    pub fn put_blobs(&self, gzipped: &[u8]) -> Result<BlobBatchAnswer, RemoteError> {
        json_of(
            self.send("POST", "/api/v1/blobs", "application/gzip", Some(gzipped))?,
            "blob batch answer",
        )
    }

    /// `GET /api/v1/uploads/{id}`: the canonical manifest.
    pub fn get_upload(&self, id: &str) -> Result<Manifest, RemoteError> {
        let a: UploadAnswer = json_of(self.get(&format!("/api/v1/uploads/{id}"))?, "upload")?;
        a.manifest
            .ok_or_else(|| RemoteError::decode(format!("upload {id}"), "no `manifest`"))
    }

    /// `GET /api/v1/uploads/{id}/blobs/{sha256}`: the raw (uncompressed) content.
    pub fn get_upload_blob(&self, id: &str, sha256: &str) -> Result<Vec<u8>, RemoteError> {
        let resp = self.get(&format!("/api/v1/uploads/{id}/blobs/{sha256}"))?;
        read_limited(resp, BLOB_LIMIT, &format!("blob {sha256}"))
    }

    /// `GET /api/v1/blobs/{sha256}`: a stored blob's raw content (a chunk of a cache entry or an
    /// artifact).
    pub fn get_blob(&self, sha256: &str) -> Result<Vec<u8>, RemoteError> {
        let resp = self.get(&format!("/api/v1/blobs/{sha256}"))?;
        read_limited(resp, BLOB_LIMIT, &format!("blob {sha256}"))
    }

    /// `GET .../caches`: the entries of the run's cache scope (the run's runner token).
    pub fn run_caches(&self, ns: &str, name: &str) -> Result<CacheList, RemoteError> {
        json_of(
            self.get(&format!("/api/v1/runs/{ns}/{name}/caches"))?,
            "the run's caches",
        )
    }

    /// `GET .../caches/{key}[?fallback=P]`: the cache entry a restore of `key` takes in the
    /// run's cache scope (the run's runner token); marks it used.
    pub fn cache_lookup(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        fallback: Option<&str>,
    ) -> Result<CacheLookup, RemoteError> {
        let mut path = format!("/api/v1/runs/{ns}/{name}/caches/{key}");
        if let Some(p) = fallback {
            path.push_str(&format!("?fallback={}", query_escape(p)));
        }
        json_of(self.get(&path)?, "the cache lookup")
    }

    /// `POST .../caches/{key}`: commit a cache entry whose chunks are stored (the answer says
    /// which are missing otherwise). Over the cache cap: a 413.
    pub fn cache_commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        body: &CacheCommit,
    ) -> Result<StoreAnswer, RemoteError> {
        json_of(
            self.send_json(
                "POST",
                &format!("/api/v1/runs/{ns}/{name}/caches/{key}"),
                body,
            )?,
            "the cache commit",
        )
    }

    /// `GET /api/v1/caches[?namespace=NS]`: the cache entries of cluster runs.
    pub fn list_caches(&self, namespace: Option<&str>) -> Result<CacheList, RemoteError> {
        let path = match namespace {
            Some(ns) => format!("/api/v1/caches?namespace={}", query_escape(ns)),
            None => "/api/v1/caches".to_string(),
        };
        json_of(self.get(&path)?, "the cache list")
    }

    /// `POST /api/v1/caches/prune`: remove cache entries (admin).
    pub fn prune_caches(&self, body: &CachePrune) -> Result<CachePruned, RemoteError> {
        json_of(
            self.send_json("POST", "/api/v1/caches/prune", body)?,
            "the prune answer",
        )
    }

    /// `PUT .../artifacts/{job}/{artifact}`: publish an artifact whose chunks are stored (the
    /// answer says which are missing otherwise).
    pub fn put_artifact(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        artifact: &str,
        body: &ArtifactPut,
    ) -> Result<StoreAnswer, RemoteError> {
        json_of(
            self.send_json(
                "PUT",
                &format!(
                    "/api/v1/runs/{ns}/{name}/artifacts/{}/{artifact}",
                    query_escape(job)
                ),
                body,
            )?,
            "the artifact answer",
        )
    }

    /// `GET .../artifacts/{job}/{artifact}`: an artifact with its manifest.
    pub fn get_artifact(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        artifact: &str,
    ) -> Result<ArtifactView, RemoteError> {
        json_of(
            self.get(&format!(
                "/api/v1/runs/{ns}/{name}/artifacts/{}/{artifact}",
                query_escape(job)
            ))?,
            "the artifact",
        )
    }

    /// `PUT .../memo/{job}`: record a memoized job's success (its input hash and outputs) for
    /// later runs of the run's cache scope.
    pub fn memo_record(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        body: &MemoPut,
    ) -> Result<MemoRecorded, RemoteError> {
        json_of(
            self.send_json(
                "PUT",
                &format!("/api/v1/runs/{ns}/{name}/memo/{}", query_escape(job)),
                body,
            )?,
            "the memo record answer",
        )
    }

    /// `POST .../memo/{job}/lookup`: the newest success of the job with the same input hash
    /// within the TTL; on a hit its artifacts are registered for this run.
    pub fn memo_lookup(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        body: &MemoLookupRequest,
    ) -> Result<MemoLookup, RemoteError> {
        json_of(
            self.send_json(
                "POST",
                &format!("/api/v1/runs/{ns}/{name}/memo/{}/lookup", query_escape(job)),
                body,
            )?,
            "the memo lookup",
        )
    }

    /// `GET .../artifacts`: a run's artifacts.
    pub fn list_artifacts(&self, ns: &str, name: &str) -> Result<ArtifactList, RemoteError> {
        json_of(
            self.get(&format!("/api/v1/runs/{ns}/{name}/artifacts"))?,
            "the artifact list",
        )
    }

    /// `POST /api/v1/runs`: create a PipelineRun.
    pub fn trigger(&self, req: &TriggerRequest) -> Result<CreatedRun, RemoteError> {
        json_of(self.send_json("POST", "/api/v1/runs", req)?, "the new run")
    }

    /// `POST /api/v1/runs/{ns}/{name}/rerun`: a new run of the same pipeline, source, args and
    /// settings as `ns/name` (every job runs again).
    pub fn rerun(&self, ns: &str, name: &str) -> Result<CreatedRun, RemoteError> {
        let path = format!("/api/v1/runs/{ns}/{name}/rerun");
        json_of(
            self.send("POST", &path, "application/json", None)?,
            "the new run",
        )
    }

    /// `GET /api/v1/runs[?namespace=]`: every run, newest first, page after page.
    pub fn list_runs(&self, namespace: Option<&str>) -> Result<Vec<RunView>, RemoteError> {
        let base = match namespace {
            Some(ns) => format!("/api/v1/runs?namespace={}&limit=500", query_escape(ns)),
            None => "/api/v1/runs?limit=500".to_string(),
        };
        // The server answers a page at a time (newest first); follow `next` to the end.
        let mut out = Vec::new();
        let mut path = base.clone();
        loop {
            let page: RunList = json_of(self.get(&path)?, "the run list")?;
            out.extend(page.runs);
            match page.next {
                Some(cursor) => path = format!("{base}&cursor={}", query_escape(&cursor)),
                None => return Ok(out),
            }
        }
    }

    /// `GET /api/v1/runs/{ns}/{name}`: the run, its PipelineRun and job states.
    pub fn get_run(&self, ns: &str, name: &str) -> Result<RunView, RemoteError> {
        json_of(
            self.get(&format!("/api/v1/runs/{ns}/{name}"))?,
            &format!("run {ns}/{name}"),
        )
    }

    /// `POST .../cancel` (`mode`: `Cancelled` when `None`; then no body is sent).
    pub fn cancel_run(
        &self,
        ns: &str,
        name: &str,
        mode: Option<CancelMode>,
    ) -> Result<RunView, RemoteError> {
        let path = format!("/api/v1/runs/{ns}/{name}/cancel");
        let resp = match mode {
            Some(m) => self.send_json("POST", &path, &CancelRequest { mode: Some(m) }),
            None => self.send("POST", &path, "application/json", None),
        }?;
        json_of(resp, &format!("run {ns}/{name}"))
    }

    /// `PUT .../jobs/{job}`: a job's state.
    pub fn put_job_state(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        state: &JobStateReport,
    ) -> Result<(), RemoteError> {
        self.send_json(
            "PUT",
            // A job id may hold `[` `]` (`test[3]`, a fan-out's job): one escaped path segment.
            &format!("/api/v1/runs/{ns}/{name}/jobs/{}", query_escape(job)),
            state,
        )
        .map(drop)
    }

    /// `POST .../job-pods/{job}/{attempt}`: start (or find, when it exists) the own pod of
    /// attempt `attempt` of the placed job `job` (the run's coordinator asks).
    pub fn start_job_pod(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        attempt: u32,
        req: &JobPodRequest,
    ) -> Result<JobPodView, RemoteError> {
        let resp = self.send_json("POST", &job_pod_path(ns, name, job, attempt), req)?;
        json_of(resp, &format!("the pod of job {job}"))
    }

    /// `GET .../job-pods/{job}/{attempt}`: that pod as it is now (`gone` when there is none).
    pub fn job_pod(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        attempt: u32,
    ) -> Result<JobPodView, RemoteError> {
        let resp = self.get(&job_pod_path(ns, name, job, attempt))?;
        json_of(resp, &format!("the pod of job {job}"))
    }

    /// `DELETE .../job-pods/{job}/{attempt}`: delete that pod (absent is fine).
    pub fn delete_job_pod(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        attempt: u32,
    ) -> Result<(), RemoteError> {
        self.delete(&job_pod_path(ns, name, job, attempt)).map(drop)
    }

    /// `POST .../gates/{gate}`: approve or reject a waiting approval gate (or, with the run's
    /// runner token, record its timeout). The decision recorded; a gate already decided, not
    /// waiting or of a finished run is a 409, an unknown gate or run a 404.
    pub fn decide_gate(
        &self,
        ns: &str,
        name: &str,
        gate: &str,
        req: &GateDecisionRequest,
    ) -> Result<GateAnswer, RemoteError> {
        json_of(
            self.send_json(
                "POST",
                &format!("/api/v1/runs/{ns}/{name}/gates/{}", query_escape(gate)),
                req,
            )?,
            "the gate decision",
        )
    }

    /// `GET .../gates/{gate}`: the decision recorded on a gate (`decided` absent: none yet).
    pub fn gate_decision(
        &self,
        ns: &str,
        name: &str,
        gate: &str,
    ) -> Result<GateAnswer, RemoteError> {
        json_of(
            self.get(&format!(
                "/api/v1/runs/{ns}/{name}/gates/{}",
                query_escape(gate)
            ))?,
            "the gate decision",
        )
    }

    /// `POST .../concurrency`: enter the run's concurrency group, look again while it waits, or
    /// renew the slot it holds (the run's runner token). Where the run stands now; a run that
    /// ended, or a renewal whose slot is gone, is a 409.
    pub fn enter_group(
        &self,
        ns: &str,
        name: &str,
        req: &GroupRequest,
    ) -> Result<GroupStatus, RemoteError> {
        json_of(
            self.send_json(
                "POST",
                &format!("/api/v1/runs/{ns}/{name}/concurrency"),
                req,
            )?,
            "the concurrency group answer",
        )
    }

    /// `DELETE .../concurrency`: the run leaves its concurrency group (its slot or place is
    /// free at once); with `job`, that job's attempt leaves the job's own group.
    pub fn leave_group(&self, ns: &str, name: &str, job: Option<&str>) -> Result<(), RemoteError> {
        let path = match job {
            None => format!("/api/v1/runs/{ns}/{name}/concurrency"),
            Some(j) => format!("/api/v1/runs/{ns}/{name}/concurrency?job={j}"),
        };
        self.delete(&path).map(drop)
    }

    /// `PUT .../branch-check`: the runner's comparison of its run's Pipeline push branches with
    /// the committed `sparkwing.yaml`.
    pub fn put_branch_check(
        &self,
        ns: &str,
        name: &str,
        check: &BranchCheck,
    ) -> Result<(), RemoteError> {
        self.send_json(
            "PUT",
            &format!("/api/v1/runs/{ns}/{name}/branch-check"),
            check,
        )
        .map(drop)
    }

    /// `POST .../logs`: a batch of lines. A hole is [`RemoteError::LogGap`].
    pub fn post_logs(
        &self,
        ns: &str,
        name: &str,
        lines: &[LogLine],
    ) -> Result<IngestReport, RemoteError> {
        json_of(
            self.send_json("POST", &format!("/api/v1/runs/{ns}/{name}/logs"), lines)?,
            "the log batch answer",
        )
    }

    /// `POST .../finish`: archive the run and revoke its runner token (an external run's
    /// executor says how it ended in `body`).
    pub fn finish(
        &self,
        ns: &str,
        name: &str,
        body: Option<&FinishRequest>,
    ) -> Result<(), RemoteError> {
        let path = format!("/api/v1/runs/{ns}/{name}/finish");
        match body {
            Some(b) => self.send_json("POST", &path, b),
            None => self.send("POST", &path, "application/json", None),
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
    ) -> Result<ClaimAnswer, RemoteError> {
        json_of(
            self.send_json(
                "POST",
                &format!("/api/v1/pools/{ns}/{pool}/claims"),
                &ClaimRequest {
                    pod: pod.to_string(),
                    run: run.to_string(),
                },
            )?,
            "the claim answer",
        )
    }

    /// `GET .../logs`: the jobs that have a log.
    pub fn log_jobs(&self, ns: &str, name: &str) -> Result<Vec<String>, RemoteError> {
        match json_of(
            self.get(&format!("/api/v1/runs/{ns}/{name}/logs"))?,
            "the log's jobs",
        )? {
            LogPage::Jobs { jobs } => Ok(jobs),
            LogPage::Lines { .. } => Err(RemoteError::decode("the log's jobs", "no `jobs`")),
        }
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
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let page = json_of(
                self.get(&format!(
                    "/api/v1/runs/{ns}/{name}/logs?job={}&after={after}",
                    query_escape(job)
                ))?,
                "log lines",
            )?;
            let LogPage::Lines { lines, more, .. } = page else {
                return Err(RemoteError::decode("log lines", "no `lines`"));
            };
            let last = lines.last().map(|line| line.seq);
            out.extend(lines.into_iter().map(|l| l.of_job(job)));
            match last {
                // A page that ends on a line must move on; one that does not would loop.
                Some(seq) if more && seq > after => after = seq,
                _ => break,
            }
        }
        Ok(out)
    }

    /// `GET .../logs?job=J&tail=N`: a job's last `n` lines (1 to 10,000), read from the end of
    /// the log: what it costs follows `n`, not the log's size.
    pub fn read_log_tail(
        &self,
        ns: &str,
        name: &str,
        job: &str,
        n: usize,
    ) -> Result<Vec<LogLine>, RemoteError> {
        let page = json_of(
            self.get(&format!(
                "/api/v1/runs/{ns}/{name}/logs?job={}&tail={n}",
                query_escape(job)
            ))?,
            "log lines",
        )?;
        let LogPage::Lines { lines, .. } = page else {
            return Err(RemoteError::decode("log lines", "no `lines`"));
        };
        Ok(lines.into_iter().map(|l| l.of_job(job)).collect())
    }

    /// `POST /api/v1/admin/tokens`: a new token (its secret is in `token`, shown once).
    pub fn create_token(
        &self,
        principal: &str,
        scopes: &[String],
    ) -> Result<CreatedToken, RemoteError> {
        json_of(
            self.send_json(
                "POST",
                "/api/v1/admin/tokens",
                &CreateTokenRequest {
                    principal: principal.to_string(),
                    scopes: scopes.to_vec(),
                },
            )?,
            "the new token",
        )
    }

    /// `GET /api/v1/admin/tokens`: every token's record (no secrets).
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, RemoteError> {
        let list: TokenList = json_of(self.get("/api/v1/admin/tokens")?, "the token list")?;
        Ok(list.tokens)
    }

    /// `DELETE /api/v1/admin/tokens/{id}`.
    pub fn revoke_token(&self, id: &str) -> Result<(), RemoteError> {
        self.delete(&format!("/api/v1/admin/tokens/{}", query_escape(id)))
            .map(drop)
    }

    /// `GET /metrics` (no token): the Prometheus text.
    pub fn metrics(&self) -> Result<String, RemoteError> {
        let resp = self
            .agent
            .get(&self.url("/metrics"))
            .call()
            .map_err(|e| self.transport(e))?;
        let bytes = read_limited(check(resp)?, JSON_LIMIT, "metrics")?;
        String::from_utf8(bytes).map_err(|e| RemoteError::decode("metrics", e))
    }
}

fn read_limited(mut resp: Resp, limit: u64, what: &str) -> Result<Vec<u8>, RemoteError> {
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| RemoteError::decode(what, e))
}

fn json_of<T: serde::de::DeserializeOwned>(resp: Resp, what: &str) -> Result<T, RemoteError> {
    let bytes = read_limited(resp, JSON_LIMIT, what)?;
    serde_json::from_slice(&bytes).map_err(|e| RemoteError::decode(what, e))
}

/// The path of the own pod of attempt `attempt` of job `job` (one escaped segment: `test[3]`).
fn job_pod_path(ns: &str, name: &str, job: &str, attempt: u32) -> String {
    format!(
        "/api/v1/runs/{ns}/{name}/job-pods/{}/{attempt}",
        query_escape(job)
    )
}

/// Percent-encode a query or path value (unreserved characters pass).
pub fn query_escape(s: &str) -> String {
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

/// Whether `e` is an established connection breaking (reset, closed, cut short), as opposed to
/// no connection at all (refused, unknown host, connect timeout) or an HTTP-level failure.
fn connection_broke(e: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::Other
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn other_methods_are_refused_before_sending() {
        let c = ApiClient::new("http://127.0.0.1:1", "t").unwrap();
        let e = c.call("BREW", "/", &[], None).unwrap_err();
        assert!(matches!(e, RemoteError::InvalidRequest(_)), "{e:?}");
    }

    /// A server that answers the first request on a kept-alive connection, then closes that
    /// connection when the next request arrives on it (as a server closing an idle connection
    /// does when the client reuses it at that moment), and answers on a new connection.
    #[test]
    fn a_get_on_a_connection_the_server_closed_is_sent_again() {
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpListener;

        fn read_request(r: &mut BufReader<std::net::TcpStream>) -> bool {
            let mut line = String::new();
            let mut any = false;
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return false,
                    Ok(_) if line == "\r\n" => return any,
                    Ok(_) => any = true,
                }
            }
        }
        let answer = |w: &mut std::net::TcpStream| {
            let body = r#"{"principal":"p","token":"t","scopes":[]}"#;
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut connections = 0;
            // First connection: one answer, then the second request is read and dropped.
            let (first, _) = listener.accept().unwrap();
            connections += 1;
            let mut w = first.try_clone().unwrap();
            let mut r = BufReader::new(first);
            assert!(read_request(&mut r));
            answer(&mut w);
            assert!(read_request(&mut r));
            drop(w);
            drop(r);
            // The client's second try comes on a new connection.
            let (second, _) = listener.accept().unwrap();
            connections += 1;
            let mut w = second.try_clone().unwrap();
            let mut r = BufReader::new(second);
            assert!(read_request(&mut r));
            answer(&mut w);
            connections
        });
        let c = ApiClient::new(&url, "t").unwrap();
        assert_eq!(c.whoami().unwrap().principal, "p");
        assert_eq!(c.whoami().unwrap().principal, "p");
        assert_eq!(server.join().unwrap(), 2);
    }

    #[test]
    fn escape() {
        assert_eq!(query_escape("a b/c"), "a%20b%2Fc");
        assert_eq!(query_escape("test[3]"), "test%5B3%5D");
    }

    /// The request line of the one request `call` makes to a loopback server answering 204.
    fn request_line_of(call: impl FnOnce(&ApiClient)) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::net::TcpListener;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            let mut request_line = String::new();
            r.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body).unwrap();
            let _ = write!(w, "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            request_line
        });
        call(&ApiClient::new(&url, "t").unwrap());
        server.join().unwrap()
    }

    /// A fan-out's job id (`test[3]`) reaches the API as one percent-encoded path segment.
    #[test]
    fn a_job_state_put_escapes_the_job_id() {
        let line = request_line_of(|c| {
            let state: JobStateReport = serde_json::from_value(serde_json::json!({
                "state": "running", "attempt": 1
            }))
            .unwrap();
            c.put_job_state("ci", "run-1", "test[3]", &state).unwrap();
        });
        assert_eq!(
            line,
            "PUT /api/v1/runs/ci/run-1/jobs/test%5B3%5D HTTP/1.1\r\n"
        );
    }

    /// So do the artifacts of a fan-out's job, published and read through the API.
    #[test]
    fn artifact_paths_escape_the_job_id() {
        // The 204 is no artifact: only the request matters here.
        let line = request_line_of(|c| drop(c.get_artifact("ci", "run-1", "test[3]", "report")));
        assert_eq!(
            line,
            "GET /api/v1/runs/ci/run-1/artifacts/test%5B3%5D/report HTTP/1.1\r\n"
        );
    }
}
