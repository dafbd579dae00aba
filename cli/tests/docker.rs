//! The Docker executor against a real `dockerd`: containers and labels, orphans, cancel, the pool,
//! and the errors when Docker or the runner image is missing.

#[path = "common/mod.rs"]
mod common;
#[path = "docker_support/mod.rs"]
mod docker_support;

use common::*;
use docker_support::*;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::Duration;

/// Skip (loudly) when the machine has no Docker and the user said so.
macro_rules! docker_test {
    () => {
        if skip_docker() {
            eprintln!("skipped: {SKIP_ENV}=1");
            return;
        }
        require_docker();
    };
}

#[test]
fn runner_container_has_labels_and_is_removed_after_the_run() {
    docker_test!();
    let sw = conformance_project();
    let mut run = sw.spawn(["run", "--runner", "docker", "cancel-finally"]);
    let id = run.wait_run_id();
    sw.wait_for_log_line(&id, "long", "started");
    // While it runs: one container, named after the run and attempt, labelled for this home.
    let by_run = containers_with_label("sparkwing.dev/run", &id);
    assert_eq!(by_run, [format!("sparkwing-{id}-1")]);
    assert_eq!(containers_of_home(&sw), by_run);
    let inspect = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"app.kubernetes.io/managed-by\"}} {{.HostConfig.NetworkMode}}",
        ])
        .arg(&by_run[0])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "sparkwing host"
    );
    // Cancel stops the container (the engine inside runs the finally job first).
    run.signal(Signal::SIGINT);
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    assert!(out.stderr.contains("SIGINT: cancelling the run"), "{out}");
    assert!(containers_with_label("sparkwing.dev/run", &id).is_empty());
    assert_eq!(sw.job(&id, "fin")["state"], "success");
    // The runner request (it holds secrets) is gone.
    assert!(!sw.run_dir(&id).join("runner-request.json").exists());
}

#[test]
fn second_interrupt_kills_the_container() {
    docker_test!();
    let sw = conformance_project();
    let mut run = sw.spawn(["run", "--runner", "docker", "cancel-finally"]);
    let id = run.wait_run_id();
    sw.wait_for_log_line(&id, "long", "started");
    run.signal(Signal::SIGINT);
    run.signal(Signal::SIGINT);
    let out = run.finish_within(Duration::from_secs(60));
    out.assert_code(130);
    let (code, st) = sw.status(&id);
    assert_eq!(code, 130, "{st:#}");
    assert_eq!(st["status"], "cancelled");
    assert!(containers_with_label("sparkwing.dev/run", &id).is_empty());
}

#[test]
fn orphans_are_found_by_label_and_removed() {
    docker_test!();
    let sw = conformance_project();
    let home = sw.home().display().to_string();
    let image = format!("sparkwing-runner:{}", env!("CARGO_PKG_VERSION"));
    let name = format!("sparkwing-orphan-{}", std::process::id());
    let created = Command::new("docker")
        .args(["create", "--name", &name])
        .args(["--label", "app.kubernetes.io/managed-by=sparkwing"])
        .args(["--label", "sparkwing.dev/run=run-20000101-000000-dead00"])
        .args(["--label", "sparkwing.dev/pool="])
        .arg("--label")
        .arg(format!("sparkwing.dev/home={home}"))
        .args([&image, "sleep", "60"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    // Another home's containers are not ours to remove.
    let other = format!("sparkwing-other-{}", std::process::id());
    let created = Command::new("docker")
        .args(["create", "--name", &other])
        .args(["--label", "app.kubernetes.io/managed-by=sparkwing"])
        .args(["--label", "sparkwing.dev/run=run-20000101-000000-dead00"])
        .args(["--label", "sparkwing.dev/home=/nonexistent-home"])
        .args([&image, "sleep", "60"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let out = sw.sw(["runner", "gc"]);
    out.assert_code(0);
    assert!(out.stdout.contains(&format!("removed {name}")), "{out}");
    assert!(containers_of_home(&sw).is_empty());
    let left = containers_with_label("sparkwing.dev/home", "/nonexistent-home");
    assert_eq!(left, std::slice::from_ref(&other));
    let _ = Command::new("docker").args(["rm", "-f", &other]).output();
    let out = sw.sw(["runner", "gc"]);
    assert!(
        out.stdout.contains("no orphaned runner containers"),
        "{out}"
    );
}

#[test]
fn missing_runner_image_says_how_to_build_it() {
    docker_test!();
    let mut sw = conformance_project();
    sw.env("SPARKWING_RUNNER_IMAGE", "sparkwing-runner:does-not-exist");
    let out = sw.sw(["run", "--runner", "docker", "success"]);
    out.assert_code(7);
    assert!(
        out.stderr
            .contains("runner image sparkwing-runner:does-not-exist is not present")
            && out.stderr.contains("sparkwing runner-image build"),
        "{out}"
    );
    assert!(sw.runs_list().is_empty(), "nothing is recorded");
}

#[test]
fn unreachable_docker_names_the_socket() {
    // No daemon needed: this is what happens without one.
    let mut sw = conformance_project();
    sw.env("DOCKER_HOST", "unix:///nonexistent.sock");
    let out = sw.sw(["run", "--runner", "docker", "success"]);
    out.assert_code(7);
    assert!(
        out.stderr.contains("unix:///nonexistent.sock") && out.stderr.contains("DOCKER_HOST"),
        "{out}"
    );
    assert!(sw.runs_list().is_empty(), "nothing is recorded");
    let out = sw.sw(["runner", "gc"]);
    out.assert_code(7);
}

#[test]
fn unknown_runner_is_a_usage_error() {
    let sw = conformance_project();
    let out = sw.sw(["run", "--runner", "podman", "success"]);
    out.assert_code(2);
    let out = sw.sw(["run", "success", "--sw-pool", "p"]);
    out.assert_code(2);
}

#[test]
fn a_pool_keeps_warm_runners_and_a_run_claims_one() {
    docker_test!();
    let sw = conformance_project();
    let pool = sw.spawn([
        "pool",
        "run",
        "--name",
        "t",
        "--min-idle",
        "1",
        "--max-runners",
        "2",
        "--idle-timeout",
        "60s",
    ]);
    wait_until(Duration::from_secs(60), "a warm runner", || {
        pool.stdout_so_far()
            .contains("1 idle, 0 busy, 0 starting, 1 total")
    });
    let warm: Vec<String> = containers_with_label("sparkwing.dev/pool", "t")
        .into_iter()
        .filter(|n| containers_of_home(&sw).contains(n))
        .collect();
    assert_eq!(warm.len(), 1, "{warm:?}");
    let out = sw.sw(["run", "--runner", "docker", "--pool", "t", "success"]);
    out.assert_code(0);
    assert!(!out.stderr.contains("cold"), "{out}");
    let id = out.run_id();
    // The run's runner was the warm container.
    let (_, st) = sw.status(&id);
    let runner_events: Vec<&serde_json::Value> = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "runner")
        .collect();
    assert!(
        runner_events
            .iter()
            .any(|e| e["payload"]["runner"] == warm[0].as_str()),
        "{runner_events:#?}"
    );
    assert_eq!(st["status"], "success");
    // The used runner is gone; the pool makes a new warm one.
    wait_until(Duration::from_secs(60), "a new warm runner", || {
        let now = containers_with_label("sparkwing.dev/pool", "t");
        !now.contains(&warm[0])
            && now.len() == 1
            && pool
                .stdout_so_far()
                .matches("1 idle, 0 busy, 0 starting, 1 total")
                .count()
                >= 2
    });
    pool.signal(Signal::SIGINT);
    let out = pool.finish_within(Duration::from_secs(30));
    out.assert_code(0);
    assert!(
        containers_of_home(&sw).is_empty(),
        "{:?}",
        containers_of_home(&sw)
    );
    // Without a pool process the run says so and uses a cold container.
    let out = sw.sw(["run", "--runner", "docker", "--pool", "t", "success"]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("starting a cold runner container instead"),
        "{out}"
    );
}
