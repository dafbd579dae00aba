//! The coordinator's side of job pods (`docs/runner.md#job-pods`): [`ApiJobPods`], the engine's
//! [`JobPods`] seam through the API's `.../job-pods/{job}/{attempt}` routes and the job states
//! the job pods report; and whether this runner may start job pods at all ([`in_cluster_pod`]).

use sparkwing_api::wire::{JobPodPhase, JobPodRequest, JobStateReport, ReportedJobState};
use sparkwing_api::ApiClient;
use sparkwing_core::placement::PlacementSpec;
use sparkwing_core::JobState;
use sparkwing_engine::job_pods::{JobPods, PodPhase, PodReport, ReportedEnd};

/// The coordinator's job pods, kept by the API; its client names the coordinator's attempt.
pub struct ApiJobPods {
    client: ApiClient,
    ns: String,
    name: String,
}

impl ApiJobPods {
    pub fn new(client: ApiClient, ns: &str, name: &str) -> Self {
        ApiJobPods {
            client,
            ns: ns.to_string(),
            name: name.to_string(),
        }
    }
}

/// Whether this runner runs in a cluster's pod (the operator sets `POD_NAME` on every runner
/// pod): only there are placed jobs given pods of their own; a runner started by hand runs them
/// itself, with the placement note.
pub fn in_cluster_pod() -> bool {
    std::env::var(sparkwing_api::names::env::POD_NAME).is_ok_and(|v| !v.trim().is_empty())
}

/// The end of attempt `attempt` a job state reports, if it reports one. Pure.
pub fn reported_end(state: &JobStateReport, attempt: u32) -> Option<ReportedEnd> {
    let ReportedJobState::Job(s) = state.state else {
        return None;
    };
    let ends = matches!(
        s,
        JobState::Success | JobState::Failed | JobState::Cancelled | JobState::Cached
    );
    (ends && state.attempt == attempt).then(|| ReportedEnd {
        state: s,
        reason: state.reason.clone(),
        outputs: state.outputs.clone().unwrap_or_default(),
    })
}

impl JobPods for ApiJobPods {
    fn start(
        &self,
        job: &str,
        attempt: u32,
        placement: &PlacementSpec,
        item: Option<&str>,
    ) -> Result<(), String> {
        let req = JobPodRequest {
            placement: Some(placement.clone()),
            item: item.map(str::to_string),
        };
        self.client
            .start_job_pod(&self.ns, &self.name, job, attempt, &req)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn look(&self, job: &str, attempt: u32) -> Result<PodReport, String> {
        let view = self
            .client
            .job_pod(&self.ns, &self.name, job, attempt)
            .map_err(|e| e.to_string())?;
        let pod = match view.phase {
            JobPodPhase::Pending => PodPhase::Pending,
            JobPodPhase::Running => PodPhase::Running,
            JobPodPhase::Ended => PodPhase::Ended(view.detail.unwrap_or_default()),
            JobPodPhase::Gone => PodPhase::Gone,
        };
        let run = self
            .client
            .get_run(&self.ns, &self.name)
            .map_err(|e| e.to_string())?;
        let ended = run
            .jobs
            .as_ref()
            .and_then(|jobs| jobs.get(job))
            .and_then(|v| serde_json::from_value::<JobStateReport>(v.clone()).ok())
            .and_then(|s| reported_end(&s, attempt));
        Ok(PodReport { pod, ended })
    }

    fn delete(&self, job: &str, attempt: u32) -> Result<(), String> {
        self.client
            .delete_job_pod(&self.ns, &self.name, job, attempt)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_engine::sink;
    use std::collections::BTreeMap;

    fn state(s: JobState, attempt: u32) -> JobStateReport {
        let mut r = sink::job_state_report(s, attempt, None, None, None, Some("why"));
        r.outputs = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
        r
    }

    #[test]
    fn only_this_attempts_end_counts() {
        let end = reported_end(&state(JobState::Success, 2), 2).unwrap();
        assert_eq!(end.state, JobState::Success);
        assert_eq!(end.outputs["k"], "v");
        assert!(reported_end(&state(JobState::Success, 1), 2).is_none());
        assert!(reported_end(&state(JobState::Running, 2), 2).is_none());
        let mut retrying = state(JobState::Failed, 2);
        retrying.state = ReportedJobState::Retrying;
        assert!(reported_end(&retrying, 2).is_none());
        assert_eq!(
            reported_end(&state(JobState::Failed, 2), 2)
                .unwrap()
                .reason
                .as_deref(),
            Some("why")
        );
    }
}
