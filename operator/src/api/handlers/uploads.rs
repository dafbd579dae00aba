//! Content-addressed, incremental uploads.
//!
//! 1. `POST /api/v1/uploads` with the manifest: the server checks it, stores it under its id and
//!    answers the blobs it lacks (`missing`). An unchanged tree answers `missing: []`.
//! 2. `PUT /api/v1/blobs/{sha256}` with each missing file's content, gzip-compressed: the server
//!    decompresses (bounded), checks the sha256 and stores the blob once.
//!    Or `POST /api/v1/blobs` with many of them in one gzip stream ([`put_blobs`]): what the CLI
//!    does, since one request per small file costs more than the file.
//! 3. Trigger a run with `source.upload.id`; the trigger refuses an upload that still lacks blobs.

use std::io::Read;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use flate2::read::GzDecoder;
use serde::Serialize;

use crate::api::auth::{Principal, Scope};
use crate::api::manifest::{is_sha256_hex, sha256_hex, Manifest};
use crate::api::{blocking, read_body, read_json, ApiError, ApiMetrics, ApiState};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadView {
    pub id: String,
    /// Blobs the server lacks, by sha256.
    pub missing: Vec<String>,
    pub files: usize,
    pub total_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

pub async fn create_upload(
    State(st): State<ApiState>,
    p: Principal,
    body: Body,
) -> Result<Json<UploadView>, ApiError> {
    p.require(Scope::RunsTrigger)?;
    let manifest: Manifest = read_json(body, st.config.limits.manifest_body, "manifest").await?;
    manifest.validate(&st.config.limits.manifest)?;
    let manifest = manifest.canonical();
    let id = manifest.id();
    let storage = st.storage.clone();
    let view = blocking(move || {
        storage.put_upload(&id, &manifest)?;
        Ok::<_, ApiError>(UploadView {
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
) -> Result<Json<UploadView>, ApiError> {
    authorize_upload(&p, &id)?;
    let manifest = load_upload(&st, id.clone()).await?;
    let storage = st.storage.clone();
    let view = blocking(move || {
        Ok::<_, ApiError>(UploadView {
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobView {
    pub sha256: String,
    pub size: u64,
    /// `false`: the server already had it.
    pub created: bool,
}

/// Decompress a gzip body, refusing more than `limit` bytes of output.
fn gunzip(bytes: &[u8], limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::BadRequest(format!("blob body is not valid gzip: {e}")))?;
    if out.len() as u64 > limit {
        return Err(ApiError::PayloadTooLarge {
            what: "decompressed blob",
            limit,
        });
    }
    Ok(out)
}

pub async fn put_blob(
    State(st): State<ApiState>,
    p: Principal,
    Path(sha): Path<String>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    p.require(Scope::RunsTrigger)?;
    if !is_sha256_hex(&sha) {
        return Err(ApiError::BadRequest(
            "the blob address must be 64 lowercase hex digits (sha256)".into(),
        ));
    }
    let compressed = read_body(body, st.config.limits.blob_body, "compressed blob").await?;
    let limit = st.config.limits.manifest.max_file_size;
    let storage = st.storage.clone();
    let view = blocking(move || {
        let content = gunzip(&compressed, limit)?;
        let actual = sha256_hex(&content);
        if actual != sha {
            return Err(ApiError::HashMismatch {
                expected: sha,
                actual,
            });
        }
        let created = storage.put_blob(&sha, &content)?;
        Ok(BlobView {
            sha256: sha,
            size: content.len() as u64,
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

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlobBatchView {
    /// Blobs in the batch.
    pub blobs: usize,
    /// Of those, how many the server did not have.
    pub created: usize,
    /// Uncompressed bytes of the created blobs.
    pub bytes: u64,
}

/// Split a decompressed batch into `(sha256, content)` frames: each frame is a header line
/// `<sha256> <size>\n` followed by exactly `size` bytes. Every hash is checked.
pub fn parse_blob_batch(mut rest: &[u8]) -> Result<Vec<(String, &[u8])>, ApiError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let frame = out.len() + 1;
        let bad = |why: &str| ApiError::BadRequest(format!("blob batch, frame {frame}: {why}"));
        let nl = rest
            .iter()
            .take(64 + 1 + 20 + 1)
            .position(|b| *b == b'\n')
            .ok_or_else(|| bad("expected a `<sha256> <size>` header line"))?;
        let header = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("header is not UTF-8"))?;
        let (sha, size) = header
            .split_once(' ')
            .ok_or_else(|| bad("expected a `<sha256> <size>` header line"))?;
        if !is_sha256_hex(sha) {
            return Err(bad("the sha256 must be 64 lowercase hex digits"));
        }
        let size: usize = size
            .parse()
            .map_err(|_| bad("the size must be a decimal number of bytes"))?;
        let body = &rest[nl + 1..];
        if body.len() < size {
            return Err(bad("the stream ends inside the blob"));
        }
        let content = &body[..size];
        let actual = sha256_hex(content);
        if actual != sha {
            return Err(ApiError::HashMismatch {
                expected: sha.to_string(),
                actual,
            });
        }
        out.push((sha.to_string(), content));
        rest = &body[size..];
    }
    Ok(out)
}

pub async fn put_blobs(
    State(st): State<ApiState>,
    p: Principal,
    body: Body,
) -> Result<Json<BlobBatchView>, ApiError> {
    p.require(Scope::RunsTrigger)?;
    let compressed = read_body(body, st.config.limits.blob_body, "compressed blob batch").await?;
    let limit = st.config.limits.manifest.max_file_size;
    let storage = st.storage.clone();
    let view = blocking(move || {
        let stream = gunzip(&compressed, limit)?;
        let frames = parse_blob_batch(&stream)?;
        let mut view = BlobBatchView {
            blobs: frames.len(),
            created: 0,
            bytes: 0,
        };
        // Every frame is checked before anything is stored.
        let created = storage.put_blobs(&frames)?;
        for ((_, content), new) in frames.iter().zip(created) {
            if new {
                view.created += 1;
                view.bytes += content.len() as u64;
            }
        }
        Ok::<_, ApiError>(view)
    })
    .await?;
    ApiMetrics::add(&st.metrics.blobs_written, view.created as u64);
    ApiMetrics::add(&st.metrics.blob_bytes, view.bytes);
    Ok(Json(view))
}
