//! Where the test bed's binaries live, and the releases they are pinned to.
//!
//! `e2e/testbed/build.sh` builds them from the Go modules under `e2e/testbed/go/` into
//! `$SPARKWING_E2E_CACHE/bin` (default `/var/tmp/sparkwing-e2e/bin`), outside the repository. The
//! pinned versions are read from those modules' `go.mod` files, compiled in, so the tests compare
//! what the server reports with what the repository pins.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The environment variable naming the cache directory of the test bed.
pub const CACHE_ENV: &str = "SPARKWING_E2E_CACHE";
/// The cache directory when [`CACHE_ENV`] is unset.
pub const DEFAULT_CACHE: &str = "/var/tmp/sparkwing-e2e";

const KUBERNETES_GO_MOD: &str = include_str!("../testbed/go/kubernetes/go.mod");
const ETCD_GO_MOD: &str = include_str!("../testbed/go/etcd/go.mod");
const HELM_GO_MOD: &str = include_str!("../testbed/go/helm/go.mod");

/// The cache directory: `$SPARKWING_E2E_CACHE`, or `/var/tmp/sparkwing-e2e`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// The `k8s.io/kubernetes` release the Kubernetes binaries (kube-apiserver, ..., kubectl) are built from, like `v1.37.2`.
pub fn pinned_kubernetes_version() -> &'static str {
    required_version(KUBERNETES_GO_MOD, "k8s.io/kubernetes")
}

/// The `go.etcd.io/etcd/server/v3` release etcd is built from, like `v3.7.3`.
pub fn pinned_etcd_version() -> &'static str {
    required_version(ETCD_GO_MOD, "go.etcd.io/etcd/server/v3")
}

/// The `helm.sh/helm/v3` release helm is built from, like `v3.22.0`.
pub fn pinned_helm_version() -> &'static str {
    required_version(HELM_GO_MOD, "helm.sh/helm/v3")
}

/// The version of `module` in a `require` of `go_mod` (a line `module vX.Y.Z`, alone or in a block).
fn required_version(go_mod: &'static str, module: &str) -> &'static str {
    go_mod
        .lines()
        .map(|line| line.trim().trim_start_matches("require").trim())
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(module))
                .then(|| words.next())
                .flatten()
        })
        .unwrap_or_else(|| panic!("the committed go.mod requires {module}"))
}

/// The binaries of a test bed.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubelet: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

impl Binaries {
    /// The binaries in [`cache_dir`], or an error naming the missing ones and how to build them.
    /// The tests never build them: a test that cannot find them fails, it does not pass silently.
    pub fn find() -> Result<Self> {
        Self::find_in(&cache_dir().join("bin"))
    }

    /// The binaries in `bin`.
    pub fn find_in(bin: &Path) -> Result<Self> {
        let binaries = Binaries {
            kube_apiserver: bin.join("kube-apiserver"),
            kube_controller_manager: bin.join("kube-controller-manager"),
            kube_scheduler: bin.join("kube-scheduler"),
            kubelet: bin.join("kubelet"),
            etcd: bin.join("etcd"),
            kubectl: bin.join("kubectl"),
            helm: bin.join("helm"),
        };
        let missing: Vec<String> = [
            &binaries.kube_apiserver,
            &binaries.kube_controller_manager,
            &binaries.kube_scheduler,
            &binaries.kubelet,
            &binaries.etcd,
            &binaries.kubectl,
            &binaries.helm,
        ]
        .into_iter()
        .filter(|path| !is_executable(path))
        .map(|path| path.display().to_string())
        .collect();
        if !missing.is_empty() {
            bail!(
                "the Kubernetes test bed is not built: missing {}. Build it with `make e2e-testbed` \
                 (bash e2e/testbed/build.sh; the first build compiles the Kubernetes binaries, etcd \
                 and helm from source and takes many minutes, later ones reuse the cache in {}), \
                 or run the whole suite with `make e2e`",
                missing.join(", "),
                bin.parent().unwrap_or(bin).display(),
            );
        }
        Ok(binaries)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_come_from_the_go_modules() {
        assert!(pinned_kubernetes_version().starts_with("v1."));
        assert!(pinned_etcd_version().starts_with("v3."));
        assert!(pinned_helm_version().starts_with("v3."));
    }

    #[test]
    fn required_version_reads_single_lines_and_blocks() {
        let go_mod =
            "module x\n\nrequire a.io/b v1.2.3\n\nrequire (\n\tc.io/d v0.1.0 // indirect\n)\n";
        assert_eq!(required_version(go_mod, "a.io/b"), "v1.2.3");
        assert_eq!(required_version(go_mod, "c.io/d"), "v0.1.0");
    }

    #[test]
    fn missing_binaries_name_the_make_target() {
        let dir = tempfile::tempdir().unwrap();
        let err = Binaries::find_in(dir.path()).unwrap_err().to_string();
        assert!(err.contains("make e2e-testbed"), "{err}");
        assert!(err.contains("kube-apiserver"), "{err}");
    }
}
