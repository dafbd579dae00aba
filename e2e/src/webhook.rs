//! TEST INFRASTRUCTURE: GitHub push webhooks against the API in the test's process — push events
//! as GitHub sends them, POSTed to `/webhooks/github` with GitHub's headers and a real
//! HMAC-SHA256 signature (`X-Hub-Signature-256`) with [`WEBHOOK_SECRET`] — and [`PushCluster`]:
//! a [`Cluster`] with the real runner's pool and a git server hosting the repository pushed to.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use sparkwing_e2e::webhook::PushCluster;
//!
//! let bed = PushCluster::start("my-test").await?;
//! let sha = bed.tree.commit_all("first")?;
//! bed.tree.push("main")?;
//! bed.create_pipeline(serde_json::json!({})).await?;
//! let (status, answer) = bed.push("delivery-1", &sha).await?;
//! assert_eq!(status, 201, "{answer}");
//! bed.shutdown().await
//! # }
//! ```

use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use sparkwing_crds::pipeline::Pipeline;
use sparkwing_operator::api::webhook::signature_header;

use crate::api_task::WEBHOOK_SECRET;
use crate::cli::copy_tree;
use crate::git_server::{GitServer, WorkTree};
use crate::{real_runner, test_runner_image, ApiTask, Cluster};

/// How long the endpoint may take to answer a delivery.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// A push event to `main` of the repository `e2e/app` as GitHub sends it (the fields Sparkwing
/// reads, and a few more), pushed by `octocat`.
pub fn push_payload(clone_url: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "created": true,
        "deleted": false,
        "forced": false,
        "repository": {"name": "app", "full_name": "e2e/app", "clone_url": clone_url},
        "pusher": {"name": "octocat"},
        "sender": {"login": "octocat"},
    }))
    .expect("a payload")
}

/// The `X-Hub-Signature-256` value GitHub sends for `body`: `sha256=<HMAC-SHA256 of body with
/// WEBHOOK_SECRET>`.
pub fn sign(body: &[u8]) -> String {
    signature_header(WEBHOOK_SECRET, body)
}

/// `POST /webhooks/github` of `body` with GitHub's headers (`X-GitHub-Event: event`,
/// `X-GitHub-Delivery: delivery`, `X-Hub-Signature-256: signature`); (status, JSON body, `null`
/// when the body is not JSON).
pub async fn deliver(
    api: &ApiTask,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: &str,
) -> Result<(u16, Value)> {
    // No token: a delivery is authenticated by its signature alone.
    let client = api.client(None)?;
    let (event, delivery, signature, body) = (
        event.to_string(),
        delivery.to_string(),
        signature.to_string(),
        body.to_vec(),
    );
    let call = tokio::task::spawn_blocking(move || {
        client.call(
            "POST",
            "/webhooks/github",
            &[
                ("Content-Type", "application/json"),
                ("User-Agent", "GitHub-Hookshot/e2e"),
                ("X-GitHub-Event", &event),
                ("X-GitHub-Delivery", &delivery),
                ("X-Hub-Signature-256", &signature),
            ],
            Some(&body),
        )
    });
    let answer = tokio::time::timeout(ANSWER_WAIT, call)
        .await
        .context("no answer from the webhook endpoint")?
        .context("the delivery's thread")??;
    Ok((
        answer.status,
        serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
    ))
}

/// A `pull_request` event as GitHub sends it (the fields Sparkwing reads, and a few more): pull
/// request `number` of `e2e/app` from its branch `head_ref` at `head_sha` (in the same repository)
/// into `main`, by `octocat`.
pub fn pull_request_payload(
    clone_url: &str,
    action: &str,
    number: u64,
    head_ref: &str,
    head_sha: &str,
) -> Vec<u8> {
    let repo = json!({"name": "app", "full_name": "e2e/app", "clone_url": clone_url});
    serde_json::to_vec(&json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": "open",
            "title": "e2e",
            "user": {"login": "octocat"},
            "head": {"label": format!("e2e:{head_ref}"), "ref": head_ref, "sha": head_sha, "repo": repo},
            "base": {"label": "e2e:main", "ref": "main", "sha": head_sha, "repo": repo},
        },
        "repository": repo,
        "sender": {"login": "octocat"},
    }))
    .expect("a payload")
}

/// Delivers the signed push event of commit `after` to `main` of `clone_url`; (status, JSON body).
pub async fn push(
    api: &ApiTask,
    delivery: &str,
    clone_url: &str,
    after: &str,
) -> Result<(u16, Value)> {
    let body = push_payload(clone_url, after);
    deliver(api, "push", delivery, &body, &sign(&body)).await
}

/// A [`Cluster`] (runner Jobs of the test runner image) with the real runner's pool
/// [`PushCluster::POOL`] (no binary cache: each run compiles its commit) and a git server hosting
/// the repository [`PushCluster::REPO`], with a work tree of it holding the loop fixture
/// (`tests/fixtures/loop`), nothing committed yet. Derefs to the [`Cluster`].
pub struct PushCluster {
    pub cluster: Cluster,
    pub server: GitServer,
    /// Commit here and push to `main`.
    pub tree: WorkTree,
    /// The repository's `git://` URL, as runner pods fetch it.
    pub url: String,
}

impl Deref for PushCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl PushCluster {
    /// The real runner's pool.
    pub const POOL: &'static str = "real";
    /// The repository on the git server.
    pub const REPO: &'static str = "app";

    /// The cluster in a namespace named after `hint`, the pool, the git server and the work tree.
    pub async fn start(hint: &str) -> Result<PushCluster> {
        Self::start_configured(hint, |c| c).await
    }

    /// [`PushCluster::start`] with the operator's config changed by `configure`.
    pub async fn start_configured(
        hint: &str,
        configure: impl FnOnce(sparkwing_operator::Config) -> sparkwing_operator::Config,
    ) -> Result<PushCluster> {
        let real = real_runner().await?;
        let cluster =
            Cluster::start_configured(hint, test_runner_image().await?, configure).await?;
        real.create_pool(&cluster.client, cluster.ns.name(), Self::POOL)
            .await?;
        let server = GitServer::start()?;
        let tree = WorkTree::new(&server.create_repo(Self::REPO)?)?;
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loop");
        copy_tree(&fixture, tree.path())?;
        let url = server.url(Self::REPO);
        Ok(PushCluster {
            cluster,
            server,
            tree,
            url,
        })
    }

    /// Creates the Pipeline `app`: the repository's `hello` pipeline, started by pushes to `main`,
    /// on the pool, with the fields of `spec` (an object) added to its spec.
    pub async fn create_pipeline(&self, spec: Value) -> Result<Pipeline> {
        let mut body = json!({
            "metadata": {"name": "app"},
            "spec": {"repository": self.url, "pipeline": "hello",
                     "triggers": {"push": {"branches": ["main"]}}, "runnerPool": Self::POOL},
        });
        for (key, value) in spec.as_object().context("a spec object")? {
            body["spec"][key] = value.clone();
        }
        self.cluster.create_pipeline(body).await
    }

    /// Delivers the signed push event of `commit` to `main` of the repository; (status, JSON body).
    pub async fn push(&self, delivery: &str, commit: &str) -> Result<(u16, Value)> {
        push(self.api(), delivery, &self.url, commit).await
    }

    /// Stops the cluster ([`Cluster::shutdown`]); the git server and the work tree go with it.
    pub async fn shutdown(self) -> Result<()> {
        self.cluster.shutdown().await
    }
}

/// A commit status as the loopback GitHub received it, and when.
#[derive(Debug, Clone)]
pub struct PostedStatus {
    pub at: Instant,
    pub path: String,
    pub authorization: String,
    pub body: serde_json::Value,
}

/// GitHub's REST API on loopback (TEST INFRASTRUCTURE): answers every request 201 and records the
/// commit statuses posted to it.
pub struct LoopbackGitHub {
    pub url: String,
    pub posted: std::sync::Arc<std::sync::Mutex<Vec<PostedStatus>>>,
    changed: std::sync::Arc<tokio::sync::Notify>,
}

impl LoopbackGitHub {
    pub async fn start() -> Result<LoopbackGitHub> {
        let posted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let changed = std::sync::Arc::new(tokio::sync::Notify::new());
        let (p, c) = (posted.clone(), changed.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (p, c) = (p.clone(), c.clone());
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    p.lock().unwrap().push(PostedStatus {
                        at: Instant::now(),
                        path: uri.path().to_string(),
                        authorization: auth,
                        body: serde_json::from_slice(&body).unwrap_or_default(),
                    });
                    c.notify_waiters();
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(json!({"id": 1})),
                    )
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(LoopbackGitHub {
            url,
            posted,
            changed,
        })
    }

    /// The first status posted with `state`, waiting for it at most `deadline`.
    pub async fn wait_for(&self, state: &str, deadline: Duration) -> Result<PostedStatus> {
        self.wait_for_where(state, deadline, |_| true).await
    }

    /// The first status posted with `state` for which `which` holds, waiting at most `deadline`.
    pub async fn wait_for_where(
        &self,
        state: &str,
        deadline: Duration,
        which: impl Fn(&PostedStatus) -> bool,
    ) -> Result<PostedStatus> {
        let until = Instant::now() + deadline;
        loop {
            let notified = self.changed.notified();
            if let Some(s) = self
                .posted
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.body["state"] == state && which(s))
            {
                return Ok(s.clone());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                bail!(
                    "no {state} status within {deadline:?}; posted: {:?}",
                    self.posted.lock().unwrap()
                );
            }
        }
    }
}
