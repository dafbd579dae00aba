//! One suite, every backend: the same cases against embedded (SQLite + files), shared
//! (PostgreSQL + an S3 server, both real processes) and the object-store layout on a local file
//! system.

mod support;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use sparkwing_state::{
    change_group_with, ingest, ingest_lines, ArtifactRecord, ByteStream, CacheRecord, Delivery,
    GateDecision, GateRecorded, GroupEntry, IngestReport, LogFeedEvent, LogIndex, LogKey, LogLine,
    MemoRecord, RetentionPolicy, RunFilter, RunKey, RunSummary, SessionRecord, StateError,
    TokenRecord, ViewJson,
};
use support::Backend;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::support::embedded().await).await }) *
        }
        mod shared {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::support::shared().await).await }) *
        }
        mod objects_on_files {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::support::objects_on_files().await).await }) *
        }
    };
}

conformance!(
    tokens,
    runs_paging_is_stable_across_inserts,
    runs_filters,
    job_states,
    deliveries_are_deduplicated,
    gate_decisions_first_one_stands,
    log_index_only_moves_forward,
    logs_append_read_and_tail,
    logs_refuse_gaps_storing_nothing,
    ingest_caps_a_log_with_a_marker,
    blobs_are_verified,
    manifests_and_archives,
    retention_removes_finished_runs_only,
    names_that_could_escape_are_refused,
    tokens_are_deleted_by_id_and_by_run,
    deliveries_are_found_and_forgotten,
    manifests_and_blobs_are_listed,
    sessions,
    ingest_catches_up_with_a_log_index_behind_its_content,
    the_log_feed_tells_every_subscriber,
    runs_are_looked_up_many_at_once,
    concurrency_groups_change_atomically,
    concurrency_groups_keep_jobs_entries_apart,
    a_fan_outs_job_names_are_stored,
    job_states_keep_their_outputs,
    cache_entries_first_commit_stands,
    artifacts_are_kept_per_run_and_go_with_it,
    the_blob_lock_keeps_writers_and_collection_apart,
    memo_results_newest_first_and_go_with_their_run,
);

/// A job a fan-out expanded into is named `test[3]`: its state and log are stored under that name
/// (a path part or an object key like any other), apart from `test[1]`'s.
async fn a_fan_outs_job_names_are_stored(b: Backend) {
    let r = RunKey::new("ci", "build-1");
    b.meta
        .put_job_state(&r, "test[3]", &json!({"state": "succeeded"}))
        .await
        .unwrap();
    b.meta
        .put_job_state(&r, "test[1]", &json!({"state": "failed"}))
        .await
        .unwrap();
    assert_eq!(
        b.meta.job_states(&r).await.unwrap(),
        vec![
            ("test[1]".to_string(), json!({"state": "failed"})),
            ("test[3]".to_string(), json!({"state": "succeeded"})),
        ]
    );
    assert!(b
        .meta
        .put_job_state(&r, "test[x]", &json!({}))
        .await
        .is_err());
    let three = LogKey::new("ci", "build-1", "test[3]");
    let one = LogKey::new("ci", "build-1", "test[1]");
    b.content.append_log(&three, &lines(1..=3)).await.unwrap();
    b.content.append_log(&one, &lines(1..=1)).await.unwrap();
    assert_eq!(
        seqs(&b.content.read_log_after(&three, 0, 10).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(b.content.log_last_seq(&one).await.unwrap(), 1);
    b.content.delete_run_logs(&r).await.unwrap();
    assert_eq!(b.content.log_last_seq(&three).await.unwrap(), 0);
}

async fn tokens_are_deleted_by_id_and_by_run(b: Backend) {
    let m = &b.meta;
    let alice = token("alice", 10);
    let mut r1 = token("r1", 20);
    r1.run = Some(RunKey::new("ci", "build-1"));
    let mut r2 = token("r2", 30);
    r2.run = Some(RunKey::new("ci", "build-1"));
    let mut other = token("r3", 40);
    other.run = Some(RunKey::new("ci", "build-2"));
    for t in [&alice, &r1, &r2, &other] {
        m.insert_token(t).await.unwrap();
    }
    assert_eq!(
        m.delete_run_tokens(&RunKey::new("ci", "build-1"))
            .await
            .unwrap(),
        2
    );
    assert!(m.find_token_by_hash("hash-r1").await.unwrap().is_none());
    assert!(m.delete_token("alice").await.unwrap());
    assert!(!m.delete_token("alice").await.unwrap());
    let left: Vec<String> = m
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(left, ["r3"]);
}

async fn deliveries_are_found_and_forgotten(b: Backend) {
    let m = &b.meta;
    assert_eq!(m.find_delivery("d-1").await.unwrap(), None);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    m.record_delivery("d-1", &json!({"runs": ["a"]}))
        .await
        .unwrap();
    let (answer, at) = m.find_delivery("d-1").await.unwrap().unwrap();
    assert_eq!(answer, json!({"runs": ["a"]}));
    assert!(at >= before, "{at} < {before}");
    assert!(m.delete_delivery("d-1").await.unwrap());
    assert!(!m.delete_delivery("d-1").await.unwrap());
    assert_eq!(
        m.record_delivery("d-1", &json!({"runs": ["b"]}))
            .await
            .unwrap(),
        Delivery::First
    );
}

async fn manifests_and_blobs_are_listed(b: Backend) {
    let c = &b.content;
    assert!(c.list_manifests().await.unwrap().is_empty());
    assert!(c.list_blobs().await.unwrap().is_empty());
    for id in ["m2", "m1"] {
        c.put_manifest(id, Bytes::from_static(b"{}")).await.unwrap();
    }
    let manifests = c.list_manifests().await.unwrap();
    let names: Vec<&str> = manifests.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["m1", "m2"]);
    assert!(manifests.iter().all(|i| i.size == 2 && i.modified_ms > 0));
    let (x, y) = (b"x".to_vec(), b"yy".to_vec());
    for d in [&x, &y] {
        c.put_blob(&sha(d), body(d, 1)).await.unwrap();
    }
    let mut want = vec![(sha(&x), 1), (sha(&y), 2)];
    want.sort();
    let got: Vec<(String, u64)> = c
        .list_blobs()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.size))
        .collect();
    assert_eq!(got, want);
}

fn token(id: &str, created: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: format!("hash-{id}"),
        principal: format!("{id}@example.com"),
        scopes: vec!["runs:read".into()],
        created_ms: created,
        expires_ms: None,
        revoked: false,
        run: None,
        upload: None,
        pool_uid: None,
    }
}

async fn tokens(b: Backend) {
    let m = &b.meta;
    let alice = token("alice", 10);
    let mut runner = token("runner", 20);
    runner.run = Some(RunKey::new("ci", "build-1"));
    runner.upload = Some("up1".into());
    runner.expires_ms = Some(1_000);
    let mut pool = token("pool", 30);
    pool.pool_uid = Some("uid-1".into());
    pool.expires_ms = Some(5_000);
    for t in [&pool, &alice, &runner] {
        m.insert_token(t).await.unwrap();
    }
    assert_eq!(
        m.find_token_by_hash("hash-runner").await.unwrap(),
        Some(runner.clone())
    );
    assert_eq!(m.find_token_by_hash("nope").await.unwrap(), None);
    // Listed oldest first, whatever the insertion order.
    let ids: Vec<_> = m
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["alice", "runner", "pool"]);

    assert!(m.revoke_token("alice").await.unwrap());
    assert!(!m.revoke_token("ghost").await.unwrap());
    assert!(
        m.find_token_by_hash("hash-alice")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    // Tokens of a run are revoked with it; once only.
    assert_eq!(
        m.revoke_run_tokens(&RunKey::new("ci", "build-1"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        m.revoke_run_tokens(&RunKey::new("ci", "build-1"))
            .await
            .unwrap(),
        0
    );
    assert!(
        m.find_token_by_hash("hash-runner")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    // Expiry: at 1000 the runner token goes, the pool token and the person's stay.
    assert_eq!(
        m.collect_expired_tokens(999).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(m.collect_expired_tokens(1_000).await.unwrap(), ["runner"]);
    assert_eq!(m.find_token_by_hash("hash-runner").await.unwrap(), None);
    assert_eq!(m.collect_expired_tokens(i64::MAX).await.unwrap(), ["pool"]);
    let ids: Vec<_> = m
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["alice"]);

    // An insert of an existing id replaces the record.
    let mut again = alice.clone();
    again.scopes = vec!["admin".into()];
    m.insert_token(&again).await.unwrap();
    assert_eq!(
        m.find_token_by_hash("hash-alice")
            .await
            .unwrap()
            .unwrap()
            .scopes,
        ["admin"]
    );
}

fn run(ns: &str, name: &str, pipeline: &str, phase: &str, created: i64) -> RunSummary {
    RunSummary {
        key: RunKey::new(ns, name),
        pipeline: pipeline.into(),
        phase: phase.into(),
        created_ms: created,
        finished_ms: matches!(phase, "Succeeded" | "Failed" | "Cancelled").then_some(created + 5),
        view: ViewJson::new(&json!({"name": name, "pipeline": pipeline})).unwrap(),
    }
}

fn names(runs: &[RunSummary]) -> Vec<String> {
    runs.iter()
        .map(|r| format!("{}/{}", r.key.namespace, r.key.name))
        .collect()
}

async fn runs_paging_is_stable_across_inserts(b: Backend) {
    let m = &b.meta;
    // 25 runs; created times repeat (every 3 share one), so order falls back to ns, name.
    for i in 0..25 {
        let ns = if i % 2 == 0 { "a" } else { "b" };
        m.upsert_run(&run(
            ns,
            &format!("r{i:02}"),
            "build",
            "Succeeded",
            1_000 + (i / 3) * 10,
        ))
        .await
        .unwrap();
    }
    let all = m.list_runs(&RunFilter::default(), None, 500).await.unwrap();
    assert_eq!(all.runs.len(), 25);
    assert_eq!(all.next, None);
    // Newest first, then namespace, then name.
    let keys: Vec<_> = all
        .runs
        .iter()
        .map(|r| (-r.created_ms, r.key.namespace.clone(), r.key.name.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    let p1 = m.list_runs(&RunFilter::default(), None, 10).await.unwrap();
    assert_eq!(names(&p1.runs), names(&all.runs[..10]));
    // Runs added meanwhile, newer than everything and in the middle of page 1's times: the next
    // page still starts right after page 1's last run.
    m.upsert_run(&run("a", "newer", "build", "Running", 9_999))
        .await
        .unwrap();
    let last = &p1.runs[9];
    m.upsert_run(&run(
        "a",
        "same-time",
        "build",
        "Running",
        last.created_ms + 1,
    ))
    .await
    .unwrap();
    let p2 = m
        .list_runs(&RunFilter::default(), p1.next.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(names(&p2.runs), names(&all.runs[10..20]));
    let p3 = m
        .list_runs(&RunFilter::default(), p2.next.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(names(&p3.runs), names(&all.runs[20..]));
    assert_eq!(p3.next, None);

    // A run updated in place keeps one entry.
    m.upsert_run(&run("a", "newer", "build", "Failed", 9_999))
        .await
        .unwrap();
    let again = m.list_runs(&RunFilter::default(), None, 500).await.unwrap();
    assert_eq!(again.runs.len(), 27);
    assert_eq!(again.runs[0].phase, "Failed");
    assert_eq!(
        m.get_run(&RunKey::new("a", "newer"))
            .await
            .unwrap()
            .unwrap()
            .finished_ms,
        Some(10_004)
    );
    assert_eq!(m.get_run(&RunKey::new("a", "ghost")).await.unwrap(), None);

    let err = m
        .list_runs(&RunFilter::default(), Some("not-a-cursor"), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StateError::Invalid { what: "cursor", .. }),
        "{err}"
    );
    assert!(!err.retryable());
}

async fn runs_filters(b: Backend) {
    let m = &b.meta;
    let runs = [
        run("ci", "b1", "build", "Succeeded", 100),
        run("ci", "b2", "build", "Failed", 200),
        run("ci", "d1", "deploy", "Failed", 300),
        run("prod", "b3", "build", "Failed", 400),
        run("prod", "d2", "deploy", "Running", 500),
    ];
    for r in &runs {
        m.upsert_run(r).await.unwrap();
    }
    let list = |f: RunFilter| async move { names(&m.list_runs(&f, None, 100).await.unwrap().runs) };
    let f = |ns: Option<&str>, p: Option<&str>, ph: Option<&str>, since: Option<i64>| RunFilter {
        namespace: ns.map(Into::into),
        pipeline: p.map(Into::into),
        phase: ph.map(Into::into),
        since_ms: since,
    };
    assert_eq!(
        list(f(Some("ci"), None, None, None)).await,
        ["ci/d1", "ci/b2", "ci/b1"]
    );
    assert_eq!(
        list(f(None, Some("build"), None, None)).await,
        ["prod/b3", "ci/b2", "ci/b1"]
    );
    assert_eq!(
        list(f(None, None, Some("Failed"), None)).await,
        ["prod/b3", "ci/d1", "ci/b2"]
    );
    assert_eq!(
        list(f(None, None, None, Some(300))).await,
        ["prod/d2", "prod/b3", "ci/d1"]
    );
    assert_eq!(
        list(f(Some("ci"), Some("build"), Some("Failed"), Some(150))).await,
        ["ci/b2"]
    );
    assert!(list(f(Some("nope"), None, None, None)).await.is_empty());
    // Paging with filters.
    let filter = f(None, None, Some("Failed"), None);
    let p1 = m.list_runs(&filter, None, 2).await.unwrap();
    assert_eq!(names(&p1.runs), ["prod/b3", "ci/d1"]);
    let p2 = m.list_runs(&filter, p1.next.as_deref(), 2).await.unwrap();
    assert_eq!(names(&p2.runs), ["ci/b2"]);
    assert_eq!(p2.next, None);
}

async fn job_states(b: Backend) {
    let m = &b.meta;
    let r = RunKey::new("ci", "build-1");
    m.put_job_state(&r, "test", &json!({"state": "running"}))
        .await
        .unwrap();
    m.put_job_state(&r, "compile", &json!({"state": "succeeded"}))
        .await
        .unwrap();
    m.put_job_state(&r, "test", &json!({"state": "failed", "exit": 1}))
        .await
        .unwrap();
    m.put_job_state(&RunKey::new("ci", "other"), "x", &json!(1))
        .await
        .unwrap();
    assert_eq!(
        m.job_states(&r).await.unwrap(),
        vec![
            ("compile".to_string(), json!({"state": "succeeded"})),
            ("test".to_string(), json!({"state": "failed", "exit": 1})),
        ]
    );
    assert!(m
        .job_states(&RunKey::new("ci", "none"))
        .await
        .unwrap()
        .is_empty());
}

fn decision(decision: &str, by: &str, comment: Option<&str>, timed_out: bool) -> GateDecision {
    GateDecision {
        decision: decision.into(),
        by: by.into(),
        at_ms: 1_700_000_000_123,
        comment: comment.map(Into::into),
        timed_out,
    }
}

async fn gate_decisions_first_one_stands(b: Backend) {
    let m = &b.meta;
    let r = RunKey::new("ci", "deploy-1");
    assert_eq!(m.gate_decision(&r, "approve-prod").await.unwrap(), None);
    assert!(m.gate_decisions(&r).await.unwrap().is_empty());
    let ana = decision("approve", "ana", Some("looks good"), false);
    assert_eq!(
        m.record_gate_decision(&r, "approve-prod", &ana)
            .await
            .unwrap(),
        GateRecorded::First
    );
    // A second decision, a person's or the timeout's, does not replace the first.
    let timeout = decision("reject", "timeout", None, true);
    assert_eq!(
        m.record_gate_decision(&r, "approve-prod", &timeout)
            .await
            .unwrap(),
        GateRecorded::Standing(ana.clone())
    );
    assert_eq!(
        m.gate_decision(&r, "approve-prod").await.unwrap(),
        Some(ana.clone())
    );
    // Other gates and other runs are their own.
    assert_eq!(
        m.record_gate_decision(&r, "approve-eu", &timeout)
            .await
            .unwrap(),
        GateRecorded::First
    );
    assert_eq!(
        m.gate_decision(&RunKey::new("ci", "deploy-2"), "approve-prod")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        m.gate_decisions(&r).await.unwrap(),
        vec![
            ("approve-eu".to_string(), timeout),
            ("approve-prod".to_string(), ana),
        ]
    );
    assert!(matches!(
        m.record_gate_decision(&r, "../x", &decision("approve", "ana", None, false))
            .await,
        Err(StateError::Invalid { .. })
    ));
}

async fn deliveries_are_deduplicated(b: Backend) {
    let m = &b.meta;
    assert_eq!(
        m.record_delivery("d-1", &json!({"runs": ["a"]}))
            .await
            .unwrap(),
        Delivery::First
    );
    assert_eq!(
        m.record_delivery("d-1", &json!({"runs": ["b"]}))
            .await
            .unwrap(),
        Delivery::Duplicate(json!({"runs": ["a"]}))
    );
    assert_eq!(
        m.record_delivery("d-2", &json!(null)).await.unwrap(),
        Delivery::First
    );
    // Concurrent first deliveries of one id: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move { m.record_delivery("d-3", &json!(i)).await.unwrap() })
        })
        .collect();
    let mut firsts = 0;
    for t in tasks {
        if t.await.unwrap() == Delivery::First {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
}

async fn log_index_only_moves_forward(b: Backend) {
    let m = &b.meta;
    let k = LogKey::new("ci", "build-1", "compile");
    assert_eq!(m.log_index(&k).await.unwrap(), None);
    let ix = |next_seq, capped| LogIndex {
        next_seq,
        bytes: next_seq * 10,
        lines: next_seq - 1,
        capped,
    };
    assert_eq!(
        m.advance_log_index(&k, &ix(11, false)).await.unwrap(),
        ix(11, false)
    );
    // A slower writer's older view does not move it back.
    assert_eq!(
        m.advance_log_index(&k, &ix(5, false)).await.unwrap(),
        ix(11, false)
    );
    assert_eq!(
        m.advance_log_index(&k, &ix(11, true)).await.unwrap(),
        ix(11, true)
    );
    assert_eq!(
        m.advance_log_index(&k, &ix(21, true)).await.unwrap(),
        ix(21, true)
    );
    assert_eq!(m.log_index(&k).await.unwrap(), Some(ix(21, true)));
    m.advance_log_index(&LogKey::new("ci", "build-1", "a-test"), &ix(2, false))
        .await
        .unwrap();
    assert_eq!(
        m.log_jobs(&RunKey::new("ci", "build-1")).await.unwrap(),
        ["a-test", "compile"]
    );
}

fn lines(seqs: std::ops::RangeInclusive<u64>) -> Vec<LogLine> {
    seqs.map(|s| LogLine::new(s, format!("line {s} {}", "x".repeat((s % 7) as usize))))
        .collect()
}

fn seqs(lines: &[LogLine]) -> Vec<u64> {
    lines.iter().map(|l| l.seq).collect()
}

async fn logs_append_read_and_tail(b: Backend) {
    let c = &b.content;
    let k = LogKey::new("ci", "build-1", "compile");
    assert_eq!(c.log_last_seq(&k).await.unwrap(), 0);
    assert!(c.read_log_tail(&k, 10).await.unwrap().is_empty());
    // 3,000 lines in batches of 100 (crossing the file index's stride many times).
    for start in (1..=3_000).step_by(100) {
        let r = c.append_log(&k, &lines(start..=start + 99)).await.unwrap();
        assert_eq!((r.accepted, r.duplicates), (100, 0));
        assert!(r.bytes > 0);
    }
    // A retried batch overlapping the end: its old lines are duplicates, its new lines stored.
    let r = c.append_log(&k, &lines(2_951..=3_010)).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (10, 50));
    let r = c.append_log(&k, &lines(1..=5)).await.unwrap();
    assert_eq!((r.accepted, r.duplicates, r.bytes), (0, 5, 0));
    assert_eq!(c.log_last_seq(&k).await.unwrap(), 3_010);

    let page = c.read_log_after(&k, 0, 7).await.unwrap();
    assert_eq!(seqs(&page), (1..=7).collect::<Vec<_>>());
    assert_eq!(page[3], lines(4..=4)[0]);
    let page = c.read_log_after(&k, 1_234, 500).await.unwrap();
    assert_eq!(seqs(&page), (1_235..=1_734).collect::<Vec<_>>());
    let page = c.read_log_after(&k, 3_000, 100).await.unwrap();
    assert_eq!(seqs(&page), (3_001..=3_010).collect::<Vec<_>>());
    assert!(c.read_log_after(&k, 3_010, 100).await.unwrap().is_empty());
    let tail = c.read_log_tail(&k, 100).await.unwrap();
    assert_eq!(seqs(&tail), (2_911..=3_010).collect::<Vec<_>>());
    assert_eq!(tail.last().unwrap(), &lines(3_010..=3_010)[0]);
    let tail = c.read_log_tail(&k, 5_000).await.unwrap();
    assert_eq!(seqs(&tail), (1..=3_010).collect::<Vec<_>>());

    // Another job's log is its own.
    let other = LogKey::new("ci", "build-1", "test");
    c.append_log(&other, &lines(1..=1)).await.unwrap();
    assert_eq!(c.log_last_seq(&other).await.unwrap(), 1);

    c.delete_run_logs(&RunKey::new("ci", "build-1"))
        .await
        .unwrap();
    assert_eq!(c.log_last_seq(&k).await.unwrap(), 0);
    assert!(c.read_log_tail(&k, 10).await.unwrap().is_empty());
}

async fn logs_refuse_gaps_storing_nothing(b: Backend) {
    let c = &b.content;
    let k = LogKey::new("ci", "build-1", "compile");
    c.append_log(&k, &lines(1..=3)).await.unwrap();
    // A hole after the stored lines, a hole inside the batch, a batch out of order.
    for bad in [
        lines(5..=6),
        [lines(4..=4), lines(6..=6)].concat(),
        [lines(5..=5), lines(4..=4)].concat(),
    ] {
        let err = c.append_log(&k, &bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                StateError::LogGap {
                    expected: 4 | 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.retryable());
        assert_eq!(c.log_last_seq(&k).await.unwrap(), 3);
    }
    let err = c.append_log(&k, &lines(7..=8)).await.unwrap_err();
    assert!(
        matches!(&err, StateError::LogGap { job, expected: 4, got: 7 } if job == "compile"),
        "{err}"
    );
    assert_eq!(
        seqs(&c.read_log_after(&k, 0, 100).await.unwrap()),
        [1, 2, 3]
    );
    // Resent from the expected seq, it is taken.
    let r = c.append_log(&k, &lines(4..=8)).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (5, 0));
    let first = c
        .append_log(&LogKey::new("ci", "build-1", "new"), &lines(2..=3))
        .await;
    assert!(matches!(
        first,
        Err(StateError::LogGap {
            expected: 1,
            got: 2,
            ..
        })
    ));
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn body(data: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

async fn collect(s: ByteStream) -> Vec<u8> {
    s.map(|c| c.unwrap().to_vec()).concat().await
}

async fn blobs_are_verified(b: Backend) {
    let c = &b.content;
    let small = b"hello, blob".to_vec();
    // Past the single-PUT size: a multipart upload on S3.
    let big: Vec<u8> = (0..9 * 1024 * 1024 + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    for data in [&small, &big] {
        let h = sha(data);
        assert!(!c.blob_exists(&h).await.unwrap());
        assert_eq!(
            c.put_blob(&h, body(data, 64 * 1024)).await.unwrap(),
            data.len() as u64
        );
        assert!(c.blob_exists(&h).await.unwrap());
        assert_eq!(c.blob_size(&h).await.unwrap(), Some(data.len() as u64));
        assert_eq!(&collect(c.get_blob(&h).await.unwrap().unwrap()).await, data);
        assert_eq!(
            c.get_blob_range(&h, 2..7).await.unwrap().unwrap(),
            &data[2..7]
        );
        // A range past the end is cut at the end.
        let len = data.len() as u64;
        assert_eq!(
            c.get_blob_range(&h, len - 3..len + 100)
                .await
                .unwrap()
                .unwrap(),
            &data[data.len() - 3..]
        );
        // Stored again: kept, same size.
        assert_eq!(c.put_blob(&h, body(data, 1000)).await.unwrap(), len);
    }

    // A body that does not hash to its name is refused and nothing is visible, small or big.
    for data in [b"forged".to_vec(), big[1..].to_vec()] {
        let claimed = sha(b"something else");
        let err = c
            .put_blob(&claimed, body(&data, 64 * 1024))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StateError::HashMismatch { actual, .. } if *actual == sha(&data)),
            "{err}"
        );
        assert!(!err.retryable());
        assert!(!c.blob_exists(&claimed).await.unwrap());
        assert!(c.get_blob(&claimed).await.unwrap().is_none());
    }
    // A body that fails midway: nothing visible either.
    let h = sha(&big);
    let missing = sha(b"never complete");
    let failing: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::from(big[..1024].to_vec())),
        Err(std::io::Error::other("client went away")),
    ]));
    assert!(matches!(
        c.put_blob(&missing, failing).await,
        Err(StateError::Body { .. })
    ));
    assert!(!c.blob_exists(&missing).await.unwrap());

    assert!(c.delete_blob(&h).await.unwrap());
    assert!(!c.delete_blob(&h).await.unwrap());
    assert!(c.get_blob_range(&h, 0..1).await.unwrap().is_none());
    assert_eq!(c.blob_size(&h).await.unwrap(), None);
}

async fn manifests_and_archives(b: Backend) {
    let c = &b.content;
    assert_eq!(c.get_manifest("m1").await.unwrap(), None);
    c.put_manifest("m1", Bytes::from_static(b"{\"files\":[]}"))
        .await
        .unwrap();
    c.put_manifest("m1", Bytes::from_static(b"{\"files\":[1]}"))
        .await
        .unwrap();
    assert_eq!(
        c.get_manifest("m1").await.unwrap().unwrap(),
        &b"{\"files\":[1]}"[..]
    );
    assert!(c.delete_manifest("m1").await.unwrap());
    assert!(!c.delete_manifest("m1").await.unwrap());
    assert_eq!(c.get_manifest("m1").await.unwrap(), None);

    let r = RunKey::new("ci", "build-1");
    assert_eq!(c.get_archive(&r).await.unwrap(), None);
    c.put_archive(&r, Bytes::from_static(b"{\"run\":1}"))
        .await
        .unwrap();
    assert_eq!(
        c.get_archive(&r).await.unwrap().unwrap(),
        &b"{\"run\":1}"[..]
    );
    assert_eq!(
        c.get_archive(&RunKey::new("other", "build-1"))
            .await
            .unwrap(),
        None
    );
    assert!(c.delete_archive(&r).await.unwrap());
    assert_eq!(c.get_archive(&r).await.unwrap(), None);
}

async fn retention_removes_finished_runs_only(b: Backend) {
    let m = &b.meta;
    // Finished at 105, 205, ... 605 (created + 5); one running, oldest of all.
    for (i, name) in ["r1", "r2", "r3", "r4", "r5", "r6"].iter().enumerate() {
        m.upsert_run(&run("ci", name, "build", "Succeeded", 100 * (i as i64 + 1)))
            .await
            .unwrap();
    }
    m.upsert_run(&run("ci", "live", "build", "Running", 1))
        .await
        .unwrap();
    let r1 = RunKey::new("ci", "r1");
    m.put_job_state(&r1, "compile", &json!(1)).await.unwrap();
    m.record_gate_decision(&r1, "approve", &decision("approve", "ana", None, false))
        .await
        .unwrap();
    m.advance_log_index(
        &LogKey::new("ci", "r1", "compile"),
        &LogIndex {
            next_seq: 3,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut t = token("runner-r1", 1);
    t.run = Some(r1.clone());
    m.insert_token(&t).await.unwrap();
    m.insert_token(&token("person", 1)).await.unwrap();

    assert!(m
        .apply_retention(&RetentionPolicy::default())
        .await
        .unwrap()
        .is_empty());
    // By age: finished before 300 (r1 at 105, r2 at 205).
    let gone = m
        .apply_retention(&RetentionPolicy {
            finished_before_ms: Some(300),
            keep_finished: None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gone, [RunKey::new("ci", "r1"), RunKey::new("ci", "r2")]);
    assert_eq!(m.get_run(&r1).await.unwrap(), None);
    assert!(m.job_states(&r1).await.unwrap().is_empty());
    assert!(m.gate_decisions(&r1).await.unwrap().is_empty());
    assert_eq!(
        m.log_index(&LogKey::new("ci", "r1", "compile"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(m.find_token_by_hash("hash-runner-r1").await.unwrap(), None);
    assert!(m.find_token_by_hash("hash-person").await.unwrap().is_some());
    // By count: keep the newest 2 finished (r6, r5).
    let gone = m
        .apply_retention(&RetentionPolicy {
            finished_before_ms: None,
            keep_finished: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gone, [RunKey::new("ci", "r3"), RunKey::new("ci", "r4")]);
    let left = m.list_runs(&RunFilter::default(), None, 100).await.unwrap();
    assert_eq!(names(&left.runs), ["ci/r6", "ci/r5", "ci/live"]);
    // A spared run stays whatever the policy says.
    let spare_r5 = RetentionPolicy {
        finished_before_ms: Some(550),
        keep_finished: Some(0),
        spare: [RunKey::new("ci", "r5")].into(),
    };
    let gone = m.apply_retention(&spare_r5).await.unwrap();
    assert_eq!(gone, [RunKey::new("ci", "r6")]);
    // Both at once; the running run stays whatever its age.
    let gone = m
        .apply_retention(&RetentionPolicy {
            finished_before_ms: Some(550),
            keep_finished: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gone, [RunKey::new("ci", "r5")]);
    assert_eq!(
        names(
            &m.list_runs(&RunFilter::default(), None, 100)
                .await
                .unwrap()
                .runs
        ),
        ["ci/live"]
    );
}

async fn names_that_could_escape_are_refused(b: Backend) {
    let c = &b.content;
    let m = &b.meta;
    for bad in ["..", "../x", "a/b", ".hidden", ""] {
        let invalid = |r: Result<_, StateError>| matches!(r, Err(StateError::Invalid { .. }));
        assert!(
            invalid(
                c.append_log(&LogKey::new("ci", "r", bad), &lines(1..=1))
                    .await
                    .map(drop)
            ),
            "{bad:?}"
        );
        assert!(
            invalid(
                c.read_log_tail(&LogKey::new(bad, "r", "j"), 1)
                    .await
                    .map(drop)
            ),
            "{bad:?}"
        );
        assert!(
            invalid(c.put_archive(&RunKey::new("ci", bad), Bytes::new()).await),
            "{bad:?}"
        );
        assert!(invalid(c.get_manifest(bad).await.map(drop)), "{bad:?}");
        assert!(
            invalid(
                m.put_job_state(&RunKey::new("ci", "r"), bad, &json!(1))
                    .await
            ),
            "{bad:?}"
        );
    }
    let upper = "A".repeat(64);
    for bad in ["../../etc/passwd", "abc", upper.as_str()] {
        assert!(
            matches!(c.blob_size(bad).await, Err(StateError::Invalid { .. })),
            "{bad:?}"
        );
    }
}

async fn ingest_caps_a_log_with_a_marker(b: Backend) {
    let (m, c) = (&*b.meta, &*b.content);
    let k = LogKey::new("ci", "build-1", "compile");
    let line = |s: u64| LogLine::new(s, format!("{s:04} {}", "y".repeat(40)));
    let size = serde_json::to_vec(&line(1)).unwrap().len() as u64 + 1;
    // Room for 10 lines and a bit.
    let cap = size * 10 + size / 2;
    let r = ingest(m, c, &k, (1..=6).rev().map(line).collect(), cap)
        .await
        .unwrap();
    assert_eq!(
        r,
        IngestReport {
            accepted: 6,
            duplicates: 0,
            dropped: 0
        }
    );
    // A retry overlapping the stored lines, passing the cap at seq 11.
    let r = ingest(m, c, &k, (5..=14).map(line).collect(), cap)
        .await
        .unwrap();
    assert_eq!(
        r,
        IngestReport {
            accepted: 4,
            duplicates: 2,
            dropped: 4
        }
    );
    let stored = c.read_log_after(&k, 0, 100).await.unwrap();
    assert_eq!(seqs(&stored), (1..=11).collect::<Vec<_>>());
    let marker = stored.last().unwrap();
    assert!(marker.truncated);
    assert_eq!(marker.stream, sparkwing_state::LogStream::Stderr);
    assert_eq!(
        marker.line,
        format!(
            "sparkwing: this job's log reached its limit of {cap} bytes; later lines are dropped"
        )
    );
    let ix = m.log_index(&k).await.unwrap().unwrap();
    assert_eq!((ix.next_seq, ix.lines, ix.capped), (12, 11, true));
    // Past the cap: acknowledged, dropped, nothing stored; old seqs still duplicates.
    let r = ingest(m, c, &k, (10..=20).map(line).collect(), cap)
        .await
        .unwrap();
    assert_eq!(
        r,
        IngestReport {
            accepted: 0,
            duplicates: 2,
            dropped: 9
        }
    );
    assert_eq!(c.log_last_seq(&k).await.unwrap(), 11);
    let r = ingest(m, c, &k, (30..=31).map(line).collect(), cap)
        .await
        .unwrap();
    assert_eq!(
        r,
        IngestReport {
            accepted: 0,
            duplicates: 0,
            dropped: 2
        }
    );
    // Before the cap, a gap is still a gap.
    let err = ingest(
        m,
        c,
        &LogKey::new("ci", "build-1", "other"),
        vec![line(2)],
        cap,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            StateError::LogGap {
                expected: 1,
                got: 2,
                ..
            }
        ),
        "{err}"
    );
}

fn session(hash: &str, expires: i64) -> SessionRecord {
    SessionRecord {
        hash: hash.into(),
        token_id: format!("token-of-{hash}"),
        principal: "ada@example.com".into(),
        scopes: vec!["runs:read".into(), "runs:trigger".into()],
        csrf: format!("csrf-{hash}"),
        created_ms: 10,
        expires_ms: expires,
    }
}

async fn sessions(b: Backend) {
    let m = &b.meta;
    assert!(m.find_session("s1").await.unwrap().is_none());
    let (s1, s2, s3) = (session("s1", 100), session("s2", 200), session("s3", 300));
    for s in [&s1, &s2, &s3] {
        m.insert_session(s).await.unwrap();
    }
    assert_eq!(m.find_session("s1").await.unwrap(), Some(s1.clone()));
    // Inserting the same hash again replaces it.
    let mut renewed = s1.clone();
    renewed.expires_ms = 150;
    m.insert_session(&renewed).await.unwrap();
    assert_eq!(m.find_session("s1").await.unwrap(), Some(renewed));
    assert!(m.delete_session("s2").await.unwrap());
    assert!(!m.delete_session("s2").await.unwrap());
    assert!(m.find_session("s2").await.unwrap().is_none());
    // Expiry at or before now collects.
    assert_eq!(m.collect_expired_sessions(150).await.unwrap(), 1);
    assert!(m.find_session("s1").await.unwrap().is_none());
    assert_eq!(m.find_session("s3").await.unwrap(), Some(s3.clone()));
    // Revoking a token ends the sessions made from it, and only those.
    let mut other = session("s4", 400);
    other.token_id = "another-token".into();
    m.insert_session(&other).await.unwrap();
    assert_eq!(m.delete_token_sessions("token-of-s3").await.unwrap(), 1);
    assert!(m.find_session("s3").await.unwrap().is_none());
    assert_eq!(m.find_session("s4").await.unwrap(), Some(other));
    assert_eq!(m.delete_token_sessions("token-of-s3").await.unwrap(), 0);
}

async fn ingest_catches_up_with_a_log_index_behind_its_content(b: Backend) {
    let (m, c) = (&*b.meta, &*b.content);
    let k = LogKey::new("ci", "crashed-1", "build");
    // A writer stored lines 1-3 and died before the index followed.
    c.append_log(&k, &lines(1..=3)).await.unwrap();
    assert!(m.log_index(&k).await.unwrap().is_none());
    // Its retry: the stored lines are duplicates, the rest is taken, the index catches up.
    let got = ingest_lines(m, c, &k, lines(1..=5), u64::MAX)
        .await
        .unwrap();
    assert_eq!(
        got.report,
        IngestReport {
            accepted: 2,
            duplicates: 3,
            dropped: 0
        }
    );
    assert_eq!(seqs(&got.stored), vec![4, 5]);
    assert_eq!(m.log_index(&k).await.unwrap().unwrap().next_seq, 6);
    // Behind again (7-8 stored alone): a batch that follows the content, not the index, is taken.
    c.append_log(&k, &lines(6..=8)).await.unwrap();
    let got = ingest_lines(m, c, &k, lines(9..=9), u64::MAX)
        .await
        .unwrap();
    assert_eq!(got.report.accepted, 1);
    assert_eq!(seqs(&got.stored), vec![9]);
    assert_eq!(
        seqs(&c.read_log_after(&k, 0, 100).await.unwrap()),
        (1..=9).collect::<Vec<_>>()
    );
    assert_eq!(m.log_index(&k).await.unwrap().unwrap().next_seq, 10);
    // A real hole is still refused.
    assert!(matches!(
        ingest_lines(m, c, &k, lines(11..=11), u64::MAX).await,
        Err(StateError::LogGap {
            expected: 10,
            got: 11,
            ..
        })
    ));
}

async fn the_log_feed_tells_every_subscriber(b: Backend) {
    let m = &b.meta;
    let k = LogKey::new("ci", "feed-1", "build");
    let Some(mut first) = m.log_feed() else {
        // One process, no feed: publishing is accepted and goes nowhere.
        m.publish_log_lines(&k, &lines(1..=2)).await.unwrap();
        return;
    };
    let mut second = m.log_feed().expect("a second subscriber");
    // The listener may still be connecting: publish until the first message arrives.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut big = lines(1..=400);
    big[200].line = "z".repeat(10_000);
    let received = loop {
        m.publish_log_lines(&k, &big).await.unwrap();
        match tokio::time::timeout(std::time::Duration::from_millis(200), first.recv()).await {
            Ok(Ok(ev)) => break ev,
            Ok(Err(e)) => panic!("feed: {e}"),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => panic!("nothing on the feed within 30 s"),
        }
    };
    // Every publication is the same messages in order; read the first publication whole.
    let mut events = vec![received];
    let mut seen: Vec<u64> = Vec::new();
    loop {
        let ev = events.pop().unwrap();
        match ev {
            LogFeedEvent::Lines { key, lines } => {
                assert_eq!(key, k);
                seen.extend(lines.iter().map(|l| l.seq));
            }
            LogFeedEvent::Reached { key, last_seq } => {
                assert_eq!(key, k);
                assert_eq!(last_seq, 201, "the long line is told by its seq");
                seen.push(last_seq);
            }
            LogFeedEvent::Resumed => continue,
        }
        if seen.last() == Some(&400) {
            break;
        }
        events.push(first.recv().await.unwrap());
    }
    // Publications before the first was received may repeat seqs; each is whole and ordered.
    let tail: Vec<u64> = seen[seen.len() - 400..].to_vec();
    assert_eq!(tail, (1..=400).collect::<Vec<_>>());
    // The second subscriber got the same.
    let mut second_seen = Vec::new();
    while second_seen.last() != Some(&400) {
        match second.recv().await.unwrap() {
            LogFeedEvent::Lines { lines, .. } => second_seen.extend(lines.iter().map(|l| l.seq)),
            LogFeedEvent::Reached { last_seq, .. } => second_seen.push(last_seq),
            LogFeedEvent::Resumed => {}
        }
    }
    assert_eq!(
        second_seen[second_seen.len() - 400..].to_vec(),
        (1..=400).collect::<Vec<_>>()
    );
}

async fn runs_are_looked_up_many_at_once(b: Backend) {
    let m = &b.meta;
    for r in [
        run("ci", "a", "build", "Succeeded", 100),
        run("ci", "b", "build", "Running", 200),
        run("prod", "a", "deploy", "Failed", 300),
    ] {
        m.upsert_run(&r).await.unwrap();
    }
    assert!(m.get_runs(&[]).await.unwrap().is_empty());
    let mut found = names(
        &m.get_runs(&[
            RunKey::new("prod", "a"),
            RunKey::new("ci", "missing"),
            RunKey::new("ci", "a"),
        ])
        .await
        .unwrap(),
    );
    found.sort();
    assert_eq!(
        found,
        names(&[
            run("ci", "a", "build", "Succeeded", 100),
            run("prod", "a", "deploy", "Failed", 300)
        ])
    );
    let one = m.get_runs(&[RunKey::new("prod", "a")]).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].phase, "Failed");
    assert_eq!(one[0].pipeline, "deploy");
}

fn entry(name: &str, position: i64, holding: bool) -> GroupEntry {
    GroupEntry {
        run: RunKey::new("ci", name),
        job: String::new(),
        position,
        holding,
        limit: 1,
        cancel_in_progress: false,
        since_ms: 1_700_000_000_000,
        lease_until_ms: 1_700_000_030_000,
        cancel_asked: false,
    }
}

async fn concurrency_groups_change_atomically(b: Backend) {
    let m = &b.meta;
    let a = RunKey::new("ci", "a");
    assert!(m.run_groups(&a).await.unwrap().is_empty());
    assert!(m.group_runs().await.unwrap().is_empty());
    // Entries come back in arrival order, whatever order the change left them in.
    let now = m
        .change_group(
            "deploy-prod",
            Box::new(|e| {
                assert!(e.is_empty());
                e.push(entry("b", 2, false));
                e.push(entry("a", 1, true));
            }),
        )
        .await
        .unwrap();
    assert_eq!(now, vec![entry("a", 1, true), entry("b", 2, false)]);
    // A change sees what the one before stored, and only what it changes is written.
    let seen = change_group_with(m.as_ref(), "deploy-prod", |e| {
        let seen = e.clone();
        e[1].holding = true;
        e[1].cancel_asked = true;
        e.remove(0);
        seen
    })
    .await
    .unwrap();
    assert_eq!(seen, vec![entry("a", 1, true), entry("b", 2, false)]);
    let mut b_holding = entry("b", 2, true);
    b_holding.cancel_asked = true;
    let b_key = RunKey::new("ci", "b");
    assert_eq!(
        m.run_groups(&b_key).await.unwrap(),
        vec![("deploy-prod".to_string(), vec![b_holding.clone()])]
    );
    assert!(m.run_groups(&a).await.unwrap().is_empty());

    // A bad change stores nothing.
    let twice = m
        .change_group(
            "deploy-prod",
            Box::new(|e| {
                e.clear();
                e.push(entry("c", 3, false));
                e.push(entry("c", 4, false));
            }),
        )
        .await;
    assert!(
        matches!(twice, Err(StateError::Invalid { .. })),
        "{twice:?}"
    );
    assert!(matches!(
        m.change_group("../x", Box::new(|_| {})).await,
        Err(StateError::Invalid { .. })
    ));
    assert_eq!(
        m.run_groups(&b_key).await.unwrap(),
        vec![("deploy-prod".to_string(), vec![b_holding.clone()])]
    );

    // Takers racing for a group of 1, each taking the slot only when nobody holds it and
    // numbering itself after the highest: one holds it, every place is distinct.
    let mut takers = Vec::new();
    for i in 0..8 {
        let m = m.clone();
        takers.push(tokio::spawn(async move {
            change_group_with(m.as_ref(), "race", move |e| {
                let free = !e.iter().any(|x| x.holding);
                let position = e.iter().map(|x| x.position).max().unwrap_or(0) + 1;
                e.push(entry(&format!("t{i}"), position, free));
                free
            })
            .await
            .unwrap()
        }));
    }
    let mut took = 0;
    for t in takers {
        took += usize::from(t.await.unwrap());
    }
    assert_eq!(took, 1);
    let t0 = RunKey::new("ci", "t0");
    let race = m.run_groups(&t0).await.unwrap();
    assert_eq!(race.len(), 1);
    let positions: Vec<i64> = race[0].1.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=8).collect::<Vec<_>>());
    assert_eq!(race[0].1.iter().filter(|e| e.holding).count(), 1);

    // A run in two groups leaves both at once.
    m.change_group("other", Box::new(|e| e.push(entry("t0", 1, true))))
        .await
        .unwrap();
    assert_eq!(
        m.run_groups(&t0)
            .await
            .unwrap()
            .into_iter()
            .map(|(g, _)| g)
            .collect::<Vec<_>>(),
        ["other", "race"]
    );
    assert_eq!(m.group_runs().await.unwrap().len(), 9);
    assert_eq!(m.leave_groups(&t0).await.unwrap(), ["other", "race"]);
    assert!(m.leave_groups(&t0).await.unwrap().is_empty());
    assert!(m.run_groups(&t0).await.unwrap().is_empty());
    assert_eq!(m.group_runs().await.unwrap().len(), 8);

    // Retention removes a removed run's entries with it.
    m.upsert_run(&run("ci", "b", "deploy", "Succeeded", 100))
        .await
        .unwrap();
    let gone = m
        .apply_retention(&RetentionPolicy {
            keep_finished: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gone, std::slice::from_ref(&b_key));
    assert!(m.run_groups(&b_key).await.unwrap().is_empty());
}

fn job_entry(name: &str, job: &str, position: i64, holding: bool) -> GroupEntry {
    GroupEntry {
        job: job.to_string(),
        ..entry(name, position, holding)
    }
}

async fn concurrency_groups_keep_jobs_entries_apart(b: Backend) {
    let m = &b.meta;
    let a = RunKey::new("ci", "a");
    // Two jobs of one run and the run's own entry in one group are three entries.
    let now = m
        .change_group(
            "deploy-prod",
            Box::new(|e| {
                e.push(job_entry("a", "deploy", 1, true));
                e.push(job_entry("a", "smoke", 2, false));
                e.push(entry("a", 3, false));
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        now,
        vec![
            job_entry("a", "deploy", 1, true),
            job_entry("a", "smoke", 2, false),
            entry("a", 3, false)
        ]
    );
    // One of them changes or goes alone.
    let now = m
        .change_group(
            "deploy-prod",
            Box::new(|e| {
                e.retain(|x| x.job != "deploy");
                e[0].holding = true;
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        now,
        vec![job_entry("a", "smoke", 2, true), entry("a", 3, false)]
    );
    // A job twice is refused, storing nothing; a bad job name too.
    let twice = m
        .change_group(
            "deploy-prod",
            Box::new(|e| e.push(job_entry("a", "smoke", 4, false))),
        )
        .await;
    assert!(
        matches!(twice, Err(StateError::Invalid { .. })),
        "{twice:?}"
    );
    let bad = m
        .change_group(
            "deploy-prod",
            Box::new(|e| e.push(job_entry("a", "../x", 4, false))),
        )
        .await;
    assert!(matches!(bad, Err(StateError::Invalid { .. })), "{bad:?}");
    // The run is in the group once as the reads see it, and leaves it with all its entries.
    m.change_group(
        "other",
        Box::new(|e| e.push(job_entry("a", "deploy", 1, true))),
    )
    .await
    .unwrap();
    let groups = m.run_groups(&a).await.unwrap();
    assert_eq!(
        groups.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>(),
        ["deploy-prod", "other"]
    );
    assert_eq!(groups[0].1.len(), 2);
    assert_eq!(m.group_runs().await.unwrap(), vec![a.clone()]);
    assert_eq!(m.leave_groups(&a).await.unwrap(), ["deploy-prod", "other"]);
    assert!(m.run_groups(&a).await.unwrap().is_empty());
}

/// A job state's `outputs` (the API's cap is 64 KiB of keys and values) are kept with it, exactly,
/// and go with it when a later report replaces the state.
async fn job_states_keep_their_outputs(b: Backend) {
    let m = &b.meta;
    let r = RunKey::new("ci", "outputs-1");
    let big = "v".repeat(64 * 1024 - 3);
    let ended = json!({
        "state": "success",
        "attempt": 1,
        "outputs": {
            "version": "1.2.3",
            "token": "***",
            "multi": "line 1\nline 2 \"quoted\" \\ é ✓",
            "empty": "",
            "big": big,
        }
    });
    m.put_job_state(&r, "detect", &ended).await.unwrap();
    let states = m.job_states(&r).await.unwrap();
    assert_eq!(states, vec![("detect".to_string(), ended)]);
    // A retry's report replaces it, outputs and all.
    let again = json!({"state": "running", "attempt": 2});
    m.put_job_state(&r, "detect", &again).await.unwrap();
    assert_eq!(
        m.job_states(&r).await.unwrap(),
        vec![("detect".to_string(), again)]
    );
}

fn cache(ns: &str, scope: &str, key: &str, manifest: &str, at: i64) -> CacheRecord {
    CacheRecord {
        namespace: ns.into(),
        scope: scope.into(),
        key: key.into(),
        manifest: manifest.into(),
        size_bytes: 10,
        created_ms: at,
        last_used_ms: at,
    }
}

async fn cache_entries_first_commit_stands(b: Backend) {
    let m = &b.meta;
    let scope = "git:https://example.org/acme/app";
    assert!(m
        .commit_cache_entry(&cache("ci", scope, "cargo-1", "first", 10))
        .await
        .unwrap());
    // A second commit of the key is refused, and the first entry is kept whole.
    assert!(!m
        .commit_cache_entry(&cache("ci", scope, "cargo-1", "second", 20))
        .await
        .unwrap());
    let got = m
        .cache_entry("ci", scope, "cargo-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, cache("ci", scope, "cargo-1", "first", 10));
    // Concurrent commits of one key: exactly one wins.
    let mut handles = Vec::new();
    for i in 0..6 {
        let m = b.meta.clone();
        handles.push(tokio::spawn(async move {
            m.commit_cache_entry(&cache("ci", "pipeline:p", "race", &format!("m{i}"), i))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for h in handles {
        won += usize::from(h.await.unwrap());
    }
    assert_eq!(won, 1);
    // Same key in another namespace or scope is another entry.
    assert!(m
        .commit_cache_entry(&cache("other", scope, "cargo-1", "x", 5))
        .await
        .unwrap());
    assert!(m
        .commit_cache_entry(&cache("ci", "pipeline:p", "cargo-1", "y", 5))
        .await
        .unwrap());
    let keys = |v: Vec<CacheRecord>| -> Vec<String> {
        v.into_iter()
            .map(|e| format!("{}/{}/{}", e.namespace, e.scope, e.key))
            .collect()
    };
    assert_eq!(
        keys(m.list_cache_entries(Some("ci")).await.unwrap()),
        [
            format!("ci/{scope}/cargo-1"),
            "ci/pipeline:p/cargo-1".to_string(),
            "ci/pipeline:p/race".to_string()
        ]
    );
    assert_eq!(m.list_cache_entries(None).await.unwrap().len(), 4);
    // Used: only ever later.
    assert!(m
        .touch_cache_entry("ci", scope, "cargo-1", 50)
        .await
        .unwrap());
    assert!(m
        .touch_cache_entry("ci", scope, "cargo-1", 40)
        .await
        .unwrap());
    let got = m
        .cache_entry("ci", scope, "cargo-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.created_ms, got.last_used_ms), (10, 50));
    assert!(!m.touch_cache_entry("ci", scope, "nope", 1).await.unwrap());
    assert!(m.delete_cache_entry("ci", scope, "cargo-1").await.unwrap());
    assert!(!m.delete_cache_entry("ci", scope, "cargo-1").await.unwrap());
    assert_eq!(m.cache_entry("ci", scope, "cargo-1").await.unwrap(), None);
    let manifests = m.chunk_manifests().await.unwrap();
    assert_eq!(manifests.len(), 3);
    assert!(manifests.contains(&"x".to_string()));
    // A key that could not be a file name is refused.
    assert!(matches!(
        m.commit_cache_entry(&cache("ci", scope, "../x", "z", 1))
            .await,
        Err(StateError::Invalid { .. })
    ));
}

fn artifact(run: &str, job: &str, name: &str, manifest: &str) -> ArtifactRecord {
    ArtifactRecord {
        run: RunKey::new("ci", run),
        job: job.into(),
        name: name.into(),
        manifest: manifest.into(),
        size_bytes: 3,
        files: 1,
        created_ms: 7,
    }
}

async fn artifacts_are_kept_per_run_and_go_with_it(b: Backend) {
    let m = &b.meta;
    m.upsert_run(&run("ci", "r1", "build", "Succeeded", 100))
        .await
        .unwrap();
    let r1 = RunKey::new("ci", "r1");
    m.put_artifact(&artifact("r1", "build", "dist", "m1"))
        .await
        .unwrap();
    m.put_artifact(&artifact("r1", "build", "bin", "m2"))
        .await
        .unwrap();
    m.put_artifact(&artifact("r2", "build", "dist", "m3"))
        .await
        .unwrap();
    // A later attempt's publish replaces the earlier one.
    let mut again = artifact("r1", "build", "dist", "m1b");
    again.size_bytes = 9;
    m.put_artifact(&again).await.unwrap();
    assert_eq!(
        m.artifact(&r1, "build", "dist").await.unwrap().unwrap(),
        again
    );
    assert_eq!(m.artifact(&r1, "test", "dist").await.unwrap(), None);
    let listed: Vec<String> = m
        .list_artifacts(&r1)
        .await
        .unwrap()
        .into_iter()
        .map(|a| format!("{}/{}", a.job, a.name))
        .collect();
    assert_eq!(listed, ["build/bin", "build/dist"]);
    let mut manifests = m.chunk_manifests().await.unwrap();
    manifests.sort();
    assert_eq!(manifests, ["m1b", "m2", "m3"]);
    // Retention removes a run's artifacts with its records.
    let gone = m
        .apply_retention(&RetentionPolicy {
            finished_before_ms: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gone, std::slice::from_ref(&r1));
    assert!(m.list_artifacts(&r1).await.unwrap().is_empty());
    assert_eq!(m.chunk_manifests().await.unwrap(), ["m3"]);
    assert!(matches!(
        m.put_artifact(&artifact("r1", "build", "../x", "m")).await,
        Err(StateError::Invalid { .. })
    ));
}

/// `f`'s answer within 30 s, else a failure saying `what` did not happen.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("within 30 s: {what}"))
}

/// True when `task` is still waiting after a while (it should be: it waits for a lock).
async fn still_waits<T>(task: &mut tokio::task::JoinHandle<T>) -> bool {
    tokio::time::timeout(std::time::Duration::from_millis(300), task)
        .await
        .is_err()
}

/// Writers relying on stored blobs hold the blob lock together; collection's sweep holds it
/// alone, after every writer and before the next.
async fn the_blob_lock_keeps_writers_and_collection_apart(b: Backend) {
    use sparkwing_state::BlobLockMode::{Reuse, Sweep};
    let m = b.meta.clone();
    // Two writers at once.
    let w1 = within("a writer takes the lock", m.lock_blobs(Reuse))
        .await
        .unwrap();
    let w2 = within(
        "a second writer takes it beside the first",
        m.lock_blobs(Reuse),
    )
    .await
    .unwrap();
    // A sweep waits for both.
    let m2 = m.clone();
    let mut sweep = tokio::spawn(async move { m2.lock_blobs(Sweep).await.unwrap() });
    assert!(
        still_waits(&mut sweep).await,
        "the sweep took the lock while writers held it"
    );
    drop(w1);
    assert!(
        still_waits(&mut sweep).await,
        "the sweep took the lock while a writer still held it"
    );
    drop(w2);
    let held = within("the sweep takes the lock after the writers", sweep)
        .await
        .unwrap();
    // A writer waits for the sweep.
    let m3 = m.clone();
    let mut writer = tokio::spawn(async move { m3.lock_blobs(Reuse).await.unwrap() });
    assert!(
        still_waits(&mut writer).await,
        "a writer took the lock during a sweep"
    );
    drop(held);
    within("the writer takes the lock after the sweep", writer)
        .await
        .unwrap();
}

fn memo(scope: &str, job: &str, hash: &str, run: &str, at: i64) -> MemoRecord {
    MemoRecord {
        namespace: "ci".into(),
        scope: scope.into(),
        job: job.into(),
        hash: hash.into(),
        run: run.into(),
        outputs: format!(r#"{{"from":"{run}"}}"#),
        finished_ms: at,
    }
}

async fn memo_results_newest_first_and_go_with_their_run(b: Backend) {
    let m = &b.meta;
    let scope = "git:https://example.com/app.git";
    let (h1, h2) = ("ab12", "cd34");
    m.upsert_run(&run("ci", "r1", "build", "Succeeded", 100))
        .await
        .unwrap();
    m.record_memo(&memo(scope, "build", h1, "r1", 100))
        .await
        .unwrap();
    m.record_memo(&memo(scope, "build", h1, "r3", 300))
        .await
        .unwrap();
    m.record_memo(&memo(scope, "build", h1, "r2", 200))
        .await
        .unwrap();
    // Another hash, job, scope or namespace is another result.
    m.record_memo(&memo(scope, "build", h2, "r4", 400))
        .await
        .unwrap();
    m.record_memo(&memo(scope, "test", h1, "r5", 500))
        .await
        .unwrap();
    m.record_memo(&memo("pipeline:app", "build", h1, "r6", 600))
        .await
        .unwrap();
    let mut other_ns = memo(scope, "build", h1, "r7", 700);
    other_ns.namespace = "prod".into();
    m.record_memo(&other_ns).await.unwrap();
    let runs =
        |found: Vec<MemoRecord>| -> Vec<String> { found.into_iter().map(|r| r.run).collect() };
    let found = m.memo_results("ci", scope, "build", h1).await.unwrap();
    assert_eq!(found[0], memo(scope, "build", h1, "r3", 300));
    assert_eq!(runs(found), ["r3", "r2", "r1"]);
    assert_eq!(
        runs(m.memo_results("ci", scope, "build", h2).await.unwrap()),
        ["r4"]
    );
    assert!(m
        .memo_results("ci", scope, "build", "ef56")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        runs(
            m.memo_results("ci", "pipeline:app", "build", h1)
                .await
                .unwrap()
        ),
        ["r6"]
    );
    assert_eq!(
        runs(m.memo_results("prod", scope, "build", h1).await.unwrap()),
        ["r7"]
    );
    // Recording the same run again replaces its record.
    m.record_memo(&memo(scope, "build", h1, "r1", 900))
        .await
        .unwrap();
    assert_eq!(
        runs(m.memo_results("ci", scope, "build", h1).await.unwrap()),
        ["r1", "r3", "r2"]
    );
    // Retention removes a run's records with it (its artifacts go too).
    let gone = m
        .apply_retention(&RetentionPolicy {
            finished_before_ms: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gone, [RunKey::new("ci", "r1")]);
    assert_eq!(
        runs(m.memo_results("ci", scope, "build", h1).await.unwrap()),
        ["r3", "r2"]
    );
    // Bad input: a hash that is not hex, a job id that could not be one.
    for bad in [
        memo(scope, "build", "xyz", "r8", 1),
        memo(scope, "../x", h1, "r8", 1),
        memo("", "build", h1, "r8", 1),
    ] {
        assert!(
            matches!(m.record_memo(&bad).await, Err(StateError::Invalid { .. })),
            "{bad:?}"
        );
    }
}
