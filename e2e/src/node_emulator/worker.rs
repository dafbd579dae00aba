//! The kubelet of one pod: a task per pod that creates its container (once its configuration
//! resolves), starts and supervises it, writes the pod's status at each step, carries out the
//! main task's commands (terminate on deletion, OOM-kill, lose) and, once the pod is gone,
//! removes the container and the pod's volumes.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use bollard::models::ContainerState;
use bollard::query_parameters::CreateContainerOptionsBuilder;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::config::{pod_volumes, ContainerConfig, PodConfig};
use super::containers::{docker_message, is_docker_not_found, kill_container, remove_container};
use super::downward::write_downward_files;
use super::status::{docker_time, now_string, PodStatus};
use super::{
    empty_dir_root, warn, Ctx, Internal, LossKind, NODE_EMULATOR_FIELD_MANAGER, OOM_KILL_ANNOTATION,
};

/// Commands from the main task to a pod worker.
pub(super) enum WorkerCmd {
    /// The Pod object got a deletionTimestamp: SIGTERM, SIGKILL after `grace`.
    Terminate {
        grace: Duration,
    },
    OomKill {
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Lose {
        kind: LossKind,
        reply: oneshot::Sender<Result<()>>,
    },
    /// The Pod object changed (labels, annotations): rewrite its downwardAPI files.
    Updated(Box<Pod>),
    /// The Pod object is gone.
    Gone,
    Shutdown,
}

/// What a worker knows of its pod's container.
pub(super) struct PodWorker {
    ctx: Arc<Ctx>,
    pod: Pod,
    name: String,
    uid: String,
    container: String,
    rx: mpsc::UnboundedReceiver<WorkerCmd>,
    status: PodStatus,
    started_at: Option<String>,
    oom: bool,
    deleting: bool,
}

/// How the supervision of a started container ended.
enum Supervised {
    Exited,
    /// Nothing more to do: the pod is gone (or shutting down).
    Stop,
    /// The pod was evicted; its status is written.
    Evicted,
}

impl PodWorker {
    pub(super) fn new(ctx: Arc<Ctx>, pod: Pod, rx: mpsc::UnboundedReceiver<WorkerCmd>) -> Self {
        let name = pod.name_any();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let container = format!(
            "sparkwing-e2e-{}-{}-{}",
            ctx.namespace,
            name,
            uid.get(..8).unwrap_or(&uid)
        );
        let oom = pod
            .annotations()
            .get(OOM_KILL_ANNOTATION)
            .map(String::as_str)
            == Some("true");
        PodWorker {
            ctx,
            pod,
            name,
            uid,
            container,
            rx,
            status: PodStatus::new(),
            started_at: None,
            oom,
            deleting: false,
        }
    }

    pub(super) async fn run(mut self) {
        if let Err(err) = self.lifecycle().await {
            warn(format_args!("pod {}: {err:#}", self.name));
        }
        if let Err(err) = remove_container(&self.ctx.docker, &self.container).await {
            warn(format_args!("pod {}: {err:#}", self.name));
        }
        // emptyDir volumes go with the pod.
        let _ = std::fs::remove_dir_all(self.volumes_dir());
        let _ = self.ctx.internal.send(Internal::WorkerDone {
            uid: self.uid.clone(),
        });
    }

    fn spec_container(&self) -> Result<Container> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned()
            .context("a pod without containers")
    }

    async fn lifecycle(&mut self) -> Result<()> {
        let container = self.spec_container()?;
        self.write_waiting(&container, "ContainerCreating", None)
            .await?;
        let image = container.image.clone().unwrap_or_default();
        match self.ctx.docker.inspect_image(&image).await {
            Ok(found) => self.status.image_id = found.id.unwrap_or_default(),
            Err(err) if is_docker_not_found(&err) => {
                let pull = format!(
                    "Failed to pull image \"{image}\": the e2e node emulator never pulls, and the \
                     image is not in the local Docker engine"
                );
                self.write_waiting(&container, "ErrImagePull", Some(&pull))
                    .await?;
                let backoff = format!("Back-off pulling image \"{image}\": ErrImagePull: {pull}");
                self.write_waiting(&container, "ImagePullBackOff", Some(&backoff))
                    .await?;
                return self.idle(false).await;
            }
            Err(err) => return Err(err).context(format!("inspecting image {image}")),
        }
        // Environment from Secrets and fields, volumes: until they resolve the container is not
        // created, as the kubelet's CreateContainerConfigError.
        let Some(config) = self.wait_for_config(&container).await? else {
            return Ok(());
        };
        remove_container(&self.ctx.docker, &self.container).await?;
        let body = self.pod_config().container_body(&container, config);
        let opts = CreateContainerOptionsBuilder::default()
            .name(&self.container)
            .build();
        match self.ctx.docker.create_container(Some(opts), body).await {
            Ok(created) => self.status.container_id = Some(created.id),
            Err(err) => {
                let message = docker_message(&err);
                self.write_waiting(&container, "CreateContainerError", Some(&message))
                    .await?;
                return self.idle(false).await;
            }
        }
        if let Err(err) = self.ctx.docker.start_container(&self.container, None).await {
            // As containerd reports an exec that fails: terminated, exit code 128, StartError.
            let message = docker_message(&err);
            let now = now_string();
            let state = json!({"terminated": {
                "exitCode": 128, "reason": "StartError", "message": message,
                "startedAt": now, "finishedAt": now,
                "containerID": self.status.container_id_uri(),
            }});
            let status = self.status.render(&container, "Failed", state, false, None);
            self.write(status).await?;
            return self.idle(true).await;
        }
        let started = self.container_state("started").await?;
        self.started_at = started
            .started_at
            .as_deref()
            .and_then(docker_time)
            .or_else(|| Some(now_string()));
        let state = json!({"running": {"startedAt": self.started_at}});
        let status = self.status.render(&container, "Running", state, true, None);
        self.write(status).await?;
        if self.oom {
            self.kill("SIGKILL").await?;
        }
        match self.supervise(&container).await? {
            Supervised::Stop => return Ok(()),
            Supervised::Evicted => return self.idle(true).await,
            Supervised::Exited => {}
        }
        let state = self.container_state("exited").await?;
        let (phase, terminated) = self
            .status
            .exited(&state, self.oom, self.started_at.as_deref());
        let status = self
            .status
            .render(&container, phase, terminated, false, None);
        self.write(status).await?;
        if self.deleting {
            // The kubelet removes a terminated pod that is being deleted.
            delete_now(&self.ctx.pods, &self.name, &self.uid).await;
            return Ok(());
        }
        self.idle(true).await
    }

    /// Waits for the running container to exit, acting on commands meanwhile.
    async fn supervise(&mut self, container: &Container) -> Result<Supervised> {
        let docker = self.ctx.docker.clone();
        let mut wait = docker.wait_container(&self.container, None);
        let mut kill_at: Option<Instant> = None;
        loop {
            tokio::select! {
                // An error too (bollard reports a non-zero exit as one): inspect says what.
                _ = wait.next() => return Ok(Supervised::Exited),
                _ = sleep_until(kill_at) => {
                    kill_at = None;
                    self.kill("SIGKILL").await?;
                }
                command = self.rx.recv() => match command {
                    None | Some(WorkerCmd::Gone) | Some(WorkerCmd::Shutdown) => {
                        return Ok(Supervised::Stop);
                    }
                    Some(WorkerCmd::Updated(pod)) => self.updated(*pod),
                    Some(WorkerCmd::Terminate { grace }) => {
                        self.deleting = true;
                        if grace.is_zero() {
                            self.kill("SIGKILL").await?;
                        } else {
                            self.kill("SIGTERM").await?;
                            kill_at = Some(Instant::now() + grace);
                        }
                    }
                    Some(WorkerCmd::OomKill { reply }) => {
                        self.oom = true;
                        let killed = self.kill("SIGKILL").await;
                        let failed = killed.as_ref().err().map(|e| anyhow!("{e:#}"));
                        if let Some(reply) = reply {
                            let _ = reply.send(killed);
                        }
                        if let Some(err) = failed {
                            return Err(err);
                        }
                    }
                    Some(WorkerCmd::Lose { kind, reply }) => {
                        let lost = self.lose(container, kind, true).await;
                        let _ = reply.send(lost);
                        return Ok(match kind {
                            LossKind::Deleted => Supervised::Stop,
                            LossKind::Evicted => Supervised::Evicted,
                        });
                    }
                }
            }
        }
    }

    /// No container runs (finished, never started or pulled): waits for the pod to go.
    async fn idle(&mut self, mut terminal: bool) -> Result<()> {
        let container = self.spec_container()?;
        loop {
            match self.rx.recv().await {
                None | Some(WorkerCmd::Gone) | Some(WorkerCmd::Shutdown) => return Ok(()),
                Some(WorkerCmd::Updated(pod)) => self.updated(*pod),
                Some(WorkerCmd::Terminate { .. }) => {
                    delete_now(&self.ctx.pods, &self.name, &self.uid).await;
                    return Ok(());
                }
                Some(WorkerCmd::OomKill { reply }) => self.no_oom_kill(reply),
                Some(WorkerCmd::Lose { kind, reply }) => {
                    if terminal && kind == LossKind::Evicted {
                        let _ = reply.send(Err(anyhow!(
                            "pod {} has finished: there is nothing to evict",
                            self.name
                        )));
                        continue;
                    }
                    let lost = self.lose(&container, kind, false).await;
                    let _ = reply.send(lost);
                    if kind == LossKind::Deleted {
                        return Ok(());
                    }
                    terminal = true;
                }
            }
        }
    }

    /// Docker's state of the pod's container (`what`: started, exited, for the error).
    async fn container_state(&self, what: &str) -> Result<ContainerState> {
        let inspected = self
            .ctx
            .docker
            .inspect_container(&self.container, None)
            .await
            .with_context(|| format!("inspecting the {what} container"))?;
        Ok(inspected.state.unwrap_or_default())
    }

    /// Answers an OOM-kill request when no container runs.
    fn no_oom_kill(&self, reply: Option<oneshot::Sender<Result<()>>>) {
        if let Some(reply) = reply {
            let _ = reply.send(Err(anyhow!(
                "pod {}: no container is running to OOM-kill",
                self.name
            )));
        }
    }

    async fn lose(&mut self, container: &Container, kind: LossKind, running: bool) -> Result<()> {
        remove_container(&self.ctx.docker, &self.container).await?;
        match kind {
            LossKind::Deleted => {
                self.ctx
                    .pods
                    .delete(&self.name, &delete_now_params(&self.uid))
                    .await
                    .with_context(|| format!("deleting pod {}", self.name))?;
            }
            LossKind::Evicted => {
                let now = now_string();
                let message = format!(
                    "The node was low on resource: memory. Container {} was evicted by the e2e \
                     node emulator.",
                    container.name
                );
                let state = if running {
                    json!({"terminated": {
                        "exitCode": 137, "reason": "Error",
                        "startedAt": self.started_at, "finishedAt": now,
                        "containerID": self.status.container_id_uri(),
                    }})
                } else {
                    json!({"terminated": {
                        "exitCode": 137, "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                        "startedAt": null, "finishedAt": now,
                    }})
                };
                let evicted = Some(("Evicted", message.as_str()));
                let status = self
                    .status
                    .render(container, "Failed", state, false, evicted);
                self.write(status).await?;
            }
        }
        Ok(())
    }

    async fn kill(&self, signal: &str) -> Result<()> {
        kill_container(&self.ctx.docker, &self.container, signal).await
    }

    /// Resolves the container's configuration, retrying every second while it cannot be built
    /// (the pod stays `Pending`, waiting with `CreateContainerConfigError` and the reason, as on
    /// a kubelet). `None`: the pod went away meanwhile.
    async fn wait_for_config(&mut self, container: &Container) -> Result<Option<ContainerConfig>> {
        let mut reported: Option<String> = None;
        loop {
            match self.pod_config().container_config(container).await? {
                Ok(config) => return Ok(Some(config)),
                Err(message) => {
                    if reported.as_deref() != Some(message.as_str()) {
                        self.write_waiting(container, "CreateContainerConfigError", Some(&message))
                            .await?;
                        reported = Some(message);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(CONFIG_RETRY) => {}
                command = self.rx.recv() => match command {
                    None | Some(WorkerCmd::Gone) | Some(WorkerCmd::Shutdown) => return Ok(None),
                    Some(WorkerCmd::Updated(pod)) => self.pod = *pod,
                    Some(WorkerCmd::Terminate { .. }) => {
                        delete_now(&self.ctx.pods, &self.name, &self.uid).await;
                        return Ok(None);
                    }
                    Some(WorkerCmd::OomKill { reply }) => self.no_oom_kill(reply),
                    Some(WorkerCmd::Lose { kind, reply }) => {
                        let lost = self.lose(container, kind, false).await;
                        let _ = reply.send(lost);
                        if kind == LossKind::Evicted {
                            self.idle(true).await?;
                        }
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The pod object changed: keep it, and rewrite the files of its downwardAPI volumes (as the
    /// kubelet does on its next sync).
    fn updated(&mut self, pod: Pod) {
        self.pod = pod;
        let volumes = pod_volumes(&self.pod);
        for volume in &volumes {
            let Some(downward) = &volume.downward_api else {
                continue;
            };
            let dir = self.volumes_dir().join(&volume.name);
            if !dir.is_dir() {
                // Not mounted (yet): the container's creation writes it.
                continue;
            }
            if let Err(message) =
                write_downward_files(&dir, &self.pod, &self.ctx.namespace, downward)
            {
                warn(format_args!(
                    "pod {}: volume {}: {message}",
                    self.name, volume.name
                ));
            }
        }
    }

    /// Where this pod's emptyDir volumes live on the host.
    fn volumes_dir(&self) -> std::path::PathBuf {
        empty_dir_root(&self.ctx.id).join(&self.uid)
    }

    /// The pod, for building its container's configuration.
    fn pod_config(&self) -> PodConfig<'_> {
        PodConfig {
            ctx: &self.ctx,
            pod: &self.pod,
            name: &self.name,
            uid: &self.uid,
            volumes_dir: self.volumes_dir(),
        }
    }

    async fn write_waiting(
        &mut self,
        container: &Container,
        reason: &str,
        message: Option<&str>,
    ) -> Result<()> {
        let state = json!({"waiting": {"reason": reason, "message": message}});
        let status = self.status.render(container, "Pending", state, false, None);
        self.write(status).await
    }

    /// Writes `status` ([`PodStatus::render`]) to the pod.
    async fn write(&self, status: Value) -> Result<()> {
        match self
            .ctx
            .pods
            .patch_status(
                &self.name,
                &patch_params(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile: the worker is told.
            Err(err) if is_kube_not_found(&err) => Ok(()),
            Err(err) => Err(err).context(format!("writing the status of pod {}", self.name)),
        }
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(NODE_EMULATOR_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

fn delete_now_params(uid: &str) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Deletes a pod with grace 0 (what the kubelet does once its containers are gone). A pod that
/// is gone already, or was replaced by another of the same name, is not an error.
pub(super) async fn delete_now(pods: &Api<Pod>, name: &str, uid: &str) {
    match pods.delete(name, &delete_now_params(uid)).await {
        Ok(_) => {}
        Err(err) if matches!(api_code(&err), Some(404 | 409)) => {}
        Err(err) => warn(format_args!("deleting pod {name}: {err}")),
    }
}

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn is_kube_not_found(err: &kube::Error) -> bool {
    api_code(err) == Some(404)
}

/// Sleeps until `at`; never returns for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => pending().await,
    }
}

/// How often a pod whose container configuration cannot be built is looked at again.
const CONFIG_RETRY: Duration = Duration::from_secs(1);
