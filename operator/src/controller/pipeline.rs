//! The Pipeline controller: keeps `status.lastRun` (the newest PipelineRun labelled
//! `sparkwing.dev/pipeline=<name>`, its phase and start), `observedGeneration`, the `Ready`
//! condition and `BranchesInSync` (from the newest run whose runner reported its branch check),
//! and fires its schedules (`pipeline_schedule`: the slot's run, then `status.schedules`). Woken
//! by the Pipeline, by changes of its runs and at its next schedule slot; the status is computed
//! by the pure [`desired_status`] and [`pipeline_schedule::plan`] and applied (server-side, with
//! apiVersion and kind) only when it differs, so its own writes settle at once.

use std::sync::Arc;

use kube::api::{ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use sparkwing_core::reconcile::status::{set_condition, Condition, ConditionStatus};
use sparkwing_core::time::Time;
use sparkwing_crds::pipeline::{LastRun, Pipeline, PipelineStatus, PIPELINE_LABEL};
use sparkwing_crds::PipelineRun;

use super::pipeline_schedule;
use super::{api, namespace_of, now_millis, Context};
use crate::error::{is_already_exists, is_not_found, Error, Result};
use crate::labels::label_value;
use crate::labels::{
    COMMIT_STATUS_ANNOTATION, COMMIT_STATUS_ERROR_ANNOTATION, PIPELINE_ANNOTATION,
};
use crate::runs::backend::{BackendError, KubeRuns};
use crate::runs::runner_token::{create_with_runner_token, RunnerTokenError};
use crate::status::{apply_status, status_value};
use sparkwing_api::names::{BRANCHES_IN_SYNC_ANNOTATION, BRANCH_DRIFT_ANNOTATION};

/// The controller's name in metrics and logs.
pub const NAME: &str = "pipeline";
/// The condition a Pipeline reports.
pub const READY: &str = "Ready";
/// The condition saying whether the Pipeline's push branches match `on.push.branches` in the
/// committed `sparkwing.yaml`, as the newest run that checked them reported.
pub const BRANCHES_IN_SYNC: &str = "BranchesInSync";
/// The condition saying whether its runs' commit statuses reach GitHub, as the newest run that
/// posted one (or tried) recorded it.
pub const COMMIT_STATUS: &str = "CommitStatus";

/// The Pipeline a run belongs to: the exact name in its `sparkwing.dev/pipeline` annotation,
/// else its label.
pub fn pipeline_of_run(run: PipelineRun) -> Option<ObjectRef<Pipeline>> {
    let name = run
        .annotations()
        .get(PIPELINE_ANNOTATION)
        .or_else(|| run.labels().get(PIPELINE_LABEL))?
        .clone();
    Some(ObjectRef::new(&name).within(&run.namespace()?))
}

/// Whether `run` is one of `pipeline`'s runs (same namespace, annotation or label).
pub fn belongs_to(run: &PipelineRun, pipeline: &Pipeline) -> bool {
    run.namespace() == pipeline.namespace()
        && pipeline_of_run(run.clone()).is_some_and(|r| r.name == pipeline.name_any())
}

/// The status `pipeline` should have given its runs (pure): `lastRun` is the newest run by
/// [`PipelineRun::creation_order`], `Ready` says whether the spec is usable.
pub fn desired_status(pipeline: &Pipeline, runs: &[PipelineRun], now: i64) -> PipelineStatus {
    let generation = pipeline.metadata.generation.unwrap_or(0);
    let mut status = pipeline.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.last_run = runs
        .iter()
        .filter(|r| belongs_to(r, pipeline))
        .max_by_key(|r| r.creation_order())
        .map(|r| {
            let s = r.status.clone().unwrap_or_default();
            LastRun {
                name: r.name_any(),
                phase: s.phase,
                start_time: s.start_time,
            }
        });
    let problems = pipeline.spec.problems();
    let (cond_status, reason, message) = if problems.is_empty() {
        (
            ConditionStatus::True,
            "Valid",
            ready_message(&pipeline.spec),
        )
    } else {
        (ConditionStatus::False, "InvalidSpec", problems.join("; "))
    };
    set_condition(
        &mut status.conditions,
        Condition {
            type_: READY.to_string(),
            status: cond_status,
            reason: reason.to_string(),
            message,
            last_transition_time: Time(now),
            observed_generation: generation,
        },
    );
    if let Some(c) = branches_condition(pipeline, runs, now) {
        set_condition(&mut status.conditions, c);
    }
    if let Some(c) = commit_status_condition(pipeline, runs, now) {
        set_condition(&mut status.conditions, c);
    }
    status
}

fn join_some(first: String, second: Option<String>) -> String {
    match second {
        Some(s) => format!("{first}; {s}"),
        None => first,
    }
}

/// The `Ready` message of a usable spec: what starts its runs.
fn ready_message(spec: &sparkwing_crds::pipeline::PipelineSpec) -> String {
    let pull_requests = spec
        .triggers
        .pull_request
        .as_ref()
        .map(|t| match &t.branches[..] {
            [] => "pull requests into every branch start runs".to_string(),
            b => format!("pull requests into {} start runs", b.join(", ")),
        });
    let push = match (spec.push_branches(), pull_requests) {
        (Some([]), pr) => join_some("pushes to every branch start runs".to_string(), pr),
        (Some(b), pr) => join_some(format!("pushes to {} start runs", b.join(", ")), pr),
        (None, Some(pr)) => pr,
        (None, None) => "no push trigger: webhooks start nothing".to_string(),
    };
    let schedules: Vec<String> = spec
        .triggers
        .schedule
        .iter()
        .map(|s| {
            format!(
                "{} ({}) on {}",
                s.cron,
                s.time_zone.as_deref().unwrap_or("UTC"),
                s.branch
            )
        })
        .collect();
    if schedules.is_empty() {
        push
    } else {
        format!("{push}; schedules: {}", schedules.join(", "))
    }
}

/// Sorted, deduplicated globs of a `sparkwing.dev/push-branches` annotation (comma-separated).
fn glob_set<'a>(globs: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = globs
        .into_iter()
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The `BranchesInSync` condition from the newest of `pipeline`'s runs (by
/// [`PipelineRun::creation_order`]) whose runner reported its branch check (pure). `None` while no run reported: the
/// condition is then left as it is (absent before the first report; the last one once the runs
/// that reported are gone).
///
/// - in sync: `True`, reason `InSync`;
/// - drifted: `False`, reason `Drifted`, the runner's message naming both lists and the fix;
/// - the Pipeline's push branches changed since that run compared them: `Unknown`, reason
///   `SpecChanged` (the next push compares again).
pub fn branches_condition(
    pipeline: &Pipeline,
    runs: &[PipelineRun],
    now: i64,
) -> Option<Condition> {
    let (run, in_sync) = runs
        .iter()
        .filter(|r| belongs_to(r, pipeline))
        .filter_map(|r| {
            let in_sync = match r.annotations().get(BRANCHES_IN_SYNC_ANNOTATION)?.as_str() {
                "true" => true,
                "false" => false,
                _ => return None,
            };
            Some((r, in_sync))
        })
        .max_by_key(|(r, _)| r.creation_order())?;
    let name = run.name_any();
    let checked = glob_set(
        run.annotations()
            .get(sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION)
            .map_or("", String::as_str)
            .split(','),
    );
    let (status, reason, message) = match pipeline.spec.push_branches() {
        Some(now_globs) if glob_set(now_globs.iter().map(String::as_str)) != checked => (
            ConditionStatus::Unknown,
            "SpecChanged",
            format!(
                "the Pipeline's push branches are now [{}]; run {name} compared the earlier [{}] with the committed sparkwing.yaml: the next push compares again",
                glob_set(now_globs.iter().map(String::as_str)).join(", "),
                checked.join(", ")
            ),
        ),
        None => (
            ConditionStatus::Unknown,
            "SpecChanged",
            format!(
                "the Pipeline has no push trigger now; run {name} compared the earlier [{}] with the committed sparkwing.yaml",
                checked.join(", ")
            ),
        ),
        Some(_) if in_sync => (
            ConditionStatus::True,
            "InSync",
            format!(
                "run {name}: the Pipeline's push branches [{}] match on.push.branches in the committed sparkwing.yaml",
                checked.join(", ")
            ),
        ),
        Some(_) => (
            ConditionStatus::False,
            "Drifted",
            format!(
                "run {name}: {}",
                run.annotations()
                    .get(BRANCH_DRIFT_ANNOTATION)
                    .map(String::as_str)
                    .unwrap_or("the Pipeline's push branches differ from on.push.branches in the committed sparkwing.yaml; change one to match the other")
            ),
        ),
    };
    Some(Condition {
        type_: BRANCHES_IN_SYNC.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time: Time(now),
        observed_generation: pipeline.metadata.generation.unwrap_or(0),
    })
}

/// The `CommitStatus` condition from the newest of `pipeline`'s runs that posted (or tried to),
/// by creation order (pure). `None` while none did: the condition is left as it is.
pub fn commit_status_condition(
    pipeline: &Pipeline,
    runs: &[PipelineRun],
    now: i64,
) -> Option<Condition> {
    let run = runs
        .iter()
        .filter(|r| belongs_to(r, pipeline))
        .filter(|r| r.annotations().contains_key(COMMIT_STATUS_ANNOTATION))
        .max_by_key(|r| r.creation_order())?;
    let name = run.name_any();
    let (status, reason, message) = match run.annotations().get(COMMIT_STATUS_ERROR_ANNOTATION) {
        Some(err) => {
            let (reason, message) = err.split_once(": ").unwrap_or(("Rejected", err));
            (
                ConditionStatus::False,
                reason.to_string(),
                format!("run {name}: {message}"),
            )
        }
        None => (
            ConditionStatus::True,
            "Posted".to_string(),
            format!(
                "run {name}: posted {}",
                run.annotations()[COMMIT_STATUS_ANNOTATION]
            ),
        ),
    };
    Some(Condition {
        type_: COMMIT_STATUS.to_string(),
        status,
        reason,
        message,
        last_transition_time: Time(now),
        observed_generation: pipeline.metadata.generation.unwrap_or(0),
    })
}

/// Build the controller (not running yet).
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<Pipeline> {
    Controller::new(
        api::<Pipeline>(client, namespace),
        watcher::Config::default(),
    )
    .watches(
        api::<PipelineRun>(client, namespace),
        watcher::Config::default().labels(PIPELINE_LABEL),
        pipeline_of_run,
    )
}

/// Whether the Pipeline CRD is served (an operator installed before it existed has only the
/// others: it then keeps no Pipeline status, and says so once).
pub async fn served(client: &Client, namespace: Option<&str>) -> bool {
    match api::<Pipeline>(client, namespace)
        .list(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => true,
        Err(e) if is_not_found(&e) => {
            tracing::warn!("the Pipeline CRD is not installed (kubectl apply -f crds/yaml/): Pipelines' status is not kept");
            false
        }
        // Anything else (a transient error): run, the controller retries its watch.
        Err(_) => true,
    }
}

/// Run the controller until `shutdown`.
pub async fn run(
    controller: Controller<Pipeline>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    super::drive(NAME, controller, reconcile, ctx, shutdown).await
}

async fn reconcile(pipeline: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let ns = namespace_of(pipeline.as_ref(), "Pipeline")?;
    let name = pipeline.name_any();
    let runs_api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let runs = runs_api
        .list(&ListParams::default().labels(&format!("{PIPELINE_LABEL}={}", label_value(&name))))
        .await?
        .items;
    let now = now_millis();
    // The slot's run first, its status after: a crash in between re-creates the same name,
    // which is refused as existing, and then records the slot.
    let schedules = pipeline_schedule::plan(&pipeline, now);
    for run in &schedules.runs {
        create_scheduled_run(&ctx, &runs_api, run.clone(), now).await?;
    }
    let mut computed = desired_status(&pipeline, &runs, now);
    computed.schedules = schedules.statuses;
    computed.next_schedule_time = schedules.next.map(Time);
    let current = pipeline
        .status
        .as_ref()
        .map(|s| status_value(s, "Pipeline status"))
        .transpose()?;
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &ns);
    apply_status(
        &api,
        &name,
        current.as_ref(),
        status_value(&computed, "Pipeline status")?,
        None,
        &ctx.metrics,
    )
    .await?;
    Ok(match schedules.next {
        // Woken at the next slot (a timer of this process: after a restart, the first
        // reconcile finds the slot, fired or missed, from the status).
        Some(next) => Action::requeue(std::time::Duration::from_millis(
            (next - now_millis()).max(0) as u64,
        )),
        None => Action::await_change(),
    })
}

/// Create a schedule's run; one that exists already is that slot's run (fired before). With the
/// in-process API (its token table), the run gets its runner token first, as the API's triggers
/// do; without it, it is created as `kubectl` would create it.
async fn create_scheduled_run(
    ctx: &Context,
    runs_api: &Api<PipelineRun>,
    mut run: PipelineRun,
    now: i64,
) -> Result<()> {
    let name = run.name_any();
    let ns = run.namespace().unwrap_or_default();
    let slot = run
        .annotations()
        .get(pipeline_schedule::SCHEDULED_SLOT_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let created = match &ctx.pool_tokens {
        Some(tokens) => {
            let runs = KubeRuns::new(ctx.client.clone());
            match create_with_runner_token(&tokens.store, &runs, run, None, true).await {
                Ok(_) => true,
                Err(RunnerTokenError::Backend(BackendError::AlreadyExists(_))) => false,
                Err(e) => {
                    return Err(Error::ScheduledRun {
                        run: format!("{ns}/{name}"),
                        message: e.to_string(),
                    })
                }
            }
        }
        None => {
            run.stamp_created_at(now);
            match runs_api.create(&PostParams::default(), &run).await {
                Ok(_) => true,
                Err(e) if is_already_exists(&e) => false,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if created {
        tracing::info!(namespace = %ns, run = %name, %slot, "a schedule started a run");
    } else {
        tracing::info!(namespace = %ns, run = %name, %slot, "the schedule slot's run exists already");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KubeTime;
    use sparkwing_core::reconcile::status::{RunPhase, RunStatus};
    use sparkwing_crds::pipeline::{PipelineSpec, PipelineTriggers, PushTrigger};
    use std::collections::BTreeMap;

    fn pipeline(name: &str) -> Pipeline {
        let mut p = Pipeline::new(
            name,
            PipelineSpec {
                repository: "https://example.com/acme/app.git".into(),
                pipeline: "build".into(),
                path: None,
                triggers: PipelineTriggers {
                    push: Some(PushTrigger {
                        branches: vec!["main".into()],
                        ..PushTrigger::default()
                    }),
                    ..PipelineTriggers::default()
                },
                runner_pool: None,
                ..PipelineSpec::default()
            },
        );
        p.metadata.namespace = Some("ci".into());
        p.metadata.generation = Some(2);
        p
    }

    fn run(name: &str, pipeline: &str, created_s: i64, phase: RunPhase) -> PipelineRun {
        let mut r = PipelineRun::test(name);
        r.metadata.namespace = Some("ci".into());
        r.metadata.labels = Some(BTreeMap::from([(
            PIPELINE_LABEL.to_string(),
            pipeline.to_string(),
        )]));
        r.metadata.creation_timestamp = Some(KubeTime(
            k8s_openapi::jiff::Timestamp::from_second(created_s).unwrap(),
        ));
        r.status = Some(RunStatus {
            phase,
            start_time: (phase != RunPhase::Pending).then_some(Time(created_s * 1000 + 500)),
            ..RunStatus::default()
        });
        r
    }

    #[test]
    fn last_run_is_the_newest_of_its_runs() {
        let p = pipeline("app");
        let runs = [
            run("app-1", "app", 100, RunPhase::Succeeded),
            run("app-3", "app", 300, RunPhase::Running),
            run("other-9", "other", 900, RunPhase::Failed),
            run("app-2", "app", 200, RunPhase::Failed),
        ];
        let s = desired_status(&p, &runs, 1_000_000);
        let last = s.last_run.clone().unwrap();
        assert_eq!(
            (last.name.as_str(), last.phase, last.start_time),
            ("app-3", RunPhase::Running, Some(Time(300_500)))
        );
        assert_eq!(s.observed_generation, 2);
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status, ready.reason.as_str()),
            (READY, ConditionStatus::True, "Valid")
        );
        // Computing again from its own result changes nothing (no write, no loop), and the
        // transition time stays.
        let mut p2 = p.clone();
        p2.status = Some(s.clone());
        assert_eq!(desired_status(&p2, &runs, 2_000_000), s);
        // No runs: no lastRun.
        assert_eq!(desired_status(&p, &[], 0).last_run, None);
        // A run of another namespace is not its run.
        let mut elsewhere = run("app-9", "app", 999, RunPhase::Failed);
        elsewhere.metadata.namespace = Some("team".into());
        assert_eq!(desired_status(&p, &[elsewhere], 0).last_run, None);
    }

    #[test]
    fn the_annotation_names_the_pipeline_when_the_label_is_shortened() {
        let mut r = run("x-1", "shortened-label", 1, RunPhase::Pending);
        r.metadata.annotations = Some(BTreeMap::from([(
            PIPELINE_ANNOTATION.to_string(),
            "the-exact-name".to_string(),
        )]));
        let o = pipeline_of_run(r).unwrap();
        assert_eq!(o.name, "the-exact-name");
        assert_eq!(o.namespace.as_deref(), Some("ci"));
        assert!(pipeline_of_run(PipelineRun::test("plain")).is_none());
    }

    #[test]
    fn an_invalid_spec_is_not_ready() {
        let mut p = pipeline("app");
        p.spec.path = Some("../up".into());
        let s = desired_status(&p, &[], 0);
        assert_eq!(s.conditions[0].status, ConditionStatus::False);
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        assert!(s.conditions[0].message.contains("spec.path"));
        // Run settings and secrets are checked as on a PipelineRun.
        let mut p = pipeline("app");
        p.spec.timeout = Some("0s".into());
        p.spec.max_attempts = Some(0);
        p.spec.secrets = vec!["Not A Secret".into()];
        let s = desired_status(&p, &[], 0);
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "InvalidSpec")
        );
        for want in ["spec.timeout", "spec.maxAttempts", "spec.secrets"] {
            assert!(ready.message.contains(want), "{want}: {}", ready.message);
        }
    }

    #[test]
    fn the_ready_message_names_the_pull_request_trigger() {
        let mut p = pipeline("app");
        p.spec.triggers.pull_request = Some(sparkwing_crds::pipeline::PullRequestTrigger {
            branches: vec!["main".into()],
            ..Default::default()
        });
        let s = desired_status(&p, &[], 0);
        assert_eq!(
            s.conditions[0].message,
            "pushes to main start runs; pull requests into main start runs"
        );
        p.spec.triggers.push = None;
        let s = desired_status(&p, &[], 0);
        assert_eq!(
            s.conditions[0].message,
            "pull requests into main start runs"
        );
    }

    /// `run(...)` whose runner reported its branch check: the Pipeline's globs it was created
    /// with (`sparkwing.dev/push-branches`) and the result.
    fn checked(name: &str, created_s: i64, globs: &str, drift: Option<&str>) -> PipelineRun {
        let mut r = run(name, "app", created_s, RunPhase::Running);
        let mut a = BTreeMap::from([
            (
                sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION.to_string(),
                globs.to_string(),
            ),
            (
                BRANCHES_IN_SYNC_ANNOTATION.to_string(),
                drift.is_none().to_string(),
            ),
        ]);
        if let Some(m) = drift {
            a.insert(BRANCH_DRIFT_ANNOTATION.to_string(), m.to_string());
        }
        r.metadata.annotations = Some(a);
        r
    }

    const DRIFT: &str = "the Pipeline's push branches [main] differ from on.push.branches [main, release/*] in the committed sparkwing.yaml; change spec.triggers.push.branches or on.push.branches so they match";

    fn branches(s: &PipelineStatus) -> Option<&Condition> {
        s.conditions.iter().find(|c| c.type_ == BRANCHES_IN_SYNC)
    }

    /// `desired_status` of `p` with its own previous result as status.
    fn again(
        p: &Pipeline,
        prev: &PipelineStatus,
        runs: &[PipelineRun],
        now: i64,
    ) -> PipelineStatus {
        let mut p = p.clone();
        p.status = Some(prev.clone());
        desired_status(&p, runs, now)
    }

    #[test]
    fn branches_in_sync_is_absent_until_a_run_reports() {
        let p = pipeline("app");
        let plain = run("app-1", "app", 100, RunPhase::Running);
        let s = desired_status(&p, std::slice::from_ref(&plain), 1_000);
        assert_eq!(branches(&s), None, "{s:?}");
        // A run that has not reported yet does not hide an older one that did.
        let runs = [
            checked("app-1", 100, "main", Some(DRIFT)),
            run("app-2", "app", 200, RunPhase::Pending),
        ];
        let c = branches_condition(&p, &runs, 1_000).unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "Drifted")
        );
        // Another Pipeline's runs do not count.
        let mut other = checked("x-1", 900, "main", None);
        other.metadata.labels = Some(BTreeMap::from([(
            PIPELINE_LABEL.to_string(),
            "other".to_string(),
        )]));
        assert_eq!(branches_condition(&p, &[other], 1_000), None);
        // Neither does a value that is not true or false.
        let mut odd = checked("app-3", 300, "main", None);
        odd.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(BRANCHES_IN_SYNC_ANNOTATION.to_string(), "yes".to_string());
        assert_eq!(branches_condition(&p, &[odd], 1_000), None);
    }

    #[test]
    fn runs_created_in_one_second_order_by_their_created_at_stamp() {
        // The apiserver's creationTimestamp has whole seconds; two pushes in one second create
        // runs whose names (hashes) may sort either way. The newer one must win.
        let p = pipeline("app");
        let mut older = checked("app-9f", 100, "main", Some(DRIFT));
        older.stamp_created_at(100_120);
        let mut newer = checked("app-1a", 100, "main", None);
        newer.stamp_created_at(100_870);
        let runs = [older.clone(), newer.clone()];
        let s = desired_status(&p, &runs, 1_000_000);
        assert_eq!(s.last_run.unwrap().name, "app-1a");
        let c = branches(&desired_status(&p, &runs, 1_000_000))
            .cloned()
            .unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::True, "InSync")
        );
        assert!(c.message.starts_with("run app-1a:"), "{}", c.message);
        // The stamp only orders within a second: a run of a later second is newer regardless.
        let mut later = run("app-0", "app", 101, RunPhase::Pending);
        later.stamp_created_at(100_999);
        let s = desired_status(&p, &[newer, later], 1_000_000);
        assert_eq!(s.last_run.unwrap().name, "app-0");
        // The annotation is RFC 3339 with milliseconds, as kubectl shows it.
        assert_eq!(
            older.annotations()[sparkwing_crds::pipeline_run::CREATED_AT_ANNOTATION],
            "1970-01-01T00:01:40.120Z"
        );
    }

    #[test]
    fn drift_then_in_sync_moves_the_transition_time_only_on_a_change() {
        let p = pipeline("app");
        // A drifted push: False/Drifted with the runner's message (both lists and the fix).
        let mut runs = vec![checked("app-1", 100, "main", Some(DRIFT))];
        let s1 = desired_status(&p, &runs, 1_000);
        let c = branches(&s1).unwrap();
        assert_eq!(
            (c.status, c.reason.as_str(), c.last_transition_time),
            (ConditionStatus::False, "Drifted", Time(1_000))
        );
        assert_eq!(c.message, format!("run app-1: {DRIFT}"));
        assert_eq!(c.observed_generation, 2);
        // Nothing changed: the same status (no write), the transition time kept.
        assert_eq!(again(&p, &s1, &runs, 5_000), s1);
        // A second drifted push: a new message, the same transition time.
        runs.push(checked("app-2", 200, "main", Some(DRIFT)));
        let s2 = again(&p, &s1, &runs, 6_000);
        let c = branches(&s2).unwrap();
        assert_eq!(c.message, format!("run app-2: {DRIFT}"));
        assert_eq!(c.last_transition_time, Time(1_000));
        // The committed sparkwing.yaml fixed: True/InSync, a new transition time.
        runs.push(checked("app-3", 300, "main", None));
        let s3 = again(&p, &s2, &runs, 7_000);
        let c = branches(&s3).unwrap();
        assert_eq!(
            (c.status, c.reason.as_str(), c.last_transition_time),
            (ConditionStatus::True, "InSync", Time(7_000))
        );
        assert!(
            c.message.contains("app-3") && c.message.contains("[main]"),
            "{}",
            c.message
        );
        assert_eq!(again(&p, &s3, &runs, 9_000), s3);
        // Ready is untouched by all this.
        assert_eq!(s3.conditions[0].type_, READY);
        assert_eq!(s3.conditions[0].last_transition_time, Time(1_000));
    }

    #[test]
    fn a_report_about_other_push_branches_is_unknown() {
        // The Pipeline's branches were changed after the run compared them.
        let mut p = pipeline("app");
        let runs = [checked("app-1", 100, "main", Some(DRIFT))];
        p.spec.triggers.push = Some(PushTrigger {
            branches: vec!["release/*".into(), "main".into()],
            ..PushTrigger::default()
        });
        let c = branches_condition(&p, &runs, 1_000).unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::Unknown, "SpecChanged")
        );
        assert!(
            c.message.contains("[main, release/*]") && c.message.contains("earlier [main]"),
            "{}",
            c.message
        );
        // Order and duplicates do not matter.
        let runs = [checked("app-1", 100, "release/*, main,main", None)];
        let c = branches_condition(&p, &runs, 1_000).unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::True, "InSync")
        );
        // No push trigger any more.
        p.spec.triggers.push = None;
        let c = branches_condition(&p, &runs, 1_000).unwrap();
        assert_eq!(c.status, ConditionStatus::Unknown);
    }
}
