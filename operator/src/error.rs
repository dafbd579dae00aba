//! The operator's error type. Waiting is never an error (it is an `Action`); these are failures
//! of the API or of the operator's own invariants, retried with backoff by the controllers'
//! `error_policy`.

/// What can go wrong in a reconcile, at startup, or in leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// An object from the API lacks a field the API always sets (name, namespace, uid).
    #[error("{kind} object has no {field}")]
    MissingObjectKey {
        kind: &'static str,
        field: &'static str,
    },

    /// The deterministic name of a runner is taken by an object that is not ours (a leftover of a
    /// deleted run of the same name, not yet garbage-collected).
    #[error("{kind} {name} already exists and belongs to another object")]
    NameTaken { kind: &'static str, name: String },

    /// A finished run could not be archived before its TTL deletion (it is kept until it can).
    #[error("archiving {run} before deleting it: {message}")]
    Archive { run: String, message: String },

    /// The in-process API could not mint a pool's token (its data directory).
    #[error("minting the pool token of {pool}: {message}")]
    PoolToken { pool: String, message: String },

    /// A schedule's run could not be created with its runner token (the in-process API's storage).
    #[error("creating the scheduled run {run}: {message}")]
    ScheduledRun { run: String, message: String },

    /// A run's commit status could not reach GitHub (still unavailable after the client's
    /// retries), or what was posted could not be recorded on the run.
    #[error("commit status of {run}: {message}")]
    GitHub { run: String, message: String },

    /// Another replica took the leader Lease; this one must stop writing.
    #[error("lost the leader Lease {0}")]
    LeadershipLost(String),
}

impl Error {
    /// A short, bounded label for the `error` label of metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 404 => "not_found",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Serialize { .. } => "serialize",
            Error::MissingObjectKey { .. } => "missing_object_key",
            Error::NameTaken { .. } => "name_taken",
            Error::Archive { .. } => "archive",
            Error::PoolToken { .. } => "pool_token",
            Error::ScheduledRun { .. } => "scheduled_run",
            Error::GitHub { .. } => "github",
            Error::LeadershipLost(_) => "leadership_lost",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API answered 404 Not Found.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

/// The API answered 409 because the object already exists.
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists())
}

/// The API answered 409 because a precondition (resourceVersion, uid) no longer holds.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && !s.is_already_exists())
}
