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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memo_store::MemoHit;
    use std::sync::Mutex;

    /// A recorded result: job, hash, outputs.
    type Recorded = (String, String, BTreeMap<String, String>);

    /// A memo store answering `found` to every lookup and keeping what is recorded.
    struct Fake {
        found: Result<Option<MemoHit>, String>,
        recorded: Mutex<Vec<Recorded>>,
    }

    impl MemoStore for Fake {
        fn lookup(&self, q: &MemoQuery<'_>) -> Result<Option<MemoHit>, String> {
            assert_eq!((q.pipeline, q.job, q.ttl_ms), ("p", "build", 60_000));
            self.found.clone()
        }
        fn record(
            &self,
            job: &str,
            hash: &str,
            outputs: &BTreeMap<String, String>,
        ) -> Result<(), String> {
            self.recorded
                .lock()
                .unwrap()
                .push((job.into(), hash.into(), outputs.clone()));
            Ok(())
        }
    }

    fn probe(dir: &std::path::Path, store: Arc<Fake>) -> MemoProbe {
        MemoProbe {
            pipeline: "p".into(),
            job: "build".into(),
            spec: MemoSpec {
                ttl_ms: 60_000,
                files: vec!["src".into()],
                args: Vec::new(),
                outputs: Vec::new(),
            },
            workspace: dir.to_path_buf(),
            workdir: None,
            args: Vec::new(),
            outputs: Vec::new(),
            publishes: Vec::new(),
            item: None,
            stores: None,
            memo: store,
            outputs_file: dir.join("build.outputs.json"),
            masker: Masker::new(["hunter2-secret".to_string()]),
        }
    }

    fn fake(found: Result<Option<MemoHit>, String>) -> Arc<Fake> {
        Arc::new(Fake {
            found,
            recorded: Mutex::new(Vec::new()),
        })
    }

    #[test]
    fn a_hit_is_taken_and_a_failed_lookup_is_a_miss_by_the_inputs_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a"), "A").unwrap();
        let hit = MemoHit {
            from_run: "r1".into(),
            outputs: BTreeMap::from([("k".to_string(), "v".to_string())]),
            events: Vec::new(),
        };
        match probe(dir.path(), fake(Ok(Some(hit)))).probe(1) {
            MemoFound::Hit {
                from_run, outputs, ..
            } => assert_eq!((from_run.as_str(), outputs["k"].as_str()), ("r1", "v")),
            MemoFound::Miss { .. } => panic!("a hit was missed"),
        }
        for found in [Ok(None), Err("the API is unreachable".to_string())] {
            let p = probe(dir.path(), fake(found));
            match p.probe(1) {
                MemoFound::Miss { hash } => assert_eq!(hash, p.hash()),
                MemoFound::Hit { .. } => panic!("a miss was taken"),
            }
        }
    }

    #[test]
    fn a_success_is_recorded_with_its_outputs_masked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("build.outputs.json"),
            r#"{"token": "x hunter2-secret y", "n": 5}"#,
        )
        .unwrap();
        let store = fake(Ok(None));
        probe(dir.path(), store.clone())
            .record_success("ab12")
            .unwrap();
        let recorded = store.recorded.lock().unwrap();
        assert_eq!(recorded.len(), 1);
        let (job, hash, outputs) = &recorded[0];
        assert_eq!((job.as_str(), hash.as_str()), ("build", "ab12"));
        assert_eq!(outputs["token"], "x *** y");
        assert_eq!(outputs["n"], "5");
    }
}
