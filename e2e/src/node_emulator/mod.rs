//! [`NodeEmulator`]: TEST INFRASTRUCTURE that stands in for the kubelet when the test bed runs
//! no real node (`SPARKWING_E2E_NODE=emulator`, see `docs/e2e.md`): pods the real scheduler
//! bound to the bed's [`EMULATED_NODE`] run on the host's Docker engine and get the status a
//! kubelet would give them. The Job controller, the scheduler and the garbage collector are the
//! bed's real kube-controller-manager and kube-scheduler.
//!
//! It is not a kubelet. It does what the operator's tests need and no more; what it does not do
//! is listed in `docs/e2e.md` ("The node emulator").
//!
//! Per namespace, it acts as the **kubelet** for the pods bound to its node that carry the
//! label `app.kubernetes.io/managed-by=sparkwing` ([`NodeEmulatorOptions::label_selector`]) or
//! belong to a Job: runs their
//!   first container on Docker (host network, `command`, `args`, `env` values, `secretKeyRef`s
//!   and `fieldRef`s, `envFrom` `secretRef`s and `configMapRef`s (with `prefix`; `env` wins,
//!   a later source wins over an earlier one, keys that are not variable names are skipped),
//!   `emptyDir` and `hostPath` volumes, `workingDir`,
//!   `securityContext.runAsUser/runAsGroup`, `resources.limits.memory`) and writes pod status:
//!   `Pending`/`ContainerCreating` (`CreateContainerConfigError` while a Secret or ConfigMap it
//!   needs is missing), `Running` and `Ready`, then `Succeeded` or `Failed` with the
//!   exit code and reason (`Completed`, `Error`, `OOMKilled`). An image missing from the local
//!   engine gives `ErrImagePull` then `ImagePullBackOff` (it never pulls). A deleted pod gets
//!   SIGTERM, SIGKILL after `metadata.deletionGracePeriodSeconds`, its final status, and is then
//!   removed (grace 0), as the kubelet does.
//!
//! Test knobs: the annotation [`OOM_KILL_ANNOTATION`]`: "true"` on a pod or
//! [`NodeEmulator::oom_kill`] kills the container and reports `OOMKilled` (exit code 137);
//! [`NodeEmulator::lose`] makes a pod disappear the way a vanished node ([`LossKind::Deleted`])
//! or a kubelet eviction ([`LossKind::Evicted`]) would.
//!
//! Containers are labelled [`EMULATED_POD_LABEL`]` = <namespace>/<pod>` and [`EMULATOR_LABEL`]
//! ` = <emulator id>`; [`NodeEmulator::shutdown`] (or dropping the emulator) removes them.
//!
//! The parts: this handle starts a main task (`pods.rs`: the pod watch, which pods are ours) that
//! hands each pod to a worker (`worker.rs`: the pod's life, from creating its container to its
//! final status and deletion). A worker builds the container from the pod (`config.rs`:
//! environment, volumes, `downward.rs` files), runs it on Docker (`containers.rs`) and writes the
//! status a kubelet would (`status.rs`).

mod config;
mod containers;
mod downward;
mod pods;
mod status;
mod worker;

use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use bollard::Docker;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bed::EMULATED_NODE;
use containers::{container_logs, list_containers, remove_containers};
use pods::{parse_selector, Emulator};

/// Annotate a pod with this set to `"true"` to have its container killed as the kernel's OOM
/// killer would: the pod ends `Failed`, exit code 137, reason `OOMKilled`.
pub const OOM_KILL_ANNOTATION: &str = "e2e.sparkwing.dev/oom-kill";
/// Docker label of every container the emulator runs: `<namespace>/<pod>`.
pub const EMULATED_POD_LABEL: &str = "sparkwing.dev/emulated-pod";
/// Docker label of every container the emulator runs: the pod's uid.
pub const EMULATED_POD_UID_LABEL: &str = "sparkwing.dev/emulated-pod-uid";
/// Docker label of every container the emulator runs: the emulator's id ([`NodeEmulator::id`]).
pub const EMULATOR_LABEL: &str = "sparkwing.dev/node-emulator";
/// The field manager of the emulator's writes.
pub const NODE_EMULATOR_FIELD_MANAGER: &str = "sparkwing-e2e-node-emulator";
/// The address pods get (`hostIP`, `podIP`): containers use the host's network.
pub const POD_IP: &str = "127.0.0.1";

/// How the emulator chooses what to act on.
#[derive(Debug, Clone)]
pub struct NodeEmulatorOptions {
    /// Pods matching this selector are run (by default the operator's
    /// `app.kubernetes.io/managed-by=sparkwing`). Equality terms only (`k=v,k2=v2`); the pods of
    /// Jobs are run whatever their labels.
    pub label_selector: String,
    /// The node whose pods (`spec.nodeName`, bound by the scheduler) the emulator runs: the
    /// bed's [`EMULATED_NODE`].
    pub node_name: String,
    /// Give containers the memory limit of `resources.limits.memory`, so a real OOM kill is
    /// reported `OOMKilled` too.
    pub memory_limits: bool,
}

impl Default for NodeEmulatorOptions {
    fn default() -> Self {
        NodeEmulatorOptions {
            label_selector: sparkwing_operator::labels::managed_selector(),
            node_name: EMULATED_NODE.to_string(),
            memory_limits: true,
        }
    }
}

/// How [`NodeEmulator::lose`] makes a pod disappear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// The node vanished: the container is removed and the Pod object deleted (grace 0), with
    /// no final status (the Job controller counts the pod as failed).
    Deleted,
    /// The kubelet evicted the pod: the container is removed and the pod set `Failed` with
    /// `reason: Evicted`, a message and a `DisruptionTarget` condition; the object stays.
    Evicted,
}

/// TEST INFRASTRUCTURE: the kubelet of one namespace of the test bed, running its pods on the
/// local Docker engine. See the [module docs](self).
pub struct NodeEmulator {
    namespace: String,
    node_name: String,
    id: String,
    docker: Docker,
    control: mpsc::UnboundedSender<Control>,
    main: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for NodeEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeEmulator")
            .field("namespace", &self.namespace)
            .field("node_name", &self.node_name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Requests from the [`NodeEmulator`] handle to its main task.
enum Control {
    OomKill {
        pod: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Lose {
        pod: String,
        kind: LossKind,
        reply: oneshot::Sender<Result<()>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl NodeEmulator {
    /// Starts emulating a node for `namespace`: connects to Docker (`DOCKER_HOST` or
    /// `/var/run/docker.sock`), then watches the Pods bound to its node on a task of the current
    /// runtime.
    /// Stop it with [`shutdown`](Self::shutdown); dropping it also removes its containers.
    pub async fn start(
        client: Client,
        namespace: &str,
        options: NodeEmulatorOptions,
    ) -> Result<NodeEmulator> {
        let docker = Docker::connect_with_defaults()
            .context("connecting to the Docker engine for the node emulator")?
            .negotiate_version()
            .await
            .context("connecting to the Docker engine for the node emulator")?;
        let id = emulator_id();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let selector = parse_selector(&options.label_selector)?;
        let node_name = options.node_name.clone();
        let ctx = Arc::new(Ctx {
            pods: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client.clone(), namespace),
            docker: docker.clone(),
            namespace: namespace.to_string(),
            id: id.clone(),
            options,
            selector,
            internal: internal_tx,
        });
        let main = tokio::spawn(Emulator::new(ctx).run(control_rx, internal_rx));
        Ok(NodeEmulator {
            namespace: namespace.to_string(),
            node_name,
            id,
            docker,
            control: control_tx,
            main: Some(main),
        })
    }

    /// The namespace it acts in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The node name pods are bound to.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// This emulator's id, the value of [`EMULATOR_LABEL`] on its containers.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Kills the pod's container as the OOM killer would (SIGKILL); the pod then ends `Failed`
    /// with exit code 137 and reason `OOMKilled`. A pod whose container has not started yet is
    /// killed as soon as it starts. Returns once the kill is sent. Same as setting the
    /// annotation [`OOM_KILL_ANNOTATION`]` = "true"`.
    pub async fn oom_kill(&self, pod: &str) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Control::OomKill {
            pod: pod.to_string(),
            reply,
        })?;
        answer.await.context("the node emulator stopped")?
    }

    /// Makes the pod disappear as a lost node ([`LossKind::Deleted`]) or an eviction
    /// ([`LossKind::Evicted`]) would. Returns once the container is removed and the Pod object
    /// deleted, or its `Evicted` status written.
    pub async fn lose(&self, pod: &str, kind: LossKind) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Control::Lose {
            pod: pod.to_string(),
            kind,
            reply,
        })?;
        answer.await.context("the node emulator stopped")?
    }

    /// The output (stdout and stderr, interleaved as Docker kept them) of the pod's container;
    /// empty when it has none (not started, or removed).
    pub async fn logs(&self, pod: &str) -> Result<String> {
        match self.containers(pod).await?.into_iter().next() {
            Some(name) => container_logs(&self.docker, &name).await,
            None => Ok(String::new()),
        }
    }

    /// The names of the Docker containers (running or not) this emulator holds for the pod.
    /// Empty once the pod is deleted and its container removed.
    pub async fn containers(&self, pod: &str) -> Result<Vec<String>> {
        list_containers(
            &self.docker,
            &[
                (EMULATOR_LABEL, &self.id),
                (EMULATED_POD_LABEL, &format!("{}/{pod}", self.namespace)),
            ],
        )
        .await
    }

    /// The names of all Docker containers (running or not) this emulator holds.
    pub async fn all_containers(&self) -> Result<Vec<String>> {
        list_containers(&self.docker, &[(EMULATOR_LABEL, &self.id)]).await
    }

    /// Stops watching and removes every container the emulator ran. Pod and Job objects are
    /// left as they are.
    pub async fn shutdown(mut self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if self.control.send(Control::Shutdown { reply }).is_ok() {
            let _ = answer.await;
        }
        if let Some(main) = self.main.take() {
            let _ = main.await;
        }
        let removed = remove_containers(&self.docker, &self.id).await;
        let _ = std::fs::remove_dir_all(empty_dir_root(&self.id));
        removed
    }

    fn send(&self, control: Control) -> Result<()> {
        self.control
            .send(control)
            .map_err(|_| anyhow!("the node emulator stopped"))
    }
}

impl Drop for NodeEmulator {
    /// Without [`shutdown`](NodeEmulator::shutdown) (a test that panicked, say): stops the
    /// tasks and removes the containers on a thread of its own (drop cannot await, and the
    /// test's runtime may be shutting down).
    fn drop(&mut self) {
        let Some(main) = self.main.take() else {
            return;
        };
        main.abort();
        let id = self.id.clone();
        let removed = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let removed = runtime.block_on(async {
                let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
                remove_containers(&docker, &id).await
            });
            let _ = std::fs::remove_dir_all(empty_dir_root(&id));
            removed
        })
        .join();
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("sparkwing-e2e node emulator: removing containers: {err:#}"),
            Err(_) => eprintln!("sparkwing-e2e node emulator: removing containers panicked"),
        }
    }
}

/// What the main task and the pod workers share.
struct Ctx {
    docker: Docker,
    namespace: String,
    id: String,
    options: NodeEmulatorOptions,
    selector: Vec<(String, Option<String>)>,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    internal: mpsc::UnboundedSender<Internal>,
}

/// Messages from pod workers to the main task.
enum Internal {
    /// The worker of the pod with this uid ended: its container is removed.
    WorkerDone { uid: String },
}

/// Where an emulator keeps the emptyDir volumes of its pods (`<root>/<pod uid>/<volume>`).
fn empty_dir_root(emulator: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join("sparkwing-e2e-emptydir")
        .join(emulator)
}

fn warn(message: std::fmt::Arguments<'_>) {
    eprintln!("sparkwing-e2e node emulator: {message}");
}

fn emulator_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Timestamp::now().as_nanosecond().unsigned_abs());
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}
