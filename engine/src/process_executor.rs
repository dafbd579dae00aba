//! `ProcessExecutor`: the `Executor` whose runner is the engine in this process. `sparkwing run`
//! drives it with the same host loop (and so the same `core::reconcile_run_once`) as the Docker
//! executor; the runner it starts is the engine's `dag_run::run_dag`, and a stop core decides reaches the
//! engine as an [`Interrupt`] (graceful: cancel with `finally`; hard: kill every job).

use super::admission::Admitted;
use super::dag_run::{run_dag, DagRun};
use super::host::{self, HostExecutor, StopState};
use super::interrupts::Interrupt;
use super::recorder::finish;
use super::{EngineError, RunRequest};
use crate::exit::ExitCode;
use sparkwing_core::reconcile::executor::Executor;
use sparkwing_core::reconcile::run::{ObservedRunner, RunObservation, RunnerState};
use sparkwing_core::RunPhase;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How the engine ended, as its host observes the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerEnd {
    /// The engine recorded the run's end and exits with this code.
    Exit(i32),
    /// The engine failed (store or IO error) before recording an end.
    Error,
}

/// The host's handle on the in-process runner.
pub struct ProcessExecutor {
    stops: StopState,
    start: Mutex<Option<oneshot::Sender<()>>>,
    started: AtomicBool,
    to_engine: mpsc::UnboundedSender<Interrupt>,
    ended: watch::Receiver<Option<RunnerEnd>>,
}

/// The engine's side: it waits to be started, takes its stops, reports its end.
pub struct RunnerSide {
    pub start: oneshot::Receiver<()>,
    pub stops: mpsc::UnboundedReceiver<Interrupt>,
    pub ended: watch::Sender<Option<RunnerEnd>>,
}

impl ProcessExecutor {
    pub fn new() -> (ProcessExecutor, RunnerSide) {
        let (start_tx, start_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let (end_tx, end_rx) = watch::channel(None);
        (
            ProcessExecutor {
                stops: StopState::default(),
                start: Mutex::new(Some(start_tx)),
                started: AtomicBool::new(false),
                to_engine: stop_tx,
                ended: end_rx,
            },
            RunnerSide {
                start: start_rx,
                stops: stop_rx,
                ended: end_tx,
            },
        )
    }

    /// The host is done: a runner never started will not be.
    pub fn close(&self) {
        self.start.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Executor for ProcessExecutor {
    type Error = Infallible;

    async fn observe(&self, run: &str) -> Result<RunObservation, Infallible> {
        if !self.started.load(Ordering::SeqCst) {
            return Ok(RunObservation::default());
        }
        let state = match *self.ended.borrow() {
            None => RunnerState::Running,
            Some(RunnerEnd::Exit(0)) => RunnerState::Succeeded,
            Some(RunnerEnd::Exit(code)) => RunnerState::Failed {
                exit_code: Some(code),
            },
            Some(RunnerEnd::Error) => RunnerState::Failed { exit_code: None },
        };
        Ok(RunObservation {
            runner: Some(ObservedRunner {
                name: format!("{run}-process"),
                attempt: 1,
                state,
                stopping: self.stops.stopping(),
            }),
            jobs: vec![],
        })
    }

    async fn start_runner(&self, _run: &str, _attempt: u32) -> Result<(), Infallible> {
        if let Some(start) = self.start.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = start.send(());
            self.started.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn stop_runner(&self, _name: &str, graceful: bool) -> Result<(), Infallible> {
        // The engine may have ended already; then there is nothing to stop.
        let _ = self.to_engine.send(Interrupt {
            signal: self.stops.signal(),
            hard: !graceful,
        });
        self.stops.sent(graceful);
        Ok(())
    }

    async fn delete_run(&self, _run: &str) -> Result<(), Infallible> {
        // Local runs have no TTL: the store keeps them until the user removes them.
        Ok(())
    }

    async fn event(&self, _: &str, _: &str, _: &str, _: bool) -> Result<(), Infallible> {
        // The engine records the run's own events (it is the runner); the host adds none.
        Ok(())
    }
}

impl HostExecutor for ProcessExecutor {
    fn stops(&self) -> &StopState {
        &self.stops
    }

    async fn changed(&self, max: Duration) {
        let mut ended = self.ended.clone();
        if ended.borrow_and_update().is_some() {
            tokio::time::sleep(max).await;
            return;
        }
        tokio::select! {
            r = ended.changed() => if r.is_err() { tokio::time::sleep(max).await },
            _ = tokio::time::sleep(max) => {}
        }
    }
}

/// Execute an admitted run with the process executor: the host loop of every local executor
/// (`host::host_loop`, core's reconcile) with this process's engine as the runner. Returns when
/// the run is recorded as ended.
pub async fn drive(req: &RunRequest, admitted: Admitted) -> Result<ExitCode, EngineError> {
    let Admitted {
        run_id,
        run_dir,
        rec,
        created,
        box_slot,
        _run_lock,
        mut interrupts,
    } = admitted;
    let (exec, runner) = ProcessExecutor::new();
    let engine = async {
        let RunnerSide {
            start,
            stops,
            ended,
        } = runner;
        let mut dag = DagRun {
            run_id: run_id.clone(),
            run_dir,
            rec,
            created,
            box_slot,
        };
        if start.await.is_err() {
            // Cancelled before core started the runner.
            return finish(
                &mut dag.rec,
                RunPhase::Cancelled,
                Some("cancelled before it started".into()),
                created,
            );
        }
        let result = run_dag(req, dag, stops).await;
        let _ = ended.send(Some(match &result {
            Ok(code) => RunnerEnd::Exit(code.code()),
            Err(_) => RunnerEnd::Error,
        }));
        result
    };
    let host = async {
        let status = host::host_loop(&exec, &run_id, host::local_intent(), &mut interrupts).await;
        exec.close();
        status
    };
    let (result, host) = tokio::join!(engine, host);
    // The process executor cannot fail (its errors are the engine's, returned below).
    let Ok(_) = host;
    result
}
