//! The error answer of every endpoint.

use serde::{Deserialize, Serialize};

/// `{"error": "<code>", "message": "<text>"}`; a 403 also names the missing `scope`, and an
/// answer the same request may later succeed with (503) says `"retryable": true`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `log_gap`, ...
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub retryable: bool,
}
