//! Paths under `SPARKWING_HOME` and the cache directory.

use crate::env_vars;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Home {
    pub root: PathBuf,
    pub cache: PathBuf,
}

impl Home {
    pub fn from_env() -> Home {
        let root = std::env::var_os(env_vars::SPARKWING_HOME)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".sparkwing")
            });
        let root = std::path::absolute(&root).unwrap_or(root);
        let cache = std::env::var_os(env_vars::SPARKWING_CACHE_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("cache"));
        let cache = std::path::absolute(&cache).unwrap_or(cache);
        Home { root, cache }
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Jobs' dependency caches (`cache_store.rs`).
    pub fn caches_dir(&self) -> PathBuf {
        self.root.join("caches")
    }

    /// The artifacts a run's jobs published (`artifact_store.rs`).
    pub fn run_artifacts(run_dir: &Path) -> PathBuf {
        run_dir.join("artifacts")
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(run_id)
    }

    /// The lock a live run holds for its whole life; a reader that can take it knows the run's
    /// process is gone.
    pub fn run_lock(run_dir: &Path) -> PathBuf {
        run_dir.join("run.lock")
    }

    pub fn job_log(run_dir: &Path, job_id: &str) -> PathBuf {
        run_dir.join(format!("{job_id}.log"))
    }
}
