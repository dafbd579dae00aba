//! Status shapes written to `PipelineRun` and `RunnerPool` objects (and mirrored locally).

/// A `PipelineRun`'s `status.phase` is core's one run phase (`crate::state`).
pub use crate::state::RunPhase;
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// `True`, `False` or `Unknown`, as Kubernetes conditions spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

/// A Kubernetes-style condition. `last_transition_time` moves only when `status` or `reason`
/// changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub last_transition_time: Time,
    #[serde(default)]
    pub observed_generation: i64,
}

/// Put `new` into `conditions`, keeping the old transition time when nothing but the message or
/// generation changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status && old.reason == new.reason {
                new.last_transition_time = old.last_transition_time;
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// The condition type that summarises a run (Tekton's batch convention).
pub const SUCCEEDED: &str = "Succeeded";

/// Condition reasons a run reports.
pub mod reasons {
    pub const PENDING: &str = "Pending";
    pub const WAITING_FOR_RUNNER: &str = "WaitingForRunner";
    /// Pending: the scheduler cannot place the runner (the message is its reason).
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    pub const RUNNING: &str = "Running";
    /// Running with no runner: its coordinator parked while only approval gates wait; the next
    /// attempt starts once one is decided or times out (`crate::gate::Parked`).
    pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const CANCELLED: &str = "Cancelled";
    pub const CANCELLED_RUNNING_FINALLY: &str = "CancelledRunningFinally";
    pub const TIMEOUT: &str = "Timeout";
    pub const OOM_KILLED: &str = "OOMKilled";
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    pub const RUNNER_LOST: &str = "RunnerLost";
    pub const TO_BE_RETRIED: &str = "ToBeRetried";
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// One job of the run, as the runner reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub name: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub finished_at: Option<Time>,
}

/// Status of a `PipelineRun`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    pub phase: RunPhase,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub completion_time: Option<Time>,
    /// The runner executing the current attempt (Job, pod or container name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    #[serde(default)]
    pub jobs: Vec<JobStatus>,
    /// Runner attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// How many of those attempts resumed the run after its coordinator parked while gates
    /// waited; they do not count against `spec.maxAttempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumes: u32,
    #[serde(default)]
    pub observed_generation: i64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RunStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Status of a `RunnerPool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub idle: u32,
    pub busy: u32,
    pub starting: u32,
    pub total: u32,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub observed_generation: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: ConditionStatus, reason: &str, msg: &str, t: i64) -> Condition {
        Condition {
            type_: SUCCEEDED.into(),
            status,
            reason: reason.into(),
            message: msg.into(),
            last_transition_time: Time(t),
            observed_generation: 1,
        }
    }

    #[test]
    fn transition_time_moves_only_on_transition() {
        let mut cs = vec![cond(ConditionStatus::Unknown, "Running", "a", 10)];
        set_condition(&mut cs, cond(ConditionStatus::Unknown, "Running", "b", 20));
        assert_eq!(cs[0].last_transition_time, Time(10));
        assert_eq!(cs[0].message, "b");
        set_condition(&mut cs, cond(ConditionStatus::True, "Succeeded", "", 30));
        assert_eq!(cs[0].last_transition_time, Time(30));
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn serializes_like_kubernetes() {
        let c = cond(ConditionStatus::True, "Succeeded", "", 5);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["type"], "Succeeded");
        assert_eq!(v["status"], "True");
        assert_eq!(v["lastTransitionTime"], "1970-01-01T00:00:00Z");
    }
}
