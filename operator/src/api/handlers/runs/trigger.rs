//! `POST /api/v1/runs`: check a trigger, mint the run's runner credential, create the run.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sparkwing_api::wire::{CreatedRun, TriggerRequest};
use sparkwing_crds::pipeline_run::{
    ParentRef, PipelineRun, PipelineRunSpec, Source, TriggerVia, TriggeredBy, UploadSource,
};

use crate::api::auth::{Principal, Scope};
use crate::api::{
    check_job_name, check_object_name, read_json, ApiError, ApiMetrics, ApiState, ClientAddr,
};
use crate::runs::backend::run_name_slug;
use crate::runs::runner_token::create_with_runner_token;

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

/// Check a trigger's `parent`: a run id (letters, digits, `-`, `_`, `.`, at most one inner `/`;
/// ≤ 253), a job name as for job states, a host name (letters, digits, `-`, `_`, `.`, `:`; ≤ 253).
fn check_parent(parent: ParentRef) -> Result<ParentRef, ApiError> {
    let run_ok = !parent.run.is_empty()
        && parent.run.len() <= 253
        && parent
            .run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && parent.run.matches('/').count() <= 1
        && !parent.run.starts_with(['/', '.'])
        && !parent.run.ends_with('/');
    if !run_ok {
        return Err(ApiError::BadRequest(format!(
            "invalid parent.run {:?}: a run id or namespace/name (letters, digits, '-', '_', '.', at most 253)",
            parent.run
        )));
    }
    check_job_name(&parent.job).map_err(|e| ApiError::BadRequest(format!("parent.job: {e}")))?;
    if let Some(h) = &parent.host {
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
    Ok(parent)
}

/// A run name from the pipeline name: `<slug>-<8 random hex>`.
pub(super) fn run_name(pipeline: &str) -> Result<String, ApiError> {
    let mut rnd = [0u8; 4];
    getrandom::fill(&mut rnd).map_err(|e| ApiError::Internal(format!("randomness: {e}")))?;
    Ok(format!("{}-{}", run_name_slug(pipeline), hex::encode(rnd)))
}

/// Who asked for a run through the API: the token's principal, from the client's address, `via:
/// cli`. The client cannot write it.
pub(super) fn asked_by(p: &Principal, host: Option<String>) -> TriggeredBy {
    TriggeredBy {
        principal: p.name.clone(),
        host,
        via: TriggerVia::Cli,
        delivery_id: None,
        pull_request: None,
    }
}

pub async fn trigger(
    State(st): State<ApiState>,
    p: Principal,
    ClientAddr(host): ClientAddr,
    body: Body,
) -> Result<(StatusCode, Json<CreatedRun>), ApiError> {
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
    check_source(&st, &p, &req.source).await?;
    let parent = req.parent.map(check_parent).transpose()?;
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
            source: req.source.clone(),
            runner_pool: req.runner_pool,
            timeout: req.timeout,
            cancel: None,
            ttl_seconds_after_finished: req.ttl_seconds_after_finished,
            max_attempts: req.max_attempts.unwrap_or(3),
            triggered_by: Some(asked_by(&p, host)),
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
    if req.no_cache {
        run.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                sparkwing_api::names::NO_CACHE_ANNOTATION.to_string(),
                "true".to_string(),
            );
    }
    let created = create_run(&st, &p, run).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Whether `p` may start a run of `source`: an upload must exist (404) with all its blobs (409);
/// a path on the runner's node needs `admin`. Shared by triggers and re-runs.
pub(super) async fn check_source(
    st: &ApiState,
    p: &Principal,
    source: &Source,
) -> Result<(), ApiError> {
    match source {
        Source::Upload(UploadSource { id }) => {
            // Blobs sent after the manifest are checked here: their sizes must be the declared
            // ones, or the runner would fail materialising the tree.
            let missing = match st.store.get_upload(id).await? {
                None => None,
                Some(m) => Some(
                    crate::api::handlers::uploads::missing_blobs(st, &m)
                        .await?
                        .len(),
                ),
            };
            match missing {
                None => Err(ApiError::NotFound(format!("upload {id} not found"))),
                Some(0) => Ok(()),
                Some(n) => Err(ApiError::Conflict(format!(
                    "upload {id} lacks {n} blobs; PUT them to /api/v1/blobs first"
                ))),
            }
        }
        // A path on the runner's node: only admins may point a run at one.
        Source::Local { .. } => p.require(Scope::Admin),
        Source::Git { .. } | Source::External(_) => Ok(()),
    }
}

/// Create `run` (named, its source checked) as every run the API starts is created: the spec's
/// own checks (400), the run's runner credential minted with the run's upload as the only one it
/// may read, stored in the run's Secret for a runner on the cluster or answered once for an
/// external run's executor. Shared by triggers and re-runs.
pub(super) async fn create_run(
    st: &ApiState,
    p: &Principal,
    run: PipelineRun,
) -> Result<CreatedRun, ApiError> {
    if let Some(problem) = run.intent().invalid {
        return Err(ApiError::BadRequest(problem));
    }
    let namespace = run.metadata.namespace.clone().unwrap_or_default();
    let name = run.metadata.name.clone().unwrap_or_default();
    let upload = match &run.spec.source {
        Source::Upload(u) => Some(u.id.clone()),
        _ => None,
    };
    let external = matches!(run.spec.source, Source::External(_));
    // An external run's executor gets its token in the answer; a runner on the cluster reads it
    // from the Secret the runner Job mounts, in place before the run exists.
    let (_, token) = create_with_runner_token(&st.store, st.runs.as_ref(), run, upload, !external)
        .await
        .map_err(ApiError::from)?;
    let runner_token = external.then_some(token);
    ApiMetrics::add(&st.metrics.runs_triggered, 1);
    tracing::info!(%namespace, %name, principal = %p.name, external, "run triggered");
    Ok(CreatedRun {
        namespace,
        name,
        runner_token,
    })
}
