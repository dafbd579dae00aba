//! Where dependency caches live (`docs/authoring.md#caches`). A [`CacheStore`] lists, restores,
//! saves and removes entries; [`LocalCacheStore`] keeps them under `$SPARKWING_HOME/caches`
//! (a runner pod uses the API's, `sparkwing_runner::stores`). Which entry to restore and which to evict
//! is decided by `sparkwing_core::cache`.

use sparkwing_core::cache::{self, CacheEntry};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The default cap on the local cache store's size (10 GiB); `SPARKWING_JOB_CACHES_MAX_BYTES`
/// changes it.
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 10 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("path {0:?} leads outside the workspace (through a symlink); it is not cached")]
    Escapes(String),
    #[error("cache entry {0} not found")]
    NotFound(String),
    #[error("{0} is not a size in bytes")]
    BadCap(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CacheError {
    let what = what.into();
    move |source| CacheError::Io { what, source }
}

/// What a save did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// This process stored the entry (its size in bytes).
    Stored(u64),
    /// Another save of the same key got there first; this one was dropped.
    AlreadyStored,
    /// The entry would be bigger than the whole store may be (its size in bytes).
    OverCap(u64),
}

/// A store of cache entries, by key.
pub trait CacheStore: Send + Sync {
    fn list(&self) -> Result<Vec<CacheEntry>, CacheError>;
    /// Unpacks entry `key` into `workspace`; returns its size. Marks it used.
    fn restore(&self, key: &str, workspace: &Path) -> Result<u64, CacheError>;
    /// Stores `paths` (relative to `workspace`; missing ones are left out) as entry `key`.
    fn save(&self, key: &str, workspace: &Path, paths: &[String]) -> Result<Saved, CacheError>;
    fn remove(&self, key: &str) -> Result<(), CacheError>;
}

/// Caches in a directory: `entries/KEY/` holds `data.tar` (its modification time is when it was
/// last used) and `created` (when it was saved, ms); saves are built in `tmp/` and renamed in,
/// so a reader never sees half an entry and of two saves of one key the first rename wins.
#[derive(Debug, Clone)]
pub struct LocalCacheStore {
    dir: PathBuf,
    cap_bytes: u64,
}

impl LocalCacheStore {
    pub fn new(dir: PathBuf, cap_bytes: u64) -> LocalCacheStore {
        LocalCacheStore { dir, cap_bytes }
    }

    /// The store of `home` with the cap from `SPARKWING_JOB_CACHES_MAX_BYTES` (else the default).
    pub fn of_home(home: &crate::home::Home) -> Result<LocalCacheStore, CacheError> {
        let cap = match std::env::var(crate::env_vars::SPARKWING_JOB_CACHES_MAX_BYTES) {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<u64>()
                .map_err(|_| CacheError::BadCap(format!("SPARKWING_JOB_CACHES_MAX_BYTES={v}")))?,
            _ => DEFAULT_MAX_CACHE_BYTES,
        };
        Ok(LocalCacheStore::new(home.caches_dir(), cap))
    }

    pub fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }

    fn entries(&self) -> PathBuf {
        self.dir.join("entries")
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.entries().join(key)
    }

    /// Drops entries least recently used first until the store fits its cap, sparing `keep`.
    pub fn evict(&self, keep: Option<&str>) -> Result<Vec<String>, CacheError> {
        let gone = cache::evictions(&self.list()?, self.cap_bytes, keep);
        for key in &gone {
            // Another process may have evicted it already.
            match self.remove(key) {
                Ok(()) | Err(CacheError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(gone)
    }

    fn tmp_dir(&self) -> Result<PathBuf, CacheError> {
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let unique = tmp.join(format!("{}-{nanos}", std::process::id()));
        std::fs::create_dir(&unique).map_err(io(format!("create {}", unique.display())))?;
        Ok(unique)
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl CacheStore for LocalCacheStore {
    fn list(&self) -> Result<Vec<CacheEntry>, CacheError> {
        let dir = self.entries();
        let read = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("read {}", dir.display()))(e)),
        };
        let mut out = Vec::new();
        for item in read.flatten() {
            let key = item.file_name().to_string_lossy().into_owned();
            // An entry removed while listing is simply not listed.
            let Ok(meta) = std::fs::metadata(item.path().join("data.tar")) else {
                continue;
            };
            let used = meta.modified().map(ms).unwrap_or(0);
            let created = std::fs::read_to_string(item.path().join("created"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(used);
            out.push(CacheEntry {
                key,
                size_bytes: meta.len(),
                created_ms: created,
                last_used_ms: used,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn restore(&self, key: &str, workspace: &Path) -> Result<u64, CacheError> {
        let data = self.entry(key).join("data.tar");
        let file = match File::open(&data) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheError::NotFound(key.to_string()))
            }
            Err(e) => return Err(io(format!("open {}", data.display()))(e)),
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        unpack(&file, workspace, key)?;
        // Marks it used for LRU; a failure only makes it look older.
        let _ = file.set_modified(SystemTime::now());
        Ok(size)
    }

    fn save(&self, key: &str, workspace: &Path, paths: &[String]) -> Result<Saved, CacheError> {
        let root = workspace
            .canonicalize()
            .map_err(io(format!("resolve {}", workspace.display())))?;
        let tmp = self.tmp_dir()?;
        let result = (|| {
            let data = tmp.join("data.tar");
            let file = File::create(&data).map_err(io(format!("create {}", data.display())))?;
            let file = archive(workspace, &root, paths, file, &data)?;
            file.sync_all()
                .map_err(io(format!("sync {}", data.display())))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            if size > self.cap_bytes {
                return Ok(Saved::OverCap(size));
            }
            let now = ms(SystemTime::now());
            std::fs::write(tmp.join("created"), now.to_string())
                .map_err(io(format!("write {}", tmp.display())))?;
            std::fs::create_dir_all(self.entries())
                .map_err(io(format!("create {}", self.entries().display())))?;
            // Renaming a directory onto an existing, non-empty one fails: the first save wins.
            match std::fs::rename(&tmp, self.entry(key)) {
                Ok(()) => Ok(Saved::Stored(size)),
                Err(_) if self.entry(key).join("data.tar").exists() => Ok(Saved::AlreadyStored),
                Err(e) => Err(io(format!("store cache {key}"))(e)),
            }
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        if let Ok(Saved::Stored(_)) = result {
            self.evict(Some(key))?;
        }
        result
    }

    fn remove(&self, key: &str) -> Result<(), CacheError> {
        let entry = self.entry(key);
        if !entry.exists() {
            return Err(CacheError::NotFound(key.to_string()));
        }
        // Moved aside first, so a restore never opens a half-deleted entry.
        let aside = self.tmp_dir()?.join("gone");
        match std::fs::rename(&entry, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheError::NotFound(key.to_string()))
            }
            Err(e) => return Err(io(format!("remove cache {key}"))(e)),
        }
        let parent = aside.parent().map(Path::to_path_buf);
        std::fs::remove_dir_all(parent.as_deref().unwrap_or(&aside))
            .map_err(io(format!("remove {}", aside.display())))
    }
}

/// Writes `paths` (relative to `workspace`, whose canonical path is `root`; missing ones are
/// left out) as a tar stream to `file` (named `data` in messages); symlinks are stored as links,
/// a path leading out of the workspace is refused. The file, flushed.
pub fn archive(
    workspace: &Path,
    root: &Path,
    paths: &[String],
    file: File,
    data: &Path,
) -> Result<File, CacheError> {
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    // Symlinks inside the cached tree are stored as links, never followed.
    builder.follow_symlinks(false);
    for rel in paths {
        let abs = workspace.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&abs) else {
            continue;
        };
        // The path itself (or a parent of it) may be a link out of the workspace.
        let real = abs
            .canonicalize()
            .map_err(io(format!("resolve {}", abs.display())))?;
        if !real.starts_with(root) {
            return Err(CacheError::Escapes(rel.clone()));
        }
        let added = if meta.is_dir() {
            builder.append_dir_all(rel, &abs)
        } else {
            builder.append_path_with_name(&abs, rel)
        };
        added.map_err(io(format!("archive {}", abs.display())))?;
    }
    let writer = builder
        .into_inner()
        .map_err(io(format!("write {}", data.display())))?;
    writer
        .into_inner()
        .map_err(|e| io(format!("write {}", data.display()))(e.into_error()))
}

/// Unpacks the tar stream of cache entry `key` in `file` into `workspace` (entries that would
/// land outside it are refused), keeping times and permissions.
pub fn unpack(file: &File, workspace: &Path, key: &str) -> Result<(), CacheError> {
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    archive.set_overwrite(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_permissions(true);
    archive.unpack(workspace).map_err(io(format!(
        "unpack cache {key} into {}",
        workspace.display()
    )))
}

/// How long ago `t` was, for listings.
pub fn age(now_ms: i64, t_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms - t_ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn save_restore_list_remove() {
        let home = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let store = LocalCacheStore::new(home.path().join("caches"), 1 << 20);
        write(ws.path(), "target/a.txt", "alpha");
        write(ws.path(), "target/sub/b.txt", "beta");
        let paths = vec!["target".to_string(), "missing".to_string()];
        assert!(matches!(
            store.save("k1", ws.path(), &paths).unwrap(),
            Saved::Stored(_)
        ));
        // A second save of the same key is dropped, and the first entry is intact.
        write(ws.path(), "target/a.txt", "changed");
        assert_eq!(
            store.save("k1", ws.path(), &paths).unwrap(),
            Saved::AlreadyStored
        );
        let other = tempfile::tempdir().unwrap();
        store.restore("k1", other.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(other.path().join("target/a.txt")).unwrap(),
            "alpha"
        );
        assert_eq!(
            std::fs::read_to_string(other.path().join("target/sub/b.txt")).unwrap(),
            "beta"
        );
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "k1");
        store.remove("k1").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            store.restore("k1", other.path()),
            Err(CacheError::NotFound(_))
        ));
        // Nothing is left behind in tmp/.
        assert_eq!(
            std::fs::read_dir(home.path().join("caches/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_symlink_out_of_the_workspace_is_not_cached() {
        let home = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("link")).unwrap();
        let store = LocalCacheStore::new(home.path().join("caches"), 1 << 20);
        let e = store
            .save("k", ws.path(), &["link".to_string()])
            .unwrap_err();
        assert!(matches!(e, CacheError::Escapes(_)), "{e}");
    }

    #[test]
    fn the_store_stays_under_its_cap() {
        let home = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        write(ws.path(), "d/f", &"x".repeat(30_000));
        // Each entry is a little over 30 kB of tar: two fit in 80 kB, three do not.
        let store = LocalCacheStore::new(home.path().join("caches"), 80_000);
        for key in ["a", "b", "c"] {
            store.save(key, ws.path(), &["d".to_string()]).unwrap();
        }
        let keys: Vec<String> = store.list().unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["b", "c"]);
        let tiny = LocalCacheStore::new(home.path().join("tiny"), 1000);
        assert!(matches!(
            tiny.save("big", ws.path(), &["d".to_string()]).unwrap(),
            Saved::OverCap(_)
        ));
        assert!(tiny.list().unwrap().is_empty());
    }
}
