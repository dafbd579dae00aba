//! Where artifacts live (`docs/authoring.md#artifacts`). An [`ArtifactStore`] keeps what a run's
//! jobs publish and hands it to the jobs that consume it and to `sparkwing runs artifacts`;
//! [`LocalArtifactStore`] copies under the run's directory (a runner pod uses the API's,
//! `sparkwing_runner::stores`).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "artifact {name} of job {job}: {path} does not exist (publish a path the job creates)"
    )]
    Missing {
        job: String,
        name: String,
        path: String,
    },
    #[error("artifact {name} of job {job} is {size} bytes, over the cap of {cap} bytes (SPARKWING_ARTIFACT_MAX_BYTES)")]
    TooLarge {
        job: String,
        name: String,
        size: u64,
        cap: u64,
    },
    #[error(
        "artifact {name} of job {job}: {path} leads outside the workspace (through a symlink)"
    )]
    Escapes {
        job: String,
        name: String,
        path: String,
    },
    #[error("artifact {name} of job {job} not found")]
    NotFound { job: String, name: String },
    #[error("{0} is not a size in bytes")]
    BadCap(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArtifactError {
    let what = what.into();
    move |source| ArtifactError::Io { what, source }
}

/// What a published artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub size_bytes: u64,
    pub files: u64,
}

/// The artifacts of one run.
pub trait ArtifactStore: Send + Sync {
    /// Keeps the file or directory `src` as artifact `name` of `job`.
    fn publish(&self, job: &str, name: &str, src: &Path) -> Result<Published, ArtifactError>;
    /// Puts artifact `name` of `job` at `dest` (a file or directory, as published).
    fn fetch(&self, job: &str, name: &str, dest: &Path) -> Result<(), ArtifactError>;
}

/// A run's artifacts in `DIR/JOB/NAME/data` (a copy of the file or directory).
#[derive(Debug, Clone)]
pub struct LocalArtifactStore {
    dir: PathBuf,
    cap_bytes: u64,
}

impl LocalArtifactStore {
    pub fn new(dir: PathBuf, cap_bytes: u64) -> LocalArtifactStore {
        LocalArtifactStore { dir, cap_bytes }
    }

    /// The store of a run's directory, with the cap from `SPARKWING_ARTIFACT_MAX_BYTES`.
    pub fn of_run(run_dir: &Path) -> Result<LocalArtifactStore, ArtifactError> {
        Ok(LocalArtifactStore::new(
            crate::home::Home::run_artifacts(run_dir),
            cap_from_env()?,
        ))
    }

    fn data(&self, job: &str, name: &str) -> PathBuf {
        self.dir.join(job).join(name).join("data")
    }

    /// Where artifact `name` of `job` is kept, if it is (a memoized job takes an earlier run's).
    pub fn stored(&self, job: &str, name: &str) -> Option<PathBuf> {
        let data = self.data(job, name);
        std::fs::symlink_metadata(&data).ok().map(|_| data)
    }
}

/// The cap on one artifact's size: `SPARKWING_ARTIFACT_MAX_BYTES`, else the default.
pub fn cap_from_env() -> Result<u64, ArtifactError> {
    match std::env::var(crate::env_vars::SPARKWING_ARTIFACT_MAX_BYTES) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .map_err(|_| ArtifactError::BadCap(format!("SPARKWING_ARTIFACT_MAX_BYTES={v}"))),
        _ => Ok(sparkwing_core::artifact::DEFAULT_MAX_ARTIFACT_BYTES),
    }
}

/// Size and file count of a file or tree (symlinks count as files of their own size).
pub fn measure(src: &Path) -> Result<Published, ArtifactError> {
    let mut out = Published {
        size_bytes: 0,
        files: 0,
    };
    for item in walkdir::WalkDir::new(src).follow_links(false) {
        let item = item.map_err(|e| io(format!("read {}", src.display()))(e.into()))?;
        if !item.file_type().is_dir() {
            let meta = item
                .metadata()
                .map_err(|e| io(format!("read {}", item.path().display()))(e.into()))?;
            out.size_bytes += meta.len();
            out.files += 1;
        }
    }
    Ok(out)
}

/// Copies a file or tree; symlinks are copied as links.
fn copy_tree(src: &Path, dest: &Path) -> Result<(), ArtifactError> {
    for item in walkdir::WalkDir::new(src).follow_links(false) {
        let item = item.map_err(|e| io(format!("read {}", src.display()))(e.into()))?;
        let rel = item.path().strip_prefix(src).unwrap_or(Path::new(""));
        let to = if rel.as_os_str().is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(rel)
        };
        let ft = item.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&to).map_err(io(format!("create {}", to.display())))?;
        } else {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("create {}", parent.display())))?;
            }
            // Replace, never write through: the destination may be a link or in use.
            match std::fs::remove_file(&to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("replace {}", to.display()))(e)),
            }
            if ft.is_symlink() {
                let target = std::fs::read_link(item.path())
                    .map_err(io(format!("read {}", item.path().display())))?;
                std::os::unix::fs::symlink(&target, &to)
                    .map_err(io(format!("link {}", to.display())))?;
            } else {
                std::fs::copy(item.path(), &to).map_err(io(format!(
                    "copy {} to {}",
                    item.path().display(),
                    to.display()
                )))?;
            }
        }
    }
    Ok(())
}

impl ArtifactStore for LocalArtifactStore {
    fn publish(&self, job: &str, name: &str, src: &Path) -> Result<Published, ArtifactError> {
        if std::fs::symlink_metadata(src).is_err() {
            return Err(ArtifactError::Missing {
                job: job.into(),
                name: name.into(),
                path: src.display().to_string(),
            });
        }
        let size = measure(src)?;
        if size.size_bytes > self.cap_bytes {
            return Err(ArtifactError::TooLarge {
                job: job.into(),
                name: name.into(),
                size: size.size_bytes,
                cap: self.cap_bytes,
            });
        }
        let data = self.data(job, name);
        let tmp = data.with_file_name("data.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_file(&tmp);
        copy_tree(src, &tmp)?;
        let _ = std::fs::remove_dir_all(&data);
        let _ = std::fs::remove_file(&data);
        std::fs::rename(&tmp, &data).map_err(io(format!("store {}", data.display())))?;
        Ok(size)
    }

    fn fetch(&self, job: &str, name: &str, dest: &Path) -> Result<(), ArtifactError> {
        let data = self.data(job, name);
        if std::fs::symlink_metadata(&data).is_err() {
            return Err(ArtifactError::NotFound {
                job: job.into(),
                name: name.into(),
            });
        }
        copy_tree(&data, dest)
    }
}

/// Refuses `abs` when it resolves outside `root` (a symlink out of the workspace).
pub fn inside(root: &Path, abs: &Path) -> bool {
    match (root.canonicalize(), abs.canonicalize()) {
        (Ok(r), Ok(a)) => a.starts_with(r),
        // A path that does not exist yet cannot lead anywhere.
        (Ok(_), Err(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_then_fetch_a_tree_and_a_file() {
        let run = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("dist/sub")).unwrap();
        std::fs::write(ws.path().join("dist/a"), "alpha").unwrap();
        std::fs::write(ws.path().join("dist/sub/b"), "beta").unwrap();
        let store = LocalArtifactStore::new(run.path().join("artifacts"), 1 << 20);
        let p = store
            .publish("build", "dist", &ws.path().join("dist"))
            .unwrap();
        assert_eq!(
            p,
            Published {
                size_bytes: 9,
                files: 2
            }
        );
        store
            .publish("build", "one", &ws.path().join("dist/a"))
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        store.fetch("build", "dist", &out.path().join("d")).unwrap();
        store.fetch("build", "one", &out.path().join("f")).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("d/sub/b")).unwrap(),
            "beta"
        );
        assert_eq!(
            std::fs::read_to_string(out.path().join("f")).unwrap(),
            "alpha"
        );
        let e = store.fetch("build", "nope", out.path()).unwrap_err();
        assert_eq!(e.to_string(), "artifact nope of job build not found");
        let e = store
            .publish("build", "x", &ws.path().join("absent"))
            .unwrap_err();
        assert!(matches!(e, ArtifactError::Missing { .. }), "{e}");
        let small = LocalArtifactStore::new(run.path().join("small"), 4);
        let e = small
            .publish("build", "dist", &ws.path().join("dist"))
            .unwrap_err();
        assert!(e.to_string().contains("over the cap of 4 bytes"), "{e}");
    }
}
