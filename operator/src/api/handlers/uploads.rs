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

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use flate2::read::GzDecoder;
use sparkwing_api::wire::{BlobAnswer, BlobBatchAnswer, UploadAnswer};

use crate::api::auth::{Principal, Scope};
use crate::api::manifest::{is_sha256_hex, Manifest};
use crate::api::storage::{BlobTemp, Storage};
use crate::api::{blocking, read_body, read_json, ApiError, ApiMetrics, ApiState};

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
    let storage = st.storage.clone();
    let view = blocking(move || {
        // A size the stored blob contradicts would only fail later, on the runner.
        if let Some(m) = storage.size_mismatch(&manifest) {
            return Err(ApiError::size_mismatch(m));
        }
        storage.put_upload(&id, &manifest)?;
        Ok::<_, ApiError>(UploadAnswer {
            missing: storage.missing_blobs(&manifest),
            files: manifest.files.len(),
            total_size: manifest.total_size(),
            id,
            manifest: None,
        })
    })
    .await?;
    ApiMetrics::add(&st.metrics.uploads, 1);
    Ok(Json(view))
}

/// Uploaders may read any upload; a runner only its own run's (bound to its token when it was
/// minted: a run's source is immutable).
fn authorize_upload(p: &Principal, id: &str) -> Result<(), ApiError> {
    if p.has(&Scope::RunsTrigger) || (p.runner_of().is_some() && p.upload.as_deref() == Some(id)) {
        return Ok(());
    }
    Err(ApiError::forbidden(Scope::RunsTrigger))
}

async fn load_upload(st: &ApiState, id: String) -> Result<Manifest, ApiError> {
    let storage = st.storage.clone();
    let found = blocking(move || storage.get_upload(&id).map(|m| (m, id))).await?;
    match found {
        (Some(m), _) => Ok(m),
        (None, id) => Err(ApiError::NotFound(format!("upload {id} not found"))),
    }
}

pub async fn get_upload(
    State(st): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<UploadAnswer>, ApiError> {
    authorize_upload(&p, &id)?;
    let manifest = load_upload(&st, id.clone()).await?;
    let storage = st.storage.clone();
    let view = blocking(move || {
        Ok::<_, ApiError>(UploadAnswer {
            missing: storage.missing_blobs(&manifest),
            files: manifest.files.len(),
            total_size: manifest.total_size(),
            id,
            manifest: Some(manifest),
        })
    })
    .await?;
    Ok(Json(view))
}

pub async fn get_blob(
    State(st): State<ApiState>,
    p: Principal,
    Path((id, sha)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    authorize_upload(&p, &id)?;
    let manifest = load_upload(&st, id.clone()).await?;
    if !manifest.blobs().contains(sha.as_str()) {
        return Err(ApiError::NotFound(format!("upload {id} has no blob {sha}")));
    }
    let storage = st.storage.clone();
    let content = blocking(move || storage.read_blob(&sha).map(|b| (b, sha))).await?;
    match content {
        (Some(bytes), _) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes)),
        (None, sha) => Err(ApiError::NotFound(format!(
            "blob {sha} is not stored (garbage-collected, or never sent)"
        ))),
    }
}

/// How much of a body is read from the decompressor at a time.
const CHUNK: usize = 64 << 10;

fn not_gzip(e: std::io::Error) -> ApiError {
    ApiError::BadRequest(format!("blob body is not valid gzip: {e}"))
}

/// Decompress a gzip stream into a temp blob, hashing as it goes: at most `limit` bytes of
/// output, never more than a chunk of it in memory.
fn gunzip_to_blob(storage: &Storage, compressed: &[u8], limit: u64) -> Result<BlobTemp, ApiError> {
    let mut decoder = GzDecoder::new(compressed);
    let mut tmp = storage.blob_temp()?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = decoder.read(&mut buf).map_err(not_gzip)?;
        if n == 0 {
            return Ok(tmp);
        }
        if tmp.size() + n as u64 > limit {
            return Err(ApiError::PayloadTooLarge {
                what: "decompressed blob",
                limit,
            });
        }
        tmp.write(&buf[..n])?;
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

pub async fn put_blob(
    State(st): State<ApiState>,
    p: Principal,
    Path(sha): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    p.require(Scope::RunsTrigger)?;
    if !is_sha256_hex(&sha) {
        return Err(ApiError::BadRequest(
            "the blob address must be 64 lowercase hex digits (sha256)".into(),
        ));
    }
    let _memory = reserve_memory(&st, &headers, st.config.limits.blob_body).await?;
    let compressed = read_body(body, st.config.limits.blob_body, "compressed blob").await?;
    let limit = st.config.limits.manifest.max_file_size;
    let storage = st.storage.clone();
    let view = blocking(move || {
        let tmp = gunzip_to_blob(&storage, &compressed, limit)?;
        drop(compressed);
        let actual = tmp.sha256_hex();
        if actual != sha {
            return Err(ApiError::HashMismatch {
                expected: sha,
                actual,
            });
        }
        let size = tmp.size();
        let created = storage.commit_blobs(vec![(sha.clone(), tmp)])?[0];
        Ok(BlobAnswer {
            sha256: sha,
            size,
            created,
        })
    })
    .await?;
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

/// Read a batch stream frame by frame into temp blobs, each hashed as it streams and checked
/// against its header; at most `limit` bytes of content in all. Nothing is stored here (the
/// caller commits the temp blobs once every frame is checked).
fn receive_batch(
    storage: &Storage,
    compressed: &[u8],
    limit: u64,
) -> Result<Vec<(String, BlobTemp)>, ApiError> {
    let mut reader = std::io::BufReader::with_capacity(CHUNK, GzDecoder::new(compressed));
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let frame = out.len() + 1;
        let bad = |why: &str| ApiError::BadRequest(format!("blob batch, frame {frame}: {why}"));
        let mut header = Vec::with_capacity(64 + 1 + 20 + 1);
        (&mut reader)
            .take(64 + 1 + 20 + 1)
            .read_until(b'\n', &mut header)
            .map_err(not_gzip)?;
        if header.is_empty() {
            return Ok(out);
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
        if total + size > limit {
            return Err(ApiError::PayloadTooLarge {
                what: "decompressed blob batch",
                limit,
            });
        }
        total += size;
        let mut tmp = storage.blob_temp()?;
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = reader.read(&mut buf[..want]).map_err(not_gzip)?;
            if n == 0 {
                return Err(bad("the stream ends inside the blob"));
            }
            tmp.write(&buf[..n])?;
            left -= n as u64;
        }
        let actual = tmp.sha256_hex();
        if actual != sha {
            return Err(ApiError::HashMismatch {
                expected: sha.to_string(),
                actual,
            });
        }
        out.push((sha.to_string(), tmp));
    }
}

pub async fn put_blobs(
    State(st): State<ApiState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BlobBatchAnswer>, ApiError> {
    p.require(Scope::RunsTrigger)?;
    let _memory = reserve_memory(&st, &headers, st.config.limits.blob_body).await?;
    let compressed = read_body(body, st.config.limits.blob_body, "compressed blob batch").await?;
    let limit = st.config.limits.manifest.max_file_size;
    let storage = st.storage.clone();
    let view = blocking(move || {
        // Every frame is checked before anything is stored.
        let frames = receive_batch(&storage, &compressed, limit)?;
        drop(compressed);
        let sizes: Vec<u64> = frames.iter().map(|(_, t)| t.size()).collect();
        let mut view = BlobBatchAnswer {
            blobs: frames.len(),
            created: 0,
            bytes: 0,
        };
        let created = storage.commit_blobs(frames)?;
        for (size, new) in sizes.into_iter().zip(created) {
            if new {
                view.created += 1;
                view.bytes += size;
            }
        }
        Ok::<_, ApiError>(view)
    })
    .await?;
    ApiMetrics::add(&st.metrics.blobs_written, view.created as u64);
    ApiMetrics::add(&st.metrics.blob_bytes, view.bytes);
    Ok(Json(view))
}
