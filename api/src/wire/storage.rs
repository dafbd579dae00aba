//! `/api/v1/caches`, `/api/v1/runs/{ns}/{name}/caches` and `.../artifacts`: the dependency
//! caches and artifacts of cluster runs, each a chunk manifest (`sparkwing_core::chunked`) over
//! blobs of the content store.

use serde::{Deserialize, Serialize};
use sparkwing_core::chunked::{ChunkManifest, ChunkedKind};
use sparkwing_core::time::Time;
use std::collections::BTreeMap;

/// `GET /api/v1/runs/{ns}/{name}/caches?key=K[&fallback=P]`: the entry a restore takes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheLookup {
    /// `hit` (the key), `fallback` (the newest entry whose key starts with the prefix) or `miss`.
    pub outcome: String,
    /// The key of the entry found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ChunkManifest>,
    #[serde(default, skip_serializing_if = "crate::wire::is_zero")]
    pub size_bytes: u64,
}

/// `POST /api/v1/runs/{ns}/{name}/caches/{key}`'s body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheCommit {
    pub manifest: ChunkManifest,
}

/// `PUT /api/v1/runs/{ns}/{name}/artifacts/{job}/{artifact}`'s body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactPut {
    pub manifest: ChunkManifest,
    /// Bytes of its files (a directory's tar stream, the manifest's content, is a little more).
    pub size_bytes: u64,
    /// Files in the artifact (1 for a file).
    pub files: u64,
}

/// What a cache commit or an artifact publish did: `saved` (stored now), `alreadySaved` (a
/// cache key committed first by another save: kept, this one dropped) or `missing` (nothing
/// stored: upload the `missing` chunks, then send the same request again).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum StoreState {
    Saved,
    AlreadySaved,
    Missing,
}

/// The answer of a cache commit or an artifact publish.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreAnswer {
    pub state: StoreState,
    /// With `missing`: the chunks the server lacks, by sha256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    pub size_bytes: u64,
}

/// A cache entry as `GET /api/v1/caches` lists it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntryView {
    pub namespace: String,
    /// The runs sharing it: `git:URL` or `pipeline:NAME`.
    pub scope: String,
    pub key: String,
    pub size_bytes: u64,
    pub created: Time,
    pub last_used: Time,
}

/// `GET /api/v1/caches`' answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheList {
    pub entries: Vec<CacheEntryView>,
}

/// `POST /api/v1/caches/prune`'s body: which entries to remove. `key` (with `namespace`, and
/// `scope` when the key is in more than one) names one; else `all`, or those unused for
/// `unusedForSecs`, of `namespace` (every namespace when unset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CachePrune {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_for_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "crate::wire::is_false")]
    pub all: bool,
}

/// `POST /api/v1/caches/prune`'s answer: the entries removed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CachePruned {
    pub removed: Vec<CacheEntryView>,
}

/// An artifact of a run's job (`GET .../artifacts/{job}/{artifact}` adds its manifest).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactView {
    pub job: String,
    pub name: String,
    pub kind: ChunkedKind,
    pub size_bytes: u64,
    pub files: u64,
    pub created: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ChunkManifest>,
}

/// `GET /api/v1/runs/{ns}/{name}/artifacts`' answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactList {
    pub artifacts: Vec<ArtifactView>,
}

/// `PUT /api/v1/runs/{ns}/{name}/memo/{job}`'s body: a memoized job of the run succeeded with
/// input `hash` (`sparkwing_core::memo::memo_hash`) and these outputs (masked).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoPut {
    pub hash: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// `PUT .../memo/{job}`'s answer: the cache scope the result is shared in and when it counts
/// from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemoRecorded {
    pub scope: String,
    pub finished: Time,
}

/// `POST /api/v1/runs/{ns}/{name}/memo/{job}/lookup`'s body: the job's input hash, its TTL and
/// the artifacts it publishes (a hit needs every one of them).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoLookupRequest {
    pub hash: String,
    pub ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

/// `POST .../memo/{job}/lookup`'s answer: `hit` (the result of run `fromRun`, which finished at
/// `finished`: its outputs, and its artifacts, now registered for this run too) or `miss`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemoLookup {
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactView>,
}

impl MemoLookup {
    pub fn miss() -> MemoLookup {
        MemoLookup {
            outcome: "miss".into(),
            from_run: None,
            finished: None,
            outputs: BTreeMap::new(),
            artifacts: Vec::new(),
        }
    }
}
