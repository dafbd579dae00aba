//! The operator's Prometheus metrics: a `prometheus-client` registry, written in the Prometheus
//! text format (0.0.4, what `/metrics` has always served).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `sparkwing_reconciles_total` | counter | `controller` (started) |
//! | `sparkwing_reconcile_total` | counter | `controller`, `result` (`success`, `error`, `cancelled`) |
//! | `sparkwing_reconcile_errors_total` | counter | `controller`, `error` |
//! | `sparkwing_reconcile_duration_seconds` | histogram | `controller`, `result` |
//! | `sparkwing_status_writes_total` | counter | `kind` |
//! | `sparkwing_run_transitions_total` | counter | `reason` |
//! | `sparkwing_runners_started_total` | counter | `how` (`job`, `warm`) |
//! | `sparkwing_claim_latency_seconds` | histogram | `how` (`job`, `warm`) |
//! | `sparkwing_runs` | gauge | `phase` (every phase, 0 included) |
//! | `sparkwing_pool_claim_conflicts_total` | counter | |
//! | `sparkwing_pool_runners_created_total` | counter | |
//! | `sparkwing_pool_runners_deleted_total` | counter | `why` (`reaped`, `spent`) |
//! | `sparkwing_pool_runners` | gauge | `namespace`, `pool`, `state` (`idle`, `busy`, `starting`) |
//! | `sparkwing_crds_ready` | gauge | |
//! | `sparkwing_leader` | gauge | |
//!
//! `sparkwing_reconcile_duration_seconds` keeps its `_sum` and `_count` series (it was a summary
//! by `controller` only): `sum by (controller)` queries work as before.
//!
//! `sparkwing_claim_latency_seconds` is the time from the run controller first seeing a run
//! Pending without a runner (for a new run: its first reconcile, a watch event after the create)
//! to its runner being started: the Job created or the warm pod claimed. A retried attempt is
//! measured again from the reconcile that saw it Pending. Monotonic clock, so sub-second.
//!
//! `sparkwing_runs` counts the PipelineRuns in the run controller's cache by `status.phase` (no
//! status yet: `Pending`), computed when rendered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of `sparkwing_reconcile_duration_seconds` buckets.
pub const RECONCILE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds (seconds) of `sparkwing_claim_latency_seconds` buckets.
pub const CLAIM_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The phases `sparkwing_runs` always reports (0 included).
pub const RUN_PHASES: &[&str] = &["Pending", "Running", "Succeeded", "Failed", "Cancelled"];

/// Counts runs by phase, from the run controller's cache.
pub type RunPhaseSource = Box<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabels {
    how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhyLabels {
    why: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    namespace: String,
    pool: String,
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    Histogram::new(RECONCILE_BUCKETS.iter().copied())
}

fn claim_histogram() -> Histogram {
    Histogram::new(CLAIM_BUCKETS.iter().copied())
}

/// A step of `run_controllers` under way, from [`Metrics::step`] until dropped.
#[must_use = "the step ends when this is dropped"]
pub struct Step {
    metrics: Arc<Metrics>,
    step: &'static str,
}

impl Drop for Step {
    fn drop(&mut self) {
        let mut running = self
            .metrics
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(self.step) {
            *n -= 1;
            if *n == 0 {
                running.remove(self.step);
            }
        }
    }
}

/// The operator's metrics. Cheap to update from any task; [`Metrics::render`] writes them.
pub struct Metrics {
    registry: Registry,
    reconciles_started: Family<ControllerLabels, Counter>,
    reconciles_finished: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: HistogramFamily<ResultLabels>,
    status_writes: Family<KindLabels, Counter>,
    run_transitions: Family<ReasonLabels, Counter>,
    runners_started: Family<HowLabels, Counter>,
    claim_latency: HistogramFamily<HowLabels>,
    /// Filled from `runs_by_phase` when rendered.
    runs: Family<PhaseLabels, Gauge>,
    claim_conflicts: Counter,
    pool_runners_created: Counter,
    pool_runners_deleted: Family<WhyLabels, Counter>,
    pool_runners: Family<PoolLabels, Gauge>,
    crds_ready: Gauge,
    leader: Gauge,
    /// Status writes of every kind (the family has no sum over its series).
    status_writes_all: AtomicU64,
    /// When the run controller first saw a run (by uid) Pending without a runner.
    pending_since: Mutex<BTreeMap<String, Instant>>,
    /// Held while rendering, so `sparkwing_runs` is refilled by one render at a time.
    runs_by_phase: Mutex<Option<RunPhaseSource>>,
    /// The steps of `run_controllers` under way (see [`Metrics::running`]), with how many of each.
    running: Mutex<BTreeMap<&'static str, usize>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            reconciles_started: Family::default(),
            reconciles_finished: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            status_writes: Family::default(),
            run_transitions: Family::default(),
            runners_started: Family::default(),
            claim_latency: Family::new_with_constructor(claim_histogram),
            runs: Family::default(),
            claim_conflicts: Counter::default(),
            pool_runners_created: Counter::default(),
            pool_runners_deleted: Family::default(),
            pool_runners: Family::default(),
            crds_ready: Gauge::default(),
            leader: Gauge::default(),
            status_writes_all: AtomicU64::new(0),
            pending_since: Mutex::default(),
            runs_by_phase: Mutex::default(),
            running: Mutex::default(),
        };
        m.registered()
    }
}

impl Metrics {
    /// Registers every metric, in the order `/metrics` lists them. Counters are named without
    /// `_total` and help texts without their final period: the encoder adds both.
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "sparkwing_reconciles",
            "Reconciles started, by controller",
            self.reconciles_started.clone(),
        );
        r.register(
            "sparkwing_reconcile",
            "Reconciles finished, by controller and result",
            self.reconciles_finished.clone(),
        );
        r.register(
            "sparkwing_reconcile_errors",
            "Reconciles that failed, by controller and error",
            self.reconcile_errors.clone(),
        );
        r.register(
            "sparkwing_reconcile_duration_seconds",
            "Time spent reconciling, by controller and result",
            self.reconcile_duration.clone(),
        );
        r.register(
            "sparkwing_status_writes",
            "Status writes (server-side apply), by kind",
            self.status_writes.clone(),
        );
        r.register(
            "sparkwing_run_transitions",
            "PipelineRun condition transitions, by reason",
            self.run_transitions.clone(),
        );
        r.register(
            "sparkwing_runners_started",
            "Runners started for runs: a new Job or a claimed warm pod",
            self.runners_started.clone(),
        );
        r.register(
            "sparkwing_claim_latency_seconds",
            "Time from a run seen Pending to its runner started (Job created or warm pod claimed)",
            self.claim_latency.clone(),
        );
        r.register(
            "sparkwing_runs",
            "PipelineRuns in the run controller's cache, by phase",
            self.runs.clone(),
        );
        r.register(
            "sparkwing_pool_claim_conflicts",
            "Claims of a warm runner lost to a concurrent change",
            self.claim_conflicts.clone(),
        );
        r.register(
            "sparkwing_pool_runners_created",
            "Warm runner pods created",
            self.pool_runners_created.clone(),
        );
        r.register(
            "sparkwing_pool_runners_deleted",
            "Warm runner pods deleted, by why",
            self.pool_runners_deleted.clone(),
        );
        r.register(
            "sparkwing_pool_runners",
            "Warm runners of a pool, by state",
            self.pool_runners.clone(),
        );
        r.register(
            "sparkwing_crds_ready",
            "1 when the PipelineRun and RunnerPool CRDs are served",
            self.crds_ready.clone(),
        );
        r.register(
            "sparkwing_leader",
            "1 while this replica runs the controllers",
            self.leader.clone(),
        );
        self
    }

    /// A reconcile of `controller` starts; the returned timer records its result and duration
    /// ([`ReconcileTimer::finish`]; dropped unfinished, e.g. cancelled: result `cancelled`).
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles_started
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
            result: "cancelled",
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { controller, error })
            .inc();
    }

    fn reconcile_took(&self, controller: &'static str, result: &'static str, took: Duration) {
        let labels = ResultLabels { controller, result };
        self.reconciles_finished.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Reconciles of `controller` finished with `result` (`success`, `error`, `cancelled`).
    pub fn reconciles(&self, controller: &'static str, result: &'static str) -> u64 {
        self.reconciles_finished
            .get(&ResultLabels { controller, result })
            .map_or(0, |c| c.get())
    }

    /// The `q` quantile (0..=1) of reconcile durations of `controller`, every result, estimated
    /// from the histogram buckets as `histogram_quantile` would; `None` before any reconcile.
    pub fn reconcile_duration_quantile(
        &self,
        controller: &'static str,
        q: f64,
    ) -> Option<Duration> {
        let label = format!("controller=\"{controller}\"");
        Buckets::scraped(
            &self.render(),
            "sparkwing_reconcile_duration_seconds",
            &label,
        )
        .quantile(q)
        .map(Duration::from_secs_f64)
    }

    /// Total time spent in reconciles of `controller` (the histogram's `_sum`).
    pub fn reconcile_duration_sum(&self, controller: &'static str) -> Duration {
        let label = format!("controller=\"{controller}\"");
        Duration::from_secs_f64(
            Buckets::scraped(
                &self.render(),
                "sparkwing_reconcile_duration_seconds",
                &label,
            )
            .sum,
        )
    }

    /// The run controller saw run `uid` Pending without a runner: the claim latency starts now,
    /// unless it already started.
    pub fn run_pending(&self, uid: &str) {
        let mut p = self.pending_since.lock().unwrap_or_else(|e| e.into_inner());
        p.entry(uid.to_string()).or_insert_with(Instant::now);
    }

    /// Run `uid` no longer waits for a runner (it has one, finished, or is gone) without one
    /// being started by this replica: forget when it was seen Pending.
    pub fn run_not_pending(&self, uid: &str) {
        let mut p = self.pending_since.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(uid);
    }

    /// A runner was started for run `uid` by `how` (`job` or `warm`): counts it and, when the
    /// run was seen Pending, records the claim latency.
    pub fn runner_started_for(&self, uid: &str, how: &'static str) {
        self.runner_started(how);
        let since = {
            let mut p = self.pending_since.lock().unwrap_or_else(|e| e.into_inner());
            p.remove(uid)
        };
        if let Some(since) = since {
            self.claim_latency(how, since.elapsed());
        }
    }

    /// Record one claim latency.
    pub fn claim_latency(&self, how: &'static str, took: Duration) {
        self.claim_latency
            .get_or_create(&HowLabels { how })
            .observe(took.as_secs_f64());
    }

    /// Claim latencies recorded so far (every `how`).
    pub fn claim_latencies(&self) -> u64 {
        Buckets::scraped(&self.render(), "sparkwing_claim_latency_seconds", "").count
    }

    /// The `q` quantile of claim latencies (every `how`), estimated from the buckets.
    pub fn claim_latency_quantile(&self, q: f64) -> Option<Duration> {
        Buckets::scraped(&self.render(), "sparkwing_claim_latency_seconds", "")
            .quantile(q)
            .map(Duration::from_secs_f64)
    }

    /// Mark `step` of `run_controllers` (a wait, a controller loop) as under way until the
    /// returned guard is dropped.
    pub fn step(self: &Arc<Self>, step: &'static str) -> Step {
        *self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(step)
            .or_insert(0) += 1;
        Step {
            metrics: self.clone(),
            step,
        }
    }

    /// The steps of `run_controllers` under way, sorted (after a shutdown: what it still waits
    /// for). Not a Prometheus metric.
    pub fn running(&self) -> Vec<&'static str> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.keys().copied().collect()
    }

    /// Count runs by phase with `source` when rendering `sparkwing_runs` (the run controller
    /// sets it to read its cache).
    pub fn set_run_phase_source(&self, source: RunPhaseSource) {
        *self.runs_by_phase.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Runs by phase (every phase of [`RUN_PHASES`], 0 when none or no source yet).
    pub fn runs_by_phase(&self) -> BTreeMap<String, u64> {
        let source = self.runs_by_phase.lock().unwrap_or_else(|e| e.into_inner());
        count_by_phase(source.as_ref())
    }

    /// Runs in `phase` now.
    pub fn runs_in_phase(&self, phase: &str) -> u64 {
        self.runs_by_phase().get(phase).copied().unwrap_or(0)
    }

    /// Warm runners of `pool` in `namespace` in `state` (`idle`, `busy`, `starting`), as last
    /// reconciled.
    pub fn pool_runners_in(&self, namespace: &str, pool: &str, state: &str) -> u64 {
        let Some(state) = ["idle", "busy", "starting"]
            .into_iter()
            .find(|s| *s == state)
        else {
            return 0;
        };
        self.pool_runners
            .get(&PoolLabels {
                namespace: namespace.to_string(),
                pool: pool.to_string(),
                state,
            })
            .map_or(0, |g| u64::try_from(g.get()).unwrap_or(0))
    }

    /// A status was written for an object of `kind`.
    pub fn status_written(&self, kind: &str) {
        self.status_writes_all.fetch_add(1, Ordering::Relaxed);
        self.status_writes
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Status writes for objects of `kind` so far (tests assert "no further writes" with it).
    pub fn status_writes(&self, kind: &str) -> u64 {
        self.status_writes
            .get(&KindLabels {
                kind: kind.to_string(),
            })
            .map_or(0, |c| c.get())
    }

    /// Status writes of every kind so far.
    pub fn status_writes_total(&self) -> u64 {
        self.status_writes_all.load(Ordering::Relaxed)
    }

    pub fn run_transition(&self, reason: &str) {
        self.run_transitions
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Transitions to `reason` so far.
    pub fn run_transitions(&self, reason: &str) -> u64 {
        self.run_transitions
            .get(&ReasonLabels {
                reason: reason.to_string(),
            })
            .map_or(0, |c| c.get())
    }

    pub fn runner_started(&self, how: &'static str) {
        self.runners_started.get_or_create(&HowLabels { how }).inc();
    }

    /// Runners started so far by `how` (`job` or `warm`).
    pub fn runners_started(&self, how: &'static str) -> u64 {
        self.runners_started
            .get(&HowLabels { how })
            .map_or(0, |c| c.get())
    }

    pub fn claim_conflict(&self) {
        self.claim_conflicts.inc();
    }

    pub fn claim_conflicts(&self) -> u64 {
        self.claim_conflicts.get()
    }

    pub fn pool_runner_created(&self) {
        self.pool_runners_created.inc();
    }

    pub fn pool_runner_deleted(&self, why: &'static str) {
        self.pool_runners_deleted
            .get_or_create(&WhyLabels { why })
            .inc();
    }

    /// Warm pods deleted so far because `why` (`reaped` or `spent`).
    pub fn pool_runners_deleted(&self, why: &'static str) -> u64 {
        self.pool_runners_deleted
            .get(&WhyLabels { why })
            .map_or(0, |c| c.get())
    }

    pub fn pool_runners(&self, namespace: &str, pool: &str, idle: u32, busy: u32, starting: u32) {
        for (state, n) in [("idle", idle), ("busy", busy), ("starting", starting)] {
            self.pool_runners
                .get_or_create(&PoolLabels {
                    namespace: namespace.to_string(),
                    pool: pool.to_string(),
                    state,
                })
                .set(i64::from(n));
        }
    }

    pub fn set_crds_ready(&self, ready: bool) {
        self.crds_ready.set(i64::from(ready));
    }

    pub fn crds_ready(&self) -> bool {
        self.crds_ready.get() == 1
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let source = self.runs_by_phase.lock().unwrap_or_else(|e| e.into_inner());
        // The cache may have lost a phase since the last render: refill rather than update.
        self.runs.clear();
        for (phase, n) in count_by_phase(source.as_ref()) {
            self.runs
                .get_or_create(&PhaseLabels { phase })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing to a String cannot fail; the encoder only passes the writer's errors on.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

fn count_by_phase(source: Option<&RunPhaseSource>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = RUN_PHASES.iter().map(|p| (p.to_string(), 0)).collect();
    if let Some(source) = source {
        for (phase, n) in source() {
            *out.entry(phase).or_default() += n;
        }
    }
    out
}

/// A histogram as a scraper sees it: the series of one histogram whose labels contain `label`
/// (`k="v"`, or empty for all), summed. Read from the exposition because `prometheus-client`
/// does not expose a histogram's buckets, sum or count outside its tests.
#[derive(Debug, Default, PartialEq)]
struct Buckets {
    /// Finite upper bounds, ascending.
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative): one per bound, then the +Inf bucket.
    counts: Vec<u64>,
    /// `_sum`: the observations' total.
    sum: f64,
    /// `_count`: how many observations.
    count: u64,
}

impl Buckets {
    fn scraped(text: &str, name: &str, label: &str) -> Buckets {
        let mut out = Buckets::default();
        let mut cumulative: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            // `name_bucket{labels} value`, or `name_sum value` for a series without labels.
            let (series, labels, value) = match rest.split_once('{') {
                Some((series, rest)) => match rest.rsplit_once("} ") {
                    Some((labels, value)) => (series, labels, value),
                    None => continue,
                },
                None => match rest.split_once(' ') {
                    Some((series, value)) => (series, "", value),
                    None => continue,
                },
            };
            if !labels.contains(label) {
                continue;
            }
            match series {
                "_sum" => out.sum += value.parse::<f64>().unwrap_or(0.0),
                "_count" => out.count += value.parse::<u64>().unwrap_or(0),
                _ => {}
            }
            if series != "_bucket" {
                continue;
            }
            let Some(le) = labels
                .rsplit_once("le=\"")
                .and_then(|(_, le)| le.strip_suffix('"'))
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            let n = value.parse::<u64>().unwrap_or(0);
            // Keyed by the bound's bits: positive floats order as their bits do.
            cumulative.entry(bound.to_bits()).or_insert((bound, 0)).1 += n;
        }
        let mut below = 0;
        for (bound, upto) in cumulative.into_values() {
            if bound.is_finite() {
                out.bounds.push(bound);
            }
            out.counts.push(upto.saturating_sub(below));
            below = upto;
        }
        out
    }

    /// The `q` quantile, interpolated linearly inside its bucket as PromQL's
    /// `histogram_quantile` does (a value in the +Inf bucket reports the highest bound).
    fn quantile(&self, q: f64) -> Option<f64> {
        let count: u64 = self.counts.iter().sum();
        if count == 0 {
            return None;
        }
        let bounds = &self.bounds;
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, n) in self.counts.iter().enumerate() {
            let upto = below + n;
            if (upto as f64) >= rank && *n > 0 {
                let Some(hi) = bounds.get(i).copied() else {
                    return bounds.last().copied();
                };
                let lo = if i == 0 { 0.0 } else { bounds[i - 1] };
                let within = (rank - below as f64) / *n as f64;
                return Some(lo + (hi - lo) * within.clamp(0.0, 1.0));
            }
            below = upto;
        }
        bounds.last().copied()
    }
}

/// Records a reconcile's result and duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
    result: &'static str,
}

impl ReconcileTimer<'_> {
    /// The reconcile finished: `success` when `ok`, otherwise `error`.
    pub fn finish(mut self, ok: bool) {
        self.result = if ok { "success" } else { "error" };
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_took(self.controller, self.result, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::default();
        m.status_written("PipelineRun");
        m.status_written("PipelineRun");
        m.status_written("RunnerPool");
        m.reconcile_failed("run", "conflict");
        m.pool_runners("ci", "default", 2, 1, 0);
        m.set_crds_ready(true);
        drop(m.reconcile_started("run"));
        let text = m.render();
        assert!(
            text.contains("# TYPE sparkwing_status_writes_total counter"),
            "{text}"
        );
        assert!(
            text.contains("sparkwing_status_writes_total{kind=\"PipelineRun\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sparkwing_status_writes_total{kind=\"RunnerPool\"} 1"),
            "{text}"
        );
        assert!(text
            .contains("sparkwing_reconcile_errors_total{controller=\"run\",error=\"conflict\"} 1"));
        assert!(text.contains(
            "sparkwing_pool_runners{namespace=\"ci\",pool=\"default\",state=\"idle\"} 2"
        ));
        assert!(text.contains(
            "sparkwing_reconcile_duration_seconds_count{controller=\"run\",result=\"cancelled\"} 1"
        ));
        assert!(text.contains("sparkwing_crds_ready 1"));
        assert!(text.contains("sparkwing_leader 0"));
        assert_eq!(m.status_writes("PipelineRun"), 2);
        assert_eq!(m.status_writes_total(), 3);
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn reconciles_by_result_and_histogram() {
        let m = Metrics::default();
        m.reconcile_started("run").finish(true);
        m.reconcile_started("run").finish(true);
        m.reconcile_started("run").finish(false);
        m.reconcile_started("pool").finish(true);
        assert_eq!(m.reconciles("run", "success"), 2);
        assert_eq!(m.reconciles("run", "error"), 1);
        assert_eq!(m.reconciles("pool", "success"), 1);
        let text = m.render();
        assert!(text.contains("# TYPE sparkwing_reconcile_duration_seconds histogram"));
        assert!(text.contains("sparkwing_reconcile_total{controller=\"run\",result=\"success\"} 2"));
        assert!(text.contains("sparkwing_reconciles_total{controller=\"run\"} 3"));
        // Instant reconciles land in the first bucket; buckets are cumulative up to +Inf.
        assert!(text.contains(
            "sparkwing_reconcile_duration_seconds_bucket{controller=\"run\",result=\"success\",le=\"0.005\"} 2"
        ), "{text}");
        assert!(text.contains(
            "sparkwing_reconcile_duration_seconds_bucket{controller=\"run\",result=\"success\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains(
            "sparkwing_reconcile_duration_seconds_count{controller=\"run\",result=\"error\"} 1"
        ));
        let p50 = m.reconcile_duration_quantile("run", 0.5).unwrap();
        assert!(p50 <= Duration::from_millis(5), "{p50:?}");
        assert!(m.reconcile_duration_quantile("nothing", 0.5).is_none());
    }

    #[test]
    fn histogram_quantiles_interpolate() {
        // A histogram with bounds 1, 2, 4 as `prometheus-client` writes it, read back.
        let h = Histogram::new([1.0, 2.0, 4.0]);
        let mut registry = Registry::default();
        registry.register("h", "A histogram", h.clone());
        let scrape = |registry: &Registry| {
            let mut text = String::new();
            prometheus_text::encode(&mut text, registry).unwrap();
            Buckets::scraped(&text, "h", "")
        };
        for v in [0.5, 1.5, 1.5, 3.0] {
            h.observe(v);
        }
        let b = scrape(&registry);
        assert_eq!((b.count, b.sum), (4, 6.5));
        assert_eq!(b.bounds, vec![1.0, 2.0, 4.0]);
        assert_eq!(b.counts, vec![1, 2, 1, 0]);
        assert_eq!(b.quantile(0.25), Some(1.0));
        assert_eq!(b.quantile(0.5), Some(1.5));
        assert_eq!(b.quantile(1.0), Some(4.0));
        h.observe(100.0);
        assert_eq!(scrape(&registry).quantile(1.0), Some(4.0));
        assert_eq!(Buckets::default().quantile(0.5), None);
    }

    #[test]
    fn claim_latency_from_pending_to_started() {
        let m = Metrics::default();
        m.run_pending("u1");
        m.run_pending("u2");
        m.run_pending("u3");
        m.run_not_pending("u3");
        m.runner_started_for("u1", "job");
        m.runner_started_for("u2", "warm");
        // Not seen Pending (or already measured): counted as started, no latency.
        m.runner_started_for("u1", "job");
        m.runner_started_for("u3", "job");
        assert_eq!(m.runners_started("job"), 3);
        assert_eq!(m.claim_latencies(), 2);
        assert!(m.claim_latency_quantile(0.99).unwrap() <= Duration::from_millis(10));
        let text = m.render();
        assert!(text.contains("# TYPE sparkwing_claim_latency_seconds histogram"));
        assert!(text.contains("sparkwing_claim_latency_seconds_count{how=\"job\"} 1"));
        assert!(text.contains("sparkwing_claim_latency_seconds_count{how=\"warm\"} 1"));
        assert!(text.contains("sparkwing_claim_latency_seconds_bucket{how=\"warm\",le=\"+Inf\"} 1"));
    }

    #[test]
    fn runs_by_phase_from_the_source() {
        let m = Metrics::default();
        // No source yet: every phase at 0.
        assert!(m.render().contains("sparkwing_runs{phase=\"Pending\"} 0"));
        m.set_run_phase_source(Box::new(|| {
            [("Pending".to_string(), 3), ("Running".to_string(), 2)].into()
        }));
        assert_eq!(m.runs_in_phase("Pending"), 3);
        assert_eq!(m.runs_in_phase("Failed"), 0);
        let text = m.render();
        assert!(text.contains("# TYPE sparkwing_runs gauge"));
        assert!(text.contains("sparkwing_runs{phase=\"Pending\"} 3"));
        assert!(text.contains("sparkwing_runs{phase=\"Running\"} 2"));
        assert!(text.contains("sparkwing_runs{phase=\"Succeeded\"} 0"));
    }

    #[test]
    fn pool_gauges() {
        let m = Metrics::default();
        m.pool_runners("ci", "fast", 2, 1, 3);
        m.pool_runners("ci", "fast", 1, 2, 0);
        assert_eq!(m.pool_runners_in("ci", "fast", "idle"), 1);
        assert_eq!(m.pool_runners_in("ci", "fast", "busy"), 2);
        assert_eq!(m.pool_runners_in("ci", "fast", "starting"), 0);
        assert!(m
            .render()
            .contains("sparkwing_pool_runners{namespace=\"ci\",pool=\"fast\",state=\"busy\"} 2"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.status_written("a\"b\\c\nd");
        let text = m.render();
        assert!(
            text.contains("sparkwing_status_writes_total{kind=\"a\\\"b\\\\c\\nd\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_scraped_counter_moves() {
        let m = Metrics::default();
        let scraped = |m: &Metrics| -> f64 {
            let text = m.render();
            let line = text
                .lines()
                .find(|l| l.starts_with("sparkwing_runners_started_total{how=\"warm\"} "))
                .unwrap_or("sparkwing_runners_started_total{how=\"warm\"} 0")
                .to_string();
            line.rsplit_once(' ').unwrap().1.parse().unwrap()
        };
        assert_eq!(scraped(&m), 0.0);
        m.runner_started("warm");
        m.runner_started("warm");
        assert_eq!(scraped(&m), 2.0);
        m.runner_started("job");
        assert_eq!(scraped(&m), 2.0);
        // Help and type name the series as before: `_total` once, the help's period once.
        let text = m.render();
        assert!(text.contains(
            "# HELP sparkwing_runners_started_total Runners started for runs: a new Job or a claimed warm pod.\n# TYPE sparkwing_runners_started_total counter\n"
        ), "{text}");
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }
}
