//! Content-addressed, incremental uploads.
//!
//! 1. `POST /api/v1/uploads` with the manifest: the server checks it, stores it under its id and
//!    answers the blobs it lacks (`missing`). An unchanged tree answers `missing: []`.
//! 2. `PUT /api/v1/blobs/{sha256}` with each missing file's content, gzip-compressed: the server
//!    decompresses (bounded), checks the sha256 and stores the blob once.
//!    Or `POST /api/v1/blobs` with many of them in one gzip stream ([`put_blobs`]): what the CLI
//!    does, since one request per small file costs more than the file.
//! 3. Trigger a run with `source.upload.id`; the trigger refuses an upload that still lacks blobs.

use std::io::{BufRead as _, Read};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};
use sparkwing_api::wire::{BlobAnswer, BlobBatchAnswer, UploadAnswer};

use crate::api::auth::{Principal, Scope};
use crate::api::manifest::{is_sha256_hex, Manifest};
use crate::api::{read_body, read_json, ApiError, ApiMetrics, ApiState};
use crate::store::UploadCheck;
use sparkwing_state::BlobLockMode;

/// The blobs of `manifest` not stored yet; a 400 when a stored blob's size is not the one its
/// file declares (it would only fail later, on the runner).
pub async fn missing_blobs(st: &ApiState, manifest: &Manifest) -> Result<Vec<String>, ApiError> {
    match st.store.check_upload(manifest).await? {
        UploadCheck::SizeMismatch(m) => Err(ApiError::size_mismatch(m)),
        UploadCheck::Missing(missing) => Ok(missing),
    }
}

pub async fn create_upload(
    State(st): State<ApiState>,
    p: Principal,
    body: Body,
) -> Result<Json<UploadAnswer>, ApiError> {
    p.require(Scope::RunsTrigger)?;
    let manifest: Manifest = read_json(body, st.config.limits.manifest_body, "manifest").await?;
    manifest.validate(&st.config.limits.manifest)?;
    let manifest = manifest.canonical();
    let id = manifest.id();
    // From finding blobs stored to recording the manifest that names them, collection must not
    // delete them (`sparkwing_state::blob_lock`).
    let reuse = st.store.meta.lock_blobs(BlobLockMode::Reuse).await?;
    let missing = missing_blobs(&st, &manifest).await?;
    st.store.put_upload(&id, &manifest).await?;
    drop(reuse);
    ApiMetrics::add(&st.metrics.uploads, 1);
    Ok(Json(UploadAnswer {
        missing,
        files: manifest.files.len(),
        total_size: manifest.total_size(),
        id,
        manifest: None,
    }))
}

/// Uploaders may read any upload; a runner only its own run's (bound to its token when it was
/// minted: a run's source is immutable).
fn authorize_upload(p: &Principal, id: &str) -> Result<(), ApiError> {
    if p.has(&Scope::RunsTrigger) || (p.runner_of().is_some() && p.upload.as_deref() == Some(id)) {
        return Ok(());
    }
    Err(ApiError::forbidden(Scope::RunsTrigger))
}

async fn load_upload(st: &ApiState, id: &str) -> Result<Manifest, ApiError> {
    st.store
        .get_upload(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("upload {id} not found")))
}

pub async fn get_upload(
    State(st): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<UploadAnswer>, ApiError> {
    authorize_upload(&p, &id)?;
    let manifest = load_upload(&st, &id).await?;
    Ok(Json(UploadAnswer {
        missing: missing_blobs(&st, &manifest).await?,
        files: manifest.files.len(),
        total_size: manifest.total_size(),
        id,
        manifest: Some(manifest),
    }))
}

pub async fn get_blob(
    State(st): State<ApiState>,
    p: Principal,
    Path((id, sha)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    authorize_upload(&p, &id)?;
    let manifest = load_upload(&st, &id).await?;
    if !manifest.blobs().contains(sha.as_str()) {
        return Err(ApiError::NotFound(format!("upload {id} has no blob {sha}")));
    }
    match st.store.content.get_blob(&sha).await? {
        // Streamed: a blob is never held in memory whole.
        Some(stream) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from_stream(stream),
        )),
        None => Err(ApiError::NotFound(format!(
            "blob {sha} is not stored (garbage-collected, or never sent)"
        ))),
    }
}

/// How much of a body is read from the decompressor at a time.
const CHUNK: usize = 64 << 10;

fn not_gzip(e: std::io::Error) -> ApiError {
    ApiError::BadRequest(format!("blob body is not valid gzip: {e}"))
}

/// A decompressing reader over a request body, shared between the blobs of a batch as each is
/// streamed to the content store in turn.
type Decoder = Arc<Mutex<std::io::BufReader<GzDecoder<std::io::Cursor<Bytes>>>>>;

fn decoder(compressed: Bytes) -> Decoder {
    Arc::new(Mutex::new(std::io::BufReader::with_capacity(
        CHUNK,
        GzDecoder::new(std::io::Cursor::new(compressed)),
    )))
}

/// Read up to a chunk (at most `left` bytes) from `d`.
fn read_chunk(d: &Decoder, left: u64) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX))];
    let n = d.lock().unwrap_or_else(|p| p.into_inner()).read(&mut buf)?;
    buf.truncate(n);
    Ok(Bytes::from(buf))
}

/// The next `size` bytes of `d` as a blob body. Only called after the same bytes were checked
/// (see [`put_blob`]), so a short read is an IO error, not the client's.
fn frame_body(d: Decoder, size: u64) -> sparkwing_state::ByteStream {
    Box::pin(futures::stream::unfold((d, size), |(d, left)| async move {
        if left == 0 {
            return None;
        }
        // Decompression is CPU work on memory: a chunk at a time, it does not hold the thread.
        match read_chunk(&d, left) {
            Ok(b) if b.is_empty() => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the stream ends inside the blob",
                )),
                (d, 0),
            )),
            Ok(b) => {
                let rest = left - b.len() as u64;
                Some((Ok(b), (d, rest)))
            }
            Err(e) => Some((Err(e), (d, 0))),
        }
    }))
}

/// Decompress a gzip body, hashing it: its sha256 and size, at most `limit` bytes of output
/// (never more than a chunk of it in memory). Nothing is stored: this is the check before the
/// store is written.
fn gunzip_digest(compressed: &[u8], limit: u64) -> Result<(String, u64), ApiError> {
    let mut decoder = GzDecoder::new(compressed);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = decoder.read(&mut buf).map_err(not_gzip)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), size));
        }
        if size + n as u64 > limit {
            return Err(ApiError::PayloadTooLarge {
                what: "decompressed blob",
                limit,
            });
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
}
/// The memory a blob request may hold (its compressed body), from the global budget
/// (`Limits::blob_memory_budget`): waits while other uploads hold it, up to
/// [`BUDGET_WAIT`], then 503.
async fn reserve_memory(
    st: &ApiState,
    headers: &HeaderMap,
    limit: usize,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(limit)
        .min(limit);
    // In KiB (the semaphore counts u32 permits), at least 1, at most the whole budget.
    let kib = declared.div_ceil(1024).clamp(1, st.blob_budget_kib()) as u32;
    match tokio::time::timeout(BUDGET_WAIT, st.blob_budget.clone().acquire_many_owned(kib)).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(e)) => Err(ApiError::Internal(format!("blob memory budget: {e}"))),
        Err(_) => Err(ApiError::Busy(format!(
            "the server's memory for uploads is in use (budget {} bytes); retry",
            st.config.limits.blob_memory_budget
        ))),
    }
}

/// Longest wait for the blob memory budget.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Blobs are sent by uploaders (`runs:trigger`) and by a run's runner (the chunks of its
/// caches and artifacts).
fn require_blob_writer(p: &Principal) -> Result<(), ApiError> {
    if p.runner_of().is_some() {
        return Ok(());
    }
    p.require(Scope::RunsTrigger)
}

pub async fn put_blob(
    State(st): State<ApiState>,
    p: Principal,
    Path(sha): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    require_blob_writer(&p)?;
    if !is_sha256_hex(&sha) {
        return Err(ApiError::BadRequest(
            "the blob address must be 64 lowercase hex digits (sha256)".into(),
        ));
    }
    let _memory = reserve_memory(&st, &headers, st.config.limits.blob_body).await?;
    let compressed = read_body(body, st.config.limits.blob_body, "compressed blob").await?;
    let limit = st.config.limits.manifest.max_file_size;
    // Two passes over the (bounded, in memory) compressed body: the first checks the content's
    // size and hash without storing anything, the second streams it to the content store, so a
    // wrong or oversized body never reaches the store and a blob is never held whole.
    let body = compressed.clone();
    let (actual, size) = tokio::task::spawn_blocking(move || gunzip_digest(&body, limit))
        .await
        .map_err(|e| ApiError::Internal(format!("decompressing a blob: {e}")))??;
    if actual != sha {
        return Err(ApiError::HashMismatch {
            expected: sha,
            actual,
        });
    }
    let created = !st.store.content.blob_exists(&sha).await?;
    if created {
        st.store
            .content
            .put_blob(&sha, frame_body(decoder(compressed), size))
            .await?;
    }
    let view = BlobAnswer {
        sha256: sha,
        size,
        created,
    };
    if view.created {
        ApiMetrics::add(&st.metrics.blobs_written, 1);
        ApiMetrics::add(&st.metrics.blob_bytes, view.size);
    }
    let status = if view.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Check a batch stream frame by frame: each frame's content hashed as it streams and checked
/// against its header, at most `limit` bytes of content in all. Nothing is stored here; the
/// frames' `(sha256, size)`, in order.
fn check_batch(compressed: &[u8], limit: u64) -> Result<Vec<(String, u64)>, ApiError> {
    let mut reader = std::io::BufReader::with_capacity(CHUNK, GzDecoder::new(compressed));
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let frame = out.len() + 1;
        let bad = |why: &str| ApiError::BadRequest(format!("blob batch, frame {frame}: {why}"));
        let Some((sha, size)) = read_frame_header(&mut reader, frame)? else {
            return Ok(out);
        };
        if total + size > limit {
            return Err(ApiError::PayloadTooLarge {
                what: "decompressed blob batch",
                limit,
            });
        }
        total += size;
        let mut hasher = Sha256::new();
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = reader.read(&mut buf[..want]).map_err(not_gzip)?;
            if n == 0 {
                return Err(bad("the stream ends inside the blob"));
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha {
            return Err(ApiError::HashMismatch {
                expected: sha,
                actual,
            });
        }
        out.push((sha, size));
    }
}

/// A frame's `<sha256> <size>\n` header; `None` at the end of the stream.
fn read_frame_header(
    reader: &mut impl std::io::BufRead,
    frame: usize,
) -> Result<Option<(String, u64)>, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("blob batch, frame {frame}: {why}"));
    let mut header = Vec::with_capacity(64 + 1 + 20 + 1);
    reader
        .take(64 + 1 + 20 + 1)
        .read_until(b'\n', &mut header)
        .map_err(not_gzip)?;
    if header.is_empty() {
        return Ok(None);
    }
    if header.pop() != Some(b'\n') {
        return Err(bad("expected a `<sha256> <size>` header line"));
    }
    let header = std::str::from_utf8(&header).map_err(|_| bad("header is not UTF-8"))?;
    let (sha, size) = header
        .split_once(' ')
        .ok_or_else(|| bad("expected a `<sha256> <size>` header line"))?;
    if !is_sha256_hex(sha) {
        return Err(bad("the sha256 must be 64 lowercase hex digits"));
    }
    let size: u64 = size
        .parse()
        .map_err(|_| bad("the size must be a decimal number of bytes"))?;
    Ok(Some((sha.to_string(), size)))
}

/// Skip `n` bytes of `d` (a frame whose blob is stored already).
fn skip(d: &Decoder, mut n: u64) -> Result<(), ApiError> {
    while n > 0 {
        let b = read_chunk(d, n).map_err(not_gzip)?;
        if b.is_empty() {
            return Err(ApiError::Internal(
                "a checked blob batch ended early".into(),
            ));
        }
        n -= b.len() as u64;
    }
    Ok(())
}

pub async fn put_blobs(
    State(st): State<ApiState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BlobBatchAnswer>, ApiError> {
    require_blob_writer(&p)?;
    let _memory = reserve_memory(&st, &headers, st.config.limits.blob_body).await?;
    let compressed = read_body(body, st.config.limits.blob_body, "compressed blob batch").await?;
    let limit = st.config.limits.manifest.max_file_size;
    // Every frame is checked before anything is stored (first pass); then the frames are
    // streamed to the content store one after the other (second pass).
    let body = compressed.clone();
    let frames = tokio::task::spawn_blocking(move || check_batch(&body, limit))
        .await
        .map_err(|e| ApiError::Internal(format!("decompressing a blob batch: {e}")))??;
    let mut view = BlobBatchAnswer {
        blobs: frames.len(),
        created: 0,
        bytes: 0,
    };
    let d = decoder(compressed);
    let mut seen = std::collections::HashSet::new();
    for (i, (sha, size)) in frames.into_iter().enumerate() {
        read_frame_header(&mut *d.lock().unwrap_or_else(|p| p.into_inner()), i + 1)?;
        if !seen.insert(sha.clone()) || st.store.content.blob_exists(&sha).await? {
            skip(&d, size)?;
            continue;
        }
        st.store
            .content
            .put_blob(&sha, frame_body(d.clone(), size))
            .await?;
        view.created += 1;
        view.bytes += size;
    }
    ApiMetrics::add(&st.metrics.blobs_written, view.created as u64);
    ApiMetrics::add(&st.metrics.blob_bytes, view.bytes);
    Ok(Json(view))
}
