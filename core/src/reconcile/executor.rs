//! The seam between the reconcile decisions and the world: an `Executor` observes and changes
//! runners; `reconcile_run_once` is one observe -> decide -> apply step, the same for every
//! executor (Kubernetes Jobs, Docker containers, the local process).

use super::run::{reconcile_run, RunAction, RunDecision, RunIntent, RunObservation};
use super::status::RunStatus;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::run::{ObservedRunner, RunnerState};
    use crate::reconcile::status::Phase;
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
                state: RunnerState::Starting,
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
        assert_eq!(d.status.phase, Phase::Pending);
        fake.runner.borrow_mut().as_mut().unwrap().state = RunnerState::Running;
        let d = block_on(reconcile_run_once(&fake, "r", &intent, &d.status, 2)).unwrap();
        assert_eq!(d.status.phase, Phase::Running);
        fake.runner.borrow_mut().as_mut().unwrap().state = RunnerState::Succeeded;
        let d = block_on(reconcile_run_once(&fake, "r", &intent, &d.status, 3)).unwrap();
        assert_eq!(d.status.phase, Phase::Succeeded);
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
}
