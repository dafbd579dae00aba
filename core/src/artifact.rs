//! Artifacts between jobs (`docs/authoring.md#artifacts`): what a job publishes and consumes,
//! and the plan-time checks of both.

use serde::{Deserialize, Serialize};

/// A named file or directory a job publishes when it succeeds; `path` is relative to its
/// working directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSpec {
    pub name: String,
    pub path: String,
}

/// An artifact of another job (one in `needs`) that a job gets in its working directory before
/// it starts, at the path its producer published it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumeSpec {
    pub job: String,
    pub name: String,
}

/// The default cap on one artifact's size (1 GiB); `SPARKWING_ARTIFACT_MAX_BYTES` changes it.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Whether an artifact of `size` bytes may be published under `cap`.
pub fn within_cap(size: u64, cap: u64) -> bool {
    size <= cap
}

/// Sizes as people read them: `512 B`, `1.5 KiB`, `3.0 MiB`, ...
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}
