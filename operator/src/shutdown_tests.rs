//! Shutdown is bounded by in-flight reconciles alone: a controller or a loop of
//! [`run_controllers`] stopped while it still waits for the API ends at once.
//!
//! The API is a fake that answers only the `limit=1` lists of the CRD check and never answers
//! anything else: the controllers' watches never list, so their caches never get ready.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::Full;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher, Controller};
use kube::{Api, Client};
use sparkwing_crds::{PipelineRun, RunnerPool};

use crate::controller::{self, Context};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::runner_job::RunnerDefaults;
use crate::{run_controllers, Config};

/// Not how long a shutdown may take (it takes no time here): only how long the test waits before
/// failing rather than hanging.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

const NS: &str = "shutdown-test";

/// A fake API server: records every request (`METHOD path?query`), answers `limit=1` lists of
/// PipelineRuns and RunnerPools (the CRDs are served) with no items, and never answers the rest.
#[derive(Clone, Default)]
struct StalledApi {
    requests: Arc<Mutex<Vec<String>>>,
    seen: Arc<tokio::sync::Notify>,
}

impl StalledApi {
    fn client(&self) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or_default().to_string();
            api.record(format!("{} {path}?{query}", req.method()));
            async move { Ok::<_, Infallible>(answer(&path, &query).await) }
        });
        Client::new(service, NS)
    }

    fn record(&self, request: String) {
        self.requests.lock().unwrap().push(request);
        self.seen.notify_waiters();
    }

    /// Wait until a request matching `what` has come.
    async fn requested(&self, what: impl Fn(&str) -> bool) {
        loop {
            let seen = self.seen.notified();
            if self.requests.lock().unwrap().iter().any(|r| what(r)) {
                return;
            }
            seen.await;
        }
    }
}

/// The fake API's answer: an empty list to a `limit=1` list of PipelineRuns or RunnerPools,
/// nothing ever to the rest.
async fn answer(path: &str, query: &str) -> hyper::Response<Full<Bytes>> {
    let crd_check = query.split('&').any(|p| p == "limit=1");
    let kind = if path.ends_with("/pipelineruns") {
        "PipelineRunList"
    } else if path.ends_with("/runnerpools") {
        "RunnerPoolList"
    } else {
        ""
    };
    if !crd_check || kind.is_empty() {
        return futures::future::pending().await;
    }
    let body = serde_json::json!({
        "apiVersion": "sparkwing.dev/v1alpha1",
        "kind": kind,
        "metadata": {"resourceVersion": "1"},
        "items": [],
    });
    hyper::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A list of `plural` as a watch's first list (not the CRD check's `limit=1`).
fn watch_list(plural: &str) -> impl Fn(&str) -> bool + '_ {
    move |r: &str| {
        let (path, query) = r.split_once('?').unwrap_or((r, ""));
        r.starts_with("GET ")
            && path.ends_with(&format!("/{plural}"))
            && !query.split('&').any(|p| p == "limit=1")
    }
}

/// A `limit=1` list of `plural`: the CRD check or `controller::pipeline::served`.
fn limit_one(plural: &str) -> impl Fn(&str) -> bool + '_ {
    move |r: &str| {
        let (path, query) = r.split_once('?').unwrap_or((r, ""));
        path.ends_with(&format!("/{plural}")) && query.split('&').any(|p| p == "limit=1")
    }
}

fn context(client: &Client) -> Arc<Context> {
    let (runs, _writer) = reflector::store::<PipelineRun>();
    Arc::new(Context::new(
        client.clone(),
        Events::new(client.clone(), None),
        Arc::new(Metrics::default()),
        RunnerDefaults {
            image: "sparkwing-runner:test".to_string(),
            service_account: None,
            api_url: None,
        },
        runs,
    ))
}

#[tokio::test]
async fn a_controller_stopped_before_its_cache_is_ready_ends_at_once() {
    let api = StalledApi::default();
    let client = api.client();
    let pools: Api<RunnerPool> = Api::namespaced(client.clone(), NS);
    let controller = Controller::new(pools, watcher::Config::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared();
    let reconciled = Arc::new(Mutex::new(0u32));
    let counter = reconciled.clone();
    let driving = tokio::spawn(controller::drive(
        "test",
        controller,
        move |_pool: Arc<RunnerPool>, _ctx| {
            *counter.lock().unwrap() += 1;
            async { Ok::<_, crate::Error>(Action::await_change()) }
        },
        context(&client),
        shutdown,
    ));
    // The controller's watch is listing: its cache is not ready, and never will be.
    api.requested(watch_list("runnerpools")).await;
    stop.send(()).unwrap();
    tokio::time::timeout(GIVE_UP_AFTER, driving)
        .await
        .expect("the controller did not shut down: it waits for a cache that cannot get ready")
        .unwrap();
    assert_eq!(*reconciled.lock().unwrap(), 0);
}

#[tokio::test]
async fn run_controllers_stopped_while_its_loops_wait_for_the_api_returns_at_once() {
    let api = StalledApi::default();
    let config = Config::new("sparkwing-runner:test").namespace(NS);
    let metrics = config.metrics.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run_controllers(api.client(), config, async move {
        let _ = stopped.await;
    }));
    // The run controller's watch is listing (its cache is not ready, so the pool loop waits for
    // it) and the pipeline loop asks whether Pipelines are served: none of them is answered.
    api.requested(watch_list("pipelineruns")).await;
    api.requested(limit_one("pipelines")).await;
    assert!(metrics.crds_ready());
    assert!(
        ["pipeline", "pool", "run"]
            .iter()
            .all(|l| metrics.running().contains(l)),
        "{:?}",
        metrics.running()
    );
    stop.send(()).unwrap();
    tokio::time::timeout(GIVE_UP_AFTER, operator)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "run_controllers did not return; still running: {:?}",
                metrics.running()
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(metrics.running(), Vec::<&str>::new());
}

#[tokio::test]
async fn run_controllers_stopped_while_waiting_for_the_crds_returns_at_once() {
    // Every request stalls: the CRD check never gets its answer.
    let api = StalledApi::default();
    let config = Config::new("sparkwing-runner:test").namespace("no-such-api");
    let metrics = config.metrics.clone();
    let client = {
        let api = api.clone();
        let service = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            api.record(format!("{} {}", req.method(), req.uri()));
            futures::future::pending::<Result<hyper::Response<Full<Bytes>>, Infallible>>()
        });
        Client::new(service, NS)
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run_controllers(client, config, async move {
        let _ = stopped.await;
    }));
    api.requested(|r| r.contains("/pipelineruns")).await;
    assert_eq!(metrics.running(), ["waiting for the CRDs"]);
    stop.send(()).unwrap();
    tokio::time::timeout(GIVE_UP_AFTER, operator)
        .await
        .expect("run_controllers did not return")
        .unwrap()
        .unwrap();
    assert_eq!(metrics.running(), Vec::<&str>::new());
    assert!(!metrics.crds_ready());
}
