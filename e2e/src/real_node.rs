//! The test bed's real node: a kubelet on containerd (Debian's containerd and runc), pods networked
//! by the CNI `bridge`, `host-local` and `firewall` plugins on a bridge of the bed's own.
//!
//! Everything it starts or creates is the bed's: containerd has its root, state, socket and runc
//! root under the bed's directory, the kubelet its root directory and a cgroup root of its own,
//! the pods a bridge and a /24 of their own. `teardown.sh` (written into the bed's directory, run
//! by the bed's reaper after it killed the bed's process groups) removes what outlives them: the
//! containerd shims and the pods' processes, mounts, cgroups, the bridge and the firewall rules.
//! Two beds on one machine do not meet: each claims its bridge (`ip link add` fails for a name
//! taken), and its subnet goes with the bridge's number.
//!
//! Facts this rests on (measured on the cgroup v1 hosts the tests run on; see `docs/e2e.md`):
//! the kubelet needs `failCgroupV1: false` there, `cgroupDriver: cgroupfs` (containerd 1.6 has no
//! RuntimeConfig call), and containerd's CRI plugin `restrict_oom_score_adj = true` where the
//! process lacks CAP_SYS_RESOURCE (every sandbox fails otherwise, "can't get final child's PID
//! from pipe: EOF"). The apiserver reaches the kubelet (`kubectl logs`) by the node's Hostname
//! address, so the node is named after the host and the kubelet listens on 127.0.0.1.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

/// The environment variable that chooses the bed's node: `real` or `emulator`.
pub const NODE_ENV: &str = "SPARKWING_E2E_NODE";

/// The node when [`NODE_ENV`] is unset.
pub const DEFAULT_NODE: NodeKind = NodeKind::Real;
/// Where the CNI plugins are (Debian's `containernetworking-plugins`).
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Prefix of a bed's bridge; the bridge's number follows (the name must stay within 15 bytes).
const BRIDGE_PREFIX: &str = "swe2e";

/// What runs a bed's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A real kubelet on containerd.
    Real,
    /// The Docker node emulator (`crate::NodeEmulator`), for hosts where a kubelet cannot run.
    Emulator,
}

impl NodeKind {
    /// The node [`NODE_ENV`] asks for: `real` or unset → [`NodeKind::Real`], `emulator` →
    /// [`NodeKind::Emulator`]; anything else is an error naming the choices.
    pub fn from_env() -> Result<NodeKind> {
        Self::parse(std::env::var(NODE_ENV).ok().as_deref())
    }

    fn parse(value: Option<&str>) -> Result<NodeKind> {
        match value {
            None | Some("") => Ok(DEFAULT_NODE),
            Some("real") => Ok(NodeKind::Real),
            Some("emulator") => Ok(NodeKind::Emulator),
            Some(other) => bail!("{NODE_ENV}={other}: expected `real` or `emulator`"),
        }
    }

    /// How the bed reports it at start.
    pub fn describe(self) -> &'static str {
        match self {
            NodeKind::Real => "a real kubelet on containerd",
            NodeKind::Emulator => "the Docker node emulator (SPARKWING_E2E_NODE=emulator)",
        }
    }
}

/// A real node's layout: names, addresses and paths, fixed when the bed claims its bridge.
#[derive(Debug, Clone)]
pub struct RealNode {
    /// The node's name: the host's name (the apiserver dials it for logs and exec).
    pub name: String,
    /// The bridge pods are attached to, `swe2e<n>`.
    pub bridge: String,
    /// The bridge's address, the pods' gateway: where pods reach the host (`10.244.<n>.1`).
    pub gateway: Ipv4Addr,
    /// `10.244.<n>.0/24`.
    pub subnet: String,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// The cgroup (in every hierarchy) the kubelet puts pods under.
    pub cgroup_root: String,
    /// The kubelet's port on 127.0.0.1.
    pub kubelet_port: u16,
    dir: PathBuf,
}

/// Checks what a real node needs from the host, naming what is missing and the switch.
pub fn check_host() -> Result<()> {
    let mut missing = Vec::new();
    for tool in ["containerd", "runc", "ctr", "ip", "iptables", "docker"] {
        if which(tool).is_none() {
            missing.push(tool.to_owned());
        }
    }
    for plugin in ["bridge", "host-local", "firewall"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            missing.push(format!("{CNI_BIN_DIR}/{plugin}"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "the test bed's real node needs {} (bash scripts/setup-test-deps.sh installs them); \
             on a host where a kubelet cannot run, set {NODE_ENV}=emulator to run pods on the \
             Docker node emulator instead",
            missing.join(", ")
        );
    }
    // The effective uid (second field of `Uid:`): containerd and the kubelet need root.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if !root {
        bail!(
            "the test bed's real node (containerd, kubelet) needs root; set {NODE_ENV}=emulator \
             to run pods on the Docker node emulator instead"
        );
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    })
}

impl RealNode {
    /// Claims a bridge and its subnet, makes the cgroup roots, and writes containerd's, the CNI
    /// and the kubelet's configuration and `teardown.sh` into `dir`. From here on the reaper's
    /// run of `teardown.sh` undoes it.
    pub fn prepare(dir: &Path, kubelet_port: u16) -> Result<RealNode> {
        let name = host_name()?;
        let (bridge, n) = claim_bridge()?;
        let gateway = Ipv4Addr::new(10, 244, n, 1);
        let node = RealNode {
            name,
            bridge,
            gateway,
            subnet: format!("10.244.{n}.0/24"),
            containerd_socket: dir.join("containerd/containerd.sock"),
            cgroup_root: format!("sparkwing-e2e-{n}"),
            kubelet_port,
            dir: dir.to_path_buf(),
        };
        // The teardown first: whatever fails below is still undone.
        std::fs::write(dir.join("teardown.sh"), node.teardown_script())?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &node.bridge,
        ]))?;
        run(Command::new("ip").args(["link", "set", &node.bridge, "up"]))?;
        for hierarchy in cgroup_hierarchies()? {
            let root = hierarchy.join(&node.cgroup_root);
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating the cgroup {}", root.display()))?;
        }
        for sub in ["containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("containerd/config.toml"), node.containerd_config())?;
        std::fs::write(
            dir.join("cni/net.d/10-sparkwing-e2e.conflist"),
            node.cni_config(),
        )?;
        std::fs::write(dir.join("kubelet/config.yaml"), node.kubelet_config())?;
        Ok(node)
    }

    /// containerd, as the bed starts it.
    pub fn containerd_command(&self) -> Command {
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(self.dir.join("containerd/config.toml"));
        command
    }

    /// The kubelet, as the bed starts it.
    pub fn kubelet_command(&self, kubelet: &Path, kubeconfig: &Path) -> Command {
        let mut command = Command::new(kubelet);
        command
            .arg(format!(
                "--config={}",
                self.dir.join("kubelet/config.yaml").display()
            ))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--root-dir={}",
                self.dir.join("kubelet/root").display()
            ))
            .arg(format!(
                "--cert-dir={}",
                self.dir.join("kubelet/pki").display()
            ))
            .arg(format!("--hostname-override={}", self.name))
            // Not loopback (refused): the bridge's address, which pods reach.
            .arg(format!("--node-ip={}", self.gateway));
        command
    }

    /// `ctr` against this node's containerd, in the CRI's namespace.
    pub fn ctr(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.containerd_socket)
            .args(["--namespace", "k8s.io"])
            .kill_on_drop(true);
        command
    }

    /// Whether containerd answers on its socket.
    pub async fn containerd_answers(&self) -> bool {
        let mut ctr = self.ctr();
        ctr.arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ctr.status().await.is_ok_and(|status| status.success())
    }

    /// The ids of containerd's containers (sandboxes excluded) whose labels have these values.
    pub async fn containers(&self, labels: &[(&str, &str)]) -> Result<Vec<String>> {
        let mut filter = String::from(r#"labels."io.cri-containerd.kind"==container"#);
        for (key, value) in labels {
            let _ = write!(filter, r#",labels."{key}"=={value}"#);
        }
        let out = self
            .ctr()
            .args(["containers", "ls", "-q"])
            .arg(&filter)
            .output()
            .await
            .context("running ctr containers ls")?;
        if !out.status.success() {
            bail!(
                "ctr containers ls {filter}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The environment (`NAME=value`) containerd created the container `id` with.
    pub async fn container_env(&self, id: &str) -> Result<Vec<String>> {
        let out = self
            .ctr()
            .args(["containers", "info", id])
            .output()
            .await
            .context("running ctr containers info")?;
        if !out.status.success() {
            bail!(
                "ctr containers info {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let info: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("ctr containers info's JSON")?;
        Ok(info["Spec"]["process"]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// Copies the image `reference` from the local Docker engine into containerd (`docker save |
    /// ctr images import`), where the kubelet finds it without pulling.
    pub async fn import_from_docker(&self, reference: &str) -> Result<()> {
        let save = tokio::process::Command::new("docker")
            .args(["save", reference])
            .kill_on_drop(true)
            .output()
            .await
            .context("running docker save")?;
        if !save.status.success() {
            bail!(
                "docker save {reference}: {}",
                String::from_utf8_lossy(&save.stderr)
            );
        }
        let archive = self.dir.join("image.tar");
        tokio::fs::write(&archive, &save.stdout).await?;
        let import = self
            .ctr()
            .args(["images", "import"])
            .arg(&archive)
            .output()
            .await
            .context("running ctr images import")?;
        let _ = tokio::fs::remove_file(&archive).await;
        if !import.status.success() {
            bail!(
                "ctr images import {reference}: {}",
                String::from_utf8_lossy(&import.stderr)
            );
        }
        Ok(())
    }

    /// The image the CRI uses for pod sandboxes (imported by the bed before the kubelet starts;
    /// containerd would pull it otherwise).
    pub fn sandbox_image() -> &'static str {
        "docker.io/library/sparkwing-e2e-pause:1"
    }

    fn containerd_config(&self) -> String {
        let dir = self.dir.join("containerd");
        let dir = dir.display();
        let cni = self.dir.join("cni/net.d");
        let sandbox = Self::sandbox_image();
        format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
# The bed needs the CRI, overlayfs and runc; the other snapshotters and tracing only log noise.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE a negative oom_score_adj is refused and runc cannot start any
  # sandbox; this keeps containers at containerd's own score.
  restrict_oom_score_adj = true
  # Every registry is a loopback address that serves nothing: a pull the tests did not mean (an
  # image not loaded from Docker) fails here instead of reaching for a public registry.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://127.0.0.1:1"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://127.0.0.1:1"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{dir}/runc"
"#,
            socket = self.containerd_socket.display(),
            cni = cni.display(),
            cni_bin = CNI_BIN_DIR,
        )
    }

    fn network_name(&self) -> String {
        format!("sparkwing-e2e-{}", self.bridge_number())
    }

    fn bridge_number(&self) -> &str {
        self.bridge.trim_start_matches(BRIDGE_PREFIX)
    }

    fn cni_config(&self) -> String {
        // `firewall`: Docker sets the FORWARD policy to DROP and br_netfilter is on, so pod to
        // pod traffic over the bridge is dropped unless each pod's address is accepted.
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.network_name(),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.dir.join("cni/ipam"),
                        "ranges": [[{"subnet": self.subnet, "gateway": self.gateway.to_string()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "firewall", "backend": "iptables"},
            ],
        })
        .to_string()
    }

    fn kubelet_config(&self) -> String {
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The hosts the tests run on have cgroup v1, which the kubelet refuses by default.
failCgroupV1: false
failSwapOn: false
# No systemd; containerd 1.6 cannot tell the kubelet its driver, so this one is used.
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
cgroupsPerQOS: true
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://{socket}
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzPort: 0
makeIPTablesUtilChains: false
serializeImagePulls: false
podLogsDir: {logs}
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
# A test machine's disk is often fuller than the defaults allow; never evict for it.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
"#,
            cgroup_root = self.cgroup_root,
            socket = self.containerd_socket.display(),
            port = self.kubelet_port,
            logs = self.dir.join("pod-logs").display(),
        )
    }

    /// The script the reaper runs after killing the bed's process groups.
    fn teardown_script(&self) -> String {
        let mut script = String::new();
        let _ = write!(
            script,
            r#"# Written by the e2e test bed (e2e/src/real_node.rs); run by its reaper.
dir='{dir}'
socket='{socket}'
bridge='{bridge}'
cgroup_root='{cgroup_root}'
network='{network}'
subnet_prefix='10.244.{n}.'
"#,
            dir = self.dir.display(),
            socket = self.containerd_socket.display(),
            bridge = self.bridge,
            cgroup_root = self.cgroup_root,
            network = self.network_name(),
            n = self.bridge_number(),
        );
        script.push_str(TEARDOWN);
        script
    }
}

/// The body of `teardown.sh`, after its variables. Each step tolerates what is already gone.
const TEARDOWN: &str = r#"
# containerd's shims for this bed's socket (they leave containerd's process group) and every
# process in the bed's pod cgroups.
pods_and_shims() {
    for proc in /proc/[0-9]*; do
        if tr '\0' ' ' <"$proc/cmdline" | grep -qF -- "-address $socket "; then
            echo "${proc#/proc/}"
        fi
    done 2>/dev/null
    for hierarchy in /sys/fs/cgroup/*/; do
        [ -d "$hierarchy$cgroup_root" ] || continue
        find "$hierarchy$cgroup_root" -name cgroup.procs -exec cat {} + 2>/dev/null
    done
}
for _ in $(seq 50); do
    pids=$(pods_and_shims | sort -u)
    [ -n "$pids" ] || break
    kill -KILL $pids 2>/dev/null
    sleep 0.1
done
# Mounts under the bed's directory (overlay rootfs, network namespaces, volumes), deepest first.
awk -v prefix="$dir/" 'index($5, prefix) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r mount; do umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null; done
# The bed's cgroups, children first.
for hierarchy in /sys/fs/cgroup/*/; do
    [ -d "$hierarchy$cgroup_root" ] && find "$hierarchy$cgroup_root" -depth -type d -exec rmdir {} + 2>/dev/null
done
ip link del "$bridge" 2>/dev/null
# The firewall plugin's rules for this bed's pods (a pod killed with the node had no CNI DEL),
# then its chains when no other bed's pod uses them.
for chain in CNI-FORWARD CNI-ADMIN; do
    iptables -S "$chain" 2>/dev/null | grep -F -- "$subnet_prefix" | sed 's/^-A /-D /' |
        while read -r rule; do eval "iptables $rule" 2>/dev/null; done
done
if [ "$(iptables -S CNI-FORWARD 2>/dev/null | grep -c '^-A')" -le 1 ]; then
    while iptables -D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD 2>/dev/null; do :; done
    iptables -F CNI-FORWARD 2>/dev/null && iptables -X CNI-FORWARD 2>/dev/null
    iptables -X CNI-ADMIN 2>/dev/null
fi
# go-cni's cache of this network's results (a fixed path).
rm -f /var/lib/cni/results/"$network"-* 2>/dev/null
true
"#;

/// The host's name, which resolves to a local address here (the apiserver dials the kubelet by
/// it).
fn host_name() -> Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name")?
        .trim()
        .to_owned();
    if name.is_empty() {
        bail!("the host has no name; the real node is named after it");
    }
    Ok(name)
}

/// Claims the first free bridge `swe2e<n>` (n in 1..=254) by creating it: creation is atomic, so
/// two beds never get the same one.
fn claim_bridge() -> Result<(String, u8)> {
    let start = (std::process::id() % 254) as u8;
    let mut last = String::new();
    for i in 0..254_u16 {
        let n = ((u16::from(start) + i) % 254 + 1) as u8;
        let bridge = format!("{BRIDGE_PREFIX}{n}");
        // An address of its own, set at creation: a bridge without one takes the lowest address
        // of its ports, so it changed whenever a pod's veth came or went, and pods holding the
        // gateway's old address in their ARP cache could not reach the host (the API) for tens
        // of seconds.
        let out = Command::new("ip")
            .args([
                "link",
                "add",
                &bridge,
                "address",
                &bridge_mac(n),
                "type",
                "bridge",
            ])
            .output()
            .context("running ip link add")?;
        if out.status.success() {
            return Ok((bridge, n));
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !last.contains("exists") {
            break;
        }
    }
    bail!(
        "could not create a bridge for the real node: {last}; set {NODE_ENV}=emulator to run pods \
         on the Docker node emulator instead"
    )
}

/// The fixed, locally administered MAC address of bridge number `n`.
fn bridge_mac(n: u8) -> String {
    format!("02:73:77:62:00:{n:02x}")
}

/// The cgroup v1 hierarchies the kubelet uses (each mounted controller), or the unified one.
fn cgroup_hierarchies() -> Result<Vec<PathBuf>> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut hierarchies = Vec::new();
    for entry in std::fs::read_dir(root).context("reading /sys/fs/cgroup")? {
        let entry = entry?;
        let path = entry.path();
        // Controllers mounted together appear once as a directory and again as symlinks.
        if entry.file_type()?.is_dir() && path.join("cgroup.procs").exists() {
            hierarchies.push(path);
        }
    }
    Ok(hierarchies)
}

fn run(command: &mut Command) -> Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> RealNode {
        RealNode {
            name: "vm".into(),
            bridge: "swe2e7".into(),
            gateway: Ipv4Addr::new(10, 244, 7, 1),
            subnet: "10.244.7.0/24".into(),
            containerd_socket: "/tmp/bed/containerd/containerd.sock".into(),
            cgroup_root: "sparkwing-e2e-7".into(),
            kubelet_port: 10250,
            dir: "/tmp/bed".into(),
        }
    }

    /// Pods come and go on the bed's bridge; the host's address on it (the pods' gateway) must
    /// keep its MAC address, or pods that cached the old one lose the host.
    #[test]
    fn the_bridge_keeps_its_address_while_ports_come_and_go() {
        struct Gone(Vec<String>);
        impl Drop for Gone {
            fn drop(&mut self) {
                for link in &self.0 {
                    let _ = Command::new("ip").args(["link", "del", link]).output();
                }
            }
        }
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        let (bridge, n) = claim_bridge().unwrap();
        let veth = format!("swmac{}", std::process::id() % 1_000_000);
        let _gone = Gone(vec![veth.clone(), bridge.clone()]);
        let mac = || std::fs::read_to_string(format!("/sys/class/net/{bridge}/address")).unwrap();
        assert_eq!(mac().trim(), bridge_mac(n));
        // A port whose address is lower than the bridge's joins, then leaves.
        ip(&[
            "link",
            "add",
            &veth,
            "address",
            "02:00:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            &format!("{veth}p"),
        ]);
        ip(&["link", "set", &veth, "master", &bridge]);
        assert_eq!(mac().trim(), bridge_mac(n), "a port joined");
        ip(&["link", "del", &veth]);
        assert_eq!(mac().trim(), bridge_mac(n), "a port left");
    }

    #[test]
    fn the_cni_config_puts_pods_on_the_beds_bridge_and_subnet() {
        let config: serde_json::Value = serde_json::from_str(&node().cni_config()).unwrap();
        assert_eq!(config["name"], "sparkwing-e2e-7");
        assert_eq!(config["plugins"][0]["bridge"], "swe2e7");
        assert_eq!(
            config["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.7.0/24"
        );
        assert_eq!(config["plugins"][1]["type"], "firewall");
    }

    #[test]
    fn the_kubelet_runs_on_cgroup_v1_under_the_beds_root() {
        let config = node().kubelet_config();
        for line in [
            "failCgroupV1: false",
            "cgroupDriver: cgroupfs",
            "failSwapOn: false",
            "cgroupRoot: /sparkwing-e2e-7",
            "containerRuntimeEndpoint: unix:///tmp/bed/containerd/containerd.sock",
            "address: 127.0.0.1",
        ] {
            assert!(config.lines().any(|l| l == line), "{line} in\n{config}");
        }
    }

    #[test]
    fn containerd_restricts_oom_score_adj_and_keeps_its_state_in_the_bed() {
        let config = node().containerd_config();
        assert!(config.contains("restrict_oom_score_adj = true"), "{config}");
        assert!(config.contains(r#"root = "/tmp/bed/containerd/root""#));
        assert!(config.contains(r#"Root = "/tmp/bed/containerd/runc""#));
        assert!(config.contains(r#"endpoint = ["http://127.0.0.1:1"]"#));
    }

    #[test]
    fn the_teardown_names_only_this_beds_things() {
        let script = node().teardown_script();
        assert!(script.contains("bridge='swe2e7'"), "{script}");
        assert!(script.contains("cgroup_root='sparkwing-e2e-7'"));
        assert!(script.contains("subnet_prefix='10.244.7.'"));
    }

    #[test]
    fn the_node_switch_has_a_default_and_refuses_unknown_values() {
        assert_eq!(NodeKind::parse(None).unwrap(), DEFAULT_NODE);
        assert_eq!(NodeKind::parse(Some("real")).unwrap(), NodeKind::Real);
        assert_eq!(
            NodeKind::parse(Some("emulator")).unwrap(),
            NodeKind::Emulator
        );
        let err = NodeKind::parse(Some("kind")).unwrap_err().to_string();
        assert!(err.contains("SPARKWING_E2E_NODE=kind"), "{err}");
    }
}
