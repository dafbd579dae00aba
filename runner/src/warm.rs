//! A RunnerPool's warm runner: idle until the operator claims its pod, then one attempt.

use crate::attempt::{execute_attempt, Attempt};
use crate::{api_error, podinfo, required_env, RunnerError, RunnerResult, ENV_API_URL};
use sparkwing_api::ApiClient;
use sparkwing_engine::exit::ExitCode;
use sparkwing_engine::Format;
use std::path::PathBuf;
use std::time::Instant;

/// A warm runner's pool credential and where it reads its own pod (set by the operator on warm
/// pods; docs/runner.md).
use sparkwing_api::names::env::{
    PODINFO_DIR as ENV_PODINFO_DIR, POD_NAME as ENV_POD_NAME, POOL_TOKEN as ENV_POOL_TOKEN,
};

/// How often an idle warm runner reads its annotations file (a cheap file read).
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a claimed warm runner keeps asking the API for its run's token (409 while the API
/// does not see the claim yet, unreachable, 5xx).
const EXCHANGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

fn warm_env(name: &str, why: &str) -> Result<String, RunnerError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(RunnerError::new(
            ExitCode::RunnerEnv,
            format!(
                "{name} is not set: {why} (the operator sets it on warm pods; see docs/runner.md)"
            ),
        )),
    }
}

/// `sparkwing runner --warm --pool NS/POOL`: a RunnerPool's warm runner. Idles reading its own
/// pod's annotations (a downwardAPI volume) until the operator claims it, trades the pool token
/// for the run's token at the API, then runs that attempt exactly as `--run` does. SIGTERM while
/// idle (a reap) exits 0 at once.
pub fn run_warm(ns: &str, pool: &str, format: Format) -> RunnerResult {
    let url = required_env(ENV_API_URL)?;
    let pool_token = warm_env(
        ENV_POOL_TOKEN,
        &format!(
            "a warm runner trades the pool's token (the Secret {pool}-pool-token, which the operator keeps only when it serves the API in the same process, `--api-addr`) for its run's token; without an API give the pool `minIdle: 0` so its runs get runner Jobs"
        ),
    )?;
    let podinfo = PathBuf::from(warm_env(
        ENV_PODINFO_DIR,
        "the directory of the pod's downwardAPI volume, where the claim appears",
    )?);
    let pod = warm_env(
        ENV_POD_NAME,
        "the warm pod's own name, which the API checks the claim of",
    )?;
    let pool_client = ApiClient::new(&url, &pool_token)
        .map_err(|e| RunnerError::new(ExitCode::RunnerEnv, format!("{ENV_API_URL}: {e}")))?;
    let rt = sparkwing_engine::runtime::build()?;
    let mut term = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    tracing::info!(
        "runner: warm runner {pod} of pool {ns}/{pool}, waiting for a claim in {}",
        podinfo.join(podinfo::ANNOTATIONS_FILE).display()
    );
    let idle_since = Instant::now();
    let mut warned: Option<String> = None;
    let (run, claimed_attempt) = loop {
        match podinfo::read_claim(&podinfo) {
            Ok(Some(claim)) => break claim,
            Ok(None) => {}
            Err(e) => {
                if warned.as_deref() != Some(e.as_str()) {
                    tracing::warn!("{e}; still waiting for a claim");
                    warned = Some(e);
                }
            }
        }
        let terminated = rt.block_on(async {
            tokio::select! {
                _ = term.recv() => true,
                () = tokio::time::sleep(CLAIM_POLL) => false,
            }
        });
        if terminated {
            tracing::info!("runner: SIGTERM while idle (reaped); exiting");
            return Ok(ExitCode::Success);
        }
    };
    tracing::info!(
        "runner: claimed by run {ns}/{run} attempt {claimed_attempt} after {:.1}s idle",
        idle_since.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + EXCHANGE_DEADLINE;
    let mut backoff = std::time::Duration::from_millis(100);
    let (token, attempt) = loop {
        match pool_client.claim_token(ns, pool, &pod, &run) {
            Ok(got) => break (got.token, got.attempt),
            Err(e) => {
                let retry =
                    e.is_unreachable() || matches!(e.status(), Some(409 | 408 | 429 | 500..=599));
                if !retry || Instant::now() >= deadline {
                    return Err(api_error(
                        &format!(
                            "cannot trade the pool token of {ns}/{pool} for run {ns}/{run}'s token at {url}"
                        ),
                        e,
                    ));
                }
            }
        }
        let terminated = rt.block_on(async {
            tokio::select! {
                _ = term.recv() => true,
                () = tokio::time::sleep(backoff) => false,
            }
        });
        if terminated {
            tracing::info!("runner: SIGTERM before run {ns}/{run} started; exiting");
            return Ok(ExitCode::Cancelled);
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
    };
    if attempt != claimed_attempt {
        tracing::warn!(
            "the pod's annotations say attempt {claimed_attempt}, the API {attempt}; running attempt {attempt}"
        );
    }
    let client = ApiClient::new(&url, &token)
        .map_err(|e| RunnerError::new(ExitCode::RunnerEnv, format!("{ENV_API_URL}: {e}")))?;
    execute_attempt(
        &rt,
        term,
        &client,
        &url,
        Attempt {
            ns,
            name: &run,
            attempt,
        },
        format,
    )
}
