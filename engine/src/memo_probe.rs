//! A memoized job before its first attempt (`docs/authoring.md#memoized-jobs`): read its inputs,
//! hash them (`sparkwing_core::memo`), and look for a recent success of the same job with the
//! same hash in the run store; on a hit, take that run's outputs and artifacts.

use crate::artifact_store::LocalArtifactStore;
use crate::home::Home;
use crate::job_storage::{StorageEvent, Stores};
use crate::store::Store;
use sparkwing_core::artifact::ArtifactSpec;
use sparkwing_core::cache::workspace_path;
use sparkwing_core::memo::{self, MemoCandidate, MemoInputs, MemoSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    pub home: Home,
    pub stores: Option<Stores>,
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

    /// Hash the inputs and look for a result to take. Anything that goes wrong on the way (the
    /// store, a missing artifact of the earlier run) is a miss: the job runs.
    pub fn probe(&self, now_ms: i64) -> MemoFound {
        let hash = self.hash();
        self.lookup(&hash, now_ms)
            .unwrap_or(MemoFound::Miss { hash })
    }

    fn lookup(&self, hash: &str, now_ms: i64) -> Option<MemoFound> {
        let store = Store::open(&self.home.root).ok()?;
        let found = store.memo_results(&self.pipeline, &self.job, hash).ok()?;
        let candidates: Vec<MemoCandidate> = found.iter().map(|f| f.candidate.clone()).collect();
        let chosen = memo::choose(&candidates, now_ms, self.spec.ttl_ms)?;
        let result = found.iter().find(|f| f.candidate == *chosen)?;
        let mut events = Vec::new();
        if !self.publishes.is_empty() {
            let stores = self.stores.as_ref()?;
            let old = LocalArtifactStore::of_run(std::path::Path::new(&result.log_dir)).ok()?;
            let records = store.artifacts(&chosen.run_id).ok()?;
            for a in &self.publishes {
                let rec = records
                    .iter()
                    .find(|r| r.job_id == self.job && r.name == a.name)?;
                let src = old.stored(&self.job, &a.name)?;
                let p = stores.artifacts.publish(&self.job, &a.name, &src).ok()?;
                events.push(StorageEvent::ArtifactPublished {
                    name: a.name.clone(),
                    path: rec.path.clone(),
                    size_bytes: p.size_bytes,
                    files: p.files,
                });
            }
        }
        Some(MemoFound::Hit {
            from_run: chosen.run_id.clone(),
            outputs: result.outputs.clone(),
            events,
        })
    }
}
