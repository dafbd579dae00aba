//! A concurrency group across runners: `sparkwing runner` processes of runs of one group against
//! the real API (as the runner Jobs of a cluster would run them). The `gates` fixture's `deploy`
//! pipeline is in group `deploy-{env}`; its job notes `start RUN` and `end RUN` in the run's
//! workspace and does not end while the workspace has `hold` (uploaded with the source).

mod common;
mod runner_support;

use common::{wait_until, Running, Sw};
use runner_support::Api;
use serde_json::{json, Value};
use sparkwing_operator::api::ApiConfig;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(300);

/// The runner Job's command for attempt 1 of `ns/name`.
fn runner(sw: &Sw, api: &Api, ns: &str, name: &str, token: &str) -> Command {
    let mut c = sw.cmd(["runner", "--run", &format!("{ns}/{name}"), "--attempt", "1"]);
    c.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", token)
        .env("SPARKWING_RUN", name)
        .env("SPARKWING_NAMESPACE", ns)
        .env("SPARKWING_ATTEMPT", "1")
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", sw.home());
    c
}

/// Where the runner of `ns/name` puts the run's source (its workspace).
fn workspace(sw: &Sw, ns: &str, name: &str) -> PathBuf {
    sw.home().join("work").join(format!("{ns}-{name}"))
}

fn started(sw: &Sw, ns: &str, name: &str) -> bool {
    std::fs::read_to_string(workspace(sw, ns, name).join("order.txt"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("start "))
}

fn release(sw: &Sw, ns: &str, name: &str) {
    let _ = std::fs::remove_file(workspace(sw, ns, name).join("hold"));
}

/// The run's `concurrency` in the API's run view (`Null` without one).
fn group_of(api: &Api, ns: &str, name: &str) -> Value {
    api.get(&format!("/api/v1/runs/{ns}/{name}"))["concurrency"].clone()
}

fn with_profile(sw: &mut Sw, api: &Api) {
    let profiles = sw.home().join("profiles.yaml");
    std::fs::write(
        &profiles,
        format!(
            "profiles:\n  ci:\n    controller: {}\n    token_env: SW_ADMIN\n    namespace: ci\n",
            api.url
        ),
    )
    .unwrap();
    sw.env("SPARKWING_PROFILES", profiles.to_str().unwrap())
        .env("SW_ADMIN", &api.admin);
}

#[test]
fn runs_of_a_group_of_one_queue_across_runners_and_a_killed_holder_frees_its_slot() {
    let api = Api::start_with(
        "127.0.0.1:0",
        ApiConfig {
            group_lease: Duration::from_secs(3),
            ..ApiConfig::default()
        },
    );
    let mut sw = Sw::fixture("gates");
    with_profile(&mut sw, &api);
    std::fs::write(sw.root().join("hold"), "").unwrap();
    let upload = api.upload(sw.root());
    let (ns, a, token_a) = api.trigger("deploy", &upload, json!({}));
    let (_, b, token_b) = api.trigger("deploy", &upload, json!({}));

    let first = Running::spawn(runner(&sw, &api, &ns, &a, &token_a));
    wait_until(DEADLINE, "the first run's job to start", || {
        started(&sw, &ns, &a)
    });
    assert_eq!(group_of(&api, &ns, &a)["state"], "holding");
    let second = Running::spawn(runner(&sw, &api, &ns, &b, &token_b));
    wait_until(DEADLINE, "the second run to wait for the group", || {
        group_of(&api, &ns, &b)["state"] == "waiting"
    });
    let line = format!("waiting for concurrency group deploy-prod (1/1, held by run {ns}/{a})");
    let status = sw.sw(["runs", "status", &format!("{ns}/{b}"), "--profile", "ci"]);
    assert!(
        status.stdout.contains(&format!("waiting:  {line}")),
        "{status}"
    );
    assert!(!started(&sw, &ns, &b));

    // The holder's runner is killed: no end, no leave. The second run takes the slot once the
    // holder's lease (3 s here) ended.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    release(&sw, &ns, &a);
    let _ = first.finish();
    wait_until(DEADLINE, "the second run's job to start", || {
        started(&sw, &ns, &b)
    });
    release(&sw, &ns, &b);
    let out = second.finish_within(DEADLINE);
    out.assert_code(0);
    assert!(
        out.stderr.contains(&line) || out.stdout.contains(&line),
        "the waiting line: {out}"
    );
    let kinds: Vec<String> = out
        .json_lines()
        .iter()
        .filter_map(|v| v["event"].as_str().map(str::to_string))
        .filter(|k| k.starts_with("concurrency_"))
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("concurrency_waiting"),
        "{out}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("concurrency_admitted"),
        "{out}"
    );
    // Ended: its entry is gone, so the group is free for the next run at once.
    assert_eq!(group_of(&api, &ns, &b), Value::Null);
    let (_, c, token_c) = api.trigger("deploy", &upload, json!({}));
    let third = Running::spawn(runner(&sw, &api, &ns, &c, &token_c));
    wait_until(DEADLINE, "the third run's job to start", || {
        started(&sw, &ns, &c)
    });
    release(&sw, &ns, &c);
    third.finish_within(DEADLINE).assert_code(0);
}

#[test]
fn cancel_in_progress_cancels_the_older_run_across_runners() {
    let api = Api::start();
    let sw = Sw::fixture("gates");
    std::fs::write(sw.root().join("hold"), "").unwrap();
    let upload = api.upload(sw.root());
    let (ns, a, token_a) = api.trigger("deploy", &upload, json!({}));
    let (_, b, token_b) = api.trigger("deploy", &upload, json!({"cancel": "true"}));

    let first = Running::spawn(runner(&sw, &api, &ns, &a, &token_a));
    wait_until(DEADLINE, "the first run's job to start", || {
        started(&sw, &ns, &a)
    });
    let second = Running::spawn(runner(&sw, &api, &ns, &b, &token_b));
    // The API cancels the older run as `runs cancel` does and says why.
    wait_until(DEADLINE, "the first run to be cancelled", || {
        api.runs
            .run(&ns, &a)
            .is_some_and(|r| r.spec.cancel.is_some())
    });
    let run_a = api.runs.run(&ns, &a).unwrap();
    assert_eq!(
        run_a.metadata.annotations.unwrap()[sparkwing_api::names::CANCELLED_BY_ANNOTATION],
        format!("concurrency group deploy-prod (run {ns}/{b})")
    );
    assert!(!started(&sw, &ns, &b));
    // The operator stops the cancelled run's runner (SIGTERM); its end frees the slot.
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.finish_within(DEADLINE).assert_code(130);
    release(&sw, &ns, &a);
    wait_until(DEADLINE, "the newer run's job to start", || {
        started(&sw, &ns, &b)
    });
    release(&sw, &ns, &b);
    second.finish_within(DEADLINE).assert_code(0);
}

/// The entries of group `group` the API keeps for run `ns/name`: `(job, holding)` (job empty:
/// the run's own entry).
fn entries_of(api: &Api, group: &str, ns: &str, name: &str) -> Vec<(String, bool)> {
    let key = sparkwing_state::RunKey::new(ns, name);
    let groups = runner_support::block_on(api.state.store.meta.run_groups(&key)).unwrap();
    groups
        .into_iter()
        .filter(|(g, _)| g == group)
        .flat_map(|(_, entries)| entries)
        .filter(|e| e.run == key)
        .map(|e| (e.job, e.holding))
        .collect()
}

#[test]
fn a_jobs_group_of_one_queues_its_attempts_across_runners_through_the_api() {
    // The `job-group` pipeline: `prepare`, then `work` in group shared-work (limit 1).
    let api = Api::start();
    let mut sw = Sw::fixture("gates");
    with_profile(&mut sw, &api);
    std::fs::write(sw.root().join("hold"), "").unwrap();
    let upload = api.upload(sw.root());
    let (ns, a, token_a) = api.trigger("job-group", &upload, json!({}));
    let (_, b, token_b) = api.trigger("job-group", &upload, json!({}));

    let first = Running::spawn(runner(&sw, &api, &ns, &a, &token_a));
    wait_until(DEADLINE, "the first run's job to start", || {
        started(&sw, &ns, &a)
    });
    // The job's attempt holds an entry of its own in the API (not a run entry).
    assert_eq!(
        entries_of(&api, "shared-work", &ns, &a),
        [("work".to_string(), true)]
    );
    let second = Running::spawn(runner(&sw, &api, &ns, &b, &token_b));
    wait_until(DEADLINE, "the second run's job to wait in the API", || {
        entries_of(&api, "shared-work", &ns, &b) == [("work".to_string(), false)]
    });
    assert!(!started(&sw, &ns, &b));
    // `runs status --profile` shows the job waiting for its group.
    let line =
        format!("waiting for concurrency group shared-work (1/1, held by run {ns}/{a}/work)");
    let status = sw.sw(["runs", "status", &format!("{ns}/{b}"), "--profile", "ci"]);
    assert!(
        status.stdout.contains(&format!("job work: {line}")),
        "{status}"
    );
    // The first run's job ends: its attempt leaves the group and the second run's job runs.
    release(&sw, &ns, &a);
    first.finish_within(DEADLINE).assert_code(0);
    assert!(entries_of(&api, "shared-work", &ns, &a).is_empty());
    wait_until(DEADLINE, "the second run's job to start", || {
        started(&sw, &ns, &b)
    });
    release(&sw, &ns, &b);
    let out = second.finish_within(DEADLINE);
    out.assert_code(0);
    let kinds: Vec<String> = out
        .json_lines()
        .iter()
        .filter(|v| v["job"] == "work")
        .filter_map(|v| v["event"].as_str().map(str::to_string))
        .filter(|k| k.starts_with("concurrency_"))
        .collect();
    assert_eq!(
        kinds,
        ["concurrency_waiting", "concurrency_admitted"],
        "{out}"
    );
    assert!(entries_of(&api, "shared-work", &ns, &b).is_empty());
}

#[test]
fn a_jobs_cancel_in_progress_cancels_the_older_run_across_runners() {
    // The `job-cancel` pipeline: `prepare`, then `deploy` in group job-deploy, cancel in progress.
    let api = Api::start();
    let sw = Sw::fixture("gates");
    std::fs::write(sw.root().join("hold"), "").unwrap();
    let upload = api.upload(sw.root());
    let (ns, a, token_a) = api.trigger("job-cancel", &upload, json!({}));
    let (_, b, token_b) = api.trigger("job-cancel", &upload, json!({}));

    let first = Running::spawn(runner(&sw, &api, &ns, &a, &token_a));
    wait_until(DEADLINE, "the first run's job to start", || {
        started(&sw, &ns, &a)
    });
    let second = Running::spawn(runner(&sw, &api, &ns, &b, &token_b));
    // The newer run's job has the API cancel the older run, as `runs cancel` does.
    wait_until(DEADLINE, "the first run to be cancelled", || {
        api.runs
            .run(&ns, &a)
            .is_some_and(|r| r.spec.cancel.is_some())
    });
    let run_a = api.runs.run(&ns, &a).unwrap();
    assert_eq!(
        run_a.metadata.annotations.unwrap()[sparkwing_api::names::CANCELLED_BY_ANNOTATION],
        format!("concurrency group job-deploy (run {ns}/{b})")
    );
    assert!(api.runs.run(&ns, &b).unwrap().spec.cancel.is_none());
    assert!(!started(&sw, &ns, &b));
    // The operator stops the cancelled run's runner; its job's attempt leaves the group.
    first.signal(nix::sys::signal::Signal::SIGTERM);
    release(&sw, &ns, &a);
    let _ = first.finish_within(DEADLINE);
    wait_until(DEADLINE, "the newer run's job to start", || {
        started(&sw, &ns, &b)
    });
    release(&sw, &ns, &b);
    let out = second.finish_within(DEADLINE);
    out.assert_code(0);
    let cancelled: Vec<Value> = out
        .json_lines()
        .into_iter()
        .filter(|v| v["event"] == "concurrency_cancelled_older")
        .collect();
    // Recorded once, on the job (the JSON line's `run` is this run's id; the API's annotation
    // above names the run cancelled).
    assert_eq!(cancelled.len(), 1, "{out}");
    assert_eq!(
        (cancelled[0]["job"].clone(), cancelled[0]["group"].clone()),
        (json!("deploy"), json!("job-deploy")),
        "{out}"
    );
}
