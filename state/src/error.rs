//! One error type for both traits. [`StateError::retryable`] separates an outage (the API answers
//! 503 and the client retries) from a request or data problem (retrying cannot help).

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// The URL forms [`crate::open_metadata`] accepts, for error messages.
pub const METADATA_FORMS: &str = "sqlite:///absolute/path/state.db, a directory (its state.db), \
    postgres://user@host[:port]/db (also postgresql://), or host=/socket/dir user=… dbname=…";
/// The URL forms [`crate::open_content`] accepts, for error messages.
pub const CONTENT_FORMS: &str =
    "a directory (embedded files), file:///absolute/path (object store on a file system), \
     or s3://bucket[/prefix] (endpoint and credentials from AWS_* variables)";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database or object store did not answer, or answered that it cannot serve now.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    #[error("bad {what} URL {url:?}: {why}; accepted forms: {forms}")]
    BadUrl {
        what: &'static str,
        url: String,
        why: String,
        forms: &'static str,
    },
    #[error("{location} has schema version {found}, newer than this binary supports ({supported}); upgrade sparkwing, or point it at another database")]
    SchemaTooNew {
        location: String,
        found: i64,
        supported: i64,
    },
    #[error("log of job {job}: expected seq {expected}, got {got}")]
    LogGap {
        job: String,
        expected: u64,
        got: u64,
    },
    #[error("blob {expected}: the content's sha256 is {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("the body of blob {sha256} could not be read: {source}")]
    Body {
        sha256: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: corrupt record: {detail}")]
    Corrupt { location: String, detail: String },
    /// A failure retrying cannot fix (a constraint, a bad statement, a full disk).
    #[error("{backend}: {detail}")]
    Backend {
        backend: &'static str,
        detail: String,
    },
}

impl StateError {
    /// True for an outage: the same request may succeed later, unchanged.
    pub fn retryable(&self) -> bool {
        matches!(self, StateError::Unavailable { .. })
    }

    pub(crate) fn invalid(what: &'static str, value: &str, why: &'static str) -> Self {
        StateError::Invalid {
            what,
            value: value.to_string(),
            why,
        }
    }
}

pub(crate) fn io_error(location: &std::path::Path, e: std::io::Error) -> StateError {
    // A full disk or a permission problem does not go away by retrying; an interrupted or timed
    // out operation may.
    use std::io::ErrorKind::*;
    let detail = format!("{}: {e}", location.display());
    match e.kind() {
        Interrupted | TimedOut | WouldBlock => StateError::Unavailable {
            backend: "file store",
            detail,
        },
        _ => StateError::Backend {
            backend: "file store",
            detail,
        },
    }
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> StateError {
    StateError::Backend {
        backend: "blocking task",
        detail: e.to_string(),
    }
}
