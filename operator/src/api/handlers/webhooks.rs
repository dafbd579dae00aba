//! `POST /webhooks/github`: GitHub-compatible push and pull request deliveries (no bearer token: the body's
//! HMAC-SHA256 signature is the authentication). The decision is `api::webhook::decide`; this
//! module reads the request, lists the Pipelines, creates the runs and remembers the delivery.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use sparkwing_api::wire::{
    CancelledRun, DeliveryRecord, ErrorBody, Ignored, Pong, SkippedPipeline, WebhookRun,
};
use sparkwing_crds::pipeline::Pipeline;
use sparkwing_crds::pipeline_run::{CancelMode, Source};
use sparkwing_state::Delivery;

use crate::api::auth::now_rfc3339;
use crate::api::webhook::{
    self, Decision, PayloadError, SignatureError, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER,
};
use crate::api::{read_body, ApiError, ApiMetrics, ApiState};
use crate::labels::PIPELINE_ANNOTATION;
use crate::runs::backend::BackendError;
use crate::runs::runner_token::{create_with_runner_token, RunnerTokenError};

/// The largest delivery accepted (GitHub caps payloads at 25 MB; pushes are far smaller).
pub const WEBHOOK_BODY_LIMIT: usize = 1 << 20;

/// What a delivery can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook secret is configured: start sparkwing-operator with --webhook-secret-file <file> (or set SPARKWING_WEBHOOK_SECRET) holding the secret configured on the webhook")]
    NotConfigured,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<sparkwing_state::StateError> for WebhookError {
    fn from(e: sparkwing_state::StateError) -> Self {
        WebhookError::Api(e.into())
    }
}

impl From<BackendError> for WebhookError {
    fn from(e: BackendError) -> Self {
        WebhookError::Api(e.into())
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            WebhookError::NotConfigured => {
                tracing::error!("webhook delivery refused: {self}");
                (StatusCode::INTERNAL_SERVER_ERROR, "webhook_not_configured")
            }
            WebhookError::Signature(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            WebhookError::Payload(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            WebhookError::Api(e) => return e_response(e),
        };
        (
            status,
            Json(ErrorBody {
                error: code.to_string(),
                message: self.to_string(),
                scope: None,
                retryable: false,
            }),
        )
            .into_response()
    }
}

fn e_response(e: &ApiError) -> Response {
    (e.status(), Json(e.body())).into_response()
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The metadata store's delivery id of a webhook delivery: `delivery-<sha256 of its id>`.
fn delivery_key(delivery: &str) -> String {
    format!(
        "delivery-{}",
        hex::encode(Sha256::digest(delivery.as_bytes()))
    )
}

/// The delivery id of a push's (or pull request event's) first answer: `push-<sha256 of what it
/// is>` ([`webhook::Create::key`]).
fn push_key_id(key: &str) -> String {
    format!("push-{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// The claim on a push that a replica holds while it creates the push's runs.
fn claim_key_id(push_id: &str) -> String {
    format!("claim-{push_id}")
}

/// How long another replica waits for the claim holder's answer before answering 409.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// A claim this old without an answer was left by a replica that stopped mid-way: taken over.
const CLAIM_STALE_MS: i64 = 120_000;

/// Claim the push `push_id` for this delivery. `None`: claimed, create the runs. `Some`: another
/// delivery of the same push created them (its answer, waited for up to [`CLAIM_WAIT`]). A claim
/// older than the replay window, or older than [`CLAIM_STALE_MS`] without an answer, is taken
/// over; a fresh one whose holder has not answered in time is a 409 (deliver again later).
async fn claim_push(
    st: &ApiState,
    push_id: &str,
    delivery: &str,
    window_ms: i64,
) -> Result<Option<DeliveryRecord>, ApiError> {
    let meta = &st.store.meta;
    let claim_id = claim_key_id(push_id);
    let claim = serde_json::json!({ "deliveryId": delivery });
    let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
    loop {
        let holder = match meta.record_delivery(&claim_id, &claim).await? {
            Delivery::First => return Ok(None),
            Delivery::Duplicate(v) => v,
        };
        if let Some((v, _)) = meta.find_delivery(push_id).await? {
            return record_of(v).map(Some);
        }
        let age = meta
            .find_delivery(&claim_id)
            .await?
            .map(|(_, at)| now_ms().saturating_sub(at));
        match age {
            // Released meanwhile: claim again.
            None => continue,
            Some(age) if age >= window_ms.min(CLAIM_STALE_MS) => {
                tracing::warn!(%delivery, holder = %holder["deliveryId"], "taking over a stale claim on a webhook push");
                meta.delete_delivery(&claim_id).await?;
                continue;
            }
            Some(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Conflict(format!(
                "this push is being applied by delivery {} on another replica; deliver it again later",
                holder["deliveryId"].as_str().unwrap_or("?")
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn record_of(v: serde_json::Value) -> Result<DeliveryRecord, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::Internal(format!("reading a delivery record: {e}")))
}

pub async fn github(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebhookError> {
    let m = &st.metrics;
    let result = handle(&st, &headers, body).await;
    match &result {
        Ok(_) => {}
        Err(WebhookError::Signature(e)) => {
            ApiMetrics::add(&m.webhook_rejected, 1);
            tracing::warn!(
                delivery = header(&headers, DELIVERY_HEADER),
                "webhook delivery refused: {e}"
            );
        }
        Err(e) => {
            ApiMetrics::add(&m.webhook_rejected, 1);
            tracing::warn!(
                delivery = header(&headers, DELIVERY_HEADER),
                "webhook delivery failed: {e}"
            );
        }
    }
    result
}

async fn handle(st: &ApiState, headers: &HeaderMap, body: Body) -> Result<Response, WebhookError> {
    let secret = st
        .webhooks
        .secret
        .clone()
        .ok_or(WebhookError::NotConfigured)?;
    let bytes = read_body(body, WEBHOOK_BODY_LIMIT, "webhook body").await?;
    // Nothing of the body is looked at before its signature is checked.
    webhook::verify_signature(&secret, header(headers, SIGNATURE_HEADER), &bytes)?;
    ApiMetrics::add(&st.metrics.webhook_deliveries, 1);
    let event = header(headers, EVENT_HEADER);
    let delivery = header(headers, DELIVERY_HEADER);
    let pipelines = match event.map(str::trim) {
        Some("push" | "pull_request") => st.webhooks.pipelines.list().await?,
        _ => Vec::new(),
    };
    let pr_files = if event.map(str::trim) == Some("pull_request") {
        pull_request_files(st, &bytes, &pipelines).await
    } else {
        None
    };
    match webhook::decide(event, delivery, &bytes, &pipelines, pr_files.as_deref())? {
        Decision::Pong => {
            tracing::info!(delivery, "webhook ping");
            Ok((StatusCode::OK, Json(Pong { pong: true })).into_response())
        }
        Decision::Ignore(reason) => {
            ApiMetrics::add(&st.metrics.webhook_ignored, 1);
            tracing::info!(delivery, event, %reason, "webhook delivery ignored");
            Ok((StatusCode::ACCEPTED, Json(Ignored { ignored: reason })).into_response())
        }
        Decision::Create(c) => {
            // decide() checked it.
            let delivery = webhook::check_delivery_id(delivery)?.to_string();
            create(st, delivery, c, &pipelines).await
        }
    }
}

/// A pull request's changed files, for path filters: listed through GitHub's API with the
/// credentials of the first Pipeline that filters paths and has them. `None` (the Pipelines then
/// run, marked `sparkwing.dev/paths-unchecked`) without a GitHub client, without credentials, or
/// when GitHub fails (logged).
async fn pull_request_files(
    st: &ApiState,
    body: &[u8],
    pipelines: &[Pipeline],
) -> Option<Vec<String>> {
    let client = st.webhooks.github.as_ref()?;
    let (repo, number, wanting) = webhook::files_wanted(body, pipelines)?;
    for p in wanting {
        let creds = match st.webhooks.pipelines.github_credentials(p).await {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(pipeline = %p.name_any(), error = %e, "reading GitHub credentials");
                continue;
            }
        };
        return match client.pull_request_files(&creds, &repo, number).await {
            Ok(files) => Some(files),
            Err(e) => {
                tracing::warn!(%repo, number, error = %e, "listing the pull request's files failed: its path filters are not applied");
                None
            }
        };
    }
    None
}

async fn create(
    st: &ApiState,
    delivery: String,
    c: webhook::Create,
    pipelines: &[Pipeline],
) -> Result<Response, WebhookError> {
    let _guard = st.webhooks.apply.lock().await;
    let meta = &st.store.meta;
    let delivery_id = delivery_key(&delivery);
    if let Some((v, _)) = meta.find_delivery(&delivery_id).await? {
        let mut record = record_of(v)?;
        ApiMetrics::add(&st.metrics.webhook_redeliveries, 1);
        tracing::info!(%delivery, runs = record.runs.len(), "webhook redelivery: its runs exist already");
        record.redelivery = true;
        return Ok((StatusCode::OK, Json(record)).into_response());
    }
    // The same signed push under another delivery id (a replayed body: the id is not signed):
    // its runs exist already, and a new run would get the Pipeline's secrets again.
    let push_id = push_key_id(&c.key);
    let window_ms = i64::try_from(st.config.push_replay_window.as_millis()).unwrap_or(i64::MAX);
    let first_push = match meta.find_delivery(&push_id).await? {
        Some((v, at)) if now_ms().saturating_sub(at) < window_ms => Some(record_of(v)?),
        // Past the window the push may run again: its old answer is forgotten.
        Some(_) => {
            meta.delete_delivery(&push_id).await?;
            meta.delete_delivery(&claim_key_id(&push_id)).await?;
            None
        }
        None => None,
    };
    if let Some(mut record) = first_push {
        ApiMetrics::add(&st.metrics.webhook_redeliveries, 1);
        tracing::warn!(%delivery, first = %record.delivery_id, runs = record.runs.len(), "webhook push delivered again under a new delivery id: its runs exist already");
        record.redelivery = true;
        return Ok((StatusCode::OK, Json(record)).into_response());
    }
    // The lock above serialises this replica only: across replicas the push is claimed in the
    // shared store first, and only the claim's holder creates its runs.
    if let Some(mut record) = claim_push(st, &push_id, &delivery, window_ms).await? {
        ApiMetrics::add(&st.metrics.webhook_redeliveries, 1);
        tracing::warn!(%delivery, first = %record.delivery_id, runs = record.runs.len(), "webhook push applied by another replica under another delivery id: its runs exist already");
        record.redelivery = true;
        return Ok((StatusCode::OK, Json(record)).into_response());
    }
    let applied = apply_push(st, delivery, c, pipelines, &delivery_id, &push_id).await;
    if applied.is_err() {
        // Released, so a redelivery need not wait for the claim to go stale.
        if let Err(e) = meta.delete_delivery(&claim_key_id(&push_id)).await {
            tracing::warn!(error = %e, "releasing the claim on a webhook push failed");
        }
    }
    applied
}

/// Create the runs of a claimed push, cancel what they supersede, and record the answer.
async fn apply_push(
    st: &ApiState,
    delivery: String,
    c: webhook::Create,
    pipelines: &[Pipeline],
    delivery_id: &str,
    push_id: &str,
) -> Result<Response, WebhookError> {
    let meta = &st.store.meta;
    let (branch, sha) = (c.branch, c.sha);
    let mut created = Vec::new();
    let mut cancelled = Vec::new();
    for run in c.runs {
        let ns = run.namespace().unwrap_or_default();
        let name = run.name_any();
        let pipeline = run
            .annotations()
            .get(PIPELINE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let upload = match &run.spec.source {
            Source::Upload(u) => Some(u.id.clone()),
            _ => None,
        };
        let of_pipeline = pipelines
            .iter()
            .find(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.name_any() == pipeline);
        // Older runs of the same pull request, if its Pipeline cancels them: looked up before the
        // new run exists, cancelled after it does.
        let older = match of_pipeline {
            Some(p) if c.pull_request.is_some() => {
                let listed = st.runs.list(Some(&ns)).await?;
                webhook::superseded(&run, p, &listed)
                    .into_iter()
                    .map(|r| r.name_any())
                    .collect()
            }
            _ => Vec::new(),
        };
        match create_with_runner_token(&st.store, st.runs.as_ref(), run, upload, true).await {
            Ok(_) => {
                ApiMetrics::add(&st.metrics.runs_triggered, 1);
                ApiMetrics::add(&st.metrics.webhook_runs_created, 1);
                tracing::info!(%delivery, namespace = %ns, %name, %pipeline, %branch, commit = %sha, "webhook created a run");
            }
            // A delivery applied before without its record (the process stopped in between):
            // the run's name is a function of the delivery, so it is that run.
            Err(RunnerTokenError::Backend(BackendError::AlreadyExists(_))) => {
                tracing::info!(%delivery, namespace = %ns, %name, "webhook run exists already");
            }
            Err(e) => return Err(ApiError::from(e).into()),
        }
        for old in older {
            // The cancel `sparkwing runs cancel` asks for (POST .../cancel).
            if st
                .runs
                .cancel(&ns, &old, CancelMode::Cancelled)
                .await?
                .is_some()
            {
                tracing::info!(%delivery, namespace = %ns, name = %old, superseded_by = %name, "webhook cancelled an older run of the pull request");
                cancelled.push(CancelledRun {
                    namespace: ns.clone(),
                    name: old,
                });
            }
        }
        created.push(WebhookRun {
            namespace: ns,
            name,
            pipeline,
        });
    }
    let record = DeliveryRecord {
        delivery_id: delivery,
        received_at: now_rfc3339(),
        branch,
        commit: sha,
        runs: created,
        pull_request: c.pull_request,
        skipped: c
            .skipped
            .into_iter()
            .map(|s| SkippedPipeline {
                namespace: s.namespace,
                pipeline: s.pipeline,
                reason: s.reason,
            })
            .collect(),
        cancelled,
        redelivery: false,
    };
    let answer = serde_json::to_value(&record)
        .map_err(|e| ApiError::Internal(format!("serializing a delivery record: {e}")))?;
    // First answer wins: another replica that raced this one on the same delivery created the
    // same runs (their names are a function of the delivery).
    meta.record_delivery(delivery_id, &answer).await?;
    meta.record_delivery(push_id, &answer).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}
