//! The `PipelineRun` reconcile: (intent, previous status, observed runner, now) -> actions + status.
//!
//! A run has one runner at a time (a Job, a claimed warm pod, a container, or the local engine).
//! The runner executes the whole DAG and reports job states; this decision only manages the
//! runner's life: start it, retry it when it is lost, stop it on cancel or timeout, map how it
//! ended to a phase and a reason, and delete the finished run after its TTL.

use super::status::{
    reasons, set_condition, Condition, ConditionStatus, JobStatus, RunPhase, RunStatus, SUCCEEDED,
};
use super::Millis;
use crate::time::Time;

mod secrets;
pub use secrets::{
    check_secrets, secret_name_problems, SecretAccess, SecretRefusal, SECRET_NOT_ALLOWED,
    SECRET_NOT_FOUND,
};

/// The cancel control of a run (`spec.cancel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CancelRequest {
    #[default]
    None,
    /// Stop everything now; `finally` jobs do not run.
    Cancelled,
    /// Stop the running jobs, then let `finally` jobs run.
    CancelledRunFinally,
}

/// What the run asks for, from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIntent {
    pub generation: i64,
    pub timeout_ms: Option<u64>,
    pub cancel: CancelRequest,
    /// Runner attempts allowed (a lost runner is retried until this many were started).
    pub max_attempts: u32,
    pub ttl_after_finished_ms: Option<u64>,
    /// A validation error found in the spec; the run fails with `InvalidSpec` and never starts.
    pub invalid: Option<String>,
    /// The run executes outside the cluster (`spec.source.external`, e.g. `sparkwing run
    /// --profile` on a laptop): no runner is ever started or stopped for it. It is `Running` from
    /// its first reconcile until its executor records the end (a terminal status written by the
    /// API), a cancel, or its timeout.
    pub external: bool,
    /// Names of the Secrets the runner gets as environment (`spec.secrets`).
    pub secrets: Vec<String>,
    /// What the operator observed of those Secrets before the first runner (the run's Pipeline,
    /// what it grants, which exist); `None`: not observed. A run asking for Secrets starts its
    /// first runner only when [`check_secrets`] finds nothing wrong here; otherwise it fails with
    /// `SecretNotAllowed` or `SecretNotFound`. Later attempts are not checked again.
    pub secret_access: Option<SecretAccess>,
    /// The run's coordinator parked while only gates waited (the API's record on the run,
    /// `gate::PARKED_ANNOTATION`): while it names the current attempt, the run stays `Running`
    /// (`WaitingForApproval`) with no runner, and the next attempt starts once a gate is decided
    /// or the earliest gate timeout passes.
    pub parked: Option<crate::gate::Parked>,
    /// The run's gates that have a decision recorded in the state store, as the operator read
    /// them while the run is parked and its record is not marked `decided` (empty otherwise).
    /// A decision on a parked gate resumes the run even when the API could not mark the record.
    pub decided_gates: Vec<String>,
}

impl Default for RunIntent {
    fn default() -> Self {
        RunIntent {
            generation: 1,
            timeout_ms: None,
            cancel: CancelRequest::None,
            max_attempts: 3,
            ttl_after_finished_ms: None,
            invalid: None,
            external: false,
            secrets: Vec::new(),
            secret_access: None,
            parked: None,
            decided_gates: Vec::new(),
        }
    }
}

/// How the runner of the current attempt looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerState {
    /// Created, not running yet (pod pending, container created). `unschedulable`: the
    /// scheduler's reason when it cannot place the runner (no node has the CPU it asks for...).
    Starting {
        unschedulable: Option<String>,
    },
    Running,
    Succeeded,
    /// Exited with a non-zero code: the pipeline failed (or was cancelled: 130).
    Failed {
        exit_code: Option<i32>,
    },
    OomKilled,
    ImagePullFailed {
        message: String,
    },
    /// The runner's own deadline (`activeDeadlineSeconds`) stopped it.
    DeadlineExceeded,
    /// Deleted, evicted, node gone: not the pipeline's fault, so the attempt may be retried.
    Lost {
        reason: String,
    },
}

impl RunnerState {
    fn is_finished(&self) -> bool {
        !matches!(self, RunnerState::Starting { .. } | RunnerState::Running)
    }

    /// Whether a runner of a finished run is kept until the run is deleted: one that ran to an
    /// end of its own (its pod and logs are the record). A runner that never started (its image
    /// cannot be pulled: the node would keep pulling while the run exists) or was lost (a Failed
    /// Job of a deleted pod) is removed once the run has ended.
    fn kept_after_the_run(&self) -> bool {
        matches!(
            self,
            RunnerState::Succeeded
                | RunnerState::Failed { .. }
                | RunnerState::OomKilled
                | RunnerState::DeadlineExceeded
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRunner {
    pub name: String,
    pub attempt: u32,
    pub state: RunnerState,
    /// A stop was already requested (deletion timestamp set, container stopping).
    pub stopping: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunObservation {
    pub runner: Option<ObservedRunner>,
    /// Job states the runner reported so far (empty: keep the previous ones).
    pub jobs: Vec<JobStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAction {
    /// Start (or claim) a runner for this attempt; adapters name it deterministically from the run
    /// and the attempt, so a repeated start is idempotent.
    StartRunner { attempt: u32 },
    /// Stop a runner. `graceful`: SIGTERM so the runner cancels the run and its `finally` jobs run.
    StopRunner { name: String, graceful: bool },
    /// The TTL after finishing has passed.
    DeleteRun,
    /// Tell humans (a Kubernetes Event); emitted on transitions only.
    Event {
        reason: String,
        message: String,
        warning: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDecision {
    pub actions: Vec<RunAction>,
    pub status: RunStatus,
    /// Look again after this long even if nothing changes (timeouts, TTL).
    pub requeue_after_ms: Option<u64>,
}

struct Outcome {
    phase: RunPhase,
    status: ConditionStatus,
    reason: &'static str,
    message: String,
}

fn outcome(phase: RunPhase, reason: &'static str, message: impl Into<String>) -> Outcome {
    let status = match phase {
        RunPhase::Succeeded => ConditionStatus::True,
        RunPhase::Failed | RunPhase::Cancelled => ConditionStatus::False,
        _ => ConditionStatus::Unknown,
    };
    Outcome {
        phase,
        status,
        reason,
        message: message.into(),
    }
}

/// Decide the next step for a run.
pub fn reconcile_run(
    intent: &RunIntent,
    prev: &RunStatus,
    observed: &RunObservation,
    now: Millis,
) -> RunDecision {
    let mut status = prev.clone();
    status.observed_generation = intent.generation;
    if !observed.jobs.is_empty() && !prev.phase.is_terminal() {
        status.jobs = observed.jobs.clone();
    }
    let mut actions = Vec::new();

    if prev.phase.is_terminal() {
        // A finished run only cleans up: a runner that is still going or that never ran to an
        // end of its own, then itself after its TTL.
        if let Some(r) = &observed.runner {
            if !r.state.kept_after_the_run() && !r.stopping {
                actions.push(RunAction::StopRunner {
                    name: r.name.clone(),
                    graceful: false,
                });
            }
        }
        let mut requeue = None;
        if let (Some(ttl), Some(done)) = (intent.ttl_after_finished_ms, prev.completion_time) {
            let due = done.0.saturating_add(ttl as i64);
            if now >= due {
                actions.push(RunAction::DeleteRun);
            } else {
                requeue = Some((due - now) as u64);
            }
        }
        return RunDecision {
            actions,
            status,
            requeue_after_ms: requeue,
        };
    }

    let cancel = intent.cancel;
    let mut requeue: Option<u64> = None;
    let result: Outcome = if let Some(err) = &intent.invalid {
        outcome(RunPhase::Failed, reasons::INVALID_SPEC, err.clone())
    } else if intent.external {
        decide_external(intent, &status, now, &mut requeue)
    } else if let Some(parked) = parked_now(intent, prev) {
        decide_parked(
            intent,
            &mut status,
            parked,
            observed,
            now,
            &mut actions,
            &mut requeue,
        )
    } else {
        match &observed.runner {
            None => {
                if cancel != CancelRequest::None {
                    outcome(RunPhase::Cancelled, reasons::CANCELLED, "cancelled")
                } else if let Some(refused) = (prev.attempts == 0)
                    .then(|| check_secrets(&intent.secrets, intent.secret_access.as_ref()))
                    .flatten()
                {
                    outcome(RunPhase::Failed, refused.reason, refused.message)
                } else if prev.attempts == 0 {
                    actions.push(RunAction::StartRunner { attempt: 1 });
                    status.attempts = 1;
                    outcome(
                        RunPhase::Pending,
                        reasons::WAITING_FOR_RUNNER,
                        "starting a runner (attempt 1)",
                    )
                } else if prev.runner.is_none() {
                    // Started but not seen yet (a watch may lag behind a create): ask again. The
                    // start is idempotent: the runner's name comes from the run and the attempt.
                    actions.push(RunAction::StartRunner {
                        attempt: prev.attempts,
                    });
                    requeue = Some(1000);
                    outcome(
                        RunPhase::Pending,
                        static_reason(
                            prev.condition(SUCCEEDED)
                                .map_or(reasons::WAITING_FOR_RUNNER, |c| c.reason.as_str()),
                        ),
                        prev.condition(SUCCEEDED).map_or_else(
                            || format!("starting a runner (attempt {})", prev.attempts),
                            |c| c.message.clone(),
                        ),
                    )
                } else if prev.attempts.saturating_sub(prev.resumes) < intent.max_attempts {
                    // The current attempt's runner was seen and has vanished (deleted).
                    let next = prev.attempts + 1;
                    status.runner = None;
                    actions.push(RunAction::StartRunner { attempt: next });
                    status.attempts = next;
                    outcome(
                        RunPhase::Pending,
                        reasons::TO_BE_RETRIED,
                        format!(
                            "the runner of attempt {} disappeared; starting attempt {next} of {}",
                            prev.attempts, intent.max_attempts
                        ),
                    )
                } else {
                    outcome(
                        RunPhase::Failed,
                        reasons::RUNNER_LOST,
                        format!("the runner of attempt {} disappeared and no attempts are left ({} allowed)", prev.attempts, intent.max_attempts),
                    )
                }
            }
            Some(r) if r.attempt < prev.attempts => {
                // A runner of an earlier attempt is still around: stop it, wait for the current one.
                if !r.stopping {
                    actions.push(RunAction::StopRunner {
                        name: r.name.clone(),
                        graceful: false,
                    });
                }
                requeue = Some(1000);
                match prev.condition(SUCCEEDED) {
                    Some(c) => Outcome {
                        phase: prev.phase,
                        status: c.status,
                        reason: static_reason(&c.reason),
                        message: c.message.clone(),
                    },
                    None => outcome(
                        RunPhase::Pending,
                        reasons::WAITING_FOR_RUNNER,
                        "waiting for a runner",
                    ),
                }
            }
            Some(r) => {
                status.runner = Some(r.name.clone());
                status.attempts = status.attempts.max(r.attempt);
                decide_with_runner(
                    intent,
                    prev,
                    &mut status,
                    r,
                    now,
                    &mut actions,
                    &mut requeue,
                )
            }
        }
    };

    // Times change only on transitions.
    if result.phase == RunPhase::Running && status.start_time.is_none() {
        status.start_time = Some(Time(now));
    }
    if result.phase.is_terminal() {
        status.completion_time = Some(Time(now));
        if let Some(ttl) = intent.ttl_after_finished_ms {
            requeue = Some(ttl);
        }
    }
    let changed = prev
        .condition(SUCCEEDED)
        .is_none_or(|c| c.status != result.status || c.reason != result.reason);
    if changed {
        actions.push(RunAction::Event {
            reason: result.reason.to_string(),
            message: result.message.clone(),
            warning: matches!(result.phase, RunPhase::Failed),
        });
    }
    status.phase = result.phase;
    set_condition(
        &mut status.conditions,
        Condition {
            type_: SUCCEEDED.to_string(),
            status: result.status,
            reason: result.reason.to_string(),
            message: result.message,
            last_transition_time: Time(now),
            observed_generation: intent.generation,
        },
    );
    RunDecision {
        actions,
        status,
        requeue_after_ms: requeue,
    }
}

/// While a run is parked and not yet marked decided, the reconcile looks again this often, so a
/// decision recorded in the state store ([`RunIntent::decided_gates`]) resumes it even when the
/// mark on the record was never written.
pub const PARKED_RECHECK_MS: u64 = 30_000;

/// The park recorded for the current attempt (`None` when the record names an earlier one: a
/// later attempt already resumed the run, or when the run ended). Its runner reported the park
/// and only waits to be stopped, so whatever state it is in, it is stopped.
pub fn parked_now<'a>(intent: &'a RunIntent, prev: &RunStatus) -> Option<&'a crate::gate::Parked> {
    let parked = intent.parked.as_ref()?;
    (!prev.phase.is_terminal() && parked.attempt > 0 && parked.attempt == prev.attempts)
        .then_some(parked)
}

/// Whether the adapter reads the run's recorded gate decisions for [`RunIntent::decided_gates`]
/// before this reconcile: the run is parked (its current attempt), the record is not marked
/// `decided` and no cancel was asked for.
pub fn reads_gate_decisions(intent: &RunIntent, prev: &RunStatus) -> bool {
    intent.cancel == CancelRequest::None && parked_now(intent, prev).is_some_and(|p| !p.decided)
}

/// A run whose coordinator parked while only gates wait: no runner while it waits (the parked
/// one is stopped, whatever it is doing: it reported the park and waits for that). A cancel ends
/// it at once (no runner is there to run `finally` jobs, so they do not run); the run's timeout
/// still applies; a decision on a gate, or the earliest gate timeout, starts the next attempt,
/// which resumes from the recorded job states. What is left of the parked runner (its finished
/// Job and pod) is removed.
fn decide_parked(
    intent: &RunIntent,
    status: &mut RunStatus,
    parked: &crate::gate::Parked,
    observed: &RunObservation,
    now: Millis,
    actions: &mut Vec<RunAction>,
    requeue: &mut Option<u64>,
) -> Outcome {
    if let Some(r) = observed
        .runner
        .as_ref()
        .filter(|r| r.attempt <= parked.attempt)
    {
        stop_now(r, actions);
    }
    status.runner = None;
    let gates = parked.gates_text();
    if intent.cancel != CancelRequest::None {
        return outcome(
            RunPhase::Cancelled,
            reasons::CANCELLED,
            format!("cancelled while waiting for {gates} (no runner was running: finally jobs did not run)"),
        );
    }
    let run_deadline = intent.timeout_ms.map(|t| {
        status
            .start_time
            .map(|s| s.0)
            .unwrap_or(now)
            .saturating_add(t as i64)
    });
    if let (Some(deadline), Some(t)) = (run_deadline, intent.timeout_ms) {
        if now >= deadline {
            return outcome(
                RunPhase::Failed,
                reasons::TIMEOUT,
                format!(
                    "the run exceeded its timeout of {}s while waiting for {gates}",
                    t / 1000
                ),
            );
        }
    }
    if parked.resumes(now, &intent.decided_gates) {
        let next = parked.attempt + 1;
        actions.push(RunAction::StartRunner { attempt: next });
        status.attempts = next;
        status.resumes += 1;
        let why = if parked.is_decided(&intent.decided_gates) {
            "decided"
        } else {
            "timed out"
        };
        return outcome(
            RunPhase::Pending,
            reasons::WAITING_FOR_RUNNER,
            format!("{gates} {why}: starting attempt {next} to resume the run"),
        );
    }
    let recheck = now.saturating_add(PARKED_RECHECK_MS as i64);
    *requeue = [parked.deadline_ms, run_deadline, Some(recheck)]
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.saturating_sub(now).max(0) as u64);
    outcome(
        RunPhase::Running,
        reasons::WAITING_FOR_APPROVAL,
        format!(
            "waiting for {gates}; no runner until a decision (attempt {} parked)",
            parked.attempt
        ),
    )
}

/// An external run: its executor is elsewhere, so only a cancel or the timeout end it here (the
/// executor's own end arrives as a terminal status, handled above like any finished run).
fn decide_external(
    intent: &RunIntent,
    status: &RunStatus,
    now: Millis,
    requeue: &mut Option<u64>,
) -> Outcome {
    if intent.cancel != CancelRequest::None {
        return outcome(
            RunPhase::Cancelled,
            reasons::CANCELLED,
            "cancelled; the external executor stops when it sees the run cancelled",
        );
    }
    if let Some(t) = intent.timeout_ms {
        let started = status.start_time.map(|t| t.0).unwrap_or(now);
        let deadline = started.saturating_add(t as i64);
        if now >= deadline {
            return outcome(
                RunPhase::Failed,
                reasons::TIMEOUT,
                format!("the run exceeded its timeout of {}s", t / 1000),
            );
        }
        *requeue = Some((deadline - now) as u64);
    }
    outcome(
        RunPhase::Running,
        reasons::RUNNING,
        "executed outside the cluster; waiting for its executor to finish the run",
    )
}

fn decide_with_runner(
    intent: &RunIntent,
    prev: &RunStatus,
    status: &mut RunStatus,
    r: &ObservedRunner,
    now: Millis,
    actions: &mut Vec<RunAction>,
    requeue: &mut Option<u64>,
) -> Outcome {
    let cancel = intent.cancel;
    if cancel != CancelRequest::None {
        if r.state.is_finished() {
            return outcome(RunPhase::Cancelled, reasons::CANCELLED, "cancelled");
        }
        let graceful = cancel == CancelRequest::CancelledRunFinally;
        if !r.stopping {
            actions.push(RunAction::StopRunner {
                name: r.name.clone(),
                graceful,
            });
        }
        *requeue = Some(1000);
        let (reason, msg) = if graceful {
            (
                reasons::CANCELLED_RUNNING_FINALLY,
                "cancelling: running jobs stopped, finally jobs running",
            )
        } else {
            (reasons::CANCELLED, "cancelling: stopping the runner")
        };
        let phase = if prev.phase == RunPhase::Pending {
            RunPhase::Pending
        } else {
            RunPhase::Running
        };
        return outcome(phase, reason, msg);
    }
    match &r.state {
        RunnerState::Starting {
            unschedulable: Some(why),
        } => outcome(
            RunPhase::Pending,
            reasons::UNSCHEDULABLE,
            format!(
                "runner {} (attempt {}) cannot be scheduled: {why}",
                r.name, r.attempt
            ),
        ),
        RunnerState::Starting {
            unschedulable: None,
        } => outcome(
            RunPhase::Pending,
            reasons::WAITING_FOR_RUNNER,
            format!("runner {} is starting (attempt {})", r.name, r.attempt),
        ),
        RunnerState::Running => {
            let started = status.start_time.map(|t| t.0).unwrap_or(now);
            if let Some(t) = intent.timeout_ms {
                let deadline = started.saturating_add(t as i64);
                if now >= deadline {
                    actions.push(RunAction::StopRunner {
                        name: r.name.clone(),
                        graceful: false,
                    });
                    return outcome(
                        RunPhase::Failed,
                        reasons::TIMEOUT,
                        format!("the run exceeded its timeout of {}s", t / 1000),
                    );
                }
                *requeue = Some((deadline - now) as u64);
            }
            outcome(
                RunPhase::Running,
                reasons::RUNNING,
                format!("attempt {} running on {}", r.attempt, r.name),
            )
        }
        RunnerState::Succeeded => outcome(
            RunPhase::Succeeded,
            reasons::SUCCEEDED,
            "the pipeline succeeded",
        ),
        RunnerState::Failed { exit_code } => {
            let code = exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unknown".into());
            outcome(
                RunPhase::Failed,
                reasons::FAILED,
                format!("the runner exited with code {code}"),
            )
        }
        RunnerState::OomKilled => outcome(
            RunPhase::Failed,
            reasons::OOM_KILLED,
            format!("runner {} was killed for using too much memory", r.name),
        ),
        RunnerState::ImagePullFailed { message } => {
            // The pod stays pending and the node keeps pulling until the runner is deleted.
            stop_now(r, actions);
            outcome(
                RunPhase::Failed,
                reasons::IMAGE_PULL_FAILED,
                message.clone(),
            )
        }
        RunnerState::DeadlineExceeded => outcome(
            RunPhase::Failed,
            reasons::TIMEOUT,
            "the runner hit its deadline",
        ),
        RunnerState::Lost { reason } => {
            if r.attempt.saturating_sub(prev.resumes) < intent.max_attempts {
                let next = r.attempt + 1;
                if !r.stopping {
                    actions.push(RunAction::StopRunner {
                        name: r.name.clone(),
                        graceful: false,
                    });
                }
                actions.push(RunAction::StartRunner { attempt: next });
                status.attempts = next;
                status.runner = None;
                outcome(
                    RunPhase::Pending,
                    reasons::TO_BE_RETRIED,
                    format!(
                        "runner {} lost ({reason}); starting attempt {next} of {}",
                        r.name, intent.max_attempts
                    ),
                )
            } else {
                // What is left of the lost runner (a Failed Job) goes, as it would on a retry.
                stop_now(r, actions);
                outcome(
                    RunPhase::Failed,
                    reasons::RUNNER_LOST,
                    format!(
                        "runner {} lost ({reason}) and no attempts are left ({} allowed)",
                        r.name, intent.max_attempts
                    ),
                )
            }
        }
    }
}

/// Stop `r` at once unless a stop is under way.
fn stop_now(r: &ObservedRunner, actions: &mut Vec<RunAction>) {
    if !r.stopping {
        actions.push(RunAction::StopRunner {
            name: r.name.clone(),
            graceful: false,
        });
    }
}

/// The status recording the end of an external run: phase, the `Succeeded` condition (reason
/// `Succeeded`, `Failed` or `Cancelled`, the executor's message or a default one) and the
/// completion time (the start time too when the run never got one). `None` when `prev` is
/// already terminal (a run that was cancelled or timed out keeps that end), or when `end` is not
/// an end (`Pending`, `Running`: nothing to record).
pub fn record_external_end(
    prev: &RunStatus,
    end: RunPhase,
    message: &str,
    generation: i64,
    now: Millis,
) -> Option<RunStatus> {
    if prev.phase.is_terminal() {
        return None;
    }
    let (reason, default_message) = match end {
        RunPhase::Succeeded => (reasons::SUCCEEDED, "the pipeline succeeded"),
        RunPhase::Failed => (reasons::FAILED, "the pipeline failed"),
        RunPhase::Cancelled => (reasons::CANCELLED, "cancelled by its executor"),
        RunPhase::Pending | RunPhase::Running => return None,
    };
    let message = if message.trim().is_empty() {
        default_message.to_string()
    } else {
        message.to_string()
    };
    let result = outcome(end, reason, message);
    let mut status = prev.clone();
    status.phase = result.phase;
    status.observed_generation = generation;
    status.start_time = Some(prev.start_time.unwrap_or(Time(now)));
    status.completion_time = Some(Time(now));
    set_condition(
        &mut status.conditions,
        Condition {
            type_: SUCCEEDED.to_string(),
            status: result.status,
            reason: result.reason.to_string(),
            message: result.message,
            last_transition_time: Time(now),
            observed_generation: generation,
        },
    );
    Some(status)
}

/// Map a stored reason back to its constant (reasons are a closed vocabulary).
fn static_reason(r: &str) -> &'static str {
    [
        reasons::PENDING,
        reasons::WAITING_FOR_RUNNER,
        reasons::RUNNING,
        reasons::WAITING_FOR_APPROVAL,
        reasons::SUCCEEDED,
        reasons::FAILED,
        reasons::CANCELLED,
        reasons::CANCELLED_RUNNING_FINALLY,
        reasons::TIMEOUT,
        reasons::OOM_KILLED,
        reasons::IMAGE_PULL_FAILED,
        reasons::RUNNER_LOST,
        reasons::TO_BE_RETRIED,
        reasons::INVALID_SPEC,
        SECRET_NOT_ALLOWED,
        SECRET_NOT_FOUND,
    ]
    .into_iter()
    .find(|c| *c == r)
    .unwrap_or(reasons::PENDING)
}

#[cfg(test)]
mod tests;
