//! The Rust toolchain fingerprint (`rustc -vV`), remembered between runs.
//!
//! Running `rustc -vV` costs ~25 ms, more than the rest of a warm `sparkwing run`. So the output is
//! stored under a stamp made from everything that can change which toolchain cargo picks: the
//! rustc on PATH (its size and mtime), rustup's settings and installed toolchains, the relevant
//! environment variables, and `rust-toolchain` files above the project.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn stat_line(p: &Path) -> String {
    match std::fs::metadata(p) {
        Ok(m) => format!(
            "{}:{}:{:?}",
            p.display(),
            m.len(),
            m.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        ),
        Err(_) => format!("{}:absent", p.display()),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn stamp(project_dir: &Path) -> String {
    let mut parts = Vec::new();
    for var in [
        "RUSTC",
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_HOME",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_HOME",
    ] {
        parts.push(format!("{var}={:?}", std::env::var_os(var)));
    }
    let rustc = std::env::var_os("RUSTC")
        .map(PathBuf::from)
        .or_else(|| which("rustc"));
    if let Some(r) = &rustc {
        parts.push(stat_line(r));
    }
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")));
    if let Some(h) = rustup_home {
        parts.push(stat_line(&h.join("settings.toml")));
        parts.push(stat_line(&h.join("toolchains")));
    }
    let mut cur = Some(project_dir);
    while let Some(d) = cur {
        for f in ["rust-toolchain", "rust-toolchain.toml"] {
            if let Ok(t) = std::fs::read_to_string(d.join(f)) {
                parts.push(format!("{}={t}", d.join(f).display()));
            }
        }
        cur = d.parent();
    }
    parts.join("\n")
}

/// The host triple of a `rustc -vV` output (its `host:` line).
pub fn host(fingerprint: &str) -> Option<&str> {
    fingerprint
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::trim)
}

/// `rustc -vV` as cargo would see it from `project_dir`; cached under `cache/toolchain/`.
pub fn fingerprint(cache: &Path, project_dir: &Path) -> std::io::Result<String> {
    let stamp = stamp(project_dir);
    let key = super::sdk_source::hex(&Sha256::digest(stamp.as_bytes())[..12]);
    let memo = cache.join("toolchain").join(format!("{key}.txt"));
    if let Ok(t) = std::fs::read_to_string(&memo) {
        return Ok(t);
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .current_dir(project_dir)
        .output()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot run `{} -vV` ({e}); sparkwing compiles .sparkwing/ with cargo: install Rust (https://rustup.rs)",
                    rustc.to_string_lossy()
                ),
            )
        })?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "`rustc -vV` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(d) = memo.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = memo.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, &memo)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_is_the_host_line() {
        let vv = "rustc 1.95.0 (59807616e 2026-03-21)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(super::host(vv), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(super::host("rustc 1.95.0\n"), None);
    }
}
