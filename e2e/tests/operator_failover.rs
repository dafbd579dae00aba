//! Operator fail-over under load: two `sparkwing-operator` processes (the real binary, as two
//! replicas of the chart run it) with leader election on one Lease; 100 runs are created; while
//! they are in flight the leader is killed with SIGKILL (no Lease release, no cleanup). The
//! standby must take over and finish every run the way it should end, with no duplicate runner:
//! exactly one Job (`<run>-a1`) and one pod per run, one attempt each, nothing left running.
//!
//! Runs use the test runner image (`ok-*` exit 0 after 0.3 s, `slow-*` after 3 s, `exit3-*` exit 3;
//! see `sparkwing_e2e::test_runner_image`). The binary is `target/<profile>/sparkwing-operator`
//! (`make test-e2e` builds it).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sparkwing_crds::PipelineRun;
use sparkwing_e2e::{test_runner_image, TestBed, TestNode};

const RUNS: usize = 100;
/// Kill the leader once this many runs have their Job (the leader is busy) and before all ended.
const KILL_AFTER_JOBS: usize = 30;
/// The Lease's name (the operator's default).
const LEASE: &str = "sparkwing-operator";
/// Takeover: client-go's default timing, the one the binary uses (a 15 s Lease, 2 s retries).
const TAKEOVER_WAIT: Duration = Duration::from_secs(60);
/// Every run ended, on a loaded two-core machine with 100 pods to start on one node.
const END_WAIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(250);

/// `target/<profile>/sparkwing-operator`, next to this test's directory.
fn operator_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is not in a cargo target directory")?;
    let bin = profile_dir.join("sparkwing-operator");
    ensure!(
        bin.is_file(),
        "{} does not exist: build it first (`cargo build -p sparkwing-operator --bin \
         sparkwing-operator`, which `make test-e2e` does)",
        bin.display()
    );
    Ok(bin)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One replica: the real binary with leader election, its output in `log`.
struct Replica {
    id: &'static str,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Replica {
    fn start(bed: &TestBed, ns: &str, image: &str, id: &'static str, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("operator-{id}.log"));
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(operator_binary()?)
            .args(["--namespace", ns, "--runner-image", image])
            .args([
                "--leader-election",
                "--lease-namespace",
                ns,
                "--instance",
                id,
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()?))
            .env("KUBECONFIG", bed.kubeconfig_path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting operator {id}"))?;
        Ok(Replica { id, child, log })
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

async fn holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// How a run must end, from its name.
fn expected_end(name: &str) -> (&'static str, &'static str) {
    if name.starts_with("exit3-") {
        ("Failed", "Failed")
    } else {
        ("Succeeded", "Succeeded")
    }
}

fn end_of(run: &PipelineRun) -> Option<(String, String, u32)> {
    let s = run.status.as_ref()?;
    if !s.phase.is_terminal() {
        return None;
    }
    let reason = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    Some((s.phase.phase_str().to_string(), reason, s.attempts))
}

#[tokio::test]
async fn killing_the_leader_with_100_runs_in_flight_loses_and_duplicates_nothing() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let image = test_runner_image().await?;
    bed.load_image(&image).await?;
    let ns = bed.namespace("failover").await?;
    let client = bed.client().await?;
    let _node = TestNode::start(bed, client.clone(), &ns).await?;
    let dir = tempfile::tempdir()?;
    let mut replicas = [
        Replica::start(bed, ns.name(), &image, "a", dir.path())?,
        Replica::start(bed, ns.name(), &image, "b", dir.path())?,
    ];
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + TAKEOVER_WAIT;
    let leader = loop {
        if let Some(h) = holder(&leases).await? {
            break h;
        }
        if Instant::now() > deadline {
            bail!(
                "no leader within {TAKEOVER_WAIT:?}:\n{}\n{}",
                replicas[0].tail(),
                replicas[1].tail()
            );
        }
        tokio::time::sleep(POLL).await;
    };

    // 100 runs: 60 slow (3 s), 30 quick, 10 failing with exit 3.
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..RUNS)
        .map(|i| match i {
            0..60 => format!("slow-fo-{i:03}"),
            60..90 => format!("ok-fo-{i:03}"),
            _ => format!("exit3-fo-{i:03}"),
        })
        .collect();
    let created = Instant::now();
    for name in &names {
        let run: PipelineRun = serde_json::from_value(json!({
            "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
            "metadata": {"name": name},
            "spec": {"pipeline": "build", "source": {"upload": {"id": format!("upload-{name}")}}},
        }))?;
        runs.create(&PostParams::default(), &run).await?;
    }

    // Kill the leader while it is busy: some Jobs made, not every run ended.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + END_WAIT;
    loop {
        let made = jobs.list(&ListParams::default()).await?.items.len();
        if made >= KILL_AFTER_JOBS {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the leader made {made} Jobs in {END_WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let ended_before = runs
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|r| end_of(r).is_some())
        .count();
    ensure!(
        ended_before < RUNS,
        "every run ended before the kill: nothing was in flight"
    );
    let (victim, standby) = if leader == "a" { (0, 1) } else { (1, 0) };
    replicas[victim].child.start_kill()?;
    let killed = Instant::now();
    replicas[victim].child.wait().await?;
    eprintln!(
        "killed leader {} (SIGKILL) {:?} after the runs were created; {ended_before} of {RUNS} had ended",
        replicas[victim].id,
        killed - created
    );

    // The standby takes the Lease over once the dead leader's record expires.
    let standby_id = replicas[standby].id;
    let deadline = Instant::now() + TAKEOVER_WAIT;
    while holder(&leases).await?.as_deref() != Some(standby_id) {
        if Instant::now() > deadline {
            bail!(
                "{standby_id} did not take the Lease over within {TAKEOVER_WAIT:?}:\n{}",
                replicas[standby].tail()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!("{standby_id} leads {:?} after the kill", killed.elapsed());

    // Every run ends as its name says.
    let deadline = Instant::now() + END_WAIT;
    let ends = loop {
        let listed = runs.list(&ListParams::default()).await?.items;
        let ends: BTreeMap<String, (String, String, u32)> = listed
            .iter()
            .filter_map(|r| end_of(r).map(|e| (r.name_any(), e)))
            .collect();
        if ends.len() == RUNS {
            break ends;
        }
        if Instant::now() > deadline {
            let stuck: Vec<String> = listed
                .iter()
                .filter(|r| end_of(r).is_none())
                .map(|r| format!("{} {:?}", r.name_any(), r.status.as_ref().map(|s| s.phase)))
                .collect();
            bail!(
                "{} runs not ended within {END_WAIT:?}: {stuck:?}\n{}",
                stuck.len(),
                replicas[standby].tail()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    eprintln!(
        "all {RUNS} runs ended {:?} after they were created",
        created.elapsed()
    );
    for name in &names {
        let (phase, reason, attempts) = &ends[name];
        let (want_phase, want_reason) = expected_end(name);
        ensure!(
            (phase.as_str(), reason.as_str()) == (want_phase, want_reason) && *attempts == 1,
            "{name} ended {phase}/{reason} after {attempts} attempts, expected {want_phase}/{want_reason} after 1"
        );
    }

    // No duplicate runner: one Job and one pod per run, named for attempt 1.
    let mut jobs_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in jobs.list(&ListParams::default()).await?.items {
        let run = job
            .labels()
            .get("sparkwing.dev/run")
            .cloned()
            .unwrap_or_default();
        jobs_of.entry(run).or_default().push(job.name_any());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut pods_of: BTreeMap<String, usize> = BTreeMap::new();
    for pod in pods.list(&ListParams::default()).await?.items {
        let run = pod
            .labels()
            .get("sparkwing.dev/run")
            .cloned()
            .unwrap_or_default();
        *pods_of.entry(run).or_default() += 1;
    }
    for name in &names {
        let jobs = jobs_of.get(name).cloned().unwrap_or_default();
        ensure!(
            jobs == [format!("{name}-a1")],
            "{name} has the Jobs {jobs:?}"
        );
        let pods = pods_of.get(name).copied().unwrap_or(0);
        ensure!(pods == 1, "{name} has {pods} pods");
    }
    ensure!(
        jobs_of.len() == RUNS,
        "Jobs of unknown runs: {:?}",
        jobs_of
            .keys()
            .filter(|k| !names.contains(k))
            .collect::<Vec<_>>()
    );
    let standby_alive = replicas[standby].child.try_wait()?.is_none();
    ensure!(
        standby_alive,
        "the new leader exited:\n{}",
        replicas[standby].tail()
    );
    Ok(())
}
