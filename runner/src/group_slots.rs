//! [`ApiGroup`]: the concurrency group of a run in a runner pod, kept by the cluster API
//! (`POST|DELETE .../concurrency` with the run's token), so the runs of a group wait for each
//! other across runner pods and API replicas. The engine looks every [`LOOK_EVERY`] while the
//! run waits (each look renews the run's lease) and renews the lease every
//! `sparkwing_core::concurrency::RENEW_EVERY_MS` while it holds the slot; a runner that dies
//! stops renewing, and its entry lapses after `LEASE_MS`. The API cancels the older runs of a
//! `cancel_in_progress` group itself. A job's own group is kept there too
//! ([`GroupSlots::for_job`]): each attempt of the job enters, renews and leaves the job's entry
//! (`"job"` in the body, `?job=` on `DELETE`).

use std::sync::Arc;
use std::time::Duration;

use sparkwing_api::wire::{GroupRequest, GroupState};
use sparkwing_api::{ApiClient, RemoteError};
use sparkwing_core::concurrency::{ConcurrencySpec, GroupView, RENEW_EVERY_MS};
use sparkwing_engine::concurrency::{GroupError, GroupSlots, Look};

/// How often a waiting run asks the API again: the longest a freed slot waits for it.
pub const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The API as the home of one run's concurrency group, with the run's own client (its token
/// and attempt).
#[derive(Debug)]
pub struct ApiGroup {
    client: ApiClient,
    namespace: String,
    name: String,
    /// The job whose own group this is (its attempts' entry); `None`: the run's own group.
    job: Option<String>,
}

impl ApiGroup {
    pub fn new(client: ApiClient, namespace: &str, name: &str) -> ApiGroup {
        ApiGroup {
            client,
            namespace: namespace.to_string(),
            name: name.to_string(),
            job: None,
        }
    }

    fn request(&self, key: &str, spec: &ConcurrencySpec, renew: bool) -> GroupRequest {
        GroupRequest {
            group: key.to_string(),
            limit: spec.limit,
            cancel_in_progress: spec.cancel_in_progress,
            renew,
            job: self.job.clone(),
        }
    }

    /// Whose entry this is, for messages: `run NS/NAME` or `job J of run NS/NAME`.
    fn who(&self) -> String {
        match &self.job {
            None => format!("run {}/{}", self.namespace, self.name),
            Some(j) => format!("job {j} of run {}/{}", self.namespace, self.name),
        }
    }
}

/// An API refusal is final (a bad group, a run that ended, a superseded attempt); no answer, or
/// the API's own trouble (5xx), may pass.
fn group_error(e: RemoteError) -> GroupError {
    let retry = e.is_unreachable() || e.status().is_some_and(|s| s >= 500);
    GroupError {
        message: e.to_string(),
        retry,
    }
}

impl GroupSlots for ApiGroup {
    fn look(
        &self,
        key: &str,
        spec: &ConcurrencySpec,
        _asked: &[String],
    ) -> Result<Look, GroupError> {
        // The API keeps who was asked to cancel, for every run of the group.
        let status = self
            .client
            .enter_group(&self.namespace, &self.name, &self.request(key, spec, false))
            .map_err(group_error)?;
        Ok(match status.state {
            GroupState::Holding => Look::Holding,
            GroupState::Waiting => Look::Waiting {
                view: GroupView {
                    limit: status.limit,
                    holders: status.holders,
                    ahead: status.ahead,
                },
                to_cancel: Vec::new(),
                cancelled: status.cancelled,
            },
        })
    }

    fn renew(&self, key: &str, spec: &ConcurrencySpec) -> Result<(), GroupError> {
        self.client
            .enter_group(&self.namespace, &self.name, &self.request(key, spec, true))
            .map(drop)
            .map_err(group_error)
    }

    fn leave(&self, key: &str) {
        if let Err(e) = self
            .client
            .leave_group(&self.namespace, &self.name, self.job.as_deref())
        {
            tracing::warn!(
                "{}: cannot leave concurrency group {key} through the API: {e}; the run's end or its lease frees the slot",
                self.who()
            );
        }
    }

    fn poll_every(&self) -> Duration {
        LOOK_EVERY
    }

    fn renew_every(&self) -> Option<Duration> {
        Some(Duration::from_millis(RENEW_EVERY_MS as u64))
    }

    fn for_job(&self, job: &str) -> Option<Arc<dyn GroupSlots>> {
        Some(Arc::new(ApiGroup {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            job: Some(job.to_string()),
        }))
    }
}
