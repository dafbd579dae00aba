//! Where the webhook finds `Pipeline`s: [`PipelineBackend`], with [`KubePipelines`] (the
//! Kubernetes API) and [`MemoryPipelines`] (a list, for tests).

use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use sparkwing_crds::pipeline::Pipeline;

use crate::github::Credentials;

use crate::runs::backend::BackendError;

/// Lists the Pipelines a webhook delivery may start; finds the Pipeline a run was started from
/// (whose approvers may decide its gates).
pub trait PipelineBackend: Send + Sync + 'static {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Pipeline>, BackendError>>;
    /// The Pipeline `name` of namespace `ns`; `None` when it does not exist (or is in a namespace
    /// this API does not watch).
    fn get<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pipeline>, BackendError>>;
    /// The GitHub credentials of `pipeline` (`spec.github.secretRef`); `None` when it names
    /// none or they are unusable.
    fn github_credentials<'a>(
        &'a self,
        pipeline: &'a Pipeline,
    ) -> BoxFuture<'a, Result<Option<Credentials>, BackendError>>;
}

/// Pipelines through the Kubernetes API: those of one namespace, or of every namespace.
#[derive(Clone)]
pub struct KubePipelines {
    client: kube::Client,
    namespace: Option<String>,
}

impl KubePipelines {
    /// `namespace`: only that namespace's Pipelines (`None`: every namespace).
    pub fn new(client: kube::Client, namespace: Option<String>) -> Self {
        KubePipelines { client, namespace }
    }
}

impl PipelineBackend for KubePipelines {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Pipeline>, BackendError>> {
        async move {
            let api: Api<Pipeline> = match &self.namespace {
                Some(ns) => Api::namespaced(self.client.clone(), ns),
                None => Api::all(self.client.clone()),
            };
            Ok(api.list(&ListParams::default()).await?.items)
        }
        .boxed()
    }

    fn get<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pipeline>, BackendError>> {
        async move {
            if self.namespace.as_deref().is_some_and(|only| only != ns) {
                return Ok(None);
            }
            let api: Api<Pipeline> = Api::namespaced(self.client.clone(), ns);
            Ok(api.get_opt(name).await?)
        }
        .boxed()
    }

    fn github_credentials<'a>(
        &'a self,
        pipeline: &'a Pipeline,
    ) -> BoxFuture<'a, Result<Option<Credentials>, BackendError>> {
        async move {
            let ns = pipeline.namespace().unwrap_or_default();
            Ok(
                match crate::github::pipeline_credentials(&self.client, &ns, pipeline).await? {
                    Some(Ok(c)) => Some(c),
                    Some(Err(missing)) => {
                        tracing::warn!(namespace = %ns, pipeline = %pipeline.name_any(), "{missing}");
                        None
                    }
                    None => None,
                },
            )
        }
        .boxed()
    }
}

/// Pipelines in a list.
#[derive(Default)]
pub struct MemoryPipelines {
    pipelines: Mutex<Vec<Pipeline>>,
    /// GitHub credentials by the name of the Secret a Pipeline names.
    credentials: Mutex<std::collections::BTreeMap<String, Credentials>>,
}

impl MemoryPipelines {
    pub fn new(pipelines: Vec<Pipeline>) -> Self {
        MemoryPipelines {
            pipelines: Mutex::new(pipelines),
            credentials: Mutex::default(),
        }
    }

    /// The Secret `secret` holds `credentials`.
    pub fn set_credentials(&self, secret: &str, credentials: Credentials) {
        if let Ok(mut c) = self.credentials.lock() {
            c.insert(secret.to_string(), credentials);
        }
    }

    /// Replace the list.
    pub fn set(&self, pipelines: Vec<Pipeline>) {
        if let Ok(mut p) = self.pipelines.lock() {
            *p = pipelines;
        }
    }
}

impl PipelineBackend for MemoryPipelines {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Pipeline>, BackendError>> {
        let result = self
            .pipelines
            .lock()
            .map(|p| p.clone())
            .map_err(|_| BackendError::Other("memory pipelines lock poisoned".into()));
        async move { result }.boxed()
    }

    fn get<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pipeline>, BackendError>> {
        let result = self
            .pipelines
            .lock()
            .map(|p| {
                p.iter()
                    .find(|p| p.namespace().as_deref() == Some(ns) && p.name_any() == name)
                    .cloned()
            })
            .map_err(|_| BackendError::Other("memory pipelines lock poisoned".into()));
        async move { result }.boxed()
    }

    fn github_credentials<'a>(
        &'a self,
        pipeline: &'a Pipeline,
    ) -> BoxFuture<'a, Result<Option<Credentials>, BackendError>> {
        let found = pipeline
            .spec
            .github_secret()
            .and_then(|s| self.credentials.lock().ok().and_then(|c| c.get(s).cloned()));
        async move { Ok(found) }.boxed()
    }
}

/// The webhook receiver's configuration and state (part of [`ApiState`](super::ApiState)).
pub struct Webhooks {
    /// The shared secret of `X-Hub-Signature-256`. `None`: every delivery is answered 500 with
    /// how to configure one; nothing unsigned is ever accepted.
    pub secret: Option<Vec<u8>>,
    /// Where the Pipelines are.
    pub pipelines: std::sync::Arc<dyn PipelineBackend>,
    /// Held while a push is applied, so two copies of one delivery arriving together create its
    /// runs once.
    pub apply: tokio::sync::Mutex<()>,
    /// GitHub's API, to list a pull request's changed files for path filters; `None`: not
    /// listed (such Pipelines run, marked `sparkwing.dev/paths-unchecked`).
    pub github: Option<crate::github::GitHubClient>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks::new(None, std::sync::Arc::new(MemoryPipelines::default()))
    }
}

impl Webhooks {
    pub fn new(secret: Option<Vec<u8>>, pipelines: std::sync::Arc<dyn PipelineBackend>) -> Self {
        Webhooks {
            secret,
            pipelines,
            apply: tokio::sync::Mutex::new(()),
            github: None,
        }
    }

    /// List pull requests' changed files through `client`.
    #[must_use]
    pub fn with_github(mut self, client: crate::github::GitHubClient) -> Self {
        self.github = Some(client);
        self
    }
}

/// Why the webhook secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSecretError {
    #[error("reading the webhook secret file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook secret file {path} is empty")]
    Empty { path: std::path::PathBuf },
}

/// The webhook secret in `path`: its content without trailing line breaks.
pub fn read_webhook_secret(path: &std::path::Path) -> Result<Vec<u8>, WebhookSecretError> {
    let mut bytes = std::fs::read(path).map_err(|source| WebhookSecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(WebhookSecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}
