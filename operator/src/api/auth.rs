//! Who calls: the bearer token of a request, looked up in the token table (`crate::tokens`), and
//! the scopes it holds.
//!
//! Scopes: `runs:read` (list and read runs and logs), `runs:trigger` (upload sources, trigger and
//! cancel runs), `approvals:write` (decide approval gates), `admin` (everything, plus tokens and
//! GC), `run:<ns>/<name>`, held only by the runner token minted for that run: read that run's
//! upload and gate decisions, post its logs, job states and gates' timeouts, and
//! `pool:<ns>/<pool>`, held only by a RunnerPool's pool token: exchange it, for a warm pod of that
//! pool claimed by a run, for that run's runner token (`POST /api/v1/pools/{ns}/{pool}/claims`).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sparkwing_api::names::ATTEMPT_HEADER;

use super::error::ApiError;
use super::ApiState;

// Scopes are part of the API's contract: one definition, in `sparkwing-api`.
pub use sparkwing_api::scopes::{Scope, GRANTABLE_SCOPES};

/// The current time, RFC 3339.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// The token of an `Authorization` value `Bearer <token>`: the scheme is case-insensitive (RFC
/// 9110 §11.1), so `bearer` and `BEARER` are accepted too.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub token_id: String,
    pub scopes: Vec<Scope>,
    /// The upload a runner token may read.
    pub upload: Option<String>,
    /// The RunnerPool uid a pool token was minted for.
    pub pool_uid: Option<String>,
}

impl Principal {
    pub fn has(&self, scope: &Scope) -> bool {
        self.scopes.iter().any(|s| s == scope || *s == Scope::Admin)
    }

    /// 403 naming `scope` unless the caller has it (or admin).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(&scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope))
        }
    }

    /// Readers of runs, and the run's own runner.
    pub fn require_read_run(&self, ns: &str, name: &str) -> Result<(), ApiError> {
        if self.has(&Scope::run(ns, name)) {
            return Ok(());
        }
        self.require(Scope::RunsRead)
    }

    /// A runner's or a pool's token (minted by the server, never a person's).
    pub fn server_minted(&self) -> bool {
        self.scopes
            .iter()
            .any(|s| matches!(s, Scope::Run { .. } | Scope::Pool { .. }))
    }

    /// The run a runner token belongs to.
    pub fn runner_of(&self) -> Option<(&str, &str)> {
        self.scopes.iter().find_map(|s| match s {
            Scope::Run { namespace, name } => Some((namespace.as_str(), name.as_str())),
            _ => None,
        })
    }
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized)?;
        let rec = state
            .store
            .lookup_token(token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let p = Principal {
            name: rec.principal,
            token_id: rec.id,
            scopes: rec.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            upload: rec.upload,
            pool_uid: rec.pool_uid,
        };
        // A runner's call names its attempt: refused once a newer attempt exists.
        if let Some(attempt) = parts.headers.get(ATTEMPT_HEADER) {
            let attempt = attempt
                .to_str()
                .ok()
                .and_then(|a| a.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{ATTEMPT_HEADER}: not an attempt number (1, 2, ...)"
                    ))
                })?;
            if let Some((ns, name)) = p.runner_of() {
                state.fence.check(state, ns, name, attempt).await?;
            }
        }
        Ok(p)
    }
}
