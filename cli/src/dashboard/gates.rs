//! Approval gates in the dashboard: the run page's gates section (Approve/Reject on a waiting
//! gate, rendered by `sparkwing_dashboard::gates`) and `POST /api/runs/{id}/gates/{gate}`, which records the decision exactly as
//! `sparkwing runs approve|reject` does (`sparkwing_engine::gates::decide`).

use super::api::ApiError;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sparkwing_core::gate::{Decision, DecisionError};
use sparkwing_dashboard::gates::{gates_html as render_gates, GateButtons};
use sparkwing_dashboard::html::url_enc;
use sparkwing_dashboard::model::Gate;
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

/// The run page's gates, rendered by the shared dashboard: each gate's state, who decided when
/// and why, and on a waiting gate of a live run the Approve and Reject buttons (with a comment
/// field) that the page script posts to [`decide`]. Empty without gates.
pub fn gates_html(run: &RunRecord, gates: &[GateRecord]) -> String {
    let shown: Vec<Gate> = gates
        .iter()
        .map(|g| Gate {
            gate: g.gate.clone(),
            message: g.message.clone(),
            state: g.state,
            decided: g.decided.clone(),
        })
        .collect();
    let base = format!("/api/runs/{}/gates", url_enc(&run.id));
    render_gates(
        &shown,
        !run.status.is_terminal(),
        GateButtons::Script { base: &base },
    )
}
