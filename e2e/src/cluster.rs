//! TEST INFRASTRUCTURE: one test's cluster — a namespace of the shared bed (CRDs installed), the
//! node running that namespace's pods ([`TestNode`]: the bed's real kubelet, or a node emulator on
//! Docker), and the operator with its API in the test's process — and what the tests add to it: the real runner's pool, a CLI user, Pipelines.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use sparkwing_e2e::{real_runner, Cluster};
//! use std::path::Path;
//!
//! let real = real_runner().await?;
//! let cluster = Cluster::start("my-test", real.image.clone()).await?;
//! cluster.add_real_pool(&real, "real", Path::new("/tmp/runner-cache")).await?;
//! let cli = cluster
//!     .user("alice@example.com", Path::new("tests/fixtures/remote"), "ci", "real")
//!     .await?;
//! # let _ = cli;
//! cluster.shutdown().await
//! # }
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use sparkwing_crds::pipeline::Pipeline;
use sparkwing_crds::{PipelineRun, RunnerPool};
use sparkwing_operator::Config;

use crate::cli::{with_binary_cache, Cli, Profile};
use crate::{wait_for_run, ApiTask, OperatorTask, RealRunner, TestBed, TestNamespace, TestNode};

/// A namespace with its node and the operator (with its API) working in it. Dropping it
/// deletes the namespace; [`Cluster::shutdown`] also stops the operator and the emulator.
pub struct Cluster {
    pub ns: TestNamespace,
    /// The bed's admin client.
    pub client: Client,
    pub node: TestNode,
    pub op: OperatorTask,
}

impl Cluster {
    /// The shared bed with its CRDs, a namespace named after `hint`, its node, and
    /// the operator with its API, whose runner Jobs use `runner_image`.
    pub async fn start(hint: &str, runner_image: String) -> Result<Cluster> {
        Self::start_configured(hint, runner_image, |c| c).await
    }

    /// [`Cluster::start`] with the operator's [`Config`] changed by `configure` (e.g. its GitHub
    /// API URL).
    pub async fn start_configured(
        hint: &str,
        runner_image: String,
        configure: impl FnOnce(Config) -> Config,
    ) -> Result<Cluster> {
        let bed = TestBed::shared().await?;
        bed.install_crds().await?;
        let ns = bed.namespace(hint).await?;
        let client = bed.client().await?;
        bed.load_image(&runner_image).await?;
        let node = TestNode::start(bed, client.clone(), &ns).await?;
        let config = configure(Config::new(runner_image).namespace(ns.name()));
        let op = OperatorTask::start_with_api(client.clone(), config, ns.name()).await?;
        Ok(Cluster {
            ns,
            client,
            node,
            op,
        })
    }

    /// [`Cluster::start`] with the API's run backend made by `runs` from the bed's client and
    /// the namespace (to wrap [`sparkwing_operator::api::KubeRuns`]).
    pub async fn start_with_api_runs(
        hint: &str,
        runner_image: String,
        runs: impl FnOnce(Client, &str) -> std::sync::Arc<dyn sparkwing_operator::api::RunBackend>,
    ) -> Result<Cluster> {
        let bed = TestBed::shared().await?;
        bed.install_crds().await?;
        let ns = bed.namespace(hint).await?;
        let client = bed.client().await?;
        bed.load_image(&runner_image).await?;
        let node = TestNode::start(bed, client.clone(), &ns).await?;
        let config = Config::new(runner_image).namespace(ns.name());
        let backend = runs(client.clone(), ns.name());
        let op =
            OperatorTask::start_with_api_runs(client.clone(), config, ns.name(), backend).await?;
        Ok(Cluster {
            ns,
            client,
            node,
            op,
        })
    }

    /// The operator's API.
    pub fn api(&self) -> &ApiTask {
        self.op.api()
    }

    /// The log lines of run `name`'s job `job` that the API holds, as (seq, line); none when
    /// the API has no log of that job (404).
    pub async fn api_log_lines(&self, name: &str, job: &str) -> Result<Vec<(u64, String)>> {
        let answer = self
            .api()
            .admin(
                "GET",
                &format!("/api/v1/runs/{}/{name}/logs?job={job}", self.ns.name()),
                None,
            )
            .await?;
        if answer.status == 404 {
            return Ok(Vec::new());
        }
        let v = answer.ok()?.json()?;
        Ok(v["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    l["seq"].as_u64().unwrap_or_default(),
                    l["line"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// The namespace's PipelineRuns.
    pub fn runs(&self) -> Api<PipelineRun> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The namespace's Pipelines.
    pub fn pipelines(&self) -> Api<Pipeline> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates the Pipeline `body` (its `metadata` and `spec`; `apiVersion` and `kind` are added).
    pub async fn create_pipeline(&self, mut body: Value) -> Result<Pipeline> {
        body["apiVersion"] = json!("sparkwing.dev/v1alpha1");
        body["kind"] = json!("Pipeline");
        let pipeline: Pipeline = serde_json::from_value(body).context("a Pipeline")?;
        self.pipelines()
            .create(&PostParams::default(), &pipeline)
            .await
            .with_context(|| format!("creating the Pipeline {}", pipeline.name_any()))
    }

    /// Waits (a watch) until `cond` holds for run `name`; fails after `wait` showing the run.
    pub async fn wait_run(
        &self,
        name: &str,
        wait: Duration,
        what: &str,
        cond: impl Fn(&PipelineRun) -> bool + Send + 'static,
    ) -> Result<PipelineRun> {
        wait_for_run(&self.runs(), name, what, cond, wait).await
    }

    /// Waits (a watch) until run `name` is gone, as after its `ttlSecondsAfterFinished`.
    pub async fn wait_run_deleted(&self, name: &str, wait: Duration) -> Result<()> {
        let gone =
            kube::runtime::wait::await_condition(self.runs(), name, |run: Option<&PipelineRun>| {
                run.is_none()
            });
        tokio::time::timeout(wait, gone)
            .await
            .with_context(|| format!("run {name} still exists after {wait:?}"))?
            .with_context(|| format!("watching run {name}"))?;
        Ok(())
    }

    /// The API's view of run `name` (`GET /api/v1/runs/{ns}/{name}` as admin): live or archived.
    pub async fn api_run(&self, name: &str) -> Result<Value> {
        self.api()
            .admin(
                "GET",
                &format!("/api/v1/runs/{}/{name}", self.ns.name()),
                None,
            )
            .await?
            .ok()?
            .json()
    }

    /// Creates the RunnerPool `pool` of the real runner (at most 2 runners), its pods sharing the
    /// host's binary cache `cache` (kept between test runs: it is keyed by content).
    pub async fn add_real_pool(&self, real: &RealRunner, pool: &str, cache: &Path) -> Result<()> {
        TestBed::shared().await?.load_image(&real.image).await?;
        let spec = with_binary_cache(real.pool_spec(2), cache)?;
        let pools: Api<RunnerPool> = Api::namespaced(self.client.clone(), &self.ns);
        pools
            .create(&PostParams::default(), &RunnerPool::new(pool, spec))
            .await
            .with_context(|| format!("creating the pool {pool}"))?;
        Ok(())
    }

    /// A user of the API: a token of `principal` with `runs:read` and `runs:trigger` (no admin),
    /// and the CLI with a copy of `fixture` and the profile `profile` on the API (this namespace,
    /// pool `pool`).
    pub async fn user(
        &self,
        principal: &str,
        fixture: &Path,
        profile: &str,
        pool: &str,
    ) -> Result<Cli> {
        let api = self.api();
        let (token, _) = api
            .state
            .store
            .create_token(
                principal,
                vec!["runs:read".to_string(), "runs:trigger".to_string()],
                None,
            )
            .await
            .context("creating the user's token")?;
        let cli = Cli::new(fixture, &token)?;
        cli.set_profiles(&[Profile::new(profile, &api.url)
            .namespace(self.ns.name())
            .pool(pool)])?;
        Ok(cli)
    }

    /// The output of the runner pods of `run`, for failure messages.
    pub async fn runner_logs(&self, run: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let lp = ListParams::default().labels(&format!("sparkwing.dev/run={run}"));
        let mut out = String::new();
        if let Ok(list) = pods.list(&lp).await {
            for pod in list.items {
                let logs = self.node.logs(&pod.name_any()).await.unwrap_or_default();
                out.push_str(&format!("--- {} ---\n{logs}\n", pod.name_any()));
            }
        }
        out
    }

    /// Stops the operator (and its API), then a node emulator (removing its containers); the
    /// namespace goes with it.
    pub async fn shutdown(self) -> Result<()> {
        self.op.stop().await?;
        self.node.shutdown().await
    }
}
