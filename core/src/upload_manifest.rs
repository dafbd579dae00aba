//! Upload manifests: the list of a source tree's entries (path, mode, size, content hash, or a
//! symlink's target). Pure: validation, canonical form and the upload id.
//!
//! A manifest names blobs by the sha256 of their (uncompressed) content; the upload id is the
//! sha256 of the canonical manifest (entries sorted by path, serialized as compact JSON), so the
//! same tree always gets the same id.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Limits a manifest must respect.
#[derive(Clone, Copy, Debug)]
pub struct ManifestLimits {
    /// Most entries (files and symlinks).
    pub max_files: usize,
    /// Largest sum of file sizes, in bytes.
    pub max_total_size: u64,
    /// Largest single file, in bytes.
    pub max_file_size: u64,
}

impl ManifestLimits {
    /// The API's default limits (`api::Limits` in the operator): 100 000 entries, 2 GiB in
    /// total, 256 MiB per file. A runner checks a fetched manifest against these.
    pub const API_DEFAULT: ManifestLimits = ManifestLimits {
        max_files: 100_000,
        max_total_size: 2 << 30,
        max_file_size: 256 << 20,
    };
}

/// Longest path or symlink target, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component, in bytes (`NAME_MAX` of Linux file systems): a longer name could be
/// uploaded but never written out by a runner. Found by the manifest fuzz target.
pub const MAX_NAME_LEN: usize = 255;

/// A source tree, as the client describes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub files: Vec<Entry>,
}

/// One entry: a regular file (`sha256` and `size` set) or a symlink (`symlink` set).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// Relative path with `/` separators, like `src/main.rs`.
    pub path: String,
    /// Permission bits (`0o644` = 420, `0o755` = 493); 0 for symlinks.
    #[serde(default)]
    pub mode: u32,
    /// Size of the content in bytes (files only).
    #[serde(default)]
    pub size: u64,
    /// Lowercase hex sha256 of the content (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The link's target, relative to the link's directory (symlinks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink: Option<String>,
}

/// Why a manifest is refused. Each message names the offending path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("too many entries: {count} (at most {max})")]
    TooManyFiles { count: usize, max: usize },
    #[error("total size {total} bytes exceeds {max} bytes")]
    TooLarge { total: u64, max: u64 },
    #[error("{path}: file size {size} bytes exceeds {max} bytes")]
    FileTooLarge { path: String, size: u64, max: u64 },
    #[error("{path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{path}: duplicate path")]
    Duplicate { path: String },
    #[error("{path}: is below {parent}, which is not a directory")]
    UnderNonDirectory { path: String, parent: String },
    #[error("{path}: symlink target {target:?} {why}")]
    BadSymlink {
        path: String,
        target: String,
        why: &'static str,
    },
    #[error("{path}: an entry has either sha256 (a file) or symlink (a link), exactly one")]
    Kind { path: String },
    #[error("{path}: sha256 must be 64 lowercase hex digits")]
    BadHash { path: String },
    #[error("{path}: mode {mode:o} has bits other than permissions")]
    BadMode { path: String, mode: u32 },
}

/// A lowercase hex sha256 of 64 digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The components of a safe relative path: not empty, not absolute, no `.`/`..`/empty
/// components, no backslash or NUL.
pub fn check_path(path: &str) -> Result<Vec<&str>, ManifestError> {
    let bad = |why| {
        Err(ManifestError::BadPath {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("path too long");
    }
    if path.contains('\0') {
        return bad("path contains NUL");
    }
    if path.contains('\\') {
        return bad("path contains a backslash");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    let parts: Vec<&str> = path.split('/').collect();
    for p in &parts {
        match *p {
            "" => return bad("empty path component"),
            "." => return bad("`.` component"),
            ".." => return bad("`..` component escapes the root"),
            p if p.len() > MAX_NAME_LEN => return bad("a path component is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(parts)
}

/// Check a symlink at `link` (already checked components) pointing to `target`: resolved from the
/// link's directory, the target must stay inside the root.
fn check_symlink(path: &str, link: &[&str], target: &str) -> Result<(), ManifestError> {
    let bad = |why| {
        Err(ManifestError::BadSymlink {
            path: path.to_string(),
            target: target.to_string(),
            why,
        })
    };
    if target.is_empty() {
        return bad("is empty");
    }
    if target.len() > MAX_PATH_LEN {
        return bad("is too long");
    }
    if target.contains('\0') || target.contains('\\') {
        return bad("contains NUL or a backslash");
    }
    if target.starts_with('/') {
        return bad("is absolute");
    }
    let mut stack: Vec<&str> = link[..link.len() - 1].to_vec();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return bad("points outside the root");
                }
            }
            p => stack.push(p),
        }
    }
    Ok(())
}

/// Refuse a symlink whose target goes *through* another symlink of the manifest (`l/..`, `l/x`):
/// the lexical check above cannot see where that link really leads, and `..` after it climbs from
/// the link's target, not from its name (`d/l -> ..` with `x -> d/l/../..` lands outside the root;
/// found by the manifest fuzz target). Pointing *at* a symlink is fine: it is checked itself.
fn check_through_links(
    path: &str,
    link: &[&str],
    target: &str,
    links: &HashSet<&str>,
) -> Result<(), ManifestError> {
    let parts: Vec<&str> = target
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut stack: Vec<&str> = link[..link.len() - 1].to_vec();
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." {
            stack.pop();
            continue;
        }
        stack.push(part);
        let here = stack.join("/");
        if i + 1 < parts.len() && links.contains(here.as_str()) {
            return Err(ManifestError::BadSymlink {
                path: path.to_string(),
                target: target.to_string(),
                why: "passes through another symlink",
            });
        }
    }
    Ok(())
}

impl Manifest {
    /// Check every entry and the limits. Duplicates and entries below a file or symlink are
    /// refused.
    pub fn validate(&self, limits: &ManifestLimits) -> Result<(), ManifestError> {
        if self.files.len() > limits.max_files {
            return Err(ManifestError::TooManyFiles {
                count: self.files.len(),
                max: limits.max_files,
            });
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(self.files.len());
        let mut total: u64 = 0;
        for e in &self.files {
            let parts = check_path(&e.path)?;
            if !seen.insert(e.path.as_str()) {
                return Err(ManifestError::Duplicate {
                    path: e.path.clone(),
                });
            }
            match (&e.sha256, &e.symlink) {
                (Some(h), None) => {
                    if !is_sha256_hex(h) {
                        return Err(ManifestError::BadHash {
                            path: e.path.clone(),
                        });
                    }
                    if e.mode & !0o777 != 0 {
                        return Err(ManifestError::BadMode {
                            path: e.path.clone(),
                            mode: e.mode,
                        });
                    }
                    if e.size > limits.max_file_size {
                        return Err(ManifestError::FileTooLarge {
                            path: e.path.clone(),
                            size: e.size,
                            max: limits.max_file_size,
                        });
                    }
                    total = total.saturating_add(e.size);
                }
                (None, Some(t)) => check_symlink(&e.path, &parts, t)?,
                _ => {
                    return Err(ManifestError::Kind {
                        path: e.path.clone(),
                    })
                }
            }
        }
        if total > limits.max_total_size {
            return Err(ManifestError::TooLarge {
                total,
                max: limits.max_total_size,
            });
        }
        // No entry may sit below another entry (a file or a symlink is not a directory).
        for e in &self.files {
            let mut end = 0;
            while let Some(i) = e.path[end..].find('/') {
                let parent = &e.path[..end + i];
                if seen.contains(parent) {
                    return Err(ManifestError::UnderNonDirectory {
                        path: e.path.clone(),
                        parent: parent.to_string(),
                    });
                }
                end += i + 1;
            }
        }
        let links: HashSet<&str> = self
            .files
            .iter()
            .filter(|e| e.symlink.is_some())
            .map(|e| e.path.as_str())
            .collect();
        if !links.is_empty() {
            for e in &self.files {
                if let Some(t) = &e.symlink {
                    let parts: Vec<&str> = e.path.split('/').collect();
                    check_through_links(&e.path, &parts, t, &links)?;
                }
            }
        }
        Ok(())
    }

    /// The canonical form: entries sorted by path, symlinks with mode 0 and size 0.
    pub fn canonical(mut self) -> Manifest {
        for e in &mut self.files {
            if e.symlink.is_some() {
                e.mode = 0;
                e.size = 0;
            }
        }
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        self
    }

    /// The upload id: sha256 of the canonical manifest's compact JSON. Call on a canonical one.
    pub fn id(&self) -> String {
        // Serializing plain structs of strings and integers cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        sha256_hex(&bytes)
    }

    /// Every blob the manifest names, once each.
    pub fn blobs(&self) -> BTreeSet<&str> {
        self.files
            .iter()
            .filter_map(|e| e.sha256.as_deref())
            .collect()
    }

    /// Sum of file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|e| e.size).sum()
    }
}

/// One step of writing a validated manifest to disk, in the order [`Manifest::materialise_plan`]
/// gives them: every directory (parents first), then every file, then every symlink, so no file
/// is ever written through a link the manifest creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create this directory (its parent was created by an earlier op, or is the root).
    Dir { path: String },
    /// Write this file: content with this sha256 and size, these permission bits.
    File {
        path: String,
        sha256: String,
        size: u64,
        mode: u32,
    },
    /// Create this symlink pointing to `target` (relative, checked to stay inside the root).
    Symlink { path: String, target: String },
}

impl Op {
    /// The path the op creates, relative to the root.
    pub fn path(&self) -> &str {
        match self {
            Op::Dir { path } | Op::File { path, .. } | Op::Symlink { path, .. } => path,
        }
    }
}

impl Manifest {
    /// What to create, in order, to materialise this manifest under an empty root. Validates
    /// first with `limits` (the API's), so a manifest the API would refuse yields its error and
    /// no op. Pure and panic-free: the only input is the manifest.
    pub fn materialise_plan(&self, limits: &ManifestLimits) -> Result<Vec<Op>, ManifestError> {
        self.validate(limits)?;
        let mut dirs: BTreeSet<&str> = BTreeSet::new();
        for e in &self.files {
            let mut end = 0;
            while let Some(i) = e.path.get(end..).and_then(|rest| rest.find('/')) {
                dirs.insert(&e.path[..end + i]);
                end += i + 1;
            }
        }
        // Validation refuses an entry below a file or symlink, so no directory is also an entry.
        let mut ops: Vec<Op> = Vec::with_capacity(dirs.len() + self.files.len());
        // Sorted by path, a parent ("a") always comes before its children ("a/b").
        ops.extend(dirs.iter().map(|d| Op::Dir {
            path: (*d).to_string(),
        }));
        let mut entries: Vec<&Entry> = self.files.iter().collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for e in &entries {
            if let (Some(sha256), None) = (&e.sha256, &e.symlink) {
                ops.push(Op::File {
                    path: e.path.clone(),
                    sha256: sha256.clone(),
                    size: e.size,
                    mode: e.mode,
                });
            }
        }
        for e in &entries {
            if let (None, Some(target)) = (&e.sha256, &e.symlink) {
                ops.push(Op::Symlink {
                    path: e.path.clone(),
                    target: target.clone(),
                });
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ManifestLimits = ManifestLimits {
        max_files: 10,
        max_total_size: 1000,
        max_file_size: 500,
    };

    fn file(path: &str, content: &str) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o644,
            size: content.len() as u64,
            sha256: Some(sha256_hex(content.as_bytes())),
            symlink: None,
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            mode: 0,
            size: 0,
            sha256: None,
            symlink: Some(target.into()),
        }
    }

    fn check(files: Vec<Entry>) -> Result<(), ManifestError> {
        Manifest { files }.validate(&LIMITS)
    }

    #[test]
    fn api_manifest_paths_that_escape_are_refused() {
        for p in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a/./b",
            "a//b",
            "",
            "a\\b",
            "a\0b",
            "a/",
            &"n".repeat(256),
        ] {
            assert!(
                matches!(
                    check(vec![file(p, "x")]),
                    Err(ManifestError::BadPath { .. })
                ),
                "{p:?} accepted"
            );
        }
        for t in ["../../outside", "/etc", "../..", "a/../../.."] {
            assert!(
                matches!(
                    check(vec![link("d/l", t)]),
                    Err(ManifestError::BadSymlink { .. })
                ),
                "{t:?} accepted"
            );
        }
        // Inside the root after normalisation.
        check(vec![link("d/l", "../x"), link("m", "d/./e/../f")]).unwrap();
        check(vec![file(&format!("d/{}", "n".repeat(255)), "x")]).unwrap();
        // Through another link: `d/l` is the root, so `d/l/../..` is its parent.
        assert!(matches!(
            check(vec![link("d/l", ".."), link("x", "d/l/../..")]),
            Err(ManifestError::BadSymlink { .. })
        ));
        assert!(matches!(
            check(vec![link("d/l", "../e"), link("x", "d/l/f")]),
            Err(ManifestError::BadSymlink { .. })
        ));
        // At another link: fine.
        check(vec![link("d/l", ".."), link("x", "d/l")]).unwrap();
    }

    #[test]
    fn api_manifest_duplicates_kinds_and_limits() {
        assert_eq!(
            check(vec![file("a", "1"), file("a", "2")]),
            Err(ManifestError::Duplicate { path: "a".into() })
        );
        assert!(matches!(
            check(vec![link("l", "x"), file("l/y", "1")]),
            Err(ManifestError::UnderNonDirectory { .. })
        ));
        let mut both = file("a", "1");
        both.symlink = Some("b".into());
        assert!(matches!(check(vec![both]), Err(ManifestError::Kind { .. })));
        let many: Vec<Entry> = (0..11).map(|i| file(&format!("f{i}"), "x")).collect();
        assert!(matches!(
            check(many),
            Err(ManifestError::TooManyFiles { .. })
        ));
        let mut big = file("big", "x");
        big.size = 501;
        assert!(matches!(
            check(vec![big]),
            Err(ManifestError::FileTooLarge { .. })
        ));
    }

    #[test]
    fn api_manifest_id_is_order_independent() {
        let a = Manifest {
            files: vec![file("a", "1"), file("b", "2")],
        };
        let b = Manifest {
            files: vec![file("b", "2"), file("a", "1")],
        };
        assert_eq!(a.clone().canonical().id(), b.canonical().id());
        let c = Manifest {
            files: vec![file("a", "1"), file("b", "3")],
        };
        assert_ne!(a.canonical().id(), c.canonical().id());
    }

    #[test]
    fn materialise_plan_orders_dirs_files_then_symlinks() {
        let m = Manifest {
            files: vec![
                link("z/latest", "../a/b/c.txt"),
                file("a/b/c.txt", "c"),
                file("top", "t"),
                link("a/l", "b"),
                file("a/d.txt", "d"),
            ],
        };
        let ops = m.materialise_plan(&LIMITS).unwrap();
        let paths: Vec<&str> = ops.iter().map(Op::path).collect();
        assert_eq!(
            paths,
            [
                "a",
                "a/b",
                "z",
                "a/b/c.txt",
                "a/d.txt",
                "top",
                "a/l",
                "z/latest"
            ]
        );
        assert!(matches!(&ops[0], Op::Dir { .. }));
        assert!(matches!(
            &ops[3],
            Op::File {
                size: 1,
                mode: 0o644,
                ..
            }
        ));
        assert_eq!(
            ops[7],
            Op::Symlink {
                path: "z/latest".into(),
                target: "../a/b/c.txt".into()
            }
        );
        // Every directory op comes before any op below it.
        for (i, op) in ops.iter().enumerate() {
            if let Some((parent, _)) = op.path().rsplit_once('/') {
                let at = ops.iter().position(|o| o.path() == parent).unwrap();
                assert!(at < i, "{parent} after {}", op.path());
            }
        }
    }

    #[test]
    fn materialise_plan_refuses_traversal_and_escaping_symlinks() {
        for p in ["../x", "a/../../b", "/abs", "a//b", "a/./b"] {
            let m = Manifest {
                files: vec![file(p, "x")],
            };
            assert!(
                matches!(
                    m.materialise_plan(&LIMITS),
                    Err(ManifestError::BadPath { .. })
                ),
                "{p:?} planned"
            );
        }
        for t in ["../../outside", "/etc/passwd", "../x/../../y"] {
            let m = Manifest {
                files: vec![file("ok", "1"), link("d/l", t)],
            };
            assert!(
                matches!(
                    m.materialise_plan(&LIMITS),
                    Err(ManifestError::BadSymlink { .. })
                ),
                "{t:?} planned"
            );
        }
        // Writing through a link the manifest makes: an entry below a symlink.
        let m = Manifest {
            files: vec![link("l", "d"), file("l/evil", "1")],
        };
        assert!(matches!(
            m.materialise_plan(&LIMITS),
            Err(ManifestError::UnderNonDirectory { .. })
        ));
        assert_eq!(
            Manifest { files: vec![] }.materialise_plan(&LIMITS),
            Ok(vec![])
        );
    }
}
