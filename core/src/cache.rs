//! Dependency caches (`docs/authoring.md#caches`): what a job declares, the key its inputs give,
//! which stored entry a restore takes, and which entries a full cache store evicts.
//!
//! The engine reads the key files and lists the store; everything decided from those is here.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A cache a job declares: a name, the paths it covers (relative to the job's working
/// directory), and what keys it (the content of files, plus free strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSpec {
    pub name: String,
    pub paths: Vec<String>,
    /// Files (relative to the job's working directory) whose content keys the cache.
    #[serde(default)]
    pub key_files: Vec<String>,
    /// Free strings in the key, e.g. a toolchain version.
    #[serde(default)]
    pub key_texts: Vec<String>,
    /// The prefix a miss falls back to (the newest entry whose key starts with it); `None` means
    /// the key without its hash (`NAME-TEXT…-`), `Some("")` turns fallback off.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// A cache's resolved key and the prefix a miss falls back to (`None`: no fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey {
    pub key: String,
    pub fallback_prefix: Option<String>,
}

/// Keys, names and texts keep to these characters so a key is a file name everywhere.
fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Whether a cache (or artifact) name is usable: 1..=64 of `[A-Za-z0-9._-]`, not `.`/`..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(key_char)
        && name != "."
        && name != ".."
}

/// The key of `spec` given its key files' contents (`None`: the file does not exist), in the
/// order of `spec.key_files`: `NAME-TEXT1-…-HASH`, where HASH covers the files' names and
/// contents (16 hex digits), or `NAME-TEXT1-…` when the cache has no key files.
pub fn resolve_key(spec: &CacheSpec, key_files: &[Option<Vec<u8>>]) -> ResolvedKey {
    let mut stem = spec.name.clone();
    for t in &spec.key_texts {
        stem.push('-');
        stem.extend(t.chars().map(|c| if key_char(c) { c } else { '_' }));
    }
    let key = if spec.key_files.is_empty() {
        stem.clone()
    } else {
        let mut h = Sha256::new();
        for (name, content) in spec.key_files.iter().zip(key_files) {
            // Length-prefixed so no two different inputs hash alike.
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            match content {
                Some(c) => {
                    h.update([1]);
                    h.update((c.len() as u64).to_le_bytes());
                    h.update(c);
                }
                None => h.update([0]),
            }
        }
        let digest = h.finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{stem}-{hex}")
    };
    let fallback_prefix = match &spec.fallback {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(p.clone()),
        // Without key files the key is the whole stem: there is nothing older to fall back to.
        None if spec.key_files.is_empty() => None,
        None => Some(format!("{stem}-")),
    };
    ResolvedKey {
        key,
        fallback_prefix,
    }
}

/// One stored entry, as a cache store lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub key: String,
    pub size_bytes: u64,
    /// When it was saved (ms since the epoch).
    pub created_ms: i64,
    /// When it was last saved or restored (ms since the epoch).
    pub last_used_ms: i64,
}

/// What a restore does before the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreChoice {
    /// The exact key is stored: restore it, and do not save after the job.
    Exact(String),
    /// Not the key, but an entry of the fallback prefix: restore the newest one; save after.
    Fallback(String),
    /// Nothing to restore; save after.
    Miss,
}

impl RestoreChoice {
    /// How the run records it: `hit`, `fallback` or `miss`.
    pub fn outcome(&self) -> &'static str {
        match self {
            RestoreChoice::Exact(_) => "hit",
            RestoreChoice::Fallback(_) => "fallback",
            RestoreChoice::Miss => "miss",
        }
    }

    /// Whether the job's success saves the cache (every outcome but an exact hit).
    pub fn saves(&self) -> bool {
        !matches!(self, RestoreChoice::Exact(_))
    }
}

/// Which entry to restore for `key`: the exact one, else the newest (by save time, then key)
/// whose key starts with the fallback prefix, else none.
pub fn choose_restore(key: &ResolvedKey, entries: &[CacheEntry]) -> RestoreChoice {
    if entries.iter().any(|e| e.key == key.key) {
        return RestoreChoice::Exact(key.key.clone());
    }
    let Some(prefix) = &key.fallback_prefix else {
        return RestoreChoice::Miss;
    };
    entries
        .iter()
        .filter(|e| e.key.starts_with(prefix.as_str()))
        .max_by(|a, b| (a.created_ms, &a.key).cmp(&(b.created_ms, &b.key)))
        .map_or(RestoreChoice::Miss, |e| {
            RestoreChoice::Fallback(e.key.clone())
        })
}

/// The entries to evict so the store fits in `cap_bytes`: least recently used first, never
/// `keep` (the entry just saved). If `keep` alone is over the cap, everything else goes.
pub fn evictions(entries: &[CacheEntry], cap_bytes: u64, keep: Option<&str>) -> Vec<String> {
    let mut total: u64 = entries.iter().map(|e| e.size_bytes).sum();
    let mut by_age: Vec<&CacheEntry> = entries
        .iter()
        .filter(|e| Some(e.key.as_str()) != keep)
        .collect();
    by_age.sort_by(|a, b| (a.last_used_ms, &a.key).cmp(&(b.last_used_ms, &b.key)));
    let mut out = Vec::new();
    for e in by_age {
        if total <= cap_bytes {
            break;
        }
        total -= e.size_bytes;
        out.push(e.key.clone());
    }
    out
}

/// Which entries `cache prune` removes: every one with `all`, else those not used since
/// `older_than_ms` (an absolute time, ms since the epoch), else none.
pub fn prune_choice(
    entries: &[CacheEntry],
    all: bool,
    unused_since_ms: Option<i64>,
) -> Vec<String> {
    entries
        .iter()
        .filter(|e| all || unused_since_ms.is_some_and(|t| e.last_used_ms < t))
        .map(|e| e.key.clone())
        .collect()
}

/// Why a path a job names (a cache's, an artifact's) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} is outside the workspace (paths are relative to the job's working directory and must stay inside the repository)")]
    Outside(String),
    #[error("path {0:?} is empty or the workspace itself")]
    Root(String),
}

/// `path`, relative to the job's `workdir` (itself relative to the workspace), as a normalised
/// path relative to the workspace; refused if it leaves the workspace or names it whole. Lexical
/// only: the engine still refuses to follow a symlink out when it copies.
pub fn workspace_path(workdir: Option<&str>, path: &str) -> Result<String, PathError> {
    if path.starts_with('/') || path.starts_with('~') {
        return Err(PathError::Outside(path.to_string()));
    }
    let mut parts: Vec<&str> = Vec::new();
    let joined = workdir.into_iter().chain(std::iter::once(path));
    for seg in joined.flat_map(|p| p.split('/')) {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Outside(path.to_string()));
                }
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Err(PathError::Root(path.to_string()));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(files: &[&str], texts: &[&str]) -> CacheSpec {
        CacheSpec {
            name: "cargo".into(),
            paths: vec!["target".into()],
            key_files: files.iter().map(|s| s.to_string()).collect(),
            key_texts: texts.iter().map(|s| s.to_string()).collect(),
            fallback: None,
        }
    }

    fn entry(key: &str, size: u64, created: i64, used: i64) -> CacheEntry {
        CacheEntry {
            key: key.into(),
            size_bytes: size,
            created_ms: created,
            last_used_ms: used,
        }
    }

    #[test]
    fn the_key_follows_file_content_and_texts() {
        let s = spec(&["Cargo.lock"], &["linux x86"]);
        let a = resolve_key(&s, &[Some(b"v1".to_vec())]);
        let b = resolve_key(&s, &[Some(b"v2".to_vec())]);
        let gone = resolve_key(&s, &[None]);
        assert!(a.key.starts_with("cargo-linux_x86-"), "{}", a.key);
        assert_eq!(a.key.len(), "cargo-linux_x86-".len() + 16);
        assert_ne!(a.key, b.key);
        assert_ne!(a.key, gone.key);
        assert_eq!(a, resolve_key(&s, &[Some(b"v1".to_vec())]));
        assert_eq!(a.fallback_prefix.as_deref(), Some("cargo-linux_x86-"));
        // No key files: the key is the stem and there is nothing to fall back to.
        let plain = resolve_key(&spec(&[], &["v3"]), &[]);
        assert_eq!(plain.key, "cargo-v3");
        assert_eq!(plain.fallback_prefix, None);
        // An explicit prefix, and fallback off.
        let mut s2 = s.clone();
        s2.fallback = Some("cargo-".into());
        assert_eq!(
            resolve_key(&s2, &[None]).fallback_prefix.as_deref(),
            Some("cargo-")
        );
        s2.fallback = Some(String::new());
        assert_eq!(resolve_key(&s2, &[None]).fallback_prefix, None);
    }

    #[test]
    fn restore_takes_exact_then_newest_of_the_prefix_then_nothing() {
        let key = ResolvedKey {
            key: "cargo-abc".into(),
            fallback_prefix: Some("cargo-".into()),
        };
        let entries = vec![
            entry("cargo-old", 1, 10, 50),
            entry("cargo-new", 1, 20, 20),
            entry("npm-newest", 1, 30, 30),
        ];
        assert_eq!(
            choose_restore(&key, &entries),
            RestoreChoice::Fallback("cargo-new".into())
        );
        let mut with_exact = entries.clone();
        with_exact.push(entry("cargo-abc", 1, 1, 1));
        let exact = choose_restore(&key, &with_exact);
        assert_eq!(exact, RestoreChoice::Exact("cargo-abc".into()));
        assert!(!exact.saves());
        assert_eq!(exact.outcome(), "hit");
        let no_prefix = ResolvedKey {
            fallback_prefix: None,
            ..key.clone()
        };
        assert_eq!(choose_restore(&no_prefix, &entries), RestoreChoice::Miss);
        assert_eq!(choose_restore(&key, &[]), RestoreChoice::Miss);
        assert!(RestoreChoice::Miss.saves());
    }

    #[test]
    fn eviction_is_least_recently_used_first_and_spares_the_new_entry() {
        let entries = vec![
            entry("a", 40, 1, 100),
            entry("b", 40, 2, 10),
            entry("c", 40, 3, 50),
            entry("new", 40, 4, 5),
        ];
        assert_eq!(evictions(&entries, 160, Some("new")), Vec::<String>::new());
        assert_eq!(evictions(&entries, 100, Some("new")), vec!["b", "c"]);
        assert_eq!(evictions(&entries, 10, Some("new")), vec!["b", "c", "a"]);
        assert_eq!(evictions(&entries, 100, None), vec!["new", "b"]);
    }

    #[test]
    fn prune_all_or_by_age() {
        let entries = vec![entry("a", 1, 1, 100), entry("b", 1, 1, 10)];
        assert_eq!(prune_choice(&entries, true, None), vec!["a", "b"]);
        assert_eq!(prune_choice(&entries, false, Some(50)), vec!["b"]);
        assert!(prune_choice(&entries, false, None).is_empty());
    }

    #[test]
    fn paths_stay_inside_the_workspace() {
        assert_eq!(workspace_path(None, "target").unwrap(), "target");
        assert_eq!(
            workspace_path(Some("crates/app"), "./target/../out/").unwrap(),
            "crates/app/out"
        );
        assert_eq!(workspace_path(Some("crates/app"), "../../x").unwrap(), "x");
        for bad in ["../x", "/etc", "~/.cargo", "a/../../x"] {
            assert!(
                matches!(workspace_path(None, bad), Err(PathError::Outside(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            workspace_path(Some("a"), ".."),
            Err(PathError::Root(_))
        ));
        assert!(matches!(workspace_path(None, "."), Err(PathError::Root(_))));
    }

    #[test]
    fn names() {
        assert!(valid_name("cargo-target_1.x"));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
