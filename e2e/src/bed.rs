//! [`TestBed`]: etcd and kube-apiserver started on loopback, and torn down afterwards.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

use crate::binaries::Binaries;
use crate::namespace::TestNamespace;

/// How long etcd and kube-apiserver get to become ready (a loaded two-core machine needs ~10 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long installed CRDs get to become Established.
pub const CRD_TIMEOUT: Duration = Duration::from_secs(30);
/// Set to `1` to keep a bed's directory (logs, kubeconfigs, etcd data) after teardown.
pub const KEEP_ENV: &str = "SPARKWING_E2E_KEEP";
/// The field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "sparkwing-e2e";

/// Poll interval while waiting for a process to come up (polling with a deadline, not a sleep
/// that hopes the process is ready).
const POLL: Duration = Duration::from_millis(100);
/// How often a bed is started again when a picked port was taken in the meantime.
const START_ATTEMPTS: u32 = 3;

/// Kills the processes of a bed and removes its directory when its standard input closes: when
/// the bed is dropped, and also when the test process exits without dropping it (a shared bed,
/// a panic, Ctrl-C, SIGKILL), since the kernel closes the pipe then. Each line read is the
/// process group of a process to kill.
const REAPER: &str = r#"
trap '' INT TERM HUP
groups=()
while read -r group; do groups+=("$group"); done
for group in "${groups[@]}"; do kill -KILL -- "-$group" 2>/dev/null || true; done
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
    pub async fn shared() -> Result<&'static TestBed> {
        SHARED.get_or_try_init(TestBed::start).await
    }

    /// Starts a bed of its own, torn down when it is dropped.
    pub async fn start() -> Result<TestBed> {
        let binaries = Binaries::find()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(binaries.clone()).await {
                Ok(bed) => return Ok(bed),
                Err(err) if attempt < START_ATTEMPTS && is_port_clash(&err) => {
                    eprintln!("sparkwing-e2e: a port was taken, starting again: {err:#}");
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn start_once(binaries: Binaries) -> Result<TestBed> {
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

        let [etcd_client, etcd_peer, secure_port] = free_ports()?;
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
        };
        bed.wait_ready(started + START_TIMEOUT).await?;
        bed.startup = started.elapsed();
        eprintln!(
            "sparkwing-e2e: kube-apiserver {} ready at {} in {:.1}s ({})",
            crate::binaries::pinned_kubernetes_version(),
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

    /// A fresh namespace named after `hint` (`e2e-<hint>-<n>`), with the `default` service
    /// account a real cluster's controller-manager would create. Dropping it deletes it (it then
    /// stays `Terminating`: finalizing namespaces is the controller-manager's job).
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
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        Api::<ServiceAccount>::namespaced(client, &name)
            .create(&PostParams::default(), &account)
            .await
            .with_context(|| format!("creating service account default in {name}"))?;
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
    let hint = sparkwing_operator::api::runs::name_part(hint);
    if hint.is_empty() {
        format!("e2e-{n}")
    } else {
        format!("e2e-{hint}-{n}")
    }
}

/// Three distinct ports free on 127.0.0.1 (held together while picking, so they differ). Another
/// process may take one before the server binds it; [`TestBed::start`] retries then.
fn free_ports() -> Result<[u16; 3]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let mut ports = [0; 3];
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
    for name in ["etcd", "kube-apiserver"] {
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
