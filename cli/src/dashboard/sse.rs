//! Live streams (server-sent events).
//!
//! - Run lists and run pages are re-read when the watcher reports a commit, and sent again only
//!   when what they show changed.
//! - Job logs are tailed from their JSONL file every [`POLL`]; each line's event id is its `seq`,
//!   so a client that reconnects with `Last-Event-ID` (or `?after=N`) resumes after that line.
//!
//! Every stream sends a keep-alive comment every 15 s and ends once what it follows is finished.

use super::api::{self, ApiError};
use super::{pages, AppState, POLL};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use serde_json::json;
use sparkwing_engine::home::Home;
use sparkwing_engine::job_log::LogRecord;
use sparkwing_engine::now_ms;
use sparkwing_engine::store::{JobRecord, RunRecord, Store, StoreError};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

type Events = BoxStream<'static, Result<Event, Infallible>>;

/// Re-read at least this often even without a commit (durations of live runs move on).
const REFRESH: Duration = Duration::from_secs(2);
/// At most this many log lines in one `logs` event of the page stream.
const LOG_BATCH: usize = 500;

fn sse(events: Events) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// One reading of something a stream follows.
struct Snapshot {
    /// Sent again only when this changes.
    key: String,
    event: Event,
    /// Nothing more will change: the stream ends after this.
    done: bool,
}

type Compute = Arc<dyn Fn(&Store) -> Result<Option<Snapshot>, StoreError> + Send + Sync>;

/// Re-run `compute` on every commit (and every [`REFRESH`]); send its event when its key
/// changed; end when it says done, or when it finds nothing (`None`).
fn watch(state: AppState, compute: Compute) -> Events {
    struct St {
        state: AppState,
        compute: Compute,
        last: Option<String>,
        finished: bool,
    }
    let st = St {
        state,
        compute,
        last: None,
        finished: false,
    };
    stream::unfold(st, |mut st| async move {
        loop {
            if st.finished {
                return None;
            }
            st.state.changes.borrow_and_update();
            let f = st.compute.clone();
            match st.state.db.read(move |s| f(s)).await {
                Ok(Some(snap)) => {
                    if st.last.as_deref() != Some(snap.key.as_str()) {
                        st.last = Some(snap.key);
                        st.finished = snap.done;
                        return Some((Ok(snap.event), st));
                    }
                    if snap.done {
                        return None;
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    // Reported once; the stream goes on (a busy or briefly locked store recovers).
                    let msg = e.to_string().replace(['\r', '\n'], " ");
                    if st.last.as_deref() != Some(msg.as_str()) {
                        st.last = Some(msg.clone());
                        return Some((Ok(Event::default().event("problem").data(msg)), st));
                    }
                }
            }
            tokio::select! {
                r = st.state.changes.changed() => if r.is_err() { tokio::time::sleep(REFRESH).await },
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    })
    .boxed()
}

fn json_event(name: &str, v: &serde_json::Value) -> Event {
    Event::default().event(name).data(v.to_string())
}

/// The runs of a list, as the API stream sends them.
fn runs_compute(q: sparkwing_engine::store::dashboard_queries::RunQuery) -> Compute {
    Arc::new(move |s: &Store| {
        let runs = s.query_runs(&q)?;
        let now = now_ms();
        let v = json!({ "runs": runs.iter().map(|r| api::run_json(r, now)).collect::<Vec<_>>() });
        let key = serde_json::to_string(&runs).unwrap_or_default();
        Ok(Some(Snapshot {
            key,
            event: json_event("runs", &v),
            done: false,
        }))
    })
}

/// `GET /api/runs/stream`: `runs` events with the list (same filters as `/api/runs`).
pub async fn api_runs_stream(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = api::run_query(&params)?;
    Ok(sse(watch(state, runs_compute(q))))
}

/// `GET /ui/runs/stream`: the runs page's list, as HTML, whenever it changed.
pub async fn ui_runs_stream(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = api::run_query(&params)?;
    let compute: Compute = Arc::new(move |s: &Store| {
        let runs = s.query_runs(&q)?;
        let any = !runs.is_empty() || s.count_runs(&Default::default())? > 0;
        let key = serde_json::to_string(&(&runs, any)).unwrap_or_default();
        let html = pages::runs_list_html(&runs, any, &q, now_ms());
        Ok(Some(Snapshot {
            key,
            event: json_event("list", &json!({ "html": html })),
            done: false,
        }))
    });
    Ok(sse(watch(state, compute)))
}

fn run_key(run: &RunRecord, jobs: &[JobRecord]) -> String {
    // While the run is live its durations and timeline move: send at most once a second.
    let tick = if run.status.is_terminal() {
        0
    } else {
        now_ms() / 1000
    };
    serde_json::to_string(&(run, jobs, tick)).unwrap_or_default()
}

/// `GET /api/runs/{id}/stream`: `run` events (the run with its jobs) until it finishes.
pub async fn api_run_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = api::find_run(&state, &id).await?;
    let rid = run.id.clone();
    let compute: Compute = Arc::new(move |s: &Store| {
        let Some(run) = s.get_run(&rid)? else {
            return Ok(None);
        };
        let jobs = s.jobs(&rid)?;
        let v = api::run_detail_json(&run, &jobs, now_ms());
        Ok(Some(Snapshot {
            key: run_key(&run, &jobs),
            event: json_event("run", &v),
            done: run.status.is_terminal(),
        }))
    });
    Ok(sse(watch(state, compute)))
}

fn last_event_id(headers: &HeaderMap, params: &HashMap<String, String>) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| params.get("after").and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// `GET /ui/runs/{id}/stream?job=J`: the run page's live parts. `view` events carry the HTML of
/// the run's sections; `logs` events (id = last seq) carry batches of job `J`'s log lines, and
/// `log-end` says that job is finished; `done` says nothing more will come.
pub async fn ui_run_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = api::find_run(&state, &id).await?;
    let rid = run.id.clone();
    let selected = params.get("job").cloned();
    let sel = selected.clone();
    let compute: Compute = Arc::new(move |s: &Store| {
        let Some(run) = s.get_run(&rid)? else {
            return Ok(None);
        };
        let jobs = s.jobs(&rid)?;
        let gates = s.gates(&rid)?;
        let v = pages::run_sections(&run, &jobs, &gates, sel.as_deref(), now_ms());
        Ok(Some(Snapshot {
            key: run_key(&run, &jobs),
            event: json_event("view", &v),
            done: run.status.is_terminal(),
        }))
    });
    let view = watch(state.clone(), compute);
    let jobs = state
        .db
        .read({
            let rid = run.id.clone();
            move |s| s.jobs(&rid)
        })
        .await
        .map_err(ApiError::internal)?;
    let logs: Events = match selected.filter(|j| jobs.iter().any(|x| &x.job_id == j)) {
        Some(job) => {
            let after = last_event_id(&headers, &params);
            tail(state, run, job, after)
                .map(|item| {
                    Ok(match item {
                        TailItem::Lines(recs) => {
                            let last = recs.last().map(|r| r.seq).unwrap_or(0);
                            Event::default()
                                .event("logs")
                                .id(last.to_string())
                                .data(serde_json::to_string(&recs).unwrap_or_default())
                        }
                        TailItem::End(job) => json_event(
                            "log-end",
                            &json!({"job": job.job_id, "state": job.state, "reason": job.reason}),
                        ),
                    })
                })
                .boxed()
        }
        None => stream::empty().boxed(),
    };
    // Both end when finished; then one `done` tells the page to stop listening (an ended stream
    // would otherwise be reopened by the browser).
    let merged = stream::select(view, logs)
        .chain(stream::once(async {
            Ok(Event::default().event("done").data("{}"))
        }))
        .boxed();
    Ok(sse(merged))
}

/// `GET /api/runs/{id}/jobs/{job}/logs/stream`: one `log` event per line (id = seq), resuming
/// after `Last-Event-ID` or `?after=N`; an `end` event with the job's final state when the job is
/// finished and its log fully sent.
pub async fn api_log_stream(
    State(state): State<AppState>,
    Path((id, job)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (run, job) = api::find_job(&state, &id, &job).await?;
    let after = last_event_id(&headers, &params);
    let events = tail(state, run, job.job_id, after)
        .flat_map(|item| {
            let evs: Vec<Result<Event, Infallible>> = match item {
                TailItem::Lines(recs) => recs
                    .iter()
                    .map(|r| {
                        Ok(Event::default()
                            .event("log")
                            .id(r.seq.to_string())
                            .data(serde_json::to_string(r).unwrap_or_default()))
                    })
                    .collect(),
                TailItem::End(job) => vec![Ok(json_event(
                    "end",
                    &json!({"job": job.job_id, "state": job.state, "reason": job.reason, "exit_code": job.exit_code}),
                ))],
            };
            stream::iter(evs)
        })
        .boxed();
    Ok(sse(events))
}

pub enum TailItem {
    Lines(Vec<LogRecord>),
    End(JobRecord),
}

/// Reads new complete lines of a growing JSONL file.
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    after: u64,
}

impl LogTail {
    pub fn new(path: PathBuf, after: u64) -> LogTail {
        LogTail {
            path,
            offset: 0,
            partial: Vec::new(),
            after,
        }
    }

    /// The records written since the last call (those with `seq` after the resume point).
    pub fn read_new(&mut self) -> Vec<LogRecord> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        let text = String::from_utf8_lossy(&complete);
        let recs: Vec<LogRecord> = sparkwing_engine::job_log::parse(&text)
            .into_iter()
            .filter(|r| r.seq > self.after)
            .collect();
        if let Some(last) = recs.last() {
            self.after = last.seq;
        }
        recs
    }
}

/// Follow one job's log from `after`: batches of new lines as they are written, then `End` once
/// the job is finished and every line was sent.
fn tail(
    state: AppState,
    run: RunRecord,
    job: String,
    after: u64,
) -> impl Stream<Item = TailItem> + Send + 'static {
    struct St {
        state: AppState,
        run_id: String,
        job: String,
        tail: LogTail,
        pending: Vec<LogRecord>,
        finished: Option<JobRecord>,
        done: bool,
        since_check: Duration,
    }
    let path = Home::job_log(std::path::Path::new(&run.log_dir), &job);
    let st = St {
        state,
        run_id: run.id,
        job,
        tail: LogTail::new(path, after),
        pending: Vec::new(),
        finished: None,
        done: false,
        since_check: Duration::MAX,
    };
    stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if st.pending.is_empty() {
                st.pending = st.tail.read_new();
            }
            if !st.pending.is_empty() {
                let n = st.pending.len().min(LOG_BATCH);
                let batch: Vec<LogRecord> = st.pending.drain(..n).collect();
                return Some((TailItem::Lines(batch), st));
            }
            if let Some(job) = st.finished.take() {
                st.done = true;
                return Some((TailItem::End(job), st));
            }
            // Nothing new: is the job finished? Checked on commits, and once a second anyway.
            let changed = st.state.changes.has_changed().unwrap_or(false);
            if changed || st.since_check >= Duration::from_secs(1) {
                st.since_check = Duration::ZERO;
                st.state.changes.borrow_and_update();
                let (rid, jid) = (st.run_id.clone(), st.job.clone());
                let job = st
                    .state
                    .db
                    .read(move |s| Ok(s.jobs(&rid)?.into_iter().find(|j| j.job_id == jid)))
                    .await;
                match job {
                    Ok(Some(j)) if j.state.is_terminal() => {
                        // One more read below picks up lines written just before it finished.
                        st.finished = Some(j);
                        continue;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return None,
                }
            }
            tokio::time::sleep(POLL).await;
            st.since_check += POLL;
        }
    })
}
