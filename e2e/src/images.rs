//! Small local images for tests, built from the host's static busybox (no registry is reachable):
//! a rootfs directory with busybox and its applets, imported into Docker as a tarball.

use anyhow::{bail, Context, Result};
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use std::os::unix::fs::PermissionsExt;
use tempfile::TempDir;

/// A rootfs with `/bin/busybox`, a symlink per applet, and a world-writable `/tmp`.
pub(crate) fn busybox_rootfs(purpose: &str) -> Result<TempDir> {
    let busybox = ["/usr/bin/busybox", "/bin/busybox", "/usr/local/bin/busybox"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
        .with_context(|| {
            format!("busybox is needed for {purpose} (apt-get install busybox-static)")
        })?;
    let root = tempfile::tempdir()?;
    let bin = root.path().join("bin");
    let tmp = root.path().join("tmp");
    for dir in [&bin, &tmp] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy(busybox, bin.join("busybox"))?;
    let applets = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .context("running busybox --list")?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && !applet.contains('/') && applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    Ok(root)
}

/// Import `root` as the image `repo:tag`, with Dockerfile-style `changes` (ENV, CMD...).
pub(crate) async fn import_rootfs(
    docker: &Docker,
    root: &TempDir,
    repo: &str,
    tag: &str,
    changes: Vec<String>,
) -> Result<()> {
    let tar = tokio::process::Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(root.path())
        .args(["-cf", "-", "."])
        .output()
        .await
        .context("running tar")?;
    if !tar.status.success() {
        bail!("tar failed: {}", String::from_utf8_lossy(&tar.stderr));
    }
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(changes)
        .build();
    let mut import = docker.create_image(
        Some(opts),
        Some(bollard::body_full(tar.stdout.into())),
        None,
    );
    while let Some(progress) = import.next().await {
        progress.with_context(|| format!("importing the image {repo}:{tag}"))?;
    }
    Ok(())
}

/// `image` (`repo:tag`) in the local Docker engine: imported from a busybox rootfs with
/// Dockerfile-style `changes`, unless it is there already.
async fn busybox_based_image(image: &str, purpose: &str, changes: Vec<String>) -> Result<String> {
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    if docker.inspect_image(image).await.is_ok() {
        return Ok(image.to_owned());
    }
    let root = busybox_rootfs(purpose)?;
    let (repo, tag) = image.split_once(':').unwrap_or((image, "latest"));
    import_rootfs(&docker, &root, repo, tag, changes).await?;
    Ok(image.to_owned())
}

/// The tag of the image [`busybox_image`] imports.
pub const BUSYBOX_IMAGE: &str = "sparkwing-e2e-busybox:1";

/// Imports a tiny image into the local Docker engine as [`BUSYBOX_IMAGE`] (`/bin/busybox`, the
/// host's static busybox, with a symlink per applet, `/tmp`, `PATH=/bin`), unless it is there
/// already, and returns its tag. No registry is needed. Needs `busybox` (static, as Debian's
/// `busybox-static` or `busybox` package installs it) and `tar` on the host.
pub async fn busybox_image() -> Result<String> {
    let changes = vec!["ENV PATH=/bin".to_string(), "CMD [\"sh\"]".to_string()];
    busybox_based_image(BUSYBOX_IMAGE, "the e2e busybox image", changes).await
}

/// The tag of the image [`pause_image`] imports.
pub(crate) const PAUSE_IMAGE: &str = "sparkwing-e2e-pause:1";

/// The real node's sandbox ("pause") image, from the host's static busybox: a shell that waits
/// and exits 0 on SIGTERM or SIGINT. Imported into Docker (once), then by the bed into containerd
/// as `docker.io/library/sparkwing-e2e-pause:1`; no registry is involved.
pub(crate) async fn pause_image() -> Result<String> {
    let changes = vec![
        "ENV PATH=/bin".to_owned(),
        r#"ENTRYPOINT ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"]"#
            .to_owned(),
    ];
    busybox_based_image(PAUSE_IMAGE, "the real node's pause image", changes).await
}
