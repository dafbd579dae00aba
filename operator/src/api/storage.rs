//! The API's storage: plain files under one directory (the data volume). Synchronous; the
//! handlers call it from `spawn_blocking`.
//!
//! ```text
//! <data-dir>/
//!   blobs/<sha[0..2]>/<sha>           file contents, uncompressed, by sha256 (written once)
//!   uploads/<id>.json                 canonical manifests, id = sha256 of the manifest
//!   logs/<ns>/<run>/<job>.jsonl       {"seq","ts","stream","line"} per line, seq 1, 2, 3, ...
//!   state/<ns>/<run>/<job>.json       the last job state a runner posted
//!   archive/<ns>/<run>.json           {"archivedAt", "run"}: finished runs, kept after deletion
//!   tokens.json                       token records (hashes only), see `auth`
//!   tmp/                              temp files, renamed into place (same filesystem)
//! ```
//!
//! Every whole-file write goes to `tmp/` first and is renamed into place, so a reader never sees
//! a half-written blob, manifest, archive or token file. Logs are appended under a lock, a batch
//! at a time, and readers only consume complete lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sparkwing_crds::pipeline_run::PipelineRun;

use super::manifest::{is_sha256_hex, Manifest};

mod logs;
mod tokens;
pub use logs::{LogPage, LogRange, INDEX_STRIDE};
pub use tokens::{tokens_apply, TokenJournal, TokenOp, TokenRecord};

/// A storage failure: the path and the IO or JSON error.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("log lock poisoned")]
    Poisoned,
}

pub(super) fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

// A stored log line is the line the API reads back, so its type is the wire's (`sparkwing-api`).
pub use sparkwing_api::wire::{IngestReport, LogRecord, LogStream as Stream};

/// What the archive index keeps of an archived run: enough for a list's view (names, creation
/// time, annotations, pipeline, trigger, phase), not its args, secrets or job states.
fn archive_summary(run: &PipelineRun) -> PipelineRun {
    let mut s = run.clone();
    s.metadata.managed_fields = None;
    s.metadata.labels = None;
    s.spec.args.clear();
    s.spec.secrets.clear();
    s.status = run
        .status
        .as_ref()
        .map(|st| sparkwing_core::reconcile::status::RunStatus {
            phase: st.phase,
            ..Default::default()
        });
    s
}

/// A blob being received into `tmp/` ([`Storage::blob_temp`]).
pub struct BlobTemp {
    path: Option<PathBuf>,
    file: std::io::BufWriter<fs::File>,
    hasher: sha2::Sha256,
    size: u64,
}

impl BlobTemp {
    pub fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        use sha2::Digest;
        self.hasher.update(data);
        self.size += data.len() as u64;
        let path = self.path.clone().unwrap_or_default();
        self.file.write_all(data).map_err(io("writing", &path))
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The sha256 of what was written, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        use sha2::Digest;
        hex::encode(self.hasher.clone().finalize())
    }
}

impl Drop for BlobTemp {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// A batch that leaves a hole: nothing of the batch is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("job {job}: expected seq {expected}, got {got}")]
    Gap {
        job: String,
        expected: u64,
        got: u64,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A finished run kept after its PipelineRun is gone.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedRun {
    pub archived_at: String,
    pub run: PipelineRun,
}

pub use sparkwing_api::wire::GcReport;

/// The data directory.
pub struct Storage {
    root: PathBuf,
    /// What the process knows of each job's log it used (see [`logs`]); serializes appends.
    logs: logs::Logs,
    /// Most bytes of one job's log.
    log_cap: u64,
    /// Summaries of archived runs, by `(namespace, name)`; `None` until first used.
    archive_index: std::sync::Mutex<Option<BTreeMap<(String, String), PipelineRun>>>,
}

/// Default cap of one job's log: 256 MiB.
pub const DEFAULT_LOG_CAP: u64 = 256 << 20;

const DIRS: &[&str] = &["blobs", "uploads", "logs", "state", "archive", "tmp"];

impl Storage {
    /// Open (and create) the layout under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        for d in DIRS {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io("creating", &p))?;
        }
        // Temp files left by writes a crash interrupted: nothing of this process writes yet, and
        // the data directory has one process (one replica), so every one of them is garbage.
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io("listing", &tmp))? {
            let path = entry.map_err(io("listing", &tmp))?.path();
            if path.is_file() {
                fs::remove_file(&path).map_err(io("removing", &path))?;
            }
        }
        Ok(Storage {
            root,
            logs: logs::Logs::default(),
            log_cap: DEFAULT_LOG_CAP,
            archive_index: std::sync::Mutex::new(None),
        })
    }

    /// Cap each job's log at `bytes` (see [`logs`]).
    #[must_use]
    pub fn with_log_cap(mut self, bytes: u64) -> Self {
        self.log_cap = bytes;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory is there and writable (readiness).
    pub fn check(&self) -> Result<(), StorageError> {
        let p = self.root.join("tmp").join(".ready");
        fs::write(&p, b"ok").map_err(io("writing", &p))?;
        fs::remove_file(&p).map_err(io("removing", &p))
    }

    /// Write `bytes` to `path` through a temp file and a rename.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        let tmp = self.temp_path(path)?;
        let result = (|| {
            let mut f = create_private(&tmp).map_err(io("creating", &tmp))?;
            f.write_all(bytes).map_err(io("writing", &tmp))?;
            f.sync_all().map_err(io("syncing", &tmp))?;
            fs::rename(&tmp, path).map_err(io("renaming into", path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, StorageError> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StorageError::Json {
                        path: path.to_path_buf(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", path)(e)),
        }
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StorageError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        self.write_atomic(path, &bytes)
    }

    // ---- blobs ----

    /// Path of a blob; `sha` must be checked hex (callers validate it).
    fn blob_path(&self, sha: &str) -> PathBuf {
        self.root.join("blobs").join(&sha[..2]).join(sha)
    }

    pub fn has_blob(&self, sha: &str) -> bool {
        is_sha256_hex(sha) && self.blob_path(sha).is_file()
    }

    /// A temp file for a blob being received: written and hashed as it streams in, so no blob
    /// is ever held in memory whole. Removed when dropped uncommitted.
    pub fn blob_temp(&self) -> Result<BlobTemp, StorageError> {
        let path = self.temp_path(&self.root.join("blobs"))?;
        let file = create_private(&path).map_err(io("creating", &path))?;
        Ok(BlobTemp {
            path: Some(path),
            file: std::io::BufWriter::with_capacity(1 << 16, file),
            hasher: sha2::Sha256::default(),
            size: 0,
        })
    }

    /// Store received blobs (their hashes checked by the caller against [`BlobTemp::sha256_hex`]):
    /// synced — the file for one, the file system once for many (a per-file fsync made a
    /// 5,000-file upload take seconds) — then renamed into place. A blob is never visible before
    /// its content is on disk. Answers, per blob, whether it was new.
    pub fn commit_blobs(&self, blobs: Vec<(String, BlobTemp)>) -> Result<Vec<bool>, StorageError> {
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut created = Vec::with_capacity(blobs.len());
        let mut keep = Vec::new();
        for (sha, mut tmp) in blobs {
            if !is_sha256_hex(&sha) || !seen.insert(sha.clone()) || self.has_blob(&sha) {
                created.push(false);
                continue;
            }
            let path = tmp.path.clone().unwrap_or_default();
            tmp.file.flush().map_err(io("writing", &path))?;
            created.push(true);
            keep.push((sha, tmp));
        }
        match keep.as_slice() {
            [] => {}
            [(_, one)] => {
                let path = one.path.clone().unwrap_or_default();
                one.file
                    .get_ref()
                    .sync_all()
                    .map_err(io("syncing", &path))?;
            }
            [(_, first), ..] => {
                let path = first.path.clone().unwrap_or_default();
                nix::unistd::syncfs(first.file.get_ref()).map_err(|e| StorageError::Io {
                    op: "syncing the file system of",
                    path,
                    source: std::io::Error::from(e),
                })?;
            }
        }
        for (sha, mut tmp) in keep {
            let dest = self.blob_path(&sha);
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).map_err(io("creating", dir))?;
            }
            let from = tmp.path.take().unwrap_or_default();
            if let Err(e) = fs::rename(&from, &dest) {
                let _ = fs::remove_file(&from);
                return Err(io("renaming into", &dest)(e));
            }
        }
        Ok(created)
    }

    /// Size in bytes of a stored blob (`None`: not stored).
    pub fn blob_size(&self, sha: &str) -> Option<u64> {
        if !is_sha256_hex(sha) {
            return None;
        }
        fs::metadata(self.blob_path(sha)).ok().map(|m| m.len())
    }

    /// A fresh temp file name for something that will be renamed to `path`.
    fn temp_path(&self, path: &Path) -> Result<PathBuf, StorageError> {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| StorageError::Io {
            op: "randomizing a temp name for",
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(self.root.join("tmp").join(hex::encode(rnd)))
    }

    pub fn read_blob(&self, sha: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if !is_sha256_hex(sha) {
            return Ok(None);
        }
        let p = self.blob_path(sha);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &p)(e)),
        }
    }

    // ---- uploads ----

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{id}.json"))
    }

    /// Store a canonical manifest under its id. Rewritten each time, which also renews its age
    /// for garbage collection.
    pub fn put_upload(&self, id: &str, manifest: &Manifest) -> Result<(), StorageError> {
        self.write_json(&self.upload_path(id), manifest)
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<Manifest>, StorageError> {
        if !is_sha256_hex(id) {
            return Ok(None);
        }
        self.read_json(&self.upload_path(id))
    }

    /// The first file of `manifest` whose stored blob's size is not the size it declares:
    /// `(path, sha256, declared, stored)`. Blobs not stored yet are not checked.
    pub fn size_mismatch(&self, manifest: &Manifest) -> Option<(String, String, u64, u64)> {
        manifest.files.iter().find_map(|e| {
            let sha = e.sha256.as_deref()?;
            let stored = self.blob_size(sha)?;
            (stored != e.size).then(|| (e.path.clone(), sha.to_string(), e.size, stored))
        })
    }

    /// Blobs of `manifest` not stored yet, sorted, once each.
    pub fn missing_blobs(&self, manifest: &Manifest) -> Vec<String> {
        manifest
            .blobs()
            .into_iter()
            .filter(|sha| !self.has_blob(sha))
            .map(String::from)
            .collect()
    }

    // ---- job states ----

    fn state_dir(&self, ns: &str, run: &str) -> PathBuf {
        self.root.join("state").join(ns).join(run)
    }

    pub fn put_job_state(
        &self,
        ns: &str,
        run: &str,
        job: &str,
        state: &serde_json::Value,
    ) -> Result<(), StorageError> {
        self.write_json(&self.state_dir(ns, run).join(format!("{job}.json")), state)
    }

    pub fn job_states(
        &self,
        ns: &str,
        run: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, StorageError> {
        let dir = self.state_dir(ns, run);
        let mut out = BTreeMap::new();
        for job in list_stems(&dir, ".json")? {
            if let Some(v) = self.read_json(&dir.join(format!("{job}.json")))? {
                out.insert(job, v);
            }
        }
        Ok(out)
    }

    // ---- archive ----

    fn archive_path(&self, ns: &str, run: &str) -> PathBuf {
        self.root
            .join("archive")
            .join(ns)
            .join(format!("{run}.json"))
    }

    pub fn write_archive(
        &self,
        ns: &str,
        run: &str,
        rec: &ArchivedRun,
    ) -> Result<(), StorageError> {
        self.write_json(&self.archive_path(ns, run), rec)?;
        let mut index = self
            .archive_index
            .lock()
            .map_err(|_| StorageError::Poisoned)?;
        if let Some(index) = index.as_mut() {
            index.insert((ns.to_string(), run.to_string()), archive_summary(&rec.run));
        }
        Ok(())
    }

    /// Run `f` on the archive index (loaded by one pass over the archive on first use, then kept
    /// up to date by [`Storage::write_archive`]): what lists need of each archived run, without
    /// reading its file.
    fn with_archive_index<T>(
        &self,
        f: impl FnOnce(&BTreeMap<(String, String), PipelineRun>) -> T,
    ) -> Result<T, StorageError> {
        let mut index = self
            .archive_index
            .lock()
            .map_err(|_| StorageError::Poisoned)?;
        if index.is_none() {
            let all = self
                .list_archive(None)?
                .into_iter()
                .map(|a| {
                    let s = archive_summary(&a.run);
                    (
                        (
                            s.metadata.namespace.clone().unwrap_or_default(),
                            s.metadata.name.clone().unwrap_or_default(),
                        ),
                        s,
                    )
                })
                .collect();
            *index = Some(all);
        }
        Ok(f(index.as_ref().ok_or(StorageError::Poisoned)?))
    }

    /// Summaries of the archived runs of `ns` (`None`: every namespace): metadata (name,
    /// namespace, creation time, annotations), the spec without args and secrets, the phase.
    pub fn archived_summaries(&self, ns: Option<&str>) -> Result<Vec<PipelineRun>, StorageError> {
        self.with_archive_index(|index| {
            index
                .iter()
                .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                .map(|(_, r)| r.clone())
                .collect()
        })
    }

    /// Whether `ns/run` is archived (`None`: no) and finished in its archived copy.
    pub fn archived_finished(&self, ns: &str, run: &str) -> Result<Option<bool>, StorageError> {
        self.with_archive_index(|index| {
            index
                .get(&(ns.to_string(), run.to_string()))
                .map(|r| r.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
        })
    }

    pub fn is_archived(&self, ns: &str, run: &str) -> bool {
        self.archive_path(ns, run).is_file()
    }

    pub fn read_archive(&self, ns: &str, run: &str) -> Result<Option<ArchivedRun>, StorageError> {
        self.read_json(&self.archive_path(ns, run))
    }

    /// Archived runs of `ns` (`None`: every namespace).
    pub fn list_archive(&self, ns: Option<&str>) -> Result<Vec<ArchivedRun>, StorageError> {
        let base = self.root.join("archive");
        let namespaces = match ns {
            Some(ns) => vec![ns.to_string()],
            None => list_dirs(&base)?,
        };
        let mut out = Vec::new();
        for ns in namespaces {
            let dir = base.join(&ns);
            for run in list_stems(&dir, ".json")? {
                if let Some(rec) = self.read_json(&dir.join(format!("{run}.json")))? {
                    out.push(rec);
                }
            }
        }
        Ok(out)
    }

    // ---- garbage collection ----

    /// Delete manifests that are neither in `keep` nor younger than `grace`, then blobs that no
    /// remaining manifest names and that are older than `grace` (a blob sent just before its
    /// manifest, or while a GC runs, is safe).
    pub fn gc(
        &self,
        keep: &BTreeSet<String>,
        grace: Duration,
        now: SystemTime,
    ) -> Result<GcReport, StorageError> {
        let young = |p: &Path| -> Result<bool, StorageError> {
            let modified = fs::metadata(p)
                .and_then(|m| m.modified())
                .map_err(io("reading the age of", p))?;
            Ok(now.duration_since(modified).unwrap_or_default() < grace)
        };
        let mut report = GcReport::default();
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        let uploads = self.root.join("uploads");
        for id in list_stems(&uploads, ".json")? {
            let path = uploads.join(format!("{id}.json"));
            if keep.contains(&id) || young(&path)? {
                if let Some(m) = self.read_json::<Manifest>(&path)? {
                    referenced.extend(m.blobs().into_iter().map(String::from));
                }
                report.uploads_kept += 1;
            } else {
                fs::remove_file(&path).map_err(io("removing", &path))?;
                report.uploads_deleted += 1;
            }
        }
        let blobs = self.root.join("blobs");
        for prefix in list_dirs(&blobs)? {
            let dir = blobs.join(&prefix);
            for entry in fs::read_dir(&dir).map_err(io("listing", &dir))? {
                let entry = entry.map_err(io("listing", &dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if referenced.contains(&name) || young(&path)? {
                    report.blobs_kept += 1;
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).map_err(io("removing", &path))?;
                report.blobs_deleted += 1;
                report.bytes_freed += size;
            }
        }
        // Temp files outlive their write only when it was interrupted; the grace period keeps
        // the ones of writes under way.
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io("listing", &tmp))? {
            let path = entry.map_err(io("listing", &tmp))?.path();
            // A write under way may rename its temp file away meanwhile: not an error.
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let old = meta
                .modified()
                .map(|m| now.duration_since(m).unwrap_or_default() >= grace)
                .unwrap_or(false);
            if meta.is_file() && old {
                match fs::remove_file(&path) {
                    Ok(()) => report.tmp_deleted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("removing", &path)(e)),
                }
            }
        }
        Ok(report)
    }
}

/// Create (truncate) a file readable by the operator's user only: tokens, sources and logs are
/// nobody else's business on the node.
pub(super) fn create_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Open a file for appending, created readable by the operator's user only (logs, the token
/// journal).
pub(super) fn append_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn list_dirs(dir: &Path) -> Result<Vec<String>, StorageError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io("listing", dir))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn list_stems(dir: &Path, suffix: &str) -> Result<Vec<String>, StorageError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io("listing", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(suffix) {
            out.push(stem.to_string());
        }
    }
    out.sort();
    Ok(out)
}
