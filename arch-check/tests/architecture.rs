//! The tree reads as ARCHITECTURE.md says: crates depend only downwards, and no crate has a
//! circle of modules importing each other.

use sparkwing_arch_check::ModuleGraph;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    // At run time first: a test binary built in another checkout of the same target directory
    // (cargo reuses it when the sources are unchanged) has that checkout's path compiled in.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Path::new(&manifest_dir)
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Which workspace crates each crate may use (normal dependencies). Keep in step with the
/// crate table of ARCHITECTURE.md.
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    BTreeMap::from([
        ("sparkwing", BTreeSet::new()),
        ("sparkwing-core", BTreeSet::new()),
        ("sparkwing-api", BTreeSet::from(["sparkwing-core"])),
        ("sparkwing-crds", BTreeSet::from(["sparkwing-core"])),
        ("sparkwing-dashboard", BTreeSet::from(["sparkwing-core"])),
        (
            "sparkwing-operator",
            BTreeSet::from([
                "sparkwing-core",
                "sparkwing-api",
                "sparkwing-crds",
                "sparkwing-state",
                "sparkwing-dashboard",
            ]),
        ),
        (
            "sparkwing-engine",
            BTreeSet::from(["sparkwing-core", "sparkwing-api"]),
        ),
        (
            "sparkwing-docker",
            BTreeSet::from(["sparkwing-core", "sparkwing-engine"]),
        ),
        (
            "sparkwing-runner",
            BTreeSet::from(["sparkwing-core", "sparkwing-api", "sparkwing-engine"]),
        ),
        (
            "sparkwing-cli",
            BTreeSet::from([
                "sparkwing-core",
                "sparkwing-api",
                "sparkwing-dashboard",
                "sparkwing-engine",
                "sparkwing-docker",
                "sparkwing-runner",
            ]),
        ),
        (
            "sparkwing-e2e",
            BTreeSet::from([
                "sparkwing-core",
                "sparkwing-api",
                "sparkwing-crds",
                "sparkwing-operator",
            ]),
        ),
        ("sparkwing-state", BTreeSet::new()),
        ("sparkwing-arch-check", BTreeSet::new()),
    ])
}

#[test]
fn crates_depend_only_downwards() {
    let out = std::process::Command::new(
        std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()),
    )
    .args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ])
    .current_dir(workspace_root())
    .output()
    .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let ours: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let allowed = allowed();
    let mut wrong = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default();
        let Some(may) = allowed.get(name) else {
            wrong.push(format!(
                "{name} is not in the layering table of this test (and ARCHITECTURE.md): add it"
            ));
            continue;
        };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().unwrap_or_default();
            // Dev-dependencies may reach up (a test may run the real server).
            let normal = d["kind"].is_null();
            if normal && ours.contains(dep) && !may.contains(dep) {
                wrong.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "crate layering broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_crate_has_a_circle_of_modules() {
    let root = workspace_root();
    let mut found = Vec::new();
    for member in [
        "sdk",
        "core",
        "api",
        "dashboard",
        "crds",
        "state",
        "operator",
        "engine",
        "docker",
        "runner",
        "cli",
        "e2e",
    ] {
        let src = root.join(member).join("src");
        let graph = ModuleGraph::read(&src).expect("read the crate's sources");
        assert!(graph.files.len() > 1, "{} has no modules?", src.display());
        for circle in graph.circles() {
            found.push(format!("{member}: {circle}"));
        }
    }
    assert!(
        found.is_empty(),
        "modules importing each other (move what both need below both):\n{}",
        found.join("\n")
    );
}

/// The operator's API server (`operator/src/api/`) sits on top: the controllers and the modules
/// they share with it (runs, tokens, the store, labels) never import from it, so the API can be
/// served alone (`sparkwing-operator api`) and the controllers run without it.
#[test]
fn nothing_in_the_operator_imports_the_api_server() {
    let src = workspace_root().join("operator").join("src");
    let graph = ModuleGraph::read(&src).expect("read the operator's sources");
    let api = vec!["api".to_string()];
    assert!(graph.files.contains_key(&api), "operator/src/api/ moved?");
    let wrong: Vec<String> = graph
        .imports
        .iter()
        .filter(|(from, _)| !from.starts_with(&api))
        .flat_map(|(from, tos)| {
            tos.iter()
                .filter(|to| to.starts_with(&api))
                .map(move |to| format!("{} imports {}", from.join("::"), to.join("::")))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "modules outside operator/src/api/ import from it (move what both need out of api/):\n{}",
        wrong.join("\n")
    );
}
