//! `sparkwing runner --warm --pool NS/POOL` against the real API: the warm runner idles reading
//! its podinfo directory (what the kubelet's downwardAPI volume gives a warm pod), trades the pool
//! token for the run's token once its annotations name a run, and runs that attempt as `--run`
//! would. The claim the API checks is recorded in `MemoryRuns` (the operator's part).

mod common;
mod runner_support;

use common::{Running, Sw};
use runner_support::Api;
use serde_json::json;
use sparkwing_operator::api::PodClaim;
use sparkwing_operator::tokens::RunnerGrant;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn pool_token(api: &Api, ns: &str, pool: &str) -> String {
    let scope = format!("pool:{ns}/{pool}");
    runner_support::block_on(api.state.store.create_token(
        &scope,
        vec![scope.clone()],
        Some(RunnerGrant::default()),
    ))
    .unwrap()
    .0
}

/// The warm pod's command and environment.
fn warm_cmd(sw: &Sw, api: &Api, pool: &str, token: Option<&str>, podinfo: &Path) -> Command {
    let mut c = sw.cmd(["runner", "--warm", "--pool", &format!("ci/{pool}")]);
    c.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_POOL", pool)
        .env("SPARKWING_NAMESPACE", "ci")
        .env("SPARKWING_PODINFO_DIR", podinfo)
        .env("POD_NAME", format!("{pool}-1"))
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", sw.home())
        .env_remove("SPARKWING_POOL_TOKEN");
    if let Some(t) = token {
        c.env("SPARKWING_POOL_TOKEN", t);
    }
    c
}

/// What the kubelet does when the pod's annotations change: a new file renamed into place.
fn write_annotations(podinfo: &Path, pairs: &[(&str, &str)]) {
    let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    let tmp = podinfo.join(".annotations.tmp");
    std::fs::write(&tmp, text.join("\n")).unwrap();
    std::fs::rename(&tmp, podinfo.join("annotations")).unwrap();
}

fn wait_stderr(running: &Running, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running.stderr_so_far().contains(want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?} on stderr within 30s: {}",
            running.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn warm_runner_waits_for_its_claim_then_runs_that_attempt() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let upload = api.upload(sw.root());
    let (ns, name, _job_token) = api.trigger("lines", &upload, json!({"who": "warm"}));
    let token = pool_token(&api, &ns, "warm");
    let podinfo = tempfile::tempdir().unwrap();
    write_annotations(podinfo.path(), &[("sparkwing.dev/pool", "warm")]);
    let running = Running::spawn(warm_cmd(&sw, &api, "warm", Some(&token), podinfo.path()));
    wait_stderr(&running, "waiting for a claim");
    // Idle: nothing was asked of the API for this run yet.
    assert!(api.log_jobs(&ns, &name).is_empty());

    // The operator claims the pod (the API sees it on the pod), the kubelet rewrites the file.
    api.runs.set_pod_claim(
        &ns,
        "warm-1",
        PodClaim {
            pool: "warm".into(),
            pool_uid: "uid-warm".into(),
            claim: Some((name.clone(), 1)),
        },
    );
    write_annotations(
        podinfo.path(),
        &[
            ("sparkwing.dev/attempt", "1"),
            ("sparkwing.dev/pool", "warm"),
            ("sparkwing.dev/run", &name),
            ("sparkwing.dev/run-uid", "uid-x"),
        ],
    );
    let out = running.finish_within(Duration::from_secs(300));
    out.assert_code(0);
    assert!(
        out.stderr
            .contains(&format!("claimed by run {ns}/{name} attempt 1")),
        "{out}"
    );
    assert_eq!(api.texts(&ns, &name, "greet"), ["hello warm"]);
    assert_eq!(api.texts(&ns, &name, "count").len(), 1201);
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["count"]["state"], "success", "{run}");
    assert_eq!(run["archived"], true, "finish was not called: {run}");
}

#[test]
fn warm_runner_exits_0_at_once_on_sigterm_while_idle() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let token = pool_token(&api, "ci", "warm");
    let podinfo = tempfile::tempdir().unwrap();
    // No annotations file yet (the kubelet has not written it): still idle.
    let running = Running::spawn(warm_cmd(&sw, &api, "warm", Some(&token), podinfo.path()));
    wait_stderr(&running, "waiting for a claim");
    let sent = Instant::now();
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let out = running.finish_within(Duration::from_secs(10));
    out.assert_code(0);
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    assert!(out.stderr.contains("SIGTERM while idle"), "{out}");
}

#[test]
fn warm_runner_without_a_pool_token_or_with_another_pools_fails_clearly() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let podinfo = tempfile::tempdir().unwrap();
    let out = sw.run_cmd(warm_cmd(&sw, &api, "warm", None, podinfo.path()));
    out.assert_code(8);
    assert!(
        out.stderr.contains("SPARKWING_POOL_TOKEN is not set"),
        "{out}"
    );
    assert!(out.stderr.contains("warm-pool-token"), "{out}");

    // A token of another pool: the API refuses, naming the scope; the runner exits 9.
    let upload = api.upload(sw.root());
    let (ns, name, _) = api.trigger("fail", &upload, json!({}));
    let other = pool_token(&api, &ns, "other");
    api.runs.set_pod_claim(
        &ns,
        "warm-1",
        PodClaim {
            pool: "warm".into(),
            pool_uid: "uid-warm".into(),
            claim: Some((name.clone(), 1)),
        },
    );
    write_annotations(
        podinfo.path(),
        &[("sparkwing.dev/attempt", "1"), ("sparkwing.dev/run", &name)],
    );
    let out = sw.run_cmd(warm_cmd(&sw, &api, "warm", Some(&other), podinfo.path()));
    out.assert_code(9);
    assert!(out.stderr.contains("pool:ci/warm"), "{out}");
}
