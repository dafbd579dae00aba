//! The Pipeline controller: keeps `status.lastRun` (the newest PipelineRun labelled
//! `sparkwing.dev/pipeline=<name>`, its phase and start), `observedGeneration` and the `Ready`
//! condition. Woken by the Pipeline and by changes of its runs; the status is computed by the
//! pure [`desired_status`] and applied (server-side, with apiVersion and kind) only when it
//! differs, so its own writes settle at once.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use sparkwing_core::reconcile::status::{set_condition, Condition, ConditionStatus};
use sparkwing_core::time::Time;
use sparkwing_crds::pipeline::{LastRun, Pipeline, PipelineStatus, PIPELINE_LABEL};
use sparkwing_crds::PipelineRun;

use super::{api, error_policy, namespace_of, now_millis, Context};
use crate::api::webhook::PIPELINE_ANNOTATION;
use crate::error::{is_not_found, Result};
use crate::labels::label_value;
use crate::status::{apply_status, status_value};

/// The controller's name in metrics and logs.
pub const NAME: &str = "pipeline";
/// The condition a Pipeline reports.
pub const READY: &str = "Ready";

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
/// creation time (then name), `Ready` says whether the spec is usable.
pub fn desired_status(pipeline: &Pipeline, runs: &[PipelineRun], now: i64) -> PipelineStatus {
    let generation = pipeline.metadata.generation.unwrap_or(0);
    let mut status = pipeline.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.last_run = runs
        .iter()
        .filter(|r| belongs_to(r, pipeline))
        .max_by_key(|r| {
            (
                r.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond()),
                r.name_any(),
            )
        })
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
            match pipeline.spec.push_branches() {
                Some([]) => "pushes to every branch start runs".to_string(),
                Some(b) => format!("pushes to {} start runs", b.join(", ")),
                None => "no push trigger: webhooks start nothing".to_string(),
            },
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
    status
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
pub fn run(
    controller: Controller<Pipeline>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |p, err, ctx| error_policy(NAME, p.as_ref(), err, &ctx),
            ctx,
        )
        .map(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "pipeline controller");
            }
        })
}

async fn reconcile(pipeline: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let ns = namespace_of(pipeline.as_ref(), "Pipeline")?;
    let name = pipeline.name_any();
    let runs_api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let runs = runs_api
        .list(&ListParams::default().labels(&format!("{PIPELINE_LABEL}={}", label_value(&name))))
        .await?
        .items;
    let computed = desired_status(&pipeline, &runs, now_millis());
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
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KubeTime;
    use sparkwing_core::reconcile::status::{Phase, RunStatus};
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
                    }),
                },
                runner_pool: None,
                ..PipelineSpec::default()
            },
        );
        p.metadata.namespace = Some("ci".into());
        p.metadata.generation = Some(2);
        p
    }

    fn run(name: &str, pipeline: &str, created_s: i64, phase: Phase) -> PipelineRun {
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
            start_time: (phase != Phase::Pending).then_some(Time(created_s * 1000 + 500)),
            ..RunStatus::default()
        });
        r
    }

    #[test]
    fn last_run_is_the_newest_of_its_runs() {
        let p = pipeline("app");
        let runs = [
            run("app-1", "app", 100, Phase::Succeeded),
            run("app-3", "app", 300, Phase::Running),
            run("other-9", "other", 900, Phase::Failed),
            run("app-2", "app", 200, Phase::Failed),
        ];
        let s = desired_status(&p, &runs, 1_000_000);
        let last = s.last_run.clone().unwrap();
        assert_eq!(
            (last.name.as_str(), last.phase, last.start_time),
            ("app-3", Phase::Running, Some(Time(300_500)))
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
        let mut elsewhere = run("app-9", "app", 999, Phase::Failed);
        elsewhere.metadata.namespace = Some("team".into());
        assert_eq!(desired_status(&p, &[elsewhere], 0).last_run, None);
    }

    #[test]
    fn the_annotation_names_the_pipeline_when_the_label_is_shortened() {
        let mut r = run("x-1", "shortened-label", 1, Phase::Pending);
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
}
