//! A placed job's own pod on a cluster (`placement`): what the run's coordinator does with one
//! attempt's pod at each look, from what it observed of the pod and what the pod reported to
//! the API under the job's id. A lost pod ends the attempt `Failed`, so the [`Scheduler`]'s
//! retries (within the job's `retries`, after its backoff) start a new attempt in a new pod.
//!
//! Called by the engine's coordinator loop (`engine/src/job_pods.rs`) at each look at a job pod
//! (`docs/runner.md#job-pods`); the pod is asked for, read and deleted through the API's
//! `.../job-pods/{job}/{attempt}` routes.
//!
//! [`Scheduler`]: crate::Scheduler

use crate::scheduler::AttemptOutcome;
use crate::state::JobState;
use crate::time::human_duration;

/// How long a pod may be seen ended (or gone) without the job's reported end before the attempt
/// counts as lost: the job pod reports its end before it exits, and this covers a report and a
/// pod's end observed in either order.
pub const LOST_GRACE_MS: i64 = 10_000;

/// The attempt's pod as the coordinator last observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSeen {
    /// Asked for, not running yet (not created yet, pending, pulling its image, unschedulable).
    Pending,
    Running,
    /// Its container ended (`detail`: how, e.g. `exit code 137 (OOMKilled)`), first seen at
    /// `at_ms`.
    Ended {
        at_ms: i64,
        detail: String,
    },
    /// Deleted or evicted: absent since `since_ms` (when first seen missing).
    Gone {
        since_ms: i64,
    },
}

/// What the job pod reported to the API for this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// Nothing yet, or that it runs.
    NotEnded,
    /// Its end: the job's state and reason.
    Ended {
        state: JobState,
        reason: Option<String>,
    },
}

/// One look at an attempt of a placed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLook {
    pub pod: PodSeen,
    pub reported: Reported,
    /// The run is being cancelled.
    pub cancelling: bool,
    /// When the attempt was asked for, and now.
    pub started_ms: i64,
    pub now_ms: i64,
    /// The job's time limit per attempt.
    pub timeout_ms: Option<u64>,
}

/// What to do with the attempt's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStep {
    /// Look again later.
    Wait,
    /// The job pod reported its end: the attempt ended so (its pod goes away by itself).
    Ended(AttemptOutcome),
    /// Delete the pod (through the API); the attempt ends with this outcome.
    Stop(AttemptOutcome),
}

/// The step for one look. A reported end wins over everything (the job did end); then a cancel;
/// then the job's timeout; then a pod ended or gone without a reported end for
/// [`LOST_GRACE_MS`] (lost: `Failed`, so retried within the job's retries).
pub fn step(look: &PodLook) -> PodStep {
    if let Reported::Ended { state, reason } = &look.reported {
        return PodStep::Ended(reported_outcome(*state, reason.as_deref()));
    }
    if look.cancelling {
        return PodStep::Stop(AttemptOutcome::Killed);
    }
    if let Some(t) = look.timeout_ms {
        let limit = i64::try_from(t).unwrap_or(i64::MAX);
        if look.now_ms.saturating_sub(look.started_ms) >= limit {
            return PodStep::Stop(AttemptOutcome::Failed {
                reason: format!("timeout after {}", human_duration(limit)),
            });
        }
    }
    let lost = match &look.pod {
        PodSeen::Ended { at_ms, detail } => Some((*at_ms, format!("its pod ended ({detail})"))),
        PodSeen::Gone { since_ms } => Some((*since_ms, "its pod is gone".to_string())),
        PodSeen::Pending | PodSeen::Running => None,
    };
    match lost {
        Some((since, what)) if look.now_ms.saturating_sub(since) >= LOST_GRACE_MS => {
            PodStep::Stop(AttemptOutcome::Failed {
                reason: format!("job pod lost: {what} without reporting the job's end"),
            })
        }
        _ => PodStep::Wait,
    }
}

/// The attempt's outcome from the state a job pod reported.
fn reported_outcome(state: JobState, reason: Option<&str>) -> AttemptOutcome {
    match state {
        JobState::Success => AttemptOutcome::Success,
        JobState::Cancelled => AttemptOutcome::Killed,
        JobState::Cached => AttemptOutcome::Cached {
            reason: reason.unwrap_or("cached").to_string(),
        },
        JobState::Failed => AttemptOutcome::Failed {
            reason: reason.unwrap_or("failed").to_string(),
        },
        other => AttemptOutcome::Failed {
            reason: format!(
                "the job pod reported state {}, which does not end an attempt",
                other.as_str()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::validate;
    use crate::protocol::{JobSpec, PlanDoc};
    use crate::{Action, Scheduler};

    fn look(pod: PodSeen) -> PodLook {
        PodLook {
            pod,
            reported: Reported::NotEnded,
            cancelling: false,
            started_ms: 1_000,
            now_ms: 60_000,
            timeout_ms: None,
        }
    }

    fn ended(state: JobState, reason: Option<&str>) -> Reported {
        Reported::Ended {
            state,
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn a_pending_or_running_pod_is_waited_for() {
        assert_eq!(step(&look(PodSeen::Pending)), PodStep::Wait);
        assert_eq!(step(&look(PodSeen::Running)), PodStep::Wait);
    }

    #[test]
    fn a_reported_end_wins_whatever_the_pod_and_the_run() {
        let mut l = look(PodSeen::Gone { since_ms: 0 });
        l.cancelling = true;
        l.timeout_ms = Some(1);
        l.reported = ended(JobState::Success, None);
        assert_eq!(step(&l), PodStep::Ended(AttemptOutcome::Success));
        l.reported = ended(JobState::Failed, Some("exit code 2"));
        assert_eq!(
            step(&l),
            PodStep::Ended(AttemptOutcome::Failed {
                reason: "exit code 2".into()
            })
        );
        l.reported = ended(JobState::Cancelled, None);
        assert_eq!(step(&l), PodStep::Ended(AttemptOutcome::Killed));
        l.reported = ended(JobState::Running, None);
        assert!(matches!(
            step(&l),
            PodStep::Ended(AttemptOutcome::Failed { reason }) if reason.contains("reported state running")
        ));
    }

    #[test]
    fn cancel_and_timeout_stop_the_pod() {
        let mut l = look(PodSeen::Running);
        l.cancelling = true;
        assert_eq!(step(&l), PodStep::Stop(AttemptOutcome::Killed));
        let mut l = look(PodSeen::Pending);
        l.timeout_ms = Some(59_000);
        assert_eq!(
            step(&l),
            PodStep::Stop(AttemptOutcome::Failed {
                reason: "timeout after 59.0s".into()
            })
        );
        l.timeout_ms = Some(59_001);
        assert_eq!(step(&l), PodStep::Wait);
    }

    #[test]
    fn a_pod_ended_or_gone_without_a_report_is_lost_after_the_grace() {
        let at = 60_000 - LOST_GRACE_MS;
        let l = look(PodSeen::Ended {
            at_ms: at + 1,
            detail: "exit code 137 (OOMKilled)".into(),
        });
        assert_eq!(step(&l), PodStep::Wait);
        let l = look(PodSeen::Ended {
            at_ms: at,
            detail: "exit code 137 (OOMKilled)".into(),
        });
        assert_eq!(
            step(&l),
            PodStep::Stop(AttemptOutcome::Failed {
                reason: "job pod lost: its pod ended (exit code 137 (OOMKilled)) without reporting the job's end".into()
            })
        );
        assert_eq!(
            step(&look(PodSeen::Gone { since_ms: at + 1 })),
            PodStep::Wait
        );
        assert!(matches!(
            step(&look(PodSeen::Gone { since_ms: at })),
            PodStep::Stop(AttemptOutcome::Failed { reason }) if reason == "job pod lost: its pod is gone without reporting the job's end"
        ));
    }

    #[test]
    fn a_lost_pod_is_retried_within_the_jobs_retries() {
        let mut train = JobSpec::new("train");
        train.retries = 1;
        let plan = validate(&PlanDoc {
            protocol: 1,
            entrypoint: "T".into(),
            jobs: vec![train],
            concurrency: None,
        })
        .unwrap();
        let mut s = Scheduler::new(plan, 1);
        assert_eq!(s.poll(), vec![Action::Start { job: 0, attempt: 1 }]);
        let lost = |s: &mut Scheduler| match step(&look(PodSeen::Gone { since_ms: 0 })) {
            PodStep::Stop(outcome) => s.attempt_finished(0, outcome),
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            lost(&mut s)[..],
            [Action::Retry {
                job: 0,
                attempt: 2,
                ..
            }]
        ));
        assert!(lost(&mut s).is_empty());
        assert_eq!(s.job(0).state, JobState::Failed);
    }
}
