//! The API's garbage collection: the concurrency group entries of runs that ended or are gone,
//! retention of finished runs (each removed with its job states, log index and tokens from the
//! metadata, then its logs and archive from the content), then the uploads and blobs no kept run
//! needs. Run on request (`POST /api/v1/admin/gc`) and every
//! `gc_every` by every replica: the stores decide which replica removes a run, so two replicas
//! collecting at once remove each run once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sparkwing_api::wire::GcReport;
use sparkwing_crds::pipeline_run::Source;
use sparkwing_state::RetentionPolicy;

use crate::api::{ApiError, ApiState};
use crate::runs::backend::is_terminal;
use crate::store::run_key;

/// Which finished runs the API keeps. Both unset (the default): every finished run is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove runs that finished longer ago than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many finished runs, the newest.
    pub max_runs: Option<u64>,
}

impl Retention {
    pub fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_runs.is_some()
    }

    /// The stores' policy at `now_ms`, sparing `spare`.
    fn policy(&self, now_ms: i64, spare: BTreeSet<sparkwing_state::RunKey>) -> RetentionPolicy {
        RetentionPolicy {
            finished_before_ms: self.max_age.map(|age| {
                now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
            }),
            keep_finished: self.max_runs,
            spare,
        }
    }
}

/// Collect once: retention (when set), then uploads and blobs older than `grace` that no
/// unfinished run needs. Counted in the metrics either way.
pub async fn collect(
    st: &ApiState,
    grace: Duration,
    retention: Retention,
) -> Result<GcReport, ApiError> {
    let started = Instant::now();
    let result = collect_once(st, grace, retention).await;
    st.metrics
        .collected(result.as_ref().ok(), started.elapsed());
    result
}

async fn collect_once(
    st: &ApiState,
    grace: Duration,
    retention: Retention,
) -> Result<GcReport, ApiError> {
    // Read before the live runs: a run with an entry here is then in the list unless it is gone.
    let in_groups = st.store.meta.group_runs().await?;
    let live = st.runs.list(None).await?;
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    // Concurrency group entries of runs that ended or are gone (a finish that never came, a
    // deleted PipelineRun) are removed now rather than when their lease ends.
    let unfinished: BTreeSet<sparkwing_state::RunKey> = live
        .iter()
        .filter(|r| !is_terminal(r))
        .map(|r| run_key(r))
        .collect();
    for key in in_groups.iter().filter(|k| !unfinished.contains(k)) {
        let left = st.store.meta.leave_groups(key).await?;
        if !left.is_empty() {
            tracing::info!(run = %format!("{}/{}", key.namespace, key.name), groups = ?left, "collection freed the concurrency group entry of a run that ended or is gone");
        }
    }
    let mut runs_deleted = 0;
    if retention.is_set() {
        // A run whose PipelineRun still exists is spared: removing its records under the live
        // object would leave a listed run without logs. It goes once the object is deleted
        // (`ttlSecondsAfterFinished`, or by hand).
        let spare = live.iter().map(|r| run_key(r)).collect();
        let gone = st
            .store
            .meta
            .apply_retention(&retention.policy(now, spare))
            .await?;
        // The records are gone first, so no reader finds a run whose archive is missing; a
        // failure below leaves content no record names (logged), never the reverse.
        let mut failed = None;
        for key in &gone {
            let logs = st.store.content.delete_run_logs(key).await;
            let archive = st.store.content.delete_archive(key).await.map(drop);
            if let Err(e) = logs.and(archive) {
                tracing::warn!(run = %format!("{}/{}", key.namespace, key.name), error = %e, "retention: deleting the run's logs or archive failed; they stay as unnamed content");
                failed.get_or_insert(e);
            }
        }
        runs_deleted = gone.len() as u64;
        if runs_deleted > 0 {
            tracing::info!(runs = runs_deleted, "retention removed finished runs");
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    let keep: BTreeSet<String> = live
        .into_iter()
        .filter(|r| !is_terminal(r))
        .filter_map(|r| match &r.spec.source {
            Source::Upload(u) => Some(u.id.clone()),
            _ => None,
        })
        .collect();
    let mut report = st.store.gc(&keep, grace, now).await?;
    report.runs_deleted = runs_deleted;
    Ok(report)
}

/// Collect every `every` until dropped (aborted). The first collection waits one period, so a
/// replica starting (or restarting in a loop) does not collect on every start.
pub(crate) async fn collect_periodically(st: ApiState, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match collect(&st, st.config.gc_grace, st.config.retention).await {
            Ok(report) => tracing::info!(?report, "garbage collected"),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed; retried next period"),
        }
    }
}
