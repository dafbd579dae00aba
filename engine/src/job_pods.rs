//! A placed job's attempt in its own pod, the coordinator's side (`docs/runner.md#job-pods`): in
//! a cluster run's runner pod, the engine does not start a placed job's process; it asks the
//! [`JobPods`] seam (the cluster API, `sparkwing-runner`'s `ApiJobPods`, plugged in through
//! [`RunRequest::job_pods`](crate::RunRequest::job_pods)) for the job's pod, then looks at it
//! and at what the job reported every [`LOOK_EVERY`], and lets `sparkwing_core::job_pod::step`
//! decide: a reported end ends the attempt, a cancel or the job's timeout deletes the pod, a lost
//! pod ends it `Failed` (retried within the job's retries, in a new pod). The job pod itself
//! reports the job's log, state and outputs under the job's id; the coordinator records none of
//! its lines.

use crate::now_ms;
use crate::process::Control;
use sparkwing_core::job_pod::{step, PodLook, PodSeen, PodStep, Reported};
use sparkwing_core::placement::PlacementSpec;
use sparkwing_core::scheduler::AttemptOutcome;
use sparkwing_core::JobState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the coordinator looks at a job pod.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long asking for a job pod may keep failing (the API unreachable, the job's state not
/// delivered yet) before the attempt fails with the last answer.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// A job pod as its home sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    /// Its container ended, so.
    Ended(String),
    /// There is none (deleted, evicted, never made).
    Gone,
}

/// What the job pod reported of the attempt's end: its state, reason and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedEnd {
    pub state: JobState,
    pub reason: Option<String>,
    pub outputs: BTreeMap<String, String>,
}

/// One look at a job pod's attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReport {
    pub pod: PodPhase,
    /// `None` until the job pod reported this attempt's end.
    pub ended: Option<ReportedEnd>,
}

/// Where a cluster run's placed jobs get their pods (blocking calls; the engine makes them on
/// blocking threads).
pub trait JobPods: Send + Sync {
    /// Ask for the pod of attempt `attempt` of `job` (asking again for one that exists is fine).
    fn start(
        &self,
        job: &str,
        attempt: u32,
        placement: &PlacementSpec,
        item: Option<&str>,
    ) -> Result<(), String>;
    /// Look at it and at what the job reported for this attempt.
    fn look(&self, job: &str, attempt: u32) -> Result<PodReport, String>;
    /// Delete it (absent is fine).
    fn delete(&self, job: &str, attempt: u32) -> Result<(), String>;
}

/// One placed job's attempt, for [`run_attempt`].
#[derive(Debug, Clone)]
pub struct PodAttempt {
    pub job: String,
    pub attempt: u32,
    pub placement: PlacementSpec,
    pub item: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// How an attempt in a job pod ended: the outcome for the `Scheduler`, the outputs the job
/// reported, and the pod's name once known.
#[derive(Debug, Clone, PartialEq)]
pub struct PodAttemptEnd {
    pub outcome: AttemptOutcome,
    pub outputs: BTreeMap<String, String>,
}

/// What core's step needs to know of the pod, from what was seen before (when an end or an
/// absence was first seen: the grace counts from then).
pub fn seen(now_ms: i64, before: &PodSeen, phase: &PodPhase) -> PodSeen {
    match phase {
        PodPhase::Pending => PodSeen::Pending,
        PodPhase::Running => PodSeen::Running,
        PodPhase::Ended(detail) => match before {
            PodSeen::Ended { at_ms, .. } => PodSeen::Ended {
                at_ms: *at_ms,
                detail: detail.clone(),
            },
            _ => PodSeen::Ended {
                at_ms: now_ms,
                detail: detail.clone(),
            },
        },
        PodPhase::Gone => match before {
            PodSeen::Gone { since_ms } => PodSeen::Gone {
                since_ms: *since_ms,
            },
            _ => PodSeen::Gone { since_ms: now_ms },
        },
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("job pod call stopped: {e}")))
}

/// Wait `d`, or less when the attempt's control changes.
async fn pause(control: &mut watch::Receiver<Control>, d: Duration) {
    let _ = tokio::time::timeout(d, control.changed()).await;
}

fn stopping(control: &watch::Receiver<Control>) -> bool {
    *control.borrow() != Control::Run
}

/// Delete the pod, trying a few times (the attempt ends anyway; the run's end deletes what is
/// left with the run).
async fn delete(pods: &Arc<dyn JobPods>, job: &str, attempt: u32) {
    for _ in 0..5 {
        let (p, j) = (pods.clone(), job.to_string());
        match blocking(move || p.delete(&j, attempt)).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("cannot delete the pod of job {job} attempt {attempt}: {e}");
                tokio::time::sleep(LOOK_EVERY).await;
            }
        }
    }
}

/// Run one attempt of a placed job in its own pod until `core::job_pod::step` ends it.
pub async fn run_attempt(
    pods: Arc<dyn JobPods>,
    a: PodAttempt,
    mut control: watch::Receiver<Control>,
) -> PodAttemptEnd {
    let started_ms = now_ms();
    let end = |outcome| PodAttemptEnd {
        outcome,
        outputs: BTreeMap::new(),
    };
    // Ask for the pod until the API takes it (the job's pending state may still be on its way).
    loop {
        if stopping(&control) {
            delete(&pods, &a.job, a.attempt).await;
            return end(AttemptOutcome::Killed);
        }
        let (p, job, placement, item) = (
            pods.clone(),
            a.job.clone(),
            a.placement.clone(),
            a.item.clone(),
        );
        let refused =
            match blocking(move || p.start(&job, a.attempt, &placement, item.as_deref())).await {
                Ok(()) => break,
                Err(e) => e,
            };
        if now_ms() - started_ms >= START_DEADLINE.as_millis() as i64 {
            return end(AttemptOutcome::Failed {
                reason: format!("cannot start the job's pod: {refused}"),
            });
        }
        pause(&mut control, LOOK_EVERY).await;
    }
    let mut pod = PodSeen::Pending;
    loop {
        let (p, job) = (pods.clone(), a.job.clone());
        let report = blocking(move || p.look(&job, a.attempt)).await;
        let now = now_ms();
        let mut ended = None;
        match report {
            Ok(r) => {
                pod = seen(now, &pod, &r.pod);
                ended = r.ended;
            }
            // The API did not answer: look again (a cancel and the timeout still apply).
            Err(e) => tracing::warn!("cannot look at the pod of job {}: {e}", a.job),
        }
        let look = PodLook {
            pod: pod.clone(),
            reported: match &ended {
                Some(e) => Reported::Ended {
                    state: e.state,
                    reason: e.reason.clone(),
                },
                None => Reported::NotEnded,
            },
            cancelling: stopping(&control),
            started_ms,
            now_ms: now,
            timeout_ms: a.timeout_ms,
        };
        match step(&look) {
            PodStep::Wait => pause(&mut control, LOOK_EVERY).await,
            PodStep::Ended(outcome) => {
                return PodAttemptEnd {
                    outcome,
                    outputs: ended.map(|e| e.outputs).unwrap_or_default(),
                }
            }
            PodStep::Stop(outcome) => {
                delete(&pods, &a.job, a.attempt).await;
                return end(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn an_end_or_an_absence_is_dated_when_first_seen() {
        let e = PodPhase::Ended("exit code 1".into());
        let first = seen(5, &PodSeen::Running, &e);
        assert_eq!(
            first,
            PodSeen::Ended {
                at_ms: 5,
                detail: "exit code 1".into()
            }
        );
        assert_eq!(
            seen(9, &first, &e),
            PodSeen::Ended {
                at_ms: 5,
                detail: "exit code 1".into()
            }
        );
        let gone = seen(7, &first, &PodPhase::Gone);
        assert_eq!(gone, PodSeen::Gone { since_ms: 7 });
        assert_eq!(seen(20, &gone, &PodPhase::Gone), gone);
        assert_eq!(seen(20, &gone, &PodPhase::Running), PodSeen::Running);
    }

    /// A home of job pods whose looks are scripted; it records its calls.
    struct Scripted {
        looks: Mutex<Vec<PodReport>>,
        calls: Mutex<Vec<String>>,
    }

    impl JobPods for Scripted {
        fn start(
            &self,
            job: &str,
            attempt: u32,
            _: &PlacementSpec,
            item: Option<&str>,
        ) -> Result<(), String> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("start {job} {attempt} {item:?}"));
            Ok(())
        }
        fn look(&self, _: &str, _: u32) -> Result<PodReport, String> {
            let mut looks = self.looks.lock().unwrap();
            if looks.len() > 1 {
                Ok(looks.remove(0))
            } else {
                looks.first().cloned().ok_or_else(|| "no look".to_string())
            }
        }
        fn delete(&self, job: &str, attempt: u32) -> Result<(), String> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("delete {job} {attempt}"));
            Ok(())
        }
    }

    fn attempt() -> PodAttempt {
        PodAttempt {
            job: "test[1]".into(),
            attempt: 2,
            placement: PlacementSpec::default(),
            item: Some("b".into()),
            timeout_ms: None,
        }
    }

    #[tokio::test]
    async fn a_reported_end_ends_the_attempt_with_its_outputs() {
        let pods = Arc::new(Scripted {
            looks: Mutex::new(vec![
                PodReport {
                    pod: PodPhase::Pending,
                    ended: None,
                },
                PodReport {
                    pod: PodPhase::Running,
                    ended: Some(ReportedEnd {
                        state: JobState::Success,
                        reason: None,
                        outputs: BTreeMap::from([("k".into(), "v".into())]),
                    }),
                },
            ]),
            calls: Mutex::new(Vec::new()),
        });
        let (_tx, rx) = watch::channel(Control::Run);
        let end = run_attempt(pods.clone(), attempt(), rx).await;
        assert_eq!(end.outcome, AttemptOutcome::Success);
        assert_eq!(end.outputs["k"], "v");
        assert_eq!(
            *pods.calls.lock().unwrap(),
            vec!["start test[1] 2 Some(\"b\")".to_string()]
        );
    }

    #[tokio::test]
    async fn a_cancel_deletes_the_pod() {
        let pods = Arc::new(Scripted {
            looks: Mutex::new(vec![PodReport {
                pod: PodPhase::Running,
                ended: None,
            }]),
            calls: Mutex::new(Vec::new()),
        });
        let (tx, rx) = watch::channel(Control::Run);
        let task = tokio::spawn(run_attempt(pods.clone(), attempt(), rx));
        // Cancelled once the pod was asked for.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pods.calls.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the pod was never asked for"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send(Control::Stop).unwrap();
        let end = task.await.unwrap();
        assert_eq!(end.outcome, AttemptOutcome::Killed);
        assert_eq!(
            pods.calls.lock().unwrap().last().map(String::as_str),
            Some("delete test[1] 2")
        );
    }
}
