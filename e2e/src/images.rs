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

/// The tag of the image [`pause_image`] imports.
pub(crate) const PAUSE_IMAGE: &str = "sparkwing-e2e-pause:1";

/// The real node's sandbox ("pause") image, from the host's static busybox: a shell that waits
/// and exits 0 on SIGTERM or SIGINT. Imported into Docker (once), then by the bed into containerd
/// as `docker.io/library/sparkwing-e2e-pause:1`; no registry is involved.
pub(crate) async fn pause_image() -> Result<String> {
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    if docker.inspect_image(PAUSE_IMAGE).await.is_ok() {
        return Ok(PAUSE_IMAGE.to_owned());
    }
    let root = busybox_rootfs("the real node's pause image")?;
    let (repo, tag) = PAUSE_IMAGE
        .split_once(':')
        .unwrap_or((PAUSE_IMAGE, "latest"));
    let changes = vec![
        "ENV PATH=/bin".to_owned(),
        r#"ENTRYPOINT ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"]"#
            .to_owned(),
    ];
    import_rootfs(&docker, &root, repo, tag, changes).await?;
    Ok(PAUSE_IMAGE.to_owned())
}
