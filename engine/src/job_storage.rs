//! A job's caches and artifacts around each attempt: before it, consume the artifacts of its
//! needs and restore its caches; after a success, save the caches that missed and publish its
//! artifacts. The choices are `sparkwing_core::cache`'s; the stores are `cache_store` and
//! `artifact_store`. Runs on a blocking thread; what happened comes back as [`StorageEvent`]s
//! for the run's records and the job's log.

use crate::artifact_store::{self, ArtifactStore, LocalArtifactStore};
use crate::cache_store::{CacheStore, LocalCacheStore, Saved};
use serde_json::{json, Value};
use sparkwing_core::artifact::{ArtifactSpec, ConsumeSpec};
use sparkwing_core::cache::{self, CacheSpec, RestoreChoice};
use sparkwing_core::protocol::JobSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What one job's attempt does with caches and artifacts, resolved when it starts.
#[derive(Clone)]
pub struct JobStorage {
    job: String,
    workspace: PathBuf,
    workdir: Option<String>,
    caches: Vec<CacheSpec>,
    publishes: Vec<ArtifactSpec>,
    /// Each consumed artifact with the path its producer published it from.
    consumes: Vec<(ConsumeSpec, String)>,
    stores: Stores,
}

/// One thing that happened to a job's caches or artifacts.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageEvent {
    CacheRestored {
        name: String,
        key: String,
        /// `hit`, `fallback` or `miss`.
        outcome: &'static str,
        restored_key: Option<String>,
        size_bytes: Option<u64>,
        millis: u128,
        /// A restore that failed is a miss, with this warning.
        warning: Option<String>,
    },
    CacheSaved {
        name: String,
        key: String,
        /// `saved`, `already_saved`, `over_cap` or `failed`.
        saved: &'static str,
        size_bytes: Option<u64>,
        millis: u128,
        detail: Option<String>,
    },
    ArtifactConsumed {
        job: String,
        name: String,
        path: String,
    },
    ArtifactPublished {
        name: String,
        path: String,
        size_bytes: u64,
        files: u64,
    },
}

impl StorageEvent {
    /// The event's kind in the run's records.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageEvent::CacheRestored { .. } => "cache_restored",
            StorageEvent::CacheSaved { .. } => "cache_saved",
            StorageEvent::ArtifactConsumed { .. } => "artifact_consumed",
            StorageEvent::ArtifactPublished { .. } => "artifact_published",
        }
    }

    pub fn payload(&self) -> Value {
        match self {
            StorageEvent::CacheRestored {
                name,
                key,
                outcome,
                restored_key,
                size_bytes,
                warning,
                ..
            } => json!({"cache": name, "key": key, "outcome": outcome,
                "restored_key": restored_key, "size_bytes": size_bytes, "warning": warning}),
            StorageEvent::CacheSaved {
                name,
                key,
                saved,
                size_bytes,
                detail,
                ..
            } => json!({"cache": name, "key": key, "saved": saved, "size_bytes": size_bytes,
                "detail": detail}),
            StorageEvent::ArtifactConsumed { job, name, path } => {
                json!({"job": job, "artifact": name, "path": path})
            }
            StorageEvent::ArtifactPublished {
                name,
                path,
                size_bytes,
                files,
            } => json!({"artifact": name, "path": path, "size_bytes": size_bytes, "files": files}),
        }
    }

    /// The line the job's log gets.
    pub fn log_line(&self) -> String {
        match self {
            StorageEvent::CacheRestored {
                name,
                key,
                outcome,
                restored_key,
                size_bytes,
                millis,
                warning,
            } => match (warning, restored_key) {
                (Some(w), _) => format!("cache {name}: miss (key {key}; restore failed: {w})"),
                (None, Some(from)) if *outcome == "fallback" => format!(
                    "cache {name}: fallback (key {key}; restored {from}, {} in {millis} ms)",
                    bytes(size_bytes.unwrap_or(0))
                ),
                (None, Some(_)) => format!(
                    "cache {name}: hit (key {key}; restored {} in {millis} ms)",
                    bytes(size_bytes.unwrap_or(0))
                ),
                (None, None) => format!("cache {name}: miss (key {key})"),
            },
            StorageEvent::CacheSaved {
                name,
                key,
                saved,
                size_bytes,
                millis,
                detail,
            } => match *saved {
                "saved" => format!(
                    "cache {name}: saved {key} ({} in {millis} ms)",
                    bytes(size_bytes.unwrap_or(0))
                ),
                "already_saved" => {
                    format!("cache {name}: {key} was saved by another run first; kept that one")
                }
                "over_cap" => format!(
                    "cache {name}: not saved: {} is more than the whole cache store may hold",
                    bytes(size_bytes.unwrap_or(0))
                ),
                _ => format!(
                    "cache {name}: not saved: {}",
                    detail.as_deref().unwrap_or("failed")
                ),
            },
            StorageEvent::ArtifactConsumed { job, name, path } => {
                format!("artifact {name} of job {job} → {path}")
            }
            StorageEvent::ArtifactPublished {
                name,
                path,
                size_bytes,
                files,
            } => format!(
                "artifact {name} published from {path} ({}, {files} files)",
                bytes(*size_bytes)
            ),
        }
    }
}

/// Sizes as people read them (one definition, in core).
pub use sparkwing_core::artifact::human_bytes as bytes;

impl JobStorage {
    /// What job `spec` of `plan_jobs` does around its attempts, or `None` when it declares no
    /// cache or artifact.
    pub fn of(
        spec: &JobSpec,
        plan_jobs: &[JobSpec],
        workspace: &Path,
        stores: Option<&Stores>,
    ) -> Option<JobStorage> {
        if spec.caches.is_empty() && spec.publishes.is_empty() && spec.consumes.is_empty() {
            return None;
        }
        let stores = stores?.clone();
        let consumes = spec
            .consumes
            .iter()
            .map(|c| {
                let path = plan_jobs
                    .iter()
                    .find(|j| j.id == c.job)
                    .and_then(|j| j.publishes.iter().find(|a| a.name == c.name))
                    .map(|a| a.path.clone())
                    .unwrap_or_else(|| c.name.clone());
                (c.clone(), path)
            })
            .collect();
        Some(JobStorage {
            job: spec.id.clone(),
            workspace: workspace.to_path_buf(),
            workdir: spec.workdir.clone(),
            caches: spec.caches.clone(),
            publishes: spec.publishes.clone(),
            consumes,
            stores,
        })
    }

    /// `path` of this job (relative to its working directory) under the workspace; the plan was
    /// checked, so a path that leaves the workspace is an error here only if the plan was not.
    fn abs(&self, path: &str) -> Result<(String, PathBuf), String> {
        let rel =
            cache::workspace_path(self.workdir.as_deref(), path).map_err(|e| e.to_string())?;
        let abs = self.workspace.join(&rel);
        Ok((rel, abs))
    }

    /// Before an attempt: the consumed artifacts, then the caches. An artifact that cannot be
    /// had fails the attempt (the error); a cache that cannot be restored is a miss.
    pub fn before(&self, events: &mut Vec<StorageEvent>) -> Result<(), String> {
        for (c, path) in &self.consumes {
            let store = &self.stores.artifacts;
            let (rel, dest) = self.abs(path)?;
            store
                .fetch(&c.job, &c.name, &dest)
                .map_err(|e| e.to_string())?;
            events.push(StorageEvent::ArtifactConsumed {
                job: c.job.clone(),
                name: c.name.clone(),
                path: rel,
            });
        }
        for spec in &self.caches {
            events.push(self.restore(spec));
        }
        Ok(())
    }

    fn resolved_key(&self, spec: &CacheSpec) -> cache::ResolvedKey {
        let files: Vec<Option<Vec<u8>>> = spec
            .key_files
            .iter()
            .map(|f| self.abs(f).ok().and_then(|(_, p)| std::fs::read(p).ok()))
            .collect();
        cache::resolve_key(spec, &files)
    }

    fn restore(&self, spec: &CacheSpec) -> StorageEvent {
        let key = self.resolved_key(spec);
        let start = Instant::now();
        let miss = |warning: Option<String>| StorageEvent::CacheRestored {
            name: spec.name.clone(),
            key: key.key.clone(),
            outcome: "miss",
            restored_key: None,
            size_bytes: None,
            millis: start.elapsed().as_millis(),
            warning,
        };
        let store = &self.stores.caches;
        let entries = match store.list() {
            Ok(e) => e,
            Err(e) => return miss(Some(e.to_string())),
        };
        let choice = cache::choose_restore(&key, &entries);
        let from = match &choice {
            RestoreChoice::Exact(k) | RestoreChoice::Fallback(k) => k.clone(),
            RestoreChoice::Miss => return miss(None),
        };
        match store.restore(&from, &self.workspace) {
            Ok(size) => StorageEvent::CacheRestored {
                name: spec.name.clone(),
                key: key.key.clone(),
                outcome: choice.outcome(),
                restored_key: Some(from),
                size_bytes: Some(size),
                millis: start.elapsed().as_millis(),
                warning: None,
            },
            Err(e) => miss(Some(e.to_string())),
        }
    }

    /// After a successful attempt: save the caches whose restore was not a hit (`restored`:
    /// this attempt's restore events), then publish the artifacts. An artifact that cannot be
    /// published fails the job (the error); a cache that cannot be saved is only reported.
    pub fn after_success(
        &self,
        restored: &[StorageEvent],
        events: &mut Vec<StorageEvent>,
    ) -> Result<(), String> {
        for spec in &self.caches {
            let hit = restored.iter().any(|e| {
                matches!(e, StorageEvent::CacheRestored { name, outcome: "hit", .. } if *name == spec.name)
            });
            if !hit {
                events.push(self.save(spec));
            }
        }
        for a in &self.publishes {
            let store = &self.stores.artifacts;
            let (_, src) = self.abs(&a.path)?;
            if !artifact_store::inside(&self.workspace, &src) {
                return Err(artifact_store::ArtifactError::Escapes {
                    job: self.job.clone(),
                    name: a.name.clone(),
                    path: a.path.clone(),
                }
                .to_string());
            }
            let p = store
                .publish(&self.job, &a.name, &src)
                .map_err(|e| match e {
                    artifact_store::ArtifactError::Missing { job, name, .. } => {
                        artifact_store::ArtifactError::Missing {
                            job,
                            name,
                            path: a.path.clone(),
                        }
                        .to_string()
                    }
                    e => e.to_string(),
                })?;
            events.push(StorageEvent::ArtifactPublished {
                name: a.name.clone(),
                path: a.path.clone(),
                size_bytes: p.size_bytes,
                files: p.files,
            });
        }
        Ok(())
    }

    fn save(&self, spec: &CacheSpec) -> StorageEvent {
        // The key is computed again: the job may have changed its key files (a lock file
        // written by the build), and the entry should be found by the next run's key.
        let key = self.resolved_key(spec);
        let start = Instant::now();
        let done = |saved: &'static str, size: Option<u64>, detail: Option<String>| {
            StorageEvent::CacheSaved {
                name: spec.name.clone(),
                key: key.key.clone(),
                saved,
                size_bytes: size,
                millis: start.elapsed().as_millis(),
                detail,
            }
        };
        let store = &self.stores.caches;
        let mut paths = Vec::new();
        for p in &spec.paths {
            match self.abs(p) {
                Ok((rel, _)) => paths.push(rel),
                Err(e) => return done("failed", None, Some(e)),
            }
        }
        match store.save(&key.key, &self.workspace, &paths) {
            Ok(Saved::Stored(size)) => done("saved", Some(size), None),
            Ok(Saved::AlreadyStored) => done("already_saved", None, None),
            Ok(Saved::OverCap(size)) => done("over_cap", Some(size), None),
            Err(e) => done("failed", None, Some(e.to_string())),
        }
    }
}

/// The stores a run's jobs use.
#[derive(Clone)]
pub struct Stores {
    pub caches: Arc<dyn CacheStore>,
    pub artifacts: Arc<dyn ArtifactStore>,
}

/// The stores a local run uses: caches under `$SPARKWING_HOME/caches`, artifacts under the
/// run's directory; an error when one cannot be set up (a size cap that is not a number).
pub fn local_stores(home: &crate::home::Home, run_dir: &Path) -> Result<Stores, String> {
    let caches = LocalCacheStore::of_home(home).map_err(|e| e.to_string())?;
    let artifacts = LocalArtifactStore::of_run(run_dir).map_err(|e| e.to_string())?;
    Ok(Stores {
        caches: Arc::new(caches),
        artifacts: Arc::new(artifacts),
    })
}
