//! `POST /api/v1/admin/gc`.

use serde::{Deserialize, Serialize};

/// The body of a garbage collection (optional).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcRequest {
    /// Overrides the configured grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
    /// Overrides the configured retention: remove finished runs older than this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_finished_days: Option<u32>,
    /// Overrides the configured retention: keep at most this many finished runs (the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_finished_runs: Option<u64>,
}

/// What a garbage collection did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub blobs_kept: u64,
    pub uploads_deleted: u64,
    pub uploads_kept: u64,
    /// Files in `tmp/` older than the grace period (left by interrupted writes).
    pub tmp_deleted: u64,
    /// Finished runs removed by retention, with their logs, job states, tokens and archives.
    #[serde(default)]
    pub runs_deleted: u64,
}
