//! An in-process `sparkwing-operator` (its `run_controllers`) with a shutdown switch, for tests.

use anyhow::{Context, Result};
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
        }
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
        tokio::time::timeout(STOP_WITHIN, task)
            .await
            .context("the operator did not shut down")??
            .context("the operator failed")?;
        Ok(())
    }
}

impl Drop for OperatorTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
