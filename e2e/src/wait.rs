//! Waiting on a PipelineRun's condition with a deadline: a watch on the one object, not a poll.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use kube::runtime::wait::await_condition;
use kube::Api;
use sparkwing_crds::PipelineRun;

/// Wait until `pred` holds for run `name` (which may not exist yet), at most `deadline`; the error
/// names `what` was awaited and shows the run's status then.
pub async fn wait_for_run(
    api: &Api<PipelineRun>,
    name: &str,
    what: &str,
    pred: impl Fn(&PipelineRun) -> bool + Send + 'static,
    deadline: Duration,
) -> Result<PipelineRun> {
    let cond = move |o: Option<&PipelineRun>| o.is_some_and(&pred);
    match tokio::time::timeout(deadline, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(run))) => Ok(run),
        Ok(Ok(None)) => bail!("run {name} is gone"),
        Ok(Err(e)) => Err(e).context(format!("watching run {name}")),
        Err(_) => {
            let now = api.get_opt(name).await?;
            bail!(
                "run {name} not {what} within {deadline:?}; status: {}",
                now.map(|r| serde_json::to_string(&r.status).unwrap_or_default())
                    .unwrap_or_else(|| "<it does not exist>".into())
            )
        }
    }
}
