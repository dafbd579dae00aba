//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does it: the leader renews
//! `spec.renewTime` every `renew_interval`; a candidate takes the Lease over when its record has
//! not changed for `leaseDurationSeconds` (measured on the candidate's own clock from when it
//! last saw the record change, so clock skew between replicas does not matter). Every write
//! carries the Lease's `resourceVersion`, so two candidates never both win.
//!
//! A leader that cannot renew within `renew_deadline` stops ([`Error::LeadershipLost`]): the
//! process exits and restarts as a candidate, so two replicas never reconcile at once for longer
//! than the renew deadline. On a clean shutdown the leader releases the Lease, so a successor
//! takes over at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use crate::error::{is_already_exists, is_conflict, Error, Result};
use crate::status::FIELD_MANAGER;

/// The default name of the Lease.
pub const LEASE_NAME: &str = "sparkwing-operator";

/// Where the Lease lives and how it is timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub renew_interval: Duration,
    pub retry_interval: Duration,
}

impl LeaderConfig {
    /// A Lease named [`LEASE_NAME`] in `namespace`, client-go's default timing (15 s lease, 10 s
    /// renew deadline) with a 2 s renew and retry interval.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderConfig {
            namespace: namespace.into(),
            name: LEASE_NAME.to_string(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_interval: Duration::from_secs(2),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// What a candidate does with the Lease it read (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create it, holding it.
    Create,
    /// Nobody holds it, or its holder stopped renewing: take it over.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it and renews it.
    Wait,
}

/// Decide from the Lease and how long its record has been unchanged, as seen locally.
pub fn next_step(lease: Option<&Lease>, identity: &str, unchanged_for: Duration) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => Step::Renew,
        None | Some("") => Step::Acquire,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(u64::try_from(s.max(1)).unwrap_or(1)))
                .unwrap_or(Duration::from_secs(15));
            if unchanged_for >= duration {
                Step::Acquire
            } else {
                Step::Wait
            }
        }
    }
}

/// A replica taking part in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The Lease's resourceVersion when last read, and when it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    fn unchanged_for(&self, lease: Option<&Lease>) -> Duration {
        let rv = lease.and_then(|l| l.resource_version()).unwrap_or_default();
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match observed.as_ref() {
            Some((seen, at)) if *seen == rv => at.elapsed(),
            _ => {
                *observed = Some((rv, Instant::now()));
                Duration::ZERO
            }
        }
    }

    fn held_spec(&self, prev: Option<&LeaseSpec>, acquiring: bool) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let prev = prev.cloned().unwrap_or_default();
        let secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(15);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(secs),
            acquire_time: if acquiring {
                Some(now.clone())
            } else {
                prev.acquire_time.clone()
            },
            renew_time: Some(now),
            lease_transitions: if acquiring {
                Some(prev.lease_transitions.unwrap_or(0) + 1)
            } else {
                prev.lease_transitions
            },
            ..prev
        }
    }

    /// One round: read the Lease and create, take, renew or wait. `Ok(true)` while we lead.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let current = self.api.get_opt(&self.config.name).await?;
        let unchanged_for = self.unchanged_for(current.as_ref());
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let written = match (
            next_step(current.as_ref(), &self.config.identity, unchanged_for),
            current,
        ) {
            (Step::Wait, _) => return Ok(false),
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        lease_transitions: Some(0),
                        ..self.held_spec(None, true)
                    }),
                };
                self.api.create(&params, &lease).await
            }
            (step, Some(mut lease)) => {
                lease.spec = Some(self.held_spec(lease.spec.as_ref(), step == Step::Acquire));
                // Carries the resourceVersion read above: a concurrent writer makes this a 409.
                self.api.replace(&self.config.name, &params, &lease).await
            }
            (_, None) => return Ok(false),
        };
        match written {
            Ok(lease) => {
                self.unchanged_for(Some(&lease));
                Ok(true)
            }
            Err(e) if is_conflict(&e) || is_already_exists(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait until this replica leads.
    pub async fn acquire(&self) -> Result<()> {
        let mut logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(
                        lease = %self.config.name,
                        identity = %self.config.identity,
                        "leading"
                    );
                    return Ok(());
                }
                Ok(false) if !logged => {
                    tracing::info!(lease = %self.config.name, "another replica leads; standing by");
                    logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.config.retry_interval).await;
        }
    }

    /// Renew while leading; returns the error that ended the leadership.
    pub async fn keep_leading(&self) -> Error {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_interval).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return Error::LeadershipLost(self.config.name.clone()),
                Err(e) => tracing::warn!(error = %e, "renewing the leader Lease"),
            }
            if renewed.elapsed() >= self.config.renew_deadline {
                return Error::LeadershipLost(self.config.name.clone());
            }
        }
    }

    /// Give the Lease up (on shutdown) so a successor need not wait for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match self.api.replace(&self.config.name, &params, &lease).await {
            Ok(_) => tracing::info!(lease = %self.config.name, "released the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the leader Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(secs),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn steps() {
        let s = Duration::from_secs;
        assert_eq!(next_step(None, "me", s(0)), Step::Create);
        assert_eq!(
            next_step(Some(&lease(Some("me"), 15)), "me", s(100)),
            Step::Renew
        );
        assert_eq!(next_step(Some(&lease(None, 15)), "me", s(0)), Step::Acquire);
        assert_eq!(
            next_step(Some(&lease(Some(""), 15)), "me", s(0)),
            Step::Acquire
        );
        assert_eq!(
            next_step(Some(&lease(Some("other"), 15)), "me", s(14)),
            Step::Wait
        );
        assert_eq!(
            next_step(Some(&lease(Some("other"), 15)), "me", s(15)),
            Step::Acquire
        );
        // A released Lease (duration 1 s) is taken over quickly.
        assert_eq!(
            next_step(Some(&lease(Some("other"), 1)), "me", s(1)),
            Step::Acquire
        );
    }

    #[test]
    fn default_timing_keeps_renewing_well_within_the_lease() {
        let c = LeaderConfig::new("ns", "me");
        assert!(c.renew_interval < c.renew_deadline && c.renew_deadline < c.lease_duration);
    }
}
