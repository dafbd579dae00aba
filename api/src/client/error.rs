//! What an API call can fail with, and how an error answer becomes one.

use std::io::Read as _;

/// What an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No answer: DNS, connect, TLS or a timeout.
    #[error("cannot reach the API at {url}: {message}; check the profile's controller URL and that the API is up")]
    Unreachable { url: String, message: String },
    /// The API answered an error (`{"error": code, "message": message}`).
    #[error("{message} (HTTP {status} {code})")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// A log batch left a hole: resend from `expected`.
    #[error("log gap in job {job}: the API expects seq {expected} next")]
    LogGap { job: String, expected: u64 },
    /// The request cannot be sent as asked (an HTTP method this client does not send).
    #[error("cannot send the request: {0}")]
    InvalidRequest(String),
    /// The answer was not what the API promises.
    #[error("cannot decode {what} from the API: {message}")]
    Decode { what: String, message: String },
}

impl RemoteError {
    /// True when the API could not be reached at all (worth a retry later).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RemoteError::Unreachable { .. })
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Status { status, .. } => Some(*status),
            RemoteError::LogGap { .. } => Some(409),
            _ => None,
        }
    }

    /// For a 403: the scope the token lacks (from `missing scope X`, or `missing scope X; why`).
    pub fn missing_scope(&self) -> Option<&str> {
        match self {
            RemoteError::Status {
                status: 403,
                message,
                ..
            } => message
                .strip_prefix("missing scope ")
                .and_then(|rest| rest.split([';', ' ']).next()),
            _ => None,
        }
    }

    pub(crate) fn decode(what: impl Into<String>, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Decode {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

pub(crate) type Resp = ureq::http::Response<ureq::Body>;

/// Turn an error status into [`RemoteError`]; pass a success through.
pub(crate) fn check(mut resp: Resp) -> Result<Resp, RemoteError> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let mut text = String::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(64 * 1024)
        .read_to_string(&mut text);
    Err(error_of(status, &text))
}

/// An error answer as read: [`crate::wire::ErrorBody`] with every field optional, so a proxy's
/// or an older server's answer still yields what it has.
#[derive(serde::Deserialize, Default)]
struct LenientErrorBody {
    error: Option<String>,
    message: Option<String>,
    scope: Option<String>,
}

/// The error an answer of `status` with body `text` stands for.
pub(crate) fn error_of(status: u16, text: &str) -> RemoteError {
    let body: LenientErrorBody = serde_json::from_str(text).unwrap_or_default();
    let code = body.error.clone().unwrap_or_else(|| {
        match status {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            _ => "http_error",
        }
        .to_string()
    });
    let mut message = body.message.clone().unwrap_or_else(|| {
        let t = text.trim();
        if t.is_empty() {
            format!("HTTP {status}")
        } else {
            t.chars().take(300).collect()
        }
    });
    if code == "forbidden" {
        if let Some(scope) = &body.scope {
            if !message.contains(scope.as_str()) {
                message = format!("missing scope {scope}");
            }
        }
    }
    if code == "log_gap" {
        if let Some((job, expected)) = parse_log_gap(&message) {
            return RemoteError::LogGap { job, expected };
        }
    }
    RemoteError::Status {
        status,
        code,
        message,
    }
}

/// `job build: expected seq 7, got 8; ...` → (`build`, 7).
fn parse_log_gap(message: &str) -> Option<(String, u64)> {
    let rest = message.strip_prefix("job ")?;
    let (job, rest) = rest.split_once(": expected seq ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((job.to_string(), digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_gap_message_parses() {
        assert_eq!(
            parse_log_gap("job build: expected seq 7, got 8; send the missing lines first"),
            Some(("build".to_string(), 7))
        );
        assert_eq!(parse_log_gap("something else"), None);
    }

    #[test]
    fn error_answers_become_errors() {
        let e = error_of(
            409,
            r#"{"error":"log_gap","message":"job build: expected seq 7, got 8"}"#,
        );
        assert!(
            matches!(&e, RemoteError::LogGap { job, expected: 7 } if job == "build"),
            "{e:?}"
        );
        let e = error_of(
            403,
            r#"{"error":"forbidden","message":"no","scope":"runs:trigger"}"#,
        );
        assert_eq!(e.missing_scope(), Some("runs:trigger"));
        let e = error_of(
            403,
            r#"{"error":"forbidden","message":"missing scope approvals:write; bo is not in spec.approvers of Pipeline ci/deploy","scope":"approvals:write"}"#,
        );
        assert_eq!(e.missing_scope(), Some("approvals:write"));
        assert!(e.to_string().contains("bo is not in spec.approvers"), "{e}");
        let e = error_of(404, "");
        assert!(
            matches!(&e, RemoteError::Status { code, message, .. } if code == "not_found" && message == "HTTP 404"),
            "{e:?}"
        );
    }
}
