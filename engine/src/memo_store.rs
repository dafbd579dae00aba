//! Where a memoized job's results are looked up and recorded (`docs/authoring.md#memoized-jobs`):
//! the [`MemoStore`] seam. A local run uses [`LocalMemoStore`], this machine's run store (a
//! success is the job's row with its input hash); a runner pod plugs in the cluster API's
//! through `RunRequest::memo`, shared by the runs of the repository in its namespace.

use crate::artifact_store::{ArtifactStore, LocalArtifactStore};
use crate::home::Home;
use crate::job_storage::StorageEvent;
use crate::store::Store;
use sparkwing_core::artifact::ArtifactSpec;
use sparkwing_core::memo::{self, MemoCandidate};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What a lookup asks: job `job` of `pipeline` with input `hash`, a result at most `ttl_ms` old
/// at `now_ms`, with each of the job's artifacts `publishes`.
pub struct MemoQuery<'a> {
    pub pipeline: &'a str,
    pub job: &'a str,
    pub hash: &'a str,
    pub ttl_ms: u64,
    pub now_ms: i64,
    pub publishes: &'a [ArtifactSpec],
    /// This run's artifact store (set when the job publishes any): where a hit's artifacts go.
    pub artifacts: Option<&'a Arc<dyn ArtifactStore>>,
}

/// A result to take: run `from_run`'s outputs, and its artifacts, already this run's.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoHit {
    pub from_run: String,
    pub outputs: BTreeMap<String, String>,
    /// One `ArtifactPublished` per artifact taken.
    pub events: Vec<StorageEvent>,
}

/// Where a memoized job's results are looked up and recorded. Errors are text: a failed lookup
/// is a miss (the job runs), a failed record a warning.
pub trait MemoStore: Send + Sync {
    /// The newest success of the job with the same input hash within the TTL whose artifacts
    /// are all still there (then they are this run's); `None`: a miss.
    fn lookup(&self, q: &MemoQuery<'_>) -> Result<Option<MemoHit>, String>;
    /// A memoized job of this run succeeded with input `hash` and these (masked) outputs, its
    /// artifacts published.
    fn record(
        &self,
        job: &str,
        hash: &str,
        outputs: &BTreeMap<String, String>,
    ) -> Result<(), String>;
}

/// The results of this machine's runs: the run store's successful jobs with their input hash.
pub struct LocalMemoStore {
    home: Home,
}

impl LocalMemoStore {
    pub fn new(home: Home) -> LocalMemoStore {
        LocalMemoStore { home }
    }
}

impl MemoStore for LocalMemoStore {
    fn lookup(&self, q: &MemoQuery<'_>) -> Result<Option<MemoHit>, String> {
        let store = Store::open(&self.home.root).map_err(|e| e.to_string())?;
        let found = store
            .memo_results(q.pipeline, q.job, q.hash)
            .map_err(|e| e.to_string())?;
        let candidates: Vec<MemoCandidate> = found.iter().map(|f| f.candidate.clone()).collect();
        let Some(chosen) = memo::choose(&candidates, q.now_ms, q.ttl_ms) else {
            return Ok(None);
        };
        let Some(result) = found.iter().find(|f| f.candidate == *chosen) else {
            return Ok(None);
        };
        let mut events = Vec::new();
        if !q.publishes.is_empty() {
            let Some(artifacts) = q.artifacts else {
                return Ok(None);
            };
            let old = LocalArtifactStore::of_run(Path::new(&result.log_dir))
                .map_err(|e| e.to_string())?;
            let records = store.artifacts(&chosen.run_id).map_err(|e| e.to_string())?;
            for a in q.publishes {
                // An artifact that is gone: a miss.
                let Some(rec) = records
                    .iter()
                    .find(|r| r.job_id == q.job && r.name == a.name)
                else {
                    return Ok(None);
                };
                let Some(src) = old.stored(q.job, &a.name) else {
                    return Ok(None);
                };
                let p = artifacts
                    .publish(q.job, &a.name, &src)
                    .map_err(|e| e.to_string())?;
                events.push(StorageEvent::ArtifactPublished {
                    name: a.name.clone(),
                    path: rec.path.clone(),
                    size_bytes: p.size_bytes,
                    files: p.files,
                });
            }
        }
        Ok(Some(MemoHit {
            from_run: chosen.run_id.clone(),
            outputs: result.outputs.clone(),
            events,
        }))
    }

    /// Nothing to add: the run's records hold the job's input hash (set when it started) and
    /// its success.
    fn record(&self, _: &str, _: &str, _: &BTreeMap<String, String>) -> Result<(), String> {
        Ok(())
    }
}
