//! Log ingest from runners (sequence-numbered, idempotent) and reading/following logs.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use sparkwing_api::wire::{LogLine, LogPage};

use crate::api::auth::{Principal, Scope};
use crate::api::runs::is_terminal;
use crate::api::storage::{IngestError, IngestReport, LogRange, LogRecord};
use crate::api::{
    blocking, check_job_name, check_object_name, read_json, ApiError, ApiMetrics, ApiState,
};

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Gap { job, expected, got } => ApiError::LogGap { job, expected, got },
            IngestError::Storage(s) => ApiError::Storage(s),
        }
    }
}

fn check_run(ns: &str, name: &str) -> Result<(), ApiError> {
    check_object_name("namespace", ns)?;
    check_object_name("run name", name)
}

pub async fn ingest(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<Json<IngestReport>, ApiError> {
    check_run(&ns, &name)?;
    p.require(Scope::run(&ns, &name))?;
    let batch: Vec<LogLine> = read_json(body, st.config.limits.log_body, "log batch").await?;
    let mut records = Vec::with_capacity(batch.len());
    for l in batch {
        check_job_name(&l.job)?;
        if l.seq == 0 {
            return Err(ApiError::BadRequest(format!(
                "job {}: seq starts at 1",
                l.job
            )));
        }
        records.push((
            l.job,
            LogRecord {
                seq: l.seq,
                ts: l.ts,
                stream: l.stream,
                line: l.line,
            },
        ));
    }
    let storage = st.storage.clone();
    let report = blocking(move || storage.append_logs(&ns, &name, records)).await?;
    if report.accepted > 0 {
        ApiMetrics::add(&st.metrics.log_lines, report.accepted);
        st.log_notify.notify_waiters();
    }
    Ok(Json(report))
}

#[derive(Deserialize, Debug)]
pub struct LogQuery {
    /// The job whose log to read; without it, `read` lists the jobs that have a log.
    #[serde(default)]
    pub job: Option<String>,
    /// Only lines with a greater seq.
    #[serde(default)]
    pub after: Option<u64>,
    /// Most lines in the answer (1 to [`MAX_LOG_PAGE_LINES`], the default).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Most lines of one log read (and the default): a client reads on with `after` while `more`.
pub const MAX_LOG_PAGE_LINES: usize = 10_000;
/// About the most bytes of log lines in one read (a page stops at the line that passes it).
pub const MAX_LOG_PAGE_BYTES: usize = 4 << 20;
/// Lines a follower reads at a time.
const FOLLOW_PAGE_LINES: usize = 1_000;

pub async fn read(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    check_run(&ns, &name)?;
    p.require_read_run(&ns, &name)?;
    let storage = st.storage.clone();
    match q.job {
        None => {
            let jobs = blocking(move || storage.log_jobs(&ns, &name)).await?;
            Ok(Json(LogPage::Jobs { jobs }))
        }
        Some(job) => {
            check_job_name(&job)?;
            let after = q.after.unwrap_or(0);
            let limit = match q.limit {
                None => MAX_LOG_PAGE_LINES,
                Some(n @ 1..=MAX_LOG_PAGE_LINES) => n,
                Some(n) => {
                    return Err(ApiError::BadRequest(format!(
                        "limit {n}: between 1 and {MAX_LOG_PAGE_LINES} lines"
                    )))
                }
            };
            let j = job.clone();
            let page = blocking(move || {
                let range = LogRange {
                    after,
                    offset: None,
                    max_lines: limit,
                    max_bytes: MAX_LOG_PAGE_BYTES,
                };
                storage.read_log_page(&ns, &name, &j, range)
            })
            .await?;
            Ok(Json(LogPage::Lines {
                job,
                lines: page.lines,
                more: page.more,
            }))
        }
    }
}

/// Whether the run is over (or gone): a follower then drains and ends.
async fn run_over(st: &ApiState, ns: &str, name: &str) -> bool {
    match st.runs.get(ns, name).await {
        Ok(Some(run)) => is_terminal(&run),
        Ok(None) => true,
        // Unknown: keep following.
        Err(_) => false,
    }
}

struct Follow {
    st: ApiState,
    ns: String,
    name: String,
    job: String,
    after: u64,
    /// Where the next read starts (`None`: the first, found through the log's index).
    offset: Option<u64>,
    queue: VecDeque<Event>,
    draining: bool,
    done: bool,
}

impl Follow {
    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done {
                return None;
            }
            let storage = self.st.storage.clone();
            let (ns, name, job, offset) = (
                self.ns.clone(),
                self.name.clone(),
                self.job.clone(),
                self.offset,
            );
            let after = self.after;
            match blocking(move || {
                let range = LogRange {
                    after,
                    offset,
                    max_lines: FOLLOW_PAGE_LINES,
                    max_bytes: MAX_LOG_PAGE_BYTES,
                };
                storage.read_log_page(&ns, &name, &job, range)
            })
            .await
            {
                Ok(page) => {
                    self.offset = Some(page.offset);
                    for l in page.lines {
                        if l.seq <= self.after {
                            continue;
                        }
                        self.after = l.seq;
                        let data = serde_json::to_string(&l).unwrap_or_default();
                        self.queue
                            .push_back(Event::default().id(l.seq.to_string()).data(data));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "following a log");
                    self.queue.push_back(
                        Event::default()
                            .event("error")
                            .data("reading the log failed"),
                    );
                    self.done = true;
                    continue;
                }
            }
            if !self.queue.is_empty() {
                continue;
            }
            if self.draining {
                self.queue
                    .push_back(Event::default().event("end").data("{}"));
                self.done = true;
                continue;
            }
            if run_over(&self.st, &self.ns, &self.name).await {
                // One more read for lines written before the run ended.
                self.draining = true;
                continue;
            }
            let notify = self.st.log_notify.clone();
            let _ = tokio::time::timeout(self.st.config.follow_poll, notify.notified()).await;
        }
    }
}

/// `GET .../logs/stream?job=J[&after=N]`: server-sent events, one per line (`id` = seq, data =
/// the line's JSON), from the line after `Last-Event-ID` (or `after`), then live; an `end` event
/// once the run is over and every line was sent.
pub async fn follow(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    check_run(&ns, &name)?;
    p.require_read_run(&ns, &name)?;
    let job = q
        .job
        .ok_or_else(|| ApiError::BadRequest("the job query parameter is required".into()))?;
    check_job_name(&job)?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be a line's seq".into()))?,
        ),
    };
    let after = last_event_id.or(q.after).unwrap_or(0);
    let exists = st.runs.get(&ns, &name).await?.is_some() || {
        let storage = st.storage.clone();
        let (ns, name) = (ns.clone(), name.clone());
        blocking(move || Ok::<_, ApiError>(storage.is_archived(&ns, &name))).await?
    };
    if !exists {
        return Err(ApiError::NotFound(format!("run {ns}/{name} not found")));
    }
    let keep_alive = st.config.keep_alive;
    let state = Follow {
        st,
        ns,
        name,
        job,
        after,
        offset: None,
        queue: VecDeque::new(),
        draining: false,
        done: false,
    };
    let stream = futures::stream::unfold(state, Follow::next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}
