//! The container every runner is: cold runners of one run and warm runners of a pool share its
//! spec (mounts, labels, environment, user).

use super::{
    io, DockerError, LABEL_HOME, LABEL_MANAGED_BY, LABEL_POOL, LABEL_RUN, MANAGED_BY, RUNNER_EXE,
};
use bollard::models::{ContainerCreateBody, HostConfig};
use sparkwing_engine::box_slots::ENV_SKIP_BOX_SLOTS;
use sparkwing_engine::env_vars;
use sparkwing_engine::home::Home;
use sparkwing_engine::Format;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a runner container mounts and runs as: the same paths as on the host, so every path in
/// the store, the request and the pipeline's environment means the same file inside.
#[derive(Debug, Clone)]
pub struct Mounts {
    pub repo_root: PathBuf,
    pub home: Home,
    /// This `sparkwing` executable, mounted over the image's copy so runner and host always match.
    pub exe: PathBuf,
}

impl Mounts {
    pub fn for_host(repo_root: &Path, home: &Home) -> Result<Mounts, DockerError> {
        let exe = std::env::current_exe().map_err(io("find the sparkwing executable"))?;
        Ok(Mounts {
            repo_root: repo_root.to_path_buf(),
            home: home.clone(),
            exe,
        })
    }
}

/// The container spec shared by cold runners and warm pool runners.
pub fn runner_container(
    image: &str,
    cmd: Vec<String>,
    run: &str,
    pool: &str,
    mounts: &Mounts,
    format: Option<Format>,
) -> ContainerCreateBody {
    let home = &mounts.home;
    let labels = HashMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_POOL.to_string(), pool.to_string()),
        (LABEL_HOME.to_string(), home.root.display().to_string()),
    ]);
    let repo = mounts.repo_root.display();
    let mut binds = vec![
        format!("{repo}:{repo}"),
        format!("{}:{}", home.root.display(), home.root.display()),
        format!("{}:{RUNNER_EXE}:ro", mounts.exe.display()),
    ];
    // The cache holds the compiled pipeline binary; the runner only reads it (the host holds the
    // entry's lease). Under the home it is already mounted.
    if !home.cache.starts_with(&home.root) {
        binds.push(format!(
            "{}:{}:ro",
            home.cache.display(),
            home.cache.display()
        ));
    }
    let mut env = vec![
        format!("{}={}", env_vars::SPARKWING_HOME, home.root.display()),
        format!("{}={}", env_vars::SPARKWING_CACHE_DIR, home.cache.display()),
        // The host admitted the run through its box slots already.
        format!("{ENV_SKIP_BOX_SLOTS}=1"),
        "HOME=/tmp".to_string(),
    ];
    if let Some(f) = format {
        env.push(format!(
            "{}={}",
            env_vars::SPARKWING_LOG_FORMAT,
            match f {
                Format::Json => "json",
                Format::Pretty { .. } => "pretty",
            }
        ));
    }
    let uid = nix::unistd::getuid();
    // Files the runner writes (store, logs, workspace) must belong to the host user.
    let user = (!uid.is_root()).then(|| format!("{}:{}", uid, nix::unistd::getgid()));
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(cmd),
        env: Some(env),
        labels: Some(labels),
        user,
        working_dir: Some(repo.to_string()),
        host_config: Some(HostConfig {
            binds: Some(binds),
            network_mode: Some("host".to_string()),
            // docker-init reaps the zombies a pipeline's jobs leave behind and forwards signals.
            init: docker_init_available().then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn docker_init_available() -> bool {
    [
        "/usr/bin/docker-init",
        "/usr/libexec/docker/docker-init",
        "/usr/local/bin/docker-init",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}
