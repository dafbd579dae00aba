//! The main task: watches the pods the scheduler bound to the emulator's node, decides which are
//! its own (the label selector, or a Job's), starts one [`PodWorker`] per pod (never twice for a
//! uid) and passes on what happens to the pod (updates, deletion) and the handle's requests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::worker::{delete_now, PodWorker, WorkerCmd};
use super::{warn, Control, Ctx, Internal, OOM_KILL_ANNOTATION};

/// How long [`NodeEmulator::shutdown`](super::NodeEmulator::shutdown) waits for the pod workers
/// to remove their containers.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

struct WorkerHandle {
    tx: mpsc::UnboundedSender<WorkerCmd>,
    terminate_sent: bool,
    oom_sent: bool,
    task: JoinHandle<()>,
}

/// The main task: the pod watch, and the dispatch of pods to workers.
pub(super) struct Emulator {
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
    pub(super) fn new(ctx: Arc<Ctx>) -> Self {
        Emulator {
            ctx,
            pods: BTreeMap::new(),
            workers: HashMap::new(),
            started: HashSet::new(),
        }
    }

    pub(super) async fn run(
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
pub(super) fn parse_selector(selector: &str) -> Result<Vec<(String, Option<String>)>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
