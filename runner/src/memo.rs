//! A cluster run's memoized jobs, looked up and recorded by the API
//! (`docs/api.md#memoized-jobs`) with the run's token: [`ApiMemoStore`], the engine's
//! `MemoStore` seam. Results are shared by the runs of the run's cache scope (its repository,
//! else its pipeline) in its namespace; a hit's artifacts are registered for this run by the API
//! (no chunk moves).

use sparkwing_api::wire::{MemoLookupRequest, MemoPut};
use sparkwing_api::ApiClient;
use sparkwing_engine::job_storage::StorageEvent;
use sparkwing_engine::memo_store::{MemoHit, MemoQuery, MemoStore};
use std::collections::BTreeMap;

/// The memoized jobs of run `namespace/name`, through the API.
#[derive(Debug)]
pub struct ApiMemoStore {
    client: ApiClient,
    namespace: String,
    name: String,
}

impl ApiMemoStore {
    pub fn new(client: ApiClient, ns: &str, name: &str) -> ApiMemoStore {
        ApiMemoStore {
            client,
            namespace: ns.into(),
            name: name.into(),
        }
    }
}

impl MemoStore for ApiMemoStore {
    fn lookup(&self, q: &MemoQuery<'_>) -> Result<Option<MemoHit>, String> {
        let found = self
            .client
            .memo_lookup(
                &self.namespace,
                &self.name,
                q.job,
                &MemoLookupRequest {
                    hash: q.hash.to_string(),
                    ttl_ms: q.ttl_ms,
                    artifacts: q.publishes.iter().map(|a| a.name.clone()).collect(),
                },
            )
            .map_err(|e| format!("the memo lookup: {e}"))?;
        let Some(from_run) = found.from_run.filter(|_| found.outcome == "hit") else {
            return Ok(None);
        };
        let mut events = Vec::new();
        for a in q.publishes {
            let Some(view) = found.artifacts.iter().find(|v| v.name == a.name) else {
                return Err(format!(
                    "the API answered a hit without artifact {} of job {}",
                    a.name, q.job
                ));
            };
            events.push(StorageEvent::ArtifactPublished {
                name: a.name.clone(),
                path: a.path.clone(),
                size_bytes: view.size_bytes,
                files: view.files,
            });
        }
        Ok(Some(MemoHit {
            from_run,
            outputs: found.outputs,
            events,
        }))
    }

    fn record(
        &self,
        job: &str,
        hash: &str,
        outputs: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        self.client
            .memo_record(
                &self.namespace,
                &self.name,
                job,
                &MemoPut {
                    hash: hash.to_string(),
                    outputs: outputs.clone(),
                },
            )
            .map(drop)
            .map_err(|e| format!("recording the result: {e}"))
    }
}
