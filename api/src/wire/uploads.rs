//! `/api/v1/uploads` and `/api/v1/blobs`: content-addressed, incremental source uploads.

use serde::{Deserialize, Serialize};
use sparkwing_core::upload_manifest::Manifest;

/// An upload as the API shows it: `POST /api/v1/uploads` answers it without `manifest`,
/// `GET /api/v1/uploads/{id}` with it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UploadAnswer {
    /// The sha256 of the canonical manifest.
    pub id: String,
    /// Blobs the server lacks, by sha256.
    #[serde(default)]
    pub missing: Vec<String>,
    /// How many entries the manifest has.
    #[serde(default)]
    pub files: usize,
    /// Bytes of all its files.
    #[serde(default)]
    pub total_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

/// `PUT /api/v1/blobs/{sha256}`'s answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlobAnswer {
    pub sha256: String,
    pub size: u64,
    /// `false`: the server already had it.
    pub created: bool,
}

/// `POST /api/v1/blobs`' answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlobBatchAnswer {
    /// Blobs in the batch.
    pub blobs: usize,
    /// Of those, how many the server did not have.
    pub created: usize,
    /// Uncompressed bytes of the created blobs.
    pub bytes: u64,
}
