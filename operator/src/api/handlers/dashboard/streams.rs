//! The cluster pages' server-sent events, as the shared page script reads them:
//! `GET /ui/runs/stream` (`list` events: the runs table, whenever it changed) and
//! `GET /ui/runs/{ns}/{name}/stream?job=J` (`view`: the run's sections, whenever they changed;
//! `logs`: batches of job `J`'s lines from the state layer, `id` = the last seq; `log-end` once
//! that job ended; `done` once the run ended and every line was sent).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use sparkwing_core::time::parse_rfc3339;
use sparkwing_dashboard::render;
use sparkwing_state::LogKey;

use super::gates::gates_section;
use super::pages::{actions_html, list_query, list_runs, runs_list_html, PAGE_RUNS};
use super::view::{job_models, read_run, run_model};
use crate::api::handlers::logs::follow_lines;
use crate::api::session::Session;
use crate::api::{check_job_name, check_object_name, ApiError, ApiState};

/// How often the runs list and a run's sections are read again (each a Kubernetes read); log
/// lines are looked for every `follow_poll`, or at once when ingested through this replica.
const VIEW_EVERY: Duration = Duration::from_secs(1);
/// Most lines in one `logs` event.
const LOG_BATCH: usize = 500;

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

type Sent = Sse<
    axum::response::sse::KeepAliveStream<
        futures::stream::BoxStream<'static, Result<Event, Infallible>>,
    >,
>;

fn sse(st: &ApiState, s: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Sent {
    use futures::StreamExt;
    Sse::new(s.boxed()).keep_alive(KeepAlive::new().interval(st.config.keep_alive))
}

/// `GET /ui/runs/stream?namespace=&pipeline=&phase=`: the first page of the list, again whenever
/// it changed.
pub async fn runs_stream(
    State(st): State<ApiState>,
    session: Session,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Sent, ApiError> {
    // A bad filter is refused now, not in the stream.
    list_runs(&st, &session, list_query(&params, 1)).await?;
    let state = (st.clone(), session, params, None::<String>, true);
    let s = futures::stream::unfold(state, |(st, session, params, last, first)| async move {
        if !first {
            tokio::time::sleep(VIEW_EVERY).await;
        }
        loop {
            let q = list_query(&params, PAGE_RUNS);
            let html = match list_runs(&st, &session, list_query(&params, PAGE_RUNS)).await {
                Ok((runs, next)) => runs_list_html(&runs, next.as_deref(), &q, now_ms()),
                Err(e) => {
                    let ev = Event::default().event("problem").data(e.public_message());
                    return Some((Ok(ev), (st, session, params, last, false)));
                }
            };
            if last.as_deref() != Some(html.as_str()) {
                let ev = Event::default()
                    .event("list")
                    .data(json!({ "html": html }).to_string());
                return Some((Ok(ev), (st, session, params, Some(html), false)));
            }
            tokio::time::sleep(VIEW_EVERY).await;
        }
    });
    Ok(sse(&st, s))
}

struct RunFollow {
    st: ApiState,
    session: Session,
    ns: String,
    name: String,
    job: Option<String>,
    /// The last seq sent.
    after: u64,
    last_view: Option<String>,
    view_read: Option<tokio::time::Instant>,
    terminal: bool,
    /// The selected job's end, once it ended: `{"job", "state", "reason"}`.
    job_end: Option<serde_json::Value>,
    log_ended: bool,
    draining: bool,
    queue: VecDeque<Event>,
    done: bool,
    /// Woken by a notification (lines ingested here or told by the log feed), not by the poll's
    /// timer (as the API's follower: `handlers::logs::follow_lines`).
    woken: bool,
}

impl RunFollow {
    async fn read_view(&mut self) -> Result<(), ApiError> {
        let v = read_run(&self.st, &self.session, &self.ns, &self.name).await?;
        let gates = gates_section(&self.st, &self.session, &v).await?;
        let run = run_model(&v);
        let jobs = job_models(&v);
        let mut sections = render::run_sections(&run, &jobs, gates, self.job.as_deref(), now_ms());
        sections["sections"]["actions"] = actions_html(&self.session, &v).into();
        let text = sections.to_string();
        if self.last_view.as_deref() != Some(text.as_str()) {
            self.queue
                .push_back(Event::default().event("view").data(text.clone()));
            self.last_view = Some(text);
        }
        self.terminal = v.phase.is_terminal();
        self.job_end = self
            .job
            .as_deref()
            .and_then(|id| jobs.iter().find(|j| j.job_id == id))
            .filter(|j| j.state.is_terminal())
            .map(|j| json!({"job": j.job_id, "state": j.state, "reason": j.reason}));
        Ok(())
    }

    async fn read_logs(&mut self) -> Result<bool, ApiError> {
        let Some(job) = self.job.clone() else {
            return Ok(false);
        };
        let key = LogKey::new(&self.ns, &self.name, &job);
        let lines = follow_lines(
            &self.st,
            &key,
            self.after,
            LOG_BATCH,
            self.woken,
            self.draining,
        )
        .await?;
        let recs: Vec<serde_json::Value> = lines
            .iter()
            .filter(|l| l.seq > self.after)
            .map(|l| {
                json!({"seq": l.seq, "ts": parse_rfc3339(&l.ts).unwrap_or(0), "attempt": 1,
                       "stream": l.stream, "line": l.line})
            })
            .collect();
        let Some(last) = lines
            .iter()
            .map(|l| l.seq)
            .max()
            .filter(|s| *s > self.after)
        else {
            return Ok(false);
        };
        self.after = last;
        self.queue.push_back(
            Event::default()
                .event("logs")
                .id(last.to_string())
                .data(serde_json::Value::Array(recs).to_string()),
        );
        Ok(true)
    }

    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, RunFollow)> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done {
                return None;
            }
            // Listening before looking: a line ingested between the look and the wait still
            // wakes this stream.
            let notify = self.st.log_notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.view_read.is_none_or(|t| t.elapsed() >= VIEW_EVERY) {
                self.view_read = Some(tokio::time::Instant::now());
                if let Err(e) = self.read_view().await {
                    self.queue
                        .push_back(Event::default().event("problem").data(e.public_message()));
                    self.done = true;
                    continue;
                }
            }
            let got_lines = match self.read_logs().await {
                Ok(got) => got,
                Err(e) => {
                    self.queue
                        .push_back(Event::default().event("problem").data(e.public_message()));
                    self.done = true;
                    continue;
                }
            };
            if got_lines {
                continue;
            }
            // Every line written so far was sent.
            if !self.log_ended {
                if let Some(end) = self.job_end.clone() {
                    self.log_ended = true;
                    self.queue
                        .push_back(Event::default().event("log-end").data(end.to_string()));
                    continue;
                }
            }
            if self.draining {
                self.queue
                    .push_back(Event::default().event("done").data("{}"));
                self.done = true;
                continue;
            }
            if self.terminal {
                // One more read of the lines written before the run ended.
                self.draining = true;
                continue;
            }
            self.woken = tokio::time::timeout(self.st.config.follow_poll, notified)
                .await
                .is_ok();
        }
    }
}

/// `GET /ui/runs/{ns}/{name}/stream?job=J[&after=N]` (or `Last-Event-ID`).
pub async fn run_stream(
    State(st): State<ApiState>,
    session: Session,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Sent, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    let job = params.get("job").filter(|j| !j.is_empty()).cloned();
    if let Some(j) = &job {
        check_job_name(j)?;
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(params.get("after").map(String::as_str))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let mut follow = RunFollow {
        st: st.clone(),
        session,
        ns,
        name,
        job,
        after,
        last_view: None,
        view_read: None,
        terminal: false,
        job_end: None,
        log_ended: false,
        draining: false,
        queue: VecDeque::new(),
        done: false,
        woken: false,
    };
    // An unknown run or a caller who may not read it is refused now, not in the stream.
    follow.view_read = Some(tokio::time::Instant::now());
    follow.read_view().await?;
    Ok(sse(
        &st,
        futures::stream::unfold(follow, RunFollow::next_event),
    ))
}
