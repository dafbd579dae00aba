//! Compiling without the network: a scaffolded pipeline comes with its Cargo.lock, a tree whose
//! dependencies are all local compiles offline (into one cache entry, with or without a lock file),
//! and only missing dependencies send cargo to the crates registry, which sparkwing says.

use crate::common::*;
use std::path::Path;

/// Any network access by cargo fails at once: its HTTP proxy is a closed local port.
fn without_network(sw: &mut Sw) {
    sw.env("CARGO_HTTP_PROXY", "http://127.0.0.1:9")
        .env("CARGO_NET_RETRY", "0");
}

/// A cache of this test's own, so that it compiles and its entries can be counted.
fn own_cache(sw: &mut Sw) -> tempfile::TempDir {
    let cache = tempfile::Builder::new()
        .prefix("sw-cache-")
        .tempdir()
        .unwrap();
    sw.env("SPARKWING_CACHE_DIR", cache.path().to_str().unwrap());
    cache
}

/// The complete binary cache entries (`bin/<key>/` with a `describe.json`).
fn entries(cache: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(cache.join("bin"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("describe.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

fn binary_of(out: &Out) -> (String, String) {
    let e = &out.events("run_started")[0];
    (
        e["binary"].as_str().unwrap().to_string(),
        e["binary_key"].as_str().unwrap().to_string(),
    )
}

fn scaffold(sw: &Sw) -> std::path::PathBuf {
    sw.sw(["pipeline", "new", "--name", "build"]).assert_code(0);
    sw.root().join(".sparkwing/Cargo.lock")
}

#[test]
fn a_scaffolded_pipeline_has_a_lock_file_and_compiles_without_network() {
    let mut sw = Sw::empty();
    let cache = own_cache(&mut sw);
    without_network(&mut sw);
    let lock = scaffold(&sw);
    let written = std::fs::read_to_string(&lock).expect("pipeline new writes Cargo.lock");
    let out = sw.sw(["run", "build"]);
    out.assert_code(0);
    assert_eq!(binary_of(&out).0, "compiled", "{out}");
    assert!(!out.stderr.contains("crates registry"), "{out}");
    // cargo found nothing to change in the lock file sparkwing wrote.
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), written);
    assert_eq!(entries(cache.path()).len(), 1);
    assert_eq!(
        sw.log_lines(&out.run_id(), "check"),
        ["hello job greeted: yes"]
    );
}

#[test]
fn a_tree_without_a_lock_file_compiles_offline_into_one_cache_entry() {
    let mut sw = Sw::empty();
    let cache = own_cache(&mut sw);
    without_network(&mut sw);
    let lock = scaffold(&sw);
    let scaffolded = std::fs::read_to_string(&lock).unwrap();
    std::fs::remove_file(&lock).unwrap();

    let first = sw.sw(["run", "build"]);
    first.assert_code(0);
    let (source, key) = binary_of(&first);
    assert_eq!(source, "compiled", "{first}");
    assert!(!first.stderr.contains("crates registry"), "{first}");
    // The build wrote the lock file (the same one `pipeline new` writes), and one entry: that of
    // the tree with its lock file, the one the next run sees.
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), scaffolded);
    assert_eq!(entries(cache.path()), std::slice::from_ref(&key));

    let second = sw.sw(["run", "build"]);
    second.assert_code(0);
    assert_eq!(binary_of(&second), ("cached".to_string(), key.clone()));

    // Another fresh checkout without the lock file: its lock file is written again, which finds
    // the same binary; nothing is compiled, nothing new is cached.
    std::fs::remove_file(&lock).unwrap();
    let third = sw.sw(["run", "build"]);
    third.assert_code(0);
    assert_eq!(binary_of(&third), ("cached".to_string(), key.clone()));
    assert_eq!(entries(cache.path()), [key]);
}

#[test]
fn missing_dependencies_send_cargo_online_and_sparkwing_says_so() {
    let mut sw = Sw::empty();
    let cache = own_cache(&mut sw);
    without_network(&mut sw);
    scaffold(&sw);
    let manifest = sw.root().join(".sparkwing/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        "[dependencies]\n",
        "[dependencies]\nsparkwing-test-crate-nobody-has = \"1\"\n",
        1,
    );
    std::fs::write(&manifest, text).unwrap();

    let out = sw.sw(["run", "build"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains(
            "==> Cargo.lock and the local cargo cache do not hold every dependency of .sparkwing/"
        ),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("fetching them from the crates registry"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("fetching the dependencies of .sparkwing/ failed"),
        "{out}"
    );
    // Recorded as failed, as any compile error.
    let runs = sw.runs_list();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "failed");
    let error = runs[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("compile error: fetching the dependencies"),
        "{error}"
    );
    assert!(entries(cache.path()).is_empty());
}

// A lock file cargo has to update (the manifest changed) is updated before the key is computed:
// still one entry per build, under the key of the tree the build left.
#[test]
fn a_stale_lock_file_is_updated_before_the_build_and_cached_once() {
    let mut sw = Sw::empty();
    let cache = own_cache(&mut sw);
    without_network(&mut sw);
    let lock = scaffold(&sw);
    let first = sw.sw(["run", "build"]);
    first.assert_code(0);
    let (_, first_key) = binary_of(&first);

    let manifest = sw.root().join(".sparkwing/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("version = \"0.1.0\"", "version = \"0.2.0\"", 1),
    )
    .unwrap();
    let second = sw.sw(["run", "build"]);
    second.assert_code(0);
    let (source, key) = binary_of(&second);
    assert_eq!(source, "compiled", "{second}");
    assert!(
        std::fs::read_to_string(&lock)
            .unwrap()
            .contains("name = \"sparkwing-pipelines\"\nversion = \"0.2.0\""),
        "cargo updated the lock file"
    );
    let mut expected = vec![first_key, key.clone()];
    expected.sort();
    assert_eq!(entries(cache.path()), expected);
    let third = sw.sw(["run", "build"]);
    assert_eq!(binary_of(&third), ("cached".to_string(), key));
}
