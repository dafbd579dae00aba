//! Prometheus metrics, kept in memory and written in the text exposition format by hand (a few
//! counters and gauges do not need a registry crate).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `sparkwing_reconciles_total` | counter | `controller` |
//! | `sparkwing_reconcile_errors_total` | counter | `controller`, `error` |
//! | `sparkwing_reconcile_duration_seconds` | summary (sum, count) | `controller` |
//! | `sparkwing_status_writes_total` | counter | `kind` |
//! | `sparkwing_run_transitions_total` | counter | `reason` |
//! | `sparkwing_runners_started_total` | counter | `how` (`job`, `warm`) |
//! | `sparkwing_pool_claim_conflicts_total` | counter | |
//! | `sparkwing_pool_runners_created_total` | counter | |
//! | `sparkwing_pool_runners_deleted_total` | counter | `why` (`reaped`, `spent`) |
//! | `sparkwing_pool_runners` | gauge | `namespace`, `pool`, `state` (`idle`, `busy`, `starting`) |
//! | `sparkwing_crds_ready` | gauge | |
//! | `sparkwing_leader` | gauge | |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Family {
    values: BTreeMap<Labels, f64>,
}

/// The operator's metrics. Cheap to update from any task; [`Metrics::render`] writes them.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<&'static str, Family>>,
    gauges: Mutex<BTreeMap<&'static str, Family>>,
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
        "sparkwing_reconcile_errors_total",
        "counter",
        "Reconciles that failed, by controller and error.",
    ),
    (
        "sparkwing_reconcile_duration_seconds",
        "summary",
        "Time spent reconciling, by controller.",
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

    /// A reconcile of `controller` starts; the returned guard records its duration when dropped.
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
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, error: &'static str) {
        self.add(
            "sparkwing_reconcile_errors_total",
            &[("controller", controller), ("error", error)],
            1.0,
        );
    }

    fn reconcile_took(&self, controller: &'static str, took: Duration) {
        let l = [("controller", controller)];
        self.add(
            "sparkwing_reconcile_duration_seconds_sum",
            &l,
            took.as_secs_f64(),
        );
        self.add("sparkwing_reconcile_duration_seconds_count", &l, 1.0);
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
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        let flags = [
            ("sparkwing_crds_ready", self.crds_ready()),
            ("sparkwing_leader", self.is_leader()),
        ];
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let mut series: Vec<(String, &Labels, f64)> = Vec::new();
            if *kind == "summary" {
                for suffix in ["_sum", "_count"] {
                    let full = format!("{name}{suffix}");
                    if let Some(f) = counters.iter().find(|(n, _)| **n == full).map(|(_, f)| f) {
                        series.extend(f.values.iter().map(|(l, v)| (full.clone(), l, *v)));
                    }
                }
            } else if let Some(f) = counters.get(name).or_else(|| gauges.get(name)) {
                series.extend(f.values.iter().map(|(l, v)| (name.to_string(), l, *v)));
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

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_took(self.controller, self.started.elapsed());
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
        assert!(text.contains("sparkwing_reconcile_duration_seconds_count{controller=\"run\"} 1"));
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
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
