//! Chunked content (`docs/api.md#caches-and-artifacts`): a cache entry or an artifact kept on a
//! cluster is a manifest — its kind and the ordered list of its chunks (sha256 and size) —
//! over chunks stored as content-addressed blobs. Pure: the manifest, its checks, what it lacks,
//! and the cluster's cache scope. The runner cuts the chunks (content-defined, so a mostly
//! unchanged tree shares most of them) and the API stores them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What the chunks, concatenated, are.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChunkedKind {
    /// One file's bytes (an artifact published from a file).
    File,
    /// A tar stream (a cache entry: its paths relative to the workspace; an artifact published
    /// from a directory: its content relative to the directory).
    Tar,
}

impl ChunkedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkedKind::File => "file",
            ChunkedKind::Tar => "tar",
        }
    }
}

/// One chunk: the sha256 (lowercase hex) and size of its bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkRef {
    pub sha256: String,
    pub size: u64,
}

/// A stored tree or file: its kind and its chunks in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkManifest {
    pub kind: ChunkedKind,
    pub chunks: Vec<ChunkRef>,
}

/// The most chunks one manifest may list (at the runner's default average of 1 MiB, 100 GiB).
pub const MAX_CHUNKS: usize = 100_000;
/// The largest chunk (the runner cuts at most 4 MiB; the API refuses larger).
pub const MAX_CHUNK_SIZE: u64 = 16 << 20;

/// Why a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkManifestError {
    #[error("chunk {index}: sha256 must be 64 lowercase hex digits, not {sha256:?}")]
    BadDigest { index: usize, sha256: String },
    #[error("chunk {index}: size {size} is not between 1 and {max} bytes")]
    BadSize { index: usize, size: u64, max: u64 },
    #[error("{count} chunks: at most {max} per manifest")]
    TooManyChunks { count: usize, max: usize },
}

/// Whether `s` is a sha256 digest as blobs are named: 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ChunkManifest {
    /// The bytes of the content.
    pub fn total_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }

    /// Each distinct chunk once, in first-use order.
    pub fn distinct(&self) -> Vec<&ChunkRef> {
        let mut seen = BTreeSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.sha256.as_str()))
            .collect()
    }

    /// Digests well formed, sizes within bounds, not too many chunks. An empty manifest is
    /// valid (an empty file, or a cache whose paths were all missing is still a tar stream of
    /// its end blocks, so never empty in practice).
    pub fn validate(&self) -> Result<(), ChunkManifestError> {
        if self.chunks.len() > MAX_CHUNKS {
            return Err(ChunkManifestError::TooManyChunks {
                count: self.chunks.len(),
                max: MAX_CHUNKS,
            });
        }
        for (index, c) in self.chunks.iter().enumerate() {
            if !is_sha256_hex(&c.sha256) {
                return Err(ChunkManifestError::BadDigest {
                    index,
                    sha256: c.sha256.clone(),
                });
            }
            if c.size == 0 || c.size > MAX_CHUNK_SIZE {
                return Err(ChunkManifestError::BadSize {
                    index,
                    size: c.size,
                    max: MAX_CHUNK_SIZE,
                });
            }
        }
        Ok(())
    }

    /// The distinct chunks `stored` does not hold, in first-use order: what must be uploaded
    /// before the manifest can be committed.
    pub fn missing(&self, stored: &BTreeSet<String>) -> Vec<String> {
        self.distinct()
            .into_iter()
            .filter(|c| !stored.contains(&c.sha256))
            .map(|c| c.sha256.clone())
            .collect()
    }
}

/// The scope a cluster run's caches are shared in, within its namespace: every run of the same
/// git repository (`git:` and its clone URL, without a trailing `/` or `.git`), else every run of the same pipeline (`pipeline:` and its name) — an uploaded
/// or local source has no repository identity of its own.
pub fn cluster_cache_scope(git_url: Option<&str>, pipeline: &str) -> String {
    match git_url {
        Some(url) => {
            let url = url.trim().trim_end_matches('/');
            let url = url.strip_suffix(".git").unwrap_or(url);
            format!("git:{url}")
        }
        None => format!("pipeline:{pipeline}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(byte: char, size: u64) -> ChunkRef {
        ChunkRef {
            sha256: byte.to_string().repeat(64),
            size,
        }
    }

    #[test]
    fn missing_lists_each_absent_chunk_once_in_order() {
        let m = ChunkManifest {
            kind: ChunkedKind::Tar,
            chunks: vec![c('a', 1), c('b', 2), c('a', 1), c('c', 3)],
        };
        assert_eq!(m.total_size(), 7);
        assert_eq!(m.distinct().len(), 3);
        let stored: BTreeSet<String> = ["b".repeat(64)].into_iter().collect();
        assert_eq!(m.missing(&stored), vec!["a".repeat(64), "c".repeat(64)]);
        assert!(m.validate().is_ok());
    }

    #[test]
    fn bad_manifests_say_which_chunk() {
        let mut m = ChunkManifest {
            kind: ChunkedKind::File,
            chunks: vec![
                c('a', 1),
                ChunkRef {
                    sha256: "XYZ".into(),
                    size: 1,
                },
            ],
        };
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "chunk 1: sha256 must be 64 lowercase hex digits, not \"XYZ\""
        );
        m.chunks[1] = c('b', 0);
        assert!(matches!(
            m.validate(),
            Err(ChunkManifestError::BadSize { index: 1, .. })
        ));
        m.chunks[1] = c('b', MAX_CHUNK_SIZE + 1);
        assert!(matches!(
            m.validate(),
            Err(ChunkManifestError::BadSize { .. })
        ));
        m.chunks = vec![c('a', 1); MAX_CHUNKS + 1];
        assert!(matches!(
            m.validate(),
            Err(ChunkManifestError::TooManyChunks { .. })
        ));
    }

    #[test]
    fn the_json_is_the_documented_one() {
        let m = ChunkManifest {
            kind: ChunkedKind::Tar,
            chunks: vec![c('a', 5)],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"kind":"tar","chunks":[{{"sha256":"{}","size":5}}]}}"#,
                "a".repeat(64)
            )
        );
        assert_eq!(serde_json::from_str::<ChunkManifest>(&text).unwrap(), m);
    }

    #[test]
    fn the_scope_is_the_repository_else_the_pipeline() {
        assert_eq!(
            cluster_cache_scope(Some("https://example.org/acme/app.git/"), "ci"),
            "git:https://example.org/acme/app"
        );
        assert_eq!(
            cluster_cache_scope(Some("https://example.org/acme/app"), "other"),
            "git:https://example.org/acme/app"
        );
        assert_eq!(cluster_cache_scope(None, "ci"), "pipeline:ci");
    }
}
