//! The chart installed for real: `helm install charts/sparkwing` with the operator and runner
//! images (`images/build.sh --profile debug`, imported into the real node's containerd) into the
//! test bed, then `sparkwing pipeline trigger` from the host runs the fixture `tests/fixtures/remote`
//! to `Succeeded` in a runner pod that compiles `.sparkwing/` inside the pod, its log streams back
//! to the CLI, and `kubectl get swr` shows the run: once in a cold runner Job (no pool) and once in
//! a warm pod of the chart's default pool.
//!
//! The bed has no kube-proxy, so Services route nowhere: the operator pod runs with
//! `hostNetwork: true` and `KUBERNETES_SERVICE_HOST/PORT` naming the apiserver on the host's
//! loopback, and runners reach the API at the node's bridge gateway (`runner.apiUrl`). Everything
//! else is the chart as a team installs it. Needs the real node (`SPARKWING_E2E_NODE=real`, the
//! default): the emulator runs no images of ours.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use serde_json::json;
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::cli::{triggered_run, Cli, Profile};
use sparkwing_e2e::{NodeKind, TestBed, User};

/// The fixture project (its `hello` pipeline counts to 5).
const FIXTURE: &str = "tests/fixtures/remote";
/// The release's name.
const RELEASE: &str = "swchart";
/// The admin token the chart registers at start (`api.bootstrapAdminTokenSecret`).
const ADMIN_TOKEN: &str = "chart-install-e2e-admin-token-0123456789abcdef";
/// Installing: images imported, the operator pod Ready, the default pool's warm pod Running.
const INSTALL_WAIT: Duration = Duration::from_secs(240);
/// A run, including a first compile of the fixture in a runner pod.
const RUN_WAIT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_millis(250);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A port free on the host now (the operator's host-network pod binds it next).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn run_ok(command: &mut tokio::process::Command, what: &str) -> Result<String> {
    let out = command
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` until it gives a value, for at most `wait`.
async fn eventually<T, F, Fut>(what: &str, wait: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {wait:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The version the images and the chart carry (the workspace's).
fn version() -> Result<String> {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_owned)
        .context("the workspace's version in Cargo.toml")
}

/// What the namespace shows (pods, events, the operator's log), for a failure's message.
async fn diagnose(bed: &TestBed, ns: &str) -> String {
    let mut out = String::new();
    for args in [
        vec!["describe", "pods", "-n", ns],
        vec!["get", "events", "-n", ns],
        vec![
            "logs",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/name=sparkwing-operator",
            "--tail=60",
        ],
        // The runner pods' own lines.
        vec![
            "logs",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/name=sparkwing-runner",
            "--prefix",
            "--tail=80",
        ],
    ] {
        let got = bed.kubectl(User::Admin).args(&args).output().await;
        out.push_str(&format!("== kubectl {}\n", args.join(" ")));
        match got {
            Ok(o) => {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                out.push_str(&String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => out.push_str(&format!("{e}\n")),
        }
    }
    out
}

fn phase_of(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .map(|s| s.phase.phase_str().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_chart_installed_with_its_images_runs_triggered_pipelines_cold_and_warm() -> Result<()>
{
    let bed = TestBed::shared().await?;
    ensure!(
        bed.node_kind() == NodeKind::Real,
        "the chart's install test needs the real node (SPARKWING_E2E_NODE=real): the emulator \
         cannot run the chart's images"
    );
    let node = bed.real_node().context("the real node")?;
    let version = version()?;
    let operator_image = format!("sparkwing-operator:{version}");
    let runner_image = format!("sparkwing-kube-runner:{version}");

    // The images, as `make images` builds them (debug binaries; cached by content).
    let started = Instant::now();
    let mut build = tokio::process::Command::new("bash");
    build
        .arg("images/build.sh")
        .args(["--profile", "debug"])
        .current_dir(repo())
        .kill_on_drop(true);
    // Not the variables cargo set for this test: build scripts watch some (ring's build.rs reruns
    // when CARGO_MANIFEST_DIR changes), so the build would differ from `make`'s and every later
    // build of the workspace would rebuild half of it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || [
                "CARGO_TARGET_TMPDIR",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref());
        if set_by_cargo {
            build.env_remove(name.as_ref());
        }
    }
    run_ok(&mut build, "images/build.sh --profile debug").await?;
    bed.load_image(&operator_image).await?;
    bed.load_image(&runner_image).await?;
    eprintln!("images built and imported in {:?}", started.elapsed());

    let ns = bed.namespace("chart-install").await?;
    let client = bed.client().await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let admin_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "sparkwing-admin-token"},
        "stringData": {"token": ADMIN_TOKEN},
    }))?;
    secrets
        .create(&PostParams::default(), &admin_secret)
        .await?;

    // `https://HOST:PORT` of the apiserver, as the operator pod on the host's network reaches it.
    let (apiserver_host, apiserver_port) = bed
        .server()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .rsplit_once(':')
        .with_context(|| format!("the apiserver's address {}", bed.server()))?;
    let (api_port, metrics_port) = (free_port()?, free_port()?);
    let gateway = node.gateway;
    let sets = [
        format!("image.tag={version}"),
        format!("runner.image={runner_image}"),
        format!("runner.apiUrl=http://{gateway}:{api_port}"),
        format!("watchNamespace={}", ns.name()),
        format!("api.port={api_port}"),
        format!("metrics.port={metrics_port}"),
        "api.persistence.emptyDir=true".to_string(),
        "api.bootstrapAdminTokenSecret=sparkwing-admin-token".to_string(),
        "hostNetwork=true".to_string(),
        "extraEnv[0].name=KUBERNETES_SERVICE_HOST".to_string(),
        format!("extraEnv[0].value={apiserver_host}"),
        "extraEnv[1].name=KUBERNETES_SERVICE_PORT".to_string(),
        format!("extraEnv[1].value={apiserver_port}"),
        "logLevel=info\\,sparkwing_operator=debug".to_string(),
    ];
    let mut helm = bed.helm();
    helm.args(["install", RELEASE])
        .arg(repo().join("charts/sparkwing"))
        .args(["--namespace", ns.name()]);
    for set in &sets {
        helm.args(["--set-string", set]);
    }
    run_ok(&mut helm, "helm install charts/sparkwing").await?;

    // The operator pod Ready (its /readyz: the CRDs the chart installed are served), the API
    // answering on the node, the default pool's warm pod Running.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ready = eventually(
        "the operator Deployment available",
        INSTALL_WAIT,
        || async {
            let d = deployments.get(&format!("{RELEASE}-sparkwing")).await?;
            let available = d.status.as_ref().and_then(|s| s.available_replicas) == Some(1);
            Ok(available.then_some(d))
        },
    )
    .await;
    if let Err(e) = ready {
        bail!("{e}\n{}", diagnose(bed, ns.name()).await);
    }
    let api_url = format!("http://127.0.0.1:{api_port}");
    // The API answers on the node and knows the bootstrap admin token.
    let api = sparkwing_api::client::ApiClient::new(&api_url, ADMIN_TOKEN)?;
    let whoami = eventually("the API answering whoami on the node", INSTALL_WAIT, || {
        let api = api.clone();
        async move { Ok(tokio::task::spawn_blocking(move || api.whoami().ok()).await?) }
    })
    .await?;
    ensure!(whoami.principal == "bootstrap-admin", "whoami: {whoami:?}");
    let warm = ListParams::default().labels("sparkwing.dev/pool=default,sparkwing.dev/warm=true");
    eventually(
        "a warm pod of the default pool Running",
        INSTALL_WAIT,
        || async {
            let running = pods
                .list(&warm)
                .await?
                .items
                .into_iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
            Ok(running.then_some(()))
        },
    )
    .await?;
    eprintln!("chart installed and ready in {:?}", started.elapsed());

    // A user of the API with the fixture: one profile without a pool (a cold Job in
    // `runner.image`), one with the chart's default pool (a warm pod claimed).
    let cli = Cli::new(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE),
        ADMIN_TOKEN,
    )?;
    cli.set_profiles(&[
        Profile::new("cold", &api_url).namespace(ns.name()),
        Profile::new("warm", &api_url)
            .namespace(ns.name())
            .pool("default"),
    ])?;
    let project = cli.project().to_str().context("project path")?.to_owned();
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    // Every warm pod of the default pool, as a watch sees them come (names only).
    let warm_pods = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let watch = {
        let (pods, seen) = (pods.clone(), warm_pods.clone());
        tokio::spawn(async move {
            let config = watcher::Config::default()
                .labels("sparkwing.dev/pool=default,sparkwing.dev/warm=true");
            let mut events = watcher(pods, config).applied_objects().boxed();
            while let Some(Ok(pod)) = events.next().await {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(pod.name_any());
            }
        })
    };
    for profile in ["cold", "warm"] {
        let out = cli
            .run(
                [
                    "pipeline",
                    "trigger",
                    "-C",
                    &project,
                    "hello",
                    "--profile",
                    profile,
                ],
                RUN_WAIT,
            )
            .await?;
        if out.code != 0 {
            bail!(
                "trigger --profile {profile}: {out}\n{}",
                diagnose(bed, ns.name()).await
            );
        }
        // The job's log streamed back to the CLI.
        ensure!(
            out.stdout.contains("count 5") || out.stderr.contains("count 5"),
            "trigger --profile {profile}: no job log: {out}"
        );
        let name = triggered_run(&out.stderr)
            .with_context(|| format!("the run trigger --profile {profile} created: {out}"))?;
        let name = name.rsplit('/').next().unwrap_or(&name).to_owned();
        let run = runs.get(&name).await?;
        ensure!(phase_of(&run) == "Succeeded", "{name}: {:?}", run.status);
        let runner = run
            .status
            .as_ref()
            .and_then(|s| s.runner.clone())
            .unwrap_or_default();
        match profile {
            "cold" => ensure!(
                runner == format!("{name}-a1"),
                "the cold run's runner {runner:?} is not its Job"
            ),
            _ => {
                // The claimed pod is spent and deleted once its run ends: compare with every warm
                // pod of the default pool the watch saw.
                let seen = eventually(
                    "the warm run's runner among the default pool's warm pods",
                    Duration::from_secs(30),
                    || async {
                        let seen = warm_pods.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        Ok(seen.contains(&runner).then_some(seen))
                    },
                )
                .await;
                ensure!(
                    seen.is_ok(),
                    "the warm run's runner {runner:?} is not a warm pod of the default pool: {:?}",
                    warm_pods.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        }
        // `kubectl get swr` shows it.
        let listed = run_ok(
            bed.kubectl(User::Admin)
                .args(["get", "swr", "-n", ns.name()]),
            "kubectl get swr",
        )
        .await?;
        let row = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .with_context(|| format!("kubectl get swr has no row {name}:\n{listed}"))?;
        ensure!(row.contains("Succeeded"), "kubectl get swr: {row}");
    }

    watch.abort();
    run_ok(
        bed.helm()
            .args(["uninstall", RELEASE, "--namespace", ns.name(), "--wait"]),
        "helm uninstall",
    )
    .await?;
    Ok(())
}
