//! An in-process `sparkwing-operator` (its `run_controllers`) with a shutdown switch, for tests.

use crate::api_task::ApiTask;
use anyhow::{bail, Context, Result};
use kube::Client;
use sparkwing_operator::{run_controllers, Config, Metrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a clean shutdown may take.
const STOP_WITHIN: Duration = Duration::from_secs(45);

/// The operator's controllers running as a task; aborted when dropped.
pub struct OperatorTask {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<sparkwing_operator::Result<()>>>,
    /// The operator's metrics (status writes, transitions, runners started...).
    pub metrics: Arc<Metrics>,
    /// The in-process API, when started with [`OperatorTask::start_with_api`].
    pub api: Option<ApiTask>,
}

impl OperatorTask {
    pub fn start(client: Client, config: Config) -> OperatorTask {
        let metrics = config.metrics.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_controllers(client, config, async move {
            let _ = stopped.await;
        }));
        OperatorTask {
            stop: Some(stop),
            task: Some(task),
            metrics,
            api: None,
        }
    }

    /// The operator with its API in the same process, as `sparkwing-operator --api-addr
    /// 127.0.0.1:<free port> --data-dir <tempdir> --bootstrap-admin-token-file <file>
    /// --runner-api-url http://127.0.0.1:<port>` runs them (runs triggered without a namespace
    /// go to `namespace`).
    pub async fn start_with_api(
        client: Client,
        config: Config,
        namespace: &str,
    ) -> Result<OperatorTask> {
        let api = ApiTask::start(client.clone(), namespace).await?;
        let mut op = OperatorTask::start(client, api.configure(config));
        op.api = Some(api);
        Ok(op)
    }

    /// [`OperatorTask::start_with_api`] with `runs` as the API's run backend.
    pub async fn start_with_api_runs(
        client: Client,
        config: Config,
        namespace: &str,
        runs: std::sync::Arc<dyn sparkwing_operator::api::RunBackend>,
    ) -> Result<OperatorTask> {
        let api = ApiTask::start_with_runs(client.clone(), namespace, runs).await?;
        let mut op = OperatorTask::start(client, api.configure(config));
        op.api = Some(api);
        Ok(op)
    }

    /// The in-process API; panics when started without one.
    pub fn api(&self) -> &ApiTask {
        self.api
            .as_ref()
            .expect("the operator was started without its API (start_with_api)")
    }

    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Clean shutdown; fails when the operator had stopped with an error.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().context("stopped twice")?;
        if let Some(api) = self.api.take() {
            api.stop().await?;
        }
        let Ok(joined) = tokio::time::timeout(STOP_WITHIN, task).await else {
            bail!(
                "the operator did not shut down within {}s; still running: {}",
                STOP_WITHIN.as_secs(),
                still_running(&self.metrics)
            );
        };
        joined?.context("the operator failed")?;
        Ok(())
    }
}

/// What `run_controllers` has not finished (its waits and controller loops), for an error.
fn still_running(metrics: &Metrics) -> String {
    let running = metrics.running();
    if running.is_empty() {
        "nothing (it was about to return)".to_string()
    } else {
        running.join(", ")
    }
}

impl Drop for OperatorTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
