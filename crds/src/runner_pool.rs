//! `RunnerPool`: warm runners kept ready so runs start without waiting for a new pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration, Volume, VolumeMount};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use sparkwing_core::reconcile::pool::PoolIntent;
use sparkwing_core::reconcile::status::PoolStatus;

use crate::duration::{parse_duration, DURATION_PATTERN};

/// Keeps `minIdle` runner pods started and idle, never more than `maxRunners` in all, so a
/// PipelineRun naming this pool in `spec.runnerPool` starts by claiming a warm runner. Idle runners
/// beyond `minIdle` are deleted after `idleTimeout`; busy runners are never touched.
// Each `printcolumn(...)` repeats `name =`, `type_ =`, ...: not the duplicates clippy means.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sparkwing.dev",
    version = "v1alpha1",
    kind = "RunnerPool",
    plural = "runnerpools",
    singular = "runnerpool",
    namespaced,
    status = "PoolStatus",
    shortname = "swp",
    shortname = "swpool",
    category = "sparkwing",
    derive = "PartialEq",
    doc = "A pool of warm Sparkwing runners that PipelineRuns claim to start fast.",
    printcolumn(
        name = "Idle",
        type_ = "integer",
        json_path = ".status.idle",
        description = "Runners ready and unclaimed"
    ),
    printcolumn(
        name = "Busy",
        type_ = "integer",
        json_path = ".status.busy",
        description = "Runners claimed by or running a PipelineRun"
    ),
    printcolumn(
        name = "Starting",
        type_ = "integer",
        json_path = ".status.starting",
        description = "Runners created, not ready yet"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.maxRunners",
        description = "The most runners the pool may have"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "The runner image",
        priority = 1
    ),
    printcolumn(
        name = "MinIdle",
        type_ = "integer",
        json_path = ".spec.minIdle",
        description = "Idle runners the pool keeps ready",
        priority = 1
    )
)]
#[x_kube(validation = kube::core::Rule::new("self.maxRunners >= self.minIdle").message("maxRunners must be >= minIdle"))]
#[serde(rename_all = "camelCase")]
pub struct RunnerPoolSpec {
    /// Container image of the runners (the Sparkwing runner image, or one built on it with the
    /// toolchains your pipelines need).
    #[schemars(length(min = 1))]
    pub image: String,

    /// Idle runners to keep started and ready for the next run. 0: no runner is started ahead of
    /// a run.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_idle: i32,

    /// The most runners the pool may have at once, idle, busy and starting together. Must be at
    /// least `minIdle`.
    #[schemars(range(min = 1))]
    pub max_runners: i32,

    /// How long a runner beyond `minIdle` may stay idle before it is deleted, like `90s`, `10m`
    /// or `1h`.
    #[serde(default = "default_idle_timeout")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub idle_timeout: String,

    /// CPU and memory requests and limits of each runner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels a runner pod must match to be scheduled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the runner pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Service account the runner pods run as (the namespace's `default` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Extra environment variables of the runner container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Extra volumes of the runner pods, such as a PersistentVolumeClaim holding a cargo registry
    /// cache. The name `scratch` is the runner's own (its `/tmp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,

    /// Where the runner container mounts `volumes` (each names one of them; not at `/tmp`, the
    /// runner's scratch directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// The name of the runner's own scratch volume (its `/tmp`), which pool volumes may not use.
pub const SCRATCH_VOLUME: &str = "scratch";
/// Where the scratch volume is mounted.
pub const SCRATCH_PATH: &str = "/tmp";
/// The warm runner's `downwardAPI` volume (its pod's annotations and labels), which pool volumes
/// may not use either.
pub const PODINFO_VOLUME: &str = "sparkwing-podinfo";
/// Where warm runners mount it.
pub const PODINFO_PATH: &str = "/etc/sparkwing/podinfo";

fn volume_problems(spec: &RunnerPoolSpec, problems: &mut Vec<String>) {
    let mut names: Vec<&str> = Vec::new();
    for v in &spec.volumes {
        if v.name == SCRATCH_VOLUME {
            problems.push(format!(
                "spec.volumes: the name {SCRATCH_VOLUME} is reserved for the runner's {SCRATCH_PATH}"
            ));
        } else if v.name == PODINFO_VOLUME {
            problems.push(format!(
                "spec.volumes: the name {PODINFO_VOLUME} is reserved for the warm runner's {PODINFO_PATH}"
            ));
        } else if names.contains(&v.name.as_str()) {
            problems.push(format!("spec.volumes: {} is declared twice", v.name));
        }
        names.push(&v.name);
    }
    for m in &spec.volume_mounts {
        if !names.contains(&m.name.as_str()) || m.name == SCRATCH_VOLUME || m.name == PODINFO_VOLUME
        {
            problems.push(format!(
                "spec.volumeMounts: {} names no volume of spec.volumes",
                m.name
            ));
        }
        if m.mount_path.trim_end_matches('/') == SCRATCH_PATH {
            problems.push(format!(
                "spec.volumeMounts: {} cannot be mounted at {SCRATCH_PATH}, the runner's scratch",
                m.name
            ));
        }
    }
}

fn default_idle_timeout() -> String {
    "10m".to_string()
}

impl RunnerPool {
    /// What the pool reconcile needs from the spec, or why the spec cannot be used (the operator
    /// reports it in the `Ready` condition instead of crash-looping).
    pub fn intent(&self) -> Result<PoolIntent, String> {
        let spec = &self.spec;
        let mut problems: Vec<String> = Vec::new();
        if spec.image.trim().is_empty() {
            problems.push("spec.image must not be empty".into());
        }
        let min_idle = u32::try_from(spec.min_idle).unwrap_or_else(|_| {
            problems.push(format!(
                "spec.minIdle must not be negative, got {}",
                spec.min_idle
            ));
            0
        });
        let max_runners = match u32::try_from(spec.max_runners) {
            Ok(n) if n >= 1 => n,
            _ => {
                problems.push(format!(
                    "spec.maxRunners must be at least 1, got {}",
                    spec.max_runners
                ));
                0
            }
        };
        if max_runners >= 1 && max_runners < min_idle {
            problems.push(format!(
                "maxRunners must be >= minIdle (maxRunners {max_runners}, minIdle {min_idle})"
            ));
        }
        let idle_timeout_ms = parse_duration(&spec.idle_timeout).unwrap_or_else(|e| {
            problems.push(format!("spec.idleTimeout: {e}"));
            0
        });
        volume_problems(spec, &mut problems);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(PoolIntent {
            generation: self.metadata.generation.unwrap_or(0),
            min_idle,
            max_runners,
            idle_timeout_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_of_a_pool() {
        let pool = RunnerPool::test("p")
            .with_min_idle(2)
            .with_max_runners(5)
            .with_idle_timeout("1h30m")
            .with_generation(3);
        assert_eq!(
            pool.intent(),
            Ok(PoolIntent {
                generation: 3,
                min_idle: 2,
                max_runners: 5,
                idle_timeout_ms: 5_400_000,
            })
        );
    }

    #[test]
    fn defaults_apply_when_fields_are_missing() {
        let spec: RunnerPoolSpec = serde_json::from_value(serde_json::json!({
            "image": "runner:1",
            "maxRunners": 2
        }))
        .unwrap();
        assert_eq!(spec.min_idle, 0);
        assert_eq!(spec.idle_timeout, "10m");
        let pool = RunnerPool::new("p", spec);
        assert_eq!(pool.intent().unwrap().idle_timeout_ms, 600_000);
    }

    #[test]
    fn invalid_pools_are_errors_with_every_problem() {
        let err = RunnerPool::test("p")
            .with_min_idle(3)
            .with_max_runners(2)
            .intent()
            .unwrap_err();
        assert!(err.contains("maxRunners must be >= minIdle"), "{err}");
        let err = RunnerPool::test("p")
            .with_min_idle(-1)
            .with_max_runners(0)
            .with_idle_timeout("10")
            .intent()
            .unwrap_err();
        assert!(
            err.contains("spec.minIdle must not be negative, got -1"),
            "{err}"
        );
        assert!(
            err.contains("spec.maxRunners must be at least 1, got 0"),
            "{err}"
        );
        assert!(err.contains("spec.idleTimeout: invalid duration"), "{err}");
        let mut pool = RunnerPool::test("p");
        pool.spec.image = String::new();
        assert!(pool.intent().unwrap_err().contains("spec.image"));
    }

    #[test]
    fn volumes_and_mounts_are_checked() {
        let spec: RunnerPoolSpec = serde_json::from_value(serde_json::json!({
            "image": "runner:1",
            "maxRunners": 2,
            "volumes": [
                {"name": "cargo", "persistentVolumeClaim": {"claimName": "cargo-cache"}},
                {"name": "usr", "hostPath": {"path": "/usr"}}
            ],
            "volumeMounts": [
                {"name": "cargo", "mountPath": "/cache/cargo"},
                {"name": "usr", "mountPath": "/usr", "readOnly": true}
            ]
        }))
        .unwrap();
        let pool = RunnerPool::new("p", spec.clone());
        assert!(pool.intent().is_ok(), "{:?}", pool.intent());
        assert_eq!(spec.volume_mounts[1].read_only, Some(true));
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            back["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "cargo-cache"
        );

        let mut bad = spec;
        bad.volumes.push(Volume {
            name: "scratch".into(),
            ..Volume::default()
        });
        bad.volumes.push(Volume {
            name: "sparkwing-podinfo".into(),
            ..Volume::default()
        });
        bad.volume_mounts.push(VolumeMount {
            name: "nope".into(),
            mount_path: "/tmp/".into(),
            ..VolumeMount::default()
        });
        let err = RunnerPool::new("p", bad).intent().unwrap_err();
        assert!(err.contains("the name scratch is reserved"), "{err}");
        assert!(
            err.contains("the name sparkwing-podinfo is reserved for the warm runner's"),
            "{err}"
        );
        assert!(err.contains("nope names no volume"), "{err}");
        assert!(err.contains("cannot be mounted at /tmp"), "{err}");
    }
}
