//! The SDK source embedded in this binary, written out for cargo to build users' pipelines with.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The SDK version users write in `.sparkwing/Cargo.toml` (`sparkwing = "<version>"`).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Hash of the embedded sources: part of the binary cache key.
pub fn source_hash() -> String {
    let mut h = Sha256::new();
    for (path, text) in SDK_FILES {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..8])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn manifest() -> String {
    format!(
        "# Written by sparkwing {SDK_VERSION}: the SDK its engine speaks. Do not edit.\n\
         [package]\nname = \"sparkwing\"\nversion = \"{SDK_VERSION}\"\nedition = \"2021\"\n\
         license = \"Apache-2.0\"\n\n[lib]\npath = \"src/lib.rs\"\n"
    )
}

/// Make sure the SDK source is on disk under `cache`; returns its directory.
pub fn materialize(cache: &Path) -> std::io::Result<PathBuf> {
    let dir = cache
        .join("sdk")
        .join(format!("{SDK_VERSION}-{}", source_hash()));
    if dir.join("Cargo.toml").is_file() {
        return Ok(dir);
    }
    let parent = cache.join("sdk");
    std::fs::create_dir_all(&parent)?;
    let staging = parent.join(format!(".staging-{}-{}", std::process::id(), nanos()));
    for (path, text) in SDK_FILES {
        let p = staging.join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, text)?;
    }
    std::fs::write(staging.join("Cargo.toml"), manifest())?;
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        // Another process published the same SDK first; theirs is identical.
        Err(_) if dir.join("Cargo.toml").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => Err(e),
    }
}

pub fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
