//! Trigger, list, read, cancel and finish runs; job states from runners.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use sparkwing_core::reconcile::run as core_run;
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_crds::pipeline_run::{
    CancelMode, ParentRef, PipelineRun, PipelineRunSpec, Source, TriggerVia, TriggeredBy,
};

use crate::api::auth::{now_rfc3339, Principal, RunnerGrant, Scope};
use crate::api::runs::{
    is_terminal, BackendError, BRANCHES_IN_SYNC_ANNOTATION, BRANCH_DRIFT_ANNOTATION,
};
use crate::api::storage::ArchivedRun;
use crate::api::{
    blocking, check_job_name, check_object_name, read_json, ApiError, ApiMetrics, ApiState,
    ClientAddr,
};

/// What a client may ask for. `triggeredBy` is not here: the server writes it.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerRequest {
    #[serde(default)]
    pub namespace: Option<String>,
    pub pipeline: String,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    pub source: Source,
    #[serde(default)]
    pub runner_pool: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub ttl_seconds_after_finished: Option<i32>,
    #[serde(default)]
    pub max_attempts: Option<i32>,
    /// The run and job awaiting this run as a sub-pipeline; recorded as the PipelineRun's
    /// `sparkwing.dev/parent-*` annotations.
    #[serde(default)]
    pub parent: Option<ParentRequest>,
    /// The pipelines this run descends from, outermost first (the triggering process's
    /// `SPARKWING_PIPELINE_CHAIN`); recorded as the `sparkwing.dev/pipeline-chain` annotation,
    /// which the runner passes on to the run's jobs.
    #[serde(default)]
    pub pipeline_chain: Option<Vec<String>>,
}

/// At most this many pipelines in a chain: deeper nesting is refused.
pub const MAX_PIPELINE_CHAIN: usize = 32;

/// Check a trigger's `pipelineChain` for a run of `pipeline`: at most [`MAX_PIPELINE_CHAIN`]
/// pipeline names (as in `sparkwing.yaml`: lowercase letters, digits, `-`, not starting with
/// `-`, at most 64), none twice, and not `pipeline` itself (a cycle: refused with the message
/// `sparkwing run` gives). Returns the annotation's value; `None` for an empty chain.
fn check_pipeline_chain(chain: &[String], pipeline: &str) -> Result<Option<String>, ApiError> {
    if chain.len() > MAX_PIPELINE_CHAIN {
        return Err(ApiError::BadRequest(format!(
            "pipelineChain has {} pipelines; at most {MAX_PIPELINE_CHAIN} may await each other",
            chain.len()
        )));
    }
    for (i, p) in chain.iter().enumerate() {
        let ok = !p.is_empty()
            && p.len() <= 64
            && !p.starts_with('-')
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "invalid pipelineChain[{i}] {p:?}: a pipeline name (lowercase letters, digits and '-', not starting with '-', at most 64)"
            )));
        }
        // A chain that holds a pipeline twice already went round a cycle.
        sparkwing_core::subpipeline::check_chain(&chain[..i], p)
            .map_err(|e| ApiError::BadRequest(format!("pipelineChain: {e}")))?;
    }
    sparkwing_core::subpipeline::check_chain(chain, pipeline)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((!chain.is_empty()).then(|| chain.join(",")))
}

/// A trigger's `parent`: `{"run": "<local run id or ns/name>", "job": "<job>", "host"?: "<machine>"}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ParentRequest {
    pub run: String,
    pub job: String,
    #[serde(default)]
    pub host: Option<String>,
}

impl ParentRequest {
    /// Check it: a run id (letters, digits, `-`, `_`, `.`, at most one inner `/`; ≤ 253), a job
    /// name as for job states, a host name (letters, digits, `-`, `_`, `.`, `:`; ≤ 253).
    fn check(self) -> Result<ParentRef, ApiError> {
        let run_ok = !self.run.is_empty()
            && self.run.len() <= 253
            && self
                .run
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
            && self.run.matches('/').count() <= 1
            && !self.run.starts_with(['/', '.'])
            && !self.run.ends_with('/');
        if !run_ok {
            return Err(ApiError::BadRequest(format!(
                "invalid parent.run {:?}: a run id or namespace/name (letters, digits, '-', '_', '.', at most 253)",
                self.run
            )));
        }
        check_job_name(&self.job).map_err(|e| ApiError::BadRequest(format!("parent.job: {e}")))?;
        if let Some(h) = &self.host {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
            if !ok {
                return Err(ApiError::BadRequest(format!(
                    "invalid parent.host {h:?}: letters, digits, '-', '_', '.' and ':', at most 253"
                )));
            }
        }
        Ok(ParentRef {
            run: self.run,
            job: self.job,
            host: self.host,
        })
    }
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub namespace: String,
    pub name: String,
    /// An external run's credential (`run:<ns>/<name>`), for its executor to post logs, job
    /// states and the end. Shown once; runs on the cluster get theirs through a Secret instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_token: Option<String>,
}

/// The start of run names made from a pipeline name: lowercase letters and digits, other
/// characters as `-`, at most 40 characters, never empty (`run`).
pub fn run_name_slug(pipeline: &str) -> String {
    let mut slug: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.truncate(40);
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "run".to_string()
    } else {
        slug.to_string()
    }
}

/// A run name from the pipeline name: `<slug>-<8 random hex>`.
fn run_name(pipeline: &str) -> Result<String, ApiError> {
    let mut rnd = [0u8; 4];
    getrandom::fill(&mut rnd).map_err(|e| ApiError::Internal(format!("randomness: {e}")))?;
    Ok(format!("{}-{}", run_name_slug(pipeline), hex::encode(rnd)))
}

pub async fn trigger(
    State(st): State<ApiState>,
    p: Principal,
    ClientAddr(host): ClientAddr,
    body: Body,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    p.require(Scope::RunsTrigger)?;
    let req: TriggerRequest =
        read_json(body, st.config.limits.json_body, "trigger request").await?;
    let namespace = req
        .namespace
        .clone()
        .unwrap_or_else(|| st.config.default_namespace.clone());
    check_object_name("namespace", &namespace)?;
    if let Some(pool) = &req.runner_pool {
        check_object_name("runnerPool", pool)?;
    }
    match &req.source {
        Source::Upload(u) => {
            let storage = st.storage.clone();
            let id = u.id.clone();
            let missing = blocking(move || {
                let Some(m) = storage.get_upload(&id)? else {
                    return Ok(None);
                };
                // Blobs sent after the manifest are checked here: their sizes must be the
                // declared ones, or the runner would fail materialising the tree.
                if let Some(m) = storage.size_mismatch(&m) {
                    return Err(ApiError::size_mismatch(m));
                }
                Ok::<_, ApiError>(Some(storage.missing_blobs(&m).len()))
            })
            .await?;
            match missing {
                None => return Err(ApiError::NotFound(format!("upload {} not found", u.id))),
                Some(0) => {}
                Some(n) => {
                    return Err(ApiError::Conflict(format!(
                        "upload {} lacks {n} blobs; PUT them to /api/v1/blobs first",
                        u.id
                    )))
                }
            }
        }
        // A path on the runner's node: only admins may point a run at one.
        Source::Local(_) => p.require(Scope::Admin)?,
        Source::Git(_) | Source::External(_) => {}
    }
    let parent = req.parent.map(ParentRequest::check).transpose()?;
    let chain = match &req.pipeline_chain {
        Some(c) => check_pipeline_chain(c, &req.pipeline)?,
        None => None,
    };
    let name = run_name(&req.pipeline)?;
    let mut run = PipelineRun {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: PipelineRunSpec {
            pipeline: req.pipeline,
            args: req.args,
            source: req.source,
            runner_pool: req.runner_pool,
            timeout: req.timeout,
            cancel: None,
            ttl_seconds_after_finished: req.ttl_seconds_after_finished,
            max_attempts: req.max_attempts.unwrap_or(3),
            triggered_by: Some(TriggeredBy {
                principal: p.name.clone(),
                host,
                via: TriggerVia::Cli,
                delivery_id: None,
            }),
            // Only a Pipeline grants Secrets: a triggered run gets none.
            secrets: Vec::new(),
        },
        status: None,
    };
    if let Some(parent) = &parent {
        run.set_parent(parent);
    }
    if let Some(chain) = chain {
        run.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                sparkwing_core::subpipeline::CHAIN_ANNOTATION.to_string(),
                chain,
            );
    }
    if let Some(problem) = run.intent().invalid {
        return Err(ApiError::BadRequest(problem));
    }
    let upload = match &run.spec.source {
        Source::Upload(u) => Some(u.id.clone()),
        _ => None,
    };
    let external = matches!(run.spec.source, Source::External(_));
    // An external run's executor gets its token in the answer; a runner on the cluster reads it
    // from the Secret the runner Job mounts, in place before the run exists.
    let (_, token) = create_with_runner_token(&st, run, upload, !external).await?;
    let runner_token = external.then_some(token);
    ApiMetrics::add(&st.metrics.runs_triggered, 1);
    tracing::info!(%namespace, %name, principal = %p.name, external, "run triggered");
    Ok((
        StatusCode::CREATED,
        Json(Created {
            namespace,
            name,
            runner_token,
        }),
    ))
}

/// Create `run` with its runner credential (the run's token: this run only, and its upload)
/// minted, and — `secret` — stored in the run's Secret *before* the run exists: the operator may
/// start the run's runner the moment the run is created, and a runner that starts without its
/// token fails. Once the run exists the Secret is made the run's (deleted with it). If the run
/// cannot be created the token is revoked and the Secret removed, except when a run of that name
/// exists already (a webhook delivery applied again): the Secret then holds the new token, as
/// valid as the one it replaced, and is given to that run. Returns the run and its token.
pub async fn create_with_runner_token(
    st: &ApiState,
    run: PipelineRun,
    upload: Option<String>,
    secret: bool,
) -> Result<(PipelineRun, String), ApiError> {
    let (ns, name) = (run.namespace().unwrap_or_default(), run.name_any());
    let token = mint_runner_token(st, &ns, &name, upload).await?;
    let undo = |st: &ApiState| {
        let (st, ns, name) = (st.clone(), ns.clone(), name.clone());
        async move {
            if secret {
                if let Err(e) = st.runs.delete_runner_token(&ns, &name).await {
                    tracing::warn!(%ns, %name, "removing the runner token of a run not created: {e}");
                }
            }
            let (storage, tokens) = (st.storage.clone(), st.tokens.clone());
            let scope = Scope::run(&ns, &name).to_string();
            if let Err(e) = blocking(move || tokens.revoke_scope(&storage, &scope)).await {
                tracing::warn!(%ns, %name, "revoking the runner token of a run not created: {e}");
            }
        }
    };
    if secret {
        if let Err(e) = st.runs.store_runner_token(&ns, &name, &token).await {
            undo(st).await;
            return Err(e.into());
        }
    }
    match st.runs.create(run).await {
        Ok(created) => {
            if secret {
                st.runs.adopt_runner_token(&created).await?;
            }
            Ok((created, token))
        }
        Err(BackendError::AlreadyExists(n)) => {
            if secret {
                if let Some(existing) = st.runs.get(&ns, &name).await? {
                    st.runs.adopt_runner_token(&existing).await?;
                }
            }
            Err(BackendError::AlreadyExists(n).into())
        }
        Err(e) => {
            undo(st).await;
            Err(e.into())
        }
    }
}

/// Mint a runner token of the run `ns/name`: the single scope `run:<ns>/<name>`, and the run's
/// upload (if its source is one) as the only upload it may read.
pub async fn mint_runner_token(
    st: &ApiState,
    ns: &str,
    name: &str,
    upload: Option<String>,
) -> Result<String, ApiError> {
    let scope = Scope::run(ns, name).to_string();
    let storage = st.storage.clone();
    let tokens = st.tokens.clone();
    let principal = format!("runner:{ns}/{name}");
    let (token, _) = blocking(move || {
        tokens.create(
            &storage,
            &principal,
            vec![scope],
            Some(RunnerGrant {
                upload,
                ..RunnerGrant::default()
            }),
        )
    })
    .await?;
    Ok(token)
}

/// A run as the API shows it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub namespace: String,
    pub name: String,
    pub pipeline: String,
    pub phase: RunPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<TriggeredBy>,
    /// The run and job that awaited this run as a sub-pipeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The PipelineRun still exists.
    pub live: bool,
    /// A copy is in the archive.
    pub archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<PipelineRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<BTreeMap<String, serde_json::Value>>,
}

fn view(run: &PipelineRun, live: bool, archived: bool) -> RunView {
    RunView {
        namespace: run.namespace().unwrap_or_default(),
        name: run.name_any(),
        pipeline: run.spec.pipeline.clone(),
        phase: run.status.as_ref().map(|s| s.phase).unwrap_or_default(),
        triggered_by: run.spec.triggered_by.clone(),
        parent: run.parent(),
        created: run
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        live,
        archived,
        run: None,
        jobs: None,
    }
}

/// Archive a finished live run unless its archived copy is finished too (known from the archive
/// index, no file read). Returns whether an archived copy exists afterwards.
async fn archive_if_finished(st: &ApiState, run: &PipelineRun) -> Result<bool, ApiError> {
    let storage = st.storage.clone();
    let run = run.clone();
    blocking(move || {
        let (ns, name) = (run.namespace().unwrap_or_default(), run.name_any());
        let stored = storage.archived_finished(&ns, &name)?;
        if is_terminal(&run) && stored != Some(true) {
            storage.write_archive(
                &ns,
                &name,
                &ArchivedRun {
                    archived_at: now_rfc3339(),
                    run,
                },
            )?;
            return Ok::<_, ApiError>(true);
        }
        Ok(stored.is_some())
    })
    .await
}

/// Most runs in one page of the list (`limit`), and the default.
pub const MAX_RUN_PAGE: usize = 500;
pub const DEFAULT_RUN_PAGE: usize = 100;

#[derive(Deserialize, Debug)]
pub struct ListQuery {
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only runs of this pipeline (`spec.pipeline`).
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Only runs in this phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Cancelled`).
    #[serde(default)]
    pub phase: Option<String>,
    /// Most runs in the answer (1 to [`MAX_RUN_PAGE`]; [`DEFAULT_RUN_PAGE`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Where the previous page ended (its `next`).
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// The cursor of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A run's place in the list: newest first (RFC 3339 UTC strings sort by time), then namespace
/// and name.
type ListKey = (std::cmp::Reverse<String>, String, String);

fn list_key(v: &RunView) -> ListKey {
    (
        std::cmp::Reverse(v.created.clone().unwrap_or_default()),
        v.namespace.clone(),
        v.name.clone(),
    )
}

/// A cursor is the list key of the last run of a page, hex-encoded (opaque to clients).
fn encode_cursor(k: &ListKey) -> String {
    hex::encode(format!("{}\n{}\n{}", k.0 .0, k.1, k.2))
}

fn decode_cursor(c: &str) -> Result<ListKey, ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid cursor {c:?}: pass a list's `next`"));
    let bytes = hex::decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(created), Some(ns), Some(name)) => Ok((
            std::cmp::Reverse(created.to_string()),
            ns.to_string(),
            name.to_string(),
        )),
        _ => Err(bad()),
    }
}

fn parse_phase(s: &str) -> Result<RunPhase, ApiError> {
    RunPhase::from_phase_str(s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid phase {s:?}: Pending, Running, Succeeded, Failed or Cancelled"
        ))
    })
}

/// `GET /api/v1/runs`: a page of runs, newest first, live and archived, filtered by namespace,
/// pipeline and phase on the server. The live runs come from one list of the backend, the
/// archived ones from the archive index (no file read per run); only the page's finished live
/// runs are archived on the way.
pub async fn list(
    State(st): State<ApiState>,
    p: Principal,
    Query(q): Query<ListQuery>,
) -> Result<Json<RunList>, ApiError> {
    p.require(Scope::RunsRead)?;
    if let Some(ns) = &q.namespace {
        check_object_name("namespace", ns)?;
    }
    let phase = q.phase.as_deref().map(parse_phase).transpose()?;
    let limit = match q.limit {
        None => DEFAULT_RUN_PAGE,
        Some(n @ 1..=MAX_RUN_PAGE) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "limit {n}: between 1 and {MAX_RUN_PAGE} runs"
            )))
        }
    };
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let wanted = |run: &PipelineRun| {
        q.pipeline.as_ref().is_none_or(|p| *p == run.spec.pipeline)
            && phase.is_none_or(|ph| run.status.as_ref().map(|s| s.phase).unwrap_or_default() == ph)
    };
    let live = st.runs.list(q.namespace.as_deref()).await?;
    let storage = st.storage.clone();
    let ns = q.namespace.clone();
    let archive = blocking(move || storage.archived_summaries(ns.as_deref())).await?;
    let mut out: BTreeMap<ListKey, (PipelineRun, bool)> = BTreeMap::new();
    let live_keys: std::collections::HashSet<(String, String)> = live
        .iter()
        .map(|r| (r.namespace().unwrap_or_default(), r.name_any()))
        .collect();
    for run in live.into_iter().filter(|r| wanted(r)) {
        out.insert(list_key(&view(&run, true, false)), (run, true));
    }
    for run in archive.into_iter().filter(|r| wanted(r)) {
        if !live_keys.contains(&(run.namespace().unwrap_or_default(), run.name_any())) {
            out.insert(list_key(&view(&run, false, true)), (run, false));
        }
    }
    let mut page = Vec::with_capacity(limit);
    let mut next = None;
    let rest = match &after {
        Some(k) => out.range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
        None => out.range(..),
    };
    for (key, (run, is_live)) in rest {
        if page.len() == limit {
            // A run after a full page: there is a next one.
            next = page
                .last()
                .map(|(k, _): &(ListKey, RunView)| encode_cursor(k));
            break;
        }
        let v = if *is_live {
            let archived = archive_if_finished(&st, run).await?;
            view(run, true, archived)
        } else {
            view(run, false, true)
        };
        page.push((key.clone(), v));
    }
    Ok(Json(RunList {
        runs: page.into_iter().map(|(_, v)| v).collect(),
        next,
    }))
}

pub async fn get_run(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<RunView>, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require_read_run(&ns, &name)?;
    let mut v = match st.runs.get(&ns, &name).await? {
        Some(run) => {
            let archived = archive_if_finished(&st, &run).await?;
            let mut v = view(&run, true, archived);
            v.run = Some(run);
            v
        }
        None => {
            let storage = st.storage.clone();
            let (ns2, name2) = (ns.clone(), name.clone());
            match blocking(move || storage.read_archive(&ns2, &name2)).await? {
                Some(a) => {
                    let mut v = view(&a.run, false, true);
                    v.run = Some(a.run);
                    v
                }
                None => return Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
            }
        }
    };
    let storage = st.storage.clone();
    let mut jobs = blocking(move || storage.job_states(&ns, &name)).await?;
    if v.phase.is_terminal() {
        let why = v.run.as_ref().map(end_reason).unwrap_or_default();
        settle_jobs(v.phase, &why, &mut jobs);
    }
    v.jobs = Some(jobs);
    Ok(Json(v))
}

/// `Reason: message` of a finished run's `Succeeded` condition.
fn end_reason(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Succeeded"))
        .map(|c| {
            if c.message.is_empty() {
                c.reason.clone()
            } else {
                format!("{}: {}", c.reason, c.message)
            }
        })
        .unwrap_or_default()
}

/// A finished run whose runner died never reports the end of the jobs it was running: show them
/// as ended with the run (`cancelled` when the run was cancelled, else `failed`), with the run's
/// reason and `"settled": true`, instead of `running` forever. What the runner reported stays
/// stored as it was.
pub fn settle_jobs(phase: RunPhase, why: &str, jobs: &mut BTreeMap<String, serde_json::Value>) {
    for state in jobs.values_mut() {
        let open = matches!(
            state.get("state").and_then(|s| s.as_str()),
            Some("pending" | "running")
        );
        if !open {
            continue;
        }
        if let Some(obj) = state.as_object_mut() {
            let ended = if phase == RunPhase::Cancelled {
                "cancelled"
            } else {
                "failed"
            };
            obj.insert("state".into(), ended.into());
            obj.insert(
                "reason".into(),
                format!(
                    "the run ended {} before its runner reported this job's end{}",
                    phase.phase_str(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                )
                .into(),
            );
            obj.insert("settled".into(), true.into());
        }
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default)]
    pub mode: Option<CancelMode>,
}

pub async fn cancel(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require(Scope::RunsTrigger)?;
    let bytes = crate::api::read_body(body, st.config.limits.json_body, "cancel request").await?;
    let req: CancelRequest = if bytes.is_empty() {
        CancelRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("cancel request: {e}")))?
    };
    let mode = req.mode.unwrap_or(CancelMode::Cancelled);
    match st.runs.cancel(&ns, &name, mode).await? {
        Some(run) => {
            tracing::info!(%ns, %name, principal = %p.name, ?mode, "run cancel requested");
            Ok((StatusCode::ACCEPTED, Json(view(&run, true, false))))
        }
        None => Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
    }
}

/// The end of a run as its executor reports it (`POST .../finish`); only external runs use it.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    #[serde(default)]
    pub phase: Option<RunPhase>,
    #[serde(default)]
    pub message: Option<String>,
}

/// How many times a finish re-reads an external run that changed while its end was written.
const FINISH_ATTEMPTS: usize = 5;

/// Record the end of an external run (unless it already has one), by server-side apply guarded
/// by the version read. Returns the run as it is afterwards.
async fn record_external_end(
    st: &ApiState,
    mut run: PipelineRun,
    end: RunPhase,
    message: &str,
) -> Result<PipelineRun, ApiError> {
    let (ns, name) = (run.namespace().unwrap_or_default(), run.name_any());
    for _ in 0..FINISH_ATTEMPTS {
        let prev = run.status.clone().unwrap_or_default();
        let generation = run.metadata.generation.unwrap_or(0);
        let Some(status) =
            core_run::record_external_end(&prev, end, message, generation, now_millis())
        else {
            return Ok(run);
        };
        let rv = run.metadata.resource_version.clone();
        match st
            .runs
            .write_external_status(&ns, &name, &status, rv.as_deref())
            .await
        {
            Ok(Some(updated)) => return Ok(updated),
            Ok(None) => return Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
            Err(BackendError::Conflict(_)) => {
                run = st
                    .runs
                    .get(&ns, &name)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "run {ns}/{name} kept changing while its end was recorded; retry"
    )))
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 * 1000)
        .unwrap_or(0)
}

/// The runner is done: for an external run, record the end its body names (`{"phase":
/// "Succeeded"|"Failed"|"Cancelled", "message": "..."}`; a run on the cluster ignores the body,
/// the operator decides from its Job); then archive the run as it is now and revoke the run's
/// runner tokens.
pub async fn finish(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<Json<RunView>, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require(Scope::run(&ns, &name))?;
    let bytes = crate::api::read_body(body, st.config.limits.json_body, "finish request").await?;
    let mut run = st
        .runs
        .get(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
    if matches!(run.spec.source, Source::External(_)) {
        let req: FinishRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
            FinishRequest::default()
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::BadRequest(format!("finish request: {e}")))?
        };
        let end = req.phase.filter(|p| p.is_terminal()).ok_or_else(|| {
            ApiError::BadRequest(
                "an external run's finish needs \"phase\": Succeeded, Failed or Cancelled".into(),
            )
        })?;
        run = record_external_end(&st, run, end, req.message.as_deref().unwrap_or("")).await?;
        tracing::info!(%ns, %name, phase = ?end, "external run finished");
    }
    let storage = st.storage.clone();
    let archived = run.clone();
    let (ns2, name2) = (ns.clone(), name.clone());
    blocking(move || {
        storage.write_archive(
            &ns2,
            &name2,
            &ArchivedRun {
                archived_at: now_rfc3339(),
                run: archived,
            },
        )
    })
    .await?;
    let storage = st.storage.clone();
    let tokens = st.tokens.clone();
    let scope = Scope::run(&ns, &name).to_string();
    blocking(move || tokens.revoke_scope(&storage, &scope)).await?;
    Ok(Json(view(&run, true, true)))
}

pub async fn put_job_state(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, job)): Path<(String, String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    check_job_name(&job)?;
    p.require(Scope::run(&ns, &name))?;
    let state: serde_json::Value = read_json(body, st.config.limits.json_body, "job state").await?;
    if !state.is_object() {
        return Err(ApiError::BadRequest("a job state is a JSON object".into()));
    }
    let storage = st.storage.clone();
    blocking(move || storage.put_job_state(&ns, &name, &job, &state)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A runner's comparison of its run's Pipeline push branches (the run's
/// `sparkwing.dev/push-branches`) with `on.push.branches` in the committed `sparkwing.yaml`:
/// `{"inSync": true}` or `{"inSync": false, "message": "<both lists and how to fix>"}`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BranchCheck {
    pub in_sync: bool,
    #[serde(default)]
    pub message: Option<String>,
}

/// Longest drift message kept (bytes).
pub const MAX_BRANCH_DRIFT_MESSAGE: usize = 2048;

impl BranchCheck {
    /// The annotations recording it (`None`: removed), or why the body is refused.
    pub fn annotations(self) -> Result<BTreeMap<String, Option<String>>, ApiError> {
        let message = match (self.in_sync, self.message) {
            (true, None) => None,
            (true, Some(_)) => {
                return Err(ApiError::BadRequest(
                    "branch check: \"message\" is for a drift (\"inSync\": false) only".into(),
                ))
            }
            (false, None) => return Err(ApiError::BadRequest(
                "branch check: a drift (\"inSync\": false) needs a \"message\" naming both lists"
                    .into(),
            )),
            (false, Some(m)) => {
                let m = m.trim().to_string();
                if m.is_empty()
                    || m.len() > MAX_BRANCH_DRIFT_MESSAGE
                    || m.chars().any(char::is_control)
                {
                    return Err(ApiError::BadRequest(format!(
                        "branch check: the message must be 1 to {MAX_BRANCH_DRIFT_MESSAGE} bytes on one line, without control characters"
                    )));
                }
                Some(m)
            }
        };
        Ok(BTreeMap::from([
            (
                BRANCHES_IN_SYNC_ANNOTATION.to_string(),
                Some(self.in_sync.to_string()),
            ),
            (BRANCH_DRIFT_ANNOTATION.to_string(), message),
        ]))
    }
}

/// `PUT .../branch-check` (the run's runner, or admin): record the runner's branch comparison as
/// the run's `sparkwing.dev/branches-in-sync` and `sparkwing.dev/branch-drift` annotations, by a
/// merge patch of those two annotations alone. Only runs started by a Pipeline's push (they carry
/// `sparkwing.dev/push-branches`) have something to compare: others are a 409.
pub async fn put_branch_check(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require(Scope::run(&ns, &name))?;
    let check: BranchCheck = read_json(body, st.config.limits.json_body, "branch check").await?;
    let in_sync = check.in_sync;
    let annotations = check.annotations()?;
    let run = st
        .runs
        .get(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
    if !run
        .annotations()
        .contains_key(sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION)
    {
        return Err(ApiError::Conflict(format!(
            "run {ns}/{name} was not started by a Pipeline's push (it has no {} annotation): there are no Pipeline branches to compare",
            sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION
        )));
    }
    match st.runs.annotate(&ns, &name, &annotations).await? {
        Some(_) => {
            tracing::info!(%ns, %name, in_sync, "branch check recorded");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
    }
}
