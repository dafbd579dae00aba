//! Waiting for the CRDs: the operator may start before its CRDs are installed (a GitOps sync, a
//! chart installed with `--skip-crds`). Instead of exiting (and crash-looping) it polls a
//! `limit=1` list of each kind with backoff, logs what is missing when that changes, and keeps
//! `/readyz` failing until both are served.

use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use sparkwing_crds::{PipelineRun, RunnerPool};

use crate::metrics::Metrics;

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(10);

/// A CRD that is not served, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// `<plural>.<group>`.
    pub crd: String,
    pub why: String,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn check<K>(client: &Client, namespace: Option<&str>) -> Option<Missing>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let crd = format!("{}.{}", K::plural(&()), K::group(&()));
    match api::<K>(client, namespace)
        .list(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(s)) if s.is_not_found() => Some(Missing {
            crd,
            why: "not installed".to_string(),
        }),
        Err(e) => Some(Missing {
            crd,
            why: e.to_string(),
        }),
    }
}

/// The CRDs that are not served now (empty: both are).
pub async fn missing_crds(client: &Client, namespace: Option<&str>) -> Vec<Missing> {
    let (a, b) = futures::join!(
        check::<PipelineRun>(client, namespace),
        check::<RunnerPool>(client, namespace)
    );
    a.into_iter().chain(b).collect()
}

/// Poll until both CRDs are served, then mark the CRDs ready in `metrics` (which gates `/readyz`).
pub async fn wait_for_crds(client: &Client, namespace: Option<&str>, metrics: &Metrics) {
    let mut delay = FIRST_DELAY;
    let mut last: Vec<Missing> = Vec::new();
    loop {
        let missing = missing_crds(client, namespace).await;
        if missing.is_empty() {
            if !last.is_empty() {
                tracing::info!("the Sparkwing CRDs are served now");
            }
            metrics.set_crds_ready(true);
            return;
        }
        if missing != last {
            for m in &missing {
                tracing::warn!(
                    crd = %m.crd,
                    why = %m.why,
                    "waiting for a CRD; install the chart or `kubectl apply -f crds/yaml/`"
                );
            }
            last = missing;
        }
        metrics.set_crds_ready(false);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}
