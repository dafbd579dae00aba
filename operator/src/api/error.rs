//! The API's one error type: every handler returns `Result<_, ApiError>`, answered as JSON
//! `{"error": "<code>", "message": "<text>"}` (403 adds `"scope"`; a 503 adds `"retryable":
//! true`). Internal failures (state, Kubernetes) are logged here and answered without their
//! detail; an outage of the state stores (`StateError::retryable`) is a 503 the client retries.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sparkwing_api::wire::ErrorBody;

use super::manifest::ManifestError;
use crate::runs::backend::BackendError;
use crate::tokens::TokenError;
use sparkwing_state::StateError;

/// What a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("missing scope {scope}")]
    Forbidden { scope: String },
    /// A 403 naming the missing scope and why nothing else allowed the request (e.g. the run's
    /// Pipeline does not list the caller among its approvers).
    #[error("missing scope {scope}; {why}")]
    ForbiddenBecause { scope: String, why: String },
    /// A dashboard request without a live session (none, forged, expired or logged out).
    #[error("no dashboard session: log in at /login")]
    NoSession,
    /// A state-changing dashboard request without its session's CSRF token.
    #[error("missing or wrong CSRF token")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(#[from] ManifestError),
    #[error("invalid manifest: {path}: declared size {declared} bytes, but its blob {sha256} holds {stored} bytes")]
    SizeMismatch {
        path: String,
        sha256: String,
        declared: u64,
        stored: u64,
    },
    #[error("content does not match its address: expected sha256 {expected}, got {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A runner of an attempt older than the run's current one (`fence`).
    #[error("{0}")]
    Superseded(String),
    #[error("job {job}: expected seq {expected}, got {got}; send the missing lines first")]
    LogGap {
        job: String,
        expected: u64,
        got: u64,
    },
    #[error("{0}")]
    RequestTimeout(String),
    /// A shared resource (the upload memory budget) stayed in use: retry later.
    #[error("{0}")]
    Busy(String),
    #[error("{what} exceeds the limit of {limit} bytes")]
    PayloadTooLarge { what: &'static str, limit: u64 },
    /// A 413 whose message names what is too large and the limit (e.g. a job's outputs).
    #[error("{0}")]
    TooLarge(String),
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("run backend: {0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Internal(String),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::State(s) => ApiError::State(s),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::runs::runner_token::RunnerTokenError> for ApiError {
    fn from(e: crate::runs::runner_token::RunnerTokenError) -> Self {
        use crate::runs::runner_token::RunnerTokenError;
        match e {
            RunnerTokenError::Backend(b) => ApiError::Backend(b),
            RunnerTokenError::Token(t) => t.into(),
        }
    }
}

impl ApiError {
    /// A manifest's declared size that its stored blob contradicts.
    pub fn size_mismatch((path, sha256, declared, stored): (String, String, u64, u64)) -> Self {
        ApiError::SizeMismatch {
            path,
            sha256,
            declared,
            stored,
        }
    }

    /// A 403 naming the scope the caller lacks.
    pub fn forbidden(scope: impl std::fmt::Display) -> Self {
        ApiError::Forbidden {
            scope: scope.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::NoSession => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::ForbiddenBecause { .. } | ApiError::Csrf => {
                StatusCode::FORBIDDEN
            }
            ApiError::BadRequest(_)
            | ApiError::InvalidManifest(_)
            | ApiError::SizeMismatch { .. }
            | ApiError::HashMismatch { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::Superseded(_) | ApiError::LogGap { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::Backend(BackendError::AlreadyExists(_) | BackendError::Conflict(_)) => {
                StatusCode::CONFLICT
            }
            ApiError::PayloadTooLarge { .. } | ApiError::TooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Backend(_) => StatusCode::BAD_GATEWAY,
            ApiError::State(e) => match e {
                _ if e.retryable() => StatusCode::SERVICE_UNAVAILABLE,
                StateError::Invalid { .. } | StateError::HashMismatch { .. } => {
                    StatusCode::BAD_REQUEST
                }
                StateError::LogGap { .. } => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized | ApiError::NoSession => "unauthorized",
            ApiError::Forbidden { .. } | ApiError::ForbiddenBecause { .. } => "forbidden",
            ApiError::Csrf => "csrf",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidManifest(_) | ApiError::SizeMismatch { .. } => "invalid_manifest",
            ApiError::HashMismatch { .. } => "hash_mismatch",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Superseded(_) => "superseded",
            ApiError::Backend(BackendError::AlreadyExists(_) | BackendError::Conflict(_)) => {
                "conflict"
            }
            ApiError::LogGap { .. } => "log_gap",
            ApiError::PayloadTooLarge { .. } | ApiError::TooLarge(_) => "payload_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Busy(_) => "busy",
            ApiError::Backend(_) => "backend",
            ApiError::State(e) => match e {
                _ if e.retryable() => "unavailable",
                StateError::Invalid { .. } => "bad_request",
                StateError::HashMismatch { .. } => "hash_mismatch",
                StateError::LogGap { .. } => "log_gap",
                _ => "internal",
            },
            ApiError::Internal(_) => "internal",
        }
    }

    /// The same request may succeed later, unchanged: an outage of a store, a busy budget.
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Busy(_) => true,
            ApiError::State(e) => e.retryable(),
            _ => false,
        }
    }
}

impl ApiError {
    /// The answer's `message`: the error itself, or for internal failures a pointer to the log
    /// (where they are written here, with their detail).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::State(e) if e.retryable() => {
                tracing::warn!(error = %self, "API request failed: a state store is unavailable");
                "the API's state store is unavailable; retry".to_string()
            }
            ApiError::State(
                StateError::Invalid { .. }
                | StateError::HashMismatch { .. }
                | StateError::LogGap { .. },
            ) => self.to_string(),
            ApiError::State(_) | ApiError::Internal(_) => {
                tracing::error!(error = %self, "API request failed");
                "internal error; see the operator's log".to_string()
            }
            ApiError::Backend(BackendError::AlreadyExists(_) | BackendError::Conflict(_)) => {
                self.to_string()
            }
            ApiError::Backend(_) => {
                tracing::error!(error = %self, "API request failed");
                "the Kubernetes API request failed; see the operator's log".to_string()
            }
            _ => self.to_string(),
        }
    }

    /// The JSON error body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_string(),
            message: self.public_message(),
            scope: match self {
                ApiError::Forbidden { scope } | ApiError::ForbiddenBecause { scope, .. } => {
                    Some(scope.clone())
                }
                _ => None,
            },
            retryable: self.retryable(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}
