//! A cluster run page's approval gates: the section (rendered by `sparkwing_dashboard::gates`
//! from the gates its runner reported and the decisions in the state layer, as the local page's)
//! and `POST /runs/{ns}/{name}/gates/{gate}`, what its Approve and Reject buttons post, which
//! records the decision through the API's own `POST /api/v1/runs/{ns}/{name}/gates/{gate}`
//! handler (the same checks and messages).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sparkwing_core::JobState;
use sparkwing_dashboard::gates::{gates_html, GateButtons};
use sparkwing_dashboard::html::url_enc;
use sparkwing_dashboard::model::Gate;
use sparkwing_state::RunKey;

use super::login::form_and_csrf;
use super::view::RunView;
use crate::api::handlers::runs;
use crate::api::session::Session;
use crate::api::{ApiError, ApiState};

/// Whether the session may decide the gates of run `ns/name` (`approvals:write`, admin, or an
/// approver of the run's Pipeline). When that cannot be found out (the Kubernetes API failed),
/// the page shows no buttons rather than no page (a post would be checked again anyway).
async fn may_decide(st: &ApiState, session: &Session, ns: &str, name: &str) -> bool {
    match runs::check_decider(st, &session.principal, ns, name).await {
        Ok(_) => true,
        Err(ApiError::Forbidden { .. } | ApiError::ForbiddenBecause { .. }) => false,
        Err(e) => {
            tracing::warn!(%ns, %name, error = %e, "cannot tell whether the session may decide the run's gates");
            false
        }
    }
}

/// The run page's gates section: each gate the runner reported, its message and state, who
/// decided when and why; on a waiting gate of a live run, for a session that may decide, a
/// comment field and the Approve and Reject buttons (a form with the session's CSRF token).
/// Empty for a run without gates.
pub async fn gates_section(
    st: &ApiState,
    session: &Session,
    v: &RunView,
) -> Result<String, ApiError> {
    let jobs = v.jobs.clone().unwrap_or_default();
    // Decisions are read only for a run that has gates.
    if runs::gates_of(&jobs, Vec::new())?.is_empty() {
        return Ok(String::new());
    }
    let decisions = st
        .store
        .meta
        .gate_decisions(&RunKey::new(&v.namespace, &v.name))
        .await?;
    let gates = runs::gates_of(&jobs, decisions)?;
    let live = v.live && !v.phase.is_terminal();
    let undecided = gates
        .iter()
        .any(|g| g.view.state == JobState::Waiting && g.view.decided.is_none());
    let may = live && undecided && may_decide(st, session, &v.namespace, &v.name).await;
    let base = format!("/runs/{}/{}/gates", url_enc(&v.namespace), url_enc(&v.name));
    let buttons = if may {
        GateButtons::Form {
            base: &base,
            csrf: &session.csrf,
        }
    } else {
        GateButtons::Hidden
    };
    let shown: Vec<Gate> = gates
        .into_iter()
        .map(|g| Gate {
            gate: g.view.gate,
            message: g.message,
            state: g.view.state,
            decided: g.view.decided,
        })
        .collect();
    Ok(gates_html(&shown, live, buttons))
}

/// The form the buttons post.
#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /runs/{ns}/{name}/gates/{gate}` with `decision=approve|reject&comment=…&csrf=…`: the
/// session's CSRF token (403 `csrf` without it), then the decision as the API's `POST
/// .../gates/{gate}` records it, as the session's principal (its refusals answered as the API
/// answers them); back to the run's page (303).
pub async fn decide(
    State(st): State<ApiState>,
    session: Session,
    Path((ns, name, gate)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (form, csrf) = form_and_csrf::<DecisionForm>(&headers, body).await?;
    session.check_csrf(csrf.as_deref())?;
    let form = form?;
    let mut request = serde_json::Map::new();
    if let Some(d) = form.decision {
        request.insert("decision".into(), d.into());
    }
    if let Some(c) = form.comment {
        request.insert("comment".into(), c.into());
    }
    let _recorded = runs::decide_gate(
        State(st),
        session.principal.clone(),
        Path((ns.clone(), name.clone(), gate)),
        Body::from(serde_json::Value::Object(request).to_string()),
    )
    .await?;
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(l) = HeaderValue::from_str(&format!("/runs/{ns}/{name}")) {
        res.headers_mut().insert(LOCATION, l);
    }
    Ok(res)
}
