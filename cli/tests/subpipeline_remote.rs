//! Sub-pipelines on a profile's cluster: the awaiting job triggers the child on the real API
//! (served in-process on MemoryRuns), follows it and maps its result; a real `sparkwing runner
//! --run` plays the cluster's runner, and the test plays the operator's part (setting the phase
//! once the runner is done, stopping the runner once the run is cancelled).

mod common;
mod runner_support;

use common::*;
use nix::sys::signal::Signal;
use runner_support::Api;
use serde_json::Value;
use sparkwing_core::reconcile::status::RunPhase;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(240);

/// The subpipeline fixture with a profile `ci` on `api`.
fn world(api: &Api) -> Sw {
    let mut sw = Sw::fixture("subpipeline");
    let path = sw.home().join("profiles.yaml");
    std::fs::write(
        &path,
        format!(
            "profiles:\n  ci:\n    controller: {}\n    token_env: SW_TEST_TOKEN\n    namespace: ci\n",
            api.url
        ),
    )
    .unwrap();
    sw.env("SPARKWING_PROFILES", path.to_str().unwrap())
        .env("SW_TEST_TOKEN", &api.admin);
    sw
}

/// Wait for the child run the awaiting job triggered: (namespace, name, runner token).
fn triggered(api: &Api) -> (String, String, String) {
    let mut found = None;
    api.wait_for(
        DEADLINE,
        "the triggered child run and its runner token",
        |api| {
            let list = api.get("/api/v1/runs?namespace=ci");
            found = list["runs"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(|r| {
                    let ns = r["namespace"].as_str()?.to_string();
                    let name = r["name"].as_str()?.to_string();
                    let token = api.runs.runner_token(&ns, &name)?;
                    Some((ns, name, token))
                });
            found.is_some()
        },
    );
    found.unwrap()
}

/// `sparkwing runner --run NS/NAME` as the operator's runner Job would start it.
fn runner(sw: &Sw, api: &Api, ns: &str, name: &str, token: &str) -> Running {
    let mut r = sw.cmd(["runner", "--run", &format!("{ns}/{name}"), "--attempt", "1"]);
    r.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", token)
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", sw.home())
        .env_remove("SPARKWING_PIPELINE_CHAIN");
    Running::spawn(r)
}

#[test]
fn an_await_job_on_a_profile_triggers_follows_and_maps_the_result() {
    let api = Api::start();
    let sw = world(&api);
    let parent = sw.spawn(["run", "parent", "--on", "ci"]);
    let (ns, name, token) = triggered(&api);
    // The child got the await job's args.
    let run = api.run(&ns, &name);
    assert_eq!(run["run"]["spec"]["pipeline"], "child", "{run}");
    assert_eq!(run["run"]["spec"]["args"]["msg"], "from-parent", "{run}");
    let r = runner(&sw, &api, &ns, &name, &token).finish_within(DEADLINE);
    r.assert_code(0);
    api.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let out = parent.finish_within(DEADLINE);
    out.assert_code(0);
    let id = out.run_id();
    let deploy = sw.job(&id, "deploy");
    assert_eq!(deploy["state"], "success", "{deploy}");
    assert_eq!(deploy["child_run"], format!("{ns}/{name}"), "{deploy}");
    // The remote child records its parent: this run and its awaiting job.
    let child = api.run(&ns, &name);
    assert_eq!(child["parent"]["run"], id.as_str(), "{child}");
    assert_eq!(child["parent"]["job"], "deploy", "{child}");
    let annotations = &child["run"]["metadata"]["annotations"];
    assert_eq!(
        annotations["sparkwing.dev/parent-run"],
        id.as_str(),
        "{child}"
    );
    assert_eq!(annotations["sparkwing.dev/parent-job"], "deploy", "{child}");
    let status = sw.sw(["runs", "status", &format!("{ns}/{name}"), "--profile", "ci"]);
    status.assert_code(0);
    let text = &status.stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("parent:   {id} job deploy"))),
        "{text}"
    );
    let lines = sw.log_lines(&id, "deploy");
    assert!(
        lines.iter().any(|l| l == "work │ child says from-parent"),
        "{lines:?}"
    );
}

#[test]
fn a_failed_remote_child_fails_the_awaiting_job_with_its_reason() {
    let api = Api::start();
    let sw = world(&api);
    let parent = sw.spawn(["run", "parent", "--on", "ci", "--mode", "fail"]);
    let (ns, name, token) = triggered(&api);
    runner(&sw, &api, &ns, &name, &token)
        .finish_within(DEADLINE)
        .assert_code(1);
    api.runs.set_phase(&ns, &name, RunPhase::Failed);
    let out = parent.finish_within(DEADLINE);
    out.assert_code(1);
    let deploy = sw.job(&out.run_id(), "deploy");
    assert_eq!(deploy["state"], "failed", "{deploy}");
    assert_eq!(
        deploy["reason"],
        format!(
            "pipeline \"child\" on profile \"ci\" (run {ns}/{name}) failed: job work failed: exit code 1 (the deploy was refused)"
        ),
        "{deploy}"
    );
}

#[test]
fn cancelling_the_parent_cancels_the_remote_child() {
    let api = Api::start();
    let sw = world(&api);
    let mut parent = sw.spawn(["run", "parent", "--on", "ci", "--mode", "slow"]);
    let id = parent.wait_run_id();
    let (ns, name, token) = triggered(&api);
    let runner = runner(&sw, &api, &ns, &name, &token);
    // The child's job sleeps on the "cluster"; its line reached the parent through the follow.
    sw.wait_for_log_line(&id, "deploy", "work │ child-sleeping");
    parent.signal(Signal::SIGINT);
    let out = parent.finish_within(DEADLINE);
    out.assert_code(130);
    // The remote run was cancelled through the API (finally jobs still run).
    let run = api.run(&ns, &name);
    assert_eq!(
        run["run"]["spec"]["cancel"],
        Value::from("CancelledRunFinally"),
        "{run}"
    );
    let deploy = sw.job(&id, "deploy");
    assert_eq!(deploy["state"], "cancelled", "{deploy}");
    // Nothing of the parent is left: the follower exited with the awaiting job.
    assert_run_processes_gone(&id);
    // The operator's part: stop the runner of a cancelled run.
    runner.signal(Signal::SIGTERM);
    runner.finish_within(DEADLINE).assert_code(130);
}

/// The annotations of the run `ns/name`, as the API shows them.
fn annotations(api: &Api, ns: &str, name: &str) -> Value {
    api.run(ns, name)["run"]["metadata"]["annotations"].clone()
}

#[test]
fn a_cluster_child_awaiting_its_local_parent_fails_with_the_cycle() {
    // `parent` runs here; its `deploy` awaits `child` on the "cluster", whose runner plans an await
    // of `parent` (the host's plan check cannot see it). The chain crosses: the trigger sends
    // `parent`, the API records it, the runner passes `parent,child` on to its jobs, and the
    // runner's `sparkwing run parent` refuses to start.
    let api = Api::start();
    let sw = world(&api);
    let parent = sw.spawn(["run", "parent", "--on", "ci", "--mode", "cycle"]);
    let (ns, name, token) = triggered(&api);
    assert_eq!(
        annotations(&api, &ns, &name)["sparkwing.dev/pipeline-chain"],
        "parent",
        "{}",
        api.run(&ns, &name)
    );
    runner(&sw, &api, &ns, &name, &token)
        .finish_within(DEADLINE)
        .assert_code(1);
    let cycle = "cycle of pipelines awaiting each other: parent -> child -> parent";
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["back"]["state"], "failed", "{run}");
    assert_eq!(
        run["jobs"]["back"]["reason"],
        format!(
            "pipeline \"parent\" failed: refusing to run pipeline \"parent\": {cycle} (SPARKWING_PIPELINE_CHAIN is \"parent,child\")"
        ),
        "{run}"
    );
    api.runs.set_phase(&ns, &name, RunPhase::Failed);
    let out = parent.finish_within(DEADLINE);
    out.assert_code(1);
    let deploy = sw.job(&out.run_id(), "deploy");
    assert_eq!(deploy["state"], "failed", "{deploy}");
    let reason = deploy["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(&format!(
            "pipeline \"child\" on profile \"ci\" (run {ns}/{name}) failed: job back failed: pipeline \"parent\" failed: refusing to run pipeline \"parent\": {cycle}"
        )),
        "{deploy}"
    );
}

#[test]
fn pipeline_trigger_sends_the_chain_and_the_api_refuses_a_cycle() {
    let api = Api::start();
    let mut sw = world(&api);
    // A trigger from a job of `parent` (the engine's chain ends with the job's pipeline) records it.
    sw.env("SPARKWING_PIPELINE_CHAIN", "ship,parent");
    let out = sw.sw([
        "pipeline",
        "trigger",
        "child",
        "--profile",
        "ci",
        "--detach",
        "--sw-parent",
        "run-1/deploy",
    ]);
    out.assert_code(0);
    let (ns, name) = out.stdout.trim().split_once('/').expect("NS/NAME");
    let a = annotations(&api, ns, name);
    assert_eq!(a["sparkwing.dev/pipeline-chain"], "ship,parent", "{a}");
    assert_eq!(a["sparkwing.dev/parent-job"], "deploy", "{a}");

    // `child` already in the chain: the API refuses it, nothing is created, exit 2 naming the
    // cycle (an awaiting job fails with this `error:` line).
    sw.env("SPARKWING_PIPELINE_CHAIN", "child,parent");
    let out = sw.sw([
        "pipeline",
        "trigger",
        "child",
        "--profile",
        "ci",
        "-o",
        "json",
        "--sw-cancel-on-interrupt",
        "--sw-parent",
        "run-2/deploy",
    ]);
    out.assert_code(2);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "error: refusing to run pipeline \"child\" on profile \"ci\": cycle of pipelines awaiting each other: child -> parent -> child (SPARKWING_PIPELINE_CHAIN is \"child,parent\"; the API at {} refused it)",
            api.url
        ),
        "{}",
        out.stderr
    );
    let runs = api.get("/api/v1/runs");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
}

#[test]
fn a_runner_refuses_a_run_whose_chain_holds_its_pipeline() {
    // The API refuses such a trigger; a PipelineRun written another way (kubectl) is refused by
    // its runner, which reports why on the run.
    let api = Api::start();
    let sw = world(&api);
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("child", &upload, serde_json::json!({}));
    let mut run = api.runs.run(&ns, &name).unwrap();
    run.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("sparkwing.dev/pipeline-chain".into(), "child,x".into());
    api.runs.insert(run);
    let out = runner(&sw, &api, &ns, &name, &token).finish_within(DEADLINE);
    out.assert_code(2);
    let why = "refusing to run pipeline \"child\": cycle of pipelines awaiting each other: child -> x -> child (the run's sparkwing.dev/pipeline-chain is \"child,x\")";
    let run = api.run(&ns, &name);
    assert_eq!(run["jobs"]["compile"]["state"], "failed", "{run}");
    assert_eq!(run["jobs"]["compile"]["reason"], why, "{run}");
    assert!(run["jobs"].get("work").is_none(), "the pipeline ran: {run}");
    assert!(out.stderr.contains(why), "{}", out.stderr);
}

/// Refuses a trigger with `pipelineChain` as an API older than the field does (serde's unknown
/// field), and passes every other request on.
async fn refuse_pipeline_chain(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if parts.uri.path() == "/api/v1/runs" && bytes.windows(15).any(|w| w == b"\"pipelineChain\"") {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "bad_request",
                "message": "trigger request: unknown field `pipelineChain`, expected one of `namespace`, `pipeline`, `args`, `source`, `parent` at line 1 column 80"})),
        )
            .into_response();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

#[test]
fn an_older_api_without_the_chain_gets_the_trigger_checked_here() {
    let api = Api::start();
    // The same API's state behind the older API's answer to `pipelineChain`.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let older = format!("http://{}", listener.local_addr().unwrap());
    let app = sparkwing_operator::api::router(api.state.clone())
        .layer(axum::middleware::from_fn(refuse_pipeline_chain))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut sw = world(&api);
    let path = sw.home().join("older.yaml");
    std::fs::write(
        &path,
        format!(
            "profiles:\n  ci:\n    controller: {older}\n    token_env: SW_TEST_TOKEN\n    namespace: ci\n"
        ),
    )
    .unwrap();
    sw.env("SPARKWING_PROFILES", path.to_str().unwrap());
    let trigger = [
        "pipeline",
        "trigger",
        "child",
        "--profile",
        "ci",
        "--detach",
    ];
    let warning = format!(
        "warning: the API at {older} does not check the pipeline chain; triggering without it"
    );

    // No cycle: triggered without the chain, after a warning.
    sw.env("SPARKWING_PIPELINE_CHAIN", "ship");
    let out = sw.sw(trigger);
    out.assert_code(0);
    assert!(out.stderr.lines().any(|l| l == warning), "{}", out.stderr);
    let (ns, name) = out.stdout.trim().split_once('/').expect("NS/NAME");
    let a = annotations(&api, ns, name);
    assert!(a.get("sparkwing.dev/pipeline-chain").is_none(), "{a}");

    // A cycle: checked here, refused, nothing created.
    sw.env("SPARKWING_PIPELINE_CHAIN", "child,ship");
    let out = sw.sw(trigger);
    out.assert_code(2);
    assert!(out.stderr.lines().any(|l| l == warning), "{}", out.stderr);
    assert_eq!(
        out.stderr.lines().last().unwrap_or_default(),
        "error: refusing to run pipeline \"child\" on profile \"ci\": cycle of pipelines awaiting each other: child -> ship -> child (SPARKWING_PIPELINE_CHAIN is \"child,ship\"; checked here)",
        "{}",
        out.stderr
    );
    let runs = api.get("/api/v1/runs");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
}
