//! `POST|GET|DELETE /api/v1/runs/{ns}/{name}/job-pods/{job}/{attempt}`: a run's coordinator asks
//! for the own pod of one attempt of a placed job, looks at it and deletes it
//! (`docs/api.md#job-pods`).

use serde::{Deserialize, Serialize};
use sparkwing_core::placement::PlacementSpec;

/// The body of `POST .../job-pods/{job}/{attempt}`: the job's placement and, for a job expanded
/// from a fan-out or matrix (`test[3]`), its item.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobPodRequest {
    /// The job's placement as its plan declares it; required (a job without one runs in its
    /// coordinator's pod).
    pub placement: Option<PlacementSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
}

/// Where a job pod is, as its coordinator needs to know it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum JobPodPhase {
    /// Created, not running yet (being scheduled, pulling its image).
    Pending,
    Running,
    /// Its container ended (see `detail`).
    Ended,
    /// No such pod: never created, deleted or evicted.
    Gone,
}

/// The answer of the three calls: the job pod's Kubernetes Job and what its pod is doing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobPodView {
    /// The Kubernetes Job's name.
    pub name: String,
    pub phase: JobPodPhase,
    /// How an ended pod ended (`exit code 137 (OOMKilled)`), or why it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
