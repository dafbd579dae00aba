//! The dependency caches and artifacts of cluster runs (`docs/api.md#caches-and-artifacts`).
//! Each entry is a chunk manifest (`sparkwing_core::chunked`) kept in the metadata store over
//! chunks kept as blobs in the content store (`PUT /api/v1/blobs/{sha}`, `POST /api/v1/blobs`,
//! which a run's runner token may send too). A commit names its chunks; the ones not stored are
//! answered as `missing` and nothing is stored until they are.
//!
//! Caches are shared by the runs of one cache scope in a namespace
//! (`chunked::cluster_cache_scope`: the run's git repository, else its pipeline); the first
//! commit of a key stands; after a commit the scope's least recently used entries are removed
//! until it fits `ApiConfig::cache_max_bytes` (`cache::evictions`). Artifacts are kept per run,
//! job and name, and go with the run's records (retention).
//!
//! Memoized jobs of cluster runs (`docs/api.md#memoized-jobs`): a job's success is recorded by
//! the run's cache scope, job id and input hash, with its outputs; its artifacts are the run's,
//! so a record goes with its run (retention) and its chunks are kept while the run's artifacts
//! are. A lookup takes the newest success within the job's TTL (`sparkwing_core::memo::choose`)
//! and registers that run's artifacts of the job for the asking run; a chosen result whose
//! artifact or chunk is gone is a miss.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use sparkwing_api::wire::{
    outputs_size, ArtifactList, ArtifactPut, ArtifactView, CacheCommit, CacheEntryView, CacheList,
    CacheLookup, CachePrune, CachePruned, MemoLookup, MemoLookupRequest, MemoPut, MemoRecorded,
    StoreAnswer, StoreState, MAX_JOB_OUTPUTS_BYTES,
};
use sparkwing_core::cache::{self, CacheEntry, ResolvedKey, RestoreChoice};
use sparkwing_core::chunked::{self, ChunkManifest};
use sparkwing_core::memo::{self, MemoCandidate};
use sparkwing_core::time::Time;
use sparkwing_crds::pipeline_run::Source;
use sparkwing_state::{ArtifactRecord, BlobLockMode, CacheRecord, MemoRecord, RunKey};

use crate::api::auth::{Principal, Scope};
use crate::api::{check_job_name, check_object_name, read_json, ApiError, ApiState};

/// Chunk existence lookups at once.
const LOOKUPS: usize = 32;

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn check_run(ns: &str, name: &str) -> Result<(), ApiError> {
    check_object_name("namespace", ns)?;
    check_object_name("run name", name)
}

fn check_storage_name(what: &str, s: &str) -> Result<(), ApiError> {
    if cache::valid_name(s) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} {s:?}: 1 to 64 of letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Cache keys keep to the characters of names (`NAME-TEXT-HASH`), up to 253 of them.
fn check_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid cache key {key:?}: letters, digits, '-', '_' and '.', not starting with '.', at most 253"
        )))
    }
}

/// The cache scope of a run: its git repository, else its pipeline.
async fn scope_of(st: &ApiState, ns: &str, name: &str) -> Result<String, ApiError> {
    let run = st
        .runs
        .get(ns, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
    let git = match &run.spec.source {
        Source::Git(g) => Some(g.url.as_str()),
        _ => None,
    };
    Ok(chunked::cluster_cache_scope(git, &run.spec.pipeline))
}

fn manifest_of(text: &str, what: &str) -> Result<ChunkManifest, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::Internal(format!("the stored manifest of {what}: {e}")))
}

/// The chunks of `m` the content store lacks.
async fn missing_chunks(st: &ApiState, m: &ChunkManifest) -> Result<Vec<String>, ApiError> {
    let distinct: Vec<String> = m.distinct().into_iter().map(|c| c.sha256.clone()).collect();
    let found: Vec<(String, Option<u64>)> = futures::stream::iter(distinct)
        .map(|sha| async move {
            let size = st.store.content.blob_size(&sha).await;
            size.map(|s| (sha, s))
        })
        .buffered(LOOKUPS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let stored: BTreeSet<String> = found
        .iter()
        .filter(|(_, s)| s.is_some())
        .map(|(sha, _)| sha.clone())
        .collect();
    // A stored chunk of another size than the manifest says would only fail the restore.
    for c in &m.chunks {
        if let Some((_, Some(size))) = found.iter().find(|(s, _)| *s == c.sha256) {
            if *size != c.size {
                return Err(ApiError::BadRequest(format!(
                    "chunk {} is {} bytes, not {} as the manifest says",
                    c.sha256, size, c.size
                )));
            }
        }
    }
    Ok(m.missing(&stored))
}

fn checked(m: &ChunkManifest) -> Result<(), ApiError> {
    m.validate()
        .map_err(|e| ApiError::BadRequest(format!("manifest: {e}")))
}

fn entry_view(r: &CacheRecord) -> CacheEntryView {
    CacheEntryView {
        namespace: r.namespace.clone(),
        scope: r.scope.clone(),
        key: r.key.clone(),
        size_bytes: r.size_bytes,
        created: Time(r.created_ms),
        last_used: Time(r.last_used_ms),
    }
}

fn core_entry(r: &CacheRecord) -> CacheEntry {
    CacheEntry {
        key: r.key.clone(),
        size_bytes: r.size_bytes,
        created_ms: r.created_ms,
        last_used_ms: r.last_used_ms,
    }
}

#[derive(Deserialize, Debug)]
pub struct LookupQuery {
    #[serde(default)]
    fallback: Option<String>,
}

/// The cache entries of a run's scope.
async fn scope_entries(st: &ApiState, ns: &str, scope: &str) -> Result<Vec<CacheRecord>, ApiError> {
    Ok(st
        .store
        .meta
        .list_cache_entries(Some(ns))
        .await?
        .into_iter()
        .filter(|e| e.scope == scope)
        .collect())
}

/// `GET /api/v1/runs/{ns}/{name}/caches` (the run's runner): the entries of the run's cache
/// scope.
pub async fn run_caches(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<CacheList>, ApiError> {
    check_run(&ns, &name)?;
    p.require(Scope::run(&ns, &name))?;
    let scope = scope_of(&st, &ns, &name).await?;
    let entries = scope_entries(&st, &ns, &scope).await?;
    Ok(Json(CacheList {
        entries: entries.iter().map(entry_view).collect(),
    }))
}

/// `GET /api/v1/runs/{ns}/{name}/caches/{key}[?fallback=P]` (the run's runner): the entry a
/// restore takes in the run's cache scope — the key, else the newest of the prefix — marked
/// used.
pub async fn lookup(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, key)): Path<(String, String, String)>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Json<CacheLookup>, ApiError> {
    check_run(&ns, &name)?;
    p.require(Scope::run(&ns, &name))?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    check_key(&key)?;
    let scope = scope_of(&st, &ns, &name).await?;
    let in_scope = scope_entries(&st, &ns, &scope).await?;
    let entries: Vec<CacheEntry> = in_scope.iter().map(core_entry).collect();
    let choice = cache::choose_restore(
        &ResolvedKey {
            key: key.clone(),
            fallback_prefix: q.fallback.filter(|f| !f.is_empty()),
        },
        &entries,
    );
    let found = match &choice {
        RestoreChoice::Exact(k) | RestoreChoice::Fallback(k) => {
            in_scope.iter().find(|e| &e.key == k)
        }
        RestoreChoice::Miss => None,
    };
    let Some(found) = found else {
        return Ok(Json(CacheLookup {
            outcome: "miss".into(),
            key: None,
            manifest: None,
            size_bytes: 0,
        }));
    };
    st.store
        .meta
        .touch_cache_entry(&ns, &scope, &found.key, now_ms())
        .await?;
    Ok(Json(CacheLookup {
        outcome: choice.outcome().into(),
        key: Some(found.key.clone()),
        manifest: Some(manifest_of(
            &found.manifest,
            &format!("cache entry {}", found.key),
        )?),
        size_bytes: found.size_bytes,
    }))
}

/// `POST /api/v1/runs/{ns}/{name}/caches/{key}` (the run's runner) with `{"manifest"}`: commit
/// the entry once its chunks are stored. The first commit of a key stands; an entry over the
/// cap is a 413.
pub async fn commit(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, key)): Path<(String, String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<StoreAnswer>), ApiError> {
    check_run(&ns, &name)?;
    p.require(Scope::run(&ns, &name))?;
    check_key(&key)?;
    let req: CacheCommit = read_json(body, st.config.limits.manifest_body, "cache commit").await?;
    checked(&req.manifest)?;
    let size = req.manifest.total_size();
    let cap = st.config.cache_max_bytes;
    if size > cap {
        return Err(ApiError::PayloadTooLarge {
            what: "cache entry (the cache cap of a namespace's cache scope)",
            limit: cap,
        });
    }
    let scope = scope_of(&st, &ns, &name).await?;
    if st
        .store
        .meta
        .cache_entry(&ns, &scope, &key)
        .await?
        .is_some()
    {
        return Ok((StatusCode::OK, Json(already(size))));
    }
    // From finding chunks stored to recording the entry that names them, collection must not
    // delete them (`sparkwing_state::blob_lock`).
    let reuse = st.store.meta.lock_blobs(BlobLockMode::Reuse).await?;
    let missing = missing_chunks(&st, &req.manifest).await?;
    if !missing.is_empty() {
        return Ok((
            StatusCode::OK,
            Json(StoreAnswer {
                state: StoreState::Missing,
                missing,
                size_bytes: size,
            }),
        ));
    }
    let now = now_ms();
    let record = CacheRecord {
        namespace: ns.clone(),
        scope: scope.clone(),
        key: key.clone(),
        manifest: serde_json::to_string(&req.manifest)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        size_bytes: size,
        created_ms: now,
        last_used_ms: now,
    };
    let committed = st.store.meta.commit_cache_entry(&record).await?;
    drop(reuse);
    if !committed {
        return Ok((StatusCode::OK, Json(already(size))));
    }
    // The scope stays under its cap: least recently used first, never the entry just saved.
    let in_scope: Vec<CacheEntry> = scope_entries(&st, &ns, &scope)
        .await?
        .iter()
        .map(core_entry)
        .collect();
    for gone in cache::evictions(&in_scope, cap, Some(&key)) {
        st.store.meta.delete_cache_entry(&ns, &scope, &gone).await?;
        tracing::info!(namespace = %ns, scope = %scope, key = %gone, "cache entry evicted (least recently used, over the cap)");
    }
    Ok((
        StatusCode::CREATED,
        Json(StoreAnswer {
            state: StoreState::Saved,
            missing: Vec::new(),
            size_bytes: size,
        }),
    ))
}

fn already(size: u64) -> StoreAnswer {
    StoreAnswer {
        state: StoreState::AlreadySaved,
        missing: Vec::new(),
        size_bytes: size,
    }
}

#[derive(Deserialize, Debug)]
pub struct ListCachesQuery {
    #[serde(default)]
    namespace: Option<String>,
}

/// `GET /api/v1/caches[?namespace=NS]` (`runs:read`): every entry, by namespace, scope, key.
pub async fn list_caches(
    State(st): State<ApiState>,
    p: Principal,
    query: Result<Query<ListCachesQuery>, QueryRejection>,
) -> Result<Json<CacheList>, ApiError> {
    p.require(Scope::RunsRead)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(ns) = &q.namespace {
        check_object_name("namespace", ns)?;
    }
    let entries = st
        .store
        .meta
        .list_cache_entries(q.namespace.as_deref())
        .await?;
    Ok(Json(CacheList {
        entries: entries.iter().map(entry_view).collect(),
    }))
}

/// `POST /api/v1/caches/prune` (`admin`): remove one key, every entry, or those unused for a
/// while; the entries removed. A key that names no entry is a 404.
pub async fn prune_caches(
    State(st): State<ApiState>,
    p: Principal,
    body: Body,
) -> Result<Json<CachePruned>, ApiError> {
    p.require(Scope::Admin)?;
    let req: CachePrune = read_json(body, st.config.limits.json_body, "prune request").await?;
    if let Some(ns) = &req.namespace {
        check_object_name("namespace", ns)?;
    }
    let entries = st
        .store
        .meta
        .list_cache_entries(req.namespace.as_deref())
        .await?;
    let doomed: Vec<&CacheRecord> = match (&req.key, req.all, req.unused_for_secs) {
        (Some(key), false, None) => {
            check_key(key)?;
            let matching: Vec<&CacheRecord> = entries
                .iter()
                .filter(|e| &e.key == key && req.scope.as_ref().is_none_or(|s| *s == e.scope))
                .collect();
            if matching.is_empty() {
                let where_ = req
                    .namespace
                    .as_deref()
                    .map_or(String::new(), |ns| format!(" in namespace {ns}"));
                return Err(ApiError::NotFound(format!(
                    "cache entry {key} not found{where_} (`sparkwing cache list --profile P` lists them)"
                )));
            }
            matching
        }
        (None, all, unused) if all != unused.is_some() => {
            let since = unused.map(|s| now_ms().saturating_sub((s as i64).saturating_mul(1000)));
            entries
                .iter()
                .filter(|e| req.scope.as_ref().is_none_or(|s| *s == e.scope))
                .filter(|e| !cache::prune_choice(&[core_entry(e)], all, since).is_empty())
                .collect()
        }
        _ => {
            return Err(ApiError::BadRequest(
                "name what to prune: exactly one of `key`, `all: true` or `unusedForSecs`".into(),
            ))
        }
    };
    let mut removed = Vec::new();
    for e in doomed {
        if st
            .store
            .meta
            .delete_cache_entry(&e.namespace, &e.scope, &e.key)
            .await?
        {
            removed.push(entry_view(e));
        }
    }
    Ok(Json(CachePruned { removed }))
}

fn artifact_view(a: &ArtifactRecord, with_manifest: bool) -> Result<ArtifactView, ApiError> {
    let m = manifest_of(
        &a.manifest,
        &format!("artifact {} of job {}", a.name, a.job),
    )?;
    Ok(ArtifactView {
        job: a.job.clone(),
        name: a.name.clone(),
        kind: m.kind,
        size_bytes: a.size_bytes,
        files: a.files,
        created: Time(a.created_ms),
        manifest: with_manifest.then_some(m),
    })
}

/// `PUT /api/v1/runs/{ns}/{name}/artifacts/{job}/{artifact}` (the run's runner) with
/// `{"manifest", "files"}`: publish once its chunks are stored; a later publish of the same
/// job and name (a retried attempt's) replaces it.
pub async fn put_artifact(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, job, artifact)): Path<(String, String, String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<StoreAnswer>), ApiError> {
    check_run(&ns, &name)?;
    p.require(Scope::run(&ns, &name))?;
    check_job_name(&job)?;
    check_storage_name("artifact name", &artifact)?;
    let req: ArtifactPut =
        read_json(body, st.config.limits.manifest_body, "artifact publish").await?;
    checked(&req.manifest)?;
    let size = req.manifest.total_size();
    // As for a cache commit: the chunks found stored stay until the record names them.
    let _reuse = st.store.meta.lock_blobs(BlobLockMode::Reuse).await?;
    let missing = missing_chunks(&st, &req.manifest).await?;
    if !missing.is_empty() {
        return Ok((
            StatusCode::OK,
            Json(StoreAnswer {
                state: StoreState::Missing,
                missing,
                size_bytes: size,
            }),
        ));
    }
    st.store
        .meta
        .put_artifact(&ArtifactRecord {
            run: RunKey::new(&ns, &name),
            job,
            name: artifact,
            manifest: serde_json::to_string(&req.manifest)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            size_bytes: req.size_bytes,
            files: req.files,
            created_ms: now_ms(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(StoreAnswer {
            state: StoreState::Saved,
            missing: Vec::new(),
            size_bytes: size,
        }),
    ))
}

/// The artifact `artifact` of `job`, or the documented 404.
pub async fn find_artifact(
    st: &ApiState,
    ns: &str,
    name: &str,
    job: &str,
    artifact: &str,
) -> Result<ArtifactRecord, ApiError> {
    st.store
        .meta
        .artifact(&RunKey::new(ns, name), job, artifact)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("artifact {artifact} of job {job} not found")))
}

/// `GET /api/v1/runs/{ns}/{name}/artifacts/{job}/{artifact}` (`runs:read` or the run's runner):
/// the artifact with its manifest.
pub async fn get_artifact(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, job, artifact)): Path<(String, String, String, String)>,
) -> Result<Json<ArtifactView>, ApiError> {
    check_run(&ns, &name)?;
    p.require_read_run(&ns, &name)?;
    let a = find_artifact(&st, &ns, &name, &job, &artifact).await?;
    Ok(Json(artifact_view(&a, true)?))
}

/// A run's artifacts (what the API's list and the dashboard show).
pub async fn artifacts_of(
    st: &ApiState,
    ns: &str,
    name: &str,
) -> Result<Vec<ArtifactView>, ApiError> {
    st.store
        .meta
        .list_artifacts(&RunKey::new(ns, name))
        .await?
        .iter()
        .map(|a| artifact_view(a, false))
        .collect()
}

/// `GET /api/v1/runs/{ns}/{name}/artifacts` (`runs:read` or the run's runner).
pub async fn list_artifacts(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<ArtifactList>, ApiError> {
    check_run(&ns, &name)?;
    p.require_read_run(&ns, &name)?;
    Ok(Json(ArtifactList {
        artifacts: artifacts_of(&st, &ns, &name).await?,
    }))
}

fn check_memo_hash(hash: &str) -> Result<(), ApiError> {
    if chunked::is_sha256_hex(hash) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid memo input hash {hash:?}: 64 lowercase hex digits (sha256 of the job's inputs)"
        )))
    }
}

/// `PUT /api/v1/runs/{ns}/{name}/memo/{job}` (the run's runner) with `{"hash", "outputs"}`:
/// record that the run's memoized job succeeded with these inputs, for later runs of its cache
/// scope. Recording the same run's job again replaces its record.
pub async fn memo_record(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, job)): Path<(String, String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<MemoRecorded>), ApiError> {
    check_run(&ns, &name)?;
    p.require(Scope::run(&ns, &name))?;
    check_job_name(&job)?;
    let req: MemoPut = read_json(body, st.config.limits.json_body, "memo record").await?;
    check_memo_hash(&req.hash)?;
    let size = outputs_size(req.outputs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if size > MAX_JOB_OUTPUTS_BYTES {
        return Err(ApiError::TooLarge(format!(
            "job {job}: its outputs hold {size} bytes (keys and values), over the limit of {MAX_JOB_OUTPUTS_BYTES} bytes per job; set fewer or smaller outputs"
        )));
    }
    let scope = scope_of(&st, &ns, &name).await?;
    let now = now_ms();
    st.store
        .meta
        .record_memo(&MemoRecord {
            namespace: ns.clone(),
            scope: scope.clone(),
            job,
            hash: req.hash,
            run: name,
            outputs: serde_json::to_string(&req.outputs)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            finished_ms: now,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(MemoRecorded {
            scope,
            finished: Time(now),
        }),
    ))
}

/// `POST /api/v1/runs/{ns}/{name}/memo/{job}/lookup` (the run's runner) with `{"hash", "ttlMs",
/// "artifacts"}`: the newest success of the job with this input hash in the run's cache scope
/// that finished within the TTL. A hit needs each named artifact of the job in that run, with
/// every chunk stored; they are then registered for this run (no chunk is copied). Else a miss.
pub async fn memo_lookup(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, job)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<MemoLookup>, ApiError> {
    check_run(&ns, &name)?;
    p.require(Scope::run(&ns, &name))?;
    check_job_name(&job)?;
    let req: MemoLookupRequest = read_json(body, st.config.limits.json_body, "memo lookup").await?;
    check_memo_hash(&req.hash)?;
    for a in &req.artifacts {
        check_storage_name("artifact name", a)?;
    }
    let scope = scope_of(&st, &ns, &name).await?;
    let found = st
        .store
        .meta
        .memo_results(&ns, &scope, &job, &req.hash)
        .await?;
    let candidates: Vec<MemoCandidate> = found
        .iter()
        .filter(|r| r.run != name)
        .map(|r| MemoCandidate {
            run_id: r.run.clone(),
            finished_at_ms: r.finished_ms,
        })
        .collect();
    let Some(chosen) = memo::choose(&candidates, now_ms(), req.ttl_ms) else {
        return Ok(Json(MemoLookup::miss()));
    };
    let Some(record) = found.iter().find(|r| r.run == chosen.run_id) else {
        return Ok(Json(MemoLookup::miss()));
    };
    let outputs: BTreeMap<String, String> = serde_json::from_str(&record.outputs).map_err(|e| {
        ApiError::Internal(format!(
            "the stored outputs of job {job} of run {}: {e}",
            record.run
        ))
    })?;
    // Every artifact must be there, whole, before any is registered; from finding its chunks
    // stored to registering it, collection must not delete them (`sparkwing_state::blob_lock`).
    let reuse = st.store.meta.lock_blobs(BlobLockMode::Reuse).await?;
    let from = RunKey::new(&ns, &record.run);
    let mut taken = Vec::new();
    for a in &req.artifacts {
        let Some(art) = st.store.meta.artifact(&from, &job, a).await? else {
            return Ok(Json(MemoLookup::miss()));
        };
        let m = manifest_of(&art.manifest, &format!("artifact {a} of job {job}"))?;
        if !missing_chunks(&st, &m).await?.is_empty() {
            return Ok(Json(MemoLookup::miss()));
        }
        taken.push(art);
    }
    let mut artifacts = Vec::new();
    for art in taken {
        let mine = ArtifactRecord {
            run: RunKey::new(&ns, &name),
            created_ms: now_ms(),
            ..art
        };
        st.store.meta.put_artifact(&mine).await?;
        artifacts.push(artifact_view(&mine, false)?);
    }
    drop(reuse);
    Ok(Json(MemoLookup {
        outcome: "hit".into(),
        from_run: Some(record.run.clone()),
        finished: Some(Time(record.finished_ms)),
        outputs,
        artifacts,
    }))
}

/// `GET /api/v1/blobs/{sha}` (`runs:read` or any run's runner): a stored blob's bytes, streamed.
/// Blobs are named by the sha256 of their content: only who has the content, or a manifest
/// naming it, can name one.
pub async fn get_blob(
    State(st): State<ApiState>,
    p: Principal,
    Path(sha): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    if p.runner_of().is_none() {
        p.require(Scope::RunsRead)?;
    }
    if !chunked::is_sha256_hex(&sha) {
        return Err(ApiError::BadRequest(
            "the blob address must be 64 lowercase hex digits (sha256)".into(),
        ));
    }
    match st.store.content.get_blob(&sha).await? {
        Some(stream) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from_stream(stream),
        )),
        None => Err(ApiError::NotFound(format!("blob {sha} is not stored"))),
    }
}

/// The whole content of a stored artifact as one stream (its chunks in order): a file's bytes,
/// or a directory's tar.
pub fn artifact_body(st: &ApiState, m: ChunkManifest) -> Body {
    let content = st.store.content.clone();
    let chunks = m.chunks.into_iter().map(|c| c.sha256);
    let stream = futures::stream::iter(chunks)
        .then(move |sha| {
            let content = content.clone();
            async move {
                match content.get_blob(&sha).await {
                    Ok(Some(s)) => s,
                    Ok(None) => futures::stream::once(async move {
                        Err(std::io::Error::other(format!("chunk {sha} is not stored")))
                    })
                    .boxed(),
                    Err(e) => {
                        futures::stream::once(async move { Err(std::io::Error::other(e)) }).boxed()
                    }
                }
            }
        })
        .flatten();
    Body::from_stream(stream)
}
