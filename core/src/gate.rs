//! Approval gates: a job of the plan that runs no process and waits for a person's decision
//! (`sparkwing runs approve|reject`), or for its timeout's default outcome (`docs/authoring.md`).
//! This module decides what a decision may be recorded on, who may record one on a cluster run
//! (`may_decide`: the scope `approvals:write`, or the run's Pipeline's approvers), what a gate's
//! end means for the run, and when a timeout decides instead.

use crate::state::{JobState, RunPhase};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a gate declares in the plan (`"gate"` on a job, `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSpec {
    /// Shown to whoever decides (`runs status`, the dashboard).
    #[serde(default)]
    pub message: Option<String>,
    /// How long the gate waits once it is waiting; none waits until decided or cancelled.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The decision a timeout records (default reject: nobody approved).
    #[serde(default = "default_on_timeout")]
    pub on_timeout: Decision,
}

fn default_on_timeout() -> Decision {
    Decision::Reject
}

/// A decision on a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    /// The past tense, as a decision is shown (`approved by ana`).
    pub fn past(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        [Decision::Approve, Decision::Reject]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recorded decision: who (an OS user, `--as`, or `timeout`), when, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    pub decision: Decision,
    pub by: String,
    pub at_ms: i64,
    pub comment: Option<String>,
    /// The gate's timeout decided, not a person.
    pub timed_out: bool,
}

/// The name a timeout's decision is recorded under.
pub const TIMEOUT_DECIDER: &str = "timeout";

/// The reason recorded on the gate's job: `approved by ana: looks good`, `rejected by timeout`.
pub fn reason(d: &Decided) -> String {
    match &d.comment {
        Some(c) if !c.is_empty() => format!("{} by {}: {c}", d.decision.past(), d.by),
        _ => format!("{} by {}", d.decision.past(), d.by),
    }
}

/// When a gate waiting since `waiting_since_ms` times out (`None`: it waits until decided).
pub fn deadline(spec: &GateSpec, waiting_since_ms: i64) -> Option<i64> {
    let limit = spec.timeout_ms?;
    Some(waiting_since_ms.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)))
}

/// The decision a timeout records, if the gate has waited past its timeout by `now_ms`.
pub fn timed_out(spec: &GateSpec, waiting_since_ms: i64, now_ms: i64) -> Option<Decided> {
    let limit = spec.timeout_ms?;
    let deadline = deadline(spec, waiting_since_ms)?;
    (now_ms >= deadline).then(|| Decided {
        decision: spec.on_timeout,
        by: TIMEOUT_DECIDER.to_string(),
        at_ms: now_ms,
        comment: Some(format!("no decision within {}", short_duration(limit))),
        timed_out: true,
    })
}

/// `45s`, `1m`, `1m30s`, `2h`: how a timeout reads in its decision's comment.
fn short_duration(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// Why a decision cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("run {run} has no gate {gate:?}{}", known_list(.known))]
    UnknownGate {
        run: String,
        gate: String,
        known: Vec<String>,
    },
    #[error("run {run} already finished ({status}); its gates can no longer be decided")]
    RunFinished { run: String, status: String },
    #[error("gate {gate:?} of run {run} was already {}", decided_text(.decided))]
    AlreadyDecided {
        run: String,
        gate: String,
        decided: Box<Decided>,
    },
    #[error("gate {gate:?} of run {run} is not waiting for a decision (it is {state}){}", not_yet(.state))]
    NotWaiting {
        run: String,
        gate: String,
        state: JobState,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "; it has no gates".to_string()
    } else {
        format!("; its gates: {}", known.join(", "))
    }
}

fn decided_text(d: &Decided) -> String {
    reason(d)
}

fn not_yet(state: &JobState) -> String {
    if *state == JobState::Pending {
        "; a gate can be decided once the jobs it needs have finished".to_string()
    } else {
        String::new()
    }
}

/// One gate of a run as recorded: its job's state and its decision, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateView {
    pub gate: String,
    pub state: JobState,
    pub decided: Option<Decided>,
}

/// Whether a decision on `gate` of a run in `status` may be recorded now: only on a waiting gate
/// of a live run that nobody decided yet.
pub fn check_decision(
    run: &str,
    status: RunPhase,
    gates: &[GateView],
    gate: &str,
) -> Result<(), DecisionError> {
    let Some(g) = gates.iter().find(|g| g.gate == gate) else {
        return Err(DecisionError::UnknownGate {
            run: run.to_string(),
            gate: gate.to_string(),
            known: gates.iter().map(|g| g.gate.clone()).collect(),
        });
    };
    if let Some(d) = &g.decided {
        return Err(DecisionError::AlreadyDecided {
            run: run.to_string(),
            gate: gate.to_string(),
            decided: Box::new(d.clone()),
        });
    }
    if status.is_terminal() {
        return Err(DecisionError::RunFinished {
            run: run.to_string(),
            status: status.local_str().to_string(),
        });
    }
    if g.state != JobState::Waiting {
        return Err(DecisionError::NotWaiting {
            run: run.to_string(),
            gate: gate.to_string(),
            state: g.state,
        });
    }
    Ok(())
}

/// Where a local run stands with its box slot (`--sw-box-slots`, `docs/box-slots.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxSlotHold {
    /// The run holds a slot.
    Held,
    /// The run gave its slot up while only gates waited.
    Released,
    /// The run waits in the queue for a slot again.
    Queued,
}

/// What a run with a box slot does with it next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxSlotStep {
    /// Nothing changes.
    Keep,
    /// Give the slot up: nothing but gates is in flight. `reason` says which gates it waits for
    /// (`waiting for gate approve`).
    Release { reason: String },
    /// A job is ready to start without a slot: queue for one (FIFO, like a new run).
    Queue,
    /// The run is queued but no job needs the slot any more (they were cancelled): leave the queue.
    LeaveQueue,
}

/// The box slot rule of a run whose gates wait: a run holds its slot while any job holds a worker
/// (`busy`: attempts running, waiting for their concurrency group, or waiting to retry, and jobs
/// ready to start); when nothing but gates is in flight (`waiting_gates`, by id) it gives the
/// slot up, and once a job is ready again it queues for one.
pub fn box_slot_step(now: BoxSlotHold, busy: usize, waiting_gates: &[&str]) -> BoxSlotStep {
    match now {
        BoxSlotHold::Held => match only_gates_wait(busy, waiting_gates) {
            Some(reason) => BoxSlotStep::Release { reason },
            None => BoxSlotStep::Keep,
        },
        BoxSlotHold::Released if busy > 0 => BoxSlotStep::Queue,
        BoxSlotHold::Queued if busy == 0 => BoxSlotStep::LeaveQueue,
        _ => BoxSlotStep::Keep,
    }
}

/// Whether nothing but gates is in flight: no job holds a worker (`busy`: attempts running,
/// waiting for their concurrency group or to retry, jobs ready to start) and gates wait
/// (`waiting_gates`, by id). Then the reason it waits (`waiting for gate approve`, `waiting for
/// gates a, b`): a local run gives its box slot up ([`box_slot_step`]), a cluster run's
/// coordinator parks ([`Parked`]).
pub fn only_gates_wait(busy: usize, waiting_gates: &[&str]) -> Option<String> {
    if busy > 0 {
        return None;
    }
    match waiting_gates {
        [] => None,
        [one] => Some(format!("waiting for gate {one}")),
        many => Some(format!("waiting for gates {}", many.join(", "))),
    }
}

/// The annotation on a `PipelineRun` in which the API records that the run's coordinator
/// parked (JSON of [`Parked`]).
pub const PARKED_ANNOTATION: &str = "sparkwing.dev/parked";

/// A cluster run whose coordinator (its runner, attempt `attempt`) parked: nothing ran but
/// gates that waited for a decision, so it reported this and exited, leaving the run live with
/// no runner pod (`docs/runner.md`). The API records it on the run ([`PARKED_ANNOTATION`]) and
/// sets `decided` once a person decides one of `gates`; the reconcile starts the next attempt,
/// which resumes from the recorded job states, when `decided` is set, when one of `gates` has a
/// decision recorded in the state store (read by the operator, so a mark that could not be
/// written strands nothing), or when `deadline_ms` (the earliest timeout of the gates) has
/// passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    pub attempt: u32,
    pub gates: Vec<String>,
    /// Unix milliseconds; absent: no gate has a timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    #[serde(default)]
    pub decided: bool,
}

impl Parked {
    /// The annotation's value.
    pub fn parse(s: &str) -> Result<Parked, String> {
        serde_json::from_str(s).map_err(|e| format!("{PARKED_ANNOTATION}: {e}"))
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `gate approve`, `gates a, b`: how the waiting gates read in a status message.
    pub fn gates_text(&self) -> String {
        match self.gates.as_slice() {
            [one] => format!("gate {one}"),
            many => format!("gates {}", many.join(", ")),
        }
    }

    /// Whether one of the parked gates was decided: the record says so, or `recorded` (the
    /// run's gates with a decision in the state store) names one of them.
    pub fn is_decided(&self, recorded: &[String]) -> bool {
        self.decided || self.gates.iter().any(|g| recorded.contains(g))
    }

    /// Whether the next attempt starts now: a gate was decided ([`Parked::is_decided`]) or the
    /// earliest timeout passed.
    pub fn resumes(&self, now_ms: i64, recorded: &[String]) -> bool {
        self.is_decided(recorded) || self.deadline_ms.is_some_and(|d| now_ms >= d)
    }
}

/// Who besides holders of the scope `approvals:write` may decide a run's gates: the approvers
/// of the Pipeline the run was started from (its `spec.approvers`, principals as tokens name
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunApprovers<'a> {
    /// The run does not exist or no longer does (it finished and was archived or removed).
    NotLive { run: &'a str },
    /// The run was not started from a Pipeline (triggered through the API, applied directly).
    NoPipeline { run: &'a str },
    /// The Pipeline the run was started from (`namespace/name`) no longer exists.
    PipelineGone { pipeline: &'a str },
    /// The approvers the run's Pipeline lists.
    Listed {
        pipeline: &'a str,
        approvers: &'a [String],
    },
}

/// Why a caller may decide a run's gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeciderRight {
    /// It holds `approvals:write` (or admin).
    Scope,
    /// It is among the approvers of the run's Pipeline.
    Approver,
}

/// Why a caller without `approvals:write` may not decide a run's gates: what is missing besides
/// the scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotADecider {
    #[error("run {run} is not live (unknown, or finished and removed), so no Pipeline's approvers apply")]
    NotLive { run: String },
    #[error("run {run} was not started from a Pipeline, so it has no approvers")]
    NoPipeline { run: String },
    #[error("the run's Pipeline {pipeline} no longer exists, so it has no approvers")]
    PipelineGone { pipeline: String },
    #[error("Pipeline {pipeline} lists no approvers (spec.approvers)")]
    NoApprovers { pipeline: String },
    #[error("{principal} is not in spec.approvers of Pipeline {pipeline}")]
    NotListed { principal: String, pipeline: String },
}

/// Whether `principal` may decide the gates of a run: with the scope `approvals:write`
/// (`holds_scope`, admin included) always; without it only when the run's Pipeline lists it
/// among its approvers (compared exactly, as tokens name principals).
pub fn may_decide(
    principal: &str,
    holds_scope: bool,
    approvers: RunApprovers<'_>,
) -> Result<DeciderRight, NotADecider> {
    if holds_scope {
        return Ok(DeciderRight::Scope);
    }
    match approvers {
        RunApprovers::NotLive { run } => Err(NotADecider::NotLive {
            run: run.to_string(),
        }),
        RunApprovers::NoPipeline { run } => Err(NotADecider::NoPipeline {
            run: run.to_string(),
        }),
        RunApprovers::PipelineGone { pipeline } => Err(NotADecider::PipelineGone {
            pipeline: pipeline.to_string(),
        }),
        RunApprovers::Listed {
            pipeline,
            approvers: [],
        } => Err(NotADecider::NoApprovers {
            pipeline: pipeline.to_string(),
        }),
        RunApprovers::Listed {
            pipeline,
            approvers,
        } => {
            if approvers.iter().any(|a| a == principal) {
                Ok(DeciderRight::Approver)
            } else {
                Err(NotADecider::NotListed {
                    principal: principal.to_string(),
                    pipeline: pipeline.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(decision: Decision, by: &str, comment: Option<&str>) -> Decided {
        Decided {
            decision,
            by: by.into(),
            at_ms: 5,
            comment: comment.map(Into::into),
            timed_out: false,
        }
    }

    #[test]
    fn the_reason_names_who_decided_and_why() {
        assert_eq!(
            reason(&decided(Decision::Reject, "bo", Some("not today"))),
            "rejected by bo: not today"
        );
        assert_eq!(
            reason(&decided(Decision::Approve, "ana", None)),
            "approved by ana"
        );
        assert_eq!(
            reason(&decided(Decision::Approve, "ana", Some("ok"))),
            "approved by ana: ok"
        );
    }

    #[test]
    fn timeout_decides_the_default_outcome_only_after_the_deadline() {
        let spec = GateSpec {
            message: None,
            timeout_ms: Some(60_000),
            on_timeout: Decision::Approve,
        };
        assert_eq!(timed_out(&spec, 1_000, 60_999), None);
        let d = timed_out(&spec, 1_000, 61_000).expect("deadline reached");
        assert_eq!(d.decision, Decision::Approve);
        assert!(d.timed_out);
        assert_eq!(d.by, TIMEOUT_DECIDER);
        assert_eq!(reason(&d), "approved by timeout: no decision within 1m");
        let forever = GateSpec {
            timeout_ms: None,
            ..spec
        };
        assert_eq!(timed_out(&forever, 0, i64::MAX), None);
        // The default outcome is reject.
        let parsed: GateSpec = serde_json::from_str(r#"{"timeout_ms":5}"#).unwrap();
        assert_eq!(parsed.on_timeout, Decision::Reject);
    }

    fn gates(state: JobState, decided: Option<Decided>) -> Vec<GateView> {
        vec![GateView {
            gate: "approve-prod".into(),
            state,
            decided,
        }]
    }

    #[test]
    fn decisions_are_recorded_only_on_a_waiting_undecided_gate_of_a_live_run() {
        let live = RunPhase::Running;
        assert_eq!(
            check_decision("r", live, &gates(JobState::Waiting, None), "approve-prod"),
            Ok(())
        );
        let e = check_decision("r", live, &gates(JobState::Waiting, None), "nope").unwrap_err();
        assert!(matches!(e, DecisionError::UnknownGate { .. }));
        assert!(e.to_string().contains("its gates: approve-prod"), "{e}");
        let e = check_decision("r", live, &[], "nope").unwrap_err();
        assert!(e.to_string().contains("it has no gates"), "{e}");
        let e = check_decision(
            "r",
            RunPhase::Succeeded,
            &gates(JobState::Cancelled, None),
            "approve-prod",
        )
        .unwrap_err();
        assert!(matches!(e, DecisionError::RunFinished { .. }), "{e}");
        let e = check_decision(
            "r",
            live,
            &gates(
                JobState::Success,
                Some(decided(Decision::Approve, "ana", None)),
            ),
            "approve-prod",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "gate \"approve-prod\" of run r was already approved by ana"
        );
        let e =
            check_decision("r", live, &gates(JobState::Pending, None), "approve-prod").unwrap_err();
        assert!(e.to_string().contains("it is pending"), "{e}");
    }

    #[test]
    fn the_box_slot_is_given_up_while_only_gates_wait_and_taken_again_for_a_job() {
        use BoxSlotHold::*;
        // A job in flight (running, retrying, or ready to start) keeps the slot.
        assert_eq!(box_slot_step(Held, 1, &["approve"]), BoxSlotStep::Keep);
        assert_eq!(box_slot_step(Held, 0, &[]), BoxSlotStep::Keep);
        assert_eq!(
            box_slot_step(Held, 0, &["approve"]),
            BoxSlotStep::Release {
                reason: "waiting for gate approve".into()
            }
        );
        assert_eq!(
            box_slot_step(Held, 0, &["a", "b"]),
            BoxSlotStep::Release {
                reason: "waiting for gates a, b".into()
            }
        );
        // Released: stays so while only gates wait (or nothing is left), queues for a ready job.
        assert_eq!(box_slot_step(Released, 0, &["approve"]), BoxSlotStep::Keep);
        assert_eq!(box_slot_step(Released, 0, &[]), BoxSlotStep::Keep);
        assert_eq!(box_slot_step(Released, 1, &[]), BoxSlotStep::Queue);
        assert_eq!(box_slot_step(Released, 2, &["b"]), BoxSlotStep::Queue);
        // Queued: waits while a job needs the slot; leaves the queue once none does.
        assert_eq!(box_slot_step(Queued, 1, &[]), BoxSlotStep::Keep);
        assert_eq!(box_slot_step(Queued, 0, &["b"]), BoxSlotStep::LeaveQueue);
        assert_eq!(box_slot_step(Queued, 0, &[]), BoxSlotStep::LeaveQueue);
    }

    #[test]
    fn a_coordinator_parks_only_when_nothing_but_gates_waits_and_its_record_round_trips() {
        assert_eq!(only_gates_wait(1, &["approve"]), None);
        assert_eq!(only_gates_wait(0, &[]), None);
        assert_eq!(
            only_gates_wait(0, &["approve"]).as_deref(),
            Some("waiting for gate approve")
        );
        let p = Parked::parse(r#"{"attempt":2,"gates":["a","b"],"deadlineMs":9}"#).unwrap();
        assert_eq!(
            p,
            Parked {
                attempt: 2,
                gates: vec!["a".into(), "b".into()],
                deadline_ms: Some(9),
                decided: false,
            }
        );
        assert_eq!(Parked::parse(&p.to_annotation()), Ok(p.clone()));
        assert_eq!(p.gates_text(), "gates a, b");
        assert!(!p.resumes(8, &[]) && p.resumes(9, &[]));
        let no_deadline = Parked {
            deadline_ms: None,
            ..p.clone()
        };
        assert!(Parked {
            decided: true,
            ..no_deadline.clone()
        }
        .resumes(0, &[]));
        // A decision recorded in the store on a parked gate resumes without the mark; one on
        // another gate of the run does not.
        assert!(no_deadline.resumes(0, &["b".into()]));
        assert!(no_deadline.is_decided(&["x".into(), "a".into()]));
        assert!(!no_deadline.resumes(0, &["x".into()]));
        assert!(!no_deadline.is_decided(&[]));
        let e = Parked::parse("{").unwrap_err();
        assert!(e.starts_with("sparkwing.dev/parked: "), "{e}");
        let spec = GateSpec {
            message: None,
            timeout_ms: Some(1_000),
            on_timeout: Decision::Reject,
        };
        assert_eq!(deadline(&spec, 5), Some(1_005));
    }

    #[test]
    fn the_scope_or_a_listed_approver_may_decide_and_the_refusal_names_what_is_missing() {
        let listed = ["ana@example.com".to_string(), "team-leads".to_string()];
        let pipeline = RunApprovers::Listed {
            pipeline: "ci/deploy",
            approvers: &listed,
        };
        // The scope decides whatever the run.
        for approvers in [
            pipeline,
            RunApprovers::NoPipeline { run: "ci/b-1" },
            RunApprovers::NotLive { run: "ci/b-1" },
            RunApprovers::PipelineGone {
                pipeline: "ci/deploy",
            },
        ] {
            assert_eq!(may_decide("bo", true, approvers), Ok(DeciderRight::Scope));
        }
        assert_eq!(
            may_decide("ana@example.com", false, pipeline),
            Ok(DeciderRight::Approver)
        );
        assert_eq!(
            may_decide("team-leads", false, pipeline),
            Ok(DeciderRight::Approver)
        );
        // Exactly as the token names its principal.
        for who in ["Ana@example.com", "ana", "team-leads "] {
            let e = may_decide(who, false, pipeline).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{who} is not in spec.approvers of Pipeline ci/deploy")
            );
        }
        let e = may_decide(
            "ana@example.com",
            false,
            RunApprovers::Listed {
                pipeline: "ci/deploy",
                approvers: &[],
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Pipeline ci/deploy lists no approvers (spec.approvers)"
        );
        let e = may_decide(
            "ana@example.com",
            false,
            RunApprovers::NoPipeline { run: "ci/b-1" },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "run ci/b-1 was not started from a Pipeline, so it has no approvers"
        );
        let e = may_decide(
            "ana@example.com",
            false,
            RunApprovers::PipelineGone {
                pipeline: "ci/deploy",
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the run's Pipeline ci/deploy no longer exists, so it has no approvers"
        );
        let e = may_decide(
            "ana@example.com",
            false,
            RunApprovers::NotLive { run: "ci/b-1" },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "run ci/b-1 is not live (unknown, or finished and removed), so no Pipeline's approvers apply"
        );
    }
}
