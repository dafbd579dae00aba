use super::*;
use sparkwing_core::{JobState, RunPhase};

fn new_run(id: &str, pipeline: &str, created_at: i64) -> NewRun {
    NewRun::for_test(id, pipeline, created_at)
}

#[test]
fn round_trips_runs_jobs_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    s.create_run(&new_run("run-1", "hello", 10)).unwrap();
    s.create_run(&new_run("run-2", "other", 20)).unwrap();
    s.insert_jobs(
        "run-1",
        &[NewJob {
            id: "a".into(),
            needs: vec![],
            optional: false,
            finally: false,
        }],
    )
    .unwrap();
    s.job_started("run-1", "a", 1, 11).unwrap();
    s.job_finished(
        "run-1",
        "a",
        JobState::Success,
        None,
        Some(0),
        Some(r#"{"v":"1"}"#),
        12,
    )
    .unwrap();
    assert_eq!(
        s.append_event(
            "run-1",
            Some("a"),
            "job_started",
            &serde_json::json!({}),
            11
        )
        .unwrap(),
        1
    );
    assert_eq!(
        s.append_event("run-1", None, "run_finished", &serde_json::json!({}), 13)
            .unwrap(),
        2
    );
    s.set_run_status("run-1", RunPhase::Succeeded, 13, Some(0), None)
        .unwrap();

    let runs = s.list_runs(&RunFilter::default()).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["run-2", "run-1"]
    );
    let filtered = s
        .list_runs(&RunFilter {
            pipelines: vec!["hello".into()],
            statuses: vec![RunPhase::Succeeded],
            limit: Some(5),
        })
        .unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].finished_at, Some(13));
    let jobs = s.jobs("run-1").unwrap();
    assert_eq!(jobs[0].state, JobState::Success);
    assert_eq!(jobs[0].outputs, Some(serde_json::json!({"v": "1"})));
    assert_eq!(s.events("run-1", 1).unwrap().len(), 1);
    assert_eq!(s.find_run("1").unwrap().id, "run-1");
    assert!(matches!(
        s.find_run("nope"),
        Err(StoreError::RunNotFound(_))
    ));
}

#[test]
fn abandoned_runs_fail_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    s.create_run(&new_run("run-1", "hello", 10)).unwrap();
    assert!(s.fail_abandoned_run("run-1", "process died", 20).unwrap());
    assert!(!s.fail_abandoned_run("run-1", "process died", 21).unwrap());
    let r = s.get_run("run-1").unwrap().unwrap();
    assert_eq!(r.status, RunPhase::Failed);
    assert_eq!(r.error.as_deref(), Some("process died"));
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let e = Store::open(dir.path()).err().expect("must refuse");
    assert!(matches!(e, StoreError::TooNew { .. }), "{e}");
    assert!(e.to_string().contains("upgrade sparkwing"), "{e}");
}

#[test]
fn reports_a_corrupt_file_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let junk = vec![b'x'; 4096];
    std::fs::write(&path, &junk).unwrap();
    let e = Store::open(dir.path()).err().expect("must refuse");
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("move it aside"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn migrations_set_user_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let v: i64 = s
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    drop(s);
    // Re-opening an up-to-date store is a no-op.
    Store::open(dir.path()).unwrap();
}

#[test]
fn sub_pipeline_links_and_a_version_1_store_migrates() {
    let dir = tempfile::tempdir().unwrap();
    // A store written by a binary with schema version 1 (before sub-pipelines).
    {
        let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
        conn.execute_batch(migrations::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO runs (id, pipeline, entrypoint, status, args_json, repo_root, host, user,
                pid, runner, created_at, log_dir)
             VALUES ('run-old', 'p', 'E', 'success', '{}', '/r', 'h', 'u', 1, 'process', 5, '/l')",
            [],
        )
        .unwrap();
    }
    let mut s = Store::open(dir.path()).unwrap();
    let old = s.find_run("run-old").unwrap();
    assert_eq!((old.parent_run_id, old.parent_job), (None, None));
    s.create_run(&new_run("run-parent", "ship", 10)).unwrap();
    s.create_run(&new_run("run-child", "deploy", 11)).unwrap();
    s.insert_jobs(
        "run-parent",
        &[NewJob {
            id: "deploy".into(),
            needs: vec![],
            optional: false,
            finally: false,
        }],
    )
    .unwrap();
    s.set_run_parent("run-child", "run-parent", "deploy")
        .unwrap();
    s.set_job_child("run-parent", "deploy", "run-child")
        .unwrap();
    let child = s.find_run("run-child").unwrap();
    assert_eq!(child.parent_run_id.as_deref(), Some("run-parent"));
    assert_eq!(child.parent_job.as_deref(), Some("deploy"));
    assert_eq!(
        s.jobs("run-parent").unwrap()[0].child_run.as_deref(),
        Some("run-child")
    );
    assert_eq!(s.find_run("run-parent").unwrap().parent_run_id, None);
}

#[test]
fn a_re_run_records_the_run_it_retries_and_a_version_2_store_migrates() {
    let dir = tempfile::tempdir().unwrap();
    // A store written by a binary with schema version 2 (before re-runs).
    {
        let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
        conn.execute_batch(migrations::MIGRATIONS[0]).unwrap();
        conn.execute_batch(migrations::MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO runs (id, pipeline, entrypoint, status, args_json, repo_root, host, user,
                pid, runner, created_at, log_dir)
             VALUES ('run-old', 'p', 'E', 'failed', '{}', '/r', 'h', 'u', 1, 'process', 5, '/l')",
            [],
        )
        .unwrap();
    }
    let mut s = Store::open(dir.path()).unwrap();
    assert_eq!(s.find_run("run-old").unwrap().retry_of, None);
    let mut retry = new_run("run-retry", "p", 10);
    retry.retry_of = Some("run-old".into());
    s.create_run(&retry).unwrap();
    let got = s.find_run("run-retry").unwrap();
    assert_eq!(got.retry_of.as_deref(), Some("run-old"));
    assert_eq!(serde_json::to_value(&got).unwrap()["retry_of"], "run-old");
}

#[test]
fn gates_record_one_decision_and_groups_their_state_and_a_version_3_store_migrates() {
    use sparkwing_core::gate::{Decided, Decision, GateSpec};
    let dir = tempfile::tempdir().unwrap();
    // A store written by a binary with schema version 3 (before gates and groups).
    {
        let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
        for m in &migrations::MIGRATIONS[..3] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
    }
    let mut s = Store::open(dir.path()).unwrap();
    s.create_run(&new_run("r", "p", 1)).unwrap();
    s.insert_jobs(
        "r",
        &[NewJob {
            id: "approve".into(),
            needs: vec![],
            optional: false,
            finally: false,
        }],
    )
    .unwrap();
    let spec = GateSpec {
        message: Some("ok?".into()),
        timeout_ms: Some(5_000),
        on_timeout: Decision::Approve,
    };
    s.insert_gates("r", &[("approve".into(), spec.clone())])
        .unwrap();
    assert_eq!(s.gates("r").unwrap()[0].state, JobState::Pending);
    s.gate_waiting("r", "approve", 7).unwrap();
    let g = &s.gates("r").unwrap()[0];
    assert_eq!(
        (g.state, g.waiting_since, g.spec()),
        (JobState::Waiting, Some(7), spec)
    );
    assert_eq!(s.gate_decision("r", "approve").unwrap(), None);
    let first = Decided {
        decision: Decision::Reject,
        by: "bo".into(),
        at_ms: 9,
        comment: Some("no".into()),
        timed_out: false,
    };
    assert_eq!(s.decide_gate("r", "approve", &first).unwrap(), first);
    // A later decision does not replace the first: the first stands.
    let later = Decided {
        decision: Decision::Approve,
        by: "timeout".into(),
        at_ms: 10,
        comment: None,
        timed_out: true,
    };
    assert_eq!(s.decide_gate("r", "approve", &later).unwrap(), first);
    assert_eq!(s.gates("r").unwrap()[0].decided, Some(first));

    assert_eq!(s.run_concurrency("r").unwrap(), None);
    let mut c = RunConcurrency {
        group: "deploy-prod".into(),
        limit: 1,
        cancel_in_progress: true,
        state: "waiting".into(),
        since: 3,
    };
    s.set_run_concurrency("r", &c).unwrap();
    c.state = "holding".into();
    c.since = 4;
    s.set_run_concurrency("r", &c).unwrap();
    assert_eq!(s.run_concurrency("r").unwrap(), Some(c));
}

/// A fan-out's jobs join a running run: they are listed after the jobs it had, in their order.
#[test]
fn jobs_added_later_come_after_the_first_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    s.create_run(&new_run("run-1", "shards", 10)).unwrap();
    let job = |id: &str, needs: &[&str]| NewJob {
        id: id.into(),
        needs: needs.iter().map(|n| n.to_string()).collect(),
        optional: false,
        finally: false,
    };
    s.insert_jobs(
        "run-1",
        &[
            job("shards", &[]),
            job("test", &["shards"]),
            job("report", &["test"]),
        ],
    )
    .unwrap();
    s.insert_jobs(
        "run-1",
        &[job("test[0]", &["shards"]), job("test[1]", &["shards"])],
    )
    .unwrap();
    let ids: Vec<String> = s
        .jobs("run-1")
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(ids, ["shards", "test", "report", "test[0]", "test[1]"]);
}

/// Runs started together on a fresh home all open its store: switching the new database to WAL
/// answered "database is locked" at once to all but one (seen in two `sparkwing run`s at once).
#[test]
fn a_fresh_store_opened_by_many_at_once_opens_for_each() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    Store::open_path(&path).map(drop)
                })
            })
            .collect();
        for o in openers {
            if let Err(e) = o.join().unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
}
