//! The Docker side of the emulator: the containers it runs pods in, found by their labels,
//! signalled, read and removed. Docker's "not found" and "conflict" answers for a container that
//! is gone or going are not errors here.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::EMULATOR_LABEL;

pub(super) fn is_docker_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Docker's 404 (the container is gone) or 409 (it is in no state for the request).
fn is_gone_or_conflict(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }
    )
}

pub(super) fn docker_message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Removes a container, running or not; one that is gone (or going) already is not an error.
pub(super) async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(name, Some(opts)).await {
        // 409: removal already in progress.
        Err(err) if !is_gone_or_conflict(&err) => {
            Err(err).context(format!("removing container {name}"))
        }
        _ => Ok(()),
    }
}

/// The names of the containers (running or not) that carry every label of `labels`.
pub(super) async fn list_containers(
    docker: &Docker,
    labels: &[(&str, &str)],
) -> Result<Vec<String>> {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let filters = HashMap::from([("label".to_string(), labels)]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker
        .list_containers(Some(opts))
        .await
        .context("listing containers")?;
    Ok(containers
        .into_iter()
        .filter_map(|c| c.names?.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect())
}

/// Removes every container of the emulator `id`.
pub(super) async fn remove_containers(docker: &Docker, id: &str) -> Result<()> {
    for name in list_containers(docker, &[(EMULATOR_LABEL, id)]).await? {
        remove_container(docker, &name).await?;
    }
    Ok(())
}

/// Sends `signal` to a container; one that is gone or has stopped is not an error.
pub(super) async fn kill_container(docker: &Docker, name: &str, signal: &str) -> Result<()> {
    let opts = KillContainerOptionsBuilder::default()
        .signal(signal)
        .build();
    match docker.kill_container(name, Some(opts)).await {
        // 409: not running any more.
        Err(err) if !is_gone_or_conflict(&err) => {
            Err(err).context(format!("kill -s {signal} {name}"))
        }
        _ => Ok(()),
    }
}

/// The output (stdout and stderr, interleaved as Docker kept them) of a container; what was read
/// when it is removed meanwhile.
pub(super) async fn container_logs(docker: &Docker, name: &str) -> Result<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(name, Some(opts));
    let mut out = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => out.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
            Err(err) if is_docker_not_found(&err) => break,
            Err(err) => return Err(err).context(format!("reading the logs of {name}")),
        }
    }
    Ok(out)
}
