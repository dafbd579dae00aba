//! What the Docker executor's tests share: a real `dockerd` (never a mock of its API), the runner
//! image built once through the CLI, and the conformance fixture project.

#![allow(dead_code)]

use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Set to 1 to skip the tests that need Docker on a machine without it (CI never sets it:
/// `.ci/run` starts dockerd through scripts/setup-test-deps.sh).
pub const SKIP_ENV: &str = "SPARKWING_SKIP_DOCKER_TESTS";

pub fn skip_docker() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
}

/// Docker is reachable and the runner image is built (once per test binary). Panics with the fix
/// when Docker is missing: these tests run against a real daemon.
pub fn require_docker() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let info = Command::new("docker").arg("info").output();
        match info {
            Ok(o) if o.status.success() => {}
            _ => {
                return Err(format!(
                    "dockerd is not reachable: run `bash scripts/setup-test-deps.sh` (it installs and starts docker.io), or set {SKIP_ENV}=1"
                ))
            }
        }
        let out = Command::new(BIN)
            .args(["runner-image", "build"])
            .output()
            .map_err(|e| format!("run sparkwing runner-image build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "sparkwing runner-image build failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

/// A copy of `cli/tests/conformance_fixture` as the project root.
pub fn conformance_project() -> Sw {
    let sw = Sw::empty();
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance_fixture"),
        sw.root(),
    );
    sw
}

/// Names of the containers (any state) carrying `label=value`.
pub fn containers_with_label(label: &str, value: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("label={label}={value}"))
        .output()
        .expect("run docker ps");
    assert!(out.status.success(), "docker ps: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Containers of this test's home (whatever their run or pool).
pub fn containers_of_home(sw: &Sw) -> Vec<String> {
    containers_with_label("sparkwing.dev/home", &sw.home().display().to_string())
}
