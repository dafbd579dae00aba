//! `/api/v1/runs/{ns}/{name}/gates/{gate}`: decisions on the approval gates of cluster runs.
//! `POST` records one (scope `approvals:write`, or a principal the run's Pipeline lists in
//! `spec.approvers`; the run's own runner token records its gate's timeout), `GET` reads it
//! (`runs:read`, or the run's runner, which relays it to its engine). The cluster dashboard's
//! Approve and Reject buttons go through [`decide`] and [`check_decider`] too.
//!
//! Whether a gate exists and waits comes from the job states its runner reports (a gate's report
//! says `"gate": true`; it is `waiting` once its needs ended); what may be decided is core's
//! rule (`sparkwing_core::gate::check_decision`), as for a local run; who may decide is core's
//! `gate::may_decide`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kube::ResourceExt;
use serde_json::Value;
use sparkwing_api::wire::{GateAnswer, GateDecision, GateDecisionRequest};
use sparkwing_core::gate::{
    self, Decided, DeciderRight, Decision, DecisionError, GateView, RunApprovers,
};
use sparkwing_core::state::JobState;
use sparkwing_core::RunPhase;
use sparkwing_state::{GateRecorded, RunKey};

use crate::api::auth::{Principal, Scope};
use crate::api::{check_job_name, check_object_name, read_json, ApiError, ApiState};
use crate::labels::PIPELINE_ANNOTATION;

/// Longest comment kept (bytes).
pub const MAX_GATE_COMMENT: usize = 2048;

/// The phase of run `ns/name`, live or archived; 404 when neither.
async fn run_phase(st: &ApiState, ns: &str, name: &str) -> Result<RunPhase, ApiError> {
    if let Some(run) = st.runs.get(ns, name).await? {
        return Ok(run.status.as_ref().map(|s| s.phase).unwrap_or_default());
    }
    match st.store.archived(ns, name).await? {
        Some(summary) => Ok(RunPhase::from_phase_str(&summary.phase).unwrap_or(RunPhase::Failed)),
        None => Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
    }
}

/// A stored decision as the wire and core hold it.
fn decided_of(gate: &str, d: sparkwing_state::GateDecision) -> Result<Decided, ApiError> {
    let decision = Decision::parse(&d.decision).ok_or_else(|| {
        ApiError::Internal(format!(
            "gate {gate}: stored decision {:?} is neither approve nor reject",
            d.decision
        ))
    })?;
    Ok(Decided {
        decision,
        by: d.by,
        at_ms: d.at_ms,
        comment: d.comment,
        timed_out: d.timed_out,
    })
}

/// A gate of a cluster run: its state and decision, and the message its runner reported
/// (`"gateMessage"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunGate {
    pub view: GateView,
    pub message: Option<String>,
}

/// The gates among a run's reported job states (a job whose report says `"gate": true`, or that
/// is `waiting`), in job order, with their recorded `decisions`.
pub fn gates_of<'a>(
    jobs: impl IntoIterator<Item = (&'a String, &'a Value)>,
    decisions: Vec<(String, sparkwing_state::GateDecision)>,
) -> Result<Vec<RunGate>, ApiError> {
    let mut decided: BTreeMap<String, Decided> = BTreeMap::new();
    for (g, d) in decisions {
        let d = decided_of(&g, d)?;
        decided.insert(g, d);
    }
    let mut gates = Vec::new();
    for (job, report) in jobs {
        let state = report
            .get("state")
            .and_then(|s| serde_json::from_value::<JobState>(s.clone()).ok());
        let is_gate = report.get("gate").and_then(Value::as_bool) == Some(true)
            || state == Some(JobState::Waiting);
        if !is_gate {
            continue;
        }
        gates.push(RunGate {
            view: GateView {
                decided: decided.remove(job),
                gate: job.clone(),
                state: state.unwrap_or(JobState::Pending),
            },
            message: report
                .get("gateMessage")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    Ok(gates)
}

/// The run's gates as its runner reported them, with their recorded decisions.
async fn gate_views(st: &ApiState, key: &RunKey) -> Result<Vec<GateView>, ApiError> {
    let jobs = st.store.meta.job_states(key).await?;
    let decisions = st.store.meta.gate_decisions(key).await?;
    Ok(gates_of(jobs.iter().map(|(j, v)| (j, v)), decisions)?
        .into_iter()
        .map(|g| g.view)
        .collect())
}

/// Whether `p` may decide the gates of run `ns/name` (core's `gate::may_decide`): with the
/// scope `approvals:write` (or admin); without it, when the live run was started from a Pipeline
/// (its `sparkwing.dev/pipeline` annotation, set by webhook deliveries and schedules) whose
/// `spec.approvers` lists `p`'s principal. A runner's or a pool's token is never an approver.
/// 403 naming the scope and what else is missing.
pub async fn check_decider(
    st: &ApiState,
    p: &Principal,
    ns: &str,
    name: &str,
) -> Result<DeciderRight, ApiError> {
    let scope = Scope::ApprovalsWrite;
    if p.has(&scope) {
        return Ok(DeciderRight::Scope);
    }
    if p.server_minted() {
        return Err(ApiError::forbidden(scope));
    }
    let run_ref = format!("{ns}/{name}");
    let run = st.runs.get(ns, name).await?;
    let pipeline_name = run
        .as_ref()
        .and_then(|r| r.annotations().get(PIPELINE_ANNOTATION).cloned())
        .filter(|n| !n.is_empty());
    let pipeline_ref = pipeline_name
        .as_deref()
        .map(|n| format!("{ns}/{n}"))
        .unwrap_or_default();
    let pipeline = match &pipeline_name {
        Some(n) => st.webhooks.pipelines.get(ns, n).await?,
        None => None,
    };
    let approvers = match (&run, &pipeline_name, &pipeline) {
        (None, _, _) => RunApprovers::NotLive { run: &run_ref },
        (Some(_), None, _) => RunApprovers::NoPipeline { run: &run_ref },
        (Some(_), Some(_), None) => RunApprovers::PipelineGone {
            pipeline: &pipeline_ref,
        },
        (Some(_), Some(_), Some(pl)) => RunApprovers::Listed {
            pipeline: &pipeline_ref,
            approvers: &pl.spec.approvers,
        },
    };
    gate::may_decide(&p.name, false, approvers).map_err(|why| ApiError::ForbiddenBecause {
        scope: scope.to_string(),
        why: why.to_string(),
    })
}

fn refused(e: DecisionError) -> ApiError {
    match e {
        DecisionError::UnknownGate { .. } => ApiError::NotFound(e.to_string()),
        _ => ApiError::Conflict(e.to_string()),
    }
}

/// `POST .../gates/{gate}` with `{"decision": "approve"|"reject", "comment"?}`: record who (the
/// token's principal: one with `approvals:write`, or an approver of the run's Pipeline), when
/// and why on a waiting gate of a live run; the first decision stands (a second is a 409 naming
/// it). The run's runner records its gate's timeout with
/// `"timedOut": true` (by `timeout`).
pub async fn decide(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, gate_id)): Path<(String, String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<GateAnswer>), ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    check_job_name(&gate_id)?;
    let req: GateDecisionRequest =
        read_json(body, st.config.limits.json_body, "gate decision").await?;
    let by = if req.timed_out {
        // Only the run's runner knows its gate's timeout.
        p.require(Scope::run(&ns, &name))?;
        gate::TIMEOUT_DECIDER.to_string()
    } else {
        check_decider(&st, &p, &ns, &name).await?;
        p.name.clone()
    };
    let comment = req.comment.map(|c| c.trim().to_string());
    if let Some(c) = &comment {
        if c.len() > MAX_GATE_COMMENT || c.chars().any(|ch| ch.is_control() && ch != '\n') {
            return Err(ApiError::BadRequest(format!(
                "gate decision: the comment must be at most {MAX_GATE_COMMENT} bytes, without control characters"
            )));
        }
    }
    let phase = run_phase(&st, &ns, &name).await?;
    let key = RunKey::new(&ns, &name);
    let run_ref = format!("{ns}/{name}");
    let views = gate_views(&st, &key).await?;
    gate::check_decision(&run_ref, phase, &views, &gate_id).map_err(refused)?;
    let wanted = Decided {
        decision: req.decision,
        by,
        at_ms: now_ms(),
        comment: comment.filter(|c| !c.is_empty()),
        timed_out: req.timed_out,
    };
    let record = sparkwing_state::GateDecision {
        decision: wanted.decision.as_str().to_string(),
        by: wanted.by.clone(),
        at_ms: wanted.at_ms,
        comment: wanted.comment.clone(),
        timed_out: wanted.timed_out,
    };
    match st
        .store
        .meta
        .record_gate_decision(&key, &gate_id, &record)
        .await?
    {
        GateRecorded::First => {}
        GateRecorded::Standing(d) => {
            // Someone (or the timeout) decided between the check and the write.
            return Err(refused(DecisionError::AlreadyDecided {
                run: run_ref,
                gate: gate_id.clone(),
                decided: Box::new(decided_of(&gate_id, d)?),
            }));
        }
    }
    tracing::info!(%ns, %name, gate = %gate_id, decision = %wanted.decision, by = %wanted.by, "gate decided");
    // A run parked while this gate waited resumes.
    super::park::gate_decided(&st, &ns, &name, &gate_id).await;
    Ok((
        StatusCode::CREATED,
        Json(GateAnswer {
            namespace: ns,
            name,
            gate: gate_id,
            decided: Some(GateDecision::from(&wanted)),
        }),
    ))
}

/// `GET .../gates/{gate}`: the decision recorded on a gate (`decided` absent: none yet); 404 for
/// an unknown run.
pub async fn get_decision(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name, gate_id)): Path<(String, String, String)>,
) -> Result<Json<GateAnswer>, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    check_job_name(&gate_id)?;
    p.require_read_run(&ns, &name)?;
    let key = RunKey::new(&ns, &name);
    let decided = match st.store.meta.gate_decision(&key, &gate_id).await? {
        Some(d) => Some(GateDecision::from(&decided_of(&gate_id, d)?)),
        None => {
            // Known run, no decision yet; or no such run.
            run_phase(&st, &ns, &name).await?;
            None
        }
    };
    Ok(Json(GateAnswer {
        namespace: ns,
        name,
        gate: gate_id,
        decided,
    }))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
