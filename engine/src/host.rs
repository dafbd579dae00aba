//! The host side of a local run, the same for every local executor: a loop of
//! `core::reconcile_run_once` (observe the runner, decide, apply) until the run's phase is
//! terminal. The runner is the engine in this process (`ProcessExecutor`) or a container running
//! `sparkwing __runner` (`DockerExecutor`); the operator drives its Jobs with the same function.
//!
//! Interrupts become the run's cancel intent: the first asks core for a graceful stop, a later
//! one for a hard stop; the executor carries out the `StopRunner` core decides.

use super::interrupts::{Interrupt, Interrupts};
use super::now_ms;
use sparkwing_core::reconcile::executor::{reconcile_run_once, Executor};
use sparkwing_core::reconcile::run::{CancelRequest, RunIntent};
use sparkwing_core::reconcile::status::RunStatus as ReconcileStatus;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What a local executor adds to [`Executor`] for the host loop.
pub trait HostExecutor: Executor {
    /// The stops sent to the runner so far.
    fn stops(&self) -> &StopState;

    /// Resolves when the runner may have changed, at the latest after `max`.
    fn changed(&self, max: Duration) -> impl Future<Output = ()>;

    /// After each reconcile, with the status core decided (Docker: record events, follow the
    /// runner's logs, fall back from a pool that went away).
    fn reconciled(
        &self,
        _run: &str,
        _status: &ReconcileStatus,
    ) -> impl Future<Output = Result<(), Self::Error>> {
        async { Ok(()) }
    }
}

/// What the host asked of its runner: the executor's `observe` reports `stopping` from here, so
/// core asks for a graceful stop once and a hard stop after a second interrupt.
#[derive(Default)]
pub struct StopState {
    /// 0: no stop sent; 1: a graceful stop; 2: a hard stop.
    sent: AtomicU8,
    /// A later interrupt asked for a hard stop: an earlier graceful stop no longer counts.
    want_hard: AtomicBool,
    /// The signal of the graceful stop, so the runner prints what the host received.
    signal: Mutex<Option<&'static str>>,
}

impl StopState {
    fn interrupted(&self, i: Interrupt) {
        if i.hard {
            self.want_hard.store(true, Ordering::SeqCst);
        }
        let mut s = self.signal.lock().unwrap_or_else(|e| e.into_inner());
        s.get_or_insert(i.signal);
    }

    /// The runner is stopping as the run now asks (a graceful stop does not satisfy a hard one).
    pub fn stopping(&self) -> bool {
        match self.sent.load(Ordering::SeqCst) {
            0 => false,
            1 => !self.want_hard.load(Ordering::SeqCst),
            _ => true,
        }
    }

    /// Record a stop sent to the runner.
    pub fn sent(&self, graceful: bool) {
        self.sent
            .fetch_max(if graceful { 1 } else { 2 }, Ordering::SeqCst);
    }

    /// The signal that asked for the stop (`SIGTERM` when none did: core stopped the run).
    pub fn signal(&self) -> &'static str {
        self.signal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or("SIGTERM")
    }
}

/// Reconcile the run with `exec` until its phase is terminal; returns the last status.
pub async fn host_loop<E: HostExecutor>(
    exec: &E,
    run: &str,
    mut intent: RunIntent,
    interrupts: &mut Interrupts,
) -> Result<ReconcileStatus, E::Error> {
    let mut status = ReconcileStatus::default();
    loop {
        let decision = reconcile_run_once(exec, run, &intent, &status, now_ms()).await?;
        status = decision.status;
        exec.reconciled(run, &status).await?;
        if status.phase.is_terminal() {
            return Ok(status);
        }
        let wait = decision
            .requeue_after_ms
            .map(Duration::from_millis)
            .unwrap_or(Duration::MAX);
        tokio::select! {
            _ = exec.changed(wait) => {}
            i = interrupts.next() => {
                exec.stops().interrupted(i);
                intent.cancel = if i.hard {
                    CancelRequest::Cancelled
                } else {
                    CancelRequest::CancelledRunFinally
                };
            }
        }
    }
}

/// The intent of a local run: one runner attempt (a second would collide with the jobs the first
/// one recorded), no timeout, no TTL.
pub fn local_intent() -> RunIntent {
    RunIntent {
        max_attempts: 1,
        ..RunIntent::default()
    }
}
