//! The Docker executor: a run's runner is a container on the local `dockerd`, driven by the same
//! reconcile decision as the Kubernetes operator (`sparkwing_core::reconcile`).
//!
//! - `client`: connecting (and saying which socket failed), containers by label, removal.
//! - `image`: the runner image, built locally from our own binaries and busybox.
//! - `request`: the file a runner reads to know which recorded run to continue.
//! - `executor`: `DockerExecutor: Executor` and the host's drive loop.
//! - `pool`: warm runner containers kept by `sparkwing pool run`.
//! - `gc`: orphaned containers found and removed by label.

pub mod client;
pub mod container;
pub mod executor;
pub mod gc;
pub mod image;
pub mod pool;
pub mod request;

use sparkwing_engine::exit::ExitCode;
use sparkwing_engine::store::StoreError;
use sparkwing_engine::EngineError;

/// Every container Sparkwing creates carries these labels; orphans are found by them.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "sparkwing";
pub const LABEL_RUN: &str = "sparkwing.dev/run";
pub const LABEL_POOL: &str = "sparkwing.dev/pool";
/// The absolute `SPARKWING_HOME` the container belongs to: several homes share one `dockerd`.
pub const LABEL_HOME: &str = "sparkwing.dev/home";
pub const LABEL_VERSION: &str = "sparkwing.dev/version";
/// A key over the image's contents (see `image`): equal keys, nothing to rebuild.
pub const LABEL_ROOTFS: &str = "sparkwing.dev/rootfs-key";

/// Overrides the runner image (default `sparkwing-runner:<version>`).
pub const ENV_RUNNER_IMAGE: &str = "SPARKWING_RUNNER_IMAGE";

/// Where the image puts `sparkwing`; the host's executable is bind-mounted over it.
pub const RUNNER_EXE: &str = "/usr/local/bin/sparkwing";

/// The runner image this `sparkwing` uses.
pub fn runner_image() -> String {
    std::env::var(ENV_RUNNER_IMAGE)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(default_image_tag)
}

pub fn default_image_tag() -> String {
    format!("sparkwing-runner:{}", env!("CARGO_PKG_VERSION"))
}

/// The container of `attempt` of `run` (a cold runner).
pub fn container_name(run: &str, attempt: u32) -> String {
    format!("sparkwing-{run}-{attempt}")
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach Docker at {host}{from}: {source}; start dockerd (`sudo systemctl start docker`, or `dockerd &`) or point DOCKER_HOST at a running daemon", from = if std::env::var_os("DOCKER_HOST").is_some() { " (from DOCKER_HOST)" } else { " (the default socket; set DOCKER_HOST to use another)" })]
    Unreachable {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("runner image {tag} is not present; build it with `sparkwing runner-image build` (or `make runner-image`)")]
    ImageMissing { tag: String },
    #[error("docker {op}: {source}")]
    Api {
        op: String,
        source: bollard::errors::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl DockerError {
    /// Docker missing or unusable is exit code 7; the rest are internal errors.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            DockerError::Unreachable { .. } | DockerError::ImageMissing { .. } => ExitCode::Docker,
            DockerError::Store(_) => ExitCode::Store,
            _ => ExitCode::Internal,
        }
    }
}

pub(crate) fn api(op: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let op = op.into();
    move |source| DockerError::Api { op, source }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DockerError {
    let what = what.into();
    move |source| DockerError::Io { what, source }
}

/// Whether a Docker error is a 404 (no such container or image).
pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
