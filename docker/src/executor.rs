//! `DockerExecutor`: the `Executor` whose runners are containers, and the host's drive loop.
//!
//! The host process admits and records the run (box slots, run row, `run.lock`), then loops over
//! `reconcile_run_once` with this executor. The runner container runs `sparkwing __runner`, which
//! continues the recorded run with the same engine as the process executor: it writes the same
//! store rows (one SQLite file, bind-mounted) and log files, and prints the same lines, which the
//! host copies to its own stdout and stderr unchanged.

use super::client::Client;
use super::container::{runner_container, Mounts};
use super::pool::PoolPlacement;
use super::request::{self, RunnerRequest};
use super::{container_name, DockerError, RUNNER_EXE};
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use serde_json::json;
use sparkwing_core::reconcile::executor::Executor;
use sparkwing_core::reconcile::run::{ObservedRunner, RunObservation, RunnerState};
use sparkwing_core::reconcile::status::{RunStatus as ReconcileStatus, SUCCEEDED};
use sparkwing_core::RunPhase;
use sparkwing_engine::exit::ExitCode;
use sparkwing_engine::host::{host_loop, local_intent, HostExecutor, StopState};
use sparkwing_engine::store::Store;
use sparkwing_engine::{now_ms, Admitted, Format, RunRequest};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// How often the host looks at its runner between changes. Inspecting a local container is cheap.
const POLL: Duration = Duration::from_millis(50);
/// How long the host waits for the tail of the runner's logs after it ended.
const LOG_DRAIN: Duration = Duration::from_secs(10);

pub struct DockerExecutor {
    client: Client,
    image: String,
    mounts: Mounts,
    format: Format,
    request_path: PathBuf,
    /// Claiming from a pool: runners come from `sparkwing pool run` instead of being created.
    pool: RefCell<Option<PoolPlacement>>,
    /// The pool runner that claimed this run, once seen.
    pool_runner: RefCell<Option<String>>,
    attempt: Cell<u32>,
    stops: StopState,
    start_error: RefCell<Option<String>>,
    events: RefCell<Vec<(String, String, bool)>>,
    /// The run's store (the same SQLite file the runner writes through its bind mount): the
    /// runner's transitions are recorded there as `runner` events.
    store: RefCell<Store>,
    /// Copies the runner's output to ours once it runs.
    logs: RefCell<Option<tokio::task::JoinHandle<()>>>,
}

impl DockerExecutor {
    fn runner_name(&self, run: &str) -> Option<String> {
        let attempt = self.attempt.get();
        if attempt == 0 {
            return None;
        }
        if let Some(name) = self.pool_runner.borrow().clone() {
            return Some(name);
        }
        if let Some(p) = self.pool.borrow().as_ref() {
            let name = p.claimed_runner(run)?;
            *self.pool_runner.borrow_mut() = Some(name.clone());
            return Some(name);
        }
        Some(container_name(run, attempt))
    }
}

impl Executor for DockerExecutor {
    type Error = DockerError;

    async fn observe(&self, run: &str) -> Result<RunObservation, DockerError> {
        let Some(name) = self.runner_name(run) else {
            return Ok(RunObservation::default());
        };
        let Some(c) = self.client.inspect(&name).await? else {
            return Ok(RunObservation::default());
        };
        let st = c.state.unwrap_or_default();
        let state = match st.status {
            Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::PAUSED)
            | Some(ContainerStateStatusEnum::RESTARTING) => RunnerState::Running,
            Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
                if st.oom_killed == Some(true) {
                    RunnerState::OomKilled
                } else {
                    match st.exit_code {
                        Some(0) => RunnerState::Succeeded,
                        code => RunnerState::Failed {
                            exit_code: code.map(|c| c as i32),
                        },
                    }
                }
            }
            Some(ContainerStateStatusEnum::REMOVING) => RunnerState::Lost {
                reason: "the container is being removed".into(),
            },
            _ => match self.start_error.borrow().clone() {
                // Created but it could not start (bad image, missing binary): an image error.
                Some(message) => RunnerState::ImagePullFailed { message },
                None => RunnerState::Starting {
                    unschedulable: None,
                },
            },
        };
        let stopping = self.stops.stopping();
        Ok(RunObservation {
            runner: Some(ObservedRunner {
                name,
                attempt: self.attempt.get(),
                state,
                stopping,
            }),
            jobs: vec![],
        })
    }

    async fn start_runner(&self, run: &str, attempt: u32) -> Result<(), DockerError> {
        self.attempt.set(attempt);
        if let Some(p) = self.pool.borrow().as_ref() {
            if p.claimed_runner(run).is_none() {
                p.enqueue(run, &self.request_path)?;
            }
            return Ok(());
        }
        let name = container_name(run, attempt);
        let cmd = vec![
            RUNNER_EXE.to_string(),
            "__runner".to_string(),
            "--request".to_string(),
            self.request_path.display().to_string(),
        ];
        let body = runner_container(&self.image, cmd, run, "", &self.mounts, Some(self.format));
        self.client.create(&name, body).await?;
        if let Err(e) = self.client.start(&name).await {
            // Leave the decision to observe: a created container that cannot start is an image
            // error, and the run fails with it.
            *self.start_error.borrow_mut() = Some(e.to_string());
        }
        Ok(())
    }

    async fn stop_runner(&self, name: &str, graceful: bool) -> Result<(), DockerError> {
        let signal = if graceful {
            self.stops.signal()
        } else {
            eprintln!("second interrupt: killing the runner container now");
            "SIGKILL"
        };
        self.client.kill(name, signal).await?;
        self.stops.sent(graceful);
        Ok(())
    }

    async fn delete_run(&self, _run: &str) -> Result<(), DockerError> {
        // Local runs have no TTL: the store keeps them until the user removes them.
        Ok(())
    }

    async fn event(
        &self,
        _run: &str,
        reason: &str,
        message: &str,
        warning: bool,
    ) -> Result<(), DockerError> {
        self.events
            .borrow_mut()
            .push((reason.to_string(), message.to_string(), warning));
        Ok(())
    }
}

impl HostExecutor for DockerExecutor {
    fn stops(&self) -> &StopState {
        &self.stops
    }

    async fn changed(&self, max: Duration) {
        // Inspecting a local container is cheap: look again soon.
        tokio::time::sleep(max.min(POLL)).await;
    }

    async fn reconciled(&self, run: &str, status: &ReconcileStatus) -> Result<(), DockerError> {
        for (reason, message, warning) in self.events.borrow_mut().drain(..) {
            // Stored for `runs status`, not printed: the output stays the process executor's.
            self.store.borrow_mut().append_event(
                run,
                None,
                "runner",
                &json!({"reason": reason, "message": message, "warning": warning, "runner": status.runner}),
                now_ms(),
            )?;
        }
        let mut logs = self.logs.borrow_mut();
        if let (None, Some(name)) = (&*logs, &status.runner) {
            if status.phase != RunPhase::Pending {
                *logs = Some(tokio::spawn(follow_logs(self.client.clone(), name.clone())));
            }
        }
        // A pool that went away while we waited in its queue: start a cold runner instead.
        let pool_gone = self.pool.borrow().as_ref().is_some_and(|p| !p.is_alive());
        if pool_gone && status.runner.is_none() {
            if let Some(p) = self.pool.borrow_mut().take() {
                p.dequeue(run);
                eprintln!(
                    "pool {} stopped before it gave this run a runner; starting a cold container",
                    p.name()
                );
            }
        }
        Ok(())
    }
}

/// Copy a container's output to ours, byte for byte, until it ends.
async fn follow_logs(client: Client, name: String) {
    let opts = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = client.docker.logs(&name, Some(opts));
    while let Some(item) = stream.next().await {
        match item {
            Ok(bollard::container::LogOutput::StdErr { message }) => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&message);
                let _ = err.flush();
            }
            Ok(out) => {
                let mut o = std::io::stdout().lock();
                // A closed stdout must not stop the run (as with the process executor).
                let _ = o.write_all(&out.into_bytes());
                let _ = o.flush();
            }
            Err(_) => break,
        }
    }
}

/// How the host reaches its runner.
pub enum Placement {
    Cold,
    Pool(PoolPlacement),
}

/// Drive an admitted run on a runner container until it ends; returns the run's exit code.
pub async fn drive(
    req: &RunRequest,
    mut admitted: Admitted,
    client: Client,
    image: String,
    placement: Placement,
) -> Result<ExitCode, DockerError> {
    let run_id = admitted.run_id().to_string();
    let request_path = request::write(admitted.run_dir(), &RunnerRequest::from_run(req, &run_id))?;
    let exec = DockerExecutor {
        client: client.clone(),
        image,
        mounts: Mounts::for_host(&req.repo_root, &req.home)?,
        format: req.format,
        request_path: request_path.clone(),
        pool: RefCell::new(match placement {
            Placement::Cold => None,
            Placement::Pool(p) => Some(p),
        }),
        pool_runner: RefCell::new(None),
        attempt: Cell::new(0),
        stops: StopState::default(),
        start_error: RefCell::new(None),
        events: RefCell::new(Vec::new()),
        store: RefCell::new(Store::open(&req.home.root)?),
        logs: RefCell::new(None),
    };
    let result = host_loop(&exec, &run_id, local_intent(), admitted.interrupts()).await;
    let status = result.as_ref().ok().cloned().unwrap_or_default();
    let logs = exec.logs.borrow_mut().take();
    if let Some(h) = logs {
        let _ = tokio::time::timeout(LOG_DRAIN, h).await;
    }
    // Clean up whatever happens next: the request (secrets), the runner, the queue entry.
    let _ = std::fs::remove_file(&request_path);
    let pool_runner = exec.pool_runner.borrow().clone();
    let runner = status.runner.clone().or(pool_runner).or_else(|| {
        (exec.attempt.get() > 0 && exec.pool.borrow().is_none())
            .then(|| container_name(&run_id, exec.attempt.get()))
    });
    if let Some(p) = exec.pool.borrow().as_ref() {
        p.dequeue(&run_id);
        if let Some(name) = &runner {
            p.release(name);
        }
    }
    if let Some(name) = &runner {
        client.remove(name).await?;
    }
    let status = result?;

    // The engine inside recorded how the run ended, unless the container died first (OOM, a
    // kill, a start failure): then record the decision's outcome here.
    let run = admitted.store().find_run(&run_id)?;
    if run.status.is_terminal() {
        return Ok(ExitCode::of_run(run.status));
    }
    let outcome = match status.phase {
        RunPhase::Succeeded => RunPhase::Succeeded,
        RunPhase::Cancelled => RunPhase::Cancelled,
        _ => RunPhase::Failed,
    };
    let reason = status
        .condition(SUCCEEDED)
        .map(|c| format!("{} ({})", c.message, c.reason))
        .unwrap_or_else(|| "the runner ended without recording the run".to_string());
    Ok(admitted.finish_from_outside(outcome, reason)?)
}
