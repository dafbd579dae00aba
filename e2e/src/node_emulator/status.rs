//! The status a kubelet writes for a pod with one container: the pod's conditions (each with the
//! time it last changed), its phase, the container's state, and the times and addresses, built
//! from what Docker says of the container. Pure: the worker writes what this builds.

use std::collections::BTreeMap;

use bollard::models::ContainerState;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::POD_IP;

/// What a pod's status holds besides its container's state, kept across the worker's writes.
pub(super) struct PodStatus {
    /// Condition type -> (status, lastTransitionTime).
    conditions: BTreeMap<&'static str, (bool, String)>,
    start_time: String,
    /// Docker's id of the pod's container, once created.
    pub(super) container_id: Option<String>,
    /// Docker's id of the container's image, once found.
    pub(super) image_id: String,
}

impl PodStatus {
    /// The status of a pod the worker starts on now.
    pub(super) fn new() -> Self {
        PodStatus {
            conditions: BTreeMap::new(),
            start_time: now_string(),
            container_id: None,
            image_id: String::new(),
        }
    }

    /// `containerID` as the kubelet writes it: `docker://<id>`.
    pub(super) fn container_id_uri(&self) -> Option<String> {
        self.container_id
            .as_ref()
            .map(|id| format!("docker://{id}"))
    }

    fn set_condition(&mut self, kind: &'static str, status: bool) {
        let changed = self.conditions.get(kind).is_none_or(|(s, _)| *s != status);
        if changed {
            self.conditions.insert(kind, (status, now_string()));
        }
    }

    /// The pod status: `phase`, the one container's `state`, readiness, conditions, and for an
    /// eviction the pod's reason and message.
    pub(super) fn render(
        &mut self,
        container: &Container,
        phase: &str,
        state: Value,
        ready: bool,
        evicted: Option<(&str, &str)>,
    ) -> Value {
        let terminal = phase == "Succeeded" || phase == "Failed";
        self.set_condition("PodReadyToStartContainers", !terminal);
        self.set_condition("Initialized", true);
        self.set_condition("Ready", ready);
        self.set_condition("ContainersReady", ready);
        self.set_condition("PodScheduled", true);
        if evicted.is_some() {
            self.set_condition("DisruptionTarget", true);
        }
        let mut conditions: Vec<Value> = Vec::new();
        for (kind, (status, time)) in &self.conditions {
            let mut condition = json!({
                "type": kind,
                "status": if *status { "True" } else { "False" },
                "lastProbeTime": null,
                "lastTransitionTime": time,
            });
            if !*status && (*kind == "Ready" || *kind == "ContainersReady") {
                if terminal {
                    condition["reason"] = json!("PodCompleted");
                } else {
                    condition["reason"] = json!("ContainersNotReady");
                    condition["message"] = json!(format!(
                        "containers with unready status: [{}]",
                        container.name
                    ));
                }
            }
            if *kind == "DisruptionTarget" {
                condition["reason"] = json!("TerminationByKubelet");
                condition["message"] = json!(evicted.map(|(_, m)| m));
            }
            conditions.push(condition);
        }
        let running = state.get("running").is_some();
        let mut container_status = json!({
            "name": container.name,
            "image": container.image,
            "imageID": self.image_id,
            "ready": ready,
            "started": running,
            "restartCount": 0,
            "state": state,
        });
        if let Some(id) = self.container_id_uri() {
            container_status["containerID"] = json!(id);
        }
        json!({
            "phase": phase,
            "reason": evicted.map(|(r, _)| r),
            "message": evicted.map(|(_, m)| m),
            "conditions": conditions,
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": self.start_time,
            "containerStatuses": [container_status],
        })
    }

    /// The pod's phase and its container's `terminated` state once the container exited with
    /// Docker's `state`; `oom` when the emulator killed it as the OOM killer would.
    pub(super) fn exited(
        &self,
        state: &ContainerState,
        oom: bool,
        started_at: Option<&str>,
    ) -> (&'static str, Value) {
        let exit_code = state.exit_code.unwrap_or(-1);
        let oom = oom || state.oom_killed == Some(true);
        let reason = if oom {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let finished_at = state
            .finished_at
            .as_deref()
            .and_then(docker_time)
            .unwrap_or_else(now_string);
        let terminated = json!({"terminated": {
            "exitCode": if oom && exit_code == 0 { 137 } else { exit_code },
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": finished_at,
            "containerID": self.container_id_uri(),
        }});
        let phase = if exit_code == 0 && !oom {
            "Succeeded"
        } else {
            "Failed"
        };
        (phase, terminated)
    }
}

/// A time as Kubernetes writes it: whole seconds.
fn second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Now, as Kubernetes writes it.
pub(super) fn now_string() -> String {
    second(Timestamp::now()).to_string()
}

/// A Docker time (RFC 3339 with nanoseconds) as Kubernetes writes it; `None` for Docker's zero.
pub(super) fn docker_time(text: &str) -> Option<String> {
    let t: Timestamp = text.parse().ok()?;
    (t.as_second() > 0).then(|| second(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times() {
        assert_eq!(
            docker_time("2024-05-01T10:20:30.123456789Z").as_deref(),
            Some("2024-05-01T10:20:30Z")
        );
        assert_eq!(docker_time("0001-01-01T00:00:00Z"), None);
    }

    #[test]
    fn an_exit_gives_the_phase_and_reason_a_kubelet_would() {
        let status = PodStatus::new();
        let exited = |exit_code: i64, oom_killed: bool, oom: bool| {
            let state = ContainerState {
                exit_code: Some(exit_code),
                oom_killed: Some(oom_killed),
                finished_at: Some("2024-05-01T10:20:30.5Z".to_string()),
                ..ContainerState::default()
            };
            let (phase, state) = status.exited(&state, oom, Some("2024-05-01T10:20:00Z"));
            let terminated = &state["terminated"];
            assert_eq!(terminated["startedAt"], "2024-05-01T10:20:00Z");
            assert_eq!(terminated["finishedAt"], "2024-05-01T10:20:30Z");
            (
                phase,
                terminated["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                terminated["exitCode"].as_i64(),
            )
        };
        assert_eq!(
            exited(0, false, false),
            ("Succeeded", "Completed".into(), Some(0))
        );
        assert_eq!(exited(3, false, false), ("Failed", "Error".into(), Some(3)));
        // Killed by the kernel, or by the emulator's knob (even if the process exited 0).
        assert_eq!(
            exited(137, true, false),
            ("Failed", "OOMKilled".into(), Some(137))
        );
        assert_eq!(
            exited(0, false, true),
            ("Failed", "OOMKilled".into(), Some(137))
        );
    }
}
