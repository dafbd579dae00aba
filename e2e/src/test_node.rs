//! [`TestNode`]: what runs one test namespace's pods, whichever node the bed has: the bed's real
//! kubelet, or a [`NodeEmulator`] for the namespace. Tests read logs, list a pod's containers and
//! make a pod disappear through it, the same way on both.

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, EvictParams, LogParams};
use kube::{Api, Client};

use crate::bed::TestBed;
use crate::node_emulator::{LossKind, NodeEmulator, NodeEmulatorOptions};
use crate::real_node::RealNode;

/// The node of one test namespace. See the [module docs](self).
#[derive(Debug)]
pub enum TestNode {
    /// The bed's real node: pods run on its kubelet.
    Real {
        pods: Api<Pod>,
        namespace: String,
        node: Box<RealNode>,
    },
    /// The node emulator of this namespace.
    Emulated(NodeEmulator),
}

impl TestNode {
    /// The node for `namespace` of `bed`: the real one, or a node emulator started for it.
    pub async fn start(bed: &TestBed, client: Client, namespace: &str) -> Result<TestNode> {
        match bed.real_node() {
            Some(node) => Ok(TestNode::Real {
                pods: Api::namespaced(client, namespace),
                namespace: namespace.to_owned(),
                node: Box::new(node.clone()),
            }),
            None => Ok(TestNode::Emulated(
                NodeEmulator::start(client, namespace, NodeEmulatorOptions::default()).await?,
            )),
        }
    }

    /// The node emulator, when pods run on one.
    pub fn emulator(&self) -> Option<&NodeEmulator> {
        match self {
            TestNode::Emulated(emulator) => Some(emulator),
            TestNode::Real { .. } => None,
        }
    }

    /// The output of the pod's (first) container; empty when it has none yet or any more.
    pub async fn logs(&self, pod: &str) -> Result<String> {
        match self {
            TestNode::Emulated(emulator) => emulator.logs(pod).await,
            TestNode::Real { pods, .. } => match pods.logs(pod, &LogParams::default()).await {
                Ok(logs) => Ok(logs),
                // Not started, or gone: nothing to read, as for the emulator.
                Err(kube::Error::Api(status)) if matches!(status.code, 400 | 404) => {
                    Ok(String::new())
                }
                Err(err) => Err(err).with_context(|| format!("reading the logs of pod {pod}")),
            },
        }
    }

    /// The containers (running or not, sandboxes excluded) the node holds for the pod; empty
    /// once the pod is gone and its containers removed.
    pub async fn containers(&self, pod: &str) -> Result<Vec<String>> {
        match self {
            TestNode::Emulated(emulator) => emulator.containers(pod).await,
            TestNode::Real {
                node, namespace, ..
            } => {
                node.containers(&[
                    ("io.kubernetes.pod.namespace", namespace),
                    ("io.kubernetes.pod.name", pod),
                ])
                .await
            }
        }
    }

    /// The environment (`NAME=value`) the pod's (first) container was created with: what the
    /// runtime was told, Secrets and fields resolved.
    pub async fn container_env(&self, pod: &str) -> Result<Vec<String>> {
        let id = self
            .containers(pod)
            .await?
            .into_iter()
            .next()
            .with_context(|| format!("no container for pod {pod}"))?;
        match self {
            TestNode::Emulated(_) => {
                let docker = bollard::Docker::connect_with_defaults()?
                    .negotiate_version()
                    .await?;
                let inspected = docker.inspect_container(&id, None).await?;
                Ok(inspected.config.and_then(|c| c.env).unwrap_or_default())
            }
            TestNode::Real { node, .. } => node.container_env(&id).await,
        }
    }

    /// The containers the node holds for any pod of the namespace.
    pub async fn all_containers(&self) -> Result<Vec<String>> {
        match self {
            TestNode::Emulated(emulator) => emulator.all_containers().await,
            TestNode::Real {
                node, namespace, ..
            } => {
                node.containers(&[("io.kubernetes.pod.namespace", namespace)])
                    .await
            }
        }
    }

    /// Makes the pod disappear as a lost node ([`LossKind::Deleted`]: on the real node a forced
    /// delete, grace 0) or an eviction ([`LossKind::Evicted`]: on the real node the Eviction API,
    /// which deletes the pod with its grace period) would.
    pub async fn lose(&self, pod: &str, kind: LossKind) -> Result<()> {
        match self {
            TestNode::Emulated(emulator) => emulator.lose(pod, kind).await,
            TestNode::Real { pods, .. } => {
                match kind {
                    LossKind::Deleted => {
                        pods.delete(pod, &DeleteParams::default().grace_period(0))
                            .await
                            .with_context(|| format!("force-deleting pod {pod}"))?;
                    }
                    LossKind::Evicted => {
                        pods.evict(pod, &EvictParams::default())
                            .await
                            .with_context(|| format!("evicting pod {pod}"))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Kills the pod's container as the OOM killer would: the emulator's knob. On the real node
    /// an OOM kill is real: give the pod a memory limit and let it exceed it.
    pub async fn oom_kill(&self, pod: &str) -> Result<()> {
        match self {
            TestNode::Emulated(emulator) => emulator.oom_kill(pod).await,
            TestNode::Real { .. } => bail!(
                "the real node has no OOM knob (pod {pod}): give the pod a memory limit and \
                 exceed it"
            ),
        }
    }

    /// Stops the node emulator (removing its containers); nothing to do on the real node.
    pub async fn shutdown(self) -> Result<()> {
        match self {
            TestNode::Emulated(emulator) => emulator.shutdown().await,
            TestNode::Real { .. } => Ok(()),
        }
    }
}
