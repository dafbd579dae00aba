//! Sparkwing's Kubernetes end-to-end test bed: a real kube-apiserver and etcd, built from their
//! Go modules by `e2e/testbed/build.sh` (cached outside the repository), started on 127.0.0.1
//! with token authentication and RBAC authorization, and torn down afterwards.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use sparkwing_e2e::TestBed;
//!
//! let bed = TestBed::shared().await?; // one bed per test binary
//! bed.install_crds().await?; // crds/yaml, waited until Established
//! let ns = bed.namespace("my-test").await?; // deleted when dropped
//! let client = bed.client().await?; // admin; `client_as(User::Limited)` for the other user
//! # let _ = (ns, client);
//! # Ok(())
//! # }
//! ```
//!
//! [`NodeEmulator`] is test infrastructure standing in for the kubelet, the Job controller and the
//! garbage collector: it runs the pods of Sparkwing's Jobs on the local Docker engine.
//!
//! See `docs/e2e.md`.

pub mod api_task;
mod bed;
pub mod binaries;
pub mod cli;
pub mod cluster;
pub mod git_server;
mod images;
mod namespace;
pub mod node_emulator;
mod operator_task;
pub mod real_node;
pub mod real_runner;
pub mod run_status;
pub mod test_node;
pub mod test_runner_image;
pub mod wait;
pub mod webhook;

pub use bed::{
    crds_yaml_dir, install_crds, TestBed, User, CRD_TIMEOUT, EMULATED_NODE, FIELD_MANAGER,
    KEEP_ENV, NAMESPACE_TIMEOUT, START_TIMEOUT,
};
pub use binaries::Binaries;
pub use images::{busybox_image, BUSYBOX_IMAGE};
pub use namespace::TestNamespace;
pub use node_emulator::{LossKind, NodeEmulator, NodeEmulatorOptions};
pub use real_node::{NodeKind, RealNode, NODE_ENV};
pub use test_node::TestNode;
pub use test_runner_image::{test_runner_image, ClaimRelay};

pub use api_task::{Answer, ApiTask};
pub use cluster::Cluster;
pub use operator_task::OperatorTask;
pub use real_runner::{real_runner, RealRunner};
pub use wait::wait_for_run;
