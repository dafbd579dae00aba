//! [`TestBed`]: etcd and kube-apiserver started on loopback, and torn down afterwards.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, Node, NodeCondition, NodeStatus, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

use crate::binaries::Binaries;
use crate::namespace::TestNamespace;
use crate::real_node::{self, NodeKind, RealNode, NODE_ENV};

/// How long etcd and kube-apiserver get to become ready (a loaded two-core machine needs ~10 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long installed CRDs get to become Established.
pub const CRD_TIMEOUT: Duration = Duration::from_secs(30);
/// The node the scheduler binds every pod to when pods run on the node emulator (a Node object
/// the bed creates; each namespace's emulator runs that namespace's pods bound to it).
pub const EMULATED_NODE: &str = "sparkwing-e2e-node";
/// How long a new namespace may wait for its `default` ServiceAccount.
pub const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(30);
/// Set to `1` to keep a bed's directory (logs, kubeconfigs, etcd data) after teardown.
pub const KEEP_ENV: &str = "SPARKWING_E2E_KEEP";
/// The field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "sparkwing-e2e";

/// The controllers of kube-controller-manager the bed runs: Jobs and their pods, Deployments and
/// their ReplicaSets (the chart's operator), garbage collection by owner references,
/// `ttlSecondsAfterFinished`, namespace deletion, and every namespace's `default` ServiceAccount
/// and `kube-root-ca.crt` ConfigMap. No node lifecycle controller: an emulated node sends no
/// heartbeats, and nothing here needs taint-based eviction.
const CONTROLLERS: [&str; 9] = [
    "job-controller",
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
];
/// Poll interval while waiting for a process to come up (polling with a deadline, not a sleep
/// that hopes the process is ready).
const POLL: Duration = Duration::from_millis(100);
/// How often a bed is started again when a picked port was taken in the meantime.
const START_ATTEMPTS: u32 = 3;

/// Kills the processes of a bed and removes its directory when its standard input closes: when
/// the bed is dropped, and also when the test process exits without dropping it (a shared bed,
/// a panic, Ctrl-C, SIGKILL), since the kernel closes the pipe then. Each line read is the
/// process group of a process to kill. A real node's `teardown.sh` then removes what outlives
/// the groups (containerd's shims, pods, mounts, cgroups, the bridge, firewall rules).
const REAPER: &str = r#"
trap '' INT TERM HUP
groups=()
while read -r group; do groups+=("$group"); done
for group in "${groups[@]}"; do kill -KILL -- "-$group" 2>/dev/null || true; done
if [ -f "$1/teardown.sh" ]; then bash "$1/teardown.sh" >"$1/teardown.log" 2>&1; fi
if [ "$2" != 1 ]; then rm -rf -- "$1"; fi
"#;

/// Who a client or kubeconfig authenticates as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// `admin`, in group `system:masters`: everything is allowed.
    Admin,
    /// `limited`, in no group but `system:authenticated`: RBAC allows it only what the default
    /// roles allow any authenticated user, and what a test binds to it.
    Limited,
}

impl User {
    /// The user name the apiserver sees (what a RoleBinding's subject names).
    pub fn name(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Limited => "limited",
        }
    }
}

/// A real kube-apiserver backed by a real etcd, on 127.0.0.1, with token authentication and
/// RBAC authorization. Nothing else runs: no controller-manager (so no namespace deletion, no
/// garbage collection, no default service account controller), no scheduler, no kubelet.
///
/// [`TestBed::shared`] gives the one bed of a test binary; [`TestBed::start`] an owned one that
/// is torn down on drop. Either way, nothing is left behind when the test process exits.
pub struct TestBed {
    binaries: Binaries,
    dir: PathBuf,
    server: String,
    admin_kubeconfig: PathBuf,
    limited_kubeconfig: PathBuf,
    startup: Duration,
    namespaces: AtomicU64,
    crds: OnceCell<()>,
    processes: Mutex<Processes>,
    /// The real node, or `None` when pods run on the node emulator.
    node: Option<RealNode>,
    /// Images imported into the real node's containerd.
    images: tokio::sync::Mutex<HashSet<String>>,
}

/// The processes of a bed. Dropping it tears them down.
struct Processes {
    reaper: Child,
    /// The write end of the reaper's standard input; closing it starts the teardown.
    reaper_input: Option<ChildStdin>,
    servers: Vec<Child>,
    keep: bool,
    dir: PathBuf,
}

impl Processes {
    fn spawn_reaper(dir: &Path, keep: bool) -> Result<Self> {
        let mut reaper = Command::new("bash")
            .args(["-c", REAPER, "sparkwing-e2e-reaper"])
            .arg(dir)
            .arg(if keep { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the test bed's reaper (bash)")?;
        let reaper_input = reaper.stdin.take();
        Ok(Processes {
            reaper,
            reaper_input,
            servers: Vec::new(),
            keep,
            dir: dir.to_path_buf(),
        })
    }

    /// Starts `command` in a process group of its own, registered with the reaper, its output
    /// going to `<dir>/<name>.log`.
    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<()> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.servers.push(child);
        let input = self.reaper_input.as_mut().context("the reaper is gone")?;
        writeln!(input, "{pid}").context("registering a process with the reaper")?;
        Ok(())
    }

    /// The first server that exited, with its status.
    fn exited(&mut self) -> Option<String> {
        self.servers
            .iter_mut()
            .find_map(|child| match child.try_wait() {
                Ok(Some(status)) => Some(format!("process {} exited: {status}", child.id())),
                Ok(None) => None,
                Err(err) => Some(format!("process {}: {err}", child.id())),
            })
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        // Closing the pipe makes the reaper kill every process group and remove the directory.
        drop(self.reaper_input.take());
        for child in &mut self.servers {
            // The reaper kills the whole group; this covers a reaper that could not.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.reaper.wait();
        if self.keep {
            eprintln!("sparkwing-e2e: kept {}", self.dir.display());
        }
    }
}

impl std::fmt::Debug for TestBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBed")
            .field("server", &self.server)
            .field("dir", &self.dir)
            .field("startup", &self.startup)
            .finish_non_exhaustive()
    }
}

static SHARED: OnceCell<TestBed> = OnceCell::const_new();

impl TestBed {
    /// The test bed of this test binary, started by the first test that asks. It lives until
    /// the process exits, when the reaper tears it down. Tests share it; each takes its own
    /// [`namespace`](Self::namespace). Clients are per test (`client()`): a kube client belongs
    /// to the runtime that made it, and every `#[tokio::test]` has its own.
    /// Its pods run on the node [`NODE_ENV`] chooses (a real node unless it says `emulator`).
    pub async fn shared() -> Result<&'static TestBed> {
        SHARED
            .get_or_try_init(|| async { TestBed::start_on(NodeKind::from_env()?).await })
            .await
    }

    /// The shared bed, started with pods on `kind` whatever [`NODE_ENV`] says (the node
    /// emulator's own tests). Fails if the binary's shared bed already runs another node.
    pub async fn shared_on(kind: NodeKind) -> Result<&'static TestBed> {
        let bed = SHARED.get_or_try_init(|| TestBed::start_on(kind)).await?;
        if bed.node_kind() != kind {
            bail!(
                "this test binary's shared bed runs pods on {}, not on {}",
                bed.node_kind().describe(),
                kind.describe()
            );
        }
        Ok(bed)
    }

    /// Starts a bed of its own, torn down when it is dropped, with pods on the node
    /// [`NODE_ENV`] chooses.
    pub async fn start() -> Result<TestBed> {
        Self::start_on(NodeKind::from_env()?).await
    }

    /// Starts a bed of its own with pods on `kind`.
    pub async fn start_on(kind: NodeKind) -> Result<TestBed> {
        let binaries = Binaries::find()?;
        eprintln!("sparkwing-e2e: pods run on {}", kind.describe());
        if kind == NodeKind::Real {
            real_node::check_host()?;
        }
        let mut attempt = 1;
        loop {
            match Self::start_once(binaries.clone(), kind).await {
                Ok(bed) => return Ok(bed),
                Err(err) if attempt < START_ATTEMPTS && is_port_clash(&err) => {
                    eprintln!("sparkwing-e2e: a port was taken, starting again: {err:#}");
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn start_once(binaries: Binaries, kind: NodeKind) -> Result<TestBed> {
        let started = Instant::now();
        let keep = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1");
        let dir = tempfile::Builder::new()
            .prefix("sparkwing-e2e-")
            .tempdir()
            .context("creating the test bed's directory")?
            .keep();
        // From here on the reaper owns the directory: dropping `processes` removes it.
        let mut processes = Processes::spawn_reaper(&dir, keep)?;

        let admin_token = random_token()?;
        let limited_token = random_token()?;
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!(
                "{admin_token},admin,uid-admin,system:masters\n\
                 {limited_token},limited,uid-limited\n"
            ),
        )?;
        let sa_key = dir.join("service-account.key");
        generate_rsa_key(&sa_key).await?;

        let [etcd_client, etcd_peer, secure_port, kubelet_port] = free_ports()?;
        let etcd_client_url = format!("http://127.0.0.1:{etcd_client}");
        let etcd_peer_url = format!("http://127.0.0.1:{etcd_peer}");
        processes.spawn(
            "etcd",
            Command::new(&binaries.etcd)
                .arg("--name=sparkwing-e2e")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_client_url}"))
                .arg(format!("--advertise-client-urls={etcd_client_url}"))
                .arg(format!("--listen-peer-urls={etcd_peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={etcd_peer_url}"))
                .arg(format!("--initial-cluster=sparkwing-e2e={etcd_peer_url}"))
                // A throwaway store: durability buys nothing and costs fsyncs.
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn"),
        )?;

        let cert_dir = dir.join("certs");
        processes.spawn(
            "kube-apiserver",
            Command::new(&binaries.kube_apiserver)
                .arg(format!("--etcd-servers={etcd_client_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={secure_port}"))
                // A self-signed serving certificate and its CA, generated by the apiserver.
                .arg(format!("--cert-dir={}", cert_dir.display()))
                .arg(format!("--token-auth-file={}", tokens.display()))
                .arg("--authorization-mode=RBAC")
                .arg(format!("--service-account-key-file={}", sa_key.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    sa_key.display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                // Only an allocation range for Service IPs; nothing is routed there.
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                // The `kubernetes` Service's endpoints may not be a loopback address, and nothing
                // reaches the apiserver through that Service here.
                .arg("--endpoint-reconciler-type=none")
                .arg("--enable-priority-and-fairness=false")
                .arg("--profiling=false"),
        )?;

        let ca = wait_for_ca(&cert_dir, &mut processes, started + START_TIMEOUT).await?;
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca)?;
        let server = format!("https://127.0.0.1:{secure_port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        let limited_kubeconfig = dir.join("limited.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            &ca_path,
            User::Admin,
            &admin_token,
        )?;
        write_kubeconfig(
            &limited_kubeconfig,
            &server,
            &ca_path,
            User::Limited,
            &limited_token,
        )?;

        let mut bed = TestBed {
            binaries,
            dir,
            server,
            admin_kubeconfig,
            limited_kubeconfig,
            startup: Duration::ZERO,
            namespaces: AtomicU64::new(0),
            crds: OnceCell::new(),
            processes: Mutex::new(processes),
            node: None,
            images: tokio::sync::Mutex::new(HashSet::new()),
        };
        bed.wait_ready(started + START_TIMEOUT).await?;
        bed.start_controllers(&sa_key)?;
        bed.wait_controllers(started + START_TIMEOUT).await?;
        match kind {
            NodeKind::Emulator => bed.register_emulated_node().await?,
            NodeKind::Real => {
                bed.node = Some(
                    bed.start_real_node(kubelet_port, started + START_TIMEOUT)
                        .await?,
                );
            }
        }
        bed.startup = started.elapsed();
        eprintln!(
            "sparkwing-e2e: kube-apiserver {} and node {} ready at {} in {:.1}s ({})",
            crate::binaries::pinned_kubernetes_version(),
            bed.node_name(),
            bed.server,
            bed.startup.as_secs_f64(),
            bed.dir.display(),
        );
        Ok(bed)
    }

    /// Polls `/readyz` (every check, etcd and the RBAC bootstrap included) until it answers
    /// `ok`, a server exits, or the deadline passes.
    async fn wait_ready(&self, deadline: Instant) -> Result<()> {
        let client = self.client().await?;
        loop {
            if let Some(exit) = self.lock().exited() {
                bail!("the test bed died while starting ({exit})\n{}", self.logs());
            }
            let request = http::Request::get("/readyz").body(Vec::new())?;
            let last = match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(err) => err.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver was not ready within {}s: {last}\n{}",
                    START_TIMEOUT.as_secs(),
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts kube-controller-manager and kube-scheduler, as a real cluster runs them beside the
    /// apiserver. They serve nothing (`--secure-port=0`): their readiness shows in what they do.
    fn start_controllers(&self, sa_key: &Path) -> Result<()> {
        let kubeconfig = self.admin_kubeconfig.display();
        let mut processes = self.lock();
        processes.spawn(
            "kube-controller-manager",
            Command::new(&self.binaries.kube_controller_manager)
                .arg(format!("--kubeconfig={kubeconfig}"))
                .arg("--secure-port=0")
                .arg("--leader-elect=false")
                .arg(format!("--controllers={}", CONTROLLERS.join(",")))
                .arg(format!(
                    "--service-account-private-key-file={}",
                    sa_key.display()
                ))
                // The CA alone: the serving certificate's bundle (leaf + CA) breaks the
                // ClusterTrustBundle publisher ("entry 0 does not have the CA bit set").
                .arg(format!(
                    "--root-ca-file={}",
                    self.dir.join("ca.crt").display()
                ))
                .arg("--use-service-account-credentials=false")
                .arg("--profiling=false"),
        )?;
        processes.spawn(
            "kube-scheduler",
            Command::new(&self.binaries.kube_scheduler)
                .arg(format!("--kubeconfig={kubeconfig}"))
                .arg("--secure-port=0")
                .arg("--leader-elect=false")
                .arg("--profiling=false"),
        )?;
        Ok(())
    }

    /// Waits until the controller-manager works: the `default` namespace has its `default`
    /// ServiceAccount (the first thing its service account controller does).
    async fn wait_controllers(&self, deadline: Instant) -> Result<()> {
        let accounts = Api::<ServiceAccount>::namespaced(self.client().await?, "default");
        loop {
            if let Some(exit) = self.lock().exited() {
                bail!("the test bed died while starting ({exit})\n{}", self.logs());
            }
            if accounts.get_opt("default").await?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-controller-manager created no service account within {}s\n{}",
                    START_TIMEOUT.as_secs(),
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates the Node the scheduler binds pods to and the node emulators run them for: Ready,
    /// with room for anything a test asks. Nothing renews it (no node lifecycle controller runs
    /// to notice).
    async fn register_emulated_node(&self) -> Result<()> {
        let nodes = Api::<Node>::all(self.client().await?);
        let resources = || -> BTreeMap<String, Quantity> {
            [("cpu", "64"), ("memory", "256Gi"), ("pods", "1000")]
                .into_iter()
                .map(|(name, amount)| (name.to_owned(), Quantity(amount.to_owned())))
                .collect()
        };
        let node = Node {
            metadata: ObjectMeta {
                name: Some(EMULATED_NODE.to_owned()),
                labels: Some(
                    [(
                        "kubernetes.io/hostname".to_owned(),
                        EMULATED_NODE.to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        nodes
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("creating the node {EMULATED_NODE}"))?;
        let status = NodeStatus {
            capacity: Some(resources()),
            allocatable: Some(resources()),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                reason: Some("NodeEmulator".to_owned()),
                message: Some("pods run on Docker through the e2e node emulator".to_owned()),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        };
        nodes
            .patch_status(
                EMULATED_NODE,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .with_context(|| format!("writing the status of the node {EMULATED_NODE}"))?;
        lift_not_ready_taint(&nodes, EMULATED_NODE).await
    }

    /// Starts containerd and the kubelet (see [`RealNode`]) and waits until the node is Ready.
    async fn start_real_node(&self, kubelet_port: u16, deadline: Instant) -> Result<RealNode> {
        let node = RealNode::prepare(&self.dir, kubelet_port).map_err(|err| {
            anyhow!(
                "{err:#}\n(the real node could not be prepared; {NODE_ENV}=emulator runs pods on \
                 the Docker node emulator instead)"
            )
        })?;
        self.lock()
            .spawn("containerd", &mut node.containerd_command())?;
        while !node.containerd_answers().await {
            self.check_starting(deadline, "containerd did not answer on its socket")?;
            tokio::time::sleep(POLL).await;
        }
        let pause = crate::images::pause_image().await?;
        node.import_from_docker(&pause).await?;
        self.lock().spawn(
            "kubelet",
            &mut node.kubelet_command(&self.binaries.kubelet, &self.admin_kubeconfig),
        )?;
        let nodes = Api::<Node>::all(self.client().await?);
        loop {
            let ready = nodes.get_opt(&node.name).await?.is_some_and(|found| {
                found
                    .status
                    .and_then(|status| status.conditions)
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if ready {
                lift_not_ready_taint(&nodes, &node.name).await?;
                return Ok(node);
            }
            self.check_starting(deadline, &format!("node {} was not Ready", node.name))?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails when a server of the bed exited, or with `what` when the deadline passed.
    fn check_starting(&self, deadline: Instant, what: &str) -> Result<()> {
        if let Some(exit) = self.lock().exited() {
            bail!(
                "the test bed died while starting ({exit}); {NODE_ENV}=emulator runs pods on the \
                 Docker node emulator instead\n{}",
                self.logs()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{what} within {}s; {NODE_ENV}=emulator runs pods on the Docker node emulator \
                 instead\n{}",
                START_TIMEOUT.as_secs(),
                self.logs()
            );
        }
        Ok(())
    }

    /// Makes the image `reference` of the local Docker engine runnable on the bed's node: on the
    /// real node it is imported into containerd (once per bed); the emulator runs Docker's.
    pub async fn load_image(&self, reference: &str) -> Result<()> {
        let Some(node) = &self.node else {
            return Ok(());
        };
        let mut loaded = self.images.lock().await;
        if !loaded.contains(reference) {
            node.import_from_docker(reference).await?;
            loaded.insert(reference.to_owned());
        }
        Ok(())
    }

    /// What runs the bed's pods.
    pub fn node_kind(&self) -> NodeKind {
        if self.node.is_some() {
            NodeKind::Real
        } else {
            NodeKind::Emulator
        }
    }

    /// The real node, when pods run on one.
    pub fn real_node(&self) -> Option<&RealNode> {
        self.node.as_ref()
    }

    /// [`host_address_for_pods`](Self::host_address_for_pods) of this test binary's shared bed,
    /// or 127.0.0.1 when it has none.
    pub fn shared_host_address_for_pods() -> Ipv4Addr {
        SHARED
            .get()
            .map_or(Ipv4Addr::LOCALHOST, TestBed::host_address_for_pods)
    }

    /// Whether this test binary's shared bed runs a real node.
    pub fn shared_runs_real_node() -> bool {
        SHARED.get().is_some_and(|bed| bed.node.is_some())
    }

    /// The address at which pods reach the host (a server a pod must reach listens there): the
    /// real node's bridge gateway, or 127.0.0.1 for the emulator's host-network containers.
    pub fn host_address_for_pods(&self) -> Ipv4Addr {
        self.node
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, |node| node.gateway)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Processes> {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last lines of the servers' logs, for error messages.
    pub fn logs(&self) -> String {
        log_tails(&self.dir)
    }

    /// The bed's directory: logs (`etcd.log`, `kube-apiserver.log`), kubeconfigs, etcd data.
    /// Removed at teardown unless `SPARKWING_E2E_KEEP=1`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The node the scheduler binds pods to.
    pub fn node_name(&self) -> &str {
        self.node.as_ref().map_or(EMULATED_NODE, |node| &node.name)
    }

    /// How long the bed took from nothing to `/readyz` answering `ok`.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The binaries the bed runs (and the kubectl and helm that go with it).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The admin kubeconfig (user `admin`, group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The kubeconfig of `user`.
    pub fn kubeconfig_path_for(&self, user: User) -> &Path {
        match user {
            User::Admin => &self.admin_kubeconfig,
            User::Limited => &self.limited_kubeconfig,
        }
    }

    /// The kube client configuration of `user`.
    pub async fn config_for(&self, user: User) -> Result<Config> {
        let path = self.kubeconfig_path_for(user);
        let kubeconfig =
            Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// An admin client. Make one per test: it belongs to the current tokio runtime.
    pub async fn client(&self) -> Result<Client> {
        self.client_as(User::Admin).await
    }

    /// A client authenticating as `user`.
    pub async fn client_as(&self, user: User) -> Result<Client> {
        Ok(Client::try_from(self.config_for(user).await?)?)
    }

    /// A fresh namespace named after `hint` (`e2e-<hint>-<n>`), returned once the
    /// controller-manager gave it its `default` service account. Dropping it deletes it (the
    /// namespace controller then deletes what is in it).
    pub async fn namespace(&self, hint: &str) -> Result<TestNamespace> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed) + 1;
        let name = namespace_name(hint, n);
        let client = self.client().await?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("sparkwing.dev/e2e".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        // The controller-manager's service account controller creates `default`; pods are
        // refused until it exists (the ServiceAccount admission plugin).
        let accounts = Api::<ServiceAccount>::namespaced(client, &name);
        tokio::time::timeout(
            NAMESPACE_TIMEOUT,
            await_condition(accounts, "default", |account: Option<&ServiceAccount>| {
                account.is_some()
            }),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "namespace {name} got no default service account within {}s",
                NAMESPACE_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("watching the service accounts of {name}"))?;
        Ok(TestNamespace::new(
            name,
            self.config_for(User::Admin).await?,
        ))
    }

    /// Installs Sparkwing's CRDs from `crds/yaml/` (server-side apply, as `kubectl apply
    /// --server-side` would) and waits until they are Established. Once per bed; later calls
    /// return at once.
    pub async fn install_crds(&self) -> Result<()> {
        self.crds
            .get_or_try_init(|| async {
                let client = self.client().await?;
                install_crds(&client, &crds_yaml_dir()).await
            })
            .await?;
        Ok(())
    }

    /// `kubectl` (the one built from the pinned release) against this bed, as `user`.
    pub fn kubectl(&self, user: User) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binaries.kubectl);
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path_for(user))
            .kill_on_drop(true);
        command
    }

    /// `helm` against this bed as admin, with its config, cache and data inside the bed's
    /// directory (nothing written to `$HOME`).
    pub fn helm(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binaries.helm);
        let home = self.dir.join("helm");
        command
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .kill_on_drop(true);
        command
    }
}

/// Removes the taints of a Ready node: a node is registered with `node.kubernetes.io/not-ready`,
/// which the node lifecycle controller (not run by the bed) would lift once the node is Ready.
async fn lift_not_ready_taint(nodes: &Api<Node>, name: &str) -> Result<()> {
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "taints": null } })),
        )
        .await
        .with_context(|| format!("lifting the taints of the node {name}"))?;
    Ok(())
}

/// `crds/yaml/` of this repository.
pub fn crds_yaml_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/yaml")
}

/// Applies every `*.yaml` CRD of `dir` and waits until each is Established.
pub async fn install_crds(client: &Client, dir: &Path) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.retain(|path| path.extension().is_some_and(|ext| ext == "yaml"));
    paths.sort();
    if paths.is_empty() {
        bail!("no CRD YAML in {}", dir.display());
    }
    let mut names = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path)?;
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        let name = crd
            .metadata
            .name
            .clone()
            .with_context(|| format!("{} has no metadata.name", path.display()))?;
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {}", path.display()))?;
        names.push(name);
    }
    for name in names {
        tokio::time::timeout(
            CRD_TIMEOUT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "CRD {name} not Established within {}s",
                CRD_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("watching CRD {name}"))?;
    }
    Ok(())
}

/// `e2e-<hint>-<n>`, a valid namespace name whatever the hint.
fn namespace_name(hint: &str, n: u64) -> String {
    let hint = sparkwing_operator::runs::backend::name_part(hint);
    if hint.is_empty() {
        format!("e2e-{n}")
    } else {
        format!("e2e-{hint}-{n}")
    }
}

/// Four distinct ports free on 127.0.0.1 (held together while picking, so they differ). Another
/// process may take one before the server binds it; [`TestBed::start`] retries then.
fn free_ports() -> Result<[u16; 4]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let mut ports = [0; 4];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

fn is_port_clash(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    text.contains("address already in use") || text.contains("bind: address")
}

/// 32 hex characters from the kernel's random source.
fn random_token() -> Result<String> {
    use std::io::Read as _;
    let mut bytes = [0_u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    }))
}

/// An RSA private key for signing service account tokens (the apiserver requires one).
async fn generate_rsa_key(path: &Path) -> Result<()> {
    let output = tokio::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(path)
        .output()
        .await
        .context("running openssl to generate the service account key (is openssl installed?)")?;
    if !output.status.success() {
        bail!(
            "openssl genpkey failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Waits for the apiserver to write its self-signed certificate (`apiserver.crt`: the serving
/// certificate, then the CA that signed it) and returns the CA, PEM.
async fn wait_for_ca(
    cert_dir: &Path,
    processes: &mut Processes,
    deadline: Instant,
) -> Result<String> {
    let path = cert_dir.join("apiserver.crt");
    loop {
        // Written in one go before the key; the key's presence says the pair is complete.
        if cert_dir.join("apiserver.key").exists() {
            if let Ok(bundle) = std::fs::read_to_string(&path) {
                if let Some(ca) = last_pem_certificate(&bundle) {
                    return Ok(ca);
                }
            }
        }
        if let Some(exit) = processes.exited() {
            bail!(
                "the test bed died while starting ({exit})\n{}",
                log_tails(&processes.dir)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver wrote no certificate to {} within {}s\n{}",
                cert_dir.display(),
                START_TIMEOUT.as_secs(),
                log_tails(&processes.dir)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last `CERTIFICATE` block of a PEM bundle, when the bundle holds two or more (a serving
/// certificate followed by its CA).
fn last_pem_certificate(bundle: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let blocks: Vec<&str> = bundle
        .split_inclusive(END)
        .filter(|block| block.contains(END))
        .collect();
    if blocks.len() < 2 {
        return None;
    }
    blocks.last().map(|block| format!("{}\n", block.trim()))
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user: User, token: &str) -> Result<()> {
    let name = user.name();
    let yaml = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: sparkwing-e2e\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority: {ca}\n\
         users:\n\
         - name: {name}\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: {name}\n  \
           context:\n    \
             cluster: sparkwing-e2e\n    \
             user: {name}\n    \
             namespace: default\n\
         current-context: {name}\n",
        ca = ca.display(),
    );
    std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
}

/// The last 30 lines of each server log in `dir`.
fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "containerd",
        "kubelet",
    ] {
        let path = dir.join(format!("{name}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        let _ = writeln!(out, "--- {} (last {} lines)", path.display(), tail.len());
        for line in tail {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_valid_labels() {
        assert_eq!(namespace_name("rbac", 1), "e2e-rbac-1");
        assert_eq!(
            namespace_name("Sample_PipelineRun", 12),
            "e2e-sample-pipelinerun-12"
        );
        assert_eq!(namespace_name("__", 3), "e2e-3");
        let long = namespace_name(&"x".repeat(100), 99);
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn the_ca_is_the_last_certificate_of_the_bundle() {
        let bundle = "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n\
                      -----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n";
        assert_eq!(
            last_pem_certificate(bundle).unwrap(),
            "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"
        );
        let half = "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n-----BEGIN";
        assert_eq!(last_pem_certificate(half), None);
    }

    #[test]
    fn tokens_are_random_hex() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
