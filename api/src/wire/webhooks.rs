//! `POST /webhooks/github`'s answers (`docs/webhooks.md`). The request is GitHub's push or
//! pull request event,
//! read by the operator's `api::webhook`; it is not ours to define.

use serde::{Deserialize, Serialize};

/// One run a delivery created.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRun {
    pub namespace: String,
    pub name: String,
    /// The Pipeline it was created for.
    pub pipeline: String,
}

/// A Pipeline whose trigger matched a delivery but whose path filter did not, and why.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SkippedPipeline {
    pub namespace: String,
    pub pipeline: String,
    pub reason: String,
}

/// A run a pull request delivery cancelled: an older run of the same pull request and Pipeline
/// (`cancelInProgress`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CancelledRun {
    pub namespace: String,
    pub name: String,
}

/// The answer to a push or pull request that created runs (201), stored per delivery id and answered again
/// (200, with `redelivery: true`) when the delivery comes again.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub received_at: String,
    pub branch: String,
    pub commit: String,
    pub runs: Vec<WebhookRun>,
    /// The pull request's number (`branch` is then its base branch, `commit` its head commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// Pipelines of the repository the path filters left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedPipeline>,
    /// Older runs of the same pull request this delivery cancelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancelled: Vec<CancelledRun>,
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub redelivery: bool,
}

/// The answer to GitHub's `ping` event: `{"pong": true}`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    pub pong: bool,
}

/// A delivery that starts nothing (202): another event, a tag, no matching Pipeline.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Why, e.g. `event "issues" is not handled`.
    pub ignored: String,
}
