//! Connecting to `dockerd` and the container operations every part of the executor shares.

use super::{api, is_not_found, DockerError, LABEL_HOME, LABEL_MANAGED_BY, MANAGED_BY};
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use std::collections::HashMap;
use std::path::Path;

/// The socket used when `DOCKER_HOST` is not set (bollard's default too).
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

#[derive(Clone)]
pub struct Client {
    pub docker: Docker,
}

/// Connect and agree on an API version (Debian's dockerd 20.10 speaks 1.41; bollard's models are
/// newer, and the fields we use exist in both).
pub async fn connect() -> Result<Client, DockerError> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    let unreachable = |source| DockerError::Unreachable {
        host: host.clone(),
        source,
    };
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
    // A daemon that does not answer at all should not hang a run for bollard's 2 minutes.
    let docker = docker.with_timeout(std::time::Duration::from_secs(30));
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    Ok(Client { docker })
}

impl Client {
    /// Fail with the build hint when the runner image is missing.
    pub async fn require_image(&self, tag: &str) -> Result<(), DockerError> {
        match self.docker.inspect_image(tag).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(DockerError::ImageMissing {
                tag: tag.to_string(),
            }),
            Err(e) => Err(api(format!("inspect image {tag}"))(e)),
        }
    }

    /// `None` when there is no such container.
    pub async fn inspect(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspect container {name}"))(e)),
        }
    }

    /// Create a container; an existing one of that name is not an error (starts are idempotent).
    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<(), DockerError> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        match self.docker.create_container(Some(opts), body).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("create container {name}"))(e)),
        }
    }

    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        match self.docker.start_container(name, None).await {
            Ok(()) => Ok(()),
            // 304: already started.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("start container {name}"))(e)),
        }
    }

    /// Send a signal; a container that is gone or no longer running is not an error.
    pub async fn kill(&self, name: &str, signal: &str) -> Result<(), DockerError> {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(api(format!("kill -s {signal} {name}"))(e)),
        }
    }

    /// Remove (force: killing it if it runs); a missing container is not an error.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            // 404: gone; 409: removal already in progress.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(api(format!("remove container {name}"))(e)),
        }
    }

    /// Every container (running or not) Sparkwing made for this home, plus `extra` label filters.
    pub async fn list_managed(
        &self,
        home: &Path,
        extra: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let mut labels = vec![
            format!("{LABEL_MANAGED_BY}={MANAGED_BY}"),
            format!("{LABEL_HOME}={}", home.display()),
        ];
        labels.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        let filters = HashMap::from([("label".to_string(), labels)]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(api("list containers"))
    }
}

/// A container's name as listed (`/name` -> `name`).
pub fn summary_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

/// A label of a listed container ("" when absent).
pub fn summary_label<'a>(c: &'a ContainerSummary, key: &str) -> &'a str {
    c.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .unwrap_or("")
}
