//! The cluster dashboard's login sessions: an API token exchanged once (`POST /login`) for a
//! session cookie, so the page never holds the token.
//!
//! The cookie carries a random secret; the state layer keeps only its sha256 with the token's
//! principal and scopes, the session's CSRF token and its expiry (`sessions` table, both
//! backends), so any API replica accepts it. The cookie is `HttpOnly` and `SameSite=Strict`, and
//! `Secure` when the API is told it sits behind TLS (`ApiConfig::secure_cookies`). Every
//! state-changing request of a session carries its CSRF token (a form field `csrf` or the
//! `X-CSRF-Token` header), compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::header::{ACCEPT, COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use sparkwing_state::SessionRecord;

use super::auth::{Principal, Scope};
use super::manifest::sha256_hex;
use super::{ApiError, ApiState};
use crate::tokens::{server_minted, TokenError};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sparkwing_session";
/// The header a script sends the CSRF token in (forms send the field `csrf`).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A live dashboard session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The caller, with the scopes of the token the session was made from.
    pub principal: Principal,
    /// The session's CSRF token (rendered into its pages' forms).
    pub csrf: String,
    /// The sha256 of the session secret (its key in the store).
    pub hash: String,
}

impl Session {
    fn from_record(r: SessionRecord) -> Session {
        Session {
            principal: Principal {
                name: r.principal,
                token_id: r.token_id,
                scopes: r.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
                upload: None,
                pool_uid: None,
            },
            csrf: r.csrf,
            hash: r.hash,
        }
    }

    /// 403 unless `given` is this session's CSRF token.
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), ApiError> {
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            _ => Err(ApiError::Csrf),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| ApiError::from(TokenError::Random(e.to_string())))?;
    Ok(hex::encode(buf))
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Why a token may not open a session.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefused {
    /// Unknown or revoked.
    UnknownToken,
    /// A runner's or a pool's token, or one without a scope the dashboard uses.
    NotForPeople,
}

/// Exchange `token` for a new session: its secret (the cookie's value) and record.
pub async fn login(
    st: &ApiState,
    token: &str,
) -> Result<Result<(String, SessionRecord), LoginRefused>, ApiError> {
    let Some(rec) = st.store.lookup_token(token.trim()).await? else {
        return Ok(Err(LoginRefused::UnknownToken));
    };
    let readable = rec
        .scopes
        .iter()
        .any(|s| matches!(Scope::parse(s), Some(Scope::RunsRead | Scope::Admin)));
    if server_minted(&rec) || !readable {
        return Ok(Err(LoginRefused::NotForPeople));
    }
    let secret = random_hex(32)?;
    let now = now_ms();
    let ttl = i64::try_from(st.config.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let mut expires_ms = now.saturating_add(ttl);
    if let Some(token_expiry) = rec.expires_ms {
        expires_ms = expires_ms.min(token_expiry);
    }
    let session = SessionRecord {
        hash: sha256_hex(secret.as_bytes()),
        token_id: rec.id,
        principal: rec.principal,
        scopes: rec.scopes,
        csrf: random_hex(16)?,
        created_ms: now,
        expires_ms,
    };
    st.store.meta.insert_session(&session).await?;
    Ok(Ok((secret, session)))
}

/// The live session the request's cookie names, if any: an unknown (forged) secret is none; an
/// expired session is none and is deleted.
pub async fn lookup(st: &ApiState, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let hash = sha256_hex(secret.as_bytes());
    let Some(rec) = st.store.meta.find_session(&hash).await? else {
        return Ok(None);
    };
    if rec.expires_ms <= now_ms() {
        st.store.meta.delete_session(&hash).await?;
        return Ok(None);
    }
    Ok(Some(Session::from_record(rec)))
}

/// End the session (logout).
pub async fn logout(st: &ApiState, session: &Session) -> Result<(), ApiError> {
    st.store.meta.delete_session(&session.hash).await?;
    Ok(())
}

/// The `Set-Cookie` value of a new session.
pub fn set_cookie(secret: &str, max_age_s: i64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age_s.max(0),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

/// A request of a page without a session goes to the login page; one of a stream or of JSON
/// (`/ui/…`, or `Accept: application/json`) gets 401.
pub enum NoSession {
    Login(String),
    Unauthorized,
    Failed(ApiError),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Login(next) => Redirect::to(&format!(
                "/login?next={}",
                sparkwing_dashboard::html::url_enc(&next)
            ))
            .into_response(),
            NoSession::Unauthorized => ApiError::NoSession.into_response(),
            NoSession::Failed(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<ApiState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, NoSession> {
        match lookup(st, &parts.headers).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                let wants_json = parts
                    .headers
                    .get(ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("application/json"));
                if parts.uri.path().starts_with("/ui/") || wants_json {
                    Err(NoSession::Unauthorized)
                } else {
                    let next = parts
                        .uri
                        .path_and_query()
                        .map_or("/".to_string(), |p| p.as_str().to_string());
                    Err(NoSession::Login(next))
                }
            }
            Err(e) => Err(NoSession::Failed(e)),
        }
    }
}

/// Where to go after login: a path of this site (`/…`, never `//host`), else `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, "a=1; sparkwing_session=abc ; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn dashboard_next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/runs/ci/b-1")), "/runs/ci/b-1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn dashboard_cookie_attributes() {
        assert_eq!(
            set_cookie("s", 60, false),
            "sparkwing_session=s; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        assert!(set_cookie("s", 60, true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
