//! Where runs live: [`RunBackend`], with [`KubeRuns`] (PipelineRun objects through the
//! Kubernetes API) and [`MemoryRuns`] (a map, for tests and local experiments).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use sparkwing_core::reconcile::status::{RunPhase, RunStatus};
use sparkwing_crds::pipeline_run::{CancelMode, PipelineRun};

use crate::error::{is_already_exists, is_conflict, is_not_found};
use crate::runner_job::JobPodAsk;
use sparkwing_api::wire::{JobPodPhase, JobPodView};
use sparkwing_core::placement::PlacementSpec;

/// Key of the runner token in its Secret (the runner Job reads it from there).
pub use crate::runner_job::RUNNER_TOKEN_KEY;

/// A webhook run's branch check, as its runner reported it (`PUT .../branch-check`).
pub use sparkwing_api::names::{BRANCHES_IN_SYNC_ANNOTATION, BRANCH_DRIFT_ANNOTATION};

/// Name of the Secret holding a run's runner token.
pub fn runner_secret_name(run: &str) -> String {
    crate::runner_job::runner_token_secret(run)
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("PipelineRun {0} already exists")]
    AlreadyExists(String),
    /// The run changed since the version a guarded write was based on.
    #[error("PipelineRun {0} changed; read it again")]
    Conflict(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

/// What the API may know of a warm runner pod: the RunnerPool that controls it and, once the
/// operator claimed it, the run and attempt its claim names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodClaim {
    /// The pod's controller, a RunnerPool of the pod's namespace.
    pub pool: String,
    /// That RunnerPool's uid.
    pub pool_uid: String,
    /// `(run, attempt)` from the claim's annotations; `None` while the pod is idle.
    pub claim: Option<(String, u32)>,
}

/// The claim of `pod` as the operator wrote it (pure): `None` unless a RunnerPool controls it.
pub fn pod_claim_of(pod: &Pod) -> Option<PodClaim> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "RunnerPool")?;
    let (pool, pool_uid) = (owner.name.clone(), owner.uid.clone());
    let claimed = pod.labels().contains_key(crate::labels::CLAIMED_BY);
    let a = pod.annotations();
    let claim = match (
        claimed,
        a.get(crate::labels::ANNOTATION_RUN),
        a.get(crate::labels::ANNOTATION_ATTEMPT)
            .and_then(|n| n.parse::<u32>().ok()),
    ) {
        (true, Some(run), Some(attempt)) => Some((run.clone(), attempt)),
        _ => None,
    };
    Some(PodClaim {
        pool,
        pool_uid,
        claim,
    })
}

/// PipelineRun create/get/list/cancel, and the home of runner tokens.
pub trait RunBackend: Send + Sync + 'static {
    /// Create `run` (name and namespace set) and return it as stored.
    fn create(&self, run: PipelineRun) -> BoxFuture<'_, Result<PipelineRun, BackendError>>;
    fn get<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>>;
    /// Runs of `ns` (`None`: every namespace). Shared, not copied: a list is read far more often
    /// than it is changed, and a caller keeps only a page of it.
    fn list<'a>(
        &'a self,
        ns: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Arc<PipelineRun>>, BackendError>>;
    /// Set `spec.cancel`; `None` when there is no such run.
    fn cancel<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        mode: CancelMode,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>>;
    /// Record the end of an external run: apply `status`'s phase, conditions, times and observed
    /// generation, refused with [`BackendError::Conflict`] when the run's resourceVersion is no
    /// longer `resource_version`. `None` when there is no such run.
    fn write_external_status<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        status: &'a RunStatus,
        resource_version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>>;
    /// Set (`Some`) or remove (`None`) annotations of the run `ns/name` by a merge patch of
    /// `metadata.annotations` alone. `None` when there is no such run.
    fn annotate<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        annotations: &'a BTreeMap<String, Option<String>>,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>>;
    /// Keep the runner token of the run `ns/name` where its runner will read it (the Secret
    /// `<name>-runner-token`), *before* the run exists: the operator may start the run's runner as
    /// soon as the run is created, so the credential must already be there (replaced if a Secret
    /// of that name exists).
    fn store_runner_token<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Make the stored runner token of `run` (just created) owned by it, so it goes with the run.
    fn adopt_runner_token<'a>(
        &'a self,
        run: &'a PipelineRun,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Remove the stored runner token of `ns/name` (its run could not be created); absent is fine.
    fn delete_runner_token<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// The pool and claim of the pod `pod` in `ns` ([`pod_claim_of`]); `None` when there is no
    /// such pod or no RunnerPool controls it.
    fn pod_claim<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodClaim>, BackendError>>;
    /// Create the own pod of a placed job's attempt for `run` (nothing when it exists) and
    /// answer what it is doing ([`super::job_pods`]).
    fn start_job_pod<'a>(
        &'a self,
        run: &'a PipelineRun,
        ask: &'a JobPodAsk<'a>,
    ) -> BoxFuture<'a, Result<JobPodView, BackendError>> {
        let _ = (run, ask);
        async { Err(BackendError::Other(NO_JOB_PODS.into())) }.boxed()
    }
    /// What the pod of attempt `attempt` of job `job` of run `ns/name` is doing (`gone` when
    /// there is none).
    fn job_pod<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        job: &'a str,
        attempt: u32,
    ) -> BoxFuture<'a, Result<JobPodView, BackendError>> {
        let _ = (ns, name, job, attempt);
        async { Err(BackendError::Other(NO_JOB_PODS.into())) }.boxed()
    }
    /// Delete that pod (absent is fine).
    fn delete_job_pod<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        job: &'a str,
        attempt: u32,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = (ns, name, job, attempt);
        async { Err(BackendError::Other(NO_JOB_PODS.into())) }.boxed()
    }
}

/// What a backend without job pods answers.
const NO_JOB_PODS: &str = "this API's run backend cannot start job pods";

/// The field manager of the API's status writes (the end of external runs).
pub const API_FIELD_MANAGER: &str = "sparkwing-api";

/// The status fields the API writes for an external run's end (never the runner's `jobs` or the
/// operator's `runner` and `attempts`).
const EXTERNAL_END_FIELDS: [&str; 5] = [
    "phase",
    "conditions",
    "startTime",
    "completionTime",
    "observedGeneration",
];

/// The server-side apply body recording an external run's end: `apiVersion`, `kind`, the
/// resourceVersion guard and the end's status fields.
pub fn external_status_patch(
    status: &RunStatus,
    resource_version: Option<&str>,
) -> Result<serde_json::Value, BackendError> {
    let full = serde_json::to_value(status)
        .map_err(|e| BackendError::Other(format!("serializing a run status: {e}")))?;
    let fields: serde_json::Map<String, serde_json::Value> = EXTERNAL_END_FIELDS
        .iter()
        .filter_map(|k| full.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let mut body = serde_json::json!({
        "apiVersion": PipelineRun::api_version(&()),
        "kind": PipelineRun::kind(&()),
        "status": fields,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    Ok(body)
}

/// The merge patch of [`RunBackend::annotate`]: `metadata.annotations` only, `null` removing one.
pub fn annotations_patch(annotations: &BTreeMap<String, Option<String>>) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": annotations}})
}

/// The run is finished (its phase is terminal).
pub fn is_terminal(run: &PipelineRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.phase.is_terminal())
}

/// PipelineRuns through the Kubernetes API. Runner tokens go to a Secret `<run>-runner-token`
/// (key `token`) in the run's namespace, owned by the run so it is deleted with it.
#[derive(Clone)]
pub struct KubeRuns {
    client: kube::Client,
}

impl KubeRuns {
    pub fn new(client: kube::Client) -> Self {
        KubeRuns { client }
    }

    /// A JSON merge patch of run `ns/name`; `None` when the run does not exist.
    async fn merge_patch(
        &self,
        ns: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Option<PipelineRun>, BackendError> {
        let api: Api<PipelineRun> = Api::namespaced(self.client.clone(), ns);
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(run) => Ok(Some(run)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl RunBackend for KubeRuns {
    fn create(&self, mut run: PipelineRun) -> BoxFuture<'_, Result<PipelineRun, BackendError>> {
        run.stamp_created_at(k8s_openapi::jiff::Timestamp::now().as_millisecond());
        async move {
            let ns = run.namespace().unwrap_or_default();
            let api: Api<PipelineRun> = Api::namespaced(self.client.clone(), &ns);
            api.create(&PostParams::default(), &run).await.map_err(|e| {
                if is_already_exists(&e) {
                    BackendError::AlreadyExists(run.name_any())
                } else {
                    e.into()
                }
            })
        }
        .boxed()
    }

    fn get<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        async move {
            let api: Api<PipelineRun> = Api::namespaced(self.client.clone(), ns);
            Ok(api.get_opt(name).await?)
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        ns: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Arc<PipelineRun>>, BackendError>> {
        async move {
            let api: Api<PipelineRun> = match ns {
                Some(ns) => Api::namespaced(self.client.clone(), ns),
                None => Api::all(self.client.clone()),
            };
            Ok(api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(Arc::new)
                .collect())
        }
        .boxed()
    }

    fn cancel<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        mode: CancelMode,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        async move {
            let patch = serde_json::json!({"spec": {"cancel": mode}});
            self.merge_patch(ns, name, &patch).await
        }
        .boxed()
    }

    fn write_external_status<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        status: &'a RunStatus,
        resource_version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        async move {
            let api: Api<PipelineRun> = Api::namespaced(self.client.clone(), ns);
            let body = external_status_patch(status, resource_version)?;
            let params = PatchParams::apply(API_FIELD_MANAGER).force();
            match api.patch_status(name, &params, &Patch::Apply(&body)).await {
                Ok(run) => Ok(Some(run)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) if is_conflict(&e) => Err(BackendError::Conflict(name.to_string())),
                Err(e) => Err(e.into()),
            }
        }
        .boxed()
    }

    fn annotate<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        annotations: &'a BTreeMap<String, Option<String>>,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        async move {
            self.merge_patch(ns, name, &annotations_patch(annotations))
                .await
        }
        .boxed()
    }

    fn store_runner_token<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(runner_secret_name(name)),
                    namespace: Some(ns.to_string()),
                    labels: Some(BTreeMap::from([
                        (
                            "app.kubernetes.io/managed-by".to_string(),
                            "sparkwing-operator".to_string(),
                        ),
                        ("sparkwing.dev/run".to_string(), name.to_string()),
                    ])),
                    ..ObjectMeta::default()
                },
                string_data: Some(BTreeMap::from([(
                    RUNNER_TOKEN_KEY.to_string(),
                    token.to_string(),
                )])),
                type_: Some("Opaque".into()),
                ..Secret::default()
            };
            let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => Ok(()),
                // A webhook delivery applied again (its run names are a function of the
                // delivery): the Secret gets the new token, which is as valid as the old one.
                Err(e) if is_already_exists(&e) => {
                    let patch = serde_json::json!({"stringData": {RUNNER_TOKEN_KEY: token}});
                    api.patch(
                        &runner_secret_name(name),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        .boxed()
    }

    fn adopt_runner_token<'a>(
        &'a self,
        run: &'a PipelineRun,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let ns = run.namespace().unwrap_or_default();
            let owner = run
                .owner_ref(&())
                .ok_or_else(|| BackendError::Other("the created PipelineRun has no uid".into()))?;
            let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
            api.patch(
                &runner_secret_name(&run.name_any()),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn delete_runner_token<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            match api
                .delete(&runner_secret_name(name), &Default::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        .boxed()
    }

    fn pod_claim<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodClaim>, BackendError>> {
        async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            Ok(api.get_opt(pod).await?.as_ref().and_then(pod_claim_of))
        }
        .boxed()
    }

    fn start_job_pod<'a>(
        &'a self,
        run: &'a PipelineRun,
        ask: &'a JobPodAsk<'a>,
    ) -> BoxFuture<'a, Result<JobPodView, BackendError>> {
        super::job_pods::start(&self.client, run, ask).boxed()
    }

    fn job_pod<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        job: &'a str,
        attempt: u32,
    ) -> BoxFuture<'a, Result<JobPodView, BackendError>> {
        super::job_pods::look(&self.client, ns, name, job, attempt).boxed()
    }

    fn delete_job_pod<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        job: &'a str,
        attempt: u32,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        super::job_pods::delete(&self.client, ns, name, job, attempt).boxed()
    }
}

/// Runs in a map. Tests reach in with [`MemoryRuns::set_phase`], [`MemoryRuns::delete`],
/// [`MemoryRuns::runner_token`] and [`MemoryRuns::set_pod_claim`].
#[derive(Default)]
pub struct MemoryRuns {
    runs: Mutex<BTreeMap<(String, String), Arc<PipelineRun>>>,
    tokens: Mutex<BTreeMap<(String, String), String>>,
    /// Per run: whether its runner token was stored when the run was created.
    token_at_create: Mutex<BTreeMap<(String, String), bool>>,
    /// Runs whose stored runner token they own.
    adopted: Mutex<std::collections::BTreeSet<(String, String)>>,
    pods: Mutex<BTreeMap<(String, String), PodClaim>>,
    /// Job pods by (namespace, run, job, attempt): their view and placement.
    job_pods: Mutex<JobPodMap>,
}

type JobPodMap = BTreeMap<(String, String, String, u32), (JobPodView, PlacementSpec)>;

impl MemoryRuns {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(ns: &str, name: &str) -> (String, String) {
        (ns.to_string(), name.to_string())
    }

    /// A new resourceVersion, as the API server gives every write.
    fn bump(run: &mut PipelineRun) {
        let next = run
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        run.metadata.resource_version = Some(next.to_string());
    }

    /// Change run `ns/name` in place as a write (a new resourceVersion); `None` when it does not
    /// exist.
    fn write(
        &self,
        ns: &str,
        name: &str,
        change: impl FnOnce(&mut PipelineRun),
    ) -> Result<Option<PipelineRun>, BackendError> {
        let mut runs = self.runs.lock().map_err(|_| poisoned())?;
        Ok(runs.get_mut(&Self::key(ns, name)).map(|r| {
            let r = Arc::make_mut(r);
            change(r);
            Self::bump(r);
            r.clone()
        }))
    }

    /// A run as stored.
    pub fn run(&self, ns: &str, name: &str) -> Option<PipelineRun> {
        self.runs
            .lock()
            .ok()?
            .get(&Self::key(ns, name))
            .map(|r| (**r).clone())
    }

    /// Put a run in the map as is.
    pub fn insert(&self, run: PipelineRun) {
        let key = Self::key(&run.namespace().unwrap_or_default(), &run.name_any());
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(key, Arc::new(run));
        }
    }

    /// Play the controller: set the run's phase.
    pub fn set_phase(&self, ns: &str, name: &str, phase: RunPhase) {
        let _ = self.write(ns, name, |r| {
            r.status.get_or_insert_with(RunStatus::default).phase = phase
        });
    }

    /// Play the controller: record that `attempts` runner attempts were started.
    pub fn set_attempts(&self, ns: &str, name: &str, attempts: u32) {
        let _ = self.write(ns, name, |r| {
            r.status.get_or_insert_with(RunStatus::default).attempts = attempts
        });
    }

    /// Play `ttlSecondsAfterFinished`: the PipelineRun is gone.
    pub fn delete(&self, ns: &str, name: &str) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(&Self::key(ns, name));
        }
    }

    /// The runner token stored for a run.
    pub fn runner_token(&self, ns: &str, name: &str) -> Option<String> {
        self.tokens.lock().ok()?.get(&Self::key(ns, name)).cloned()
    }

    /// Whether the run's runner token was already stored when the run was created (`None`: no
    /// such run was created): a runner started at once must find its credential.
    pub fn token_stored_at_create(&self, ns: &str, name: &str) -> Option<bool> {
        self.token_at_create
            .lock()
            .ok()?
            .get(&Self::key(ns, name))
            .copied()
    }

    /// Whether the run owns its stored runner token (deleted with it).
    pub fn token_adopted(&self, ns: &str, name: &str) -> bool {
        self.adopted
            .lock()
            .is_ok_and(|a| a.contains(&Self::key(ns, name)))
    }

    /// Play the operator: the warm pod `pod` of `ns` belongs to `claim.pool` (and is claimed when
    /// `claim.claim` says so).
    /// The job pods of run `ns/name` this backend holds: (job, attempt, placement).
    pub fn job_pods_of(&self, ns: &str, name: &str) -> Vec<(String, u32, PlacementSpec)> {
        self.job_pods
            .lock()
            .map(|pods| {
                pods.iter()
                    .filter(|((n, r, _, _), _)| n == ns && r == name)
                    .map(|((_, _, job, attempt), (_, p))| (job.clone(), *attempt, p.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn set_pod_claim(&self, ns: &str, pod: &str, claim: PodClaim) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.insert(Self::key(ns, pod), claim);
        }
    }
}

fn poisoned() -> BackendError {
    BackendError::Other("memory backend lock poisoned".into())
}

impl RunBackend for MemoryRuns {
    fn create(&self, mut run: PipelineRun) -> BoxFuture<'_, Result<PipelineRun, BackendError>> {
        let result = (|| {
            let mut runs = self.runs.lock().map_err(|_| poisoned())?;
            let key = Self::key(&run.namespace().unwrap_or_default(), &run.name_any());
            if runs.contains_key(&key) {
                return Err(BackendError::AlreadyExists(run.name_any()));
            }
            run.metadata.uid = Some(format!("uid-{}", key.1));
            run.metadata.generation = Some(1);
            run.metadata.resource_version = Some("1".into());
            let now = k8s_openapi::jiff::Timestamp::now();
            run.stamp_created_at(now.as_millisecond());
            run.metadata.creation_timestamp = Some(Time(now));
            let stored = self
                .tokens
                .lock()
                .map_err(|_| poisoned())?
                .contains_key(&key);
            self.token_at_create
                .lock()
                .map_err(|_| poisoned())?
                .insert(key.clone(), stored);
            runs.insert(key, Arc::new(run.clone()));
            Ok(run)
        })();
        async move { result }.boxed()
    }

    fn get<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        let result = self
            .runs
            .lock()
            .map(|runs| runs.get(&Self::key(ns, name)).map(|r| (**r).clone()))
            .map_err(|_| poisoned());
        async move { result }.boxed()
    }

    fn list<'a>(
        &'a self,
        ns: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Arc<PipelineRun>>, BackendError>> {
        let result = self
            .runs
            .lock()
            .map(|runs| {
                runs.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .map_err(|_| poisoned());
        async move { result }.boxed()
    }

    fn cancel<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        mode: CancelMode,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        let result = self.write(ns, name, |r| r.spec.cancel = Some(mode));
        async move { result }.boxed()
    }

    fn write_external_status<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        status: &'a RunStatus,
        resource_version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        let result = self
            .runs
            .lock()
            .map_err(|_| poisoned())
            .and_then(|mut runs| {
                let Some(r) = runs.get_mut(&Self::key(ns, name)) else {
                    return Ok(None);
                };
                let r = Arc::make_mut(r);
                if resource_version
                    .is_some_and(|rv| r.metadata.resource_version.as_deref() != Some(rv))
                {
                    return Err(BackendError::Conflict(name.to_string()));
                }
                let s = r.status.get_or_insert_with(RunStatus::default);
                s.phase = status.phase;
                s.conditions = status.conditions.clone();
                s.start_time = status.start_time;
                s.completion_time = status.completion_time;
                s.observed_generation = status.observed_generation;
                Self::bump(r);
                Ok(Some(r.clone()))
            });
        async move { result }.boxed()
    }

    fn annotate<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        annotations: &'a BTreeMap<String, Option<String>>,
    ) -> BoxFuture<'a, Result<Option<PipelineRun>, BackendError>> {
        let result = self.write(ns, name, |r| {
            let a = r.metadata.annotations.get_or_insert_with(BTreeMap::new);
            for (k, v) in annotations {
                match v {
                    Some(v) => a.insert(k.clone(), v.clone()),
                    None => a.remove(k),
                };
            }
        });
        async move { result }.boxed()
    }

    fn store_runner_token<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let result = self
            .tokens
            .lock()
            .map(|mut t| {
                t.insert(Self::key(ns, name), token.to_string());
            })
            .map_err(|_| poisoned());
        async move { result }.boxed()
    }

    fn adopt_runner_token<'a>(
        &'a self,
        run: &'a PipelineRun,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let key = Self::key(&run.namespace().unwrap_or_default(), &run.name_any());
        let result = (|| {
            if !self
                .tokens
                .lock()
                .map_err(|_| poisoned())?
                .contains_key(&key)
            {
                return Err(BackendError::Other(format!(
                    "no runner token stored for {}/{}",
                    key.0, key.1
                )));
            }
            self.adopted.lock().map_err(|_| poisoned())?.insert(key);
            Ok(())
        })();
        async move { result }.boxed()
    }

    fn delete_runner_token<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let result = self
            .tokens
            .lock()
            .map(|mut t| {
                t.remove(&Self::key(ns, name));
            })
            .map_err(|_| poisoned());
        async move { result }.boxed()
    }

    fn pod_claim<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodClaim>, BackendError>> {
        let result = self
            .pods
            .lock()
            .map(|pods| pods.get(&Self::key(ns, pod)).cloned())
            .map_err(|_| poisoned());
        async move { result }.boxed()
    }

    fn start_job_pod<'a>(
        &'a self,
        run: &'a PipelineRun,
        ask: &'a JobPodAsk<'a>,
    ) -> BoxFuture<'a, Result<JobPodView, BackendError>> {
        let (ns, name) = (run.namespace().unwrap_or_default(), run.name_any());
        let key = (ns, name.clone(), ask.job.to_string(), ask.attempt);
        let result = self
            .job_pods
            .lock()
            .map_err(|_| poisoned())
            .map(|mut pods| {
                pods.entry(key)
                    .or_insert_with(|| {
                        (
                            JobPodView {
                                name: crate::labels::job_pod_name(&name, ask.job, ask.attempt),
                                phase: JobPodPhase::Pending,
                                detail: None,
                            },
                            ask.placement.clone(),
                        )
                    })
                    .0
                    .clone()
            });
        async move { result }.boxed()
    }

    fn job_pod<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        job: &'a str,
        attempt: u32,
    ) -> BoxFuture<'a, Result<JobPodView, BackendError>> {
        let result = self.job_pods.lock().map_err(|_| poisoned()).map(|pods| {
            let key = (ns.to_string(), name.to_string(), job.to_string(), attempt);
            pods.get(&key)
                .map(|(v, _)| v.clone())
                .unwrap_or_else(|| JobPodView {
                    name: crate::labels::job_pod_name(name, job, attempt),
                    phase: JobPodPhase::Gone,
                    detail: Some("no such job pod".into()),
                })
        });
        async move { result }.boxed()
    }

    fn delete_job_pod<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        job: &'a str,
        attempt: u32,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let result = self
            .job_pods
            .lock()
            .map_err(|_| poisoned())
            .map(|mut pods| {
                pods.remove(&(ns.to_string(), name.to_string(), job.to_string(), attempt));
            });
        async move { result }.boxed()
    }
}

/// `s` as part of a Kubernetes name: lowercase letters and digits, other characters as `-`, at
/// most 40 characters, no `-` at either end. Empty when `s` has no letter or digit.
pub fn name_part(s: &str) -> String {
    let mut part: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    part.truncate(40);
    part.trim_matches('-').to_string()
}

/// The start of run names made from a pipeline name: its [`name_part`], never empty (`run`).
pub fn run_name_slug(pipeline: &str) -> String {
    let slug = name_part(pipeline);
    if slug.is_empty() {
        "run".to_string()
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_pipeline_names_are_valid_and_never_empty() {
        assert_eq!(name_part("Build_And.Test"), "build-and-test");
        assert_eq!(name_part("__"), "");
        assert_eq!(name_part(&"x".repeat(100)).len(), 40);
        assert_eq!(run_name_slug("-Deploy-"), "deploy");
        assert_eq!(run_name_slug("✓"), "run");
    }
}
