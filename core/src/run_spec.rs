//! What a run request names besides its pipeline and args: where its project comes from
//! (`Source`), who started it and how (`TriggeredBy`), the run that awaits it (`ParentRef`), and
//! how to stop it (`CancelMode`). One definition for the PipelineRun's spec (`crds`) and the API's
//! bodies (`api::wire`), which carry them with the same JSON.

use crate::reconcile::run::CancelRequest;
use serde::{Deserialize, Serialize};

/// The source of a run's project. Exactly one field is set.
///
/// Its strings have a `maxLength` so the apiserver's cost estimate of the `self == oldSelf` rule
/// on `spec.source` stays small.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// A source archive uploaded to the Sparkwing server (what `sparkwing run --remote` does).
    Upload(UploadSource),
    /// A git repository, checked out at a revision.
    Git(GitSource),
    /// A directory already present on the runner's node or image.
    Local(LocalSource),
    /// Executed outside the cluster (`sparkwing run --profile` on a laptop) and only recorded
    /// here: the operator starts no runner; the executor reports logs, job states and the end
    /// through the Sparkwing API.
    External(ExternalSource),
}

/// A run executed outside the cluster. No fields: `external: {}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSource {}

/// An uploaded source archive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct UploadSource {
    /// Id of the upload, as the server returned it.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub id: String,
}

/// A git checkout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Clone URL (https or ssh).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 2048)))]
    pub url: String,
    /// Commit SHA, branch or tag to check out. Pin a commit SHA for a reproducible run.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub revision: String,
}

/// A local directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LocalSource {
    /// Absolute path of the project directory on the runner.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 4096)))]
    pub path: String,
}

/// How to stop a run (`spec.cancel`), after Tekton's cancel modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
// kube's `OptionalEnum` transform copies an `Option<enum>`'s type description over the field's
// own; without one, `kubectl explain` shows the field's doc.
#[cfg_attr(feature = "schema", schemars(transform = drop_description))]
pub enum CancelMode {
    /// Stop everything now; `finally` jobs do not run.
    Cancelled,
    /// Stop the running jobs, then let `finally` jobs run.
    CancelledRunFinally,
}

#[cfg(feature = "schema")]
fn drop_description(schema: &mut schemars::Schema) {
    schema.remove("description");
}

impl From<CancelMode> for CancelRequest {
    fn from(m: CancelMode) -> Self {
        match m {
            CancelMode::Cancelled => CancelRequest::Cancelled,
            CancelMode::CancelledRunFinally => CancelRequest::CancelledRunFinally,
        }
    }
}

/// Who started a run, and through what.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TriggeredBy {
    /// The user or service account that asked for the run (e.g. `alice@example.com`,
    /// `system:serviceaccount:ci:sparkwing`).
    pub principal: String,
    /// The machine the request came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path the request took.
    pub via: TriggerVia,
    /// The webhook delivery that created the run (`X-GitHub-Delivery`), for `via: webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The pull request a `pull_request` delivery started the run for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<TriggeringPullRequest>,
}

/// The pull request a run was started for: what it merges where. The commit it runs is the
/// run's source revision (the head's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TriggeringPullRequest {
    pub number: u64,
    /// The branch it merges into.
    pub base: String,
    /// The branch it merges from (of the fork, for a fork).
    pub head: String,
    /// The head is in another repository: the run got no Secrets and no warm runner unless the
    /// Pipeline allows them.
    #[serde(default)]
    pub fork: bool,
}

/// The path a run request took.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TriggerVia {
    /// The `sparkwing` CLI.
    Cli,
    /// A PipelineRun applied directly (kubectl, GitOps).
    Kubectl,
    /// A webhook (a push or pull request event).
    Webhook,
    /// A Pipeline's schedule (`spec.triggers.schedule`), fired by the operator.
    Schedule,
}

/// The run and job that awaited a run as a sub-pipeline (from the `sparkwing.dev/parent-*`
/// annotations, which the API writes from a trigger's `parent`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    pub run: String,
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}
