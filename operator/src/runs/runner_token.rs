//! A run's runner credential: a token of the single scope `run:<ns>/<name>` minted in the API's
//! token table, kept in the Secret `<run>-runner-token` that the runner Job mounts. Used by the
//! API's triggers and webhooks and by the operator's schedules (which create runs themselves).

use kube::ResourceExt;
use sparkwing_crds::pipeline_run::PipelineRun;

use sparkwing_api::scopes::Scope;
use sparkwing_state::StateError;

use crate::runs::backend::{BackendError, RunBackend};
use crate::store::Store;
use crate::tokens::{RunnerGrant, TokenError};

/// Why a run and its runner credential could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunnerTokenError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl From<StateError> for RunnerTokenError {
    fn from(e: StateError) -> Self {
        RunnerTokenError::Token(TokenError::State(e))
    }
}

/// Create `run` with its runner credential (the run's token: this run only, and its upload)
/// minted, and — `secret` — stored in the run's Secret *before* the run exists: the operator may
/// start the run's runner the moment the run is created, and a runner that starts without its
/// token fails. Once the run exists the Secret is made the run's (deleted with it). If the run
/// cannot be created the token is revoked and the Secret removed, except when a run of that name
/// exists already (a webhook delivery applied again): the Secret then holds the new token, as
/// valid as the one it replaced, and is given to that run. Returns the run and its token.
pub async fn create_with_runner_token(
    store: &Store,
    runs: &dyn RunBackend,
    run: PipelineRun,
    upload: Option<String>,
    secret: bool,
) -> Result<(PipelineRun, String), RunnerTokenError> {
    let (ns, name) = (run.namespace().unwrap_or_default(), run.name_any());
    let token = mint_runner_token(store, &ns, &name, upload).await?;
    let undo = || async {
        if secret {
            if let Err(e) = runs.delete_runner_token(&ns, &name).await {
                tracing::warn!(%ns, %name, "removing the runner token of a run not created: {e}");
            }
        }
        if let Err(e) = store.forget_run_tokens(&ns, &name).await {
            tracing::warn!(%ns, %name, "revoking the runner token of a run not created: {e}");
        }
    };
    if secret {
        if let Err(e) = runs.store_runner_token(&ns, &name, &token).await {
            undo().await;
            return Err(e.into());
        }
    }
    match runs.create(run).await {
        Ok(created) => {
            if secret {
                runs.adopt_runner_token(&created).await?;
            }
            Ok((created, token))
        }
        Err(BackendError::AlreadyExists(n)) => {
            if secret {
                if let Some(existing) = runs.get(&ns, &name).await? {
                    runs.adopt_runner_token(&existing).await?;
                }
            }
            Err(BackendError::AlreadyExists(n).into())
        }
        Err(e) => {
            undo().await;
            Err(e.into())
        }
    }
}

/// Mint a runner token of the run `ns/name`: the single scope `run:<ns>/<name>`, and the run's
/// upload (if its source is one) as the only upload it may read.
pub async fn mint_runner_token(
    store: &Store,
    ns: &str,
    name: &str,
    upload: Option<String>,
) -> Result<String, TokenError> {
    let scope = Scope::run(ns, name).to_string();
    let principal = format!("runner:{ns}/{name}");
    let (token, _) = store
        .create_token(
            &principal,
            vec![scope],
            Some(RunnerGrant {
                upload,
                ..RunnerGrant::default()
            }),
        )
        .await?;
    Ok(token)
}
