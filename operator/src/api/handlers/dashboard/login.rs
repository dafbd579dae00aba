//! `GET /login` (the form), `POST /login` (an API token in, a session cookie out; the token is
//! never sent back) and `POST /logout`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::{HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use sparkwing_dashboard::html::esc;

use super::view::page;
use crate::api::session::{self, LoginRefused, Session, CSRF_HEADER};
use crate::api::{read_body, ApiError, ApiState};

/// Most bytes of a login or logout form.
const FORM_LIMIT: usize = 16 << 10;

fn login_form(next: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error-box\" role=\"alert\" id=\"login-error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    format!(
        "<section class=\"login\"><h1>Log in</h1>{error}\
         <p>Paste an API token with the <code>runs:read</code> scope (<code>runs:trigger</code> to \
         cancel runs, <code>approvals:write</code> to approve or reject gates). It is exchanged for \
         a session cookie and not kept by this page.</p>\
         <form method=\"post\" action=\"/login\" id=\"login\">\
         <label for=\"token\">API token</label> \
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" required> \
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <button type=\"submit\">Log in</button></form></section>",
        next = esc(next),
    )
}

/// `GET /login`.
pub async fn login_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let next = session::safe_next(q.get("next").map(String::as_str));
    Html(page("Log in", "", None, &login_form(&next, None))).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// A form body (`application/x-www-form-urlencoded`).
async fn form<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body, FORM_LIMIT, "form").await?;
    serde_urlencoded::from_bytes(&bytes).map_err(|e| ApiError::BadRequest(format!("form: {e}")))
}

/// A request another site's page sent: its `Origin` names another host than the one asked.
fn cross_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin == "null" || origin_host != host
}

/// The CSRF token a request carries: the `X-CSRF-Token` header, else the form field `csrf`.
pub async fn csrf_of(headers: &HeaderMap, body: Body) -> Result<Option<String>, ApiError> {
    if let Some(h) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return Ok(Some(h.to_string()));
    }
    Ok(form::<CsrfForm>(body).await.ok().and_then(|f| f.csrf))
}

/// A form body `T` and the CSRF token the request carries (the `X-CSRF-Token` header, else the
/// form's field `csrf`). The form is read as `T` only after the caller checked the token, so a
/// request without it is refused as such, whatever its form.
pub async fn form_and_csrf<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<(Result<T, ApiError>, Option<String>), ApiError> {
    let bytes = read_body(body, FORM_LIMIT, "form").await?;
    let csrf = match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(h) => Some(h.to_string()),
        None => serde_urlencoded::from_bytes::<CsrfForm>(&bytes)
            .ok()
            .and_then(|f| f.csrf),
    };
    let form = serde_urlencoded::from_bytes::<T>(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("form: {e}")));
    Ok((form, csrf))
}

/// `POST /login`: `token=…&next=…`. A token that is unknown, revoked, a runner's or a pool's,
/// or holds neither `runs:read` nor `admin` gets the form again with 401.
pub async fn login(State(st): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    if cross_site(&headers) {
        return ApiError::Csrf.into_response();
    }
    let f: LoginForm = match form(body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let next = session::safe_next(f.next.as_deref());
    let refused = |why: &str| {
        (
            StatusCode::UNAUTHORIZED,
            Html(page("Log in", "", None, &login_form(&next, Some(why)))),
        )
            .into_response()
    };
    match session::login(&st, &f.token).await {
        Err(e) => e.into_response(),
        Ok(Err(LoginRefused::UnknownToken)) => refused("That token is not known (or was revoked)."),
        Ok(Err(LoginRefused::NotForPeople)) => {
            refused("That token cannot open the dashboard: it needs the runs:read scope.")
        }
        Ok(Ok((secret, rec))) => {
            tracing::info!(principal = %rec.principal, "dashboard login");
            let max_age = (rec.expires_ms - rec.created_ms) / 1000;
            let cookie = session::set_cookie(&secret, max_age, st.config.secure_cookies);
            let mut res = StatusCode::SEE_OTHER.into_response();
            let h = res.headers_mut();
            if let (Ok(c), Ok(l)) = (HeaderValue::from_str(&cookie), HeaderValue::from_str(&next)) {
                h.insert(SET_COOKIE, c);
                h.insert(LOCATION, l);
            }
            res
        }
    }
}

/// `POST /logout` (with the session's CSRF token): the session is deleted and its cookie cleared.
pub async fn logout(
    State(st): State<ApiState>,
    s: Session,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    s.check_csrf(csrf_of(&headers, body).await?.as_deref())?;
    session::logout(&st, &s).await?;
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static("/login"));
    if let Ok(c) = HeaderValue::from_str(&session::clear_cookie(st.config.secure_cookies)) {
        h.insert(SET_COOKIE, c);
    }
    Ok(res)
}
