//! The API's state, in the API's terms: the `sparkwing-state` stores (metadata: tokens, the run
//! index, job states, webhook deliveries, the log index; content: blobs, manifests, logs,
//! archives) and what the handlers ask of them — archive a finished run, read an upload's
//! manifest, find its missing blobs, collect garbage. No state of its own: every replica of the
//! API sees the same stores (`docs/state.md`). The token table is `tokens.rs`'s (`impl Store`
//! there).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use sparkwing_crds::pipeline_run::PipelineRun;
use sparkwing_state::{BlobLockMode, ContentStore, MetadataStore, RunKey, RunSummary, StateError};

use sparkwing_core::upload_manifest::Manifest;

pub use sparkwing_api::wire::GcReport;

/// A finished run kept after its PipelineRun is gone: the archive's content.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedRun {
    pub archived_at: String,
    pub run: PipelineRun,
}

/// The metadata and content stores the API runs on. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub meta: Arc<dyn MetadataStore>,
    pub content: Arc<dyn ContentStore>,
}

/// Blob sizes looked up at once when checking a manifest.
const BLOB_LOOKUPS: usize = 32;

/// A failure to read back what the API wrote itself.
fn corrupt(location: String, e: serde_json::Error) -> StateError {
    StateError::Corrupt {
        location,
        detail: e.to_string(),
    }
}

/// `run`'s key in the stores.
pub fn run_key(run: &PipelineRun) -> RunKey {
    RunKey::new(run.namespace().unwrap_or_default(), run.name_any())
}

/// What the run index keeps of an archived run for the list: names, creation time,
/// annotations, pipeline, trigger and phase — not its args, secrets or job states.
fn archive_summary(run: &PipelineRun) -> PipelineRun {
    let mut s = run.clone();
    s.metadata.managed_fields = None;
    s.metadata.labels = None;
    s.spec.args.clear();
    s.spec.secrets.clear();
    s.status = run
        .status
        .as_ref()
        .map(|st| sparkwing_core::reconcile::status::RunStatus {
            phase: st.phase,
            ..Default::default()
        });
    s
}

/// Creation time of a run in Unix ms (0 when unset: such a run lists last).
pub fn created_ms(run: &PipelineRun) -> i64 {
    run.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_millisecond())
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

impl Store {
    pub fn new(meta: Arc<dyn MetadataStore>, content: Arc<dyn ContentStore>) -> Self {
        Store { meta, content }
    }

    /// Open the stores the URLs name (`docs/state.md`, "URLs").
    pub async fn open(metadata: &str, objects: &str) -> Result<Self, StateError> {
        Ok(Store {
            meta: sparkwing_state::open_metadata(metadata).await?,
            content: sparkwing_state::open_content(objects).await?,
        })
    }

    /// Both stores answer (readiness): the database a query, the content store a lookup.
    pub async fn check(&self) -> Result<(), StateError> {
        self.meta.ping().await?;
        self.content.blob_exists(&"0".repeat(64)).await.map(drop)
    }

    // ---- the archive ----

    /// Archive `run` as it is now: its whole resource in the content store, its summary in the
    /// run index (what lists show).
    pub async fn archive(&self, run: &PipelineRun) -> Result<(), StateError> {
        self.archive_record(&ArchivedRun {
            archived_at: k8s_openapi::jiff::Timestamp::now().to_string(),
            run: run.clone(),
        })
        .await
    }

    /// Keep an archive record: content first, so an index entry always has its archive.
    pub async fn archive_record(&self, record: &ArchivedRun) -> Result<(), StateError> {
        let run = &record.run;
        let key = run_key(run);
        let bytes = serde_json::to_vec(record)
            .map_err(|e| corrupt(format!("archive of {}/{}", key.namespace, key.name), e))?;
        self.content.put_archive(&key, Bytes::from(bytes)).await?;
        let phase = run.status.as_ref().map(|s| s.phase).unwrap_or_default();
        let summary = RunSummary {
            key: key.clone(),
            pipeline: run.spec.pipeline.clone(),
            phase: phase.phase_str().to_string(),
            created_ms: created_ms(run),
            finished_ms: phase.is_terminal().then(|| {
                record
                    .archived_at
                    .parse::<k8s_openapi::jiff::Timestamp>()
                    .map_or_else(|_| now_ms(), |t| t.as_millisecond())
            }),
            view: sparkwing_state::ViewJson::new(&archive_summary(run))
                .map_err(|e| corrupt(format!("summary of {}/{}", key.namespace, key.name), e))?,
        };
        self.meta.upsert_run(&summary).await
    }

    /// The archived summary of `ns/name` (`None`: not archived).
    pub async fn archived(&self, ns: &str, name: &str) -> Result<Option<RunSummary>, StateError> {
        self.meta.get_run(&RunKey::new(ns, name)).await
    }

    /// The run kept in an index summary.
    pub fn summary_run(summary: &RunSummary) -> Result<PipelineRun, StateError> {
        summary.view.parse().map_err(|e| {
            corrupt(
                format!(
                    "run index entry {}/{}",
                    summary.key.namespace, summary.key.name
                ),
                e,
            )
        })
    }

    pub async fn read_archive(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<ArchivedRun>, StateError> {
        let key = RunKey::new(ns, name);
        match self.content.get_archive(&key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| corrupt(format!("archive of {ns}/{name}"), e)),
        }
    }

    // ---- uploads ----

    /// Store a canonical manifest under its id. Rewritten each time, which also renews its age
    /// for garbage collection.
    pub async fn put_upload(&self, id: &str, manifest: &Manifest) -> Result<(), StateError> {
        let bytes =
            serde_json::to_vec(manifest).map_err(|e| corrupt(format!("manifest {id}"), e))?;
        self.content.put_manifest(id, Bytes::from(bytes)).await
    }

    pub async fn get_upload(&self, id: &str) -> Result<Option<Manifest>, StateError> {
        if !sparkwing_core::upload_manifest::is_sha256_hex(id) {
            return Ok(None);
        }
        match self.content.get_manifest(id).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| corrupt(format!("manifest {id}"), e)),
        }
    }

    /// The stored size of every blob `manifest` names (`None`: not stored), looked up
    /// concurrently (one round trip each on an object store).
    pub async fn blob_sizes(
        &self,
        manifest: &Manifest,
    ) -> Result<BTreeMap<String, Option<u64>>, StateError> {
        let shas: Vec<String> = manifest.blobs().into_iter().map(String::from).collect();
        let content = self.content.clone();
        let sizes: Vec<Result<(String, Option<u64>), StateError>> = futures::stream::iter(shas)
            .map(|sha| {
                let content = content.clone();
                async move { content.blob_size(&sha).await.map(|s| (sha, s)) }
            })
            .buffered(BLOB_LOOKUPS)
            .collect()
            .await;
        sizes.into_iter().collect()
    }

    /// `manifest`'s check against the stored blobs: the first file whose stored blob's size is
    /// not the size it declares — `(path, sha256, declared, stored)` — else the blobs not stored
    /// yet (sorted, once each).
    pub async fn check_upload(&self, manifest: &Manifest) -> Result<UploadCheck, StateError> {
        let sizes = self.blob_sizes(manifest).await?;
        let mismatch = manifest.files.iter().find_map(|e| {
            let sha = e.sha256.as_deref()?;
            let stored = (*sizes.get(sha)?)?;
            (stored != e.size).then(|| (e.path.clone(), sha.to_string(), e.size, stored))
        });
        if let Some(m) = mismatch {
            return Ok(UploadCheck::SizeMismatch(m));
        }
        Ok(UploadCheck::Missing(
            sizes
                .into_iter()
                .filter(|(_, s)| s.is_none())
                .map(|(sha, _)| sha)
                .collect(),
        ))
    }

    // ---- garbage collection ----

    /// Delete manifests that are neither in `keep` nor younger than `grace`, then blobs that no
    /// remaining manifest (upload, cache entry or artifact) names and that are older than `grace` (a blob sent just before its
    /// manifest, or while a GC runs, is safe).
    pub async fn gc(
        &self,
        keep: &BTreeSet<String>,
        grace: Duration,
        now_ms: i64,
    ) -> Result<GcReport, StateError> {
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let young = |modified_ms: i64| now_ms.saturating_sub(modified_ms) < grace_ms;
        let mut report = GcReport::default();
        // Held from the listings to the deletions: a writer that found a blob stored records
        // its manifest before the listings or checks after the deletions
        // (`sparkwing_state::blob_lock`).
        let _sweep = self.meta.lock_blobs(BlobLockMode::Sweep).await?;
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        for m in self.content.list_manifests().await? {
            if keep.contains(&m.name) || young(m.modified_ms) {
                if let Some(manifest) = self.get_upload(&m.name).await? {
                    referenced.extend(manifest.blobs().into_iter().map(String::from));
                }
                report.uploads_kept += 1;
            } else {
                self.content.delete_manifest(&m.name).await?;
                report.uploads_deleted += 1;
            }
        }
        // The chunks of every cache entry and artifact (a chunk sent for a commit that has not
        // come yet is young, and kept by the grace).
        for text in self.meta.chunk_manifests().await? {
            match serde_json::from_str::<sparkwing_core::chunked::ChunkManifest>(&text) {
                Ok(m) => referenced.extend(m.chunks.into_iter().map(|c| c.sha256)),
                Err(e) => {
                    // Never delete what an unreadable manifest may name.
                    return Err(corrupt("a cache or artifact manifest".into(), e));
                }
            }
        }
        for b in self.content.list_blobs().await? {
            if referenced.contains(&b.name) || young(b.modified_ms) {
                report.blobs_kept += 1;
                continue;
            }
            if self.content.delete_blob(&b.name).await? {
                report.blobs_deleted += 1;
                report.bytes_freed += b.size;
            }
        }
        Ok(report)
    }
}

/// What [`Store::check_upload`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadCheck {
    /// `(path, sha256, declared, stored)` of a file whose blob holds another size.
    SizeMismatch((String, String, u64, u64)),
    /// The blobs not stored yet.
    Missing(Vec<String>),
}
