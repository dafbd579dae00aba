//! Prometheus metrics, kept in memory and written in the text exposition format by hand (a few
//! counters and gauges do not need a registry crate).
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
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Labels = Vec<(&'static str, String)>;

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

/// One histogram series: cumulative-free bucket counts (one per bound, plus +Inf), sum, count.
#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.buckets[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// The `q` quantile, interpolated linearly inside its bucket as PromQL's
    /// `histogram_quantile` does (a value in the +Inf bucket reports the highest bound).
    fn quantile(&self, bounds: &[f64], q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
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

/// Counts runs by phase, from the run controller's cache.
pub type RunPhaseSource = Box<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>;

#[derive(Default)]
struct Family {
    values: BTreeMap<Labels, f64>,
}

/// The operator's metrics. Cheap to update from any task; [`Metrics::render`] writes them.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<&'static str, Family>>,
    gauges: Mutex<BTreeMap<&'static str, Family>>,
    histograms: Mutex<BTreeMap<&'static str, BTreeMap<Labels, Histogram>>>,
    /// When the run controller first saw a run (by uid) Pending without a runner.
    pending_since: Mutex<BTreeMap<String, Instant>>,
    runs_by_phase: Mutex<Option<RunPhaseSource>>,
    status_writes: AtomicU64,
    crds_ready: AtomicBool,
    leader: AtomicBool,
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "sparkwing_reconciles_total",
        "counter",
        "Reconciles started, by controller.",
    ),
    (
        "sparkwing_reconcile_total",
        "counter",
        "Reconciles finished, by controller and result.",
    ),
    (
        "sparkwing_reconcile_errors_total",
        "counter",
        "Reconciles that failed, by controller and error.",
    ),
    (
        "sparkwing_reconcile_duration_seconds",
        "histogram",
        "Time spent reconciling, by controller and result.",
    ),
    (
        "sparkwing_status_writes_total",
        "counter",
        "Status writes (server-side apply), by kind.",
    ),
    (
        "sparkwing_run_transitions_total",
        "counter",
        "PipelineRun condition transitions, by reason.",
    ),
    (
        "sparkwing_runners_started_total",
        "counter",
        "Runners started for runs: a new Job or a claimed warm pod.",
    ),
    (
        "sparkwing_claim_latency_seconds",
        "histogram",
        "Time from a run seen Pending to its runner started (Job created or warm pod claimed).",
    ),
    (
        "sparkwing_runs",
        "gauge",
        "PipelineRuns in the run controller's cache, by phase.",
    ),
    (
        "sparkwing_pool_claim_conflicts_total",
        "counter",
        "Claims of a warm runner lost to a concurrent change.",
    ),
    (
        "sparkwing_pool_runners_created_total",
        "counter",
        "Warm runner pods created.",
    ),
    (
        "sparkwing_pool_runners_deleted_total",
        "counter",
        "Warm runner pods deleted, by why.",
    ),
    (
        "sparkwing_pool_runners",
        "gauge",
        "Warm runners of a pool, by state.",
    ),
    (
        "sparkwing_crds_ready",
        "gauge",
        "1 when the PipelineRun and RunnerPool CRDs are served.",
    ),
    (
        "sparkwing_leader",
        "gauge",
        "1 while this replica runs the controllers.",
    ),
];

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    fn add(&self, name: &'static str, pairs: &[(&'static str, &str)], by: f64) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *counters
            .entry(name)
            .or_default()
            .values
            .entry(labels(pairs))
            .or_default() += by;
    }

    fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        let mut gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        gauges
            .entry(name)
            .or_default()
            .values
            .insert(labels(pairs), value);
    }

    fn counter(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> f64 {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .get(name)
            .and_then(|f| f.values.get(&labels(pairs)))
            .copied()
            .unwrap_or(0.0)
    }

    fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], bounds: &[f64], v: f64) {
        let mut h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        h.entry(name)
            .or_default()
            .entry(labels(pairs))
            .or_default()
            .observe(bounds, v);
    }

    /// The histogram series of `name` whose labels include every pair of `pairs`, merged.
    fn histogram(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> Histogram {
        let h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let mut merged = Histogram::default();
        for (l, series) in h.get(name).into_iter().flatten() {
            let matches = pairs
                .iter()
                .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v));
            if !matches {
                continue;
            }
            if merged.buckets.is_empty() {
                merged.buckets = vec![0; series.buckets.len()];
            }
            for (m, n) in merged.buckets.iter_mut().zip(&series.buckets) {
                *m += n;
            }
            merged.sum += series.sum;
            merged.count += series.count;
        }
        merged
    }

    /// A reconcile of `controller` starts; the returned timer records its result and duration
    /// ([`ReconcileTimer::finish`]; dropped unfinished, e.g. cancelled: result `cancelled`).
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.add(
            "sparkwing_reconciles_total",
            &[("controller", controller)],
            1.0,
        );
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
            result: "cancelled",
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, error: &'static str) {
        self.add(
            "sparkwing_reconcile_errors_total",
            &[("controller", controller), ("error", error)],
            1.0,
        );
    }

    fn reconcile_took(&self, controller: &'static str, result: &'static str, took: Duration) {
        let l = [("controller", controller), ("result", result)];
        self.add("sparkwing_reconcile_total", &l, 1.0);
        self.observe(
            "sparkwing_reconcile_duration_seconds",
            &l,
            RECONCILE_BUCKETS,
            took.as_secs_f64(),
        );
    }

    /// Reconciles of `controller` finished with `result` (`success`, `error`, `cancelled`).
    pub fn reconciles(&self, controller: &'static str, result: &'static str) -> u64 {
        self.counter(
            "sparkwing_reconcile_total",
            &[("controller", controller), ("result", result)],
        ) as u64
    }

    /// The `q` quantile (0..=1) of reconcile durations of `controller`, every result, estimated
    /// from the histogram buckets as `histogram_quantile` would; `None` before any reconcile.
    pub fn reconcile_duration_quantile(
        &self,
        controller: &'static str,
        q: f64,
    ) -> Option<Duration> {
        self.histogram(
            "sparkwing_reconcile_duration_seconds",
            &[("controller", controller)],
        )
        .quantile(RECONCILE_BUCKETS, q)
        .map(Duration::from_secs_f64)
    }

    /// Total time spent in reconciles of `controller` (the histogram's `_sum`).
    pub fn reconcile_duration_sum(&self, controller: &'static str) -> Duration {
        Duration::from_secs_f64(
            self.histogram(
                "sparkwing_reconcile_duration_seconds",
                &[("controller", controller)],
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
        self.observe(
            "sparkwing_claim_latency_seconds",
            &[("how", how)],
            CLAIM_BUCKETS,
            took.as_secs_f64(),
        );
    }

    /// Claim latencies recorded so far (every `how`).
    pub fn claim_latencies(&self) -> u64 {
        self.histogram("sparkwing_claim_latency_seconds", &[]).count
    }

    /// The `q` quantile of claim latencies (every `how`), estimated from the buckets.
    pub fn claim_latency_quantile(&self, q: f64) -> Option<Duration> {
        self.histogram("sparkwing_claim_latency_seconds", &[])
            .quantile(CLAIM_BUCKETS, q)
            .map(Duration::from_secs_f64)
    }

    /// Count runs by phase with `source` when rendering `sparkwing_runs` (the run controller
    /// sets it to read its cache).
    pub fn set_run_phase_source(&self, source: RunPhaseSource) {
        *self.runs_by_phase.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Runs by phase (every phase of [`RUN_PHASES`], 0 when none or no source yet).
    pub fn runs_by_phase(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> =
            RUN_PHASES.iter().map(|p| (p.to_string(), 0)).collect();
        let source = self.runs_by_phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = source.as_ref() {
            for (phase, n) in source() {
                *out.entry(phase).or_default() += n;
            }
        }
        out
    }

    /// Runs in `phase` now.
    pub fn runs_in_phase(&self, phase: &str) -> u64 {
        self.runs_by_phase().get(phase).copied().unwrap_or(0)
    }

    /// Warm runners of `pool` in `namespace` in `state` (`idle`, `busy`, `starting`), as last
    /// reconciled.
    pub fn pool_runners_in(&self, namespace: &str, pool: &str, state: &str) -> u64 {
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        gauges
            .get("sparkwing_pool_runners")
            .and_then(|f| {
                f.values.get(&labels(&[
                    ("namespace", namespace),
                    ("pool", pool),
                    ("state", state),
                ]))
            })
            .copied()
            .unwrap_or(0.0) as u64
    }

    /// A status was written for an object of `kind`.
    pub fn status_written(&self, kind: &str) {
        self.status_writes.fetch_add(1, Ordering::Relaxed);
        self.add("sparkwing_status_writes_total", &[("kind", kind)], 1.0);
    }

    /// Status writes for objects of `kind` so far (tests assert "no further writes" with it).
    pub fn status_writes(&self, kind: &str) -> u64 {
        self.counter("sparkwing_status_writes_total", &[("kind", kind)]) as u64
    }

    /// Status writes of every kind so far.
    pub fn status_writes_total(&self) -> u64 {
        self.status_writes.load(Ordering::Relaxed)
    }

    pub fn run_transition(&self, reason: &str) {
        self.add(
            "sparkwing_run_transitions_total",
            &[("reason", reason)],
            1.0,
        );
    }

    /// Transitions to `reason` so far.
    pub fn run_transitions(&self, reason: &str) -> u64 {
        self.counter("sparkwing_run_transitions_total", &[("reason", reason)]) as u64
    }

    pub fn runner_started(&self, how: &'static str) {
        self.add("sparkwing_runners_started_total", &[("how", how)], 1.0);
    }

    /// Runners started so far by `how` (`job` or `warm`).
    pub fn runners_started(&self, how: &'static str) -> u64 {
        self.counter("sparkwing_runners_started_total", &[("how", how)]) as u64
    }

    pub fn claim_conflict(&self) {
        self.add("sparkwing_pool_claim_conflicts_total", &[], 1.0);
    }

    pub fn claim_conflicts(&self) -> u64 {
        self.counter("sparkwing_pool_claim_conflicts_total", &[]) as u64
    }

    pub fn pool_runner_created(&self) {
        self.add("sparkwing_pool_runners_created_total", &[], 1.0);
    }

    pub fn pool_runner_deleted(&self, why: &'static str) {
        self.add("sparkwing_pool_runners_deleted_total", &[("why", why)], 1.0);
    }

    /// Warm pods deleted so far because `why` (`reaped` or `spent`).
    pub fn pool_runners_deleted(&self, why: &'static str) -> u64 {
        self.counter("sparkwing_pool_runners_deleted_total", &[("why", why)]) as u64
    }

    pub fn pool_runners(&self, namespace: &str, pool: &str, idle: u32, busy: u32, starting: u32) {
        for (state, n) in [("idle", idle), ("busy", busy), ("starting", starting)] {
            self.set(
                "sparkwing_pool_runners",
                &[("namespace", namespace), ("pool", pool), ("state", state)],
                f64::from(n),
            );
        }
    }

    pub fn set_crds_ready(&self, ready: bool) {
        self.crds_ready.store(ready, Ordering::Relaxed);
    }

    pub fn crds_ready(&self) -> bool {
        self.crds_ready.load(Ordering::Relaxed)
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let runs = self.runs_by_phase();
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        let histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let flags = [
            ("sparkwing_crds_ready", self.crds_ready()),
            ("sparkwing_leader", self.is_leader()),
        ];
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let mut series: Vec<(String, Labels, f64)> = Vec::new();
            if *kind == "histogram" {
                let bounds = if *name == "sparkwing_claim_latency_seconds" {
                    CLAIM_BUCKETS
                } else {
                    RECONCILE_BUCKETS
                };
                for (l, h) in histograms.get(name).into_iter().flatten() {
                    let mut cumulative = 0u64;
                    for (i, n) in h.buckets.iter().enumerate() {
                        cumulative += n;
                        let le = bounds
                            .get(i)
                            .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                        let mut with_le = l.clone();
                        with_le.push(("le", le));
                        series.push((format!("{name}_bucket"), with_le, cumulative as f64));
                    }
                    series.push((format!("{name}_sum"), l.clone(), h.sum));
                    series.push((format!("{name}_count"), l.clone(), h.count as f64));
                }
            } else if *name == "sparkwing_runs" {
                for (phase, n) in &runs {
                    series.push((name.to_string(), vec![("phase", phase.clone())], *n as f64));
                }
            } else if let Some(f) = counters.get(name).or_else(|| gauges.get(name)) {
                series.extend(
                    f.values
                        .iter()
                        .map(|(l, v)| (name.to_string(), l.clone(), *v)),
                );
            }
            if let Some((_, on)) = flags.iter().find(|(n, _)| n == name) {
                let _ = writeln!(out, "{name} {}", u8::from(*on));
            }
            for (n, l, v) in series {
                if l.is_empty() {
                    let _ = writeln!(out, "{n} {v}");
                } else {
                    let body: Vec<String> = l
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    let _ = writeln!(out, "{n}{{{}}} {v}", body.join(","));
                }
            }
        }
        out
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
        let bounds = &[1.0, 2.0, 4.0];
        let mut h = Histogram::default();
        for v in [0.5, 1.5, 1.5, 3.0] {
            h.observe(bounds, v);
        }
        assert_eq!(h.buckets, vec![1, 2, 1, 0]);
        assert_eq!(h.quantile(bounds, 0.25), Some(1.0));
        assert_eq!(h.quantile(bounds, 0.5), Some(1.5));
        assert_eq!(h.quantile(bounds, 1.0), Some(4.0));
        h.observe(bounds, 100.0);
        assert_eq!(h.quantile(bounds, 1.0), Some(4.0));
        assert_eq!(Histogram::default().quantile(bounds, 0.5), None);
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
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
