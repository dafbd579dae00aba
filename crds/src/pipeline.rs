//! `Pipeline`: a pipeline of a git repository that the cluster runs on its own — today when a
//! push webhook names the repository and a branch the triggers match.
//!
//! The CR decides WHEN a run starts (triggers) and WHERE (runner pool, secrets); the
//! repository's `.sparkwing/sparkwing.yaml` at the pushed commit decides WHAT runs (the pipeline
//! definition, its jobs and argument defaults).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use sparkwing_core::reconcile::run::secret_name_problems;
use sparkwing_core::reconcile::status::{Condition, RunPhase};
use sparkwing_core::schedule::{CronSchedule, MissedPolicy, ScheduleError};
use sparkwing_core::time::Time;

use crate::duration::DURATION_PATTERN;
use crate::pipeline_run::{max_attempts, timeout_ms, ttl_after_finished_ms};

/// The label the webhook receiver puts on every PipelineRun it creates for a Pipeline: the
/// Pipeline's name (in the run's namespace). The operator keeps `status.lastRun` from it.
pub const PIPELINE_LABEL: &str = "sparkwing.dev/pipeline";

/// Annotation on a webhook-created PipelineRun: the Pipeline's push branch globs, comma-separated,
/// so the runner can warn when the committed `sparkwing.yaml` says otherwise.
pub const PUSH_BRANCHES_ANNOTATION: &str = "sparkwing.dev/push-branches";

/// A pipeline of a git repository, run by the cluster when a push to a matching branch arrives
/// at the webhook endpoint (`POST /webhooks/github`). Each run is a PipelineRun labelled
/// `sparkwing.dev/pipeline=<this name>` whose source is the pushed commit.
// Each `printcolumn(...)` repeats `name =`, `type_ =`, ...: not the duplicates clippy means.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "sparkwing.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    plural = "pipelines",
    singular = "pipeline",
    namespaced,
    status = "PipelineStatus",
    shortname = "swpl",
    category = "sparkwing",
    derive = "PartialEq",
    doc = "A pipeline of a git repository that push webhooks and schedules start on the cluster.",
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repository",
        description = "The git repository"
    ),
    printcolumn(
        name = "Pipeline",
        type_ = "string",
        json_path = ".spec.pipeline",
        description = "The pipeline's name in the repository's sparkwing.yaml"
    ),
    printcolumn(
        name = "Last Run",
        type_ = "string",
        json_path = ".status.lastRun.name",
        description = "The newest PipelineRun of this Pipeline"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.lastRun.phase",
        description = "The phase of the newest run"
    ),
    printcolumn(
        name = "Next Run",
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        description = "The next slot of its schedules (spec.triggers.schedule)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Pool",
        type_ = "string",
        json_path = ".spec.runnerPool",
        description = "The RunnerPool of its runs",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// The git repository, as a clone URL (`https://github.com/acme/app.git`, `git@host:acme/app`,
    /// `git://...`). A push event matches when any of its repository URLs names the same host and
    /// path (scheme, user, a `.git` suffix and a trailing slash do not matter).
    #[schemars(length(min = 1, max = 2048))]
    pub repository: String,

    /// The pipeline to run: its `name` in the repository's `.sparkwing/sparkwing.yaml`.
    #[schemars(length(min = 1, max = 253))]
    pub pipeline: String,

    /// The directory holding `.sparkwing/`, relative to the repository root. Unset: the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,

    /// When runs start.
    #[serde(default)]
    pub triggers: PipelineTriggers,

    /// The RunnerPool (in this namespace) of its runs. Unset: a fresh runner Job per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_pool: Option<String>,

    /// Names of the Secrets (in this namespace) its runs get: each run's `spec.secrets`, so its
    /// runner has their keys as environment variables. A run asking for a Secret its Pipeline
    /// does not list here fails with `SecretNotAllowed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,

    /// Arguments of its runs by name (each run's `spec.args`), over the defaults of the committed
    /// `sparkwing.yaml`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,

    /// Wall-clock limit of each run (its `spec.timeout`), like `90s`, `30m`, `1h` or `1h30m`.
    /// Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub timeout: Option<String>,

    /// Delete each run this many seconds after it finished (its `spec.ttlSecondsAfterFinished`).
    /// Unset: runs are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Runners that may be started for each run (its `spec.maxAttempts`, 1 to 10). Unset: the
    /// PipelineRun's default, 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: Option<i32>,

    /// GitHub: where the credentials for posting commit statuses are. Unset: runs post none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubSettings>,

    /// Principals (as the API's tokens name them, e.g. `ana@example.com`, `team-leads`) who may
    /// approve or reject the approval gates of this Pipeline's runs without the scope
    /// `approvals:write`: any token of a listed principal may decide them (through the API or
    /// the cluster dashboard). Compared exactly. Empty: only `approvals:write` decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 256)))]
    pub approvers: Vec<String>,
}

/// What starts a run of the pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineTriggers {
    /// A push to a branch. Unset: pushes start nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushTrigger>,
    /// A pull request opened, pushed to (`synchronize`) or reopened. Unset: pull requests start
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestTrigger>,
    /// Cron schedules: each starts a run of a branch's head at every slot of its cron
    /// expression. Empty: no scheduled runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub schedule: Vec<ScheduleTrigger>,
}

/// Runs at the slots of a cron expression in a time zone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTrigger {
    /// Five-field cron expression (minute hour day-of-month month day-of-week, as Vixie cron;
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` too), e.g. `0 3 * * *`.
    #[schemars(length(min = 1, max = 256))]
    pub cron: String,
    /// The IANA time zone of the expression's wall clock (`Europe/Berlin`). Unset: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// The branch whose head each run checks out.
    #[schemars(length(min = 1, max = 256))]
    pub branch: String,
    /// What to do with a slot the operator finds more than a minute late (it was down): fire it
    /// once (`FireOnce`, the default; only the latest of several missed slots) or skip it
    /// (`Skip`, recorded in status).
    #[serde(default)]
    pub missed: MissedSlots,
}

/// What a schedule does with a missed slot.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum MissedSlots {
    /// Fire the latest missed slot once, late.
    #[default]
    FireOnce,
    /// Fire nothing; record the slot as skipped.
    Skip,
}

impl From<MissedSlots> for MissedPolicy {
    fn from(m: MissedSlots) -> Self {
        match m {
            MissedSlots::FireOnce => MissedPolicy::FireOnce,
            MissedSlots::Skip => MissedPolicy::Skip,
        }
    }
}

impl ScheduleTrigger {
    /// The parsed cron expression in its zone.
    pub fn parsed(&self) -> Result<CronSchedule, ScheduleError> {
        CronSchedule::parse(&self.cron, self.time_zone.as_deref())
    }

    /// Whether `status` is this schedule's (same cron, zone and branch): a status entry of an
    /// edited schedule belongs to no current one, and the edited one counts anew.
    pub fn owns(&self, status: &ScheduleStatus) -> bool {
        status.cron == self.cron
            && status.time_zone == self.time_zone
            && status.branch == self.branch
    }
}

/// Runs on pushes to matching branches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushTrigger {
    /// Branch globs (`main`, `release/*`, `feature/**`): `*` matches within one `/`-separated
    /// segment, `**` across segments, `?` one character. Empty: every branch.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Path globs: a push starts a run only when one of its changed files matches one (and no
    /// `pathsIgnore` glob). Empty: any file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Path globs of files that do not count: a push whose changed files all match one starts
    /// nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths_ignore: Vec<String>,
}

/// Runs on pull requests into matching base branches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestTrigger {
    /// Globs of the base branch (the branch the pull request merges into), as for pushes.
    /// Empty: every base branch.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Path globs, as for pushes, over the pull request's changed files (when the API can list
    /// them; see docs/webhooks.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Path globs of files that do not count, as for pushes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths_ignore: Vec<String>,
    /// A newer delivery for the same pull request cancels this Pipeline's runs of it that are
    /// still going.
    #[serde(default)]
    pub cancel_in_progress: bool,
    /// Runs of pull requests from forks get the Pipeline's Secrets and its warm runner pool.
    /// Unset: they get neither (a fork's code is untrusted: it would read the Secrets, or leave
    /// something behind in a warm runner that the next run inherits).
    #[serde(default)]
    pub allow_forks: bool,
}

/// How the operator reaches GitHub for this Pipeline's commit statuses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitHubSettings {
    /// The Secret (in this namespace) holding the credentials: a `token`, or a GitHub App's
    /// `appId`, `privateKey` (PEM) and `installationId`. Unset: no commit statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub secret_ref: Option<String>,
}

/// What the operator observed of the pipeline's runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// The newest PipelineRun labelled with this Pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    /// The generation of the spec this status was written for.
    #[serde(default)]
    pub observed_generation: i64,
    /// `Ready`: whether the spec is usable.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The earliest next slot of its schedules (`kubectl get swpl` shows it as NEXT RUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub next_schedule_time: Option<Time>,
    /// One entry per schedule of `spec.triggers.schedule`, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleStatus>,
}

/// What the operator did with one schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The schedule's cron expression, zone and branch: which schedule this entry is.
    pub cron: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    pub branch: String,
    /// Since when its slots count: the Pipeline's creation for a schedule it was created with,
    /// else when the operator first saw the schedule. Earlier slots never fire.
    #[schemars(with = "String")]
    pub since: Time,
    /// The last slot fired: its run exists (its name derives from the slot, so the slot never
    /// fires twice, even across operator restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_scheduled_slot: Option<Time>,
    /// The run of `lastScheduledSlot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_run: Option<String>,
    /// The last slot skipped (`missed: Skip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_skipped_slot: Option<Time>,
    /// Its next slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub next_schedule_time: Option<Time>,
}

/// A run of the pipeline, as `status.lastRun` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// The PipelineRun's name (in the Pipeline's namespace).
    pub name: String,
    /// Its phase.
    pub phase: RunPhase,
    /// When it started running; unset while it waits for a runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub start_time: Option<Time>,
}

impl PipelineSpec {
    /// The push branch globs (`None`: no push trigger).
    pub fn push_branches(&self) -> Option<&[String]> {
        self.triggers.push.as_ref().map(|p| p.branches.as_slice())
    }

    /// The Secret with the GitHub credentials (`spec.github.secretRef`).
    pub fn github_secret(&self) -> Option<&str> {
        self.github
            .as_ref()
            .and_then(|g| g.secret_ref.as_deref())
            .filter(|s| !s.is_empty())
    }

    /// Problems a schema cannot catch, for the `Ready` condition (empty: usable).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.repository.trim().is_empty() {
            out.push("spec.repository must not be empty".to_string());
        }
        if self.pipeline.trim().is_empty() {
            out.push("spec.pipeline must not be empty".to_string());
        }
        if let Some(p) = &self.path {
            if p.starts_with('/') || p.split('/').any(|c| c == "..") {
                out.push(format!(
                    "spec.path {p:?} must be relative to the repository root, without '..'"
                ));
            }
        }
        // The run settings mean what they mean on a PipelineRun, and are checked the same way.
        let settings = [
            timeout_ms(self.timeout.as_deref()).err(),
            max_attempts(self.max_attempts).err(),
            ttl_after_finished_ms(self.ttl_seconds_after_finished).err(),
        ];
        out.extend(settings.into_iter().flatten());
        out.extend(secret_name_problems("spec.secrets", &self.secrets));
        if self.args.keys().any(|k| k.trim().is_empty()) {
            out.push("spec.args: an argument name must not be empty".to_string());
        }
        if let Some(secret) = self.github_secret() {
            out.extend(secret_name_problems(
                "spec.github.secretRef",
                &[secret.to_string()],
            ));
        }
        for (i, a) in self.approvers.iter().enumerate() {
            if a.trim().is_empty() || a.trim() != a {
                out.push(format!(
                    "spec.approvers[{i}] {a:?} must be a principal as tokens name it: not empty, without leading or trailing spaces"
                ));
            }
        }
        for (i, s) in self.triggers.schedule.iter().enumerate() {
            if let Err(e) = s.parsed() {
                out.push(format!("spec.triggers.schedule[{i}]: {e}"));
            }
            if s.branch.trim().is_empty() {
                out.push(format!(
                    "spec.triggers.schedule[{i}].branch must not be empty"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_in_camel_case() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "repository": "https://example.com/acme/app.git",
            "pipeline": "build",
            "triggers": {"push": {"branches": ["main", "release/*"]}},
            "runnerPool": "warm",
            "secrets": ["deploy-key"]
        }))
        .unwrap();
        assert_eq!(
            spec.push_branches().unwrap(),
            &["main".to_string(), "release/*".to_string()]
        );
        assert_eq!(spec.runner_pool.as_deref(), Some("warm"));
        assert!(spec.problems().is_empty());
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["runnerPool"], "warm");
        assert!(back.get("path").is_none());
        let bare: PipelineSpec = serde_json::from_value(serde_json::json!({
            "repository": "r", "pipeline": "p"
        }))
        .unwrap();
        assert_eq!(bare.push_branches(), None);
        let bad = PipelineSpec {
            path: Some("../x".into()),
            ..bare
        };
        assert_eq!(bad.problems().len(), 1);
    }

    #[test]
    fn run_settings_are_checked_like_a_pipeline_runs() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "repository": "r", "pipeline": "p",
            "timeout": "1h30m", "ttlSecondsAfterFinished": 600, "maxAttempts": 2,
            "args": {"target": "release"}, "secrets": ["deploy-key"]
        }))
        .unwrap();
        assert!(spec.problems().is_empty(), "{:?}", spec.problems());
        assert_eq!(spec.max_attempts, Some(2));
        assert_eq!(spec.args["target"], "release");
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["ttlSecondsAfterFinished"], 600);
        assert_eq!(back["timeout"], "1h30m");
        let bad = PipelineSpec {
            timeout: Some("30".into()),
            max_attempts: Some(11),
            ttl_seconds_after_finished: Some(-1),
            secrets: vec!["Deploy_Key".into()],
            ..spec
        };
        let problems = bad.problems().join("; ");
        for want in [
            "spec.timeout: invalid duration",
            "spec.maxAttempts must be between 1 and 10, got 11",
            "spec.ttlSecondsAfterFinished must not be negative, got -1",
            "spec.secrets: \"Deploy_Key\" is not a Secret name",
        ] {
            assert!(problems.contains(want), "want {want:?} in {problems}");
        }
        let zero: PipelineSpec = serde_json::from_value(serde_json::json!({
            "repository": "r", "pipeline": "p", "timeout": "0s"
        }))
        .unwrap();
        assert_eq!(zero.problems().len(), 1);
    }

    #[test]
    fn schedules_parse_with_defaults_and_bad_ones_are_problems() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "repository": "r", "pipeline": "p",
            "triggers": {"schedule": [
                {"cron": "0 3 * * *", "timeZone": "Europe/Berlin", "branch": "main"},
                {"cron": "@hourly", "branch": "release", "missed": "Skip"}
            ]}
        }))
        .unwrap();
        assert!(spec.problems().is_empty(), "{:?}", spec.problems());
        let s = &spec.triggers.schedule;
        assert_eq!(s[0].missed, MissedSlots::FireOnce);
        assert_eq!(s[1].missed, MissedSlots::Skip);
        assert_eq!(s[1].time_zone, None);
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["triggers"]["schedule"][0]["timeZone"], "Europe/Berlin");
        assert_eq!(back["triggers"]["schedule"][0]["missed"], "FireOnce");
        let bad: PipelineSpec = serde_json::from_value(serde_json::json!({
            "repository": "r", "pipeline": "p",
            "triggers": {"schedule": [
                {"cron": "0 25 * * *", "branch": "main"},
                {"cron": "0 3 * * *", "timeZone": "Europe/Nowhere", "branch": " "}
            ]}
        }))
        .unwrap();
        let problems = bad.problems().join("; ");
        for want in [
            "spec.triggers.schedule[0]: cron expression \"0 25 * * *\" is invalid",
            "spec.triggers.schedule[1]: time zone \"Europe/Nowhere\" is not in the time zone database",
            "spec.triggers.schedule[1].branch must not be empty",
        ] {
            assert!(problems.contains(want), "want {want:?} in {problems}");
        }
    }

    #[test]
    fn approvers_round_trip_and_blank_ones_are_problems() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "repository": "r", "pipeline": "p",
            "approvers": ["ana@example.com", "team-leads"]
        }))
        .unwrap();
        assert!(spec.problems().is_empty(), "{:?}", spec.problems());
        assert_eq!(spec.approvers, ["ana@example.com", "team-leads"]);
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["approvers"][1], "team-leads");
        let none = PipelineSpec {
            approvers: Vec::new(),
            ..spec.clone()
        };
        assert!(serde_json::to_value(&none)
            .unwrap()
            .get("approvers")
            .is_none());
        let bad = PipelineSpec {
            approvers: vec!["ana".into(), " ".into(), "bo ".into()],
            ..spec
        };
        let problems = bad.problems().join("; ");
        assert_eq!(bad.problems().len(), 2, "{problems}");
        assert!(
            problems.contains("spec.approvers[1] \" \" must be a principal as tokens name it"),
            "{problems}"
        );
        assert!(problems.contains("spec.approvers[2] \"bo \""), "{problems}");
    }

    #[test]
    fn pull_request_and_path_triggers_and_github_round_trip() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "repository": "r", "pipeline": "p",
            "triggers": {
                "push": {"branches": ["main"], "paths": ["src/**"], "pathsIgnore": ["**/*.md"]},
                "pullRequest": {"branches": ["main"], "cancelInProgress": true}
            },
            "github": {"secretRef": "github-statuses"}
        }))
        .unwrap();
        assert!(spec.problems().is_empty(), "{:?}", spec.problems());
        let pr = spec.triggers.pull_request.as_ref().unwrap();
        assert!(pr.cancel_in_progress && !pr.allow_forks);
        assert!(pr.paths.is_empty());
        assert_eq!(spec.github_secret(), Some("github-statuses"));
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["triggers"]["push"]["pathsIgnore"][0], "**/*.md");
        assert_eq!(back["triggers"]["pullRequest"]["allowForks"], false);
        assert!(back["triggers"]["pullRequest"].get("paths").is_none());
        let bad = PipelineSpec {
            github: Some(GitHubSettings {
                secret_ref: Some("Not_A_Name".into()),
            }),
            ..spec
        };
        assert!(bad.problems().join("; ").contains("spec.github.secretRef"));
    }
}
