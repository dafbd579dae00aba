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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvFromSource, EnvVarSource, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bed::EMULATED_NODE;

/// The label the operator puts on what it creates; the emulator's default selector.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] the emulator acts on by default.
pub const MANAGED_BY: &str = "sparkwing";
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

/// How long [`NodeEmulator::shutdown`] waits for the pod workers to remove their containers.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How the emulator chooses what to act on.
#[derive(Debug, Clone)]
pub struct NodeEmulatorOptions {
    /// Pods matching this selector are run. Equality terms only (`k=v,k2=v2`); the pods of
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
            label_selector: format!("{MANAGED_BY_LABEL}={MANAGED_BY}"),
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

/// TEST INFRASTRUCTURE: the kubelet, Job controller and garbage collector of one namespace of the
/// test bed, running pods on the local Docker engine. See the [module docs](self).
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
    /// `/var/run/docker.sock`), then watches Jobs and Pods on a task of the current runtime.
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
        let emulator = Emulator {
            ctx,
            pods: BTreeMap::new(),
            workers: HashMap::new(),
            started: HashSet::new(),
        };
        let main = tokio::spawn(emulator.run(control_rx, internal_rx));
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
        let Some(name) = self.containers(pod).await?.into_iter().next() else {
            return Ok(String::new());
        };
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = self.docker.logs(&name, Some(opts));
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

/// What the main task, the pod workers and the garbage collector share.
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

/// Whether `name` can be an environment variable set from `envFrom` (the kubelet's check: no
/// `=`, not empty, printable ASCII, not starting with a digit).
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
}

/// What a container is created with besides its image, command and user.
struct ContainerConfig {
    /// `NAME=value`, in the pod's order.
    env: Vec<String>,
    /// Docker binds, `host:container:ro|rw`: hostPath and emptyDir volumes.
    binds: Vec<String>,
    /// `emptyDir` volumes with `medium: Memory`: container path -> tmpfs options.
    tmpfs: HashMap<String, String>,
}

/// How often a pod whose container configuration cannot be built is looked at again.
const CONFIG_RETRY: Duration = Duration::from_secs(1);

/// Where an emulator keeps the emptyDir volumes of its pods (`<root>/<pod uid>/<volume>`).
fn empty_dir_root(emulator: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join("sparkwing-e2e-emptydir")
        .join(emulator)
}

/// `metadata.labels['key']` (or annotations) of a fieldRef path, when `path` is one.
fn field_of_map(
    path: &str,
    prefix: &str,
    map: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    let key = path
        .strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")?;
    Some(map.and_then(|m| m.get(key).cloned()).unwrap_or_default())
}

/// A Go `%q` string literal, as the kubelet quotes downwardAPI values (`fieldpath.FormatMap`).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A map in the kubelet's downwardAPI format: `key="value"` lines sorted by key, no final
/// newline.
pub fn format_downward_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Write the items of a downwardAPI volume into `dir`, each atomically (a temporary file renamed
/// into place inside `dir`, which a container bind-mounting `dir` sees) and only when its content
/// changed. `Err`: an item the emulator does not support.
fn write_downward_files(
    dir: &std::path::Path,
    pod: &Pod,
    namespace: &str,
    volume: &k8s_openapi::api::core::v1::DownwardAPIVolumeSource,
) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = &pod.metadata;
    for item in volume.items.iter().flatten() {
        let Some(field) = &item.field_ref else {
            return Err(format!(
                "item {:?}: only fieldRef items are supported by the e2e node emulator",
                item.path
            ));
        };
        let content = match field.field_path.as_str() {
            "metadata.annotations" => format_downward_map(meta.annotations.as_ref()),
            "metadata.labels" => format_downward_map(meta.labels.as_ref()),
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => namespace.to_string(),
            other => {
                return Err(format!(
                    "item {:?}: fieldRef {other:?} is not supported by the e2e node emulator",
                    item.path
                ))
            }
        };
        let rel = std::path::Path::new(&item.path);
        if item.path.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("item path {:?} is not a relative path", item.path));
        }
        let path = dir.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let tmp = parent.join(format!(
            "..{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("item")
        ));
        let mode = item.mode.or(volume.default_mode).unwrap_or(0o644) as u32;
        std::fs::write(&tmp, &content).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("renaming into {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Messages from pod workers to the main task.
enum Internal {
    /// The worker of the pod with this uid ended: its container is removed.
    WorkerDone { uid: String },
}

/// Commands from the main task to a pod worker.
enum WorkerCmd {
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

struct WorkerHandle {
    tx: mpsc::UnboundedSender<WorkerCmd>,
    terminate_sent: bool,
    oom_sent: bool,
    task: JoinHandle<()>,
}

/// The main task: the pod watch, and the dispatch of pods to workers.
struct Emulator {
    ctx: Arc<Ctx>,
    /// The pods the emulator runs, by name.
    pods: BTreeMap<String, Pod>,
    /// By pod uid; removed when the worker reports it is done.
    workers: HashMap<String, WorkerHandle>,
    /// Uids of pods a worker was started for (never twice).
    started: HashSet<String>,
}

/// Objects seen during a watch (re-)list, to find those deleted while the watch was down.
struct Relist(Option<HashSet<String>>);

impl Emulator {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        // The pods the scheduler bound to this node; those of Jobs need not carry the label.
        let bound = format!("spec.nodeName={}", self.ctx.options.node_name);
        let mut pods = watcher(
            self.ctx.pods.clone(),
            watcher::Config::default().fields(&bound),
        )
        .default_backoff()
        .boxed();
        let mut pod_relist = Relist(None);
        loop {
            tokio::select! {
                event = pods.next() => match event {
                    Some(Ok(event)) => self.on_pod_event(event, &mut pod_relist).await,
                    Some(Err(err)) => warn(format_args!("watching Pods: {err}")),
                    None => break,
                },
                Some(message) = internal.recv() => match message {
                    Internal::WorkerDone { uid } => {
                        self.workers.remove(&uid);
                    }
                },
                control = control.recv() => match control {
                    Some(Control::OomKill { pod, reply }) => self.forward_oom(&pod, reply),
                    Some(Control::Lose { pod, kind, reply }) => {
                        match self.worker_of(&pod) {
                            Ok(worker) => {
                                let _ = worker.tx.send(WorkerCmd::Lose { kind, reply });
                            }
                            Err(err) => {
                                let _ = reply.send(Err(err));
                            }
                        }
                    }
                    Some(Control::Shutdown { reply }) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => break,
                },
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        let workers: Vec<WorkerHandle> = self.workers.drain().map(|(_, w)| w).collect();
        for worker in &workers {
            let _ = worker.tx.send(WorkerCmd::Shutdown);
        }
        let all = futures_util::future::join_all(workers.into_iter().map(|w| w.task));
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, all).await.is_err() {
            warn(format_args!(
                "pod workers did not stop within {SHUTDOWN_TIMEOUT:?}"
            ));
        }
    }

    fn worker_of(&self, pod: &str) -> Result<&WorkerHandle> {
        let uid = self
            .pods
            .get(pod)
            .and_then(|p| p.metadata.uid.clone())
            .ok_or_else(|| {
                anyhow!(
                    "the node emulator runs no pod {pod} in namespace {}",
                    self.ctx.namespace
                )
            })?;
        self.workers
            .get(&uid)
            .ok_or_else(|| anyhow!("the node emulator's worker for pod {pod} has ended"))
    }

    fn forward_oom(&mut self, pod: &str, reply: oneshot::Sender<Result<()>>) {
        let uid = match self.worker_of(pod) {
            Ok(_) => self.pods[pod].metadata.uid.clone().unwrap_or_default(),
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        if let Some(worker) = self.workers.get_mut(&uid) {
            worker.oom_sent = true;
            let _ = worker.tx.send(WorkerCmd::OomKill { reply: Some(reply) });
        }
    }

    /// Whether the emulator runs this pod (bound to its node): it matches the selector or a Job
    /// controls it.
    fn is_ours(&self, pod: &Pod) -> bool {
        matches_selector(&self.ctx.selector, pod.labels())
            || controller_of(&pod.metadata).is_some_and(|owner| owner.kind == "Job")
    }

    async fn on_pod_event(&mut self, event: Event<Pod>, relist: &mut Relist) {
        match event {
            Event::Init => relist.0 = Some(HashSet::new()),
            Event::InitApply(pod) | Event::Apply(pod) => {
                if let Some(seen) = relist.0.as_mut() {
                    seen.insert(pod.name_any());
                }
                self.pod_applied(pod).await;
            }
            Event::InitDone => {
                if let Some(seen) = relist.0.take() {
                    let gone: Vec<Pod> = self
                        .pods
                        .values()
                        .filter(|p| !seen.contains(&p.name_any()))
                        .cloned()
                        .collect();
                    for pod in gone {
                        self.pod_deleted(pod).await;
                    }
                }
            }
            Event::Delete(pod) => self.pod_deleted(pod).await,
        }
    }

    async fn pod_applied(&mut self, pod: Pod) {
        if !self.is_ours(&pod) {
            return;
        }
        let name = pod.name_any();
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let oom = pod
            .annotations()
            .get(OOM_KILL_ANNOTATION)
            .map(String::as_str)
            == Some("true");
        if let Some(worker) = self.workers.get_mut(&uid) {
            let _ = worker.tx.send(WorkerCmd::Updated(Box::new(pod.clone())));
            if deleting && !worker.terminate_sent {
                worker.terminate_sent = true;
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .unwrap_or(0)
                    .max(0);
                let _ = worker.tx.send(WorkerCmd::Terminate {
                    grace: Duration::from_secs(grace.unsigned_abs()),
                });
            }
            if oom && !worker.oom_sent {
                worker.oom_sent = true;
                let _ = worker.tx.send(WorkerCmd::OomKill { reply: None });
            }
        } else if !self.started.contains(&uid) {
            if deleting {
                // Nothing of it runs here: finish the deletion, as the kubelet would.
                delete_now(&self.ctx.pods, &name, &uid).await;
            } else if !is_terminal(&pod) {
                self.started.insert(uid.clone());
                let (tx, rx) = mpsc::unbounded_channel();
                let worker = PodWorker::new(self.ctx.clone(), pod.clone(), rx);
                let task = tokio::spawn(worker.run());
                self.workers.insert(
                    uid.clone(),
                    WorkerHandle {
                        tx,
                        terminate_sent: false,
                        oom_sent: oom,
                        task,
                    },
                );
            }
        }
        self.pods.insert(name, pod);
    }

    async fn pod_deleted(&mut self, pod: Pod) {
        let name = pod.name_any();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ours = self
            .pods
            .get(&name)
            .is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
        if !ours {
            return;
        }
        self.pods.remove(&name);
        if let Some(worker) = self.workers.get(&uid) {
            let _ = worker.tx.send(WorkerCmd::Gone);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The kubelet: one worker per pod.

/// What a worker knows of its pod's container.
struct PodWorker {
    ctx: Arc<Ctx>,
    pod: Pod,
    name: String,
    uid: String,
    container: String,
    rx: mpsc::UnboundedReceiver<WorkerCmd>,
    /// Condition type -> (status, lastTransitionTime).
    conditions: BTreeMap<&'static str, (bool, String)>,
    start_time: String,
    container_id: Option<String>,
    image_id: String,
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
    fn new(ctx: Arc<Ctx>, pod: Pod, rx: mpsc::UnboundedReceiver<WorkerCmd>) -> Self {
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
            conditions: BTreeMap::new(),
            start_time: now_string(),
            container_id: None,
            image_id: String::new(),
            started_at: None,
            oom,
            deleting: false,
        }
    }

    async fn run(mut self) {
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
            Ok(found) => self.image_id = found.id.unwrap_or_default(),
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
        let body = self.container_body(&container, config);
        let opts = CreateContainerOptionsBuilder::default()
            .name(&self.container)
            .build();
        match self.ctx.docker.create_container(Some(opts), body).await {
            Ok(created) => self.container_id = Some(created.id),
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
                "containerID": self.container_id_uri(),
            }});
            self.write(&container, "Failed", state, false, None).await?;
            return self.idle(true).await;
        }
        let inspected = self
            .ctx
            .docker
            .inspect_container(&self.container, None)
            .await
            .context("inspecting the started container")?;
        self.started_at = inspected
            .state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(docker_time)
            .or_else(|| Some(now_string()));
        let state = json!({"running": {"startedAt": self.started_at}});
        self.write(&container, "Running", state, true, None).await?;
        if self.oom {
            self.kill("SIGKILL").await?;
        }
        match self.supervise(&container).await? {
            Supervised::Stop => return Ok(()),
            Supervised::Evicted => return self.idle(true).await,
            Supervised::Exited => {}
        }
        let inspected = self
            .ctx
            .docker
            .inspect_container(&self.container, None)
            .await
            .context("inspecting the exited container")?;
        let state = inspected.state.unwrap_or_default();
        let exit_code = state.exit_code.unwrap_or(-1);
        let oom = self.oom || state.oom_killed == Some(true);
        let reason = if oom {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let finished_at = state
            .finished_at
            .as_deref()
            .and_then(docker_time)
            .unwrap_or_else(now_string);
        let terminated = json!({"terminated": {
            "exitCode": if oom && exit_code == 0 { 137 } else { exit_code },
            "reason": reason,
            "startedAt": self.started_at,
            "finishedAt": finished_at,
            "containerID": self.container_id_uri(),
        }});
        let phase = if exit_code == 0 && !oom {
            "Succeeded"
        } else {
            "Failed"
        };
        self.write(&container, phase, terminated, false, None)
            .await?;
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
                Some(WorkerCmd::OomKill { reply }) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(anyhow!(
                            "pod {}: no container is running to OOM-kill",
                            self.name
                        )));
                    }
                }
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
                        "containerID": self.container_id_uri(),
                    }})
                } else {
                    json!({"terminated": {
                        "exitCode": 137, "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                        "startedAt": null, "finishedAt": now,
                    }})
                };
                self.write(
                    container,
                    "Failed",
                    state,
                    false,
                    Some(("Evicted", &message)),
                )
                .await?;
            }
        }
        Ok(())
    }

    fn container_id_uri(&self) -> Option<String> {
        self.container_id
            .as_ref()
            .map(|id| format!("docker://{id}"))
    }

    async fn kill(&self, signal: &str) -> Result<()> {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self
            .ctx
            .docker
            .kill_container(&self.container, Some(opts))
            .await
        {
            Ok(()) => Ok(()),
            // Gone, or not running any more.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(err) => Err(err).context(format!("kill -s {signal} {}", self.container)),
        }
    }

    /// Resolves the container's configuration, retrying every second while it cannot be built
    /// (the pod stays `Pending`, waiting with `CreateContainerConfigError` and the reason, as on
    /// a kubelet). `None`: the pod went away meanwhile.
    async fn wait_for_config(&mut self, container: &Container) -> Result<Option<ContainerConfig>> {
        let mut reported: Option<String> = None;
        loop {
            match self.container_config(container).await? {
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
                    Some(WorkerCmd::OomKill { reply }) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(anyhow!(
                                "pod {}: no container is running to OOM-kill",
                                self.name
                            )));
                        }
                    }
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

    /// The container's environment and mounts; `Err(message)` when they cannot be built yet (a
    /// Secret or key that does not exist, an unsupported source).
    async fn container_config(
        &self,
        container: &Container,
    ) -> Result<std::result::Result<ContainerConfig, String>> {
        // `envFrom` first, each source over the ones before it; then `env`, over all of them.
        let mut vars: Vec<(String, String)> = Vec::new();
        let set = |vars: &mut Vec<(String, String)>, name: String, value: String| match vars
            .iter_mut()
            .find(|(n, _)| *n == name)
        {
            Some(v) => v.1 = value,
            None => vars.push((name, value)),
        };
        for source in container.env_from.iter().flatten() {
            match self.env_from_source(source).await? {
                Ok(pairs) => {
                    for (name, value) in pairs {
                        set(&mut vars, name, value);
                    }
                }
                Err(message) => return Ok(Err(message)),
            }
        }
        for e in container.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (_, Some(from)) => match self.env_from(&e.name, from).await? {
                    Ok(Some(v)) => v,
                    // An optional Secret or key that does not exist: the variable is unset.
                    Ok(None) => continue,
                    Err(message) => return Ok(Err(message)),
                },
                (value, None) => value.clone().unwrap_or_default(),
            };
            set(&mut vars, e.name.clone(), value);
        }
        let env = vars
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let mut config = ContainerConfig {
            env,
            binds: Vec::new(),
            tmpfs: HashMap::new(),
        };
        let volumes = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for mount in container.volume_mounts.iter().flatten() {
            let Some(volume) = volumes.iter().find(|v| v.name == mount.name) else {
                return Ok(Err(format!(
                    "volumeMount {:?} names no volume of the pod",
                    mount.name
                )));
            };
            let read_only = mount.read_only == Some(true);
            let sub_path = mount.sub_path.as_deref().filter(|p| !p.is_empty());
            let source = if let Some(dir) = &volume.empty_dir {
                if dir.medium.as_deref() == Some("Memory") && sub_path.is_none() {
                    let mode = if read_only {
                        "ro,mode=1777"
                    } else {
                        "rw,mode=1777"
                    };
                    config
                        .tmpfs
                        .insert(mount.mount_path.clone(), mode.to_string());
                    continue;
                }
                let dir = self.empty_dir(&volume.name)?;
                dir.to_string_lossy().into_owned()
            } else if let Some(host) = &volume.host_path {
                if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
                    std::fs::create_dir_all(&host.path)
                        .with_context(|| format!("creating hostPath {}", host.path))?;
                }
                host.path.clone()
            } else if let Some(downward) = &volume.downward_api {
                // Read-only, as the kubelet mounts it; rewritten when the pod changes.
                let dir = self.empty_dir(&volume.name)?;
                if let Err(message) =
                    write_downward_files(&dir, &self.pod, &self.ctx.namespace, downward)
                {
                    return Ok(Err(format!("volume {:?}: {message}", volume.name)));
                }
                config
                    .binds
                    .push(format!("{}:{}:ro", dir.to_string_lossy(), mount.mount_path));
                continue;
            } else if volume.projected.is_some() {
                // The service account token the admission plugin adds to every pod: not mounted
                // (runners reach the API server with their own credentials in tests).
                continue;
            } else {
                return Ok(Err(format!(
                    "volume {:?}: the e2e node emulator mounts only emptyDir, hostPath and downwardAPI volumes",
                    volume.name
                )));
            };
            let source = match sub_path {
                Some(sub) => format!("{}/{sub}", source.trim_end_matches('/')),
                None => source,
            };
            let mode = if read_only { "ro" } else { "rw" };
            config
                .binds
                .push(format!("{source}:{}:{mode}", mount.mount_path));
        }
        Ok(Ok(config))
    }

    /// The variables of one `envFrom` source (a Secret's or ConfigMap's keys, with its prefix):
    /// empty for an optional one that does not exist, `Err(message)` for a required one that
    /// does not (the kubelet's `CreateContainerConfigError`). Keys that are not variable names
    /// are skipped, as the kubelet does.
    async fn env_from_source(
        &self,
        source: &EnvFromSource,
    ) -> Result<std::result::Result<Vec<(String, String)>, String>> {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (kind, name, optional, data): (&str, &str, bool, Option<BTreeMap<String, String>>) =
            if let Some(r) = &source.secret_ref {
                let secret = self
                    .ctx
                    .secrets
                    .get_opt(&r.name)
                    .await
                    .with_context(|| format!("reading Secret {}", r.name))?;
                let data = secret.map(|s| {
                    let mut d: BTreeMap<String, String> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    d.extend(s.string_data.unwrap_or_default());
                    d
                });
                ("secret", &r.name, r.optional == Some(true), data)
            } else if let Some(r) = &source.config_map_ref {
                let map = self
                    .ctx
                    .config_maps
                    .get_opt(&r.name)
                    .await
                    .with_context(|| format!("reading ConfigMap {}", r.name))?;
                let data = map.map(|m| m.data.unwrap_or_default());
                ("configmap", &r.name, r.optional == Some(true), data)
            } else {
                return Ok(Err(
                    "envFrom: a source needs secretRef or configMapRef".to_string()
                ));
            };
        Ok(match data {
            None if optional => Ok(Vec::new()),
            None => Err(format!("{kind} \"{name}\" not found")),
            Some(data) => Ok(data
                .into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .filter(|(k, _)| is_env_name(k))
                .collect()),
        })
    }

    /// The value of an environment variable with `valueFrom`: `Ok(None)` for an optional Secret
    /// or key that does not exist, `Err(message)` when the variable cannot be set (yet).
    async fn env_from(
        &self,
        name: &str,
        from: &EnvVarSource,
    ) -> Result<std::result::Result<Option<String>, String>> {
        if let Some(sel) = &from.secret_key_ref {
            let optional = sel.optional == Some(true);
            let secret = match self.ctx.secrets.get_opt(&sel.name).await {
                Ok(s) => s,
                Err(err) => {
                    return Err(err).context(format!("reading Secret {}", sel.name));
                }
            };
            let Some(secret) = secret else {
                return Ok(if optional {
                    Ok(None)
                } else {
                    Err(format!("secret \"{}\" not found", sel.name))
                });
            };
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&sel.key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(&sel.key).cloned())
                });
            return Ok(match value {
                Some(v) => Ok(Some(v)),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in Secret {}/{}",
                    sel.key, self.ctx.namespace, sel.name
                )),
            });
        }
        if let Some(field) = &from.field_ref {
            let meta = &self.pod.metadata;
            let value = match field.field_path.as_str() {
                "metadata.name" => Some(self.name.clone()),
                "metadata.namespace" => Some(self.ctx.namespace.clone()),
                "metadata.uid" => Some(self.uid.clone()),
                "spec.nodeName" => Some(
                    self.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| self.ctx.options.node_name.clone()),
                ),
                "spec.serviceAccountName" => Some(
                    self.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_default(),
                ),
                "status.podIP" | "status.hostIP" => Some(POD_IP.to_string()),
                path => field_of_map(path, "metadata.labels", meta.labels.as_ref()).or_else(|| {
                    field_of_map(path, "metadata.annotations", meta.annotations.as_ref())
                }),
            };
            return Ok(match value {
                Some(v) => Ok(Some(v)),
                None => Err(format!(
                    "env {name}: fieldRef {:?} is not supported by the e2e node emulator",
                    field.field_path
                )),
            });
        }
        Ok(Err(format!(
            "env {name}: only secretKeyRef and fieldRef sources are supported by the e2e node \
             emulator"
        )))
    }

    /// The pod object changed: keep it, and rewrite the files of its downwardAPI volumes (as the
    /// kubelet does on its next sync).
    fn updated(&mut self, pod: Pod) {
        self.pod = pod;
        let volumes = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
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

    /// The host directory of the pod's `emptyDir` volume `volume`: created empty on first use,
    /// writable by every user (as the kubelet makes it), removed with the pod's worker.
    fn empty_dir(&self, volume: &str) -> Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = self.volumes_dir().join(volume);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating emptyDir {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .with_context(|| format!("chmod emptyDir {}", dir.display()))?;
        Ok(dir)
    }

    /// Where this pod's emptyDir volumes live on the host.
    fn volumes_dir(&self) -> std::path::PathBuf {
        empty_dir_root(&self.ctx.id).join(&self.uid)
    }

    fn container_body(
        &self,
        container: &Container,
        config: ContainerConfig,
    ) -> ContainerCreateBody {
        let spec = self.pod.spec.as_ref();
        let ContainerConfig { env, binds, tmpfs } = config;
        let pod_security = spec.and_then(|s| s.security_context.as_ref());
        let security = container.security_context.as_ref();
        let run_as_user = security
            .and_then(|s| s.run_as_user)
            .or_else(|| pod_security.and_then(|s| s.run_as_user));
        let run_as_group = security
            .and_then(|s| s.run_as_group)
            .or_else(|| pod_security.and_then(|s| s.run_as_group));
        let user = run_as_user.map(|u| match run_as_group {
            Some(g) => format!("{u}:{g}"),
            None => u.to_string(),
        });
        let memory = self
            .ctx
            .options
            .memory_limits
            .then(|| {
                container
                    .resources
                    .as_ref()?
                    .limits
                    .as_ref()?
                    .get("memory")
                    .and_then(|q| parse_memory(&q.0))
            })
            .flatten();
        let labels = HashMap::from([
            (
                EMULATED_POD_LABEL.to_string(),
                format!("{}/{}", self.ctx.namespace, self.name),
            ),
            (EMULATED_POD_UID_LABEL.to_string(), self.uid.clone()),
            (EMULATOR_LABEL.to_string(), self.ctx.id.clone()),
        ]);
        ContainerCreateBody {
            image: container.image.clone(),
            // Kubernetes' command replaces the image's entrypoint (and then its cmd too), args
            // its cmd: Docker does the same with Entrypoint and Cmd.
            entrypoint: container.command.clone().filter(|c| !c.is_empty()),
            cmd: container.args.clone().filter(|a| !a.is_empty()),
            env: Some(env),
            working_dir: container.working_dir.clone(),
            user,
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("host".to_string()),
                memory,
                binds: (!binds.is_empty()).then_some(binds),
                tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }

    fn set_condition(&mut self, kind: &'static str, status: bool) {
        let changed = self.conditions.get(kind).is_none_or(|(s, _)| *s != status);
        if changed {
            self.conditions.insert(kind, (status, now_string()));
        }
    }

    async fn write_waiting(
        &mut self,
        container: &Container,
        reason: &str,
        message: Option<&str>,
    ) -> Result<()> {
        let state = json!({"waiting": {"reason": reason, "message": message}});
        self.write(container, "Pending", state, false, None).await
    }

    /// Writes the pod status: `phase`, the one container's `state`, readiness, conditions, and
    /// for an eviction the pod's reason and message.
    async fn write(
        &mut self,
        container: &Container,
        phase: &str,
        state: Value,
        ready: bool,
        evicted: Option<(&str, &str)>,
    ) -> Result<()> {
        let terminal = phase == "Succeeded" || phase == "Failed";
        self.set_condition("PodReadyToStartContainers", !terminal);
        self.set_condition("Initialized", true);
        self.set_condition("Ready", ready);
        self.set_condition("ContainersReady", ready);
        self.set_condition("PodScheduled", true);
        if evicted.is_some() {
            self.set_condition("DisruptionTarget", true);
        }
        let mut conditions: Vec<Value> = Vec::new();
        for (kind, (status, time)) in &self.conditions {
            let mut condition = json!({
                "type": kind,
                "status": if *status { "True" } else { "False" },
                "lastProbeTime": null,
                "lastTransitionTime": time,
            });
            if !*status && (*kind == "Ready" || *kind == "ContainersReady") {
                if terminal {
                    condition["reason"] = json!("PodCompleted");
                } else {
                    condition["reason"] = json!("ContainersNotReady");
                    condition["message"] = json!(format!(
                        "containers with unready status: [{}]",
                        container.name
                    ));
                }
            }
            if *kind == "DisruptionTarget" {
                condition["reason"] = json!("TerminationByKubelet");
                condition["message"] = json!(evicted.map(|(_, m)| m));
            }
            conditions.push(condition);
        }
        let running = state.get("running").is_some();
        let mut container_status = json!({
            "name": container.name,
            "image": container.image,
            "imageID": self.image_id,
            "ready": ready,
            "started": running,
            "restartCount": 0,
            "state": state,
        });
        if let Some(id) = self.container_id_uri() {
            container_status["containerID"] = json!(id);
        }
        let status = json!({
            "phase": phase,
            "reason": evicted.map(|(r, _)| r),
            "message": evicted.map(|(_, m)| m),
            "conditions": conditions,
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": self.start_time,
            "containerStatuses": [container_status],
        });
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

// ---------------------------------------------------------------------------------------------
// A tiny image for tests.

/// The tag of the image [`busybox_image`] imports.
pub const BUSYBOX_IMAGE: &str = "sparkwing-e2e-busybox:1";

/// Imports a tiny image into the local Docker engine as [`BUSYBOX_IMAGE`] (`/bin/busybox`, the
/// host's static busybox, with a symlink per applet, `/tmp`, `PATH=/bin`), unless it is there
/// already, and returns its tag. No registry is needed. Needs `busybox` (static, as Debian's
/// `busybox-static` or `busybox` package installs it) and `tar` on the host.
pub async fn busybox_image() -> Result<String> {
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    if docker.inspect_image(BUSYBOX_IMAGE).await.is_ok() {
        return Ok(BUSYBOX_IMAGE.to_string());
    }
    let root = crate::images::busybox_rootfs("the e2e busybox image")?;
    let (repo, tag) = BUSYBOX_IMAGE
        .split_once(':')
        .unwrap_or((BUSYBOX_IMAGE, "latest"));
    let changes = vec!["ENV PATH=/bin".to_string(), "CMD [\"sh\"]".to_string()];
    crate::images::import_rootfs(&docker, &root, repo, tag, changes).await?;
    Ok(BUSYBOX_IMAGE.to_string())
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn warn(message: std::fmt::Arguments<'_>) {
    eprintln!("sparkwing-e2e node emulator: {message}");
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
async fn delete_now(pods: &Api<Pod>, name: &str, uid: &str) {
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

fn is_docker_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn docker_message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => Ok(()),
        // 404: gone; 409: removal already in progress.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(err) => Err(err).context(format!("removing container {name}")),
    }
}

async fn list_containers(docker: &Docker, labels: &[(&str, &str)]) -> Result<Vec<String>> {
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

async fn remove_containers(docker: &Docker, id: &str) -> Result<()> {
    for name in list_containers(docker, &[(EMULATOR_LABEL, id)]).await? {
        remove_container(docker, &name).await?;
    }
    Ok(())
}

/// Sleeps until `at`; never returns for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => pending().await,
    }
}

fn emulator_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Timestamp::now().as_nanosecond().unsigned_abs());
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// A time as Kubernetes writes it: whole seconds.
fn second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn now_string() -> String {
    second(Timestamp::now()).to_string()
}

/// A Docker time (RFC 3339 with nanoseconds) as Kubernetes writes it; `None` for Docker's zero.
fn docker_time(text: &str) -> Option<String> {
    let t: Timestamp = text.parse().ok()?;
    (t.as_second() > 0).then(|| second(t).to_string())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// Equality terms of a label selector: `key=value` (or `key==value`), or `key` for presence.
fn parse_selector(selector: &str) -> Result<Vec<(String, Option<String>)>> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(|term| {
            if term.contains("!=") || term.contains(" in ") || term.contains(" notin ") {
                bail!("the node emulator's label selector takes equality terms only: {term}");
            }
            Ok(match term.split_once('=') {
                Some((key, value)) => (
                    key.trim().to_string(),
                    Some(value.trim_start_matches('=').trim().to_string()),
                ),
                None => (term.to_string(), None),
            })
        })
        .collect()
}

fn matches_selector(
    selector: &[(String, Option<String>)],
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(key, value)| match value {
        Some(value) => labels.get(key) == Some(value),
        None => labels.contains_key(key),
    })
}

/// A memory quantity in bytes (`64Mi`, `1G`, `1048576`); `None` for forms it does not know.
fn parse_memory(quantity: &str) -> Option<i64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number.parse::<f64>().ok()? * factor;
    (bytes >= 1.0).then_some(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("1048576"), Some(1_048_576));
        assert_eq!(parse_memory("0.5Gi"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("1e3"), None);
    }

    #[test]
    fn selectors() {
        let selector = parse_selector("app.kubernetes.io/managed-by=sparkwing, tier").unwrap();
        let mut labels = BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "sparkwing".to_string(),
        )]);
        assert!(!matches_selector(&selector, &labels));
        labels.insert("tier".into(), "x".into());
        assert!(matches_selector(&selector, &labels));
        assert!(parse_selector("a!=b").is_err());
    }

    #[test]
    fn downward_maps_are_quoted_as_the_kubelet_does() {
        let m = BTreeMap::from([
            (
                "b".to_string(),
                "say \"hi\"\n\tback\\slash \u{1} caf\u{e9}".to_string(),
            ),
            ("a".to_string(), String::new()),
        ]);
        // Go: fmt.Sprintf("%v=%q\n", k, v) per sorted key, the last newline trimmed.
        assert_eq!(
            format_downward_map(Some(&m)),
            "a=\"\"\nb=\"say \\\"hi\\\"\\n\\tback\\\\slash \\x01 caf\u{e9}\""
        );
        assert_eq!(format_downward_map(None), "");
    }

    #[test]
    fn docker_times() {
        assert_eq!(
            docker_time("2024-05-01T10:20:30.123456789Z").as_deref(),
            Some("2024-05-01T10:20:30Z")
        );
        assert_eq!(docker_time("0001-01-01T00:00:00Z"), None);
    }
}
