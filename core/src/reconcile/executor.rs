//! The seams between the reconcile decisions and the world: an `Executor` observes and changes
//! runners; `reconcile_run_once` is one observe -> decide -> apply step, the same for every
//! executor (Kubernetes Jobs, Docker containers, the local process). A `PoolExecutor` does the
//! same for the warm runners of a pool (`reconcile_pool_once`: pods or containers).

use super::pool::{reconcile_pool, ClaimRequest, PoolAction, PoolDecision, PoolIntent, PoolRunner};
use super::run::{reconcile_run, RunAction, RunDecision, RunIntent, RunObservation};
use super::status::{PoolStatus, RunStatus};
use super::Millis;
use std::future::Future;

/// What an executor can do to the runners of runs. Implementations do IO; they decide nothing.
pub trait Executor {
    type Error: std::error::Error;

    /// Observe the runner of `run` (the current attempt's, if any) and the job states it reported.
    fn observe(&self, run: &str) -> impl Future<Output = Result<RunObservation, Self::Error>>;

    /// Start (or claim) the runner for `attempt` of `run`. Must be idempotent: the runner's name is
    /// derived from the run and the attempt, and starting an existing one is not an error.
    fn start_runner(
        &self,
        run: &str,
        attempt: u32,
    ) -> impl Future<Output = Result<(), Self::Error>>;

    /// Stop a runner; `graceful` lets the run's `finally` jobs run first.
    fn stop_runner(
        &self,
        name: &str,
        graceful: bool,
    ) -> impl Future<Output = Result<(), Self::Error>>;

    /// Delete a finished run (its TTL passed).
    fn delete_run(&self, run: &str) -> impl Future<Output = Result<(), Self::Error>>;

    /// Record a transition for humans (a Kubernetes Event, a local event row).
    fn event(
        &self,
        run: &str,
        reason: &str,
        message: &str,
        warning: bool,
    ) -> impl Future<Output = Result<(), Self::Error>>;
}

/// One reconcile step: observe, decide, apply. Returns the decision (its status is what the caller
/// writes back, its `requeue_after_ms` when to look again).
pub async fn reconcile_run_once<E: Executor>(
    executor: &E,
    run: &str,
    intent: &RunIntent,
    prev: &RunStatus,
    now: Millis,
) -> Result<RunDecision, E::Error> {
    let observed = executor.observe(run).await?;
    let decision = reconcile_run(intent, prev, &observed, now);
    // Stops before starts: a lost runner is cleaned up before its replacement starts.
    let mut ordered: Vec<&RunAction> = decision.actions.iter().collect();
    ordered.sort_by_key(|a| match a {
        RunAction::StopRunner { .. } => 0,
        RunAction::StartRunner { .. } => 1,
        RunAction::DeleteRun => 2,
        RunAction::Event { .. } => 3,
    });
    for action in ordered {
        match action {
            RunAction::StopRunner { name, graceful } => {
                executor.stop_runner(name, *graceful).await?
            }
            RunAction::StartRunner { attempt } => executor.start_runner(run, *attempt).await?,
            RunAction::DeleteRun => executor.delete_run(run).await?,
            RunAction::Event {
                reason,
                message,
                warning,
            } => executor.event(run, reason, message, *warning).await?,
        }
    }
    Ok(decision)
}

/// What a pool's executor sees: its runners, the runs waiting for one, and runners that are spent
/// (finished, their outcome recorded elsewhere) and only wait to be removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolObservation {
    pub runners: Vec<PoolRunner>,
    pub claims: Vec<ClaimRequest>,
    pub spent: Vec<String>,
}

/// What an executor can do to a pool's warm runners. Implementations do IO; they decide nothing.
/// Each change returns `false` when it lost a race (the runner changed since observed: a guarded
/// delete or claim was refused); the pool is then looked at again soon.
pub trait PoolExecutor {
    type Error: std::error::Error;

    fn observe(&self) -> impl Future<Output = Result<PoolObservation, Self::Error>>;

    /// Remove a spent runner (one already gone is not an error).
    fn remove_spent(&self, runner: &str) -> impl Future<Output = Result<(), Self::Error>>;

    /// Create a warm runner named `name` (idempotent: an existing one is not an error).
    fn create(&self, name: &str) -> impl Future<Output = Result<bool, Self::Error>>;

    /// Hand idle runner `runner` to `run`.
    fn claim(&self, runner: &str, run: &str) -> impl Future<Output = Result<bool, Self::Error>>;

    /// Delete an idle runner, only if it is still idle.
    fn reap(&self, runner: &str) -> impl Future<Output = Result<bool, Self::Error>>;
}

/// The decision of one pool reconcile, and whether any change lost a race.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStep {
    pub decision: PoolDecision,
    pub raced: bool,
}

/// One pool reconcile: observe, remove what is spent, decide, apply. The caller writes the
/// decision's status back (a `RunnerPool`'s status, a line on the terminal).
pub async fn reconcile_pool_once<E: PoolExecutor>(
    executor: &E,
    name_prefix: &str,
    intent: &PoolIntent,
    prev: &PoolStatus,
    now: Millis,
) -> Result<PoolStep, E::Error> {
    let observed = executor.observe().await?;
    for runner in &observed.spent {
        executor.remove_spent(runner).await?;
    }
    let mut raced = false;
    let decision = reconcile_pool(
        name_prefix,
        intent,
        prev,
        &observed.runners,
        &observed.claims,
        now,
    );
    for action in &decision.actions {
        let applied = match action {
            PoolAction::Create { name } => executor.create(name).await?,
            PoolAction::Claim { runner, run } => executor.claim(runner, run).await?,
            PoolAction::Reap { runner } => executor.reap(runner).await?,
        };
        raced |= !applied;
    }
    Ok(PoolStep { decision, raced })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::run::{ObservedRunner, RunnerState};
    use crate::reconcile::status::RunPhase;
    use std::cell::RefCell;

    /// An in-memory executor: runners are entries in a map; tests drive their states.
    #[derive(Default)]
    struct Fake {
        runner: RefCell<Option<ObservedRunner>>,
        log: RefCell<Vec<String>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake")]
    struct FakeError;

    impl Executor for Fake {
        type Error = FakeError;
        async fn observe(&self, _run: &str) -> Result<RunObservation, FakeError> {
            Ok(RunObservation {
                runner: self.runner.borrow().clone(),
                jobs: vec![],
            })
        }
        async fn start_runner(&self, run: &str, attempt: u32) -> Result<(), FakeError> {
            self.log.borrow_mut().push(format!("start {run} {attempt}"));
            *self.runner.borrow_mut() = Some(ObservedRunner {
                name: format!("{run}-{attempt}"),
                attempt,
                state: RunnerState::Starting {
                    unschedulable: None,
                },
                stopping: false,
            });
            Ok(())
        }
        async fn stop_runner(&self, name: &str, graceful: bool) -> Result<(), FakeError> {
            self.log
                .borrow_mut()
                .push(format!("stop {name} {graceful}"));
            Ok(())
        }
        async fn delete_run(&self, run: &str) -> Result<(), FakeError> {
            self.log.borrow_mut().push(format!("delete {run}"));
            Ok(())
        }
        async fn event(
            &self,
            _run: &str,
            reason: &str,
            _m: &str,
            _w: bool,
        ) -> Result<(), FakeError> {
            self.log.borrow_mut().push(format!("event {reason}"));
            Ok(())
        }
    }

    /// Poll a future that never waits (the fake never does).
    fn block_on<F: Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the fake executor never waits"),
        }
    }

    #[test]
    fn drives_a_run_through_an_executor() {
        let fake = Fake::default();
        let intent = RunIntent::default();
        let d = block_on(reconcile_run_once(
            &fake,
            "r",
            &intent,
            &RunStatus::default(),
            1,
        ))
        .unwrap();
        assert_eq!(d.status.phase, RunPhase::Pending);
        fake.runner.borrow_mut().as_mut().unwrap().state = RunnerState::Running;
        let d = block_on(reconcile_run_once(&fake, "r", &intent, &d.status, 2)).unwrap();
        assert_eq!(d.status.phase, RunPhase::Running);
        fake.runner.borrow_mut().as_mut().unwrap().state = RunnerState::Succeeded;
        let d = block_on(reconcile_run_once(&fake, "r", &intent, &d.status, 3)).unwrap();
        assert_eq!(d.status.phase, RunPhase::Succeeded);
        assert_eq!(
            *fake.log.borrow(),
            [
                "start r 1",
                "event WaitingForRunner",
                "event Running",
                "event Succeeded"
            ]
        );
    }

    /// A pool of in-memory runners; `lose_reaps` makes every guarded delete lose its race.
    #[derive(Default)]
    struct FakePool {
        observed: RefCell<PoolObservation>,
        lose_reaps: bool,
        log: RefCell<Vec<String>>,
    }

    impl PoolExecutor for FakePool {
        type Error = FakeError;
        async fn observe(&self) -> Result<PoolObservation, FakeError> {
            Ok(self.observed.borrow().clone())
        }
        async fn remove_spent(&self, runner: &str) -> Result<(), FakeError> {
            self.log.borrow_mut().push(format!("remove {runner}"));
            Ok(())
        }
        async fn create(&self, name: &str) -> Result<bool, FakeError> {
            self.log.borrow_mut().push(format!("create {name}"));
            Ok(true)
        }
        async fn claim(&self, runner: &str, run: &str) -> Result<bool, FakeError> {
            self.log.borrow_mut().push(format!("claim {runner} {run}"));
            Ok(true)
        }
        async fn reap(&self, runner: &str) -> Result<bool, FakeError> {
            self.log.borrow_mut().push(format!("reap {runner}"));
            Ok(!self.lose_reaps)
        }
    }

    #[test]
    fn drives_a_pool_through_an_executor() {
        use crate::reconcile::pool::PoolRunnerState;
        let intent = PoolIntent {
            generation: 1,
            min_idle: 1,
            max_runners: 3,
            idle_timeout_ms: 1_000,
        };
        let idle = |name: &str, since| PoolRunner {
            name: name.into(),
            state: PoolRunnerState::Idle { since },
        };
        // Spent runners go first; a queued run claims the longest idle runner; one idle runner
        // past its timeout beyond minIdle is reaped.
        let pool = FakePool {
            lose_reaps: true,
            ..FakePool::default()
        };
        *pool.observed.borrow_mut() = PoolObservation {
            runners: vec![idle("a", 0), idle("b", 10), idle("c", 20)],
            claims: vec![ClaimRequest {
                run: "r1".into(),
                queued_at: 5,
            }],
            spent: vec!["old".into()],
        };
        let step = block_on(reconcile_pool_once(
            &pool,
            "p",
            &intent,
            &PoolStatus::default(),
            5_000,
        ))
        .unwrap();
        assert_eq!(*pool.log.borrow(), ["remove old", "claim a r1", "reap b"]);
        assert!(step.raced, "a reap that lost its race must be reported");
        assert_eq!(step.decision.status.busy, 1);
    }
}
