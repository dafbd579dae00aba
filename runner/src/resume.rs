//! A later attempt of a cluster run resumes from the job states its earlier attempts recorded
//! in the API (`docs/runner.md`): after its coordinator parked while gates waited, or was lost.
//! Jobs that ended there keep their state, reason and outputs (their artifacts are already in
//! the API's store) and do not run again; the others run (core's `RetryScope::Resume`, the same
//! machinery as `sparkwing runs retry`). A gate still waiting keeps the time it began to wait,
//! so its timeout counts from then.

use serde_json::Value;
use sparkwing_api::wire::{JobStateReport, ReportedJobState};
use sparkwing_core::rerun::{PriorJob, RetryScope};
use sparkwing_core::JobState;
use sparkwing_engine::Retry;
use std::collections::BTreeMap;

/// The resume of run `ns/name` from its recorded job states (`GET /api/v1/runs/{ns}/{name}`'s
/// `jobs`); `None` when nothing was recorded (the earlier attempt never got to plan). A state
/// this runner cannot read is left out, and so runs again.
pub fn resume_from(ns: &str, name: &str, jobs: Option<&BTreeMap<String, Value>>) -> Option<Retry> {
    let jobs = jobs.filter(|j| !j.is_empty())?;
    let mut prior = Vec::new();
    let mut waiting_since = BTreeMap::new();
    for (id, v) in jobs {
        let Ok(report) = serde_json::from_value::<JobStateReport>(v.clone()) else {
            tracing::warn!(
                "run {ns}/{name}: job {id}: its recorded state cannot be read; it runs again"
            );
            continue;
        };
        let state = match report.state {
            ReportedJobState::Job(s) => s,
            // Between two attempts of the job: not ended.
            ReportedJobState::Retrying => JobState::Running,
        };
        if state == JobState::Waiting {
            if let Some(since) = report
                .started_at
                .as_deref()
                .and_then(sparkwing_core::time::parse_rfc3339)
            {
                waiting_since.insert(id.clone(), since);
            }
        }
        prior.push(PriorJob {
            id: id.clone(),
            state,
            reason: report.reason,
            outputs: report.outputs.unwrap_or_default(),
        });
    }
    Some(Retry {
        of_run: format!("{ns}/{name}"),
        scope: RetryScope::Resume,
        prior,
        waiting_since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_recorded_states_become_a_resume_with_outputs_and_waiting_times() {
        let jobs: BTreeMap<String, Value> = [
            (
                "build".to_string(),
                json!({"state": "success", "attempt": 1, "outputs": {"version": "7"}}),
            ),
            (
                "approve".to_string(),
                json!({"state": "waiting", "attempt": 1, "gate": true, "startedAt": "2026-12-04T20:00:00Z"}),
            ),
            ("deploy".to_string(), json!({"state": "pending"})),
            ("flaky".to_string(), json!({"state": "retrying"})),
            ("odd".to_string(), json!({"state": "sideways"})),
        ]
        .into_iter()
        .collect();
        let r = resume_from("ci", "ship-1", Some(&jobs)).unwrap();
        assert_eq!(r.of_run, "ci/ship-1");
        assert_eq!(r.scope, RetryScope::Resume);
        let state = |id: &str| r.prior.iter().find(|p| p.id == id).map(|p| p.state);
        assert_eq!(state("build"), Some(JobState::Success));
        assert_eq!(state("approve"), Some(JobState::Waiting));
        assert_eq!(state("flaky"), Some(JobState::Running));
        assert_eq!(state("odd"), None, "unreadable: runs again");
        let build = r.prior.iter().find(|p| p.id == "build").unwrap();
        assert_eq!(build.outputs["version"], "7");
        assert_eq!(
            r.waiting_since.get("approve").copied(),
            sparkwing_core::time::parse_rfc3339("2026-12-04T20:00:00Z")
        );
        assert!(resume_from("ci", "ship-1", None).is_none());
        assert!(resume_from("ci", "ship-1", Some(&BTreeMap::new())).is_none());
    }
}
