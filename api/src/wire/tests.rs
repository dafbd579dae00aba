//! Every body survives serde both ways, and the documented examples (`docs/api.md`) read and
//! write exactly as shown.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_core::state::JobState;
use sparkwing_core::upload_manifest::Manifest;

use super::*;

/// Serialize, deserialize, compare; returns the JSON.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) -> Value {
    let text = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, v, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// `doc` (a documented body) reads as `T` and writes back as the same JSON.
fn documented<T: Serialize + DeserializeOwned + PartialEq + Debug>(doc: Value) -> T {
    let v: T = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(serde_json::to_value(&v).unwrap(), doc);
    round_trip(&v);
    v
}

#[test]
fn trigger_bodies() {
    let t: TriggerRequest = documented(json!({
        "pipeline": "build", "args": {"env": "prod"}, "source": {"upload": {"id": "5d1e"}},
        "namespace": "ci", "runnerPool": "warm", "timeout": "30m",
        "ttlSecondsAfterFinished": 3600, "maxAttempts": 2
    }));
    assert_eq!(t.runner_pool.as_deref(), Some("warm"));
    assert_eq!(t.source, Source::Upload(UploadSource { id: "5d1e".into() }));
    let external: TriggerRequest = documented(json!({
        "pipeline": "build", "args": {}, "source": {"external": {}}, "namespace": "ci", "timeout": "1h"
    }));
    assert_eq!(external.source, Source::External(ExternalSource {}));
    let mut child = TriggerRequest::new(
        "test",
        Source::Git(GitSource {
            url: "https://git.example/a.git".into(),
            revision: "main".into(),
        }),
    );
    child.parent = Some(ParentRef {
        run: "run-1".into(),
        job: "await".into(),
        host: None,
    });
    child.pipeline_chain = Some(vec!["a".into(), "b".into()]);
    assert_eq!(
        round_trip(&child),
        json!({"pipeline": "test", "args": {},
               "source": {"git": {"url": "https://git.example/a.git", "revision": "main"}},
               "parent": {"run": "run-1", "job": "await"}, "pipelineChain": ["a", "b"]})
    );
    round_trip(&TriggerRequest::new(
        "p",
        Source::Local(LocalSource {
            path: "/src".into(),
        }),
    ));
    // The server writes `triggeredBy`; a client cannot.
    let e = serde_json::from_value::<TriggerRequest>(json!({
        "pipeline": "p", "source": {"external": {}}, "triggeredBy": {"principal": "me", "via": "cli"}
    }))
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `triggeredBy`"), "{e}");
    assert!(serde_json::from_value::<ParentRef>(json!({"run": "r", "job": "j", "x": 1})).is_err());
}

#[test]
fn created_runs() {
    let c: CreatedRun = documented(json!({"namespace": "ci", "name": "build-1a2b3c4d"}));
    assert_eq!(c.runner_token, None);
    let c: CreatedRun = documented(
        json!({"namespace": "ci", "name": "build-5e6f7a8b", "runnerToken": "swr_secret"}),
    );
    assert!(!format!("{c:?}").contains("swr_secret"));
}

#[test]
fn run_views_and_lists() {
    let view = RunView::<Value> {
        namespace: "ci".into(),
        name: "build-1".into(),
        pipeline: "build".into(),
        phase: RunPhase::Failed,
        triggered_by: Some(TriggeredBy {
            principal: "alice".into(),
            host: Some("10.0.0.1".into()),
            via: TriggerVia::Cli,
            delivery_id: None,
            pull_request: None,
        }),
        parent: None,
        rerun_of: None,
        created: Some("2026-01-01T10:00:00Z".into()),
        live: true,
        archived: false,
        run: None,
        jobs: None,
        concurrency: None,
        job_groups: Vec::new(),
    };
    // A list's view: no `run`, `jobs` or `parent`; the phase is core's, as its name.
    assert_eq!(
        round_trip(&view),
        json!({"namespace": "ci", "name": "build-1", "pipeline": "build", "phase": "Failed",
               "triggeredBy": {"principal": "alice", "host": "10.0.0.1", "via": "cli"},
               "created": "2026-01-01T10:00:00Z", "live": true, "archived": false})
    );
    let full = RunView {
        run: Some(json!({"metadata": {"name": "build-1"}})),
        jobs: Some(BTreeMap::from([(
            "compile".to_string(),
            json!({"state": "running", "startedAt": "2026-01-01T10:00:00Z"}),
        )])),
        parent: Some(ParentRef {
            run: "ci/up".into(),
            job: "await".into(),
            host: Some("laptop".into()),
        }),
        ..view.clone()
    };
    round_trip(&full);
    // A re-run names the run it runs again.
    let rerun: RunView = documented(json!({
        "namespace": "ci", "name": "build-2", "pipeline": "build", "phase": "Pending",
        "rerunOf": "ci/build-1", "live": true, "archived": false
    }));
    assert_eq!(rerun.rerun_of.as_deref(), Some("ci/build-1"));
    let list: RunList = documented(json!({
        "runs": [serde_json::to_value(&view).unwrap()], "next": "3230"
    }));
    assert_eq!(list.runs[0].phase, RunPhase::Failed);
    documented::<RunList>(json!({"runs": []}));
}

#[test]
fn cancel_finish_branch_check() {
    documented::<CancelRequest>(json!({"mode": "CancelledRunFinally"}));
    assert_eq!(
        documented::<CancelRequest>(json!({})),
        CancelRequest::default()
    );
    let f: FinishRequest = documented(json!({"phase": "Failed", "message": "job test failed"}));
    assert_eq!(f.phase, Some(RunPhase::Failed));
    // A runner that parks (docs/runner.md#parked-runs).
    let f: FinishRequest = documented(json!({"message": "waiting for gate approve",
        "parked": {"attempt": 1, "gates": ["approve"], "deadlineMs": 1_700_000_000_000i64, "decided": false}}));
    let parked = f.parked.expect("parked");
    assert_eq!(
        (parked.attempt, parked.gates),
        (1, vec!["approve".to_string()])
    );
    assert_eq!(f.phase, None);
    documented::<BranchCheck>(json!({"inSync": true}));
    documented::<BranchCheck>(json!({"inSync": false, "message": "the lists differ"}));
    assert!(serde_json::from_value::<BranchCheck>(json!({"inSync": true, "x": 1})).is_err());
}

#[test]
fn job_states_use_the_schedulers_names() {
    let r: JobStateReport = documented(json!({
        "state": "running", "attempt": 1, "startedAt": "2026-01-01T10:00:00Z"
    }));
    assert_eq!(r.state, ReportedJobState::Job(JobState::Running));
    for s in [
        JobState::Pending,
        JobState::Running,
        JobState::Success,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Skipped,
    ] {
        let v = round_trip(&JobStateReport {
            state: s.into(),
            attempt: 2,
            started_at: None,
            finished_at: Some("2026-01-01T10:00:01Z".into()),
            exit_code: Some(1),
            reason: Some("exit 1".into()),
            settled: true,
            gate: false,
            gate_message: None,
            needs: vec!["build".into()],
            outputs: None,
            cached_from: None,
        });
        assert_eq!(v["needs"], json!(["build"]));
        assert!(v.get("outputs").is_none());
        assert_eq!(v["state"], s.as_str());
    }
    let c: JobStateReport = documented(json!({
        "state": "cached", "attempt": 1, "reason": "cached from run app-7f3a2", "cachedFrom": "app-7f3a2"
    }));
    assert_eq!(c.cached_from.as_deref(), Some("app-7f3a2"));
    let r: JobStateReport = documented(json!({"state": "retrying", "attempt": 1, "reason": "x"}));
    assert_eq!(r.state, ReportedJobState::Retrying);
    let g: JobStateReport = documented(json!({"state": "waiting", "attempt": 1, "gate": true}));
    assert!(g.gate);
    assert_eq!(g.gate_message, None);
    let g: JobStateReport = documented(json!({
        "state": "waiting", "attempt": 1, "gate": true, "gateMessage": "Deploy to production?"
    }));
    assert_eq!(g.gate_message.as_deref(), Some("Deploy to production?"));
    assert!(g.needs.is_empty());
    let n: JobStateReport =
        documented(json!({"state": "pending", "attempt": 0, "needs": ["build", "lint"]}));
    assert_eq!(n.needs, ["build", "lint"]);
    assert!(serde_json::from_value::<JobStateReport>(json!({"state": "bogus"})).is_err());
}

#[test]
fn a_job_state_carries_its_outputs_masked_and_optional() {
    let r: JobStateReport = documented(json!({
        "state": "success", "attempt": 1, "finishedAt": "2026-01-01T10:00:01Z",
        "outputs": {"version": "1.2.3", "token": "***"}
    }));
    let outputs = r.outputs.clone().unwrap();
    assert_eq!(outputs["version"], "1.2.3");
    assert_eq!(outputs["token"], "***");
    assert_eq!(round_trip(&r)["outputs"]["token"], "***");
    // A runner before outputs were added: no field.
    let old: JobStateReport = documented(json!({"state": "success", "attempt": 1}));
    assert_eq!(old.outputs, None);
    // Values are strings.
    assert!(serde_json::from_value::<JobStateReport>(
        json!({"state": "success", "outputs": {"n": 1}})
    )
    .is_err());
    assert_eq!(
        size_of_outputs(&outputs),
        "version".len() + "1.2.3".len() + "token".len() + 3
    );
}

fn size_of_outputs(o: &BTreeMap<String, String>) -> usize {
    outputs_size(o.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

#[test]
fn gate_bodies() {
    use sparkwing_core::gate::Decision;
    let r: GateDecisionRequest =
        documented(json!({"decision": "approve", "comment": "looks good"}));
    assert_eq!(r.decision, Decision::Approve);
    assert!(!r.timed_out);
    let t: GateDecisionRequest = documented(json!({"decision": "reject", "timedOut": true}));
    assert!(t.timed_out);
    assert!(serde_json::from_value::<GateDecisionRequest>(json!({"decision": "maybe"})).is_err());
    assert!(serde_json::from_value::<GateDecisionRequest>(
        json!({"decision": "approve", "by": "someone-else"})
    )
    .is_err());
    let a: GateAnswer = documented(json!({
        "namespace": "ci", "name": "deploy-7f3a", "gate": "approve-prod",
        "decided": {"decision": "approve", "by": "ana", "at": "2026-12-04T06:10:00Z",
                    "comment": "looks good"}
    }));
    let d = a.decided.unwrap().decided();
    assert_eq!(d.by, "ana");
    assert_eq!(
        d.at_ms,
        sparkwing_core::time::parse_rfc3339("2026-12-04T06:10:00Z").unwrap()
    );
    assert_eq!(GateDecision::from(&d).decided(), d);
    let none: GateAnswer =
        documented(json!({"namespace": "ci", "name": "deploy-7f3a", "gate": "approve-prod"}));
    assert_eq!(none.decided, None);
}

#[test]
fn concurrency_bodies() {
    let r: GroupRequest = documented(json!({"group": "deploy-prod", "limit": 1}));
    assert!(!r.cancel_in_progress && !r.renew);
    let r: GroupRequest = serde_json::from_value(json!({"group": "g"})).unwrap();
    assert_eq!(r.limit, 1);
    documented::<GroupRequest>(
        json!({"group": "g", "limit": 2, "cancelInProgress": true, "renew": true}),
    );
    assert!(
        serde_json::from_value::<GroupRequest>(json!({"group": "g", "holding": true})).is_err()
    );
    let waiting: GroupStatus = documented(json!({
        "group": "deploy-prod", "limit": 1, "state": "waiting",
        "since": "2026-12-04T06:10:00Z", "leaseUntil": "2026-12-04T06:10:25Z",
        "holders": ["ci/deploy-1"],
        "waiting": "waiting for concurrency group deploy-prod (1/1, held by run ci/deploy-1)"
    }));
    assert_eq!(waiting.state, GroupState::Waiting);
    let holding: GroupStatus = documented(json!({
        "group": "deploy-prod", "limit": 1, "cancelInProgress": true, "state": "holding",
        "since": "2026-12-04T06:10:00Z", "leaseUntil": "2026-12-04T06:10:25Z",
        "cancelled": ["ci/deploy-1"]
    }));
    assert_eq!(holding.cancelled, ["ci/deploy-1"]);
    let view = json!({"namespace": "ci", "name": "deploy-2", "pipeline": "deploy",
        "phase": "Running", "live": true, "archived": false,
        "concurrency": serde_json::to_value(&waiting).unwrap()});
    let v: RunView = documented(view);
    assert_eq!(v.concurrency, Some(waiting));
}

#[test]
fn upload_bodies() {
    let a: UploadAnswer =
        documented(json!({"id": "5d1e", "missing": ["77ab"], "files": 3, "totalSize": 152}));
    assert_eq!(a.missing, ["77ab"]);
    let manifest: Manifest = serde_json::from_value(json!({"files": [
        {"path": ".sparkwing/Cargo.toml", "mode": 420, "size": 112, "sha256": "9f2c"},
        {"path": "docs/latest", "symlink": "v2"}
    ]}))
    .unwrap();
    round_trip(&UploadAnswer {
        manifest: Some(manifest),
        ..a
    });
    documented::<BlobAnswer>(json!({"sha256": "77ab", "size": 40, "created": true}));
    documented::<BlobBatchAnswer>(json!({"blobs": 3, "created": 2, "bytes": 1040}));
}

#[test]
fn log_bodies() {
    let batch: Vec<LogLine> = documented(json!([
        {"job": "compile", "seq": 1, "ts": "2026-01-01T10:00:00Z", "stream": "stdout", "line": "Compiling…"},
        {"job": "compile", "seq": 2, "ts": "2026-01-01T10:00:01Z", "stream": "stderr", "line": "warning: …"}
    ]));
    assert_eq!(batch[1].stream, LogStream::Stderr);
    // `stream` defaults to stdout.
    let l: LogLine = serde_json::from_value(json!({"job": "a", "seq": 1, "line": "x"})).unwrap();
    assert_eq!(l.stream, LogStream::Stdout);
    assert!(serde_json::from_value::<LogLine>(
        json!({"job": "a", "seq": 1, "line": "x", "extra": 1})
    )
    .is_err());
    let r: IngestReport = documented(json!({"accepted": 2, "duplicates": 0}));
    assert_eq!(r.dropped, 0);
    documented::<IngestReport>(json!({"accepted": 0, "duplicates": 0, "dropped": 5}));
    let page: LogPage = documented(json!({"jobs": ["compile"]}));
    assert_eq!(
        page,
        LogPage::Jobs {
            jobs: vec!["compile".into()]
        }
    );
    let page: LogPage = documented(json!({"job": "compile", "lines": [
        {"seq": 11, "ts": "2026-01-01T10:00:00Z", "stream": "stdout", "line": "x"}], "more": false}));
    let LogPage::Lines { lines, .. } = page else {
        panic!("not lines: {page:?}")
    };
    assert_eq!(
        lines[0].clone().of_job("compile"),
        LogLine {
            job: "compile".into(),
            seq: 11,
            ts: "2026-01-01T10:00:00Z".into(),
            stream: LogStream::Stdout,
            line: "x".into()
        }
    );
}

#[test]
fn token_bodies() {
    documented::<CreateTokenRequest>(
        json!({"principal": "alice@example.com", "scopes": ["runs:read", "runs:trigger"]}),
    );
    let created: CreatedToken = documented(json!({
        "token": "swt_secret", "id": "3f9c0a1b2c4d", "principal": "alice@example.com",
        "scopes": ["runs:read"], "created": "2026-01-01T10:00:00Z", "revoked": false
    }));
    assert!(!format!("{created:?}").contains("swt_secret"));
    documented::<TokenList>(json!({"tokens": [serde_json::to_value(&created.info).unwrap()]}));
    documented::<WhoAmI>(json!({"principal": "alice", "token": "3f9c", "scopes": ["admin"]}));
}

#[test]
fn pool_admin_and_error_bodies() {
    documented::<ClaimRequest>(json!({"pod": "warm-19a2b3c-0", "run": "build-1a2b3c4d"}));
    let a: ClaimAnswer = documented(json!({"token": "swr_secret", "attempt": 1}));
    assert!(!format!("{a:?}").contains("swr_secret"));
    documented::<GcRequest>(json!({"graceSeconds": 3600}));
    documented::<GcRequest>(json!({}));
    documented::<GcRequest>(
        json!({"graceSeconds": 0, "retainFinishedDays": 30, "retainFinishedRuns": 10000}),
    );
    documented::<GcReport>(
        json!({"blobsDeleted": 12, "bytesFreed": 40960, "blobsKept": 300,
        "uploadsDeleted": 3, "uploadsKept": 8, "tmpDeleted": 0, "runsDeleted": 2}),
    );
    documented::<ErrorBody>(json!({"error": "not_found", "message": "run ci/x not found"}));
    documented::<ErrorBody>(
        json!({"error": "forbidden", "message": "missing scope runs:trigger",
        "scope": "runs:trigger"}),
    );
}

#[test]
fn webhook_answers() {
    let record: DeliveryRecord = documented(json!({
        "deliveryId": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "receivedAt": "2026-11-27T16:00:00Z",
        "branch": "main", "commit": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "runs": [{"namespace": "ci", "name": "app-build-3f9a2c1b", "pipeline": "app-build"}]
    }));
    assert!(!record.redelivery);
    let again = DeliveryRecord {
        redelivery: true,
        ..record
    };
    assert_eq!(round_trip(&again)["redelivery"], true);
    let pr: DeliveryRecord = documented(json!({
        "deliveryId": "d-pr", "receivedAt": "2026-11-27T16:00:00Z",
        "branch": "main", "commit": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
        "runs": [{"namespace": "ci", "name": "app-pr-1a2b3c4d", "pipeline": "app-pr"}],
        "pullRequest": 1347,
        "skipped": [{"namespace": "ci", "pipeline": "docs", "reason": "no changed file matches paths [\"docs/**\"]"}],
        "cancelled": [{"namespace": "ci", "name": "app-pr-9f8e7d6c"}]
    }));
    assert_eq!(pr.pull_request, Some(1347));
    assert_eq!(pr.cancelled[0].name, "app-pr-9f8e7d6c");
    assert_eq!(pr.skipped[0].pipeline, "docs");
    documented::<Pong>(json!({"pong": true}));
    documented::<Ignored>(json!({"ignored": "event \"issues\" is not handled"}));
}

#[test]
fn cache_and_artifact_bodies() {
    let sha = "7".repeat(64);
    let manifest = json!({"kind": "tar", "chunks": [{"sha256": sha, "size": 5120}]});
    let commit: CacheCommit = documented(json!({"manifest": manifest}));
    assert_eq!(commit.manifest.total_size(), 5120);
    let missing: StoreAnswer =
        documented(json!({"state": "missing", "missing": [sha], "sizeBytes": 5120}));
    assert_eq!(missing.state, StoreState::Missing);
    let saved: StoreAnswer = documented(json!({"state": "saved", "sizeBytes": 5120}));
    assert!(saved.missing.is_empty());
    documented::<StoreAnswer>(json!({"state": "alreadySaved", "sizeBytes": 5120}));
    let hit: CacheLookup = documented(json!({
        "outcome": "fallback", "key": "cargo-linux-0a1b2c3d4e5f6a7b", "manifest": manifest, "sizeBytes": 5120
    }));
    assert_eq!(hit.key.as_deref(), Some("cargo-linux-0a1b2c3d4e5f6a7b"));
    documented::<CacheLookup>(json!({"outcome": "miss"}));
    let list: CacheList = documented(json!({"entries": [{
        "namespace": "ci", "scope": "git:https://git.example/acme/app", "key": "cargo-1",
        "sizeBytes": 5120, "created": "2026-01-02T03:04:05Z", "lastUsed": "2026-01-02T03:04:06Z"
    }]}));
    assert_eq!(list.entries[0].scope, "git:https://git.example/acme/app");
    documented::<CachePruned>(json!({"removed": []}));
    let prune: CachePrune = documented(json!({"namespace": "ci", "unusedForSecs": 3600}));
    assert_eq!(prune.unused_for_secs, Some(3600));
    documented::<CachePrune>(json!({"key": "cargo-1"}));
    documented::<CachePrune>(json!({"all": true}));
    assert!(serde_json::from_value::<CachePrune>(json!({"keys": "x"})).is_err());
    let put: ArtifactPut = documented(json!({"manifest": manifest, "sizeBytes": 5000, "files": 2}));
    assert_eq!(put.files, 2);
    let artifacts: ArtifactList = documented(json!({"artifacts": [{
        "job": "build", "name": "dist", "kind": "tar", "sizeBytes": 5000, "files": 2,
        "created": "2026-01-02T03:04:05Z"
    }]}));
    assert!(artifacts.artifacts[0].manifest.is_none());
}

#[test]
fn memo_bodies() {
    let sha = "7".repeat(64);
    let put: MemoPut = documented(json!({"hash": sha, "outputs": {"digest": "abc"}}));
    assert_eq!(put.outputs["digest"], "abc");
    documented::<MemoPut>(json!({"hash": sha}));
    assert!(serde_json::from_value::<MemoPut>(json!({"hash": sha, "ttl": 1})).is_err());
    documented::<MemoRecorded>(json!({
        "scope": "git:https://git.example/acme/app", "finished": "2026-01-02T03:04:05Z"
    }));
    let req: MemoLookupRequest =
        documented(json!({"hash": sha, "ttlMs": 86400000, "artifacts": ["bin"]}));
    assert_eq!(req.ttl_ms, 86_400_000);
    documented::<MemoLookupRequest>(json!({"hash": sha, "ttlMs": 1000}));
    let hit: MemoLookup = documented(json!({
        "outcome": "hit", "fromRun": "app-7f3a2", "finished": "2026-01-02T03:04:05Z",
        "outputs": {"digest": "abc"},
        "artifacts": [{"job": "build", "name": "bin", "kind": "file", "sizeBytes": 12, "files": 1,
            "created": "2026-01-02T03:04:06Z"}]
    }));
    assert_eq!(hit.from_run.as_deref(), Some("app-7f3a2"));
    assert_eq!(hit.artifacts[0].name, "bin");
    assert_eq!(
        documented::<MemoLookup>(json!({"outcome": "miss"})),
        MemoLookup::miss()
    );
}

#[test]
fn job_pod_bodies() {
    let r: JobPodRequest = documented(json!({
        "placement": {"pool": null, "cpu": "100m", "memory": "64Mi", "node_selector": {"disk": "ssd"}},
        "item": "b"
    }));
    let p = r.placement.as_ref().unwrap();
    assert_eq!(p.cpu.as_deref(), Some("100m"));
    assert_eq!(p.node_selector["disk"], "ssd");
    assert_eq!(r.item.as_deref(), Some("b"));
    let bad = serde_json::from_value::<JobPodRequest>(json!({"placement": null, "pod": "x"}));
    assert!(bad.is_err());
    let v: JobPodView = documented(json!({
        "name": "build-main-test-3-a1-1a2b3c4d", "phase": "ended", "detail": "exit code 137 (OOMKilled)"
    }));
    assert_eq!(v.phase, JobPodPhase::Ended);
    let v: JobPodView = documented(json!({"name": "j", "phase": "running"}));
    assert_eq!(v.detail, None);
}
