//! The source upload of `pipeline trigger`: walk the project's tree as git sees it, describe it
//! in a [`Manifest`], and send the blobs the API lacks, gzip-compressed.

/// `512 B`, `4.1 KiB`, `2.3 MiB`, `1.2 GiB`: the engine's one formatter of sizes.
pub use sparkwing_engine::job_storage::bytes as human_bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use sparkwing_core::upload_manifest::{Entry, Manifest, ManifestError, ManifestLimits};

use sparkwing_api::{ApiClient, RemoteError};

/// The API's default manifest limits (`docs/api.md`), checked before anything is sent.
pub const LIMITS: ManifestLimits = ManifestLimits {
    max_files: 100_000,
    max_total_size: 2 * 1024 * 1024 * 1024,
    max_file_size: 256 * 1024 * 1024,
};

/// Blobs sent at once.
const PARALLEL: usize = 4;
/// Tries per blob when the API cannot be reached.
const TRIES: u32 = 3;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("walking {path}: {message}")]
    Walk { path: PathBuf, message: String },
    #[error("the source tree cannot be uploaded: {0}")]
    Manifest(#[from] ManifestError),
    #[error("{path} changed while it was being uploaded; run the command again")]
    Changed { path: PathBuf },
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// A described tree: the manifest, and where each blob's content is on disk.
#[derive(Debug)]
pub struct Tree {
    pub manifest: Manifest,
    /// sha256 → a file with that content.
    pub blobs: BTreeMap<String, PathBuf>,
    /// What was left out, with why (symlinks leaving the root, non-UTF-8 names).
    pub skipped: Vec<String>,
}

/// Describe `root` as git sees it (`.gitignore` respected, `.git/` and `target/` left out).
pub fn scan(root: &Path) -> Result<Tree, UploadError> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut blobs = BTreeMap::new();
    let mut skipped = Vec::new();
    for entry in sparkwing_engine::compile::source_walker(root) {
        let entry = entry.map_err(|e| UploadError::Walk {
            path: root.to_path_buf(),
            message: e.to_string(),
        })?;
        if entry.depth() == 0 {
            continue;
        }
        let Some(ty) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(path);
        let Some(rel_str) = rel.to_str().map(str::to_string) else {
            skipped.push(format!("{}: the name is not UTF-8", rel.to_string_lossy()));
            continue;
        };
        if ty.is_symlink() {
            let target = std::fs::read_link(path).map_err(|source| UploadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            match relative_target(rel, &target, root) {
                Some(t) => files.push(Entry {
                    path: rel_str,
                    mode: 0,
                    size: 0,
                    sha256: None,
                    symlink: Some(t),
                }),
                None => skipped.push(format!(
                    "{rel_str}: symlink to {} leaves the project",
                    target.display()
                )),
            }
        } else if ty.is_file() {
            let meta = std::fs::metadata(path).map_err(|source| UploadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let (sha, size) = hash_file(path)?;
            blobs
                .entry(sha.clone())
                .or_insert_with(|| path.to_path_buf());
            files.push(Entry {
                path: rel_str,
                mode: meta.permissions().mode() & 0o777,
                size,
                sha256: Some(sha),
                symlink: None,
            });
        }
    }
    let manifest = Manifest { files }.canonical();
    manifest.validate(&LIMITS)?;
    Ok(Tree {
        manifest,
        blobs,
        skipped,
    })
}

/// A symlink's target as a path relative to the link's directory, when it stays inside `root`.
fn relative_target(link_rel: &Path, target: &Path, root: &Path) -> Option<String> {
    let link_dir = link_rel.parent().unwrap_or(Path::new(""));
    // Resolve lexically to a path relative to the root.
    let joined = if target.is_absolute() {
        target.strip_prefix(root).ok()?.to_path_buf()
    } else {
        link_dir.join(target)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => return None,
        }
    }
    if target.is_relative() {
        let t = target.to_str()?;
        // Keep the author's relative form, cleaned of `./` and trailing `/`.
        let cleaned: Vec<&str> = t
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if !cleaned.is_empty() {
            return Some(cleaned.join("/"));
        }
        return None;
    }
    // An absolute target inside the root: the relative path from the link's directory.
    let depth = link_dir.components().count();
    let mut rel: Vec<String> = vec!["..".to_string(); depth];
    rel.extend(parts);
    if rel.is_empty() {
        // A link to the root itself.
        return None;
    }
    Some(rel.join("/"))
}

fn hash_file(path: &Path) -> Result<(String, u64), UploadError> {
    let io = |source| UploadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex(&h.finalize()), size))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What an upload did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReport {
    /// The upload id (the canonical manifest's sha256).
    pub id: String,
    /// Files (not symlinks) in the tree.
    pub files: usize,
    /// Symlinks in the tree.
    pub symlinks: usize,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// Files whose content the API lacked (and that were sent).
    pub uploaded_files: usize,
    /// Bytes of those files (files with the same content counted each).
    pub uploaded_bytes: u64,
    /// Distinct blobs sent.
    pub blobs_sent: usize,
    /// Uncompressed bytes of the blobs sent.
    pub bytes_sent: u64,
    /// Bytes on the wire for the blobs (gzip-compressed).
    pub compressed_bytes_sent: u64,
    /// Files the API already had.
    pub unchanged_files: usize,
    /// Entries left out, with why.
    pub skipped: Vec<String>,
}

impl UploadReport {
    /// `uploaded 3 of 120 files (4.1 KiB of 2.3 MiB, 1.9 KiB compressed; 117 unchanged)`.
    pub fn summary(&self) -> String {
        format!(
            "uploaded {} of {} files ({} of {}, {} bytes sent compressed; {} unchanged)",
            self.uploaded_files,
            self.files,
            human_bytes(self.uploaded_bytes),
            human_bytes(self.total_bytes),
            self.compressed_bytes_sent,
            self.unchanged_files
        )
    }
}

/// Gzip `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Describe `root`, post the manifest, and send what the API lacks. Progress goes to stderr: a
/// bar on a terminal, nothing otherwise (the caller prints [`UploadReport::summary`]).
pub fn upload(client: &ApiClient, root: &Path) -> Result<UploadReport, UploadError> {
    let tree = scan(root)?;
    let answer = client.create_upload(&tree.manifest)?;
    let missing: BTreeSet<String> = answer.missing.iter().cloned().collect();
    let files: Vec<&Entry> = tree
        .manifest
        .files
        .iter()
        .filter(|e| e.sha256.is_some())
        .collect();
    let uploaded: Vec<&&Entry> = files
        .iter()
        .filter(|e| e.sha256.as_ref().is_some_and(|s| missing.contains(s)))
        .collect();
    let uploaded_files = uploaded.len();
    let uploaded_bytes = uploaded.iter().map(|e| e.size).sum();
    let mut work: Vec<(String, PathBuf)> = Vec::new();
    for sha in &missing {
        match tree.blobs.get(sha) {
            Some(p) => work.push((sha.clone(), p.clone())),
            None => {
                return Err(RemoteError::Decode {
                    what: "the upload answer".into(),
                    message: format!("it asks for blob {sha}, which the tree does not have"),
                }
                .into())
            }
        }
    }
    let sizes: BTreeMap<&str, u64> = files
        .iter()
        .filter_map(|e| e.sha256.as_deref().map(|s| (s, e.size)))
        .collect();
    let total_missing: u64 = work
        .iter()
        .map(|(sha, _)| sizes.get(sha.as_str()).copied().unwrap_or(0))
        .sum();
    let bar = Bar::new(work.len(), total_missing);
    let done_bytes = AtomicU64::new(0);
    let wire_bytes = AtomicU64::new(0);
    let done_blobs = AtomicUsize::new(0);
    // Small blobs travel in batches (one request per small file costs more than the file); a
    // blob of BATCH_BYTES or more goes alone.
    let mut batches: Vec<Vec<(String, PathBuf)>> = Vec::new();
    let mut current: Vec<(String, PathBuf)> = Vec::new();
    let mut current_bytes = 0u64;
    for (sha, path) in work {
        let size = sizes.get(sha.as_str()).copied().unwrap_or(0);
        if size >= BATCH_BYTES {
            batches.push(vec![(sha, path)]);
            continue;
        }
        if current_bytes + size > BATCH_BYTES || current.len() >= BATCH_FILES {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += size;
        current.push((sha, path));
    }
    if !current.is_empty() {
        batches.push(current);
    }
    let batched = AtomicBool::new(true);
    let queue = Mutex::new(batches);
    let first_error: Mutex<Option<UploadError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let Some(batch) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                    return;
                };
                let sent = if batch.len() > 1 && batched.load(Ordering::Relaxed) {
                    match send_batch(client, &batch) {
                        Err(UploadError::Remote(e)) if is_before_batches(&e) => {
                            batched.store(false, Ordering::Relaxed);
                            send_each(client, &batch)
                        }
                        other => other,
                    }
                } else {
                    send_each(client, &batch)
                };
                match sent {
                    Ok((raw, wire)) => {
                        done_bytes.fetch_add(raw, Ordering::Relaxed);
                        wire_bytes.fetch_add(wire, Ordering::Relaxed);
                        let n = done_blobs.fetch_add(batch.len(), Ordering::Relaxed) + batch.len();
                        bar.show(n, done_bytes.load(Ordering::Relaxed));
                    }
                    Err(e) => {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    bar.finish();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(UploadReport {
        id: answer.id,
        files: files.len(),
        symlinks: tree.manifest.files.len() - files.len(),
        total_bytes: tree.manifest.total_size(),
        uploaded_files,
        uploaded_bytes,
        blobs_sent: done_blobs.into_inner(),
        bytes_sent: done_bytes.into_inner(),
        compressed_bytes_sent: wire_bytes.into_inner(),
        unchanged_files: files.len() - uploaded_files,
        skipped: tree.skipped,
    })
}

/// A blob batch's most uncompressed bytes, and most files.
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_FILES: usize = 1000;

/// An API from before `POST /api/v1/blobs` answers 404 or 405: send one blob at a time.
fn is_before_batches(e: &RemoteError) -> bool {
    matches!(e.status(), Some(404 | 405))
}

/// Read a blob's file and check it still has the content the manifest names.
fn read_checked(sha: &str, path: &Path) -> Result<Vec<u8>, UploadError> {
    let data = std::fs::read(path).map_err(|source| UploadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if sparkwing_core::upload_manifest::sha256_hex(&data) != sha {
        return Err(UploadError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(data)
}

/// Send blobs in one `POST /api/v1/blobs`: one gzip stream of `<sha256> <size>\n<content>`
/// frames (compressing across files). Returns (raw, compressed) bytes.
fn send_batch(client: &ApiClient, batch: &[(String, PathBuf)]) -> Result<(u64, u64), UploadError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut raw = 0u64;
    for (sha, path) in batch {
        let data = read_checked(sha, path)?;
        raw += data.len() as u64;
        // Writing to a Vec cannot fail.
        let _ = writeln!(enc, "{sha} {}", data.len());
        let _ = enc.write_all(&data);
    }
    let gz = enc.finish().unwrap_or_default();
    let wire = gz.len() as u64;
    let mut tries = 0;
    loop {
        tries += 1;
        match client.put_blobs(&gz) {
            Ok(_) => return Ok((raw, wire)),
            Err(e) if e.is_unreachable() && tries < TRIES => {
                std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(tries)));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Send blobs one `PUT` each; returns (raw, compressed) bytes.
fn send_each(client: &ApiClient, batch: &[(String, PathBuf)]) -> Result<(u64, u64), UploadError> {
    let (mut raw, mut wire) = (0, 0);
    for (sha, path) in batch {
        let (r, w) = send_blob(client, sha, path)?;
        raw += r;
        wire += w;
    }
    Ok((raw, wire))
}

/// Read, check, compress and PUT one blob; returns (raw, compressed) bytes.
fn send_blob(client: &ApiClient, sha: &str, path: &Path) -> Result<(u64, u64), UploadError> {
    let data = read_checked(sha, path)?;
    let gz = gzip(&data);
    let wire = gz.len() as u64;
    let mut tries = 0;
    loop {
        tries += 1;
        match client.put_blob(sha, &gz) {
            Ok(_) => return Ok((data.len() as u64, wire)),
            Err(e) if e.is_unreachable() && tries < TRIES => {
                std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(tries)));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A progress bar on stderr when it is a terminal.
struct Bar {
    tty: bool,
    blobs: usize,
    bytes: u64,
    last: Mutex<std::time::Instant>,
}

impl Bar {
    fn new(blobs: usize, bytes: u64) -> Bar {
        Bar {
            tty: std::io::stderr().is_terminal() && blobs > 0,
            blobs,
            bytes,
            last: Mutex::new(std::time::Instant::now()),
        }
    }

    fn show(&self, done: usize, bytes: u64) {
        if !self.tty {
            return;
        }
        if let Ok(mut last) = self.last.lock() {
            if done < self.blobs && last.elapsed() < std::time::Duration::from_millis(100) {
                return;
            }
            *last = std::time::Instant::now();
        }
        let width = 30usize;
        let frac = if self.bytes == 0 {
            done as f64 / self.blobs.max(1) as f64
        } else {
            bytes as f64 / self.bytes as f64
        };
        let filled = ((frac * width as f64) as usize).min(width);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kuploading [{}{}] {done}/{} files, {} of {}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.blobs,
            human_bytes(bytes),
            human_bytes(self.bytes)
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_stay_inside() {
        let root = Path::new("/r");
        assert_eq!(
            relative_target(Path::new("docs/latest"), Path::new("v2"), root).as_deref(),
            Some("v2")
        );
        assert_eq!(
            relative_target(Path::new("a/b/l"), Path::new("../c"), root).as_deref(),
            Some("../c")
        );
        assert_eq!(
            relative_target(Path::new("a/l"), Path::new("../../outside"), root),
            None
        );
        assert_eq!(
            relative_target(Path::new("a/l"), Path::new("/r/x/y"), root).as_deref(),
            Some("../x/y")
        );
        assert_eq!(
            relative_target(Path::new("l"), Path::new("/etc/passwd"), root),
            None
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(4200), "4.1 KiB");
        assert_eq!(human_bytes(2_411_724), "2.3 MiB");
    }

    #[test]
    fn scan_describes_files_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join(".sparkwing/src")).unwrap();
        std::fs::create_dir_all(r.join("target/debug")).unwrap();
        std::fs::create_dir_all(r.join(".git")).unwrap();
        std::fs::write(r.join(".git/HEAD"), "x").unwrap();
        std::fs::write(r.join("target/debug/big"), "x").unwrap();
        std::fs::write(r.join(".sparkwing/src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(r.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(r.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(r.join("x.log"), "noise").unwrap();
        std::os::unix::fs::symlink("run.sh", r.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("bad")).unwrap();
        let t = scan(r).unwrap();
        let paths: Vec<&str> = t.manifest.files.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [".gitignore", ".sparkwing/src/main.rs", "link", "run.sh"]
        );
        let sh = &t.manifest.files[3];
        assert_eq!(sh.mode, 0o755);
        assert_eq!(sh.size, 10);
        assert_eq!(t.manifest.files[2].symlink.as_deref(), Some("run.sh"));
        assert_eq!(t.skipped.len(), 1, "{:?}", t.skipped);
        assert!(t.skipped[0].starts_with("bad:"), "{:?}", t.skipped);
    }
}
