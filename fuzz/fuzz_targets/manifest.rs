//! Fuzz target: upload manifest parsing, validation, canonical ids and tree materialisation.
//!
//! Input: a JSON manifest (when it starts with `{`), or a compact encoding that reaches odd paths
//! faster: entries separated by NUL, each a kind byte (even: a file, odd: a symlink) then the path,
//! and for a symlink `\x01` and its target.
//!
//! Properties: nothing panics; a manifest that validates gets a plan (and one that does not gets
//! none); the id does not depend on entry order; carrying out the plan in a scratch directory
//! succeeds in order (every parent first, nothing created twice) and nothing it creates resolves
//! outside that directory.

#![no_main]

use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use sparkwing_core::upload_manifest::{Entry, Manifest, ManifestLimits, Op};

const LIMITS: ManifestLimits = ManifestLimits {
    max_files: 64,
    max_total_size: 1 << 20,
    max_file_size: 1 << 16,
};

const HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn decode(data: &[u8]) -> Option<Manifest> {
    if data.first() == Some(&b'{') {
        return serde_json::from_slice(data).ok();
    }
    let files = data
        .split(|b| *b == 0)
        .filter(|c| !c.is_empty())
        .take(128)
        .map(|chunk| {
            let (kind, rest) = (chunk[0], &chunk[1..]);
            let mut parts = rest.splitn(2, |b| *b == 1);
            let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            if kind % 2 == 0 {
                Entry {
                    path,
                    mode: 0o644,
                    size: 0,
                    sha256: Some(HASH.to_string()),
                    symlink: None,
                }
            } else {
                let target = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                Entry {
                    path,
                    mode: 0,
                    size: 0,
                    sha256: None,
                    symlink: Some(target),
                }
            }
        })
        .collect();
    Some(Manifest { files })
}

/// Whether `target`, read from the directory `dir` (relative to the root), stays inside the root
/// once `..` and `.` are resolved without touching the file system.
fn stays_inside(dir: &Path, target: &Path) -> bool {
    let mut depth: Vec<Component> = dir.components().collect();
    for c in target.components() {
        match c {
            Component::Normal(_) => depth.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparkwing-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).expect("scratch dir");
    dir
}

fuzz_target!(|data: &[u8]| {
    let Some(manifest) = decode(data) else {
        return;
    };
    let valid = manifest.validate(&LIMITS).is_ok();
    let plan = manifest.materialise_plan(&LIMITS);
    assert_eq!(valid, plan.is_ok(), "plan and validation disagree");
    let Ok(plan) = plan else {
        return;
    };

    let mut reversed = manifest.clone();
    reversed.files.reverse();
    assert_eq!(
        manifest.clone().canonical().id(),
        reversed.canonical().id(),
        "the id depends on entry order"
    );
    assert_eq!(
        plan.iter()
            .filter(|op| !matches!(op, Op::Dir { .. }))
            .count(),
        manifest.files.len(),
        "every entry is created once"
    );

    // Carry the plan out; a sibling of root ("outside") is where an escape would land.
    let dir = scratch();
    let root = dir.join("root").canonicalize().expect("root");
    for op in &plan {
        match op {
            Op::Dir { path } => {
                std::fs::create_dir(root.join(path)).unwrap_or_else(|e| panic!("mkdir {path}: {e}"))
            }
            Op::File { path, .. } => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(root.join(path))
                    .unwrap_or_else(|e| panic!("create {path}: {e}"));
            }
            Op::Symlink { path, target } => {
                let link = root.join(path);
                let dir = Path::new(path).parent().unwrap_or(Path::new(""));
                assert!(
                    stays_inside(dir, Path::new(target)),
                    "{path} -> {target} leaves the root"
                );
                std::os::unix::fs::symlink(target, &link)
                    .unwrap_or_else(|e| panic!("symlink {path}: {e}"));
            }
        }
    }
    for op in &plan {
        let path = match op {
            Op::Dir { path } | Op::File { path, .. } | Op::Symlink { path, .. } => path,
        };
        // Following every link: whatever exists must be inside the root.
        if let Ok(real) = root.join(path).canonicalize() {
            assert!(
                real.starts_with(&root),
                "{path} resolves to {}",
                real.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
