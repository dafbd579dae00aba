//! TEST INFRASTRUCTURE: runner pods that execute the REAL `sparkwing runner` (not the busybox
//! stand-in of [`crate::test_runner_image`]) and can compile a project's `.sparkwing/` with cargo.
//!
//! The image, [`REAL_RUNNER_IMAGE`], is a tiny rootfs imported into Docker (no registry): the
//! usrmerge symlinks `/bin -> usr/bin`, `/lib -> usr/lib`, `/lib64 -> usr/lib64`,
//! `/sbin -> usr/sbin`, an `/etc/passwd` and `/etc/group` with the runner user (uid/gid 65532),
//! a world-writable `/tmp`, and empty mount points. Everything else comes from the host through
//! the `hostPath` volumes of a RunnerPool ([`RealRunner::pool`]), mounted read-only:
//!
//! | host | in the pod |
//! | --- | --- |
//! | `/usr` | `/usr` (libc, the C compiler and linker `cc`, coreutils) |
//! | `/etc/alternatives` | `/etc/alternatives` (`/usr/bin/cc` points there on Debian) |
//! | the Rust toolchain, `rustc --print sysroot` | `/opt/rust` (`/root` is 0700, so the sysroot directory itself is mounted) |
//! | the `sparkwing` binary cargo built | `/opt/sparkwing/bin/sparkwing` |
//!
//! with `PATH=/opt/sparkwing/bin:/opt/rust/bin:/usr/bin:/bin` and `CARGO_HOME=/tmp/cargo`. The
//! operator's runner Job runs it as uid 65532 with `HOME=/tmp` (an `emptyDir`), so a run naming
//! the pool compiles and runs its pipeline like on a cluster. The node emulator mounts the
//! volumes and gives the pod the host's network, so `SPARKWING_API_URL=http://127.0.0.1:<port>`
//! reaches an in-process API ([`crate::ApiTask`]).
//!
//! The binary: `SPARKWING_E2E_SPARKWING_BIN`, else `sparkwing` next to the test executable's
//! profile directory (`target/debug/sparkwing`); `make test-e2e` builds it first
//! (`cargo build -p sparkwing-cli`). A missing binary is an error saying so.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use bollard::Docker;
use k8s_openapi::api::core::v1::{EnvVar, HostPathVolumeSource, Volume, VolumeMount};
use kube::api::PostParams;
use kube::{Api, Client};
use sparkwing_crds::runner_pool::RunnerPoolSpec;
use sparkwing_crds::RunnerPool;

/// The repository of the image; the tag is [`REAL_RUNNER_TAG`].
pub const REAL_RUNNER_IMAGE: &str = "sparkwing-e2e-real-runner";
/// Bump when the rootfs changes.
pub const REAL_RUNNER_TAG: &str = "1";
/// The runner's uid and gid (the operator's `RUNNER_UID`).
pub const RUNNER_UID: u32 = 65532;
/// Where the Rust toolchain is mounted.
pub const RUST_DIR: &str = "/opt/rust";
/// Where the `sparkwing` binary is mounted.
pub const SPARKWING_PATH: &str = "/opt/sparkwing/bin/sparkwing";
/// `PATH` in the pod.
pub const PATH: &str = "/opt/sparkwing/bin:/opt/rust/bin:/usr/bin:/bin";
/// The env var naming the `sparkwing` binary to mount.
pub const SPARKWING_BIN_ENV: &str = "SPARKWING_E2E_SPARKWING_BIN";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      sparkwing:x:65532:65532:sparkwing runner:/tmp:/bin/sh\n";
const GROUP: &str = "root:x:0:\nsparkwing:x:65532:\n";

/// What runner pods of the real runner are made of, found on this host.
#[derive(Debug, Clone)]
pub struct RealRunner {
    /// `sparkwing-e2e-real-runner:<tag>`, in the local Docker engine.
    pub image: String,
    /// The host's `sparkwing` binary.
    pub sparkwing: PathBuf,
    /// The host's Rust sysroot (`rustc --print sysroot`).
    pub sysroot: PathBuf,
}

/// The `sparkwing` binary to mount: [`SPARKWING_BIN_ENV`], else the profile directory of the
/// running test executable (`target/<profile>/sparkwing`).
pub fn sparkwing_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(SPARKWING_BIN_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{SPARKWING_BIN_ENV}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is not in a cargo target directory")?;
    let bin = profile_dir.join("sparkwing");
    if !bin.is_file() {
        bail!(
            "{} does not exist: build the runner first (`cargo build -p sparkwing-cli`, which \
             `make test-e2e` does) or set {SPARKWING_BIN_ENV}",
            bin.display()
        );
    }
    Ok(bin)
}

/// The host's Rust sysroot.
pub fn rust_sysroot() -> Result<PathBuf> {
    let out = std::process::Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    if !out.status.success() {
        bail!(
            "rustc --print sysroot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !sysroot.join("bin/cargo").is_file() {
        bail!(
            "the Rust sysroot {} has no bin/cargo (the toolchain needs its cargo component)",
            sysroot.display()
        );
    }
    Ok(sysroot)
}

/// The rootfs of the image (see the module docs).
fn rootfs() -> Result<tempfile::TempDir> {
    let root = tempfile::tempdir()?;
    let p = root.path();
    for dir in [
        "usr",
        "etc/alternatives",
        "opt/rust",
        "opt/sparkwing/bin",
        "tmp",
        "proc",
        "sys",
        "dev",
    ] {
        std::fs::create_dir_all(p.join(dir))?;
    }
    std::fs::set_permissions(p.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        std::os::unix::fs::symlink(target, p.join(link))?;
    }
    std::fs::write(p.join("etc/passwd"), PASSWD)?;
    std::fs::write(p.join("etc/group"), GROUP)?;
    // The mount point of the binary (a file bind mount needs a file).
    std::fs::write(p.join(SPARKWING_PATH.trim_start_matches('/')), "")?;
    std::fs::set_permissions(
        p.join(SPARKWING_PATH.trim_start_matches('/')),
        std::fs::Permissions::from_mode(0o755),
    )?;
    Ok(root)
}

/// Finds the binary and the toolchain, and imports the image unless the engine has it.
pub async fn real_runner() -> Result<RealRunner> {
    let sparkwing = sparkwing_binary()?;
    let sysroot = rust_sysroot()?;
    let image = format!("{REAL_RUNNER_IMAGE}:{REAL_RUNNER_TAG}");
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    if docker.inspect_image(&image).await.is_err() {
        let root = rootfs()?;
        let changes = vec![
            format!("ENV PATH={PATH}"),
            format!("USER {RUNNER_UID}:{RUNNER_UID}"),
        ];
        crate::images::import_rootfs(&docker, &root, REAL_RUNNER_IMAGE, REAL_RUNNER_TAG, changes)
            .await?;
    }
    Ok(RealRunner {
        image,
        sparkwing,
        sysroot,
    })
}

fn host_volume(name: &str, path: &Path, kind: &str) -> Volume {
    Volume {
        name: name.to_string(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some(kind.to_string()),
        }),
        ..Volume::default()
    }
}

fn read_only(name: &str, at: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: at.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

impl RealRunner {
    /// A RunnerPool spec of the real runner: `minIdle: 0` (its runs get runner Jobs; set
    /// `min_idle` for warm pods running `sparkwing runner --warm`, as `tests/warm_runner.rs`
    /// does), `maxRunners`, the image, the host mounts and the env.
    pub fn pool_spec(&self, max_runners: i32) -> RunnerPoolSpec {
        RunnerPoolSpec {
            image: self.image.clone(),
            min_idle: 0,
            max_runners,
            idle_timeout: "10m".to_string(),
            resources: None,
            node_selector: Default::default(),
            tolerations: Vec::new(),
            service_account_name: None,
            env: vec![env("PATH", PATH), env("CARGO_HOME", "/tmp/cargo")],
            volumes: vec![
                host_volume("host-usr", Path::new("/usr"), "Directory"),
                host_volume(
                    "host-alternatives",
                    Path::new("/etc/alternatives"),
                    "Directory",
                ),
                host_volume("rust", &self.sysroot, "Directory"),
                host_volume("sparkwing", &self.sparkwing, "File"),
            ],
            volume_mounts: vec![
                read_only("host-usr", "/usr"),
                read_only("host-alternatives", "/etc/alternatives"),
                read_only("rust", RUST_DIR),
                read_only("sparkwing", SPARKWING_PATH),
            ],
        }
    }

    /// Create the RunnerPool `name` of the real runner in `namespace`: runs with
    /// `runnerPool: <name>` get a runner Job executing the real `sparkwing runner`. The image is
    /// loaded into the shared bed's node first.
    pub async fn create_pool(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<RunnerPool> {
        crate::bed::TestBed::shared()
            .await?
            .load_image(&self.image)
            .await?;
        let pool = RunnerPool::new(name, self.pool_spec(2));
        let pools: Api<RunnerPool> = Api::namespaced(client.clone(), namespace);
        pools
            .create(&PostParams::default(), &pool)
            .await
            .with_context(|| format!("creating the real-runner RunnerPool {name}"))
    }
}
