//! Compiling `.sparkwing/` into a pipeline binary, cached by content.
//!
//! Key = sha256 of: the toolchain (`rustc -vV`), `RUSTFLAGS`, the SDK version and source hash, and
//! every file of `.sparkwing/` that git would not ignore (path, executable bit, content). An
//! unchanged tree finds its binary without invoking cargo. A miss resolves first (`cargo fetch`,
//! offline unless the lock file and the local cargo cache do not suffice), hashes the tree again
//! with its lock file, and builds offline into one entry. Entries live in
//! `<cache>/bin/<key>/{pipeline,describe.json,lease.lock}`; a run holds a shared lock on
//! `lease.lock` while it uses the binary and pruning only removes entries whose lease it can take
//! exclusively, so a binary in use is never pruned.

pub mod sdk_source;
pub mod toolchain;

use crate::env_vars;
use crate::project::Project;
use sha2::{Digest, Sha256};
use sparkwing_core::protocol::{Describe, PROTOCOL_VERSION};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

const DEFAULT_MAX_ENTRIES: usize = 20;
const DEFAULT_MAX_BYTES: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cargo is not on PATH ({0}); sparkwing compiles .sparkwing/ with cargo: install Rust (https://rustup.rs)")]
    CargoMissing(std::io::Error),
    #[error("compiling .sparkwing/ failed (cargo exited with {status})")]
    BuildFailed {
        status: String,
        /// cargo's messages (already printed to stderr), for callers that report them elsewhere.
        output: String,
    },
    #[error("fetching the dependencies of .sparkwing/ failed (cargo exited with {status}); they are neither in Cargo.lock and the local cargo cache nor reachable on the crates registry: check the network, or the dependencies in .sparkwing/Cargo.toml")]
    FetchFailed {
        status: String,
        /// cargo's messages (already printed to stderr).
        output: String,
    },
    #[error(
        "cargo built no binary for {0}; .sparkwing/Cargo.toml needs a [[bin]] target (src/main.rs)"
    )]
    NoBinary(PathBuf),
    #[error("the pipeline binary's `describe` failed: {0}")]
    Describe(String),
    #[error("the pipeline binary speaks protocol {found}, this sparkwing speaks {PROTOCOL_VERSION}; rebuild with this sparkwing's SDK")]
    Protocol { found: u32 },
    #[error("binary cache {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CompileError + '_ {
    move |source| CompileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A pipeline binary ready to run. Holding it keeps the cache entry from being pruned.
#[derive(Debug)]
pub struct Compiled {
    pub key: String,
    pub binary: PathBuf,
    pub describe: Describe,
    /// How the binary was obtained: `cached` or `compiled`.
    pub source: &'static str,
    _lease: File,
}

/// How to show cargo's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Let cargo draw its progress on the terminal.
    Terminal,
    /// Keep cargo's output; print it only if the build fails.
    OnFailure,
}

/// The cache key for the project's current tree.
pub fn cache_key(cache: &Path, project_dir: &Path) -> Result<String, CompileError> {
    let toolchain = toolchain::fingerprint(cache, project_dir).map_err(io(project_dir))?;
    let mut h = Sha256::new();
    h.update(b"sparkwing-bincache-v1\n");
    h.update(toolchain.as_bytes());
    h.update(std::env::var("RUSTFLAGS").unwrap_or_default().as_bytes());
    h.update(b"\nsdk ");
    h.update(sdk_source::SDK_VERSION.as_bytes());
    h.update(sdk_source::source_hash().as_bytes());
    h.update(b"\n");
    for (rel, exec, digest) in tree(project_dir)? {
        h.update(rel.as_bytes());
        h.update([0, u8::from(exec)]);
        h.update(digest);
    }
    Ok(sdk_source::hex(&h.finalize()[..16]))
}

/// A walk of `dir` as git sees it: hidden files included; `.gitignore`d paths, `.git/` and cargo
/// `target/` dirs (top-level, or `.sparkwing/target/`) left out; symlinks not followed. Shared by
/// the compile fingerprint and the source upload of `pipeline trigger`.
pub fn source_walker(dir: &Path) -> ignore::Walk {
    ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .parents(true)
        .filter_entry(|e| {
            // cargo's target dirs (the project's, and `.sparkwing/`'s when walking a repository)
            // and git metadata never define the pipeline.
            let target = e.file_name() == "target"
                && (e.depth() == 1
                    || (e.depth() == 2
                        && e.path().parent().and_then(Path::file_name)
                            == Some(std::ffi::OsStr::new(".sparkwing"))));
            !target && e.file_name() != ".git"
        })
        .build()
}

/// Files of the project dir that git would not ignore, sorted, with content digests.
fn tree(project_dir: &Path) -> Result<Vec<(String, bool, [u8; 32])>, CompileError> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let walker = source_walker(project_dir);
    for entry in walker {
        let entry = entry.map_err(|e| CompileError::Io {
            path: project_dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(project_dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::metadata(path).map_err(io(path))?;
        let mut file = File::open(path).map_err(io(path))?;
        let mut h = Sha256::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io(path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        out.push((
            rel,
            meta.permissions().mode() & 0o111 != 0,
            h.finalize().into(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn bin_root(cache: &Path) -> PathBuf {
    cache.join("bin")
}

/// Take a shared lease on an entry if it is complete.
fn lease(entry: &Path) -> Option<File> {
    if !entry.join("describe.json").is_file() {
        return None;
    }
    let f = File::options()
        .read(true)
        .write(true)
        .open(entry.join("lease.lock"))
        .ok()?;
    f.lock_shared().ok()?;
    // Recency for pruning: the lease file's mtime is the last use.
    let _ = f.set_modified(SystemTime::now());
    // The entry may have been pruned between the check and the lock.
    entry.join("pipeline").is_file().then_some(f)
}

fn load_entry(
    key: &str,
    entry: &Path,
    source: &'static str,
) -> Result<Option<Compiled>, CompileError> {
    let Some(lease) = lease(entry) else {
        return Ok(None);
    };
    let path = entry.join("describe.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let describe: Describe =
        serde_json::from_str(&text).map_err(|e| CompileError::Describe(e.to_string()))?;
    Ok(Some(Compiled {
        key: key.to_string(),
        binary: entry.join("pipeline"),
        describe,
        source,
        _lease: lease,
    }))
}

/// Find or build the pipeline binary for the project's current tree.
pub fn ensure(
    cache: &Path,
    project: &Project,
    progress: Progress,
) -> Result<Compiled, CompileError> {
    let key = cache_key(cache, &project.dir)?;
    let root = bin_root(cache);
    if let Some(c) = load_entry(&key, &root.join(&key), "cached")? {
        return Ok(c);
    }
    std::fs::create_dir_all(root.join("locks")).map_err(io(&root))?;
    // One build per tree at a time: concurrent runs of a fresh tree wait here, then find the entry.
    let lock_path = root.join("locks").join(format!("{key}.lock"));
    let writer = File::create(&lock_path).map_err(io(&lock_path))?;
    writer.lock().map_err(io(&lock_path))?;
    // cargo may have written Cargo.lock meanwhile, so the tree's key can differ now.
    let key = cache_key(cache, &project.dir)?;
    if let Some(c) = load_entry(&key, &root.join(&key), "cached")? {
        return Ok(c);
    }
    // Resolve first: this writes or updates Cargo.lock, so the key below is that of the tree the
    // build sees and leaves, and the build publishes one entry. A fresh checkout without
    // Cargo.lock gets its lock file here and may then find its binary already built.
    let sdk = sdk_source::materialize(cache).map_err(io(cache))?;
    let toolchain = toolchain::fingerprint(cache, &project.dir).map_err(io(&project.dir))?;
    fetch(&sdk, project, toolchain::host(&toolchain), progress)?;
    let key = cache_key(cache, &project.dir)?;
    if let Some(c) = load_entry(&key, &root.join(&key), "cached")? {
        return Ok(c);
    }
    let built = build(cache, &sdk, project, progress)?;
    let describe = describe(&built)?;
    // The build ran offline with everything resolved, so the tree is as hashed; hash again anyway
    // so the entry always describes the tree the next run will see.
    let key = cache_key(cache, &project.dir)?;
    publish(&root, &key, &built, &describe)?;
    let entry = root.join(&key);
    let compiled = load_entry(&key, &entry, "compiled")?.ok_or_else(|| CompileError::Io {
        path: entry.clone(),
        source: std::io::Error::other("entry vanished right after it was published"),
    })?;
    drop(writer);
    prune(cache, &key, CacheLimits::from_env());
    Ok(compiled)
}

/// `cargo` with the SDK patched in, for `.sparkwing/`.
fn cargo(sdk: &Path, project: &Project, subcommand: &str) -> Command {
    let cargo = std::env::var_os(env_vars::CARGO).unwrap_or_else(|| "cargo".into());
    let patch = format!(
        "patch.crates-io.sparkwing.path={}",
        toml_string(&sdk.to_string_lossy())
    );
    let mut cmd = Command::new(&cargo);
    cmd.arg(subcommand)
        .arg("--manifest-path")
        .arg(project.dir.join("Cargo.toml"))
        .arg("--config")
        .arg(&patch)
        .current_dir(&project.dir)
        .stdin(Stdio::null());
    cmd
}

/// Make every dependency available locally and Cargo.lock complete: offline when the lock file
/// and the local cargo cache suffice (always so for a pipeline that only uses the SDK, which is
/// patched in from disk), from the crates registry otherwise, saying so.
fn fetch(
    sdk: &Path,
    project: &Project,
    host: Option<&str>,
    progress: Progress,
) -> Result<(), CompileError> {
    // Only what this machine builds: a lock file may list crates for other platforms that were
    // never downloaded here, and the build does not need them.
    let mut targets: Vec<String> = host.map(str::to_string).into_iter().collect();
    if let Some(t) = std::env::var("CARGO_BUILD_TARGET")
        .ok()
        .filter(|t| !t.is_empty())
    {
        targets.push(t);
    }
    targets.dedup();
    let fetch = |offline: bool| {
        let mut cmd = cargo(sdk, project, "fetch");
        for t in &targets {
            cmd.arg("--target").arg(t);
        }
        if offline {
            cmd.arg("--offline");
        }
        cmd.stdout(Stdio::null());
        cmd
    };
    let offline = fetch(true)
        .stderr(Stdio::piped())
        .output()
        .map_err(CompileError::CargoMissing)?;
    if offline.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&offline.stderr);
    let why = why
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or("cargo could not resolve them offline");
    eprintln!(
        "==> Cargo.lock and the local cargo cache do not hold every dependency of .sparkwing/ ({why}); fetching them from the crates registry"
    );
    let mut online = fetch(false);
    let (status, output) = match progress {
        Progress::Terminal => {
            let status = online
                .stderr(Stdio::inherit())
                .status()
                .map_err(CompileError::CargoMissing)?;
            (status, String::new())
        }
        Progress::OnFailure => {
            let out = online
                .stderr(Stdio::piped())
                .output()
                .map_err(CompileError::CargoMissing)?;
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() {
                eprint!("{text}");
            }
            (out.status, text)
        }
    };
    if status.success() {
        return Ok(());
    }
    Err(CompileError::FetchFailed {
        status: status.to_string().replace("exit status: ", "status "),
        output,
    })
}

/// Publish a binary and its description as the entry `key` (atomically, by renaming a staged dir).
fn publish(root: &Path, key: &str, built: &Path, describe: &Describe) -> Result<(), CompileError> {
    let entry = root.join(key);
    if entry.join("describe.json").is_file() {
        return Ok(());
    }
    let staging = root.join(format!(
        ".staging-{}-{}",
        std::process::id(),
        sdk_source::nanos()
    ));
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let bin = staging.join("pipeline");
    std::fs::copy(built, &bin).map_err(io(&bin))?;
    let describe_path = staging.join("describe.json");
    std::fs::write(
        &describe_path,
        serde_json::to_vec_pretty(describe).unwrap_or_default(),
    )
    .map_err(io(&describe_path))?;
    File::create(staging.join("lease.lock")).map_err(io(&staging))?;
    if std::fs::rename(&staging, &entry).is_err() {
        // Someone else published this key first; theirs is equivalent.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// Run `cargo build` offline (after [`fetch`]); returns the path of the built executable inside
/// the target dir.
fn build(
    cache: &Path,
    sdk: &Path,
    project: &Project,
    progress: Progress,
) -> Result<PathBuf, CompileError> {
    let dir_hash = sdk_source::hex(&Sha256::digest(project.dir.to_string_lossy().as_bytes())[..8]);
    let target_dir = cache.join("target").join(dir_hash);
    let manifest = project.dir.join("Cargo.toml");
    let mut cmd = cargo(sdk, project, "build");
    cmd.arg("--offline")
        .arg("--message-format=json-render-diagnostics")
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdout(Stdio::piped());
    match progress {
        Progress::Terminal => {
            eprintln!(
                "==> compiling .sparkwing/ (its source changed, or first run on this machine)"
            );
            cmd.stderr(Stdio::inherit());
        }
        Progress::OnFailure => {
            cmd.stderr(Stdio::piped());
        }
    }
    let mut child = cmd.spawn().map_err(CompileError::CargoMissing)?;
    // Drain stderr on a thread so cargo never blocks on a full pipe.
    let stderr_reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let mut executable: Option<PathBuf> = None;
    if let Some(stdout) = child.stdout.take() {
        let manifest_str = manifest.to_string_lossy().into_owned();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] == "compiler-artifact" {
                let same_manifest = msg["manifest_path"]
                    .as_str()
                    .is_some_and(|m| Path::new(m) == Path::new(&manifest_str));
                if let (true, Some(exe)) = (same_manifest, msg["executable"].as_str()) {
                    executable = Some(PathBuf::from(exe));
                }
            }
        }
    }
    let status = child.wait().map_err(CompileError::CargoMissing)?;
    let captured = stderr_reader
        .and_then(|h| h.join().ok())
        .unwrap_or_default();
    if !status.success() {
        if !captured.is_empty() {
            eprint!("{captured}");
        }
        return Err(CompileError::BuildFailed {
            status: status.to_string().replace("exit status: ", "status "),
            output: captured,
        });
    }
    executable.ok_or(CompileError::NoBinary(manifest))
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Ask a pipeline binary what it registers.
pub fn describe(bin: &Path) -> Result<Describe, CompileError> {
    let out = Command::new(bin)
        .arg("describe")
        .env("SPARKWING_PROTOCOL", PROTOCOL_VERSION.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CompileError::Describe(e.to_string()))?;
    if !out.status.success() {
        return Err(CompileError::Describe(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let d: Describe = serde_json::from_slice(&out.stdout)
        .map_err(|e| CompileError::Describe(format!("invalid JSON: {e}")))?;
    if d.protocol != PROTOCOL_VERSION {
        return Err(CompileError::Protocol { found: d.protocol });
    }
    Ok(d)
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Bounds of the binary cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl CacheLimits {
    pub fn from_env() -> Self {
        CacheLimits {
            max_entries: env_number(env_vars::SPARKWING_CACHE_MAX_ENTRIES, DEFAULT_MAX_ENTRIES),
            max_bytes: env_number(env_vars::SPARKWING_CACHE_MAX_BYTES, DEFAULT_MAX_BYTES),
        }
    }
}

/// Keep the cache within its bounds, least recently used first, skipping entries in use and
/// the one just published.
pub fn prune(cache: &Path, keep: &str, limits: CacheLimits) -> Vec<String> {
    let CacheLimits {
        max_entries,
        max_bytes,
    } = limits;
    let root = bin_root(cache);
    let Ok(read) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut entries: Vec<(SystemTime, u64, String)> = read
        .filter_map(Result::ok)
        .filter(|e| e.path().join("describe.json").is_file())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let used = std::fs::metadata(e.path().join("lease.lock"))
                .and_then(|m| m.modified())
                .ok()?;
            let size = std::fs::metadata(e.path().join("pipeline"))
                .map(|m| m.len())
                .unwrap_or(0);
            Some((used, size, name))
        })
        .collect();
    entries.sort();
    let mut count = entries.len();
    let mut bytes: u64 = entries.iter().map(|e| e.1).sum();
    let mut removed = Vec::new();
    for (_, size, name) in entries {
        if count <= max_entries && bytes <= max_bytes {
            break;
        }
        if name == keep {
            continue;
        }
        let dir = root.join(&name);
        let Ok(lock) = File::options().write(true).open(dir.join("lease.lock")) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // in use by a run
        }
        // Rename first so no reader sees a half-deleted entry, then delete.
        let trash = root.join(format!(".trash-{name}-{}", sdk_source::nanos()));
        if std::fs::rename(&dir, &trash).is_ok() {
            let _ = std::fs::remove_dir_all(&trash);
            count -= 1;
            bytes = bytes.saturating_sub(size);
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn tree_ignores_target_and_gitignored_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        touch(&p.join("Cargo.toml"), "x");
        touch(&p.join("src/main.rs"), "fn main(){}");
        touch(&p.join("target/debug/junk"), "j");
        touch(&p.join(".gitignore"), "*.tmp\n");
        touch(&p.join("notes.tmp"), "t");
        let names: Vec<String> = tree(p).unwrap().into_iter().map(|t| t.0).collect();
        assert_eq!(names, [".gitignore", "Cargo.toml", "src/main.rs"]);
    }

    #[test]
    fn key_changes_with_content_and_reverts_with_it() {
        let cache = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("src/main.rs"), "fn main(){}");
        let k1 = cache_key(cache.path(), dir.path()).unwrap();
        touch(&dir.path().join("src/main.rs"), "fn main(){ }");
        let k2 = cache_key(cache.path(), dir.path()).unwrap();
        touch(&dir.path().join("src/main.rs"), "fn main(){}");
        let k3 = cache_key(cache.path(), dir.path()).unwrap();
        assert_ne!(k1, k2);
        assert_eq!(k1, k3);
    }

    fn fake_entry(cache: &Path, name: &str, age_secs: u64) {
        let e = bin_root(cache).join(name);
        touch(&e.join("pipeline"), "bin");
        touch(&e.join("describe.json"), "{}");
        touch(&e.join("lease.lock"), "");
        let t = SystemTime::now() - std::time::Duration::from_secs(age_secs);
        File::options()
            .write(true)
            .open(e.join("lease.lock"))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn prune_removes_oldest_but_never_a_leased_entry() {
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        for (i, name) in ["old", "older", "oldest", "new"].iter().enumerate() {
            fake_entry(c, name, [300, 400, 500, 10][i]);
        }
        // "oldest" is in use.
        let held = File::open(bin_root(c).join("oldest/lease.lock")).unwrap();
        held.lock_shared().unwrap();
        let limits = CacheLimits {
            max_entries: 2,
            max_bytes: u64::MAX,
        };
        let removed = prune(c, "new", limits);
        assert_eq!(removed, ["older", "old"]);
        assert!(bin_root(c).join("oldest/pipeline").is_file());
        assert!(bin_root(c).join("new/pipeline").is_file());
    }
}
