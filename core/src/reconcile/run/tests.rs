use super::*;

fn runner(attempt: u32, state: RunnerState) -> RunObservation {
    RunObservation {
        runner: Some(ObservedRunner {
            name: format!("r-{attempt}"),
            attempt,
            state,
            stopping: false,
        }),
        jobs: vec![],
    }
}

fn step(intent: &RunIntent, prev: &RunStatus, obs: &RunObservation, now: Millis) -> RunDecision {
    reconcile_run(intent, prev, obs, now)
}

fn reason(s: &RunStatus) -> &str {
    &s.condition(SUCCEEDED).unwrap().reason
}

#[test]
fn a_new_run_starts_its_first_runner() {
    let d = step(
        &RunIntent::default(),
        &RunStatus::default(),
        &RunObservation::default(),
        100,
    );
    assert!(d.actions.contains(&RunAction::StartRunner { attempt: 1 }));
    assert_eq!(d.status.phase, RunPhase::Pending);
    assert_eq!(d.status.attempts, 1);
    assert_eq!(reason(&d.status), reasons::WAITING_FOR_RUNNER);
    // Seen again before the runner shows up (a lagging watch): the same attempt is asked for
    // again (idempotent by name), never a second attempt, and the status does not move.
    let again = step(
        &RunIntent::default(),
        &d.status,
        &RunObservation::default(),
        200,
    );
    assert_eq!(again.actions, vec![RunAction::StartRunner { attempt: 1 }]);
    assert_eq!(again.status, d.status);
}

#[test]
fn running_then_succeeded_with_times_set_once() {
    let intent = RunIntent::default();
    let pending = step(
        &intent,
        &RunStatus::default(),
        &RunObservation::default(),
        100,
    )
    .status;
    let running = step(&intent, &pending, &runner(1, RunnerState::Running), 200);
    assert_eq!(running.status.phase, RunPhase::Running);
    assert_eq!(running.status.start_time, Some(Time(200)));
    assert_eq!(running.status.runner.as_deref(), Some("r-1"));
    // Nothing changed: identical status, no event, no action.
    let same = step(
        &intent,
        &running.status,
        &runner(1, RunnerState::Running),
        900,
    );
    assert_eq!(same.status, running.status);
    assert!(same.actions.is_empty(), "{:?}", same.actions);
    let done = step(
        &intent,
        &same.status,
        &runner(1, RunnerState::Succeeded),
        1000,
    );
    assert_eq!(done.status.phase, RunPhase::Succeeded);
    assert_eq!(done.status.completion_time, Some(Time(1000)));
    assert_eq!(
        done.status.condition(SUCCEEDED).unwrap().status,
        ConditionStatus::True
    );
    assert!(matches!(done.actions[..], [RunAction::Event { .. }]));
    // A finished run causes no further actions (no TTL set).
    let idle = step(
        &intent,
        &done.status,
        &runner(1, RunnerState::Succeeded),
        5000,
    );
    assert_eq!(idle.status, done.status);
    assert!(idle.actions.is_empty());
    assert_eq!(idle.requeue_after_ms, None);
}

#[test]
fn failures_map_to_reasons() {
    let intent = RunIntent::default();
    let running = step(
        &intent,
        &RunStatus::default(),
        &runner(1, RunnerState::Running),
        1,
    )
    .status;
    for (state, want) in [
        (RunnerState::Failed { exit_code: Some(1) }, reasons::FAILED),
        (RunnerState::OomKilled, reasons::OOM_KILLED),
        (
            RunnerState::ImagePullFailed {
                message: "no such image".into(),
            },
            reasons::IMAGE_PULL_FAILED,
        ),
        (RunnerState::DeadlineExceeded, reasons::TIMEOUT),
    ] {
        let d = step(&intent, &running, &runner(1, state), 2);
        assert_eq!(d.status.phase, RunPhase::Failed);
        assert_eq!(reason(&d.status), want);
    }
}

#[test]
fn a_lost_runner_is_retried_until_attempts_run_out() {
    let intent = RunIntent {
        max_attempts: 2,
        ..Default::default()
    };
    let running = step(
        &intent,
        &RunStatus::default(),
        &runner(1, RunnerState::Running),
        1,
    )
    .status;
    let lost = step(
        &intent,
        &running,
        &runner(
            1,
            RunnerState::Lost {
                reason: "evicted".into(),
            },
        ),
        2,
    );
    assert!(lost
        .actions
        .contains(&RunAction::StartRunner { attempt: 2 }));
    assert!(lost.actions.contains(&RunAction::StopRunner {
        name: "r-1".into(),
        graceful: false
    }));
    assert_eq!(reason(&lost.status), reasons::TO_BE_RETRIED);
    assert_eq!(lost.status.attempts, 2);
    let second = step(&intent, &lost.status, &runner(2, RunnerState::Running), 3);
    assert_eq!(second.status.phase, RunPhase::Running);
    let gone = step(&intent, &second.status, &RunObservation::default(), 4);
    assert_eq!(gone.status.phase, RunPhase::Failed);
    assert_eq!(reason(&gone.status), reasons::RUNNER_LOST);
    assert!(!gone
        .actions
        .iter()
        .any(|a| matches!(a, RunAction::StartRunner { .. })));
}

#[test]
fn cancel_stops_the_runner_and_ends_cancelled() {
    for (cancel, graceful) in [
        (CancelRequest::Cancelled, false),
        (CancelRequest::CancelledRunFinally, true),
    ] {
        let intent = RunIntent::default();
        let running = step(
            &intent,
            &RunStatus::default(),
            &runner(1, RunnerState::Running),
            1,
        )
        .status;
        let intent = RunIntent {
            cancel,
            ..Default::default()
        };
        let d = step(&intent, &running, &runner(1, RunnerState::Running), 2);
        assert!(d.actions.contains(&RunAction::StopRunner {
            name: "r-1".into(),
            graceful
        }));
        assert!(!d.status.phase.is_terminal());
        // Stop already requested: not asked twice.
        let mut obs = runner(1, RunnerState::Running);
        obs.runner.as_mut().unwrap().stopping = true;
        let d2 = step(&intent, &d.status, &obs, 3);
        assert!(!d2
            .actions
            .iter()
            .any(|a| matches!(a, RunAction::StopRunner { .. })));
        let end = step(
            &intent,
            &d2.status,
            &runner(
                1,
                RunnerState::Failed {
                    exit_code: Some(130),
                },
            ),
            4,
        );
        assert_eq!(end.status.phase, RunPhase::Cancelled);
        assert_eq!(reason(&end.status), reasons::CANCELLED);
    }
    // Cancelled before any runner: ends at once.
    let intent = RunIntent {
        cancel: CancelRequest::Cancelled,
        ..Default::default()
    };
    let d = step(
        &intent,
        &RunStatus::default(),
        &RunObservation::default(),
        1,
    );
    assert_eq!(d.status.phase, RunPhase::Cancelled);
}

#[test]
fn timeout_fails_the_run_and_stops_the_runner() {
    let intent = RunIntent {
        timeout_ms: Some(5000),
        ..Default::default()
    };
    let running = step(
        &intent,
        &RunStatus::default(),
        &runner(1, RunnerState::Running),
        1000,
    );
    assert_eq!(running.requeue_after_ms, Some(5000));
    let later = step(
        &intent,
        &running.status,
        &runner(1, RunnerState::Running),
        3000,
    );
    assert_eq!(later.requeue_after_ms, Some(3000));
    let over = step(
        &intent,
        &later.status,
        &runner(1, RunnerState::Running),
        6000,
    );
    assert_eq!(over.status.phase, RunPhase::Failed);
    assert_eq!(reason(&over.status), reasons::TIMEOUT);
    assert!(over.actions.contains(&RunAction::StopRunner {
        name: "r-1".into(),
        graceful: false
    }));
}

#[test]
fn ttl_deletes_the_finished_run() {
    let intent = RunIntent {
        ttl_after_finished_ms: Some(10_000),
        ..Default::default()
    };
    let running = step(
        &intent,
        &RunStatus::default(),
        &runner(1, RunnerState::Running),
        0,
    )
    .status;
    let done = step(&intent, &running, &runner(1, RunnerState::Succeeded), 1000);
    assert_eq!(done.requeue_after_ms, Some(10_000));
    let early = step(&intent, &done.status, &RunObservation::default(), 5000);
    assert!(early.actions.is_empty());
    assert_eq!(early.requeue_after_ms, Some(6000));
    let due = step(&intent, &done.status, &RunObservation::default(), 11_000);
    assert_eq!(due.actions, vec![RunAction::DeleteRun]);
}

#[test]
fn invalid_specs_fail_without_a_runner() {
    let intent = RunIntent {
        invalid: Some("spec.pipeline is empty".into()),
        ..Default::default()
    };
    let d = step(
        &intent,
        &RunStatus::default(),
        &RunObservation::default(),
        1,
    );
    assert_eq!(d.status.phase, RunPhase::Failed);
    assert_eq!(reason(&d.status), reasons::INVALID_SPEC);
    assert!(!d
        .actions
        .iter()
        .any(|a| matches!(a, RunAction::StartRunner { .. })));
}

fn external() -> RunIntent {
    RunIntent {
        external: true,
        ..Default::default()
    }
}

#[test]
fn an_external_run_is_running_at_once_and_never_gets_a_runner() {
    let d = step(
        &external(),
        &RunStatus::default(),
        &RunObservation::default(),
        1000,
    );
    assert_eq!(d.status.phase, RunPhase::Running);
    assert_eq!(reason(&d.status), reasons::RUNNING);
    assert_eq!(d.status.start_time, Some(Time(1000)));
    assert_eq!(d.status.attempts, 0);
    assert_eq!(d.status.runner, None);
    assert!(d
        .actions
        .iter()
        .all(|a| matches!(a, RunAction::Event { .. })));
    // Reconciled again: identical status, nothing to do, no requeue without a timeout.
    let again = step(&external(), &d.status, &RunObservation::default(), 50_000);
    assert_eq!(again.status, d.status);
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    assert_eq!(again.requeue_after_ms, None);
}

#[test]
fn an_external_run_ends_as_its_executor_records_it() {
    let running = step(
        &external(),
        &RunStatus::default(),
        &RunObservation::default(),
        1000,
    )
    .status;
    for (end, why) in [
        (RunPhase::Succeeded, reasons::SUCCEEDED),
        (RunPhase::Failed, reasons::FAILED),
        (RunPhase::Cancelled, reasons::CANCELLED),
    ] {
        let done = record_external_end(&running, end, "", 1, 5000).unwrap();
        assert_eq!(done.phase, end);
        assert_eq!(reason(&done), why);
        assert!(!done.condition(SUCCEEDED).unwrap().message.is_empty());
        assert_eq!(done.start_time, Some(Time(1000)));
        assert_eq!(done.completion_time, Some(Time(5000)));
        // The operator honours it: no action, no change, TTL counted from the recorded end.
        let intent = RunIntent {
            ttl_after_finished_ms: Some(10_000),
            ..external()
        };
        let d = step(&intent, &done, &RunObservation::default(), 6000);
        assert_eq!(d.status, done);
        assert!(d.actions.is_empty());
        assert_eq!(d.requeue_after_ms, Some(9000));
        let due = step(&intent, &done, &RunObservation::default(), 15_000);
        assert_eq!(due.actions, vec![RunAction::DeleteRun]);
    }
    let msg = record_external_end(&running, RunPhase::Failed, "job test failed", 1, 5000).unwrap();
    assert_eq!(msg.condition(SUCCEEDED).unwrap().message, "job test failed");
    // A run recorded before the operator saw it still gets a start time.
    let early =
        record_external_end(&RunStatus::default(), RunPhase::Succeeded, "", 1, 7000).unwrap();
    assert_eq!(early.start_time, Some(Time(7000)));
    // Not an end: nothing to record.
    for not_an_end in [RunPhase::Pending, RunPhase::Running] {
        assert_eq!(record_external_end(&running, not_an_end, "", 1, 5000), None);
    }
    // An end already recorded (cancel, timeout, an earlier finish) is kept.
    assert_eq!(
        record_external_end(&msg, RunPhase::Succeeded, "", 1, 9000),
        None
    );
}

#[test]
fn an_external_run_times_out_and_is_cancelled_without_stopping_anything() {
    let intent = RunIntent {
        timeout_ms: Some(5000),
        ..external()
    };
    let running = step(
        &intent,
        &RunStatus::default(),
        &RunObservation::default(),
        1000,
    );
    assert_eq!(running.requeue_after_ms, Some(5000));
    let over = step(&intent, &running.status, &RunObservation::default(), 6000);
    assert_eq!(over.status.phase, RunPhase::Failed);
    assert_eq!(reason(&over.status), reasons::TIMEOUT);
    assert!(over
        .actions
        .iter()
        .all(|a| matches!(a, RunAction::Event { .. })));
    let cancel = RunIntent {
        cancel: CancelRequest::CancelledRunFinally,
        ..external()
    };
    let c = step(&cancel, &running.status, &RunObservation::default(), 2000);
    assert_eq!(c.status.phase, RunPhase::Cancelled);
    assert_eq!(reason(&c.status), reasons::CANCELLED);
    assert!(c
        .actions
        .iter()
        .all(|a| matches!(a, RunAction::Event { .. })));
    // An invalid external run fails like any other.
    let bad = RunIntent {
        invalid: Some("spec.pipeline must not be empty".into()),
        ..external()
    };
    let d = step(&bad, &RunStatus::default(), &RunObservation::default(), 1);
    assert_eq!(reason(&d.status), reasons::INVALID_SPEC);
}

fn asking_for(secrets: &[&str], access: Option<SecretAccess>) -> RunIntent {
    RunIntent {
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        secret_access: access,
        ..Default::default()
    }
}

fn access(pipeline: Option<&str>, granted: Option<&[&str]>, existing: &[&str]) -> SecretAccess {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    SecretAccess {
        namespace: "ci".into(),
        pipeline: pipeline.map(String::from),
        granted: granted.map(owned),
        existing: owned(existing),
    }
}

#[test]
fn granted_existing_secrets_start_the_runner() {
    let intent = asking_for(
        &["deploy-key", "db"],
        Some(access(
            Some("app"),
            Some(&["db", "deploy-key", "other"]),
            &["db", "deploy-key"],
        )),
    );
    let d = step(
        &intent,
        &RunStatus::default(),
        &RunObservation::default(),
        100,
    );
    assert_eq!(d.status.phase, RunPhase::Pending);
    assert!(d.actions.contains(&RunAction::StartRunner { attempt: 1 }));
    // No secrets asked for: nothing to observe, nothing checked.
    let d = step(
        &RunIntent::default(),
        &RunStatus::default(),
        &RunObservation::default(),
        100,
    );
    assert!(d.actions.contains(&RunAction::StartRunner { attempt: 1 }));
}

#[test]
fn a_secret_no_pipeline_grants_fails_the_run_at_once() {
    let cases = [
        (access(None, None, &[]), "the run was not created for a Pipeline"),
        (
            access(Some("app"), Some(&["other"]), &[]),
            "Pipeline app does not grant it; add it to Pipeline app's spec.secrets",
        ),
        (
            access(Some("gone"), None, &[]),
            "Pipeline gone (the run's sparkwing.dev/pipeline annotation) does not exist in namespace ci",
        ),
    ];
    for (observed, want) in cases {
        let intent = asking_for(&["deploy-key"], Some(observed));
        let d = step(
            &intent,
            &RunStatus::default(),
            &RunObservation::default(),
            100,
        );
        assert_eq!(d.status.phase, RunPhase::Failed);
        assert_eq!(reason(&d.status), SECRET_NOT_ALLOWED);
        let msg = &d.status.condition(SUCCEEDED).unwrap().message;
        assert!(
            msg.contains("\"deploy-key\"") && msg.contains(want),
            "{msg}"
        );
        assert!(msg.contains("spec.secrets"), "{msg}");
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, RunAction::StartRunner { .. })),
            "{:?}",
            d.actions
        );
        assert_eq!(d.status.attempts, 0);
        assert_eq!(d.status.completion_time, Some(Time(100)));
        assert!(d.actions.contains(&RunAction::Event {
            reason: SECRET_NOT_ALLOWED.into(),
            message: msg.clone(),
            warning: true,
        }));
        // Deterministic: reconciled again later, the finished run keeps its status and times.
        let again = step(&intent, &d.status, &RunObservation::default(), 5_000);
        assert_eq!(again.status, d.status);
        assert!(again.actions.is_empty(), "{:?}", again.actions);
    }
    // Not granted wins over missing, and only the ungranted one is named.
    let intent = asking_for(
        &["db", "deploy-key"],
        Some(access(Some("app"), Some(&["db"]), &[])),
    );
    let d = step(
        &intent,
        &RunStatus::default(),
        &RunObservation::default(),
        1,
    );
    assert_eq!(reason(&d.status), SECRET_NOT_ALLOWED);
    let msg = &d.status.condition(SUCCEEDED).unwrap().message;
    assert!(
        msg.contains("\"deploy-key\"") && !msg.contains("\"db\""),
        "{msg}"
    );
    // Asking for secrets without an observation never starts a runner unchecked.
    let d = step(
        &asking_for(&["db"], None),
        &RunStatus::default(),
        &RunObservation::default(),
        1,
    );
    assert_eq!(reason(&d.status), SECRET_NOT_ALLOWED);
}

#[test]
fn a_granted_secret_that_does_not_exist_fails_with_how_to_create_it() {
    let intent = asking_for(
        &["db", "deploy-key"],
        Some(access(Some("app"), Some(&["db", "deploy-key"]), &["db"])),
    );
    let d = step(
        &intent,
        &RunStatus::default(),
        &RunObservation::default(),
        100,
    );
    assert_eq!(d.status.phase, RunPhase::Failed);
    assert_eq!(reason(&d.status), SECRET_NOT_FOUND);
    let msg = &d.status.condition(SUCCEEDED).unwrap().message;
    assert!(
        msg.contains("\"deploy-key\" not found in namespace ci")
            && msg.contains("kubectl -n ci create secret generic deploy-key"),
        "{msg}"
    );
    assert!(!msg.contains("generic db "), "{msg}");
}

#[test]
fn secrets_are_checked_before_the_first_runner_only() {
    // A run past its first start (the Pipeline changed since) keeps running.
    let intent = asking_for(&["db"], Some(access(Some("app"), Some(&[]), &[])));
    let prev = RunStatus {
        attempts: 1,
        runner: Some("r-1".into()),
        ..RunStatus::default()
    };
    let d = step(&intent, &prev, &runner(1, RunnerState::Running), 100);
    assert_eq!(d.status.phase, RunPhase::Running);
    // A cancelled run that never started is cancelled, not refused.
    let mut cancelled = intent.clone();
    cancelled.cancel = CancelRequest::Cancelled;
    let d = step(
        &cancelled,
        &RunStatus::default(),
        &RunObservation::default(),
        1,
    );
    assert_eq!(reason(&d.status), reasons::CANCELLED);
    // An invalid spec is reported as such first.
    let mut invalid = intent;
    invalid.invalid = Some("spec.pipeline must not be empty".into());
    let d = step(
        &invalid,
        &RunStatus::default(),
        &RunObservation::default(),
        1,
    );
    assert_eq!(reason(&d.status), reasons::INVALID_SPEC);
}

#[test]
fn secret_names_must_be_secret_names() {
    let names: Vec<String> = ["db", "deploy.key-2", "Bad", "", "-x", "a_b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let problems = secret_name_problems("spec.secrets", &names);
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems[0].starts_with("spec.secrets: \"Bad\" is not a Secret name"));
}

#[test]
fn an_unschedulable_runner_is_pending_with_the_schedulers_reason() {
    let prev = RunStatus {
        attempts: 1,
        ..RunStatus::default()
    };
    let d = step(
        &RunIntent::default(),
        &prev,
        &runner(
            1,
            RunnerState::Starting {
                unschedulable: Some("0/1 nodes are available: 1 Insufficient cpu.".into()),
            },
        ),
        100,
    );
    assert_eq!(d.status.phase, RunPhase::Pending);
    assert_eq!(reason(&d.status), reasons::UNSCHEDULABLE);
    let msg = &d.status.condition(SUCCEEDED).unwrap().message;
    assert!(
        msg.contains("cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."),
        "{msg}"
    );
    // Nothing is started or stopped: only the transition's event.
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, RunAction::Event { .. })),
        "{:?}",
        d.actions
    );
    // Once placed, it is only starting again.
    let d = step(
        &RunIntent::default(),
        &d.status,
        &runner(
            1,
            RunnerState::Starting {
                unschedulable: None,
            },
        ),
        200,
    );
    assert_eq!(reason(&d.status), reasons::WAITING_FOR_RUNNER);
}

/// A runner that never started (its image cannot be pulled) or was lost for the last time is
/// stopped when the run ends, and again later if it is still there; one that ran to an end of
/// its own is kept (its pod and logs are the record) until the run is deleted.
#[test]
fn a_runner_that_never_ran_to_its_end_is_removed_when_the_run_ends() {
    let intent = RunIntent {
        max_attempts: 1,
        ..Default::default()
    };
    let pending = step(
        &intent,
        &RunStatus::default(),
        &RunObservation::default(),
        1,
    )
    .status;
    let stop = |name: &str| RunAction::StopRunner {
        name: name.into(),
        graceful: false,
    };
    let pull = runner(
        1,
        RunnerState::ImagePullFailed {
            message: "no such image".into(),
        },
    );
    let lost = runner(
        1,
        RunnerState::Lost {
            reason: "Job failed: BackoffLimitExceeded".into(),
        },
    );
    for obs in [&pull, &lost] {
        let end = step(&intent, &pending, obs, 2);
        assert!(end.status.phase.is_terminal(), "{:?}", end.status.phase);
        assert!(end.actions.contains(&stop("r-1")), "{:?}", end.actions);
        // Still there on a later look (the delete failed, or a watch lags): asked again.
        let later = step(&intent, &end.status, obs, 3);
        assert_eq!(later.actions, vec![stop("r-1")]);
        // Being deleted: not asked twice.
        let mut stopping = obs.clone();
        stopping.runner.as_mut().unwrap().stopping = true;
        assert!(step(&intent, &end.status, &stopping, 4).actions.is_empty());
    }
    for state in [
        RunnerState::Succeeded,
        RunnerState::Failed { exit_code: Some(3) },
        RunnerState::OomKilled,
        RunnerState::DeadlineExceeded,
    ] {
        let obs = runner(1, state);
        let end = step(&intent, &pending, &obs, 2);
        assert!(end.status.phase.is_terminal());
        let kept = |d: &RunDecision| {
            !d.actions
                .iter()
                .any(|a| matches!(a, RunAction::StopRunner { .. }))
        };
        assert!(kept(&end), "{:?}", end.actions);
        assert!(kept(&step(&intent, &end.status, &obs, 3)));
    }
}

fn parked(attempt: u32, deadline_ms: Option<i64>, decided: bool) -> crate::gate::Parked {
    crate::gate::Parked {
        attempt,
        gates: vec!["approve".into()],
        deadline_ms,
        decided,
    }
}

/// A run whose attempt 1 is running, as the reconcile wrote it.
fn running_attempt_one(intent: &RunIntent) -> RunStatus {
    let pending = step(
        intent,
        &RunStatus::default(),
        &RunObservation::default(),
        100,
    )
    .status;
    step(intent, &pending, &runner(1, RunnerState::Running), 200).status
}

#[test]
fn a_parked_run_keeps_running_without_a_runner_until_a_gate_is_decided() {
    let mut intent = RunIntent::default();
    let running = running_attempt_one(&intent);
    intent.parked = Some(parked(1, None, false));
    // The parked runner (still running or already exited) is stopped; the run stays Running.
    for state in [RunnerState::Running, RunnerState::Succeeded] {
        let d = step(&intent, &running, &runner(1, state), 300);
        assert_eq!(d.status.phase, RunPhase::Running);
        assert_eq!(reason(&d.status), reasons::WAITING_FOR_APPROVAL);
        assert_eq!(
            d.status.condition(SUCCEEDED).unwrap().message,
            "waiting for gate approve; no runner until a decision (attempt 1 parked)"
        );
        assert!(d.actions.contains(&RunAction::StopRunner {
            name: "r-1".into(),
            graceful: false
        }));
        assert_eq!(d.status.runner, None);
        // No deadline: looked at again within the recheck, for a decision in the store.
        assert_eq!(d.requeue_after_ms, Some(PARKED_RECHECK_MS));
    }
    // Gone: nothing to stop, nothing started, no retry of a "lost" runner.
    let waiting = step(&intent, &running, &runner(1, RunnerState::Succeeded), 300).status;
    let d = step(&intent, &waiting, &RunObservation::default(), 400);
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, RunAction::Event { .. })),
        "{:?}",
        d.actions
    );
    assert_eq!(d.status.phase, RunPhase::Running);
    assert_eq!(d.status.attempts, 1);
    // Decided: attempt 2 starts, counted as a resume (not against maxAttempts).
    intent.parked = Some(parked(1, None, true));
    let d = step(&intent, &d.status, &RunObservation::default(), 500);
    assert_eq!(d.actions[0], RunAction::StartRunner { attempt: 2 });
    assert_eq!((d.status.attempts, d.status.resumes), (2, 1));
    assert_eq!(
        d.status.condition(SUCCEEDED).unwrap().message,
        "gate approve decided: starting attempt 2 to resume the run"
    );
    // The record names attempt 1 now: attempt 2 is reconciled as any attempt.
    let resumed = step(&intent, &d.status, &runner(2, RunnerState::Running), 600);
    assert_eq!(resumed.status.phase, RunPhase::Running);
    assert_eq!(reason(&resumed.status), reasons::RUNNING);
    // A resumed run's lost runner is still retried: resumes do not use up maxAttempts (1 here).
    let one = RunIntent {
        max_attempts: 1,
        ..intent.clone()
    };
    let lost = step(
        &one,
        &resumed.status,
        &runner(
            2,
            RunnerState::Lost {
                reason: "pod deleted".into(),
            },
        ),
        700,
    );
    assert!(!lost
        .actions
        .contains(&RunAction::StartRunner { attempt: 3 }));
    assert_eq!(lost.status.phase, RunPhase::Failed);
    let two = RunIntent {
        max_attempts: 2,
        ..intent
    };
    let lost = step(
        &two,
        &resumed.status,
        &runner(
            2,
            RunnerState::Lost {
                reason: "pod deleted".into(),
            },
        ),
        700,
    );
    assert!(lost
        .actions
        .contains(&RunAction::StartRunner { attempt: 3 }));
}

#[test]
fn a_parked_run_resumes_on_a_decision_recorded_in_the_store_without_the_mark() {
    let mut intent = RunIntent::default();
    let running = running_attempt_one(&intent);
    intent.parked = Some(parked(1, None, false));
    // Read only while the current attempt is parked, unmarked and not cancelled.
    assert!(reads_gate_decisions(&intent, &running));
    let marked = RunIntent {
        parked: Some(parked(1, None, true)),
        ..intent.clone()
    };
    assert!(!reads_gate_decisions(&marked, &running));
    let cancelled = RunIntent {
        cancel: CancelRequest::CancelledRunFinally,
        ..intent.clone()
    };
    assert!(!reads_gate_decisions(&cancelled, &running));
    let later = RunStatus {
        attempts: 2,
        ..running.clone()
    };
    assert!(!reads_gate_decisions(&intent, &later));
    assert!(!reads_gate_decisions(&RunIntent::default(), &running));
    // A decision on another gate of the run: still parked.
    intent.decided_gates = vec!["other".into()];
    let d = step(&intent, &running, &RunObservation::default(), 1_000);
    assert_eq!(reason(&d.status), reasons::WAITING_FOR_APPROVAL);
    assert_eq!(d.requeue_after_ms, Some(PARKED_RECHECK_MS));
    // The parked gate decided in the store: attempt 2 starts, as with the mark.
    intent.decided_gates = vec!["other".into(), "approve".into()];
    let d = step(&intent, &d.status, &RunObservation::default(), 2_000);
    assert_eq!(d.actions[0], RunAction::StartRunner { attempt: 2 });
    assert_eq!((d.status.attempts, d.status.resumes), (2, 1));
    assert_eq!(
        d.status.condition(SUCCEEDED).unwrap().message,
        "gate approve decided: starting attempt 2 to resume the run"
    );
    // A gate deadline sooner than the recheck is looked at first.
    intent.decided_gates.clear();
    intent.parked = Some(parked(1, Some(6_000), false));
    let d = step(&intent, &running, &RunObservation::default(), 1_000);
    assert_eq!(d.requeue_after_ms, Some(5_000));
}

#[test]
fn a_parked_run_resumes_at_the_gate_deadline_and_is_cancelled_or_timed_out_without_a_runner() {
    let mut intent = RunIntent::default();
    let running = running_attempt_one(&intent);
    intent.parked = Some(parked(1, Some(5_000), false));
    let d = step(&intent, &running, &RunObservation::default(), 1_000);
    assert_eq!(reason(&d.status), reasons::WAITING_FOR_APPROVAL);
    assert_eq!(d.requeue_after_ms, Some(4_000));
    let d = step(&intent, &d.status, &RunObservation::default(), 5_000);
    assert_eq!(d.actions[0], RunAction::StartRunner { attempt: 2 });
    assert_eq!(
        d.status.condition(SUCCEEDED).unwrap().message,
        "gate approve timed out: starting attempt 2 to resume the run"
    );
    // Cancelled while parked: at once, no runner to stop or start.
    let mut cancel = intent.clone();
    cancel.cancel = CancelRequest::CancelledRunFinally;
    let d = step(&cancel, &running, &RunObservation::default(), 1_000);
    assert_eq!(d.status.phase, RunPhase::Cancelled);
    assert_eq!(reason(&d.status), reasons::CANCELLED);
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, RunAction::Event { .. })),
        "{:?}",
        d.actions
    );
    // The run's own timeout still ends it (start 200 + 2s).
    let mut timed = intent.clone();
    timed.timeout_ms = Some(2_000);
    let d = step(&timed, &running, &RunObservation::default(), 1_000);
    assert_eq!(d.requeue_after_ms, Some(1_200));
    let d = step(&timed, &d.status, &RunObservation::default(), 2_200);
    assert_eq!(d.status.phase, RunPhase::Failed);
    assert_eq!(reason(&d.status), reasons::TIMEOUT);
    // A record of an earlier attempt changes nothing: attempt 2's runner is reconciled as usual.
    let old = RunIntent {
        parked: Some(parked(1, None, false)),
        ..RunIntent::default()
    };
    let two = RunStatus {
        attempts: 2,
        ..running
    };
    let d = step(&old, &two, &runner(2, RunnerState::Succeeded), 3_000);
    assert_eq!(d.status.phase, RunPhase::Succeeded);
}
