//! Kubernetes Events, through one shared [`Recorder`] (so repeated events aggregate into a series).
//! Events are published on transitions only: core's run decision emits `RunAction::Event` only
//! when the `Succeeded` condition's status or reason changes, and the operator's own events
//! (a claim, a missing pool) happen once per runner start.
//!
//! Events are best effort: a failure to publish is logged and never fails a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

/// The reporting controller of every event.
pub const REPORTER: &str = "sparkwing-operator";

/// Kubernetes limits: reason and action at most 128 characters, note at most 1 kB.
const MAX_REASON: usize = 128;
const MAX_NOTE: usize = 1024;

/// The operator's event publisher.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl Events {
    /// `instance` names this replica (its pod name) in the events it reports.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Events {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: REPORTER.to_string(),
                    instance,
                },
            ),
        }
    }

    /// Publish an event about `regarding`. `action` is what the operator did (PascalCase),
    /// `reason` why (PascalCase, a condition reason for run transitions).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        action: &str,
        reason: &str,
        message: &str,
        warning: bool,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: truncate(reason, MAX_REASON),
            note: Some(truncate(message, MAX_NOTE)),
            action: truncate(action, MAX_REASON),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(
                object = regarding.name.as_deref().unwrap_or_default(),
                reason,
                error = %e,
                "could not publish event"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(600);
        let t = truncate(&long, 1024);
        assert!(t.len() <= 1024 && t.ends_with("..."));
    }
}
