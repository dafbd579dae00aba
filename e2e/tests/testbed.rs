//! The test bed is a real Kubernetes API: the version it reports is the pinned release, RBAC
//! decides, the CRDs install, and their schema, CEL rules and printer columns are enforced by
//! the apiserver itself. Every test fails (it never skips) when the binaries are not built.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::Api;
use serde_json::json;
use sparkwing_crds::{PipelineRun, RunnerPool};
use sparkwing_e2e::{binaries, TestBed, User};

/// A sample from `crds/samples/`.
fn sample<T: serde::de::DeserializeOwned>(file: &str) -> Result<T> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/samples")
        .join(file);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    // Through JSON: serde_yaml_ng reads externally tagged enums (`source: {git: ...}`) as YAML tags.
    let value: serde_json::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    serde_json::from_value(value).with_context(|| format!("decoding {}", path.display()))
}

/// The apiserver's refusal of a request: its HTTP code and message.
fn api_error(err: kube::Error) -> Result<(u16, String)> {
    match err {
        kube::Error::Api(status) => Ok((status.code, status.message)),
        other => Err(other).context("expected an API error (a refusal by the apiserver)"),
    }
}

/// Runs a kubectl or helm command and returns its standard output; fails on a non-zero exit.
async fn run(command: &mut tokio::process::Command) -> Result<String> {
    let output = command.output().await.context("running the command")?;
    ensure!(
        output.status.success(),
        "{:?} failed ({}): {}",
        command.as_std(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test]
async fn server_version_is_the_pinned_release() -> Result<()> {
    let bed = TestBed::shared().await?;
    let version = bed.client().await?.apiserver_version().await?;
    assert_eq!(
        version.git_version,
        binaries::pinned_kubernetes_version(),
        "the bed's kube-apiserver is not the release e2e/testbed/go/kubernetes/go.mod pins; \
         rebuild it with `make e2e-testbed`"
    );
    assert_eq!(version.git_tree_state, "clean");
    Ok(())
}

#[tokio::test]
async fn rbac_refuses_the_limited_user_what_it_was_not_granted() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let ns = bed.namespace("rbac").await?;
    let admin = bed.client().await?;
    let limited = bed.client_as(User::Limited).await?;

    // Cluster scope: the limited user may not create a namespace; admin may.
    let namespace = |name: &str| Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let refused = Api::<Namespace>::all(limited.clone())
        .create(
            &PostParams::default(),
            &namespace(&format!("{}-by-limited", ns.name())),
        )
        .await
        .expect_err("the limited user created a namespace");
    let (code, message) = api_error(refused)?;
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(r#"User "limited" cannot create resource "namespaces""#),
        "{message}"
    );
    let by_admin = format!("{}-by-admin", ns.name());
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace(&by_admin))
        .await?;
    Api::<Namespace>::all(admin.clone())
        .delete(&by_admin, &Default::default())
        .await?;

    // Namespace scope: refused until a Role is bound to the user, then allowed.
    let runs = Api::<PipelineRun>::namespaced(limited.clone(), &ns);
    let (code, message) = api_error(runs.list(&Default::default()).await.unwrap_err())?;
    assert_eq!(code, 403, "{message}");
    let role = Role {
        metadata: ObjectMeta {
            name: Some("pipelinerun-reader".to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["sparkwing.dev".to_owned()]),
            resources: Some(vec!["pipelineruns".to_owned()]),
            verbs: vec!["get".to_owned(), "list".to_owned()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("limited-reads-pipelineruns".to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: "pipelinerun-reader".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "User".to_owned(),
            name: User::Limited.name().to_owned(),
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(&PostParams::default(), &binding)
        .await?;
    // RBAC reads bindings from the apiserver's informer cache: allowed within moments.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let list = loop {
        match runs.list(&Default::default()).await {
            Ok(list) => break list,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err).context("the bound Role did not take effect"),
        }
    };
    assert!(list.items.is_empty());
    // Reading was granted, writing was not.
    let run: PipelineRun = sample("pipelinerun.yaml")?;
    let (code, message) = api_error(
        runs.create(&PostParams::default(), &run)
            .await
            .expect_err("the limited user created a PipelineRun"),
    )?;
    assert_eq!(code, 403, "{message}");
    Ok(())
}

#[tokio::test]
async fn crds_install_and_are_established() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let crds = Api::<CustomResourceDefinition>::all(bed.client().await?);
    for (name, short) in [
        ("pipelineruns.sparkwing.dev", "swr"),
        ("runnerpools.sparkwing.dev", "swp"),
    ] {
        let crd = crds.get(name).await?;
        let conditions = crd
            .status
            .and_then(|status| status.conditions)
            .unwrap_or_default();
        for wanted in ["NamesAccepted", "Established"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c.type_ == wanted && c.status == "True"),
                "{name} is not {wanted}: {conditions:?}"
            );
        }
        let short_names = crd.spec.names.short_names.unwrap_or_default();
        assert!(short_names.iter().any(|s| s == short), "{short_names:?}");
    }
    // Installing again is a no-op.
    sparkwing_e2e::install_crds(&crds.into_client(), &sparkwing_e2e::crds_yaml_dir()).await?;
    Ok(())
}

#[tokio::test]
async fn the_sample_pipelinerun_is_accepted_and_defaulted() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let ns = bed.namespace("sample-run").await?;
    let runs = Api::<PipelineRun>::namespaced(bed.client().await?, &ns);
    let run: PipelineRun = sample("pipelinerun.yaml")?;
    let created = runs.create(&PostParams::default(), &run).await?;
    assert_eq!(created.metadata.namespace.as_deref(), Some(ns.name()));
    assert_eq!(
        created.spec, run.spec,
        "the apiserver changed the sample's spec"
    );
    let fetched = runs.get("build-main").await?;
    assert_eq!(fetched.spec, run.spec);

    let pools = Api::<RunnerPool>::namespaced(bed.client().await?, &ns);
    let pool: RunnerPool = sample("runnerpool.yaml")?;
    let created = pools.create(&PostParams::default(), &pool).await?;
    assert_eq!(created.spec, pool.spec);
    Ok(())
}

#[tokio::test]
async fn the_apiserver_applies_schema_defaults_and_validation() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let ns = bed.namespace("schema").await?;
    let resource = ApiResource::erase::<PipelineRun>(&());
    let runs = Api::<DynamicObject>::namespaced_with(bed.client().await?, &ns, &resource);
    let object = |name: &str, spec: serde_json::Value| -> Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "sparkwing.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": { "name": name },
            "spec": spec,
        }))?)
    };

    // maxAttempts left out: the schema's default (3) is stored.
    let minimal = json!({ "pipeline": "build", "source": { "local": { "path": "/src" } } });
    let created = runs
        .create(&PostParams::default(), &object("minimal", minimal.clone())?)
        .await?;
    assert_eq!(
        created.data["spec"]["maxAttempts"],
        json!(3),
        "{:?}",
        created.data
    );

    // Out of range, and a timeout that is no duration: refused, naming the fields.
    let mut invalid = minimal;
    invalid["maxAttempts"] = json!(11);
    invalid["timeout"] = json!("soon");
    let (code, message) = api_error(
        runs.create(&PostParams::default(), &object("invalid", invalid)?)
            .await
            .expect_err("the apiserver accepted an invalid spec"),
    )?;
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("spec.maxAttempts"), "{message}");
    assert!(message.contains("spec.timeout"), "{message}");
    Ok(())
}

#[tokio::test]
async fn runnerpool_with_max_runners_below_min_idle_is_rejected_by_cel() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let ns = bed.namespace("pool-cel").await?;
    let pools = Api::<RunnerPool>::namespaced(bed.client().await?, &ns);
    let mut pool: RunnerPool = sample("runnerpool.yaml")?;
    pool.spec.min_idle = 5;
    pool.spec.max_runners = 2;
    let refused = pools
        .create(&PostParams::default(), &pool)
        .await
        .expect_err("the apiserver accepted maxRunners < minIdle");
    let (code, message) = api_error(refused)?;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("maxRunners must be >= minIdle"),
        "not the CEL rule's message: {message}"
    );
    // Nothing was stored.
    assert!(pools.list(&Default::default()).await?.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn pipelinerun_source_is_immutable() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let ns = bed.namespace("immutable-source").await?;
    let runs = Api::<PipelineRun>::namespaced(bed.client().await?, &ns);
    let run: PipelineRun = sample("pipelinerun.yaml")?;
    runs.create(&PostParams::default(), &run).await?;

    let change_source = json!({ "spec": { "source": { "git": { "revision": "other" } } } });
    let refused = runs
        .patch(
            "build-main",
            &PatchParams::default(),
            &Patch::Merge(&change_source),
        )
        .await
        .expect_err("the apiserver accepted a change of spec.source");
    let (code, message) = api_error(refused)?;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("source is immutable"),
        "not the CEL rule's message: {message}"
    );

    // Other fields stay mutable.
    let change_args = json!({ "spec": { "args": { "target": "debug" } } });
    let patched = runs
        .patch(
            "build-main",
            &PatchParams::default(),
            &Patch::Merge(&change_args),
        )
        .await?;
    assert_eq!(patched.spec.source, run.spec.source);
    Ok(())
}

#[tokio::test]
async fn kubectl_lists_pipelineruns_with_their_printer_columns() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let ns = bed.namespace("kubectl-columns").await?;
    let runs = Api::<PipelineRun>::namespaced(bed.client().await?, &ns);
    runs.create(&PostParams::default(), &sample("pipelinerun.yaml")?)
        .await?;

    let table = run(bed
        .kubectl(User::Admin)
        .args(["get", "pipelineruns", "-n", ns.name()]))
    .await?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .context("no header")?
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "PIPELINE", "RUNNER", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().context("no row")?.split_whitespace().collect();
    // No operator runs: the status is empty, so Phase and Runner are blank.
    assert_eq!(row[..2], ["build-main", "build"], "{table}");

    let wide =
        run(bed
            .kubectl(User::Admin)
            .args(["get", "pipelineruns", "-n", ns.name(), "-o", "wide"]))
        .await?;
    let header: Vec<&str> = wide
        .lines()
        .next()
        .context("no header")?
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "PIPELINE", "RUNNER", "AGE", "REASON", "ATTEMPTS", "STARTED"],
        "{wide}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_knows_the_short_names_and_category() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let ns = bed.namespace("short-names").await?;
    let client = bed.client().await?;
    Api::<PipelineRun>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sample("pipelinerun.yaml")?)
        .await?;
    Api::<RunnerPool>::namespaced(client, &ns)
        .create(&PostParams::default(), &sample("runnerpool.yaml")?)
        .await?;

    let names = |kind: &'static str| {
        let mut command = bed.kubectl(User::Admin);
        command.args(["get", kind, "-n", ns.name(), "-o", "name"]);
        command
    };
    for short in ["swr", "swrun"] {
        let out = run(&mut names(short)).await?;
        assert_eq!(
            out.trim(),
            "pipelinerun.sparkwing.dev/build-main",
            "kubectl get {short}"
        );
    }
    for short in ["swp", "swpool"] {
        let out = run(&mut names(short)).await?;
        assert_eq!(
            out.trim(),
            "runnerpool.sparkwing.dev/default",
            "kubectl get {short}"
        );
    }
    let out = run(&mut names("sparkwing")).await?;
    let mut listed: Vec<&str> = out.lines().collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "pipelinerun.sparkwing.dev/build-main",
            "runnerpool.sparkwing.dev/default"
        ],
        "kubectl get sparkwing (the category)"
    );
    Ok(())
}

#[tokio::test]
async fn helm_is_the_pinned_release_and_reaches_the_bed() -> Result<()> {
    let bed = TestBed::shared().await?;
    let version = run(bed.helm().args(["version", "--short"])).await?;
    assert!(
        version.trim().starts_with(binaries::pinned_helm_version()),
        "helm version --short: {version}"
    );
    let ns = bed.namespace("helm").await?;
    let releases = run(bed.helm().args(["list", "-n", ns.name(), "-o", "json"])).await?;
    assert_eq!(releases.trim(), "[]");
    Ok(())
}

#[tokio::test]
async fn namespaces_are_unique_per_test() -> Result<()> {
    let bed = TestBed::shared().await?;
    let a = bed.namespace("same-hint").await?;
    let b = bed.namespace("same-hint").await?;
    assert_ne!(a.name(), b.name());
    let api = Api::<Namespace>::all(bed.client().await?);
    let name = a.name().to_owned();
    assert!(api.get_opt(&name).await?.is_some());
    drop(a);
    // Deleted: marked for deletion (finalizing it is the controller-manager's job).
    let deleted = api.get_opt(&name).await?;
    assert!(
        deleted
            .as_ref()
            .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
        "{deleted:?}"
    );
    Ok(())
}

/// What the operator will create is admitted (the ServiceAccount admission plugin finds the
/// `default` account the controller-manager made) and the real scheduler binds it to the bed's
/// node. Its image is on a loopback address that serves nothing, so no node ever pulls from a
/// registry; it stays `Pending`.
#[tokio::test]
async fn pods_are_admitted_and_scheduled() -> Result<()> {
    let bed = TestBed::shared().await?;
    let ns = bed.namespace("pods").await?;
    let pods = Api::<Pod>::namespaced(bed.client().await?, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "runner" },
        "spec": { "containers": [{ "name": "runner", "image": "127.0.0.1:1/none:0" }] },
    }))?;
    let created = pods.create(&PostParams::default(), &pod).await?;
    let spec = created.spec.context("no spec")?;
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let scheduled = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "runner", |pod: Option<&Pod>| {
            pod.and_then(|p| p.spec.as_ref())
                .is_some_and(|spec| spec.node_name.is_some())
        }),
    )
    .await
    .context("the pod was not scheduled within 60 s")??
    .context("the pod is gone")?;
    assert_eq!(
        scheduled.spec.context("no spec")?.node_name.as_deref(),
        Some(bed.node_name())
    );
    let status = scheduled.status.context("no status")?;
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    Ok(())
}

/// An owned bed starts within the deadline, reports its startup time, and leaves nothing behind
/// when dropped: its processes are gone and its directory removed.
#[tokio::test]
async fn an_owned_bed_is_torn_down_on_drop() -> Result<()> {
    let bed = TestBed::start().await?;
    eprintln!(
        "owned test bed started in {:.1}s",
        bed.startup().as_secs_f64()
    );
    let dir = bed.dir().to_path_buf();
    let server = bed.server().to_owned();
    let port: u16 = server.rsplit(':').next().context("no port")?.parse()?;
    bed.client().await?.apiserver_version().await?;
    drop(bed);
    if std::env::var(sparkwing_e2e::KEEP_ENV).as_deref() != Ok("1") {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the apiserver still listens on {server}"
    );
    Ok(())
}
