//! Status writes: server-side apply of the whole status the decision computed, with the
//! operator's field manager and `force`, skipped when nothing changed. Core's decisions change
//! timestamps only on transitions, so an unchanged world computes an identical status and a
//! finished, idle run is never written again (`sparkwing_status_writes_total` counts the writes).
//!
//! `status.jobs` of a PipelineRun belongs to the runner (it applies it with its own field
//! manager); the operator's patch leaves it out, so the two never overwrite each other.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sparkwing_core::reconcile::status::RunStatus;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sparkwing-operator";

/// Status fields the operator does not own.
const RUNNER_OWNED: [&str; 1] = ["jobs"];

/// A PipelineRun status as the operator applies it: without the runner's `jobs`.
pub fn run_status_value(status: &RunStatus) -> Result<Value> {
    let mut v = serde_json::to_value(status).map_err(|source| Error::Serialize {
        what: "PipelineRun status",
        source,
    })?;
    if let Value::Object(map) = &mut v {
        for key in RUNNER_OWNED {
            map.remove(key);
        }
    }
    Ok(v)
}

/// Any status as JSON.
pub fn status_value<S: Serialize>(status: &S, what: &'static str) -> Result<Value> {
    serde_json::to_value(status).map_err(|source| Error::Serialize { what, source })
}

/// Does the computed status differ from the stored one? Compared as JSON (the wire form), and
/// only on the fields the computed status has, so fields owned by others and the stored form's
/// second-precision times do not cause writes.
pub fn needs_write(current: Option<&Value>, computed: &Value) -> bool {
    let Some(current) = current else {
        return true;
    };
    match (current, computed) {
        (Value::Object(cur), Value::Object(new)) => {
            new.iter().any(|(k, v)| cur.get(k) != Some(v))
                || cur
                    .keys()
                    .any(|k| !new.contains_key(k) && !RUNNER_OWNED.contains(&k.as_str()))
        }
        (cur, new) => cur != new,
    }
}

/// The server-side apply patch of a status: `apiVersion` and `kind` are required by the API.
pub fn status_patch<K: Resource<DynamicType = ()>>(status: Value) -> Patch<Value> {
    guarded_status_patch::<K>(status, None)
}

/// [`status_patch`], optionally guarded by a `resourceVersion`: the API server refuses the apply
/// with 409 Conflict when the object changed since that version. External runs use it, since
/// the Sparkwing API writes their end concurrently with the operator.
pub fn guarded_status_patch<K: Resource<DynamicType = ()>>(
    status: Value,
    resource_version: Option<&str>,
) -> Patch<Value> {
    let mut body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = json!({ "resourceVersion": rv });
    }
    Patch::Apply(body)
}

/// Apply parameters: our field manager, forcing ownership of the fields we set.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Write `computed` as the status of `name` unless it equals `current`. Returns whether it wrote.
/// With `resource_version` the write is refused (409) when the object changed since then.
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    current: Option<&Value>,
    computed: Value,
    resource_version: Option<&str>,
    metrics: &Metrics,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !needs_write(current, &computed) {
        return Ok(false);
    }
    api.patch_status(
        name,
        &apply_params(),
        &guarded_status_patch::<K>(computed, resource_version),
    )
    .await?;
    metrics.status_written(&K::kind(&()));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_core::reconcile::run::{reconcile_run, RunIntent, RunObservation};
    use sparkwing_core::reconcile::status::{JobStatus, RunPhase};
    use sparkwing_crds::PipelineRun;

    #[test]
    fn patch_carries_api_version_and_kind() {
        let patch = status_patch::<PipelineRun>(json!({"phase": "Pending"}));
        let Patch::Apply(body) = patch else {
            panic!("not an apply patch")
        };
        assert_eq!(body["apiVersion"], "sparkwing.dev/v1alpha1");
        assert_eq!(body["kind"], "PipelineRun");
        assert_eq!(body["status"]["phase"], "Pending");
        assert!(body.get("metadata").is_none());
        let params = apply_params();
        assert_eq!(params.field_manager.as_deref(), Some("sparkwing-operator"));
        assert!(params.force);
        let Patch::Apply(guarded) =
            guarded_status_patch::<PipelineRun>(json!({"phase": "Running"}), Some("42"))
        else {
            panic!("not an apply patch")
        };
        assert_eq!(guarded["metadata"]["resourceVersion"], "42");
        assert_eq!(guarded["kind"], "PipelineRun");
    }

    #[test]
    fn runner_owned_jobs_are_left_out() {
        let status = RunStatus {
            jobs: vec![JobStatus {
                name: "build".into(),
                state: "running".into(),
                ..JobStatus::default()
            }],
            ..RunStatus::default()
        };
        let v = run_status_value(&status).unwrap();
        assert!(v.get("jobs").is_none());
        // Stored jobs (written by the runner) do not make the operator write.
        let mut stored = serde_json::to_value(&status).unwrap();
        assert!(!needs_write(Some(&stored), &v));
        stored["attempts"] = json!(2);
        assert!(needs_write(Some(&stored), &v));
    }

    #[test]
    fn unchanged_status_is_not_written() {
        let intent = RunIntent::default();
        let first = reconcile_run(
            &intent,
            &RunStatus::default(),
            &RunObservation::default(),
            5_000,
        );
        let v1 = run_status_value(&first.status).unwrap();
        assert!(needs_write(None, &v1));
        // What the API stores and returns.
        let stored: RunStatus = serde_json::from_value(v1.clone()).unwrap();
        let stored_v = serde_json::to_value(&stored).unwrap();
        assert!(!needs_write(Some(&stored_v), &v1));
    }

    #[test]
    fn finished_run_recomputes_an_identical_status() {
        // A finished run, reconciled again and again later: nothing to write.
        let mut status = RunStatus {
            phase: RunPhase::Succeeded,
            attempts: 1,
            runner: Some("r1-a1".into()),
            observed_generation: 1,
            ..RunStatus::default()
        };
        status.completion_time = Some(sparkwing_core::time::Time(10_000));
        let stored = serde_json::to_value(&status).unwrap();
        for now in [11_000, 60_000, 86_400_000] {
            let d = reconcile_run(
                &RunIntent::default(),
                &status,
                &RunObservation::default(),
                now,
            );
            assert!(d.actions.is_empty());
            assert!(!needs_write(
                Some(&stored),
                &run_status_value(&d.status).unwrap()
            ));
        }
    }

    #[test]
    fn a_removed_field_is_a_change() {
        let cur = json!({"phase": "Pending", "runner": "r1-a1"});
        let new = json!({"phase": "Pending"});
        assert!(needs_write(Some(&cur), &new));
    }
}
