//! Names the operator writes and the runner reads: the claim annotations of a warm pod, the
//! downward-API files it reads them from, the runner's environment, the run annotations the API
//! writes. One definition each, so the two sides cannot drift (`docs/operator.md`, "The claim
//! contract"; `docs/runner.md`).

/// Annotation: the exact name of the run a Job or pod runs (labels may be shortened).
pub const ANNOTATION_RUN: &str = "sparkwing.dev/run";
/// Annotation: the attempt a claimed warm pod runs.
pub const ANNOTATION_ATTEMPT: &str = "sparkwing.dev/attempt";

/// Annotation on a webhook run: its Pipeline's push branches agree with `on.push.branches` in
/// the committed `sparkwing.yaml` (`"true"` / `"false"`), as its runner reported (`PUT
/// .../branch-check`). The Pipeline controller turns the newest run's into `BranchesInSync`.
pub const BRANCHES_IN_SYNC_ANNOTATION: &str = "sparkwing.dev/branches-in-sync";
/// Annotation: when they differ, the runner's message naming both lists (absent when in sync).
pub const BRANCH_DRIFT_ANNOTATION: &str = "sparkwing.dev/branch-drift";

/// Annotation on a cluster run cancelled by a newer run of its concurrency group
/// (`cancel_in_progress`): `concurrency group KEY (run NS/NAME)`, the newer run.
pub const CANCELLED_BY_ANNOTATION: &str = "sparkwing.dev/cancelled-by";

/// Annotation on a cluster run made by a re-run (`POST /api/v1/runs/{ns}/{name}/rerun`):
/// `NS/NAME`, the run it runs again. Run views show it as `rerunOf`.
pub const RERUN_OF_ANNOTATION: &str = "sparkwing.dev/rerun-of";

/// `"true"` on a PipelineRun triggered with `--sw-no-cache` (`noCache` in the trigger): its
/// runner runs every memoized job, as `sparkwing run --sw-no-cache` does.
pub const NO_CACHE_ANNOTATION: &str = "sparkwing.dev/no-cache";

/// The files of a warm pod's `downwardAPI` volume: its annotations and labels in the kubelet's
/// format (`key="value"` lines, the value quoted as a Go string), rewritten when they change.
pub const PODINFO_ANNOTATIONS: &str = "annotations";
pub const PODINFO_LABELS: &str = "labels";

/// Request header: the runner attempt a call comes from. The API refuses (409 `superseded`) a
/// call whose attempt is older than the run's current one, so a lost runner that is still
/// stopping cannot write over the attempt that replaced it (`docs/api.md`, "Attempt fencing").
pub const ATTEMPT_HEADER: &str = "Sparkwing-Attempt";

/// The key of the token in a run's runner-token Secret.
pub const RUNNER_TOKEN_KEY: &str = "token";

/// Environment variable names of the runner contract.
pub mod env {
    pub const RUN: &str = "SPARKWING_RUN";
    pub const NAMESPACE: &str = "SPARKWING_NAMESPACE";
    pub const ATTEMPT: &str = "SPARKWING_ATTEMPT";
    pub const POOL: &str = "SPARKWING_POOL";
    pub const SKIP_BOX_SLOTS: &str = "SPARKWING_SKIP_BOX_SLOTS";
    pub const HOME: &str = "HOME";
    pub const SPARKWING_HOME: &str = "SPARKWING_HOME";
    pub const POD_NAME: &str = "POD_NAME";
    /// The Sparkwing API the runner talks to (`--runner-api-url`).
    pub const API_URL: &str = "SPARKWING_API_URL";
    /// The run-scoped token, from the Secret the API creates at trigger.
    pub const API_TOKEN: &str = "SPARKWING_API_TOKEN";
    /// A warm runner's pool credential (`pool:<ns>/<pool>`), exchanged for a run's token once
    /// the pod is claimed.
    pub const POOL_TOKEN: &str = "SPARKWING_POOL_TOKEN";
    /// Where a warm runner reads its own pod's `annotations` and `labels` (downward API).
    pub const PODINFO_DIR: &str = "SPARKWING_PODINFO_DIR";
    /// A job pod's item, when its job was expanded from a fan-out or matrix (`test[3]`).
    pub const JOB_ITEM: &str = "SPARKWING_JOB_ITEM";
}
