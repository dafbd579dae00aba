//! `PipelineRun`: one run of a Sparkwing pipeline on the cluster.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use sparkwing_core::reconcile::run::{secret_name_problems, CancelRequest, RunIntent};
use sparkwing_core::reconcile::status::RunStatus;

use crate::duration::{parse_duration, DURATION_PATTERN};

/// The smallest and largest `maxAttempts`.
pub const MAX_ATTEMPTS_RANGE: (i32, i32) = (1, 10);

/// What to run: a pipeline of a Sparkwing project, its arguments and where its source comes from,
/// plus how the run may use runners and time. The operator gives the run a runner (a Job, or a
/// warm pod of a RunnerPool) that fetches the source, builds the project's pipelines and executes
/// the named one; progress is in `status`: `phase` and the `Succeeded` condition, whose reason
/// says why the run ended (Succeeded, Failed, Cancelled, Timeout, RunnerLost, InvalidSpec, ...).
// Each `printcolumn(...)` repeats `name =`, `type_ =`, ...: not the duplicates clippy means.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sparkwing.dev",
    version = "v1alpha1",
    kind = "PipelineRun",
    plural = "pipelineruns",
    singular = "pipelinerun",
    namespaced,
    status = "RunStatus",
    shortname = "swr",
    shortname = "swrun",
    category = "sparkwing",
    derive = "PartialEq",
    doc = "A run of a Sparkwing pipeline. Create one to start a run; set spec.cancel to stop it.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded, Failed or Cancelled"
    ),
    printcolumn(
        name = "Pipeline",
        type_ = "string",
        json_path = ".spec.pipeline",
        description = "The pipeline this run executes"
    ),
    printcolumn(
        name = "Runner",
        type_ = "string",
        json_path = ".status.runner",
        description = "The runner executing the current attempt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Succeeded")].reason"#,
        description = "Reason of the Succeeded condition",
        priority = 1
    ),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts",
        description = "Runner attempts started so far",
        priority = 1
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startTime",
        description = "When the run started running",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunSpec {
    /// Name of the pipeline to run, as `sparkwing pipelines` lists it for the project in `source`.
    #[schemars(length(min = 1))]
    pub pipeline: String,

    /// Pipeline arguments by name (values are strings; the pipeline parses them like command-line
    /// `--name value` arguments).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,

    /// Where the project's source comes from: exactly one of `upload`, `git`, `local` or
    /// `external` (executed outside the cluster: no runner is started).
    /// Immutable: to run other source, create another PipelineRun.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("source is immutable; create a new PipelineRun to run other source"))]
    pub source: Source,

    /// Name of the RunnerPool (in this namespace) to claim a warm runner from. When unset, or when
    /// the pool has no idle runner, the operator starts a fresh runner Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_pool: Option<String>,

    /// Wall-clock limit of the run, counted from when it started running (`status.startTime`),
    /// like `90s`, `30m`, `1h` or `1h30m`. When exceeded the runner is stopped and the run fails
    /// with reason `Timeout`. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub timeout: Option<String>,

    /// Set to stop the run. `Cancelled` stops everything now and skips `finally` jobs;
    /// `CancelledRunFinally` stops the running jobs, then lets `finally` jobs run. The run ends in
    /// phase `Cancelled` either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelMode>,

    /// Delete the PipelineRun this many seconds after it finished (succeeded, failed or was
    /// cancelled). Unset: keep it until it is deleted by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// How many runners may be started for this run. A runner that is lost (deleted, evicted,
    /// node gone) is replaced until this many were started; a pipeline that fails is not retried.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: i32,

    /// Who started the run, and how. Set by the `sparkwing` CLI and the webhook receiver; shown
    /// in the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<TriggeredBy>,

    /// Names of Secrets (in this namespace) whose keys the runner gets as environment variables
    /// (`envFrom`); a pipeline reads them with `Job::secret(NAME)`. Only the Pipeline the run was
    /// created for grants Secrets (its `spec.secrets`): a run asking for another one, or for one
    /// that does not exist, fails before its runner starts (`SecretNotAllowed`,
    /// `SecretNotFound`). A run with secrets never claims a warm runner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// `maxAttempts` when unset.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;

fn default_max_attempts() -> i32 {
    DEFAULT_MAX_ATTEMPTS
}

// The spec's source, trigger, parent and cancel mode are the API's too: defined once, in core.
pub use sparkwing_core::run_spec::{
    CancelMode, ExternalSource, GitSource, LocalSource, ParentRef, Source, TriggerVia, TriggeredBy,
    TriggeringPullRequest, UploadSource,
};

/// Annotation naming the run that started this one as a sub-pipeline: a local run id
/// (`run-20261127-163356-1a2b3c`) or `namespace/name` on a cluster (`docs/subpipelines.md`).
pub const PARENT_RUN_ANNOTATION: &str = "sparkwing.dev/parent-run";
/// Annotation naming the parent run's job that awaits this run.
pub const PARENT_JOB_ANNOTATION: &str = "sparkwing.dev/parent-job";
/// Annotation naming the machine the parent run ran on, when the trigger said.
pub const PARENT_HOST_ANNOTATION: &str = "sparkwing.dev/parent-host";

/// Annotation with the moment the API created the run, to the millisecond (RFC 3339): the
/// apiserver's `creationTimestamp` has whole seconds, and two runs of one Pipeline created in the
/// same second must still order as they were created (`lastRun`, `BranchesInSync`).
pub const CREATED_AT_ANNOTATION: &str = "sparkwing.dev/created-at";

impl PipelineRun {
    /// The order runs were created in, oldest first: `creationTimestamp` (whole seconds; unset
    /// sorts first), then the `sparkwing.dev/created-at` annotation within that second (runs
    /// without it sort first), then the name.
    pub fn creation_order(&self) -> (i64, i64, String) {
        let created = self
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond());
        let stamped = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CREATED_AT_ANNOTATION))
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_millisecond());
        (
            created,
            stamped,
            self.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// Record `at` (Unix ms) as the `sparkwing.dev/created-at` annotation.
    pub fn stamp_created_at(&mut self, at_ms: i64) {
        if let Ok(t) = k8s_openapi::jiff::Timestamp::from_millisecond(at_ms) {
            self.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(CREATED_AT_ANNOTATION.into(), format!("{t:.3}"));
        }
    }

    /// The parent this run records, if both its run and job annotations are set.
    pub fn parent(&self) -> Option<ParentRef> {
        let a = self.metadata.annotations.as_ref()?;
        Some(ParentRef {
            run: a.get(PARENT_RUN_ANNOTATION)?.clone(),
            job: a.get(PARENT_JOB_ANNOTATION)?.clone(),
            host: a.get(PARENT_HOST_ANNOTATION).cloned(),
        })
    }

    /// Record `parent` as the `sparkwing.dev/parent-*` annotations.
    pub fn set_parent(&mut self, parent: &ParentRef) {
        let a = self.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.insert(PARENT_RUN_ANNOTATION.into(), parent.run.clone());
        a.insert(PARENT_JOB_ANNOTATION.into(), parent.job.clone());
        match &parent.host {
            Some(h) => a.insert(PARENT_HOST_ANNOTATION.into(), h.clone()),
            None => a.remove(PARENT_HOST_ANNOTATION),
        };
    }

    /// What the reconcile needs from the spec. A spec the schema should have refused (an old
    /// object, or one written without validation) does not fail here: `invalid` carries the
    /// problem, so the run fails with reason `InvalidSpec` instead of the operator crash-looping.
    pub fn intent(&self) -> RunIntent {
        let spec = &self.spec;
        let mut problems: Vec<String> = Vec::new();
        if spec.pipeline.trim().is_empty() {
            problems.push("spec.pipeline must not be empty".into());
        }
        let timeout_ms = take(&mut problems, timeout_ms(spec.timeout.as_deref()));
        let max_attempts = take(&mut problems, max_attempts(Some(spec.max_attempts))).unwrap_or(1);
        let ttl_after_finished_ms = take(
            &mut problems,
            ttl_after_finished_ms(spec.ttl_seconds_after_finished),
        );
        problems.extend(secret_name_problems("spec.secrets", &spec.secrets));
        if let Some(problem) = source_problem(&spec.source) {
            problems.push(problem);
        }
        RunIntent {
            generation: self.metadata.generation.unwrap_or(0),
            timeout_ms,
            cancel: spec.cancel.map(CancelRequest::from).unwrap_or_default(),
            max_attempts,
            ttl_after_finished_ms,
            invalid: (!problems.is_empty()).then(|| problems.join("; ")),
            external: matches!(spec.source, Source::External(_)),
            secrets: spec.secrets.clone(),
            secret_access: None,
            // An unreadable record is no park: the run is reconciled as any other.
            parked: self
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(sparkwing_core::gate::PARKED_ANNOTATION))
                .and_then(|a| sparkwing_core::gate::Parked::parse(a).ok()),
            // Read from the state store by the operator while the run is parked.
            decided_gates: Vec::new(),
        }
    }
}

fn take<T: Default>(problems: &mut Vec<String>, r: Result<T, String>) -> T {
    r.unwrap_or_else(|p| {
        problems.push(p);
        T::default()
    })
}

/// `spec.timeout` in milliseconds (`None`: no limit), or the problem with it.
pub fn timeout_ms(timeout: Option<&str>) -> Result<Option<u64>, String> {
    match timeout.map(parse_duration) {
        None => Ok(None),
        Some(Ok(0)) => Err("spec.timeout must be greater than zero; omit it for no limit".into()),
        Some(Ok(ms)) => Ok(Some(ms)),
        Some(Err(e)) => Err(format!("spec.timeout: {e}")),
    }
}

/// `spec.maxAttempts` (`None`: unset), or the problem with it.
pub fn max_attempts(n: Option<i32>) -> Result<Option<u32>, String> {
    let (lo, hi) = MAX_ATTEMPTS_RANGE;
    match n {
        None => Ok(None),
        Some(n) if (lo..=hi).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(format!(
            "spec.maxAttempts must be between {lo} and {hi}, got {n}"
        )),
    }
}

/// `spec.ttlSecondsAfterFinished` in milliseconds, or the problem with it.
pub fn ttl_after_finished_ms(secs: Option<i32>) -> Result<Option<u64>, String> {
    match secs {
        None => Ok(None),
        Some(s) if s >= 0 => Ok(Some(s as u64 * 1000)),
        Some(s) => Err(format!(
            "spec.ttlSecondsAfterFinished must not be negative, got {s}"
        )),
    }
}

fn source_problem(source: &Source) -> Option<String> {
    match source {
        Source::Upload(u) if u.id.is_empty() => Some("spec.source.upload.id must not be empty"),
        Source::Git(g) if g.url.is_empty() => Some("spec.source.git.url must not be empty"),
        Source::Git(g) if g.revision.is_empty() => {
            Some("spec.source.git.revision must not be empty")
        }
        Source::Local(l) if l.path.is_empty() => Some("spec.source.local.path must not be empty"),
        _ => None,
    }
    .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_of_a_plain_run() {
        let run = PipelineRun::test("r1");
        let i = run.intent();
        assert_eq!(
            i,
            RunIntent {
                generation: 1,
                timeout_ms: None,
                cancel: CancelRequest::None,
                max_attempts: 3,
                ttl_after_finished_ms: None,
                invalid: None,
                external: false,
                secrets: vec![],
                secret_access: None,
                parked: None,
                decided_gates: vec![],
            }
        );
        let external = PipelineRun::test("r1")
            .with_source(Source::External(ExternalSource {}))
            .intent();
        assert!(external.external);
        assert_eq!(external.invalid, None);
        let v = serde_json::to_value(Source::External(ExternalSource {})).unwrap();
        assert_eq!(v, serde_json::json!({"external": {}}));
    }

    #[test]
    fn intent_maps_every_field() {
        let run = PipelineRun::test("r1")
            .with_generation(4)
            .with_timeout("1h30m")
            .cancelled(CancelMode::CancelledRunFinally)
            .with_max_attempts(5)
            .with_ttl_seconds(600);
        let i = run.intent();
        assert_eq!(i.generation, 4);
        assert_eq!(i.timeout_ms, Some(5_400_000));
        assert_eq!(i.cancel, CancelRequest::CancelledRunFinally);
        assert_eq!(i.max_attempts, 5);
        assert_eq!(i.ttl_after_finished_ms, Some(600_000));
        assert_eq!(i.invalid, None);
        let i = PipelineRun::test("r1")
            .cancelled(CancelMode::Cancelled)
            .intent();
        assert_eq!(i.cancel, CancelRequest::Cancelled);
        assert_eq!(
            PipelineRun::test("r1")
                .with_ttl_seconds(0)
                .intent()
                .ttl_after_finished_ms,
            Some(0)
        );
    }

    #[test]
    fn invalid_specs_become_invalid_intent_not_errors() {
        let cases: Vec<(PipelineRun, &str)> = vec![
            (
                PipelineRun::test("r").with_pipeline(""),
                "spec.pipeline must not be empty",
            ),
            (
                PipelineRun::test("r").with_timeout("30"),
                "spec.timeout: invalid duration",
            ),
            (
                PipelineRun::test("r").with_timeout("0s"),
                "spec.timeout must be greater than zero",
            ),
            (
                PipelineRun::test("r").with_max_attempts(0),
                "spec.maxAttempts must be between 1 and 10, got 0",
            ),
            (
                PipelineRun::test("r").with_max_attempts(11),
                "spec.maxAttempts must be between 1 and 10, got 11",
            ),
            (
                PipelineRun::test("r").with_ttl_seconds(-1),
                "spec.ttlSecondsAfterFinished must not be negative",
            ),
            (
                PipelineRun::test("r").with_source(Source::Git(GitSource {
                    url: "https://example.com/repo.git".into(),
                    revision: String::new(),
                })),
                "spec.source.git.revision must not be empty",
            ),
        ];
        for (run, want) in cases {
            let invalid = run.intent().invalid;
            assert!(
                invalid.as_deref().is_some_and(|m| m.contains(want)),
                "want {want:?}, got {invalid:?}"
            );
        }
        // Secret names are checked too.
        let i = PipelineRun::test("r")
            .with_secrets(&["db", "Not_A_Name"])
            .intent();
        assert!(
            i.invalid
                .as_deref()
                .is_some_and(|m| m.contains("spec.secrets: \"Not_A_Name\" is not a Secret name")),
            "{:?}",
            i.invalid
        );
        // Every problem is reported at once.
        let i = PipelineRun::test("r")
            .with_pipeline("")
            .with_timeout("soon")
            .intent();
        let msg = i.invalid.unwrap();
        assert!(msg.contains("pipeline") && msg.contains("timeout"), "{msg}");
    }

    #[test]
    fn parent_round_trips_through_annotations() {
        let mut run = PipelineRun::test("r");
        assert_eq!(run.parent(), None);
        let p = ParentRef {
            run: "run-20261127-163356-1a2b3c".into(),
            job: "deploy".into(),
            host: Some("laptop".into()),
        };
        run.set_parent(&p);
        assert_eq!(run.parent(), Some(p));
        let a = run.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[PARENT_JOB_ANNOTATION], "deploy");
        // A job without a run is no parent.
        let mut half = PipelineRun::test("r");
        half.metadata.annotations = Some(BTreeMap::from([(
            PARENT_JOB_ANNOTATION.to_string(),
            "deploy".to_string(),
        )]));
        assert_eq!(half.parent(), None);
    }

    #[test]
    fn spec_serializes_in_camel_case_with_defaults() {
        let spec: PipelineRunSpec = serde_json::from_value(serde_json::json!({
            "pipeline": "build",
            "source": {"git": {"url": "https://example.com/r.git", "revision": "main"}},
            "cancel": "CancelledRunFinally",
            "ttlSecondsAfterFinished": 60,
            "triggeredBy": {"principal": "alice", "via": "kubectl"}
        }))
        .unwrap();
        assert_eq!(spec.max_attempts, 3);
        assert_eq!(spec.cancel, Some(CancelMode::CancelledRunFinally));
        assert_eq!(spec.triggered_by.as_ref().unwrap().via, TriggerVia::Kubectl);
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["source"]["git"]["revision"], "main");
        assert_eq!(back["maxAttempts"], 3);
        assert!(back.get("args").is_none());
        // No secrets: the field is left out, so existing objects read back unchanged.
        assert!(back.get("secrets").is_none());
        let with: PipelineRunSpec = serde_json::from_value(serde_json::json!({
            "pipeline": "build",
            "source": {"local": {"path": "/src"}},
            "secrets": ["db", "deploy-key"]
        }))
        .unwrap();
        assert_eq!(with.secrets, ["db", "deploy-key"]);
        assert_eq!(
            serde_json::to_value(&with).unwrap()["secrets"][1],
            "deploy-key"
        );
        let run = PipelineRun::test("r").with_secrets(&["db"]);
        assert_eq!(run.intent().secrets, ["db"]);
        assert_eq!(run.intent().secret_access, None);
        assert!(
            serde_json::from_value::<PipelineRunSpec>(serde_json::json!({
                "pipeline": "build",
                "source": {"local": {"path": "/src"}},
                "cancel": "Stop"
            }))
            .is_err()
        );
    }
}
