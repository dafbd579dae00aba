//! Writing a run's uploaded source to disk on the runner: fetch the upload's manifest, check it
//! as the API does (`Manifest::materialise_plan`), then create its directories, files (each
//! blob's sha256 and size checked against the manifest) and symlinks in a fresh directory.
//!
//! Nothing is written through a symlink: directories are made with `mkdir` (which never follows
//! one), files with `O_CREAT|O_EXCL|O_NOFOLLOW` in directories this code just made and checked,
//! and the manifest's symlinks last, when every file is in place.

use sparkwing_api::{ApiClient, RemoteError};
use sparkwing_core::upload_manifest::{sha256_hex, Manifest, ManifestError, ManifestLimits, Op};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    #[error("cannot fetch the manifest of upload {id}: {source}")]
    Manifest {
        id: String,
        #[source]
        source: RemoteError,
    },
    #[error("upload {id} has an invalid manifest: {source}")]
    Invalid {
        id: String,
        #[source]
        source: ManifestError,
    },
    #[error("cannot fetch {path} (blob {sha256}): {source}")]
    Fetch {
        path: String,
        sha256: String,
        #[source]
        source: RemoteError,
    },
    #[error("{path}: the fetched content does not match the manifest ({what}); the upload's blob is corrupt or was tampered with: upload the source again")]
    Mismatch { path: String, what: String },
    #[error("{path}: {what} (the runner writes only into a fresh directory it made)")]
    Unsafe { path: String, what: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MaterialiseError + '_ {
    move |source| MaterialiseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialised {
    pub root: PathBuf,
    pub files: usize,
    pub symlinks: usize,
    pub bytes: u64,
    /// Blobs fetched (a content used by several files is fetched once).
    pub fetched: usize,
}

/// Fetch upload `id` with `client` and write it into `dest`, which must not exist yet (its
/// parent is created).
pub fn materialise(
    client: &ApiClient,
    id: &str,
    dest: &Path,
) -> Result<Materialised, MaterialiseError> {
    let manifest = client
        .get_upload(id)
        .map_err(|source| MaterialiseError::Manifest {
            id: id.to_string(),
            source,
        })?;
    write_manifest(&manifest, id, dest, |sha| client.get_upload_blob(id, sha))
}

/// Write `manifest` into the fresh directory `dest`, taking blobs from `fetch`.
pub fn write_manifest(
    manifest: &Manifest,
    id: &str,
    dest: &Path,
    mut fetch: impl FnMut(&str) -> Result<Vec<u8>, RemoteError>,
) -> Result<Materialised, MaterialiseError> {
    let ops = manifest
        .materialise_plan(&ManifestLimits::API_DEFAULT)
        .map_err(|source| MaterialiseError::Invalid {
            id: id.to_string(),
            source,
        })?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::create_dir(dest).map_err(io(dest))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755)).map_err(io(dest))?;
    let mut out = Materialised {
        root: dest.to_path_buf(),
        files: 0,
        symlinks: 0,
        bytes: 0,
        fetched: 0,
    };
    // Directories made (and checked) here; every op's parent must be one of them or the root.
    let mut dirs: HashSet<&str> = HashSet::new();
    // A blob already written: its first file, to copy from.
    let mut written: HashMap<&str, PathBuf> = HashMap::new();
    for op in &ops {
        let rel = op.path();
        let parent_ok = match rel.rsplit_once('/') {
            None => true,
            Some((parent, _)) => dirs.contains(parent),
        };
        if !parent_ok {
            return Err(MaterialiseError::Unsafe {
                path: rel.to_string(),
                what: "its directory was not created by this runner",
            });
        }
        let path = dest.join(rel);
        match op {
            Op::Dir { .. } => {
                std::fs::create_dir(&path).map_err(io(&path))?;
                let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
                if !meta.file_type().is_dir() {
                    return Err(MaterialiseError::Unsafe {
                        path: rel.to_string(),
                        what: "is not a directory after mkdir",
                    });
                }
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io(&path))?;
                dirs.insert(rel);
            }
            Op::File {
                sha256, size, mode, ..
            } => {
                let content = match written.get(sha256.as_str()) {
                    Some(first) => std::fs::read(first).map_err(io(first))?,
                    None => {
                        let c = fetch(sha256).map_err(|source| MaterialiseError::Fetch {
                            path: rel.to_string(),
                            sha256: sha256.clone(),
                            source,
                        })?;
                        out.fetched += 1;
                        c
                    }
                };
                if content.len() as u64 != *size {
                    return Err(MaterialiseError::Mismatch {
                        path: rel.to_string(),
                        what: format!("{} bytes, the manifest says {size}", content.len()),
                    });
                }
                let got = sha256_hex(&content);
                if &got != sha256 {
                    return Err(MaterialiseError::Mismatch {
                        path: rel.to_string(),
                        what: format!("sha256 {got}, the manifest says {sha256}"),
                    });
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(io(&path))?;
                f.write_all(&content).map_err(io(&path))?;
                // The manifest's bits exactly (the umask does not apply to fchmod).
                f.set_permissions(std::fs::Permissions::from_mode(*mode & 0o777))
                    .map_err(io(&path))?;
                out.files += 1;
                out.bytes += *size;
                written.entry(sha256.as_str()).or_insert(path);
            }
            Op::Symlink { target, .. } => {
                std::os::unix::fs::symlink(target, &path).map_err(io(&path))?;
                out.symlinks += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_core::upload_manifest::Entry;

    fn file(path: &str, content: &str, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            mode,
            size: content.len() as u64,
            sha256: Some(sha256_hex(content.as_bytes())),
            symlink: None,
        }
    }

    fn blobs(files: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(_, c)| (sha256_hex(c.as_bytes()), c.as_bytes().to_vec()))
            .collect()
    }

    fn not_found(sha: &str) -> RemoteError {
        RemoteError::Status {
            status: 404,
            code: "not_found".into(),
            message: format!("blob {sha} not found"),
        }
    }

    #[test]
    fn writes_files_modes_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("work/run");
        let m = Manifest {
            files: vec![
                file("a/b/run.sh", "echo hi\n", 0o755),
                file("a/same.txt", "echo hi\n", 0o644),
                file("top", "t", 0o600),
                Entry {
                    path: "latest".into(),
                    mode: 0,
                    size: 0,
                    sha256: None,
                    symlink: Some("a/b/run.sh".into()),
                },
            ],
        };
        let b = blobs(&[("", "echo hi\n"), ("", "t")]);
        let mut calls = 0;
        let out = write_manifest(&m, "u", &dest, |sha| {
            calls += 1;
            b.get(sha).cloned().ok_or_else(|| not_found(sha))
        })
        .unwrap();
        assert_eq!((out.files, out.symlinks, out.fetched, calls), (3, 1, 2, 2));
        let meta = std::fs::metadata(dest.join("a/b/run.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            std::fs::metadata(dest.join("top"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("a/same.txt")).unwrap(),
            "echo hi\n"
        );
        assert_eq!(
            std::fs::read_link(dest.join("latest")).unwrap(),
            PathBuf::from("a/b/run.sh")
        );
        // Not fresh any more: a second write refuses.
        assert!(write_manifest(&m, "u", &dest, |sha| Err(not_found(sha))).is_err());
    }

    #[test]
    fn a_tampered_blob_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            files: vec![file("src/main.rs", "fn main() {}", 0o644)],
        };
        let e = write_manifest(&m, "u", &dir.path().join("x"), |_| {
            Ok(b"fn main() { evil() }".to_vec())
        })
        .unwrap_err();
        assert!(matches!(&e, MaterialiseError::Mismatch { path, .. } if path == "src/main.rs"));
        assert!(e.to_string().starts_with("src/main.rs: "), "{e}");
        let e = write_manifest(&m, "u", &dir.path().join("y"), |_| {
            Ok(b"fn main() {}!".to_vec())
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("13 bytes, the manifest says 12"),
            "{e}"
        );
    }

    #[test]
    fn escaping_manifests_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            files: vec![
                Entry {
                    path: "l".into(),
                    mode: 0,
                    size: 0,
                    sha256: None,
                    symlink: Some("../../etc".into()),
                },
                file("ok", "1", 0o644),
            ],
        };
        let dest = dir.path().join("x");
        let e = write_manifest(&m, "u", &dest, |_| Ok(b"1".to_vec())).unwrap_err();
        assert!(matches!(e, MaterialiseError::Invalid { .. }), "{e}");
        assert!(!dest.exists());
    }
}
