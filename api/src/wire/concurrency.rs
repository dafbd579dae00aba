//! `/api/v1/runs/{ns}/{name}/concurrency`: a cluster run's place in its concurrency group
//! (`docs/api.md`, "Concurrency groups"); the same status is a run view's `concurrency`.

use serde::{Deserialize, Serialize};
use sparkwing_core::time::Time;

fn one() -> u32 {
    1
}

/// `POST .../concurrency`: enter the run's group (a place at the back), look again while it
/// waits, or (`renew`) keep the slot it holds. Every call renews the run's lease. With `job`,
/// the same for the entry of that job of the run in the job's own group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupRequest {
    /// The group's key (the plan's template with the args filled in).
    pub group: String,
    #[serde(default = "one")]
    pub limit: u32,
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub cancel_in_progress: bool,
    /// The run holds its slot and only renews its lease: when its entry is gone (its lease
    /// ended), it is not entered again (409).
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub renew: bool,
    /// The job (its id) whose attempt enters the job's own group; `None`: the run's own group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// Where a run stands in its group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GroupState {
    Holding,
    Waiting,
}

/// The answer of `POST .../concurrency`, and a run view's `concurrency`. Runs are named
/// `NS/NAME`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub group: String,
    /// The job whose entry this is (`None`: the run's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub limit: u32,
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub cancel_in_progress: bool,
    pub state: GroupState,
    /// Since when the run is in its state.
    pub since: Time,
    /// Until when its entry stands without word from its runner.
    pub lease_until: Time,
    /// While waiting: the runs holding a slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    /// While waiting: the runs queued ahead, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ahead: Vec<String>,
    /// While waiting: how the wait reads (`waiting for concurrency group deploy-prod (1/1, held
    /// by run ci/deploy-1)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The older runs of the group this call cancelled (`cancelInProgress`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancelled: Vec<String>,
}
