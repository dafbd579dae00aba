//! The bed's real node: a kubelet on containerd runs a Job's pod to `Complete` through the real
//! controller-manager and scheduler, its logs come back through the apiserver, a pod reaches a
//! server on the host at the bridge gateway, and dropping the bed leaves no process, mount,
//! cgroup, bridge or firewall rule behind.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};
use serde_json::json;
use sparkwing_e2e::{busybox_image, NodeKind, TestBed};

const WAIT: Duration = Duration::from_secs(120);

fn job_complete(job: Option<&Job>) -> bool {
    job.and_then(|j| j.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

#[tokio::test]
async fn a_real_node_runs_a_job_and_leaves_nothing_behind() -> Result<()> {
    let bed = TestBed::start_on(NodeKind::Real).await?;
    let node = bed.real_node().context("no real node")?.clone();
    let image = busybox_image().await?;
    bed.load_image(&image).await?;
    let ns = bed.namespace("real-node").await?;
    let client = bed.client().await?;

    // A server on the host, at the address pods reach the host at; the pod says hello to it.
    let listener = TcpListener::bind((bed.host_address_for_pods(), 0))?;
    let port = listener.local_addr()?.port();
    let heard = std::thread::spawn(move || -> Result<String> {
        let (stream, _) = listener.accept()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line)
    });

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "hello",
                    "image": image,
                    "command": ["sh", "-c",
                        format!("echo hello from $(hostname); echo hello | nc {} {port}", node.gateway)],
                }],
            }},
        },
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    tokio::time::timeout(WAIT, await_condition(jobs.clone(), "hello", job_complete))
        .await
        .with_context(|| format!("Job hello not Complete within {WAIT:?}\n{}", bed.logs()))??;
    assert_eq!(heard.join().expect("the listener thread")?, "hello\n");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=hello"))
        .await?
        .items
        .into_iter()
        .next()
        .context("the Job's pod")?;
    let spec = pod.spec.clone().unwrap_or_default();
    assert_eq!(spec.node_name.as_deref(), Some(node.name.as_str()));
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    assert!(
        pod_ip.starts_with(node.subnet.trim_end_matches("0/24")),
        "pod IP {pod_ip} outside {}",
        node.subnet
    );
    let logs = pods.logs(&pod.name_any(), &LogParams::default()).await?;
    assert_eq!(logs, format!("hello from {}\n", pod.name_any()));

    let dir = bed.dir().to_path_buf();
    drop(ns);
    drop(bed);
    assert_nothing_left(&dir, &node)
}

/// Nothing of the node outlives its bed: processes, mounts, cgroups, the bridge, firewall rules.
fn assert_nothing_left(dir: &Path, node: &sparkwing_e2e::RealNode) -> Result<()> {
    let socket = node.containerd_socket.display().to_string();
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let dir_text = dir.display().to_string();
        if cmdline.contains(&socket) || cmdline.contains(&dir_text) {
            processes.push(format!("{}: {cmdline}", path.display()));
        }
    }
    ensure!(processes.is_empty(), "processes left: {processes:#?}");

    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = format!("{}/", dir.display());
    let mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with(&prefix))
        })
        .collect();
    ensure!(mounts.is_empty(), "mounts left: {mounts:#?}");

    let mut cgroups = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup")? {
        let candidate = entry?.path().join(&node.cgroup_root);
        if candidate.exists() {
            cgroups.push(candidate);
        }
    }
    ensure!(cgroups.is_empty(), "cgroups left: {cgroups:?}");

    ensure!(
        !Path::new("/sys/class/net").join(&node.bridge).exists(),
        "bridge {} left",
        node.bridge
    );
    let rules = std::process::Command::new("iptables-save").output()?;
    let subnet = node.subnet.trim_end_matches("0/24");
    let left: Vec<String> = String::from_utf8_lossy(&rules.stdout)
        .lines()
        .filter(|line| line.contains(subnet))
        .map(str::to_owned)
        .collect();
    ensure!(left.is_empty(), "iptables rules left: {left:#?}");
    ensure!(!dir.exists(), "{} left", dir.display());
    Ok(())
}
