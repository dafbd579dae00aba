//! A cluster run's dependency caches and artifacts, kept by the API (`docs/api.md#caches-and-artifacts`)
//! with the run's token: [`ApiCacheStore`] and [`ApiArtifactStore`], the engine's `CacheStore`
//! and `ArtifactStore` seams. What is stored — a cache's tar stream, an artifact's file or its
//! directory's tar stream — is cut into content-defined chunks ([`Chunking`], FastCDC), so a
//! mostly unchanged tree shares most chunks with what is stored already: a save sends its
//! manifest, the API answers the chunks it lacks, only those are uploaded (gzip batches of
//! `POST /api/v1/blobs`), and the manifest is sent again to commit.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sparkwing_api::wire::{ArtifactPut, CacheCommit, StoreAnswer, StoreState};
use sparkwing_api::{ApiClient, RemoteError};
use sparkwing_core::cache::CacheEntry;
use sparkwing_core::chunked::{ChunkManifest, ChunkRef, ChunkedKind};
use sparkwing_engine::artifact_store::{self, ArtifactError, ArtifactStore, Published};
use sparkwing_engine::cache_store::{self, CacheError, CacheStore, Saved};

/// Content-defined chunk sizes (FastCDC 2020): at least `min`, about `avg`, at most `max`
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Chunking {
    /// 256 KiB, 1 MiB, 4 MiB.
    pub const DEFAULT: Chunking = Chunking {
        min: 256 << 10,
        avg: 1 << 20,
        max: 4 << 20,
    };
}

/// Most uncompressed bytes in one blob batch request (the API takes 64 MiB compressed).
const BATCH_BYTES: u64 = 32 << 20;
/// Chunks downloaded at once.
const DOWNLOADS: usize = 4;

/// One cut chunk: what the manifest says of it and where it is in the file.
struct Cut {
    chunk: ChunkRef,
    offset: u64,
}

fn cut(file: &Path, chunking: Chunking) -> std::io::Result<Vec<Cut>> {
    let f = File::open(file)?;
    let mut out = Vec::new();
    for c in fastcdc::v2020::StreamCDC::new(f, chunking.min, chunking.avg, chunking.max) {
        let c =
            c.map_err(|e| std::io::Error::other(format!("chunking {}: {e}", file.display())))?;
        out.push(Cut {
            chunk: ChunkRef {
                sha256: hex::encode(Sha256::digest(&c.data)),
                size: c.length as u64,
            },
            offset: c.offset,
        });
    }
    Ok(out)
}

/// What one save or publish moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Chunks in the manifest.
    pub chunks: u64,
    /// Chunks uploaded (the API lacked them).
    pub uploaded: u64,
    /// Bytes uploaded (uncompressed).
    pub uploaded_bytes: u64,
}

/// The API side shared by both stores: the run's client, where temporary files go, and the
/// chunk sizes.
#[derive(Debug)]
struct Remote {
    client: ApiClient,
    namespace: String,
    name: String,
    tmp: PathBuf,
    chunking: Chunking,
    last: std::sync::Mutex<Transfer>,
}

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

impl Remote {
    /// A fresh temporary file path (removed by its [`TmpFile`] guard).
    fn tmp_file(&self, what: &str) -> std::io::Result<TmpFile> {
        std::fs::create_dir_all(&self.tmp)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        Ok(TmpFile(self.tmp.join(format!(
            "{what}-{}-{nanos}-{n}",
            std::process::id()
        ))))
    }

    /// Cut `file`, send the manifest with `send`; upload what the API lacks and send it again.
    fn store(
        &self,
        file: &Path,
        kind: ChunkedKind,
        send: impl Fn(&ChunkManifest) -> Result<StoreAnswer, RemoteError>,
    ) -> Result<(StoreAnswer, Transfer), StoreError> {
        let cuts = cut(file, self.chunking).map_err(StoreError::Io)?;
        let manifest = ChunkManifest {
            kind,
            chunks: cuts.iter().map(|c| c.chunk.clone()).collect(),
        };
        let mut transfer = Transfer {
            chunks: cuts.len() as u64,
            ..Transfer::default()
        };
        let first = send(&manifest).map_err(StoreError::Remote)?;
        if first.state != StoreState::Missing {
            return Ok((first, transfer));
        }
        self.upload(file, &cuts, &first.missing, &mut transfer)?;
        let second = send(&manifest).map_err(StoreError::Remote)?;
        if second.state == StoreState::Missing {
            return Err(StoreError::Io(std::io::Error::other(format!(
                "the API still lacks {} chunks after they were uploaded (were they collected meanwhile?)",
                second.missing.len()
            ))));
        }
        Ok((second, transfer))
    }

    /// Upload the chunks of `file` named in `missing`, in gzip batches.
    fn upload(
        &self,
        file: &Path,
        cuts: &[Cut],
        missing: &[String],
        transfer: &mut Transfer,
    ) -> Result<(), StoreError> {
        let mut f = File::open(file).map_err(StoreError::Io)?;
        let mut batch: Option<flate2::write::GzEncoder<Vec<u8>>> = None;
        let mut in_batch = 0u64;
        let mut buf = Vec::new();
        for sha in missing {
            let Some(c) = cuts.iter().find(|c| &c.chunk.sha256 == sha) else {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "the API asked for chunk {sha}, which is not in the manifest"
                ))));
            };
            buf.resize(c.chunk.size as usize, 0);
            f.seek(SeekFrom::Start(c.offset)).map_err(StoreError::Io)?;
            f.read_exact(&mut buf).map_err(StoreError::Io)?;
            let enc = batch.get_or_insert_with(|| {
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())
            });
            enc.write_all(format!("{sha} {}\n", buf.len()).as_bytes())
                .and_then(|()| enc.write_all(&buf))
                .map_err(StoreError::Io)?;
            in_batch += c.chunk.size;
            transfer.uploaded += 1;
            transfer.uploaded_bytes += c.chunk.size;
            if in_batch >= BATCH_BYTES {
                self.send_batch(batch.take())?;
                in_batch = 0;
            }
        }
        self.send_batch(batch.take())
    }

    fn send_batch(
        &self,
        batch: Option<flate2::write::GzEncoder<Vec<u8>>>,
    ) -> Result<(), StoreError> {
        let Some(enc) = batch else { return Ok(()) };
        let body = enc.finish().map_err(StoreError::Io)?;
        self.client.put_blobs(&body).map_err(StoreError::Remote)?;
        Ok(())
    }

    /// Write the content of `m` (its chunks in order, each checked) to `dest`: [`DOWNLOADS`]
    /// chunks at a time, each written at its offset.
    fn download(&self, m: &ChunkManifest, dest: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let file = File::create(dest).map_err(StoreError::Io)?;
        let mut offsets = Vec::with_capacity(m.chunks.len());
        let mut at = 0u64;
        for c in &m.chunks {
            offsets.push(at);
            at += c.size;
        }
        let next = AtomicU64::new(0);
        let fetch_one = |i: usize| -> Result<(), StoreError> {
            let c = &m.chunks[i];
            let bytes = self
                .client
                .get_blob(&c.sha256)
                .map_err(StoreError::Remote)?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != c.sha256 || bytes.len() as u64 != c.size {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "chunk {} arrived as {} bytes with sha256 {actual}",
                    c.sha256,
                    bytes.len()
                ))));
            }
            file.write_all_at(&bytes, offsets[i])
                .map_err(StoreError::Io)
        };
        let worker = || -> Result<(), StoreError> {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= m.chunks.len() {
                    return Ok(());
                }
                if let Err(e) = fetch_one(i) {
                    // The others stop at their next chunk.
                    next.store(u64::MAX / 2, Ordering::Relaxed);
                    return Err(e);
                }
            }
        };
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..DOWNLOADS.min(m.chunks.len().max(1)))
                .map(|_| scope.spawn(worker))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Io(std::io::Error::other(
                            "a download thread panicked",
                        )))
                    })
                })
                .collect()
        });
        results.into_iter().collect::<Result<(), _>>()?;
        file.set_len(at).map_err(StoreError::Io)
    }
}

/// Removes its file when dropped.
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

enum StoreError {
    Io(std::io::Error),
    Remote(RemoteError),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(e) => e.fmt(f),
            StoreError::Remote(e) => e.fmt(f),
        }
    }
}

fn cache_err(what: String) -> impl FnOnce(StoreError) -> CacheError {
    move |e| CacheError::Io {
        what,
        source: match e {
            StoreError::Io(e) => e,
            StoreError::Remote(e) => std::io::Error::other(e.to_string()),
        },
    }
}

/// The dependency caches of a cluster run's cache scope, through the API.
#[derive(Debug)]
pub struct ApiCacheStore {
    remote: Remote,
}

impl ApiCacheStore {
    /// The caches of run `ns/name` with its client; temporary files under `tmp`.
    pub fn new(client: ApiClient, ns: &str, name: &str, tmp: PathBuf) -> ApiCacheStore {
        ApiCacheStore::with_chunking(client, ns, name, tmp, Chunking::DEFAULT)
    }

    pub fn with_chunking(
        client: ApiClient,
        ns: &str,
        name: &str,
        tmp: PathBuf,
        chunking: Chunking,
    ) -> ApiCacheStore {
        ApiCacheStore {
            remote: Remote {
                client,
                namespace: ns.into(),
                name: name.into(),
                tmp,
                chunking,
                last: Default::default(),
            },
        }
    }

    /// What the last save moved.
    pub fn last_transfer(&self) -> Transfer {
        *self.remote.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CacheStore for ApiCacheStore {
    fn list(&self) -> Result<Vec<CacheEntry>, CacheError> {
        let r = &self.remote;
        let list = r
            .client
            .run_caches(&r.namespace, &r.name)
            .map_err(|e| cache_err("list the run's caches".into())(StoreError::Remote(e)))?;
        Ok(list
            .entries
            .into_iter()
            .map(|e| CacheEntry {
                key: e.key,
                size_bytes: e.size_bytes,
                created_ms: e.created.0,
                last_used_ms: e.last_used.0,
            })
            .collect())
    }

    fn restore(&self, key: &str, workspace: &Path) -> Result<u64, CacheError> {
        let r = &self.remote;
        let found = r
            .client
            .cache_lookup(&r.namespace, &r.name, key, None)
            .map_err(|e| cache_err(format!("look up cache {key}"))(StoreError::Remote(e)))?;
        let (Some(manifest), Some(found_key)) = (found.manifest, found.key) else {
            return Err(CacheError::NotFound(key.to_string()));
        };
        if found_key != key {
            return Err(CacheError::NotFound(key.to_string()));
        }
        let tmp = r
            .tmp_file("restore")
            .map_err(|e| cache_err(format!("restore cache {key}"))(StoreError::Io(e)))?;
        r.download(&manifest, &tmp.0)
            .map_err(cache_err(format!("download cache {key}")))?;
        let file = File::open(&tmp.0)
            .map_err(|e| cache_err(format!("restore cache {key}"))(StoreError::Io(e)))?;
        cache_store::unpack(&file, workspace, key)?;
        Ok(manifest.total_size())
    }

    fn save(&self, key: &str, workspace: &Path, paths: &[String]) -> Result<Saved, CacheError> {
        let r = &self.remote;
        let root = workspace.canonicalize().map_err(|e| CacheError::Io {
            what: format!("resolve {}", workspace.display()),
            source: e,
        })?;
        let tmp = r
            .tmp_file("save")
            .map_err(|e| cache_err(format!("save cache {key}"))(StoreError::Io(e)))?;
        let file = File::create(&tmp.0)
            .map_err(|e| cache_err(format!("save cache {key}"))(StoreError::Io(e)))?;
        drop(cache_store::archive(workspace, &root, paths, file, &tmp.0)?);
        let sent = r.store(&tmp.0, ChunkedKind::Tar, |m| {
            r.client.cache_commit(
                &r.namespace,
                &r.name,
                key,
                &CacheCommit {
                    manifest: m.clone(),
                },
            )
        });
        let (answer, transfer) = match sent {
            Ok(a) => a,
            // The API refuses an entry over its cap before anything is uploaded.
            Err(StoreError::Remote(e)) if e.status() == Some(413) => {
                let size = std::fs::metadata(&tmp.0).map(|m| m.len()).unwrap_or(0);
                return Ok(Saved::OverCap(size));
            }
            Err(e) => return Err(cache_err(format!("save cache {key}"))(e)),
        };
        *r.last.lock().unwrap_or_else(|p| p.into_inner()) = transfer;
        Ok(match answer.state {
            StoreState::AlreadySaved => Saved::AlreadyStored,
            _ => Saved::Stored(answer.size_bytes),
        })
    }

    fn remove(&self, key: &str) -> Result<(), CacheError> {
        Err(CacheError::Io {
            what: format!("remove cache {key}"),
            source: std::io::Error::other(
                "a runner does not remove cluster cache entries: `sparkwing cache prune --profile P` does (admin), and the API evicts the least recently used",
            ),
        })
    }
}

/// The artifacts of a cluster run, through the API.
#[derive(Debug)]
pub struct ApiArtifactStore {
    remote: Remote,
    cap_bytes: u64,
}

impl ApiArtifactStore {
    /// The artifacts of run `ns/name` with its client; temporary files under `tmp`; the cap
    /// from `SPARKWING_ARTIFACT_MAX_BYTES`.
    pub fn new(
        client: ApiClient,
        ns: &str,
        name: &str,
        tmp: PathBuf,
    ) -> Result<ApiArtifactStore, ArtifactError> {
        Ok(ApiArtifactStore {
            remote: Remote {
                client,
                namespace: ns.into(),
                name: name.into(),
                tmp,
                chunking: Chunking::DEFAULT,
                last: Default::default(),
            },
            cap_bytes: artifact_store::cap_from_env()?,
        })
    }
}

fn artifact_err(what: String) -> impl FnOnce(StoreError) -> ArtifactError {
    move |e| ArtifactError::Io {
        what,
        source: match e {
            StoreError::Io(e) => e,
            StoreError::Remote(e) => std::io::Error::other(e.to_string()),
        },
    }
}

impl ArtifactStore for ApiArtifactStore {
    fn publish(&self, job: &str, name: &str, src: &Path) -> Result<Published, ArtifactError> {
        let r = &self.remote;
        let Ok(meta) = std::fs::symlink_metadata(src) else {
            return Err(ArtifactError::Missing {
                job: job.into(),
                name: name.into(),
                path: src.display().to_string(),
            });
        };
        let size = artifact_store::measure(src)?;
        if size.size_bytes > self.cap_bytes {
            return Err(ArtifactError::TooLarge {
                job: job.into(),
                name: name.into(),
                size: size.size_bytes,
                cap: self.cap_bytes,
            });
        }
        let what = || format!("publish artifact {name} of job {job}");
        let tmp;
        let (file, kind) = if meta.is_dir() {
            tmp = r
                .tmp_file("artifact")
                .map_err(|e| artifact_err(what())(StoreError::Io(e)))?;
            let write = || -> std::io::Result<()> {
                let out = File::create(&tmp.0)?;
                let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
                b.follow_symlinks(false);
                b.append_dir_all(".", src)?;
                b.into_inner()?.flush()
            };
            write().map_err(|e| artifact_err(what())(StoreError::Io(e)))?;
            (tmp.0.as_path(), ChunkedKind::Tar)
        } else {
            (src, ChunkedKind::File)
        };
        let (_, transfer) = r
            .store(file, kind, |m| {
                r.client.put_artifact(
                    &r.namespace,
                    &r.name,
                    job,
                    name,
                    &ArtifactPut {
                        manifest: m.clone(),
                        size_bytes: size.size_bytes,
                        files: size.files,
                    },
                )
            })
            .map_err(artifact_err(what()))?;
        *r.last.lock().unwrap_or_else(|p| p.into_inner()) = transfer;
        Ok(size)
    }

    fn fetch(&self, job: &str, name: &str, dest: &Path) -> Result<(), ArtifactError> {
        let r = &self.remote;
        let view = match r.client.get_artifact(&r.namespace, &r.name, job, name) {
            Ok(v) => v,
            Err(e) if e.status() == Some(404) => {
                return Err(ArtifactError::NotFound {
                    job: job.into(),
                    name: name.into(),
                })
            }
            Err(e) => {
                return Err(artifact_err(format!("fetch artifact {name} of job {job}"))(
                    StoreError::Remote(e),
                ))
            }
        };
        let Some(manifest) = view.manifest else {
            return Err(ArtifactError::NotFound {
                job: job.into(),
                name: name.into(),
            });
        };
        download_artifact(r, &manifest, dest)
            .map_err(artifact_err(format!("fetch artifact {name} of job {job}")))
    }
}

/// Puts a stored artifact at `dest`: a file's bytes, or a directory's tar unpacked there.
fn download_artifact(r: &Remote, m: &ChunkManifest, dest: &Path) -> Result<(), StoreError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(StoreError::Io)?;
    }
    let tmp = r.tmp_file("fetch").map_err(StoreError::Io)?;
    r.download(m, &tmp.0)?;
    match m.kind {
        ChunkedKind::File => {
            // Replace, never write through: the destination may be a link or in use.
            match std::fs::remove_file(dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(e)),
            }
            std::fs::copy(&tmp.0, dest).map_err(StoreError::Io)?;
        }
        ChunkedKind::Tar => {
            std::fs::create_dir_all(dest).map_err(StoreError::Io)?;
            let file = File::open(&tmp.0).map_err(StoreError::Io)?;
            let mut archive = tar::Archive::new(std::io::BufReader::new(file));
            archive.set_overwrite(true);
            archive.set_preserve_permissions(true);
            archive.unpack(dest).map_err(StoreError::Io)?;
        }
    }
    Ok(())
}

/// Downloads the content of `manifest` through `client` to `dest` (a file, or a directory for a
/// tar): what `sparkwing runs artifacts --profile P --download` does.
pub fn download(
    client: &ApiClient,
    manifest: &ChunkManifest,
    dest: &Path,
    tmp: PathBuf,
) -> Result<(), String> {
    let r = Remote {
        client: client.clone(),
        namespace: String::new(),
        name: String::new(),
        tmp,
        chunking: Chunking::DEFAULT,
        last: Default::default(),
    };
    download_artifact(&r, manifest, dest).map_err(|e| e.to_string())
}

/// The run's caches and artifacts kept by the API, with their temp files under
/// `home_root/tmp/storage` (a runner pod's coordinator and a job pod alike).
pub(crate) fn api_stores(
    client: &ApiClient,
    ns: &str,
    name: &str,
    home_root: &std::path::Path,
) -> Result<sparkwing_engine::job_storage::Stores, crate::RunnerError> {
    let storage_tmp = home_root.join("tmp").join("storage");
    let artifacts =
        ApiArtifactStore::new(client.clone(), ns, name, storage_tmp.clone()).map_err(|e| {
            crate::RunnerError::new(sparkwing_engine::exit::ExitCode::Usage, e.to_string())
        })?;
    Ok(sparkwing_engine::job_storage::Stores {
        caches: std::sync::Arc::new(ApiCacheStore::new(client.clone(), ns, name, storage_tmp)),
        artifacts: std::sync::Arc::new(artifacts),
    })
}
