//! What the apiserver would accept: sample objects checked against the generated
//! `openAPIV3Schema` (with the `jsonschema` crate), and the CEL rules (`x-kubernetes-validations`)
//! evaluated client-side with kube's CEL validator (kube-cel), creation and update.

use kube::core::cel::{validate_cel, validate_cel_update};
use kube::CustomResourceExt;
use serde_json::{json, Value};
use sparkwing_core::reconcile::run::CancelRequest;
use sparkwing_core::reconcile::status::{
    Condition, ConditionStatus, JobStatus, PoolStatus, RunPhase, RunStatus, SUCCEEDED,
};
use sparkwing_core::time::Time;
use sparkwing_crds::{
    CancelMode, GitSource, LocalSource, PipelineRun, RunnerPool, Source, UploadSource,
};

/// The CRD's `openAPIV3Schema`, compiled as the draft-4 JSON Schema OpenAPI 3.0 is based on.
/// Kubernetes-only keywords (`nullable`, `x-kubernetes-*`) are ignored by the validator; the CEL
/// rules are checked separately below.
fn validator<K: CustomResourceExt>() -> jsonschema::Validator {
    let crd = K::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    jsonschema::draft4::new(&schema).expect("the generated schema compiles")
}

fn errors(v: &jsonschema::Validator, obj: &Value) -> Vec<String> {
    v.iter_errors(obj)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn assert_accepted<K: CustomResourceExt>(obj: &Value) {
    let errs = errors(&validator::<K>(), obj);
    assert!(errs.is_empty(), "rejected {obj}: {errs:?}");
}

/// Rejected, with an error at `at` (a JSON pointer into the object).
fn assert_rejected<K: CustomResourceExt>(obj: &Value, at: &str) {
    let errs = errors(&validator::<K>(), obj);
    assert!(
        errs.iter().any(|e| e.starts_with(&format!("{at}:"))),
        "want an error at {at} for {obj}, got {errs:?}"
    );
}

fn sample(name: &str) -> Value {
    let path = format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn run_json(run: &PipelineRun) -> Value {
    serde_json::to_value(run).unwrap()
}

fn pool_json(pool: &RunnerPool) -> Value {
    serde_json::to_value(pool).unwrap()
}

/// A minimal run as a user would write it.
fn minimal_run() -> Value {
    json!({
        "apiVersion": "sparkwing.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "r"},
        "spec": {"pipeline": "build", "source": {"upload": {"id": "u1"}}}
    })
}

fn minimal_pool() -> Value {
    json!({
        "apiVersion": "sparkwing.dev/v1alpha1",
        "kind": "RunnerPool",
        "metadata": {"name": "p"},
        "spec": {"image": "runner:1", "maxRunners": 3}
    })
}

fn with(mut obj: Value, pointer: &str, value: Value) -> Value {
    *obj.pointer_mut(pointer).unwrap() = value;
    obj
}

fn without(mut obj: Value, parent: &str, key: &str) -> Value {
    obj.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key)
        .unwrap();
    obj
}

fn inserted(mut obj: Value, parent: &str, key: &str, value: Value) -> Value {
    obj.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert(key.to_string(), value);
    obj
}

#[test]
fn samples_are_valid_and_convert() {
    let run = sample("pipelinerun.yaml");
    assert_accepted::<PipelineRun>(&run);
    let run: PipelineRun = serde_json::from_value(run).unwrap();
    validate_cel(&run).unwrap();
    let intent = run.intent();
    assert_eq!(intent.invalid, None);
    assert_eq!(intent.timeout_ms, Some(30 * 60_000));
    assert_eq!(intent.ttl_after_finished_ms, Some(86_400_000));

    let pool = sample("runnerpool.yaml");
    assert_accepted::<RunnerPool>(&pool);
    let pool: RunnerPool = serde_json::from_value(pool).unwrap();
    validate_cel(&pool).unwrap();
    let intent = pool.intent().unwrap();
    assert_eq!((intent.min_idle, intent.max_runners), (2, 10));
    assert_eq!(intent.idle_timeout_ms, 15 * 60_000);
}

#[test]
fn valid_runs_are_accepted() {
    assert_accepted::<PipelineRun>(&minimal_run());
    let sources = [
        Source::Upload(UploadSource { id: "u1".into() }),
        Source::Git(GitSource {
            url: "https://git.example.com/a.git".into(),
            revision: "0123abc".into(),
        }),
        Source::Local(LocalSource {
            path: "/work/app".into(),
        }),
    ];
    for source in sources {
        let run = PipelineRun::test("r")
            .with_source(source)
            .with_arg("name", "demo")
            .in_pool("default")
            .with_timeout("1h30m")
            .cancelled(CancelMode::CancelledRunFinally)
            .with_ttl_seconds(0)
            .with_max_attempts(10);
        assert_accepted::<PipelineRun>(&run_json(&run));
    }
    for cancel in ["Cancelled", "CancelledRunFinally"] {
        assert_accepted::<PipelineRun>(&inserted(minimal_run(), "/spec", "cancel", json!(cancel)));
    }
    for via in ["cli", "kubectl", "webhook"] {
        let by = json!({"principal": "alice", "host": "laptop", "via": via});
        assert_accepted::<PipelineRun>(&inserted(minimal_run(), "/spec", "triggeredBy", by));
    }
}

#[test]
fn a_status_written_by_the_reconcile_is_accepted() {
    let status = RunStatus {
        phase: RunPhase::Failed,
        conditions: vec![Condition {
            type_: SUCCEEDED.into(),
            status: ConditionStatus::False,
            reason: "Failed".into(),
            message: "job test failed".into(),
            last_transition_time: Time(1_800_000_000_000),
            observed_generation: 2,
        }],
        start_time: Some(Time(1_799_999_990_000)),
        completion_time: Some(Time(1_800_000_000_000)),
        runner: Some("r-1".into()),
        jobs: vec![JobStatus {
            name: "test".into(),
            state: "failed".into(),
            reason: None,
            attempt: 1,
            exit_code: Some(1),
            started_at: Some(Time(1_799_999_995_000)),
            finished_at: None,
        }],
        attempts: 2,
        resumes: 1,
        observed_generation: 2,
    };
    assert_accepted::<PipelineRun>(&run_json(&PipelineRun::test("r").with_status(status)));
    let pool = RunnerPool::test("p").with_status(PoolStatus {
        idle: 1,
        busy: 2,
        starting: 0,
        total: 3,
        conditions: vec![],
        observed_generation: 1,
    });
    assert_accepted::<RunnerPool>(&pool_json(&pool));
    let bad_phase = with(
        run_json(&PipelineRun::test("r").with_status(RunStatus::default())),
        "/status/phase",
        json!("Exploded"),
    );
    assert_rejected::<PipelineRun>(&bad_phase, "/status/phase");
}

#[test]
fn invalid_runs_are_rejected() {
    let run = minimal_run();
    assert_rejected::<PipelineRun>(&without(run.clone(), "/spec", "pipeline"), "/spec");
    assert_rejected::<PipelineRun>(&without(run.clone(), "", "spec"), "");
    assert_rejected::<PipelineRun>(
        &with(run.clone(), "/spec/pipeline", json!("")),
        "/spec/pipeline",
    );
    // Exactly one source.
    assert_rejected::<PipelineRun>(&without(run.clone(), "/spec", "source"), "/spec");
    let two =
        json!({"upload": {"id": "u1"}, "git": {"url": "https://x/y.git", "revision": "main"}});
    assert_rejected::<PipelineRun>(&with(run.clone(), "/spec/source", two), "/spec/source");
    assert_rejected::<PipelineRun>(
        &with(run.clone(), "/spec/source", json!({})),
        "/spec/source",
    );
    let no_revision = json!({"git": {"url": "https://x/y.git"}});
    assert_rejected::<PipelineRun>(
        &with(run.clone(), "/spec/source", no_revision),
        "/spec/source/git",
    );
    let long_id = json!({"upload": {"id": "x".repeat(257)}});
    assert_rejected::<PipelineRun>(
        &with(run.clone(), "/spec/source", long_id),
        "/spec/source/upload/id",
    );
    // Ranges and enums.
    for n in [0, 11, -1] {
        assert_rejected::<PipelineRun>(
            &inserted(run.clone(), "/spec", "maxAttempts", json!(n)),
            "/spec/maxAttempts",
        );
    }
    assert_rejected::<PipelineRun>(
        &inserted(run.clone(), "/spec", "maxAttempts", json!("3")),
        "/spec/maxAttempts",
    );
    assert_rejected::<PipelineRun>(
        &inserted(run.clone(), "/spec", "ttlSecondsAfterFinished", json!(-1)),
        "/spec/ttlSecondsAfterFinished",
    );
    for cancel in ["Stop", "cancelled", "StoppedRunFinally", ""] {
        assert_rejected::<PipelineRun>(
            &inserted(run.clone(), "/spec", "cancel", json!(cancel)),
            "/spec/cancel",
        );
    }
    for timeout in ["30", "1d", "", "1m1h", "-5s"] {
        assert_rejected::<PipelineRun>(
            &inserted(run.clone(), "/spec", "timeout", json!(timeout)),
            "/spec/timeout",
        );
    }
    assert_rejected::<PipelineRun>(
        &inserted(run.clone(), "/spec", "args", json!({"n": 1})),
        "/spec/args/n",
    );
    let by = json!({"principal": "alice", "via": "email"});
    assert_rejected::<PipelineRun>(
        &inserted(run.clone(), "/spec", "triggeredBy", by),
        "/spec/triggeredBy/via",
    );
    let by = json!({"via": "cli"});
    assert_rejected::<PipelineRun>(
        &inserted(run, "/spec", "triggeredBy", by),
        "/spec/triggeredBy",
    );
}

#[test]
fn valid_pools_are_accepted() {
    assert_accepted::<RunnerPool>(&minimal_pool());
    assert_accepted::<RunnerPool>(&pool_json(&RunnerPool::test("p")));
    let zero_idle = RunnerPool::test("p").with_min_idle(0).with_max_runners(1);
    assert_accepted::<RunnerPool>(&pool_json(&zero_idle));
}

#[test]
fn invalid_pools_are_rejected() {
    let pool = minimal_pool();
    assert_rejected::<RunnerPool>(&without(pool.clone(), "/spec", "image"), "/spec");
    assert_rejected::<RunnerPool>(&without(pool.clone(), "/spec", "maxRunners"), "/spec");
    assert_rejected::<RunnerPool>(&with(pool.clone(), "/spec/image", json!("")), "/spec/image");
    assert_rejected::<RunnerPool>(
        &inserted(pool.clone(), "/spec", "minIdle", json!(-1)),
        "/spec/minIdle",
    );
    assert_rejected::<RunnerPool>(
        &with(pool.clone(), "/spec/maxRunners", json!(0)),
        "/spec/maxRunners",
    );
    assert_rejected::<RunnerPool>(
        &inserted(pool.clone(), "/spec", "idleTimeout", json!("10")),
        "/spec/idleTimeout",
    );
    let bad_env = json!([{"value": "no name"}]);
    assert_rejected::<RunnerPool>(&inserted(pool, "/spec", "env", bad_env), "/spec/env/0");
}

// ---- CEL rules, evaluated by kube's client-side CEL validator ----

#[test]
fn cel_max_runners_must_cover_min_idle() {
    for (min_idle, max_runners) in [(0, 1), (2, 2), (1, 10)] {
        let pool = RunnerPool::test("p")
            .with_min_idle(min_idle)
            .with_max_runners(max_runners);
        validate_cel(&pool).unwrap_or_else(|e| panic!("{min_idle}/{max_runners}: {e:?}"));
    }
    let pool = RunnerPool::test("p").with_min_idle(3).with_max_runners(2);
    let errs = validate_cel(&pool).unwrap_err();
    let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["maxRunners must be >= minIdle"]);
    assert_eq!(errs.as_slice()[0].rule, "self.maxRunners >= self.minIdle");
}

#[test]
fn cel_source_is_immutable() {
    let old = PipelineRun::test("r");
    // Creation: the transition rule does not apply.
    validate_cel(&old).unwrap();
    // Other fields may change (cancel is how a run is stopped).
    let cancelled = old.clone().cancelled(CancelMode::Cancelled);
    validate_cel_update(&cancelled, &old).unwrap();
    assert_eq!(cancelled.intent().cancel, CancelRequest::Cancelled);
    validate_cel_update(&old.clone(), &old).unwrap();
    // The source may not, neither its kind nor its content.
    let changes = [
        Source::Upload(UploadSource {
            id: "another".into(),
        }),
        Source::Git(GitSource {
            url: "https://git.example.com/a.git".into(),
            revision: "main".into(),
        }),
    ];
    for source in changes {
        let new = old.clone().with_source(source);
        let errs = validate_cel_update(&new, &old).unwrap_err();
        let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            ["source is immutable; create a new PipelineRun to run other source"]
        );
        assert!(errs.as_slice()[0].field_path.contains("source"), "{errs:?}");
    }
}
