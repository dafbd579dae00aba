//! `/api/v1/runs/{ns}/{name}/gates/{gate}`: a decision on an approval gate of a cluster run
//! (`docs/api.md`, "Approval gates").

use serde::{Deserialize, Serialize};
use sparkwing_core::gate::{Decided, Decision};
use sparkwing_core::time::Time;

/// `POST .../gates/{gate}`: approve or reject a waiting gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GateDecisionRequest {
    /// `approve` or `reject`.
    pub decision: Decision,
    /// Why (shown with the decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The gate's timeout decided: only the run's own runner token may say so, and the decision
    /// is recorded by `timeout`.
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub timed_out: bool,
}

/// A recorded decision: who (the token's principal, or `timeout`), when, why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GateDecision {
    pub decision: Decision,
    pub by: String,
    /// When it was recorded (RFC 3339).
    pub at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub timed_out: bool,
}

impl GateDecision {
    /// The decision as core and the engine hold it.
    pub fn decided(&self) -> Decided {
        Decided {
            decision: self.decision,
            by: self.by.clone(),
            at_ms: self.at.0,
            comment: self.comment.clone(),
            timed_out: self.timed_out,
        }
    }
}

impl From<&Decided> for GateDecision {
    fn from(d: &Decided) -> Self {
        GateDecision {
            decision: d.decision,
            by: d.by.clone(),
            at: Time(d.at_ms),
            comment: d.comment.clone(),
            timed_out: d.timed_out,
        }
    }
}

/// The answer of `POST` (the decision recorded) and `GET .../gates/{gate}` (absent `decided`: no
/// decision yet).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GateAnswer {
    pub namespace: String,
    pub name: String,
    pub gate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<GateDecision>,
}
