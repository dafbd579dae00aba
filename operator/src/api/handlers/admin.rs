//! Tokens, garbage collection (on request), identity, readiness and metrics.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use sparkwing_api::wire::{
    CreateTokenRequest, CreatedToken, GcReport, GcRequest, TokenList, WhoAmI,
};

use crate::api::auth::{Principal, Scope, GRANTABLE_SCOPES};
use crate::api::collect::collect;
use crate::api::{read_json, ApiError, ApiState};
use crate::tokens::token_info;

pub async fn whoami(p: Principal) -> Json<WhoAmI> {
    Json(WhoAmI {
        principal: p.name,
        token: p.token_id,
        scopes: p.scopes.iter().map(ToString::to_string).collect(),
    })
}

pub async fn create_token(
    State(st): State<ApiState>,
    p: Principal,
    body: Body,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    p.require(Scope::Admin)?;
    let req: CreateTokenRequest =
        read_json(body, st.config.limits.json_body, "token request").await?;
    let principal = req.principal.trim().to_string();
    if principal.is_empty() || principal.len() > 256 {
        return Err(ApiError::BadRequest(
            "principal must be 1 to 256 characters".into(),
        ));
    }
    if let Some(bad) = req
        .scopes
        .iter()
        .find(|s| !GRANTABLE_SCOPES.contains(&s.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown scope {bad:?}; valid scopes: {}",
            GRANTABLE_SCOPES.join(", ")
        )));
    }
    let scopes: Vec<String> = req
        .scopes
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (token, rec) = st.store.create_token(&principal, scopes, None).await?;
    tracing::info!(id = %rec.id, principal = %rec.principal, by = %p.name, "token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: token_info(&rec),
        }),
    ))
}

pub async fn list_tokens(
    State(st): State<ApiState>,
    p: Principal,
) -> Result<Json<TokenList>, ApiError> {
    p.require(Scope::Admin)?;
    Ok(Json(TokenList {
        tokens: st.store.list_tokens().await?,
    }))
}

pub async fn revoke_token(
    State(st): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(Scope::Admin)?;
    if st.store.revoke_token(&id).await? {
        tracing::info!(%id, by = %p.name, "token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("token {id} not found")))
    }
}

/// Collect garbage now ([`collect`](crate::api::collect)): retention of finished runs, then
/// uploads and blobs no unfinished run needs. The body may override the grace period and the
/// retention for this collection.
pub async fn gc(
    State(st): State<ApiState>,
    p: Principal,
    body: Body,
) -> Result<Json<GcReport>, ApiError> {
    p.require(Scope::Admin)?;
    let bytes = crate::api::read_body(body, st.config.limits.json_body, "gc request").await?;
    let req: GcRequest = if bytes.is_empty() {
        GcRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("gc request: {e}")))?
    };
    let grace = req
        .grace_seconds
        .map_or(st.config.gc_grace, Duration::from_secs);
    let mut retention = st.config.retention;
    if let Some(days) = req.retain_finished_days {
        retention.max_age = Some(Duration::from_secs(u64::from(days) * 86_400));
    }
    if let Some(runs) = req.retain_finished_runs {
        retention.max_runs = Some(runs);
    }
    let report = collect(&st, grace, retention).await?;
    tracing::info!(?report, by = %p.name, "garbage collected");
    Ok(Json(report))
}

pub async fn readyz(State(st): State<ApiState>) -> impl IntoResponse {
    match st.store.check().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the API's state stores do not answer\n",
            )
        }
    }
}

pub async fn metrics_text(State(st): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
}
