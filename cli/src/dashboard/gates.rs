//! Approval gates in the dashboard: the run page's gates section (Approve/Reject on a waiting
//! gate) and `POST /api/runs/{id}/gates/{gate}`, which records the decision exactly as
//! `sparkwing runs approve|reject` does (`sparkwing_engine::gates::decide`).

use super::api::ApiError;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sparkwing_core::gate::{self, Decision, DecisionError};
use sparkwing_core::JobState;
use sparkwing_dashboard::html::{esc, url_enc};
use sparkwing_engine::gates::DecideError;
use sparkwing_engine::store::{GateRecord, RunRecord, Store, StoreError};

/// The body of a decision: `{"decision": "approve"|"reject", "comment"?, "by"?}`.
#[derive(Debug, Deserialize)]
pub struct DecisionBody {
    pub decision: String,
    #[serde(default)]
    pub comment: Option<String>,
    /// Who decides, as recorded (default: the OS user running the dashboard).
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /api/runs/{id}/gates/{gate}`: record a decision on a waiting gate. A JSON body only, so
/// a page of another site cannot post one (its request would need a CORS preflight this server
/// never answers).
pub async fn decide(
    State(state): State<AppState>,
    Path((id, gate_id)): Path<(String, String)>,
    Json(body): Json<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(decision) = Decision::parse(&body.decision) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown decision {:?}; use approve or reject",
                body.decision
            ),
        ));
    };
    let root = state.home.root.clone();
    let by = body
        .by
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(sparkwing_engine::user_name);
    let gate_for_task = gate_id.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&root)?;
        sparkwing_engine::gates::decide(
            &mut store,
            &id,
            &gate_for_task,
            decision,
            &by,
            body.comment,
        )
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (run, decided) = result.map_err(|e| match e {
        DecideError::Store(StoreError::RunNotFound(id)) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("run {id} not found"))
        }
        DecideError::Store(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        DecideError::Refused(r @ DecisionError::UnknownGate { .. }) => {
            ApiError::new(StatusCode::NOT_FOUND, r.to_string())
        }
        DecideError::Refused(r) => ApiError::new(StatusCode::CONFLICT, r.to_string()),
    })?;
    Ok(Json(json!({
        "run": run,
        "gate": gate_id,
        "decision": decided.decision,
        "by": decided.by,
        "at": decided.at_ms,
        "comment": decided.comment,
    })))
}

/// The run page's gates: each gate's state, who decided when and why, and on a waiting gate of a
/// live run the Approve and Reject buttons (with a comment field). Empty without gates.
pub fn gates_html(run: &RunRecord, gates: &[GateRecord]) -> String {
    if gates.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h2 id=\"h-gates\">Approval gates</h2><ul class=\"gates\">");
    for g in gates {
        let message = g
            .message
            .as_deref()
            .map(|m| format!(" <span class=\"gate-message\">{}</span>", esc(m)))
            .unwrap_or_default();
        let body = match (&g.decided, g.state) {
            (Some(d), _) => format!(
                "<span class=\"gate-decided\" data-decision=\"{}\">{}</span> <time data-ts=\"{}\"></time>",
                d.decision,
                esc(&gate::reason(d)),
                d.at_ms
            ),
            (None, JobState::Waiting) if !run.status.is_terminal() => format!(
                "<span class=\"gate-waiting\">waiting for a decision</span> \
                 <span class=\"gate-form\" data-gate-run=\"{run}\" data-gate=\"{gate}\" data-gate-url=\"/api/runs/{runu}/gates/{gateu}\">\
                 <label class=\"visually-hidden\" for=\"gate-comment-{gate}\">Comment</label>\
                 <input type=\"text\" id=\"gate-comment-{gate}\" class=\"gate-comment\" placeholder=\"Comment (optional)\">\
                 <button type=\"button\" data-gate-decision=\"approve\">Approve</button> \
                 <button type=\"button\" data-gate-decision=\"reject\">Reject</button>\
                 <span class=\"gate-result muted\" aria-live=\"polite\"></span></span>",
                run = esc(&run.id),
                gate = esc(&g.gate),
                runu = url_enc(&run.id),
                gateu = url_enc(&g.gate),
            ),
            (None, state) => format!("<span class=\"muted\">{state}</span>"),
        };
        out.push_str(&format!(
            "<li data-gate-id=\"{}\"><code>{}</code>{message} {body}</li>",
            esc(&g.gate),
            esc(&g.gate)
        ));
    }
    out.push_str("</ul>");
    out
}
