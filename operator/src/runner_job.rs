//! Pure builders of the runner objects: the Job that runs one attempt of a PipelineRun, and the
//! warm pod a RunnerPool keeps ready. No IO; tested from fixtures.
//!
//! The contract with the `sparkwing` binary inside (documented in `docs/operator.md`):
//!
//! - Job runner: `sparkwing runner --run <namespace>/<name> --attempt <n>`, with `SPARKWING_RUN`,
//!   `SPARKWING_NAMESPACE`, `SPARKWING_ATTEMPT` and `SPARKWING_SKIP_BOX_SLOTS=1`.
//! - Warm runner: `sparkwing runner --warm --pool <namespace>/<pool>`, with `SPARKWING_POOL`,
//!   `SPARKWING_NAMESPACE`, `POD_NAME`, `SPARKWING_POOL_TOKEN` (the pool credential, from the
//!   Secret [`pool_token_secret`]) and `SPARKWING_PODINFO_DIR`: a `downwardAPI` volume at
//!   [`PODINFO_DIR`] whose files `annotations` and `labels` the kubelet rewrites when the pod
//!   changes. It waits until the operator claims its pod (label
//!   [`CLAIMED_BY`](crate::labels::CLAIMED_BY), annotations [`ANNOTATION_RUN`] and
//!   [`ANNOTATION_ATTEMPT`](crate::labels::ANNOTATION_ATTEMPT)), reading that file (no
//!   Kubernetes RBAC needed), exchanges the pool token for the run's token at the API, then runs
//!   that attempt.
//!
//! Both run under the restricted Pod Security Standard: non-root uid 65532, no privilege
//! escalation, every capability dropped, the runtime's default seccomp profile and a read-only root
//! filesystem with a writable `emptyDir` at `/tmp` (`HOME` and `SPARKWING_HOME` live there).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, SeccompProfile, SecretEnvSource, SecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sparkwing_crds::{PipelineRun, RunnerPool};

use crate::error::{Error, Result};
use crate::labels::{
    job_name, label_value, ANNOTATION_POOL, ANNOTATION_RUN, ANNOTATION_RUN_UID, APP_NAME,
    APP_NAME_VALUE, ATTEMPT, MANAGED_BY, MANAGED_BY_VALUE, POOL, RUN, WARM,
};

/// The name of the runner container in Job and warm pods.
pub const CONTAINER: &str = "runner";
/// The uid and gid runners run as (the distroless `nonroot` user).
pub const RUNNER_UID: i64 = 65532;
/// How long a runner may take to stop after SIGTERM: `finally` jobs of a run cancelled with
/// `CancelledRunFinally` run in this window. A plain `Cancelled` stop deletes the pods with
/// [`STOP_GRACE_SECONDS`] instead.
pub const FINALLY_GRACE_SECONDS: i64 = 300;
/// The grace period of a stop that skips `finally` jobs.
pub const STOP_GRACE_SECONDS: u32 = 10;
/// The writable scratch directory of runners (an `emptyDir`).
pub const SCRATCH: &str = sparkwing_crds::runner_pool::SCRATCH_PATH;
/// Its volume's name (pool volumes may not use it).
pub const SCRATCH_VOLUME: &str = sparkwing_crds::runner_pool::SCRATCH_VOLUME;

/// Environment variable names of the runner contract (the runner reads them: `sparkwing-api`'s).
pub use sparkwing_api::names::env;

/// The Secret holding a RunnerPool's pool token (the operator keeps it when its API runs in the
/// same process).
pub fn pool_token_secret(pool: &str) -> String {
    format!("{pool}-pool-token")
}

/// The `downwardAPI` volume of warm pods (pool volumes may not use the name).
pub const PODINFO_VOLUME: &str = sparkwing_crds::runner_pool::PODINFO_VOLUME;
/// Where warm pods mount it, read-only.
pub const PODINFO_DIR: &str = sparkwing_crds::runner_pool::PODINFO_PATH;
/// Its files: the pod's annotations and labels in the kubelet's format (`key="value"` lines,
/// the value quoted as a Go string), rewritten atomically when they change.
pub use sparkwing_api::names::{PODINFO_ANNOTATIONS, PODINFO_LABELS};

fn podinfo_volume() -> Volume {
    let item = |path: &str, field: &str| DownwardAPIVolumeFile {
        path: path.to_string(),
        field_ref: Some(ObjectFieldSelector {
            api_version: None,
            field_path: field.to_string(),
        }),
        ..DownwardAPIVolumeFile::default()
    };
    Volume {
        name: PODINFO_VOLUME.to_string(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                item(PODINFO_ANNOTATIONS, "metadata.annotations"),
                item(PODINFO_LABELS, "metadata.labels"),
            ]),
            ..DownwardAPIVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The Secret holding a run's runner token (the API creates it when it triggers the run).
pub fn runner_token_secret(run: &str) -> String {
    format!("{run}-runner-token")
}

/// The key of the token in that Secret.
pub use sparkwing_api::names::RUNNER_TOKEN_KEY;

/// What a runner needs that does not come from the run, used when no RunnerPool says otherwise:
/// the image and the service account.
#[derive(Debug, Clone, Default)]
pub struct RunnerDefaults {
    pub image: String,
    /// `None`: the namespace's `default` service account.
    pub service_account: Option<String>,
    /// The Sparkwing API's URL as runners reach it (`SPARKWING_API_URL`); `None`: not set.
    pub api_url: Option<String>,
}

fn meta_of<K: Resource>(obj: &K, kind: &'static str) -> Result<(String, String, String)> {
    let m = obj.meta();
    let missing = |field| Error::MissingObjectKey { kind, field };
    Ok((
        m.name.clone().ok_or_else(|| missing("metadata.name"))?,
        m.namespace
            .clone()
            .ok_or_else(|| missing("metadata.namespace"))?,
        m.uid.clone().ok_or_else(|| missing("metadata.uid"))?,
    ))
}

/// The owner reference that makes `owner` the controller of what the operator creates for it:
/// deleting the owner deletes the runner (and blocks until it is gone with foreground deletion).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        block_owner_deletion: Some(true),
        ..owner.controller_owner_ref(&())?
    })
}

fn base_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (APP_NAME.to_string(), APP_NAME_VALUE.to_string()),
    ])
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_string(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// `SPARKWING_API_TOKEN` from the run's token Secret, optional: a run created with kubectl has
/// no Secret and its runner still starts.
fn env_secret(name: &str, secret: String, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key: key.to_string(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Contract variables a pool's `env` may never set, even where the runner does not set them
/// (a Job pod has no pool token or podinfo directory).
const RESERVED_ENV: [&str; 3] = [env::API_TOKEN, env::POOL_TOKEN, env::PODINFO_DIR];

/// The pool's extra environment first, then ours; a pool variable with one of our names (or a
/// reserved one) is dropped, so the contract variables cannot be overridden by accident.
fn merge_env(pool: Option<&RunnerPool>, ours: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = pool
        .map(|p| p.spec.env.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !ours.iter().any(|o| o.name == e.name))
        .filter(|e| !RESERVED_ENV.contains(&e.name.as_str()))
        .collect();
    out.extend(ours);
    out
}

/// The restricted container security context.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        run_as_non_root: Some(true),
        run_as_user: Some(RUNNER_UID),
        run_as_group: Some(RUNNER_UID),
        read_only_root_filesystem: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The restricted pod security context.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUNNER_UID),
        run_as_group: Some(RUNNER_UID),
        fs_group: Some(RUNNER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

fn image_of(pool: Option<&RunnerPool>, defaults: &RunnerDefaults) -> String {
    pool.map(|p| p.spec.image.trim())
        .filter(|i| !i.is_empty())
        .unwrap_or(&defaults.image)
        .to_string()
}

/// The pod spec shared by Job pods and warm pods; `pool` supplies resources, placement, service
/// account, extra environment and extra volumes (after the runner's own `scratch`).
fn pod_spec(
    pool: Option<&RunnerPool>,
    defaults: &RunnerDefaults,
    args: Vec<String>,
    env: Vec<EnvVar>,
) -> PodSpec {
    let ps = pool.map(|p| &p.spec);
    let image = image_of(pool, defaults);
    PodSpec {
        restart_policy: Some("Never".to_string()),
        security_context: Some(pod_security_context()),
        termination_grace_period_seconds: Some(FINALLY_GRACE_SECONDS),
        service_account_name: ps
            .and_then(|s| s.service_account_name.clone())
            .or_else(|| defaults.service_account.clone()),
        node_selector: ps
            .map(|s| s.node_selector.clone())
            .filter(|m| !m.is_empty()),
        tolerations: ps.map(|s| s.tolerations.clone()).filter(|t| !t.is_empty()),
        containers: vec![Container {
            name: CONTAINER.to_string(),
            image: Some(image),
            image_pull_policy: Some("IfNotPresent".to_string()),
            command: Some(vec!["sparkwing".to_string()]),
            args: Some(args),
            env: Some(env),
            resources: ps.and_then(|s| s.resources.clone()),
            security_context: Some(container_security_context()),
            volume_mounts: Some(
                std::iter::once(VolumeMount {
                    name: SCRATCH_VOLUME.to_string(),
                    mount_path: SCRATCH.to_string(),
                    ..VolumeMount::default()
                })
                .chain(ps.map(|s| s.volume_mounts.clone()).unwrap_or_default())
                .collect(),
            ),
            ..Container::default()
        }],
        volumes: Some(
            std::iter::once(Volume {
                name: SCRATCH_VOLUME.to_string(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            })
            .chain(ps.map(|s| s.volumes.clone()).unwrap_or_default())
            .collect(),
        ),
        ..PodSpec::default()
    }
}

fn api_url_env(defaults: &RunnerDefaults) -> Option<EnvVar> {
    defaults
        .api_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .map(|u| env_value(env::API_URL, u))
}

/// The run's Secrets (`spec.secrets`) as `envFrom` sources, in order (a key of a later Secret
/// wins; the container's own `env`, the runner contract, wins over all of them). Required, not
/// optional: the operator checked that each exists before the runner started. `None` without
/// secrets, so a run without them gets the same Job as before.
fn secrets_env_from(run: &PipelineRun) -> Option<Vec<EnvFromSource>> {
    let mut names: Vec<&String> = Vec::new();
    for s in &run.spec.secrets {
        if !names.contains(&s) {
            names.push(s);
        }
    }
    (!names.is_empty()).then(|| {
        names
            .into_iter()
            .map(|name| EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            })
            .collect()
    })
}

/// Added to a run's timeout for its runner Job's `activeDeadlineSeconds`.
pub const JOB_DEADLINE_SLACK_SECS: i64 = 30;

/// `activeDeadlineSeconds` for a run's timeout: whole seconds, rounded up, plus
/// [`JOB_DEADLINE_SLACK_SECS`]. The run's timeout counts from `status.startTime` and the
/// operator enforces it; the Job's deadline counts from the Job's start (earlier, and again for
/// each attempt), so it is only a backstop: it ends a runner that never starts (unschedulable,
/// an image that never arrives) or one the operator could not stop.
pub fn active_deadline_seconds(timeout_ms: Option<u64>) -> Option<i64> {
    timeout_ms.map(|ms| {
        i64::try_from(ms.div_ceil(1000))
            .unwrap_or(i64::MAX)
            .saturating_add(JOB_DEADLINE_SLACK_SECS)
    })
}

/// The runner Job of `attempt` of `run`. `pool` is the run's RunnerPool when it exists (its
/// image, resources and placement are used); otherwise the defaults apply.
pub fn build_job(
    run: &PipelineRun,
    pool: Option<&RunnerPool>,
    attempt: u32,
    defaults: &RunnerDefaults,
) -> Result<Job> {
    let (name, namespace, uid) = meta_of(run, "PipelineRun")?;
    let mut labels = base_labels();
    labels.insert(RUN.to_string(), label_value(&name));
    labels.insert(ATTEMPT.to_string(), attempt.to_string());
    if let Some(p) = pool {
        labels.insert(POOL.to_string(), label_value(&p.name_any()));
    }
    let annotations = BTreeMap::from([
        (ANNOTATION_RUN.to_string(), name.clone()),
        (ANNOTATION_RUN_UID.to_string(), uid),
    ]);
    let env = merge_env(
        pool,
        vec![
            env_value(env::RUN, &name),
            env_value(env::NAMESPACE, &namespace),
            env_value(env::ATTEMPT, attempt.to_string()),
            env_value(env::SKIP_BOX_SLOTS, "1"),
            env_value(env::HOME, SCRATCH),
            env_value(env::SPARKWING_HOME, format!("{SCRATCH}/sparkwing")),
            env_field(env::POD_NAME, "metadata.name"),
        ]
        .into_iter()
        .chain(api_url_env(defaults))
        .chain([env_secret(
            env::API_TOKEN,
            runner_token_secret(&name),
            RUNNER_TOKEN_KEY,
        )])
        .collect(),
    );
    let args = vec![
        "runner".to_string(),
        "--run".to_string(),
        format!("{namespace}/{name}"),
        "--attempt".to_string(),
        attempt.to_string(),
    ];
    let mut spec = pod_spec(pool, defaults, args, env);
    if let (Some(c), Some(from)) = (spec.containers.first_mut(), secrets_env_from(run)) {
        c.env_from = Some(from);
    }
    Ok(owned_job(
        run,
        job_name(&name, attempt),
        namespace,
        labels,
        annotations,
        spec,
    ))
}

/// A Job of `run` (owned by it, so deleting the run deletes it) running `spec` once: retries
/// are the operator's or the coordinator's (a new Job per attempt), never the Job controller's;
/// the run's timeout bounds it.
fn owned_job(
    run: &PipelineRun,
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    spec: PodSpec,
) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            owner_references: controller_ref(run).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: active_deadline_seconds(run.intent().timeout_ms),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(spec),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// A warm runner pod of `pool` named `name` (core's pool decision names it).
pub fn build_warm_pod(pool: &RunnerPool, name: &str, defaults: &RunnerDefaults) -> Result<Pod> {
    let (pool_name, namespace, _uid) = meta_of(pool, "RunnerPool")?;
    let mut labels = base_labels();
    labels.insert(POOL.to_string(), label_value(&pool_name));
    labels.insert(WARM.to_string(), "true".to_string());
    let env = merge_env(
        Some(pool),
        vec![
            env_value(env::POOL, &pool_name),
            env_value(env::NAMESPACE, &namespace),
            env_value(env::SKIP_BOX_SLOTS, "1"),
            env_value(env::HOME, SCRATCH),
            env_value(env::SPARKWING_HOME, format!("{SCRATCH}/sparkwing")),
            env_field(env::POD_NAME, "metadata.name"),
        ]
        .into_iter()
        .chain(api_url_env(defaults))
        .chain([
            env_value(env::PODINFO_DIR, PODINFO_DIR),
            env_secret(
                env::POOL_TOKEN,
                pool_token_secret(&pool_name),
                RUNNER_TOKEN_KEY,
            ),
        ])
        .collect(),
    );
    let args = vec![
        "runner".to_string(),
        "--warm".to_string(),
        "--pool".to_string(),
        format!("{namespace}/{pool_name}"),
    ];
    let mut spec = pod_spec(Some(pool), defaults, args, env);
    spec.volumes
        .get_or_insert_with(Vec::new)
        .push(podinfo_volume());
    if let Some(c) = spec.containers.first_mut() {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: PODINFO_VOLUME.to_string(),
                mount_path: PODINFO_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
    }
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(ANNOTATION_POOL.to_string(), pool_name)])),
            owner_references: controller_ref(pool).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// What a run's coordinator asks of a job pod: attempt `attempt` of the placed job `job`, while
/// the coordinator runs attempt `run_attempt` of the run.
#[derive(Debug, Clone)]
pub struct JobPodAsk<'a> {
    pub job: &'a str,
    pub attempt: u32,
    pub run_attempt: u32,
    pub placement: &'a sparkwing_core::placement::PlacementSpec,
    /// A job expanded from a fan-out or matrix: its item.
    pub item: Option<&'a str>,
}

/// Variables of the coordinator's pod a job pod never inherits: the warm runner's pool contract
/// and the ones the job pod sets itself.
const JOB_POD_DROPPED_ENV: [&str; 6] = [
    env::POOL,
    env::POOL_TOKEN,
    env::PODINFO_DIR,
    env::ATTEMPT,
    env::API_TOKEN,
    env::JOB_ITEM,
];

/// The placement's cpu and memory as the container's requests and limits alike, over what the
/// pod had (a placement without them keeps the pod's own).
fn placed_resources(
    had: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    placement: &sparkwing_core::placement::PlacementSpec,
) -> Option<k8s_openapi::api::core::v1::ResourceRequirements> {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let set: Vec<(&str, &String)> = [("cpu", &placement.cpu), ("memory", &placement.memory)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
    if set.is_empty() {
        return had;
    }
    let mut r = had.unwrap_or_default();
    for (k, v) in set {
        r.requests
            .get_or_insert_with(BTreeMap::new)
            .insert(k.to_string(), Quantity(v.clone()));
        r.limits
            .get_or_insert_with(BTreeMap::new)
            .insert(k.to_string(), Quantity(v.clone()));
    }
    Some(r)
}

/// The service account token volume the cluster adds to every pod (`kube-api-access-xxxxx`).
fn injected_volume(name: &str) -> bool {
    name.starts_with("kube-api-access-")
}

/// The Job of a job pod (`docs/runner.md#job-pods`): `sparkwing runner --run NS/NAME --attempt
/// <run attempt> --job ID --job-attempt N` in a pod made like its coordinator's (`coordinator`:
/// the pod spec of the run's runner, whose image, volumes, service account, API URL and the run's
/// Secrets it keeps), or like a warm runner of `pool` when the placement names a RunnerPool
/// (its image, resources, node selector, tolerations, environment and volumes), with the run's
/// runner token, the placement's cpu and memory as requests and limits, its node selector over
/// the pod's, owned by the run and labelled with run, job and attempt. No retries of its own:
/// the coordinator starts a new Job for a new attempt.
pub fn build_job_pod(
    run: &PipelineRun,
    coordinator: &PodSpec,
    pool: Option<&RunnerPool>,
    ask: &JobPodAsk<'_>,
) -> Result<Job> {
    let (name, namespace, uid) = meta_of(run, "PipelineRun")?;
    let job_name = crate::labels::job_pod_name(&name, ask.job, ask.attempt);
    let mut labels = BTreeMap::from([
        (APP_NAME.to_string(), APP_NAME_VALUE.to_string()),
        (crate::labels::JOB_RUN.to_string(), label_value(&name)),
        (
            crate::labels::JOB.to_string(),
            crate::labels::job_label(ask.job),
        ),
        (
            crate::labels::JOB_ATTEMPT.to_string(),
            ask.attempt.to_string(),
        ),
    ]);
    if let Some(p) = pool {
        labels.insert(POOL.to_string(), label_value(&p.name_any()));
    }
    let annotations = BTreeMap::from([
        (ANNOTATION_RUN.to_string(), name.clone()),
        (ANNOTATION_RUN_UID.to_string(), uid),
        (
            crate::labels::ANNOTATION_JOB.to_string(),
            ask.job.to_string(),
        ),
    ]);
    let base = coordinator.containers.first();
    let base_env: Vec<EnvVar> = base.and_then(|c| c.env.clone()).unwrap_or_default();
    let api_url = base_env.iter().find(|e| e.name == env::API_URL).cloned();
    let ours: Vec<EnvVar> = vec![
        env_value(env::RUN, &name),
        env_value(env::NAMESPACE, &namespace),
        env_value(env::ATTEMPT, ask.run_attempt.to_string()),
        env_value(env::SKIP_BOX_SLOTS, "1"),
        env_value(env::HOME, SCRATCH),
        env_value(env::SPARKWING_HOME, format!("{SCRATCH}/sparkwing")),
        env_field(env::POD_NAME, "metadata.name"),
    ]
    .into_iter()
    .chain(api_url)
    .chain(ask.item.map(|i| env_value(env::JOB_ITEM, i)))
    .chain([env_secret(
        env::API_TOKEN,
        runner_token_secret(&name),
        RUNNER_TOKEN_KEY,
    )])
    .collect();
    let args = vec![
        "runner".to_string(),
        "--run".to_string(),
        format!("{namespace}/{name}"),
        "--attempt".to_string(),
        ask.run_attempt.to_string(),
        "--job".to_string(),
        ask.job.to_string(),
        "--job-attempt".to_string(),
        ask.attempt.to_string(),
    ];
    let mut spec = match pool {
        Some(p) => {
            let defaults = RunnerDefaults {
                image: base.and_then(|c| c.image.clone()).unwrap_or_default(),
                service_account: coordinator.service_account_name.clone(),
                api_url: None,
            };
            let mut spec = pod_spec(Some(p), &defaults, args, merge_env(Some(p), ours));
            if let (Some(c), Some(from)) = (spec.containers.first_mut(), secrets_env_from(run)) {
                c.env_from = Some(from);
            }
            spec
        }
        None => {
            let mut spec = coordinator.clone();
            spec.containers.truncate(1);
            spec.init_containers = None;
            spec.node_name = None;
            spec.restart_policy = Some("Never".to_string());
            // What the cluster added to the running pod is added again to the new one: its
            // node, its priority (refused when given with the class's), its service account
            // token volume.
            spec.priority = None;
            spec.volumes = spec.volumes.map(|v| {
                v.into_iter()
                    .filter(|v| v.name != PODINFO_VOLUME && !injected_volume(&v.name))
                    .collect()
            });
            if let Some(c) = spec.containers.first_mut() {
                c.args = Some(args);
                let mut env: Vec<EnvVar> = base_env
                    .into_iter()
                    .filter(|e| !JOB_POD_DROPPED_ENV.contains(&e.name.as_str()))
                    .filter(|e| !ours.iter().any(|o| o.name == e.name))
                    .collect();
                env.extend(ours);
                c.env = Some(env);
                c.volume_mounts = c.volume_mounts.take().map(|m| {
                    m.into_iter()
                        .filter(|m| m.name != PODINFO_VOLUME && !injected_volume(&m.name))
                        .collect()
                });
            }
            spec
        }
    };
    // A stopped job pod (cancel, timeout) goes at once: its coordinator runs the `finally` jobs.
    spec.termination_grace_period_seconds = Some(i64::from(STOP_GRACE_SECONDS));
    if !ask.placement.node_selector.is_empty() {
        let selector = spec.node_selector.get_or_insert_with(BTreeMap::new);
        selector.extend(ask.placement.node_selector.clone());
    }
    if let Some(c) = spec.containers.first_mut() {
        c.resources = placed_resources(c.resources.take(), ask.placement);
    }
    Ok(owned_job(
        run,
        job_name,
        namespace,
        labels,
        annotations,
        spec,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn defaults() -> RunnerDefaults {
        RunnerDefaults {
            image: "sparkwing-runner:test".into(),
            service_account: Some("sparkwing-runner".into()),
            api_url: Some("http://sparkwing-api.sparkwing-system.svc:8443".into()),
        }
    }

    fn pod_of(job: &Job) -> &PodSpec {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn env_of(c: &Container) -> BTreeMap<String, String> {
        c.env
            .iter()
            .flatten()
            .map(|e| {
                let v = e.value.clone().unwrap_or_else(|| {
                    let from = e.value_from.as_ref().unwrap();
                    match (&from.field_ref, &from.secret_key_ref) {
                        (Some(f), _) => format!("<{}>", f.field_path),
                        (_, Some(s)) => format!(
                            "<secret {}/{} optional={}>",
                            s.name,
                            s.key,
                            s.optional.unwrap_or(false)
                        ),
                        _ => panic!("unexpected env source {from:?}"),
                    }
                });
                (e.name.clone(), v)
            })
            .collect()
    }

    #[test]
    fn job_is_named_labelled_and_owned_by_the_run() {
        let run = PipelineRun::test("build-main");
        let job = build_job(&run, None, 2, &defaults()).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("build-main-a2"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("default"));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY], "sparkwing");
        assert_eq!(labels[APP_NAME], "sparkwing-runner");
        assert_eq!(labels[RUN], "build-main");
        assert_eq!(labels[ATTEMPT], "2");
        assert!(!labels.contains_key(POOL));
        let annotations = job.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[ANNOTATION_RUN], "build-main");
        assert_eq!(annotations[ANNOTATION_RUN_UID], "uid-build-main");
        let owners = job.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "PipelineRun");
        assert_eq!(owners[0].api_version, "sparkwing.dev/v1alpha1");
        assert_eq!(owners[0].name, "build-main");
        assert_eq!(owners[0].uid, "uid-build-main");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        // The pods carry the same labels, so they are found by run and attempt.
        let template = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap();
        assert_eq!(template.labels.as_ref(), Some(labels));
        assert_eq!(template.annotations.as_ref(), Some(annotations));
    }

    #[test]
    fn job_gets_the_runs_secrets_as_env_from() {
        let run = PipelineRun::test("r1").with_secrets(&["deploy-key", "db", "deploy-key"]);
        let job = build_job(&run, None, 1, &defaults()).unwrap();
        let c = &pod_of(&job).containers[0];
        let from: Vec<(Option<&str>, Option<bool>, bool)> = c
            .env_from
            .iter()
            .flatten()
            .map(|f| {
                (
                    f.secret_ref.as_ref().map(|s| s.name.as_str()),
                    f.secret_ref.as_ref().and_then(|s| s.optional),
                    f.config_map_ref.is_some() || f.prefix.is_some(),
                )
            })
            .collect();
        assert_eq!(
            from,
            [(Some("deploy-key"), None, false), (Some("db"), None, false)]
        );
        // The runner contract is still set explicitly (env wins over envFrom in Kubernetes).
        assert_eq!(env_of(c)[env::RUN], "r1");
        // Without secrets the container has no envFrom at all.
        let plain = build_job(&PipelineRun::test("r1"), None, 1, &defaults()).unwrap();
        assert_eq!(pod_of(&plain).containers[0].env_from, None);
    }

    #[test]
    fn job_names_are_deterministic_and_bounded() {
        let run = PipelineRun::test(&"r".repeat(80));
        let a = build_job(&run, None, 1, &defaults()).unwrap();
        let b = build_job(&run, None, 1, &defaults()).unwrap();
        let name = a.metadata.name.clone().unwrap();
        assert_eq!(Some(name.clone()), b.metadata.name);
        assert!(name.len() <= 63 && name.ends_with("-a1"), "{name}");
        let label = &a.metadata.labels.as_ref().unwrap()[RUN];
        assert!(label.len() <= 63);
        // The exact name survives in the annotation.
        assert_eq!(
            a.metadata.annotations.as_ref().unwrap()[ANNOTATION_RUN],
            "r".repeat(80)
        );
    }

    #[test]
    fn job_runs_the_runner_for_the_attempt() {
        let run = PipelineRun::test("r1");
        let job = build_job(&run, None, 3, &defaults()).unwrap();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.ttl_seconds_after_finished, None);
        let pod = pod_of(&job);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.name, "runner");
        assert_eq!(c.image.as_deref(), Some("sparkwing-runner:test"));
        assert_eq!(c.command.as_deref(), Some(&["sparkwing".to_string()][..]));
        assert_eq!(
            c.args.clone().unwrap(),
            ["runner", "--run", "default/r1", "--attempt", "3"]
        );
        let env = env_of(c);
        assert_eq!(env["SPARKWING_RUN"], "r1");
        assert_eq!(env["SPARKWING_NAMESPACE"], "default");
        assert_eq!(env["SPARKWING_ATTEMPT"], "3");
        assert_eq!(env["SPARKWING_SKIP_BOX_SLOTS"], "1");
        assert_eq!(env["HOME"], "/tmp");
        assert_eq!(env["POD_NAME"], "<metadata.name>");
        assert_eq!(
            env["SPARKWING_API_URL"],
            "http://sparkwing-api.sparkwing-system.svc:8443"
        );
        // The run's token from the Secret the API created; optional so kubectl runs start too.
        assert_eq!(
            env["SPARKWING_API_TOKEN"],
            "<secret r1-runner-token/token optional=true>"
        );
        assert_eq!(
            pod_of(&job).service_account_name.as_deref(),
            Some("sparkwing-runner")
        );
    }

    #[test]
    fn job_and_pod_are_restricted() {
        let job = build_job(&PipelineRun::test("r1"), None, 1, &defaults()).unwrap();
        let pod = pod_of(&job);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.privileged, None);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(sc.capabilities.as_ref().unwrap().add, None);
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        // The read-only root is usable: /tmp is a writable emptyDir.
        let mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.mount_path, "/tmp");
        let vol = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(vol.name, mount.name);
        assert!(vol.empty_dir.is_some());
        assert_eq!(pod.host_network, None);
        assert_eq!(pod.host_pid, None);
    }

    #[test]
    fn deadline_comes_from_the_timeout() {
        let run = PipelineRun::test("r1").with_timeout("1h30m");
        let job = build_job(&run, None, 1, &defaults()).unwrap();
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(5430));
        let job = build_job(&PipelineRun::test("r1"), None, 1, &defaults()).unwrap();
        assert_eq!(job.spec.unwrap().active_deadline_seconds, None);
        assert_eq!(active_deadline_seconds(Some(1)), Some(31));
        assert_eq!(active_deadline_seconds(Some(1500)), Some(32));
        assert_eq!(
            active_deadline_seconds(Some(u64::MAX)),
            Some(18_446_744_073_709_552 + 30)
        );
    }

    /// A job pod asked for by the coordinator of `run`, whose pod is a warm pod of `pool` as the
    /// cluster shows it (node, priority and token volume added).
    fn job_pod_of(
        run: &PipelineRun,
        placement: &sparkwing_core::placement::PlacementSpec,
        pool: Option<&RunnerPool>,
    ) -> Job {
        let mut warm = RunnerPool::test("warm");
        warm.spec.env = vec![env_value("PATH", "/opt/bin")];
        let mut coordinator = build_warm_pod(&warm, "warm-1", &defaults())
            .unwrap()
            .spec
            .unwrap();
        coordinator.node_name = Some("node-1".into());
        coordinator.priority = Some(0);
        coordinator.node_selector = Some(BTreeMap::from([("kind".into(), "ci".into())]));
        coordinator
            .volumes
            .get_or_insert_with(Vec::new)
            .push(Volume {
                name: "kube-api-access-x1y2z".into(),
                ..Volume::default()
            });
        coordinator.containers[0]
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: "kube-api-access-x1y2z".into(),
                mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                ..VolumeMount::default()
            });
        let ask = JobPodAsk {
            job: "test[3]",
            attempt: 2,
            run_attempt: 1,
            placement,
            item: Some("d"),
        };
        build_job_pod(run, &coordinator, pool, &ask).unwrap()
    }

    #[test]
    fn a_job_pod_is_made_like_its_coordinator_with_the_placement() {
        let run = PipelineRun::test("build-main").with_secrets(&["creds"]);
        let placement = sparkwing_core::placement::PlacementSpec {
            cpu: Some("100m".into()),
            memory: Some("64Mi".into()),
            node_selector: BTreeMap::from([("disk".into(), "ssd".into())]),
            ..Default::default()
        };
        let job = job_pod_of(&run, &placement, None);
        let name = job.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("build-main-test-3-") && name.ends_with("-j2"),
            "{name}"
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[crate::labels::JOB_RUN], "build-main");
        assert_eq!(
            labels[crate::labels::JOB],
            crate::labels::job_label("test[3]")
        );
        assert_eq!(labels[crate::labels::JOB_ATTEMPT], "2");
        // Never taken for a runner by the controllers.
        assert!(!labels.contains_key(MANAGED_BY) && !labels.contains_key(RUN));
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()[crate::labels::ANNOTATION_JOB],
            "test[3]"
        );
        let owners = job.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].name.as_str()),
            ("PipelineRun", "build-main")
        );
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
        let pod = pod_of(&job);
        assert_eq!(pod.node_name, None);
        assert_eq!(pod.priority, None);
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(i64::from(STOP_GRACE_SECONDS))
        );
        let selector = pod.node_selector.as_ref().unwrap();
        assert_eq!(
            (selector["kind"].as_str(), selector["disk"].as_str()),
            ("ci", "ssd")
        );
        let volumes: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, [SCRATCH_VOLUME]);
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("sparkwing-runner:test"));
        assert_eq!(
            c.args.as_ref().unwrap().join(" "),
            "runner --run default/build-main --attempt 1 --job test[3] --job-attempt 2"
        );
        let mounts: Vec<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounts, [SCRATCH_VOLUME]);
        let r = c.resources.as_ref().unwrap();
        for set in [&r.requests, &r.limits] {
            let set = set.as_ref().unwrap();
            assert_eq!(set["cpu"].0, "100m");
            assert_eq!(set["memory"].0, "64Mi");
        }
        let env = env_of(c);
        assert_eq!(env["PATH"], "/opt/bin");
        assert_eq!(env[env::ATTEMPT], "1");
        assert_eq!(env[env::JOB_ITEM], "d");
        assert_eq!(env[env::RUN], "build-main");
        assert_eq!(
            env[env::API_TOKEN],
            "<secret build-main-runner-token/token optional=true>"
        );
        assert_eq!(
            env[env::API_URL],
            "http://sparkwing-api.sparkwing-system.svc:8443"
        );
        for gone in [env::POOL, env::POOL_TOKEN, env::PODINFO_DIR] {
            assert!(!env.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn a_job_pod_of_a_pool_is_made_like_its_warm_runners() {
        let mut gpu = RunnerPool::test("gpu");
        gpu.spec.image = "runner:gpu".into();
        gpu.spec.node_selector.insert("accel".into(), "gpu".into());
        let run = PipelineRun::test("train");
        let placement = sparkwing_core::placement::PlacementSpec {
            pool: Some("gpu".into()),
            cpu: Some("4".into()),
            ..Default::default()
        };
        let job = job_pod_of(&run, &placement, Some(&gpu));
        assert_eq!(job.metadata.labels.as_ref().unwrap()[POOL], "gpu");
        let pod = pod_of(&job);
        assert_eq!(pod.node_selector.as_ref().unwrap()["accel"], "gpu");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("runner:gpu"));
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "4");
        assert!(!r.limits.as_ref().unwrap().contains_key("memory"));
        let env = env_of(c);
        assert_eq!(
            env[env::API_URL],
            "http://sparkwing-api.sparkwing-system.svc:8443"
        );
        assert!(!env.contains_key(env::PODINFO_DIR));
    }

    #[test]
    fn pool_settings_flow_into_the_job() {
        let mut pool = RunnerPool::test("fast");
        pool.spec.image = "runner:pool".into();
        pool.spec.service_account_name = Some("builder".into());
        pool.spec.node_selector.insert("kind".into(), "ci".into());
        pool.spec.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
            ..ResourceRequirements::default()
        });
        pool.spec.env = vec![
            env_value("EXTRA", "1"),
            // May not override the contract.
            env_value("SPARKWING_RUN", "hijack"),
        ];
        let run = PipelineRun::test("r1").in_pool("fast");
        let job = build_job(&run, Some(&pool), 1, &defaults()).unwrap();
        assert_eq!(job.metadata.labels.as_ref().unwrap()[POOL], "fast");
        let pod = pod_of(&job);
        assert_eq!(pod.service_account_name.as_deref(), Some("builder"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["kind"], "ci");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("runner:pool"));
        assert!(c.resources.is_some());
        let env = env_of(c);
        assert_eq!(env["EXTRA"], "1");
        assert_eq!(env["SPARKWING_RUN"], "r1");
        assert_eq!(
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .filter(|e| e.name == "SPARKWING_RUN")
                .count(),
            1
        );
    }

    #[test]
    fn warm_pod_waits_for_a_claim() {
        let pool = RunnerPool::test("fast");
        let pod = build_warm_pod(&pool, "fast-19a-0", &defaults()).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("fast-19a-0"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY], "sparkwing");
        assert_eq!(labels[POOL], "fast");
        assert_eq!(labels[WARM], "true");
        assert!(!labels.contains_key(RUN));
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("RunnerPool", Some(true))
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, None);
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("sparkwing-runner:test"));
        assert_eq!(
            c.args.clone().unwrap(),
            ["runner", "--warm", "--pool", "default/fast"]
        );
        let env = env_of(c);
        assert_eq!(env["SPARKWING_POOL"], "fast");
        assert_eq!(
            env["SPARKWING_API_URL"],
            "http://sparkwing-api.sparkwing-system.svc:8443"
        );
        // A warm pod does not know its run yet: no run token, but the pool's credential.
        assert!(!env.contains_key("SPARKWING_API_TOKEN"));
        assert_eq!(
            env["SPARKWING_POOL_TOKEN"],
            "<secret fast-pool-token/token optional=true>"
        );
        assert_eq!(env["SPARKWING_PODINFO_DIR"], "/etc/sparkwing/podinfo");
        assert_eq!(env["SPARKWING_SKIP_BOX_SLOTS"], "1");
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
    }

    #[test]
    fn warm_pod_reads_its_claim_from_a_downward_api_volume() {
        let mut pool = RunnerPool::test("fast");
        // A pool cannot swap the credential or the podinfo directory either.
        pool.spec.env = vec![
            env_value("SPARKWING_POOL_TOKEN", "stolen"),
            env_value("SPARKWING_PODINFO_DIR", "/tmp/fake"),
        ];
        let pod = build_warm_pod(&pool, "fast-19a-0", &defaults()).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "sparkwing-podinfo")
            .expect("the podinfo volume");
        let items: Vec<(&str, &str)> = vol
            .downward_api
            .as_ref()
            .unwrap()
            .items
            .iter()
            .flatten()
            .map(|i| {
                (
                    i.path.as_str(),
                    i.field_ref.as_ref().unwrap().field_path.as_str(),
                )
            })
            .collect();
        assert_eq!(
            items,
            [
                ("annotations", "metadata.annotations"),
                ("labels", "metadata.labels")
            ]
        );
        let c = &spec.containers[0];
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "sparkwing-podinfo")
            .unwrap();
        assert_eq!(mount.mount_path, "/etc/sparkwing/podinfo");
        assert_eq!(mount.read_only, Some(true));
        let env = env_of(c);
        assert_eq!(env["SPARKWING_PODINFO_DIR"], "/etc/sparkwing/podinfo");
        assert_eq!(
            env["SPARKWING_POOL_TOKEN"],
            "<secret fast-pool-token/token optional=true>"
        );
        // Job pods know their run from the start: no podinfo volume, no pool credential.
        let job = build_job(&PipelineRun::test("r1"), Some(&pool), 1, &defaults()).unwrap();
        let job_pod = pod_of(&job);
        assert!(!job_pod
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == "sparkwing-podinfo"));
        assert!(!env_of(&job_pod.containers[0]).contains_key("SPARKWING_PODINFO_DIR"));
    }

    #[test]
    fn without_an_api_url_the_runner_gets_none() {
        let d = RunnerDefaults {
            api_url: None,
            ..defaults()
        };
        let job = build_job(&PipelineRun::test("r1"), None, 1, &d).unwrap();
        let env = env_of(&pod_of(&job).containers[0]);
        assert!(!env.contains_key("SPARKWING_API_URL"));
        assert!(env.contains_key("SPARKWING_API_TOKEN"));
        // A pool cannot point the runner at another API or token.
        let mut pool = RunnerPool::test("p");
        pool.spec.env = vec![env_value("SPARKWING_API_TOKEN", "stolen")];
        let job = build_job(&PipelineRun::test("r1"), Some(&pool), 1, &d).unwrap();
        let env = env_of(&pod_of(&job).containers[0]);
        assert_eq!(
            env["SPARKWING_API_TOKEN"],
            "<secret r1-runner-token/token optional=true>"
        );
    }

    #[test]
    fn pool_volumes_are_added_to_job_and_warm_pods() {
        let mut pool = RunnerPool::test("cache");
        pool.spec.volumes = vec![Volume {
            name: "cargo".into(),
            persistent_volume_claim: Some(
                k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: "cargo-cache".into(),
                    read_only: None,
                },
            ),
            ..Volume::default()
        }];
        pool.spec.volume_mounts = vec![VolumeMount {
            name: "cargo".into(),
            mount_path: "/cache/cargo".into(),
            read_only: Some(false),
            ..VolumeMount::default()
        }];
        let job = build_job(&PipelineRun::test("r1"), Some(&pool), 1, &defaults()).unwrap();
        let warm = build_warm_pod(&pool, "cache-1", &defaults()).unwrap();
        for spec in [pod_of(&job), warm.spec.as_ref().unwrap()] {
            let names: Vec<&str> = spec
                .volumes
                .iter()
                .flatten()
                .map(|v| v.name.as_str())
                .filter(|n| *n != PODINFO_VOLUME)
                .collect();
            assert_eq!(names, ["scratch", "cargo"]);
            let mounts: Vec<(&str, &str)> = spec.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.name != PODINFO_VOLUME)
                .map(|m| (m.name.as_str(), m.mount_path.as_str()))
                .collect();
            assert_eq!(mounts, [("scratch", "/tmp"), ("cargo", "/cache/cargo")]);
            assert_eq!(
                spec.volumes.as_ref().unwrap()[1]
                    .persistent_volume_claim
                    .as_ref()
                    .unwrap()
                    .claim_name,
                "cargo-cache"
            );
        }
    }

    #[test]
    fn objects_without_identity_are_errors_not_panics() {
        let mut run = PipelineRun::test("r1");
        run.metadata.uid = None;
        assert!(matches!(
            build_job(&run, None, 1, &defaults()),
            Err(Error::MissingObjectKey {
                field: "metadata.uid",
                ..
            })
        ));
    }
}
