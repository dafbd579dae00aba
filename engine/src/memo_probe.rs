//! A memoized job before its first attempt (`docs/authoring.md#memoized-jobs`): read its inputs,
//! hash them (`sparkwing_core::memo`), and look for a recent success of the same job with the
//! same hash in the run's memo store (`memo_store`: this machine's run store, or the cluster
//! API); on a hit, take that run's outputs and artifacts. After a success, record it there.

use crate::job_storage::{StorageEvent, Stores};
use crate::memo_store::{MemoQuery, MemoStore};
use sparkwing_core::artifact::ArtifactSpec;
use sparkwing_core::cache::workspace_path;
use sparkwing_core::mask::Masker;
use sparkwing_core::memo::{self, MemoInputs, MemoSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What a memoized job's probe needs, gathered when the job starts.
pub struct MemoProbe {
    pub pipeline: String,
    pub job: String,
    pub spec: MemoSpec,
    pub workspace: PathBuf,
    pub workdir: Option<String>,
    /// The declared args' values as JSON text, `None` when not given.
    pub args: Vec<(String, Option<String>)>,
    /// The declared outputs of its needs, `None` when not set.
    pub outputs: Vec<(String, String, Option<String>)>,
    pub publishes: Vec<ArtifactSpec>,
    /// A job expanded from a fan-out or matrix: its item, part of the hash.
    pub item: Option<String>,
    pub stores: Option<Stores>,
    /// Where results are looked up and recorded (`RunRequest::memo`, else the run store).
    pub memo: Arc<dyn MemoStore>,
    /// The job's outputs file, read after a success.
    pub outputs_file: PathBuf,
    pub masker: Masker,
}

/// What the probe found.
pub enum MemoFound {
    /// Take run `from_run`'s result: its outputs, and its artifacts (already copied in).
    Hit {
        from_run: String,
        outputs: BTreeMap<String, String>,
        events: Vec<StorageEvent>,
    },
    /// Run the job; a success is found later by `hash`.
    Miss { hash: String },
}

impl MemoProbe {
    /// Each file under the declared paths, relative to the workspace, with its content
    /// (symlinks count by their target's name).
    fn files(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for path in &self.spec.files {
            let Ok(rel) = workspace_path(self.workdir.as_deref(), path) else {
                out.push((path.clone(), None));
                continue;
            };
            let abs = self.workspace.join(&rel);
            if std::fs::symlink_metadata(&abs).is_err() {
                out.push((rel, None));
                continue;
            }
            for item in walkdir::WalkDir::new(&abs)
                .follow_links(false)
                .into_iter()
                .flatten()
            {
                let ft = item.file_type();
                if ft.is_dir() {
                    continue;
                }
                let name = item
                    .path()
                    .strip_prefix(&self.workspace)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let content = if ft.is_symlink() {
                    std::fs::read_link(item.path())
                        .ok()
                        .map(|t| t.to_string_lossy().into_owned().into_bytes())
                } else {
                    std::fs::read(item.path()).ok()
                };
                out.push((name, content));
            }
        }
        out
    }

    pub fn hash(&self) -> String {
        memo::memo_hash(&MemoInputs {
            pipeline: self.pipeline.clone(),
            job: self.job.clone(),
            files: self.files(),
            args: self.args.clone(),
            outputs: self.outputs.clone(),
            item: self.item.clone(),
        })
    }

    /// Hash the inputs and look for a result to take in the run's memo store. Anything that
    /// goes wrong on the way (the store, a missing artifact of the earlier run) is a miss: the
    /// job runs.
    pub fn probe(&self, now_ms: i64) -> MemoFound {
        let hash = self.hash();
        let query = MemoQuery {
            pipeline: &self.pipeline,
            job: &self.job,
            hash: &hash,
            ttl_ms: self.spec.ttl_ms,
            now_ms,
            publishes: &self.publishes,
            artifacts: self.stores.as_ref().map(|s| &s.artifacts),
        };
        match self.memo.lookup(&query) {
            Ok(Some(hit)) => MemoFound::Hit {
                from_run: hit.from_run,
                outputs: hit.outputs,
                events: hit.events,
            },
            Ok(None) => MemoFound::Miss { hash },
            Err(e) => {
                tracing::warn!(
                    "memoized job {}: looking up a result failed ({e}); it runs",
                    self.job
                );
                MemoFound::Miss { hash }
            }
        }
    }

    /// The job ran and succeeded with input `hash`: record it in the memo store with its
    /// outputs (masked, as the run's records keep them).
    pub fn record_success(&self, hash: &str) -> Result<(), String> {
        let outputs = std::fs::read_to_string(&self.outputs_file)
            .map(|t| read_outputs(&t))
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, self.masker.mask(&v).into_owned()))
            .collect();
        self.memo.record(&self.job, hash, &outputs)
    }
}

/// A job's outputs file (a JSON object) as names and values: a string as it is, anything else as
/// its JSON text; not an object: none.
pub fn read_outputs(text: &str) -> BTreeMap<String, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}
