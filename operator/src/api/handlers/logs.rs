//! Log ingest from runners (sequence-numbered, idempotent) and reading/following logs.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use sparkwing_api::wire::{LogLine, LogPage};

use sparkwing_api::wire::{IngestReport, LogRecord};
use sparkwing_state::{LogKey, StateError};

use crate::api::auth::{Principal, Scope};
use crate::api::recent_logs::Recent;
use crate::api::{check_job_name, check_object_name, read_json, ApiError, ApiMetrics, ApiState};
use crate::runs::backend::is_terminal;

fn check_run(ns: &str, name: &str) -> Result<(), ApiError> {
    check_object_name("namespace", ns)?;
    check_object_name("run name", name)
}

fn stored_stream(s: sparkwing_api::wire::LogStream) -> sparkwing_state::LogStream {
    match s {
        sparkwing_api::wire::LogStream::Stdout => sparkwing_state::LogStream::Stdout,
        sparkwing_api::wire::LogStream::Stderr => sparkwing_state::LogStream::Stderr,
    }
}

/// A stored line as the API answers it.
fn record(l: sparkwing_state::LogLine) -> LogRecord {
    LogRecord {
        seq: l.seq,
        ts: l.ts,
        stream: match l.stream {
            sparkwing_state::LogStream::Stdout => sparkwing_api::wire::LogStream::Stdout,
            sparkwing_state::LogStream::Stderr => sparkwing_api::wire::LogStream::Stderr,
        },
        line: l.line,
    }
}

/// The state layer's gap as the API's 409.
fn gap(e: StateError) -> ApiError {
    match e {
        StateError::LogGap { job, expected, got } => ApiError::LogGap { job, expected, got },
        other => ApiError::State(other),
    }
}

/// Take a batch: per job, through the state layer's ingest (append, then the log index, under
/// the job's cap). Every job's seqs are checked against its stored log first, so a gap in any
/// job refuses the whole batch before anything of it is stored.
pub async fn ingest(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<Json<IngestReport>, ApiError> {
    check_run(&ns, &name)?;
    p.require(Scope::run(&ns, &name))?;
    let batch: Vec<LogLine> = read_json(body, st.config.limits.log_body, "log batch").await?;
    let mut by_job: BTreeMap<String, Vec<sparkwing_state::LogLine>> = BTreeMap::new();
    for l in batch {
        check_job_name(&l.job)?;
        if l.seq == 0 {
            return Err(ApiError::BadRequest(format!(
                "job {}: seq starts at 1",
                l.job
            )));
        }
        by_job
            .entry(l.job)
            .or_default()
            .push(sparkwing_state::LogLine {
                seq: l.seq,
                ts: l.ts,
                stream: stored_stream(l.stream),
                line: l.line,
                truncated: false,
            });
    }
    // Each job's index as read for the check, handed on to its ingest.
    let mut indexes = BTreeMap::new();
    for (job, lines) in by_job.iter_mut() {
        lines.sort_by_key(|l| l.seq);
        let key = LogKey::new(&ns, &name, job);
        let index = st.store.meta.log_index(&key).await?;
        indexes.insert(job.clone(), index);
        if index.as_ref().is_some_and(|i| i.capped) {
            continue;
        }
        // Where the log ends by its index (one query); a batch that seems to leave a hole after
        // it is checked against the content store, which the index may lag by one crashed batch.
        let indexed = index.map_or(0, |i| i.next_seq.saturating_sub(1));
        if let Err(gap) = follows_on(job, indexed, lines) {
            let stored = st.store.content.log_last_seq(&key).await?;
            if stored == indexed {
                return Err(gap);
            }
            follows_on(job, stored, lines)?;
        }
    }
    let mut report = IngestReport::default();
    let mut stored = Vec::new();
    for (job, lines) in by_job {
        let key = LogKey::new(&ns, &name, &job);
        let index = indexes.remove(&job).flatten();
        let taken = sparkwing_state::ingest_lines_at(
            st.store.meta.as_ref(),
            st.store.content.as_ref(),
            &key,
            index,
            lines,
            st.config.limits.log_job_bytes,
        )
        .await
        .map_err(gap)?;
        report.accepted += taken.report.accepted;
        report.duplicates += taken.report.duplicates;
        report.dropped += taken.report.dropped;
        if !taken.stored.is_empty() {
            st.recent_logs.put(&key, &taken.stored);
            stored.push((key, taken.stored));
        }
    }
    if !stored.is_empty() {
        ApiMetrics::add(&st.metrics.log_lines, report.accepted);
        st.log_notify.notify_waiters();
        // Followers on other replicas: told through the feed. The lines are durable already, so
        // a failure here costs those followers a poll, not a line.
        for (key, lines) in &stored {
            if let Err(e) = st.store.meta.publish_log_lines(key, lines).await {
                tracing::warn!(job = %key.job, error = %e, "publishing log lines to the log feed");
            }
        }
    }
    Ok(Json(report))
}

/// Whether `lines` (ascending) follow on from a log whose last seq is `last`: duplicates at or
/// below it, then no hole.
fn follows_on(job: &str, last: u64, lines: &[sparkwing_state::LogLine]) -> Result<(), ApiError> {
    let mut expected = last + 1;
    for l in lines {
        if l.seq < expected {
            continue;
        }
        if l.seq != expected {
            return Err(ApiError::LogGap {
                job: job.to_string(),
                expected,
                got: l.seq,
            });
        }
        expected += 1;
    }
    Ok(())
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
    /// Only the last N lines (1 to [`MAX_LOG_PAGE_LINES`]); not with `after` or `limit`.
    #[serde(default)]
    pub tail: Option<usize>,
}

/// Most lines of one log read (and the default): a client reads on with `after` while `more`.
pub const MAX_LOG_PAGE_LINES: usize = 10_000;
/// About the most bytes of log lines in one read (a page stops at the line that passes it).
pub const MAX_LOG_PAGE_BYTES: usize = 4 << 20;
/// Lines a follower reads at a time.
const FOLLOW_PAGE_LINES: usize = 1_000;

/// One page of a job's log after `after`: at most `limit` lines and about `max_bytes` of them;
/// `more` when lines follow.
async fn read_page(
    st: &ApiState,
    key: &LogKey,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<LogRecord>, bool), ApiError> {
    let (lines, more) = read_stored(st, key, after, limit, max_bytes).await?;
    Ok((lines.into_iter().map(record).collect(), more))
}

/// [`read_page`] as stored.
async fn read_stored(
    st: &ApiState,
    key: &LogKey,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<sparkwing_state::LogLine>, bool), ApiError> {
    // One line past the page says whether more follow.
    let mut lines = st
        .store
        .content
        .read_log_after(key, after, limit + 1)
        .await?;
    let mut more = lines.len() > limit;
    lines.truncate(limit);
    let mut bytes = 0usize;
    let mut keep = lines.len();
    for (i, l) in lines.iter().enumerate() {
        if bytes >= max_bytes {
            keep = i;
            more = true;
            break;
        }
        bytes += l.line.len() + l.ts.len() + 64;
    }
    lines.truncate(keep);
    Ok((lines, more))
}

/// The lines after `after` that a follower of `key` sends next (at most `limit`): the replica's
/// recent lines when they hold the next one; none when they end at `after` and the follower was
/// woken by a notification (the line it was told of is there, so nothing newer is stored); else
/// the store, through the log index (one indexed query says whether any line follows, so the
/// content store is read only then) or, while `draining` (the run is over: the end is the content
/// store's), the content store itself. Both followers use it: the API's and the dashboard's.
pub(crate) async fn follow_lines(
    st: &ApiState,
    key: &LogKey,
    after: u64,
    limit: usize,
    woken: bool,
    draining: bool,
) -> Result<Vec<sparkwing_state::LogLine>, ApiError> {
    let recent = if draining {
        Recent::Unknown
    } else {
        st.recent_logs.after(key, after, limit)
    };
    match recent {
        Recent::Lines(lines) => return Ok(lines),
        Recent::UpToDate if woken => return Ok(Vec::new()),
        Recent::UpToDate | Recent::Unknown => {}
    }
    if !draining {
        match st.store.meta.log_index(key).await? {
            Some(index) if index.next_seq.saturating_sub(1) <= after => return Ok(Vec::new()),
            // No index (a log written before it existed), or lines follow: read.
            _ => {}
        }
    }
    st.metrics.log_follow_store_reads.inc();
    Ok(read_stored(st, key, after, limit, MAX_LOG_PAGE_BYTES)
        .await?
        .0)
}

/// The last `n` lines of a job's log, read from its end, at most about `max_bytes` of them (the
/// newest kept).
async fn tail_page(
    st: &ApiState,
    key: &LogKey,
    n: usize,
    max_bytes: usize,
) -> Result<Vec<LogRecord>, ApiError> {
    // The log index says where the acknowledged lines end. Reading the `n` before that end lets
    // the content store answer from the segments it knows, without listing an object store's
    // segments again when nothing was appended since (a tail on S3 was a listing and a GET).
    let mut lines = match st.store.meta.log_index(key).await? {
        Some(index) if index.next_seq > 1 => {
            let end = index.next_seq - 1;
            let after = end.saturating_sub(n as u64);
            st.store
                .content
                .read_log_after(key, after, (end - after) as usize)
                .await?
        }
        _ => st.store.content.read_log_tail(key, n).await?,
    };
    let mut bytes = 0usize;
    let keep_from = lines
        .iter()
        .rposition(|l| {
            bytes += l.line.len() + l.ts.len() + 64;
            bytes > max_bytes
        })
        .map_or(0, |i| i + 1);
    Ok(lines.drain(keep_from..).map(record).collect())
}

pub async fn read(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    check_run(&ns, &name)?;
    p.require_read_run(&ns, &name)?;
    match q.job {
        None => {
            let jobs = st
                .store
                .meta
                .log_jobs(&sparkwing_state::RunKey::new(&ns, &name))
                .await?;
            Ok(Json(LogPage::Jobs { jobs }))
        }
        Some(job) => {
            check_job_name(&job)?;
            if let Some(n) = q.tail {
                if q.after.is_some() || q.limit.is_some() {
                    return Err(ApiError::BadRequest(
                        "tail reads the last lines: give it without after or limit".into(),
                    ));
                }
                if !(1..=MAX_LOG_PAGE_LINES).contains(&n) {
                    return Err(ApiError::BadRequest(format!(
                        "tail {n}: between 1 and {MAX_LOG_PAGE_LINES} lines"
                    )));
                }
                let key = LogKey::new(&ns, &name, &job);
                let lines = tail_page(&st, &key, n, MAX_LOG_PAGE_BYTES).await?;
                return Ok(Json(LogPage::Lines {
                    job,
                    lines,
                    more: false,
                }));
            }
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
            let key = LogKey::new(&ns, &name, &job);
            let (lines, more) = read_page(&st, &key, after, limit, MAX_LOG_PAGE_BYTES).await?;
            Ok(Json(LogPage::Lines { job, lines, more }))
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
    /// The last seq sent: reads continue after it (by seq, on any replica).
    after: u64,
    queue: VecDeque<Event>,
    draining: bool,
    done: bool,
    /// When the run was last looked up (a Kubernetes read: at most every [`RUN_CHECK`]).
    run_checked: Option<tokio::time::Instant>,
    /// Woken by a notification (lines ingested here or told by the feed), not by the poll's
    /// timer: the replica's recent lines then answer without a query when they are up to date.
    woken: bool,
    /// Store reads failed in a row on an outage (the pause before the next grows with it).
    outage: u32,
}

/// How often a follower waiting for lines asks whether the run is over.
const RUN_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest pause between a follower's reads while its store is away.
const OUTAGE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);

impl Follow {
    fn send(&mut self, lines: Vec<LogRecord>) {
        for l in lines {
            if l.seq <= self.after {
                continue;
            }
            self.after = l.seq;
            let data = serde_json::to_string(&l).unwrap_or_default();
            self.queue
                .push_back(Event::default().id(l.seq.to_string()).data(data));
        }
    }

    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done {
                return None;
            }
            // Listening before looking: a line ingested between the look and the wait still
            // wakes this follower.
            let notify = self.st.log_notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let key = LogKey::new(&self.ns, &self.name, &self.job);
            let read = follow_lines(
                &self.st,
                &key,
                self.after,
                FOLLOW_PAGE_LINES,
                self.woken,
                self.draining,
            )
            .await
            .map(|lines| lines.into_iter().map(record).collect());
            match read {
                Ok(lines) => {
                    self.outage = 0;
                    self.send(lines);
                }
                Err(e) if e.retryable() => {
                    // The store is away: keep the stream, try again after a pause that grows.
                    self.outage += 1;
                    self.st.metrics.log_follow_retries.inc();
                    tracing::warn!(error = %e, job = %self.job, "following a log: the store is away; trying again");
                    let pause = (self.st.config.follow_poll * self.outage).min(OUTAGE_BACKOFF_MAX);
                    tokio::time::sleep(pause).await;
                    continue;
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
            let check = self.run_checked.is_none_or(|at| at.elapsed() >= RUN_CHECK);
            if check {
                self.run_checked = Some(tokio::time::Instant::now());
            }
            if check && run_over(&self.st, &self.ns, &self.name).await {
                // One more read for lines written before the run ended.
                self.draining = true;
                continue;
            }
            // Until a line, the next poll, or the next look at the run, whichever comes first.
            let next_check = self
                .run_checked
                .map_or(RUN_CHECK, |at| RUN_CHECK.saturating_sub(at.elapsed()));
            let wait = self.st.config.follow_poll.min(next_check);
            self.woken = tokio::time::timeout(wait, notified).await.is_ok();
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
    let exists =
        st.runs.get(&ns, &name).await?.is_some() || st.store.archived(&ns, &name).await?.is_some();
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
        queue: VecDeque::new(),
        draining: false,
        done: false,
        run_checked: None,
        woken: false,
        outage: 0,
    };
    let stream = futures::stream::unfold(state, Follow::next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}
