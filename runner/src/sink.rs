//! [`ApiSink`]: a [`RunSink`] that delivers a run's log lines, job states and end to the API
//! (`docs/api.md`: `POST .../logs`, `PUT .../jobs/{job}`, `POST .../finish`) from a background
//! thread.
//!
//! The engine's calls only queue (a short lock, never the network). The thread sends lines in
//! batches (up to [`BATCH_LINES`] lines, or what arrived within [`LINGER`]), then job states
//! (the latest per job), then — once everything before it arrived — the run's end. Lines stay
//! queued until the API acknowledged them: an unreachable API or a 5xx is retried with backoff,
//! a `log_gap` answer resends from the seq the API expects. Other refusals (a bad or revoked
//! token, a run that does not exist) stop delivery; [`RunSink::flush`] reports what is left.

use sparkwing_api::wire::{
    outputs_size, FinishRequest, JobStateReport, LogLine, LogStream, MAX_JOB_OUTPUTS_BYTES,
};
use sparkwing_api::{ApiClient, RemoteError};
use sparkwing_core::RunPhase;
use sparkwing_engine::sink::{FlushReport, RunSink, SinkLine};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most lines in one `POST .../logs`.
pub const BATCH_LINES: usize = 500;
/// Most bytes of line text in one batch (the API takes 4 MiB bodies).
const BATCH_BYTES: usize = 2 << 20;
/// How long the thread waits for more lines before sending a partial batch.
pub const LINGER: Duration = Duration::from_millis(200);
/// Retry backoff: first and longest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// While flushing, retries wait at most this long...
const FLUSH_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// ...and a flush gives up early after this many unreachable answers in a row.
const FLUSH_UNREACHABLE_GIVE_UP: u32 = 3;
/// Most lines kept in memory while the API cannot be reached; older ones are dropped (and
/// counted) beyond it.
const MAX_QUEUED_LINES: usize = 2_000_000;

#[derive(Default)]
struct Queue {
    /// Not yet acknowledged, in the order the engine wrote them, each with its place in the
    /// order of everything queued.
    lines: VecDeque<(u64, LogLine)>,
    /// Latest state per job, oldest change first, with its place in the order.
    states: Vec<(u64, String, JobStateReport)>,
    /// The place of the next record queued.
    next_order: u64,
    /// The run's end, to send after everything else.
    finish: Option<FinishRequest>,
    finish_sent: bool,
    flushing: bool,
    /// Unreachable answers in a row since the flush began.
    flush_unreachable: u32,
    closed: bool,
    /// Delivery stopped for good (the API refused with a 4xx).
    failed: Option<String>,
    last_error: Option<String>,
    dropped_lines: usize,
    delivered_lines: u64,
}

impl Queue {
    fn idle(&self) -> bool {
        self.lines.is_empty()
            && self.states.is_empty()
            && (self.finish.is_none() || self.finish_sent)
    }

    fn report(&self) -> FlushReport {
        FlushReport {
            undelivered_lines: self.lines.len() + self.dropped_lines,
            undelivered_states: self.states.len(),
            finish_pending: self.finish.is_some() && !self.finish_sent,
            error: self.failed.clone().or_else(|| self.last_error.clone()),
        }
    }
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Delivers one run to the API. Dropping it stops the thread (undelivered records are lost:
/// flush first).
pub struct ApiSink {
    shared: Arc<Shared>,
    /// Added to a job's seqs: the lines an earlier attempt of the run already posted.
    offsets: HashMap<String, u64>,
    thread: Option<JoinHandle<()>>,
    namespace: String,
    name: String,
    /// The attempt of a cluster run this sink reports for, when its coordinator may park
    /// ([`ApiSink::parking`]).
    park_attempt: Option<u32>,
}

impl ApiSink {
    /// Whether the run's coordinator reported a park through this sink ([`RunSink::run_parked`]).
    pub fn has_parked(&self) -> bool {
        self.shared
            .lock()
            .finish
            .as_ref()
            .is_some_and(|f| f.parked.is_some())
    }

    /// This sink reports attempt `attempt` of a cluster run, whose coordinator parks while
    /// nothing but approval gates waits (`RunSink::parks`).
    pub fn parking(mut self, attempt: u32) -> ApiSink {
        self.park_attempt = Some(attempt);
        self
    }

    /// Start delivering to run `namespace/name` with `client` (holding the run's token).
    pub fn start(client: ApiClient, namespace: &str, name: &str) -> ApiSink {
        ApiSink::start_after(client, namespace, name, HashMap::new())
    }

    /// [`ApiSink::start`] for a later attempt of a run: `offsets` holds, per job, the last seq
    /// the API already has, and the lines of this attempt continue after it (the API ignores
    /// seqs it has, so restarting at 1 would drop this attempt's first lines).
    pub fn start_after(
        client: ApiClient,
        namespace: &str,
        name: &str,
        offsets: HashMap<String, u64>,
    ) -> ApiSink {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        let worker = Worker {
            client,
            shared: shared.clone(),
            ns: namespace.to_string(),
            name: name.to_string(),
            backoff: BACKOFF_MIN,
        };
        let thread = std::thread::Builder::new()
            .name("sparkwing-api-sink".into())
            .spawn(move || worker.run())
            .ok();
        if thread.is_none() {
            shared.lock().failed = Some("cannot start the delivery thread".into());
        }
        ApiSink {
            shared,
            offsets,
            thread,
            namespace: namespace.to_string(),
            name: name.to_string(),
            park_attempt: None,
        }
    }

    /// `namespace/name` of the run this sink delivers to.
    pub fn run_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Lines the API acknowledged so far.
    pub fn delivered_lines(&self) -> u64 {
        self.shared.lock().delivered_lines
    }
}

impl Drop for ApiSink {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.cv.notify_all();
        // The thread may be in the middle of a request; do not wait for it.
        drop(self.thread.take());
    }
}

/// `2026-11-27T12:01:02.345Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = sparkwing_core::time::format_rfc3339(ms);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms.rem_euclid(1000))
}

impl RunSink for ApiSink {
    fn log_line(&self, line: SinkLine) {
        let mut q = self.shared.lock();
        if q.failed.is_some() {
            q.dropped_lines += 1;
            return;
        }
        if q.lines.len() >= MAX_QUEUED_LINES {
            q.lines.pop_front();
            q.dropped_lines += 1;
        }
        let order = q.next_order;
        q.next_order += 1;
        let offset = self.offsets.get(&line.job).copied().unwrap_or(0);
        q.lines.push_back((
            order,
            LogLine {
                job: line.job,
                seq: line.seq + offset,
                ts: rfc3339_ms(line.ts_ms),
                // The engine writes `stdout` or `stderr`.
                stream: if line.stream == "stderr" {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                line: line.line,
            },
        ));
        // Wake the thread when there is something new to send (it lingers for the rest of a
        // batch on its own) and when a batch is full.
        let wake = q.lines.len() == 1 || q.lines.len() >= BATCH_LINES;
        drop(q);
        if wake {
            self.shared.cv.notify_all();
        }
    }

    fn job_state(&self, job: &str, mut state: JobStateReport) {
        within_outputs_cap(job, &mut state);
        let mut q = self.shared.lock();
        q.states.retain(|(_, j, _)| j != job);
        let order = q.next_order;
        q.next_order += 1;
        q.states.push((order, job.to_string(), state));
        drop(q);
        self.shared.cv.notify_all();
    }

    fn run_finished(&self, phase: RunPhase, message: Option<String>) {
        let body = FinishRequest {
            phase: Some(phase),
            message,
            parked: None,
        };
        let mut q = self.shared.lock();
        q.finish = Some(body);
        q.finish_sent = false;
        drop(q);
        self.shared.cv.notify_all();
    }

    fn parks(&self) -> bool {
        self.park_attempt.is_some()
    }

    fn run_parked(&self, gates: Vec<String>, deadline_ms: Option<i64>, reason: String) {
        let Some(attempt) = self.park_attempt else {
            return;
        };
        let body = FinishRequest {
            phase: None,
            message: Some(reason),
            parked: Some(sparkwing_core::gate::Parked {
                attempt,
                gates,
                deadline_ms,
                decided: false,
            }),
        };
        let mut q = self.shared.lock();
        q.finish = Some(body);
        q.finish_sent = false;
        drop(q);
        self.shared.cv.notify_all();
    }

    fn flush(&self, deadline: Instant) -> FlushReport {
        let mut q = self.shared.lock();
        q.flushing = true;
        q.flush_unreachable = 0;
        self.shared.cv.notify_all();
        loop {
            if q.idle()
                || q.failed.is_some()
                || q.flush_unreachable >= FLUSH_UNREACHABLE_GIVE_UP
                || self.thread.is_none()
            {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            q = self
                .shared
                .cv
                .wait_timeout(q, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let report = q.report();
        q.flushing = false;
        report
    }
}

/// The API refuses a job state whose outputs exceed [`MAX_JOB_OUTPUTS_BYTES`] (and a refusal
/// would stop this sink's delivery): such a state is sent without its outputs, with a warning.
/// Returns whether it kept them.
fn within_outputs_cap(job: &str, state: &mut JobStateReport) -> bool {
    let Some(outputs) = &state.outputs else {
        return true;
    };
    let size = outputs_size(outputs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if size <= MAX_JOB_OUTPUTS_BYTES {
        return true;
    }
    tracing::warn!(
        "job {job}: its outputs hold {size} bytes, over the API's limit of {MAX_JOB_OUTPUTS_BYTES}: its state is reported without them"
    );
    state.outputs = None;
    false
}

/// What the thread sends next.
enum Work {
    Lines(Vec<LogLine>),
    State(String, JobStateReport),
    Finish(FinishRequest),
}

struct Worker {
    client: ApiClient,
    shared: Arc<Shared>,
    ns: String,
    name: String,
    backoff: Duration,
}

impl Worker {
    fn run(mut self) {
        loop {
            let Some(work) = self.next() else { return };
            let result = match &work {
                Work::Lines(lines) => self.client.post_logs(&self.ns, &self.name, lines).map(drop),
                Work::State(job, state) => {
                    self.client.put_job_state(&self.ns, &self.name, job, state)
                }
                Work::Finish(body) => self.client.finish(&self.ns, &self.name, Some(body)),
            };
            self.settle(work, result);
            self.shared.cv.notify_all();
        }
    }

    /// Wait for something to send; `None` once closed.
    fn next(&self) -> Option<Work> {
        let mut q = self.shared.lock();
        loop {
            if q.closed {
                return None;
            }
            if q.failed.is_none() && !q.idle() {
                break;
            }
            q = self.shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        // Give a partial batch a moment to fill, unless someone waits for it.
        let linger_until = Instant::now() + LINGER;
        while !q.flushing && !q.lines.is_empty() && q.lines.len() < BATCH_LINES {
            let now = Instant::now();
            if now >= linger_until {
                break;
            }
            q = self
                .shared
                .cv
                .wait_timeout(q, linger_until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if q.closed {
                return None;
            }
        }
        // A state queued before the first pending line goes first: a job's end follows its lines.
        let state_first = match (q.states.first(), q.lines.front()) {
            (Some((s, _, _)), Some((l, _))) => s < l,
            (Some(_), None) => true,
            _ => false,
        };
        if state_first {
            if let Some((_, job, state)) = q.states.first() {
                return Some(Work::State(job.clone(), state.clone()));
            }
        }
        if !q.lines.is_empty() {
            let mut bytes = 0;
            let batch: Vec<LogLine> = q
                .lines
                .iter()
                .take(BATCH_LINES)
                .take_while(|(_, l)| {
                    bytes += l.line.len() + 64;
                    bytes <= BATCH_BYTES
                })
                .map(|(_, l)| l.clone())
                .collect();
            // A single line over the byte budget still goes, alone.
            let batch = if batch.is_empty() {
                q.lines.iter().take(1).map(|(_, l)| l.clone()).collect()
            } else {
                batch
            };
            return Some(Work::Lines(batch));
        }
        q.finish.clone().map(Work::Finish)
    }

    fn settle(&mut self, work: Work, result: Result<(), RemoteError>) {
        let mut q = self.shared.lock();
        match result {
            Ok(()) => {
                self.backoff = BACKOFF_MIN;
                q.flush_unreachable = 0;
                q.last_error = None;
                match work {
                    Work::Lines(batch) => {
                        // Only this thread removes lines, so the batch is still at the front.
                        let n = batch.len().min(q.lines.len());
                        q.lines.drain(..n);
                        q.delivered_lines += n as u64;
                    }
                    Work::State(job, sent) => {
                        // Unless it changed meanwhile.
                        q.states.retain(|(_, j, s)| !(j == &job && s == &sent));
                    }
                    Work::Finish(_) => q.finish_sent = true,
                }
            }
            Err(RemoteError::LogGap { job, expected }) => {
                // The API has every line of `job` below `expected`: drop those, resend the rest.
                let before = q.lines.len();
                q.lines.retain(|(_, l)| !(l.job == job && l.seq < expected));
                q.delivered_lines += (before - q.lines.len()) as u64;
                let first = q
                    .lines
                    .iter()
                    .find(|(_, l)| l.job == job)
                    .map(|(_, l)| l.seq);
                if first.is_some_and(|s| s > expected) {
                    // Lines the API lacks are not here any more: nothing can fill the hole.
                    q.failed = Some(format!(
                        "the API expects line {expected} of job {job} next, which this sink no longer has"
                    ));
                }
            }
            Err(e) if retryable(&e) => {
                q.last_error = Some(e.to_string());
                if e.is_unreachable() && q.flushing {
                    q.flush_unreachable += 1;
                }
                let cap = if q.flushing {
                    FLUSH_BACKOFF_MAX
                } else {
                    BACKOFF_MAX
                };
                let wait = self.backoff.min(cap);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                drop(q);
                self.shared.cv.notify_all();
                std::thread::sleep(wait);
            }
            Err(e) => {
                q.failed = Some(e.to_string());
            }
        }
    }
}

/// Worth another try: no answer, a server error, or "slow down".
fn retryable(e: &RemoteError) -> bool {
    match e {
        RemoteError::Unreachable { .. } => true,
        RemoteError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_milliseconds() {
        assert_eq!(rfc3339_ms(1_234), "1970-01-01T00:00:01.234Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn an_unreachable_api_is_reported_by_flush_without_waiting_for_the_deadline() {
        // Nothing listens on port 9 of localhost (discard) in the test environment.
        let client = ApiClient::new("http://127.0.0.1:9", "swr_x").unwrap();
        let sink = ApiSink::start(client, "ns", "run");
        for seq in 1..=3 {
            sink.log_line(SinkLine {
                job: "a".into(),
                seq,
                ts_ms: 0,
                stream: "stdout".into(),
                line: format!("line {seq}"),
            });
        }
        sink.run_finished(RunPhase::Succeeded, None);
        let started = Instant::now();
        let report = sink.flush(Instant::now() + Duration::from_secs(60));
        assert!(started.elapsed() < Duration::from_secs(20), "{report:?}");
        assert_eq!(report.undelivered_lines, 3);
        assert!(report.finish_pending);
        assert!(report.error.unwrap().contains("cannot reach"));
    }

    /// The real API on 127.0.0.1:0 and an external run on it: (runtime, url, admin client, sink
    /// client for the run, namespace, name).
    struct Served {
        _rt: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
        admin: ApiClient,
        runner: ApiClient,
        ns: String,
        name: String,
    }

    fn served() -> Served {
        use sparkwing_api::wire::{ExternalSource, Source, TriggerRequest};
        use sparkwing_operator::api::{spawn_serving, ApiConfig, ApiState, MemoryRuns};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = rt
            .block_on(ApiState::open(
                dir.path(),
                std::sync::Arc::new(MemoryRuns::new()),
                ApiConfig::default(),
            ))
            .unwrap();
        let (admin, _) = rt
            .block_on(state.store.create_token("root", vec!["admin".into()], None))
            .unwrap();
        let addr = spawn_serving(&rt, state, "127.0.0.1:0").unwrap();
        let url = format!("http://{addr}");
        let admin = ApiClient::new(&url, &admin).unwrap();
        let r = admin
            .trigger(&TriggerRequest {
                namespace: Some("ci".into()),
                ..TriggerRequest::new("p", Source::External(ExternalSource {}))
            })
            .unwrap();
        let runner = ApiClient::new(&url, r.runner_token.as_deref().unwrap()).unwrap();
        Served {
            _rt: rt,
            _dir: dir,
            admin,
            runner,
            ns: r.namespace,
            name: r.name,
        }
    }

    fn line(job: &str, seq: u64) -> SinkLine {
        SinkLine {
            job: job.into(),
            seq,
            ts_ms: 1_000 + seq as i64,
            stream: "stdout".into(),
            line: format!("{job} {seq}"),
        }
    }

    #[test]
    fn a_line_is_delivered_while_the_run_goes_on_and_resending_is_harmless() {
        use sparkwing_core::JobState;
        let s = served();
        let sink = ApiSink::start(s.runner.clone(), &s.ns, &s.name);
        sink.job_state(
            "a",
            sparkwing_engine::sink::job_state_report(JobState::Running, 1, None, None, None, None),
        );
        sink.log_line(line("a", 1));
        // No flush: the thread sends it on its own (within the linger time).
        let end = Instant::now() + Duration::from_secs(20);
        while s
            .admin
            .read_logs(&s.ns, &s.name, "a", 0)
            .unwrap()
            .is_empty()
        {
            assert!(
                Instant::now() < end,
                "the line was not sent without a flush"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Another sink resends from 1 (as runs push does): duplicates are ignored.
        let again = ApiSink::start(s.runner.clone(), &s.ns, &s.name);
        for seq in 1..=3 {
            again.log_line(line("a", seq));
        }
        let report = again.flush(Instant::now() + Duration::from_secs(20));
        assert!(report.is_complete(), "{report:?}");
        let lines = s.admin.read_logs(&s.ns, &s.name, "a", 0).unwrap();
        let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(lines[2].ts, "1970-01-01T00:00:01.003Z");
    }

    #[test]
    fn outputs_over_the_apis_cap_are_left_out_of_the_state() {
        use sparkwing_core::JobState;
        let mut state =
            sparkwing_engine::sink::job_state_report(JobState::Success, 1, None, None, None, None);
        state.outputs = Some([("v".to_string(), "x".repeat(MAX_JOB_OUTPUTS_BYTES - 1))].into());
        assert!(within_outputs_cap("a", &mut state));
        assert!(state.outputs.is_some());
        state.outputs = Some([("v".to_string(), "x".repeat(MAX_JOB_OUTPUTS_BYTES))].into());
        assert!(!within_outputs_cap("a", &mut state));
        assert_eq!(state.outputs, None);
        assert_eq!(state.state, JobState::Success.into());
    }

    #[test]
    fn a_jobs_outputs_reach_the_api_with_its_end() {
        use sparkwing_core::JobState;
        let s = served();
        let sink = ApiSink::start(s.runner.clone(), &s.ns, &s.name);
        let mut state =
            sparkwing_engine::sink::job_state_report(JobState::Success, 1, None, None, None, None);
        state.outputs = Some([("version".to_string(), "1.2.3".to_string())].into());
        sink.job_state("a", state);
        // Too big: the state arrives, without them, and delivery goes on.
        let mut big =
            sparkwing_engine::sink::job_state_report(JobState::Success, 1, None, None, None, None);
        big.outputs = Some([("v".to_string(), "x".repeat(MAX_JOB_OUTPUTS_BYTES + 1))].into());
        sink.job_state("b", big);
        sink.log_line(line("b", 1));
        let report = sink.flush(Instant::now() + Duration::from_secs(20));
        assert!(report.is_complete(), "{report:?}");
        let run = s.admin.get_run(&s.ns, &s.name).unwrap();
        let jobs = run.jobs.unwrap();
        assert_eq!(
            jobs["a"]["outputs"],
            serde_json::json!({"version": "1.2.3"})
        );
        assert_eq!(jobs["b"]["state"], "success");
        assert!(jobs["b"].get("outputs").is_none(), "{}", jobs["b"]);
    }

    #[test]
    fn a_hole_the_sink_cannot_fill_is_reported() {
        let s = served();
        let sink = ApiSink::start(s.runner.clone(), &s.ns, &s.name);
        // Lines 1 and 2 of job a never reach the sink: the API expects 1.
        sink.log_line(line("a", 3));
        sink.log_line(line("a", 4));
        sink.run_finished(RunPhase::Failed, Some("x".into()));
        let report = sink.flush(Instant::now() + Duration::from_secs(20));
        assert_eq!(report.undelivered_lines, 2, "{report:?}");
        assert!(report.finish_pending, "{report:?}");
        let error = report.error.unwrap_or_default();
        assert!(error.contains("expects line 1 of job a"), "{error}");
    }
}
