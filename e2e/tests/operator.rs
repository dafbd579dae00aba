//! The operator end to end: `sparkwing_operator::run_controllers` in-process against the real
//! kube-apiserver, etcd, controller-manager and scheduler of the test bed, with the bed's node (a
//! real kubelet, or the node emulator on Docker) running its Jobs and warm pods, in the test runner
//! image (`sparkwing_e2e::test_runner_image`, whose behaviour is
//! chosen by the run's name: `ok-*`, `slow-*`, `exit3-*`, `sleep-*`).
//!
//! Each test has its own namespace, node (`TestNode`), claim relay and operator task scoped to that
//! namespace. Waits are watches or polls with deadlines; the only fixed windows are the "nothing
//! more happens" checks, which say why.
//!
//! Scenarios: see `operator/tests/README.md`.

use sparkwing_e2e::wait_for_run;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _, Result};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use sparkwing_crds::{PipelineRun, RunnerPool};
use sparkwing_e2e::{test_runner_image, ClaimRelay, LossKind, TestBed, TestNamespace, TestNode};
use sparkwing_operator::{Config, LeaderConfig, Metrics};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long anything here may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(100);
/// An image no node can pull: a loopback address where nothing listens.
const NO_SUCH_IMAGE: &str = "127.0.0.1:1/none:0";

// ---------------------------------------------------------------------------------------------
// Harness.

use sparkwing_e2e::OperatorTask as Operator;

/// One test's world: namespace, node emulator, claim relay, test runner image and an operator.
struct Env {
    ns: TestNamespace,
    client: Client,
    node: TestNode,
    _relay: ClaimRelay,
    image: String,
    op: Option<Operator>,
}

impl Env {
    async fn new(hint: &str) -> Result<Env> {
        let bed = TestBed::shared().await?;
        bed.install_crds().await?;
        let image = test_runner_image().await?;
        bed.load_image(&image).await?;
        let ns = bed.namespace(hint).await?;
        let client = bed.client().await?;
        let node = TestNode::start(bed, client.clone(), &ns).await?;
        let relay = ClaimRelay::start(client.clone(), &ns).await?;
        let mut env = Env {
            ns,
            client,
            node,
            _relay: relay,
            image,
            op: None,
        };
        env.op = Some(env.start_operator());
        Ok(env)
    }

    fn config(&self) -> Config {
        Config::new(self.image.clone()).namespace(self.ns.name())
    }

    fn start_operator(&self) -> Operator {
        Operator::start(self.client.clone(), self.config())
    }

    fn op(&self) -> &Operator {
        self.op.as_ref().expect("operator running")
    }

    fn metrics(&self) -> &Metrics {
        &self.op().metrics
    }

    fn runs(&self) -> Api<PipelineRun> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
    fn pools(&self) -> Api<RunnerPool> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_run(&self, name: &str, spec: Value) -> Result<PipelineRun> {
        self.runs()
            .create(&PostParams::default(), &run_obj(name, spec)?)
            .await
            .with_context(|| format!("creating run {name}"))
    }

    async fn create_pool(&self, name: &str, spec: Value) -> Result<RunnerPool> {
        let mut s =
            json!({"image": self.image, "minIdle": 0, "maxRunners": 1, "idleTimeout": "10m"});
        merge(&mut s, spec);
        let pool: RunnerPool = serde_json::from_value(json!({
            "apiVersion": "sparkwing.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name}, "spec": s,
        }))?;
        Ok(self.pools().create(&PostParams::default(), &pool).await?)
    }

    async fn patch_pool(&self, name: &str, spec: Value) -> Result<()> {
        self.pools()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await?;
        Ok(())
    }

    async fn patch_run_spec(&self, name: &str, spec: Value) -> Result<()> {
        self.runs()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await?;
        Ok(())
    }

    async fn wait_run(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&PipelineRun) -> bool + Send + 'static,
    ) -> Result<PipelineRun> {
        wait_for_run(&self.runs(), name, what, pred, WAIT).await
    }

    /// Wait for the run to end in `phase` with condition reason `reason`.
    async fn wait_end(
        &self,
        name: &str,
        phase: &'static str,
        reason: &'static str,
    ) -> Result<PipelineRun> {
        let run = self
            .wait_run(name, "terminal", |r| {
                matches!(phase_of(r).as_str(), "Succeeded" | "Failed" | "Cancelled")
            })
            .await?;
        ensure!(
            phase_of(&run) == phase && reason_of(&run) == reason,
            "{name} ended {}/{} ({}), expected {phase}/{reason}",
            phase_of(&run),
            reason_of(&run),
            message_of(&run)
        );
        Ok(run)
    }

    /// The Jobs of a run (by the `sparkwing.dev/run` label).
    async fn jobs_of(&self, run: &str) -> Result<Vec<String>> {
        let lp = ListParams::default().labels(&format!("sparkwing.dev/run={run}"));
        Ok(self
            .jobs()
            .list(&lp)
            .await?
            .iter()
            .map(|j| j.name_any())
            .collect())
    }

    /// The (first) pod the emulator made for Job `job`.
    async fn job_pod(&self, job: &str) -> Result<Pod> {
        let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
        eventually(&format!("a pod of job {job}"), WAIT, || {
            let pods = self.pods();
            let lp = lp.clone();
            async move { Ok(pods.list(&lp).await?.items.into_iter().next()) }
        })
        .await
    }

    /// The warm pods of a pool that are not being deleted.
    async fn live_pool_pods(&self, pool: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels(&format!(
            "sparkwing.dev/pool={pool},sparkwing.dev/warm=true"
        ));
        Ok(self
            .pods()
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    async fn wait_pool(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let pools = self.pools();
        eventually(&format!("pool {name} {what}"), WAIT, || {
            let pools = pools.clone();
            let status = async move {
                let p = pools.get(name).await?;
                Ok::<_, anyhow::Error>(serde_json::to_value(&p.status)?)
            };
            let pred = &pred;
            async move {
                let s = status.await?;
                Ok(pred(&s).then_some(s))
            }
        })
        .await
    }
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn run_obj(name: &str, spec: Value) -> Result<PipelineRun> {
    let mut s =
        json!({"pipeline": "build", "source": {"upload": {"id": format!("upload-{name}")}}});
    merge(&mut s, spec);
    Ok(serde_json::from_value(json!({
        "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": name}, "spec": s,
    }))?)
}

fn status_json(run: &PipelineRun) -> Value {
    serde_json::to_value(&run.status).unwrap_or(Value::Null)
}

fn phase_of(run: &PipelineRun) -> String {
    status_json(run)["phase"].as_str().unwrap_or("").to_string()
}

fn succeeded_condition(run: &PipelineRun) -> Value {
    status_json(run)["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Succeeded").cloned())
        .unwrap_or(Value::Null)
}

fn reason_of(run: &PipelineRun) -> String {
    succeeded_condition(run)["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn message_of(run: &PipelineRun) -> String {
    succeeded_condition(run)["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn runner_of(run: &PipelineRun) -> String {
    status_json(run)["runner"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn attempts_of(run: &PipelineRun) -> u64 {
    status_json(run)["attempts"].as_u64().unwrap_or(0)
}

fn is_terminal(run: &PipelineRun) -> bool {
    matches!(phase_of(run).as_str(), "Succeeded" | "Failed" | "Cancelled")
}

/// Poll `f` every [`POLL`] until it yields `Some`, at most `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        ensure!(Instant::now() < until, "not {what} within {deadline:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Records every distinct (phase, reason, runner) a run shows, in order, from a watch started
/// before the run exists.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    phase: String,
    reason: String,
    runner: String,
    attempts: u64,
    at: SystemTime,
}

struct RunRecorder {
    seen: Arc<Mutex<HashMap<String, Vec<Seen>>>>,
    task: JoinHandle<()>,
}

impl Drop for RunRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunRecorder {
    /// Starts watching and returns once the watch has listed (so nothing later is missed).
    async fn start(api: Api<PipelineRun>) -> Result<RunRecorder> {
        let seen: Arc<Mutex<HashMap<String, Vec<Seen>>>> = Arc::default();
        let (ready, is_ready) = oneshot::channel();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready);
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let run = match ev {
                    Ok(Event::InitDone) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        continue;
                    }
                    Ok(Event::Apply(r) | Event::InitApply(r)) => r,
                    _ => continue,
                };
                let now = Seen {
                    phase: phase_of(&run),
                    reason: reason_of(&run),
                    runner: runner_of(&run),
                    attempts: attempts_of(&run),
                    at: SystemTime::now(),
                };
                let mut seen = s.lock().unwrap();
                let list = seen.entry(run.name_any()).or_default();
                let same = list.last().is_some_and(|l| {
                    l.phase == now.phase
                        && l.reason == now.reason
                        && l.runner == now.runner
                        && l.attempts == now.attempts
                });
                if !same {
                    list.push(now);
                }
            }
        });
        tokio::time::timeout(WAIT, is_ready)
            .await
            .context("the run watch did not list")??;
        Ok(RunRecorder { seen, task })
    }

    fn of(&self, run: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .get(run)
            .cloned()
            .unwrap_or_default()
    }

    /// Wait until the watch has delivered a status of `run` matching `f`. A test that saw a
    /// state through its own read must wait for the recorder's (separate) watch to catch up
    /// before it reads the history.
    async fn caught_up(&self, run: &str, what: &str, f: impl Fn(&Seen) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.of(run).iter().any(&f) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the run watch never showed {run} {what} within {WAIT:?}: {:?}",
                    self.of(run)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The distinct (phase, reason) pairs, in order, without the empty status.
    fn phases(&self, run: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for s in self.of(run) {
            let p = (s.phase, s.reason);
            if p.0.is_empty() || out.last() == Some(&p) {
                continue;
            }
            out.push(p);
        }
        out
    }
}

/// What a pod watch saw of the pods of a namespace: the deletions (with the pod as it was when
/// its deletion was first seen), exit codes, and the most pods alive at once per pool.
#[derive(Default)]
struct PodLog {
    /// pod name -> the pod when its deletion was first seen (deletionTimestamp or Delete event).
    deleted: HashMap<String, Pod>,
    /// pod name -> exit code of its terminated runner container.
    exit_codes: HashMap<String, i32>,
    /// pod name -> run it was claimed by.
    claimed: HashMap<String, String>,
    live: HashMap<String, String>,
    /// pool -> the most live (not deleting) warm pods seen at once.
    max_live: HashMap<String, usize>,
}

struct PodRecorder {
    log: Arc<Mutex<PodLog>>,
    task: JoinHandle<()>,
}

impl Drop for PodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodRecorder {
    async fn start(api: Api<Pod>) -> Result<PodRecorder> {
        let log: Arc<Mutex<PodLog>> = Arc::default();
        let (ready, is_ready) = oneshot::channel();
        let l = log.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready);
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let (pod, gone) = match ev {
                    Ok(Event::InitDone) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        continue;
                    }
                    Ok(Event::Apply(p) | Event::InitApply(p)) => (p, false),
                    Ok(Event::Delete(p)) => (p, true),
                    _ => continue,
                };
                let name = pod.name_any();
                let mut log = l.lock().unwrap();
                if let Some(run) = pod.labels().get("sparkwing.dev/claimed-by") {
                    log.claimed.insert(name.clone(), run.clone());
                }
                let code = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code);
                if let Some(code) = code {
                    log.exit_codes.insert(name.clone(), code);
                }
                let deleting = gone || pod.metadata.deletion_timestamp.is_some();
                if deleting && !log.deleted.contains_key(&name) {
                    log.deleted.insert(name.clone(), pod.clone());
                }
                if pod.labels().get("sparkwing.dev/warm").map(String::as_str) == Some("true") {
                    let pool = pod
                        .labels()
                        .get("sparkwing.dev/pool")
                        .cloned()
                        .unwrap_or_default();
                    if deleting {
                        log.live.remove(&name);
                    } else {
                        log.live.insert(name, pool.clone());
                    }
                    let n = log.live.values().filter(|p| **p == pool).count();
                    let max = log.max_live.entry(pool).or_default();
                    *max = (*max).max(n);
                }
            }
        });
        tokio::time::timeout(WAIT, is_ready)
            .await
            .context("the pod watch did not list")??;
        Ok(PodRecorder { log, task })
    }

    fn with<T>(&self, f: impl FnOnce(&PodLog) -> T) -> T {
        f(&self.log.lock().unwrap())
    }
}

fn pod_phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// The events about run `name`: reason -> (number of Event objects, highest series count).
async fn run_events(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, (usize, i32)>> {
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), ns);
    let mut out: BTreeMap<String, (usize, i32)> = BTreeMap::new();
    for e in events.list(&ListParams::default()).await? {
        let regarding = e.regarding.clone().unwrap_or_default();
        if regarding.kind.as_deref() != Some("PipelineRun")
            || regarding.name.as_deref() != Some(name)
        {
            continue;
        }
        let entry = out.entry(e.reason.clone().unwrap_or_default()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(e.series.as_ref().map(|s| s.count).unwrap_or(1));
    }
    Ok(out)
}

/// "reason: note" of every Event about run `name`, for failure messages.
async fn run_event_notes(client: &Client, ns: &str, name: &str) -> Result<Vec<String>> {
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|e| {
            let r = e.regarding.clone().unwrap_or_default();
            r.kind.as_deref() == Some("PipelineRun") && r.name.as_deref() == Some(name)
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect())
}

/// `sparkwing_reconciles_total{controller="<controller>"}` from the rendered metrics.
fn reconciles(metrics: &Metrics, controller: &str) -> u64 {
    let label = format!("controller=\"{controller}\"");
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with("sparkwing_reconciles_total{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

fn has_owner(meta: &kube::api::ObjectMeta, kind: &str, uid: &str, controller: bool) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        o.kind == kind
            && o.uid == uid
            && (!controller || o.controller == Some(true))
            && o.block_owner_deletion == Some(true)
    })
}

// ---------------------------------------------------------------------------------------------
// PipelineRuns with runner Jobs.

/// Scenarios 1, 2, 9, 10: the Job, the phases, the events, and no further writes once finished.
#[tokio::test]
async fn a_run_gets_a_job_succeeds_and_then_stays_quiet() -> Result<()> {
    let env = Env::new("op-success").await?;
    let recorder = RunRecorder::start(env.runs()).await?;
    let pods = PodRecorder::start(env.pods()).await?;
    let ns = env.ns.name().to_string();
    let run = env
        .create_run("slow-1", json!({"timeout": "10m", "args": {"x": "1"}}))
        .await?;
    let uid = run.uid().context("uid")?;

    let job = eventually("job slow-1-a1", WAIT, || {
        let jobs = env.jobs();
        async move { Ok(jobs.get_opt("slow-1-a1").await?) }
    })
    .await?;
    // The Job as documented.
    ensure!(
        has_owner(&job.metadata, "PipelineRun", &uid, true),
        "owner reference: {:?}",
        job.metadata.owner_references
    );
    let labels = job.labels();
    for (k, v) in [
        ("app.kubernetes.io/managed-by", "sparkwing"),
        ("app.kubernetes.io/name", "sparkwing-runner"),
        ("sparkwing.dev/run", "slow-1"),
        ("sparkwing.dev/attempt", "1"),
    ] {
        ensure!(
            labels.get(k).map(String::as_str) == Some(v),
            "label {k}: {labels:?}"
        );
    }
    ensure!(job.annotations().get("sparkwing.dev/run-uid") == Some(&uid));
    let spec = job.spec.clone().context("job spec")?;
    ensure!(
        spec.backoff_limit == Some(0),
        "backoffLimit {:?}",
        spec.backoff_limit
    );
    ensure!(
        // The run's timeout (10m) plus the Job deadline's slack: a backstop.
        spec.active_deadline_seconds
            == Some(600 + sparkwing_operator::runner_job::JOB_DEADLINE_SLACK_SECS),
        "activeDeadlineSeconds {:?}",
        spec.active_deadline_seconds
    );
    let pod_spec = spec.template.spec.context("pod spec")?;
    ensure!(pod_spec.restart_policy.as_deref() == Some("Never"));
    let psc = pod_spec
        .security_context
        .clone()
        .context("pod securityContext")?;
    ensure!(psc.run_as_non_root == Some(true) && psc.run_as_user == Some(65532));
    ensure!(psc.seccomp_profile.map(|s| s.type_) == Some("RuntimeDefault".into()));
    let c = &pod_spec.containers[0];
    let csc = c
        .security_context
        .clone()
        .context("container securityContext")?;
    ensure!(csc.allow_privilege_escalation == Some(false), "{csc:?}");
    ensure!(csc.run_as_non_root == Some(true), "{csc:?}");
    ensure!(csc.read_only_root_filesystem == Some(true), "{csc:?}");
    ensure!(
        csc.capabilities.and_then(|c| c.drop) == Some(vec!["ALL".to_string()]),
        "capabilities"
    );
    ensure!(c.image.as_deref() == Some(env.image.as_str()));
    ensure!(c.command == Some(vec!["sparkwing".to_string()]));
    let want_args: Vec<String> = ["runner", "--run", &format!("{ns}/slow-1"), "--attempt", "1"]
        .map(String::from)
        .to_vec();
    ensure!(c.args.as_ref() == Some(&want_args), "args {:?}", c.args);
    let env_vars: HashMap<String, String> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    ensure!(
        env_vars.get("SPARKWING_RUN").map(String::as_str) == Some("slow-1"),
        "{env_vars:?}"
    );
    ensure!(env_vars.get("SPARKWING_NAMESPACE") == Some(&ns));
    ensure!(env_vars.get("SPARKWING_ATTEMPT").map(String::as_str) == Some("1"));

    let done = env.wait_end("slow-1", "Succeeded", "Succeeded").await?;
    let st = status_json(&done);
    ensure!(
        st["startTime"].is_string() && st["completionTime"].is_string(),
        "{st}"
    );
    ensure!(succeeded_condition(&done)["status"] == "True");
    if attempts_of(&done) != 1 || runner_of(&done) != "slow-1-a1" {
        // Say why the operator started another attempt (the retry's Event carries the reason).
        let notes = run_event_notes(&env.client, &ns, "slow-1").await?;
        bail!("one attempt expected: {st}\nevents: {notes:#?}");
    }

    // Pending/WaitingForRunner with the runner and attempt 1 first, then Running, Succeeded.
    recorder
        .caught_up("slow-1", "Succeeded", |s| s.phase == "Succeeded")
        .await?;
    let seen = recorder.of("slow-1");
    // (Core's decision is computed before the runner starts, so the very first write has no
    // `runner` yet; the next one, still before `Running`, names the Job.)
    let first = seen
        .iter()
        .find(|s| !s.phase.is_empty())
        .context("no status seen")?;
    ensure!(
        first.phase == "Pending" && first.reason == "WaitingForRunner",
        "first status {first:?}"
    );
    let waiting = seen
        .iter()
        .take_while(|s| s.phase != "Running")
        .find(|s| s.runner == "slow-1-a1")
        .context(format!("no Pending status naming the Job: {seen:?}"))?;
    ensure!(
        waiting.phase == "Pending" && waiting.reason == "WaitingForRunner" && waiting.attempts == 1,
        "{waiting:?}"
    );
    let phases: Vec<String> =
        recorder
            .phases("slow-1")
            .into_iter()
            .map(|p| p.0)
            .fold(Vec::new(), |mut v, p| {
                if v.last() != Some(&p) {
                    v.push(p);
                }
                v
            });
    ensure!(
        phases == ["Pending", "Running", "Succeeded"],
        "phases {phases:?}"
    );
    // Each phase change followed the pod within 2 s (the pod's times have second precision).
    let pod = env.job_pod("slow-1-a1").await?;
    let cs = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .and_then(|c| c.into_iter().next())
        .context("container status")?;
    let term = cs.state.and_then(|s| s.terminated).context("terminated")?;
    let started: SystemTime = term.started_at.context("startedAt")?.0.into();
    let finished: SystemTime = term.finished_at.context("finishedAt")?.0.into();
    let at = |phase: &str| seen.iter().find(|s| s.phase == phase).map(|s| s.at);
    let running_at = at("Running").context("Running")?;
    let succeeded_at = at("Succeeded").context("Succeeded")?;
    let lag =
        |seen: SystemTime, happened: SystemTime| seen.duration_since(happened).unwrap_or_default();
    ensure!(
        lag(running_at, started) < Duration::from_secs(3),
        "Running lagged {:?}",
        lag(running_at, started)
    );
    ensure!(
        lag(succeeded_at, finished) < Duration::from_secs(3),
        "Succeeded lagged {:?}",
        lag(succeeded_at, finished)
    );
    ensure!(pods.with(|l| l.exit_codes.values().all(|c| *c == 0)));
    let logs = env.node.logs(&pod.name_any()).await?;
    ensure!(
        logs.contains(&format!("run {ns}/slow-1 attempt 1")),
        "logs: {logs}"
    );

    // One event per transition.
    let want: BTreeMap<String, (usize, i32)> = ["WaitingForRunner", "Running", "Succeeded"]
        .into_iter()
        .map(|r| (r.to_string(), (1, 1)))
        .collect();
    let events = eventually("the three events", WAIT, || {
        let (client, want) = (env.client.clone(), &want);
        let ns = ns.clone();
        async move {
            let e = run_events(&client, &ns, "slow-1").await?;
            Ok((e.keys().collect::<Vec<_>>() == want.keys().collect::<Vec<_>>()).then_some(e))
        }
    })
    .await?;
    ensure!(events == want, "events {events:?}");

    // No hot loop: touch the Job and the pod, let the operator reconcile them, and see that it
    // writes nothing and publishes nothing. The reconcile counter proves the touches were seen;
    // the window after it covers the requeues a hot loop would make (a loop writes within
    // milliseconds), so a write there would show up.
    let writes = env.metrics().status_writes("PipelineRun");
    let transitions: u64 = ["WaitingForRunner", "Running", "Succeeded"]
        .iter()
        .map(|r| env.metrics().run_transitions(r))
        .sum();
    let before = reconciles(env.metrics(), "run");
    let touch = Patch::Merge(json!({"metadata": {"labels": {"e2e-touched": "yes"}}}));
    env.jobs()
        .patch("slow-1-a1", &PatchParams::default(), &touch)
        .await?;
    env.pods()
        .patch(&pod.name_any(), &PatchParams::default(), &touch)
        .await?;
    eventually("the touches reconciled", WAIT, || {
        let n = reconciles(env.metrics(), "run");
        async move { Ok((n > before).then_some(())) }
    })
    .await?;
    let window = Instant::now() + Duration::from_secs(4);
    while Instant::now() < window {
        ensure!(
            env.metrics().status_writes("PipelineRun") == writes,
            "a finished run's status was written again"
        );
        tokio::time::sleep(POLL).await;
    }
    let after: u64 = ["WaitingForRunner", "Running", "Succeeded"]
        .iter()
        .map(|r| env.metrics().run_transitions(r))
        .sum();
    ensure!(
        after == transitions,
        "transitions moved: {transitions} -> {after}"
    );
    let events = run_events(&env.client, &ns, "slow-1").await?;
    ensure!(events == want, "events after touching {events:?}");
    ensure!(env.op().is_running());
    Ok(())
}

/// A runner no node can hold (it asks for more CPU than any node has) is `Pending` with reason
/// `Unschedulable` and the scheduler's message, and the Job's deadline (the timeout plus its
/// slack) ends the run `Failed`/`Timeout` although it never ran.
#[tokio::test]
async fn an_unschedulable_runner_says_why_and_ends_by_the_timeout() -> Result<()> {
    let env = Env::new("op-unschedulable").await?;
    env.create_pool(
        "huge",
        json!({"minIdle": 0, "maxRunners": 1, "resources": {"requests": {"cpu": "1000"}}}),
    )
    .await?;
    env.create_run("huge-a", json!({"runnerPool": "huge", "timeout": "2s"}))
        .await?;
    let pending = env
        .wait_run("huge-a", "Pending/Unschedulable", |r| {
            reason_of(r) == "Unschedulable"
        })
        .await?;
    ensure!(phase_of(&pending) == "Pending", "{}", phase_of(&pending));
    let message = message_of(&pending);
    ensure!(
        message.contains("cannot be scheduled") && message.contains("Insufficient cpu"),
        "{message}"
    );
    // Not at 2 s (the timeout counts from a start that never came) but by the Job's deadline.
    let ended = env.wait_end("huge-a", "Failed", "Timeout").await?;
    ensure!(attempts_of(&ended) == 1, "attempts {}", attempts_of(&ended));
    ensure!(env.op().is_running());
    Ok(())
}

/// Scenario 3 and 5: exit 3, OOM, missing image, timeout; failed pipelines are not retried.
#[tokio::test]
async fn failures_map_to_reasons_and_are_not_retried() -> Result<()> {
    let env = Env::new("op-failures").await?;
    // A pool whose image does not exist: a run naming it gets a Job in that image. The image is
    // on a loopback address that serves nothing: a node never reaches for a public registry.
    env.create_pool(
        "missing-image",
        json!({"image": NO_SUCH_IMAGE, "minIdle": 0, "maxRunners": 1}),
    )
    .await?;
    // A pool with a memory limit: the `oom-*` test runner exceeds it and is OOM-killed for real.
    env.create_pool(
        "small",
        json!({"minIdle": 0, "maxRunners": 1, "resources": {"limits": {"memory": "32Mi"}}}),
    )
    .await?;
    env.create_run("exit3-a", json!({})).await?;
    env.create_run("oom-a", json!({"runnerPool": "small"}))
        .await?;
    env.create_run("ok-image", json!({"runnerPool": "missing-image"}))
        .await?;
    env.create_run("sleep-timeout", json!({"timeout": "2s"}))
        .await?;

    let (exit3, oom, image, timeout) = tokio::join!(
        env.wait_end("exit3-a", "Failed", "Failed"),
        env.wait_end("oom-a", "Failed", "OOMKilled"),
        env.wait_end("ok-image", "Failed", "ImagePullFailed"),
        env.wait_end("sleep-timeout", "Failed", "Timeout"),
    );
    let (exit3, oom, image, timeout) = (exit3?, oom?, image?, timeout?);
    // (Whether the timed-out run was seen `Running` depends on how fast Docker started the
    // container within the 2 s; not asserted.)
    ensure!(
        message_of(&exit3).contains("exited with code 3"),
        "{}",
        message_of(&exit3)
    );
    ensure!(
        message_of(&image).contains(NO_SUCH_IMAGE),
        "image message: {}",
        message_of(&image)
    );
    // A runner whose image cannot be pulled is removed once the run has failed: the node must
    // not keep pulling while the run exists. One that ran to its end (exit 3) is kept.
    eventually("the image-pull runner's Job and pod gone", WAIT, || async {
        let pods = env
            .pods()
            .list(&ListParams::default().labels("sparkwing.dev/run=ok-image"))
            .await?;
        let job = env.jobs().get_opt("ok-image-a1").await?;
        Ok((job.is_none() && pods.items.is_empty()).then_some(()))
    })
    .await?;
    ensure!(
        env.jobs().get_opt("exit3-a-a1").await?.is_some(),
        "the Job of a runner that exited 3 was removed"
    );

    // Not retried: one attempt each, no second Job.
    for run in [&exit3, &oom, &image, &timeout] {
        let name = run.name_any();
        ensure!(
            attempts_of(run) == 1,
            "{name}: attempts {}",
            attempts_of(run)
        );
        let jobs = env.jobs_of(&name).await?;
        ensure!(
            !jobs.iter().any(|j| j.ends_with("-a2")),
            "{name} retried: {jobs:?}"
        );
    }
    // The timed-out runner is stopped: no pod and no container left. The operator's timer
    // (from the run's `startTime`) fires first and deletes the Job; the Job's own
    // `activeDeadlineSeconds` is the timeout plus 30 s, a backstop. Either way, a Job still
    // there is being deleted or has failed with `DeadlineExceeded`, with nothing running.
    eventually(
        "the timed-out run's pods and containers gone",
        WAIT,
        || async {
            let pods = env
                .pods()
                .list(&ListParams::default().labels("sparkwing.dev/run=sleep-timeout"))
                .await?;
            let containers = env.node.all_containers().await?;
            let left = containers.iter().any(|c| c.contains("sleep-timeout"));
            Ok((pods.items.is_empty() && !left).then_some(()))
        },
    )
    .await?;
    if let Some(job) = env.jobs().get_opt("sleep-timeout-a1").await? {
        let st = serde_json::to_value(&job.status)?;
        let failed = st["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                (c["type"] == "Failed" || c["type"] == "FailureTarget")
                    && c["status"] == "True"
                    && c["reason"] == "DeadlineExceeded"
            })
        });
        let deleting = job.metadata.deletion_timestamp.is_some();
        ensure!(
            (failed || deleting) && st["active"].as_i64().unwrap_or(0) == 0,
            "job status {st}"
        );
    }
    ensure!(env.metrics().runners_started("job") == 4);
    ensure!(env.op().is_running());
    Ok(())
}

/// Scenario 4: an evicted runner is retried as `<run>-a2`; a deleted one counts as lost too; after
/// `maxAttempts` the run fails `RunnerLost` naming why.
#[tokio::test]
async fn lost_runners_are_retried_until_max_attempts() -> Result<()> {
    let env = Env::new("op-lost").await?;
    let recorder = RunRecorder::start(env.runs()).await?;
    env.create_run("sleep-lost", json!({"maxAttempts": 2}))
        .await?;
    env.wait_run("sleep-lost", "Running", |r| phase_of(r) == "Running")
        .await?;
    let pod1 = env.job_pod("sleep-lost-a1").await?;
    env.node.lose(&pod1.name_any(), LossKind::Evicted).await?;

    let second = env
        .wait_run("sleep-lost", "running attempt 2", |r| {
            phase_of(r) == "Running" && attempts_of(r) == 2
        })
        .await?;
    ensure!(
        runner_of(&second) == "sleep-lost-a2",
        "{}",
        status_json(&second)
    );
    recorder
        .caught_up("sleep-lost", "running attempt 2", |s| {
            s.phase == "Running" && s.attempts == 2
        })
        .await?;
    ensure!(
        recorder
            .phases("sleep-lost")
            .contains(&("Pending".to_string(), "ToBeRetried".to_string())),
        "phases {:?}",
        recorder.phases("sleep-lost")
    );
    // The old Job is deleted.
    eventually("job a1 deleted", WAIT, || async {
        Ok((env.jobs().get_opt("sleep-lost-a1").await?.is_none()).then_some(()))
    })
    .await?;

    // Lose the second runner as a vanished node would (the pod deleted outright).
    let pod2 = env.job_pod("sleep-lost-a2").await?;
    env.node.lose(&pod2.name_any(), LossKind::Deleted).await?;
    let failed = env.wait_end("sleep-lost", "Failed", "RunnerLost").await?;
    let msg = message_of(&failed);
    ensure!(
        msg.contains("deleted")
            || msg.contains("disappeared")
            || msg.contains("BackoffLimitExceeded"),
        "RunnerLost message: {msg}"
    );
    ensure!(attempts_of(&failed) == 2);
    // Nothing of the last lost runner stays behind (its Job failed when its pod went).
    eventually("job a2 deleted", WAIT, || async {
        Ok((env.jobs().get_opt("sleep-lost-a2").await?.is_none()).then_some(()))
    })
    .await?;
    let jobs = env.jobs_of("sleep-lost").await?;
    ensure!(
        !jobs.iter().any(|j| j.ends_with("-a3")),
        "a third attempt: {jobs:?}"
    );
    ensure!(env.metrics().runners_started("job") == 2);
    Ok(())
}

/// Bad input: a runner Job deleted behind the operator's back is a lost runner (retried), never a
/// wedged run.
#[tokio::test]
async fn a_job_deleted_behind_the_operators_back_is_a_lost_runner() -> Result<()> {
    let env = Env::new("op-job-deleted").await?;
    env.create_run("sleep-jobgone", json!({"maxAttempts": 2}))
        .await?;
    env.wait_run("sleep-jobgone", "Running", |r| phase_of(r) == "Running")
        .await?;
    // Background propagation: the Job goes at once, its pod through the garbage collector.
    let dp = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..Default::default()
    };
    env.jobs().delete("sleep-jobgone-a1", &dp).await?;
    let second = env
        .wait_run("sleep-jobgone", "running attempt 2", |r| {
            phase_of(r) == "Running" && attempts_of(r) == 2
        })
        .await?;
    ensure!(
        runner_of(&second) == "sleep-jobgone-a2",
        "{}",
        status_json(&second)
    );
    ensure!(env.metrics().runners_started("job") == 2);
    Ok(())
}

/// Scenario 6: cancel running (plain and with finally), and cancel before a runner exists.
#[tokio::test]
async fn cancelling_runs() -> Result<()> {
    let env = Env::new("op-cancel").await?;
    let recorder = RunRecorder::start(env.runs()).await?;
    let pods = PodRecorder::start(env.pods()).await?;
    env.create_run("sleep-cancel", json!({})).await?;
    env.create_run("sleep-finally", json!({})).await?;
    env.create_run("ok-never", json!({"cancel": "Cancelled"}))
        .await?;

    let cancelled_early = env.wait_end("ok-never", "Cancelled", "Cancelled").await?;
    ensure!(
        attempts_of(&cancelled_early) == 0,
        "{}",
        status_json(&cancelled_early)
    );

    for name in ["sleep-cancel", "sleep-finally"] {
        env.wait_run(name, "Running", |r| phase_of(r) == "Running")
            .await?;
    }
    let finally_pod = env.job_pod("sleep-finally-a1").await?.name_any();
    env.patch_run_spec("sleep-cancel", json!({"cancel": "Cancelled"}))
        .await?;
    env.patch_run_spec("sleep-finally", json!({"cancel": "CancelledRunFinally"}))
        .await?;
    let (a, b) = tokio::join!(
        env.wait_end("sleep-cancel", "Cancelled", "Cancelled"),
        env.wait_end("sleep-finally", "Cancelled", "Cancelled"),
    );
    a?;
    b?;
    recorder
        .caught_up("sleep-finally", "Cancelled", |s| s.phase == "Cancelled")
        .await?;
    ensure!(
        recorder
            .phases("sleep-finally")
            .iter()
            .any(|(_, r)| r == "CancelledRunningFinally"),
        "phases {:?}",
        recorder.phases("sleep-finally")
    );
    // The runner ran its TERM handler ("finally") and exited 130.
    ensure!(
        pods.with(|l| l.exit_codes.get(&finally_pod).copied()) == Some(130),
        "exit code of {finally_pod}: {:?}",
        pods.with(|l| l.exit_codes.get(&finally_pod).copied())
    );
    eventually("the cancelled runs' jobs gone", WAIT, || async {
        let a = env.jobs_of("sleep-cancel").await?;
        let b = env.jobs_of("sleep-finally").await?;
        Ok((a.is_empty() && b.is_empty()).then_some(()))
    })
    .await?;
    ensure!(env.jobs_of("ok-never").await?.is_empty());
    ensure!(
        env.metrics().runners_started("job") == 2,
        "the early-cancelled run got a runner"
    );
    Ok(())
}

/// Scenarios 7, 8 and 11: an invalid spec fails the run (no Job, the operator lives on); a
/// finished run with `ttlSecondsAfterFinished: 1` is deleted with its Job; a missing pool gives a
/// Job and a `RunnerPoolNotFound` event.
#[tokio::test]
async fn invalid_spec_and_ttl() -> Result<()> {
    let env = Env::new("op-invalid-ttl").await?;
    // `0s` passes the schema's pattern; `intent()` refuses it.
    env.create_run("ok-invalid", json!({"timeout": "0s"}))
        .await?;
    let invalid = env.wait_end("ok-invalid", "Failed", "InvalidSpec").await?;
    ensure!(
        message_of(&invalid).contains("spec.timeout"),
        "{}",
        message_of(&invalid)
    );
    ensure!(env.jobs_of("ok-invalid").await?.is_empty());
    ensure!(env.op().is_running(), "the operator stopped");

    let run = env
        .create_run("ok-ttl", json!({"ttlSecondsAfterFinished": 1}))
        .await?;
    let uid = run.uid().context("uid")?;
    let done = env.wait_end("ok-ttl", "Succeeded", "Succeeded").await?;
    let completed = Instant::now();
    ensure!(status_json(&done)["completionTime"].is_string());
    eventually("the run deleted", WAIT, || async {
        let r = env.runs().get_opt("ok-ttl").await?;
        Ok(r.filter(|r| r.uid().as_deref() == Some(&uid))
            .is_none()
            .then_some(()))
    })
    .await?;
    let took = completed.elapsed();
    ensure!(
        took < Duration::from_secs(10),
        "deleted {took:?} after completing"
    );
    eventually("its job collected", WAIT, || async {
        Ok(env.jobs_of("ok-ttl").await?.is_empty().then_some(()))
    })
    .await?;
    // Scenario 11: a run naming a missing pool gets a Job and a warning event.
    env.create_run("ok-nopool", json!({"runnerPool": "no-such-pool"}))
        .await?;
    env.wait_end("ok-nopool", "Succeeded", "Succeeded").await?;
    ensure!(env.jobs_of("ok-nopool").await? == ["ok-nopool-a1"]);
    let ns = env.ns.name().to_string();
    eventually("a RunnerPoolNotFound event", WAIT, || {
        let (client, ns) = (env.client.clone(), ns.clone());
        async move {
            let e = run_events(&client, &ns, "ok-nopool").await?;
            Ok(e.contains_key("RunnerPoolNotFound").then_some(()))
        }
    })
    .await?;
    ensure!(env.metrics().runners_started("job") == 2);
    ensure!(env.op().is_running());
    Ok(())
}

/// Scenario 13: the operator waits for missing CRDs, then works.
#[tokio::test]
async fn operator_waits_for_crds() -> Result<()> {
    let bed = TestBed::start().await?;
    let image = test_runner_image().await?;
    let client = bed.client().await?;
    let ns = bed.namespace("op-crds").await?;
    let op = Operator::start(
        client.clone(),
        Config::new(image.clone()).namespace(ns.name()),
    );
    // The operator cannot be seen waiting except by its readiness: poll it for a while to check
    // it neither gets ready nor stops while the CRDs are missing.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        ensure!(!op.metrics.crds_ready(), "ready without CRDs");
        ensure!(op.is_running(), "the operator stopped without CRDs");
        tokio::time::sleep(POLL).await;
    }
    bed.install_crds().await?;
    eventually("crds ready", WAIT, || {
        let ready = op.metrics.crds_ready();
        async move { Ok(ready.then_some(())) }
    })
    .await?;
    bed.load_image(&image).await?;
    let node = TestNode::start(&bed, client.clone(), &ns).await?;
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    runs.create(&PostParams::default(), &run_obj("ok-crds", json!({}))?)
        .await?;
    let done = wait_for_run(&runs, "ok-crds", "terminal", is_terminal, WAIT).await?;
    ensure!(phase_of(&done) == "Succeeded", "{}", status_json(&done));
    op.stop().await?;
    node.shutdown().await?;
    Ok(())
}

/// Scenario 12: stopping and restarting the operator neither duplicates nor loses runs.
#[tokio::test]
async fn restarts_neither_duplicate_nor_lose_runs() -> Result<()> {
    let mut env = Env::new("op-restart").await?;
    env.create_run("slow-restart", json!({})).await?;
    eventually("job slow-restart-a1", WAIT, || async {
        Ok(env.jobs().get_opt("slow-restart-a1").await?)
    })
    .await?;
    env.op.take().context("operator")?.stop().await?;
    // Created while the operator is down.
    env.create_run("ok-while-down", json!({})).await?;
    env.op = Some(env.start_operator());
    env.wait_run("slow-restart", "Running", |r| {
        phase_of(r) == "Running" || is_terminal(r)
    })
    .await?;
    // Again, mid-run.
    env.op.take().context("operator")?.stop().await?;
    env.op = Some(env.start_operator());
    let (a, b) = tokio::join!(
        env.wait_end("slow-restart", "Succeeded", "Succeeded"),
        env.wait_end("ok-while-down", "Succeeded", "Succeeded"),
    );
    let (a, b) = (a?, b?);
    ensure!(attempts_of(&a) == 1 && attempts_of(&b) == 1);
    ensure!(env.jobs_of("slow-restart").await? == ["slow-restart-a1"]);
    ensure!(env.jobs_of("ok-while-down").await? == ["ok-while-down-a1"]);
    let pods = env
        .pods()
        .list(&ListParams::default().labels("sparkwing.dev/run=slow-restart"))
        .await?;
    ensure!(
        pods.items.len() == 1,
        "pods of slow-restart: {}",
        pods.items.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RunnerPools.

/// Scenarios 16, 17, 20: warm pods, a claim (no Job), refill within maxRunners, shrinking and
/// idleTimeout reap only idle pods.
#[tokio::test]
async fn pool_keeps_warm_runners_and_runs_claim_them() -> Result<()> {
    let env = Env::new("op-pool").await?;
    let pods = PodRecorder::start(env.pods()).await?;
    let pool = env
        .create_pool("p", json!({"minIdle": 2, "maxRunners": 3}))
        .await?;
    let pool_uid = pool.uid().context("uid")?;
    let status = env
        .wait_pool("p", "2 idle", |s| {
            s["idle"] == 2 && s["busy"] == 0 && s["starting"] == 0
        })
        .await?;
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .context("Ready condition")?;
    ensure!(ready["status"] == "True", "{status}");
    let warm = env.live_pool_pods("p").await?;
    ensure!(warm.len() == 2);
    for pod in &warm {
        ensure!(
            has_owner(&pod.metadata, "RunnerPool", &pool_uid, true),
            "{:?}",
            pod.metadata.owner_references
        );
        let c = &pod.spec.as_ref().context("spec")?.containers[0];
        let want: Vec<String> = [
            "runner",
            "--warm",
            "--pool",
            &format!("{}/p", env.ns.name()),
        ]
        .map(String::from)
        .to_vec();
        ensure!(c.args.as_ref() == Some(&want), "args {:?}", c.args);
    }

    // A run claims the longest-idle pod; no Job.
    let run = env
        .create_run("slow-pool", json!({"runnerPool": "p"}))
        .await?;
    let run_uid = run.uid().context("uid")?;
    let claimed = env
        .wait_run("slow-pool", "claimed", |r| !runner_of(r).is_empty())
        .await?;
    let claimed_pod = runner_of(&claimed);
    ensure!(claimed_pod != "slow-pool-a1", "got a Job");
    let pod = env.pods().get(&claimed_pod).await?;
    ensure!(
        pod.labels()
            .get("sparkwing.dev/claimed-by")
            .map(String::as_str)
            == Some("slow-pool")
    );
    ensure!(
        pod.labels()
            .get("sparkwing.dev/attempt")
            .map(String::as_str)
            == Some("1")
    );
    ensure!(pod.annotations().get("sparkwing.dev/run-uid") == Some(&run_uid));
    ensure!(pod
        .owner_references()
        .iter()
        .any(|o| o.kind == "PipelineRun" && o.uid == run_uid));
    // The claimed pod is one of the two warm pods that were idle.
    ensure!(warm.iter().any(|p| p.name_any() == claimed_pod));
    // The pool refills to 3, never 4.
    env.wait_pool("p", "refilled", |s| s["total"] == 3 && s["idle"] == 2)
        .await?;
    let done = env.wait_end("slow-pool", "Succeeded", "Succeeded").await?;
    ensure!(
        env.jobs_of("slow-pool").await?.is_empty(),
        "a Job for a claimed run"
    );
    ensure!(
        env.metrics().runners_started("warm") == 1 && env.metrics().runners_started("job") == 0
    );
    ensure!(attempts_of(&done) == 1);
    // The spent pod is deleted.
    eventually("the spent pod deleted", WAIT, || {
        let n = env.metrics().pool_runners_deleted("spent");
        async move { Ok((n >= 1).then_some(())) }
    })
    .await?;
    ensure!(pods.with(|l| l.exit_codes.get(&claimed_pod).copied()) == Some(0));

    // A busy runner survives shrinking and idle timeouts.
    env.wait_pool("p", "2 idle again", |s| s["idle"] == 2 && s["busy"] == 0)
        .await?;
    env.create_run("sleep-busy", json!({"runnerPool": "p"}))
        .await?;
    let busy = env
        .wait_run("sleep-busy", "Running", |r| phase_of(r) == "Running")
        .await?;
    let busy_pod = runner_of(&busy);
    ensure!(busy_pod != "sleep-busy-a1", "got a Job");
    env.wait_pool("p", "1 busy", |s| s["busy"] == 1).await?;
    env.patch_pool("p", json!({"minIdle": 0, "maxRunners": 1}))
        .await?;
    env.wait_pool("p", "shrunk to the busy pod", |s| {
        s["total"] == 1 && s["busy"] == 1 && s["idle"] == 0
    })
    .await?;
    let survivors = env.live_pool_pods("p").await?;
    ensure!(
        survivors.len() == 1 && survivors[0].name_any() == busy_pod,
        "live pods {:?}",
        survivors.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    let reaped_by_shrink = env.metrics().pool_runners_deleted("reaped");
    ensure!(reaped_by_shrink >= 2, "reaped {reaped_by_shrink}");

    env.patch_pool("p", json!({"minIdle": 2, "maxRunners": 3}))
        .await?;
    env.wait_pool("p", "2 idle + busy", |s| s["idle"] == 2 && s["busy"] == 1)
        .await?;
    env.patch_pool("p", json!({"minIdle": 0, "idleTimeout": "2s"}))
        .await?;
    let changed = Instant::now();
    env.wait_pool("p", "idle reaped", |s| {
        s["idle"] == 0 && s["busy"] == 1 && s["total"] == 1
    })
    .await?;
    ensure!(
        changed.elapsed() < Duration::from_secs(20),
        "idle reap took {:?}",
        changed.elapsed()
    );
    ensure!(env.metrics().pool_runners_deleted("reaped") >= reaped_by_shrink + 2);
    // The busy pod was never deleted.
    ensure!(
        !pods.with(|l| l.deleted.contains_key(&busy_pod)),
        "the busy pod {busy_pod} was deleted"
    );
    ensure!(pods.with(|l| l.max_live.get("p").copied()) <= Some(3));
    env.patch_run_spec("sleep-busy", json!({"cancel": "Cancelled"}))
        .await?;
    env.wait_end("sleep-busy", "Cancelled", "Cancelled").await?;
    ensure!(env.metrics().runners_started("job") == 0);
    Ok(())
}

/// Scenario 19: two runs at once, one idle runner, maxRunners 1: one claims it, the other gets a
/// Job; never two runs on one pod.
#[tokio::test]
async fn two_runs_race_for_one_warm_runner() -> Result<()> {
    let env = Env::new("op-race").await?;
    env.create_pool("race", json!({"minIdle": 1, "maxRunners": 1}))
        .await?;
    env.wait_pool("race", "1 idle", |s| s["idle"] == 1).await?;
    let (a, b) = tokio::join!(
        env.create_run("slow-race-a", json!({"runnerPool": "race"})),
        env.create_run("slow-race-b", json!({"runnerPool": "race"})),
    );
    a?;
    b?;
    let (a, b) = tokio::join!(
        env.wait_end("slow-race-a", "Succeeded", "Succeeded"),
        env.wait_end("slow-race-b", "Succeeded", "Succeeded"),
    );
    let (a, b) = (a?, b?);
    let (ra, rb) = (runner_of(&a), runner_of(&b));
    ensure!(ra != rb, "both runs on {ra}");
    let jobs = [
        env.jobs_of("slow-race-a").await?,
        env.jobs_of("slow-race-b").await?,
    ];
    let job_count = jobs.iter().map(Vec::len).sum::<usize>();
    ensure!(job_count == 1, "jobs {jobs:?}");
    ensure!(
        env.metrics().runners_started("warm") == 1 && env.metrics().runners_started("job") == 1,
        "warm {} job {}",
        env.metrics().runners_started("warm"),
        env.metrics().runners_started("job")
    );
    ensure!(attempts_of(&a) == 1 && attempts_of(&b) == 1);
    Ok(())
}

/// Scenario 22: random load on a pool with random resizes; no claimed or busy pod is ever
/// deleted before it finished, every run ends, each with one runner.
#[tokio::test]
async fn pool_soak() -> Result<()> {
    let env = Env::new("op-soak").await?;
    let pods = PodRecorder::start(env.pods()).await?;
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_nanos() as u64;
    eprintln!("pool_soak seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    env.create_pool(
        "soak",
        json!({"minIdle": 2, "maxRunners": 4, "idleTimeout": "3s"}),
    )
    .await?;
    let mut max_runners_ever = 4;
    let mut names = Vec::new();
    for i in 0..10 {
        let kind = ["ok", "slow", "exit3"][rng.usize(..3)];
        let name = format!("{kind}-soak-{i}");
        env.create_run(&name, json!({"runnerPool": "soak"})).await?;
        names.push(name);
        if rng.bool() {
            let max = rng.i32(1..=4);
            let min = rng.i32(0..=max);
            max_runners_ever = max_runners_ever.max(max);
            env.patch_pool("soak", json!({"minIdle": min, "maxRunners": max}))
                .await?;
        }
        // Pacing of the load, not synchronisation.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..700))).await;
    }
    for name in &names {
        let run = wait_for_run(
            &env.runs(),
            name,
            "terminal",
            is_terminal,
            Duration::from_secs(60),
        )
        .await?;
        let want = if name.starts_with("exit3") {
            ("Failed", "Failed")
        } else {
            ("Succeeded", "Succeeded")
        };
        ensure!(
            (phase_of(&run).as_str(), reason_of(&run).as_str()) == want,
            "{name}: {}",
            status_json(&run)
        );
        ensure!(attempts_of(&run) == 1, "{name}: {}", status_json(&run));
    }
    // Each run had exactly one runner: a Job or a claimed pod.
    let m = env.metrics();
    ensure!(
        m.runners_started("job") + m.runners_started("warm") == 10,
        "job {} warm {}",
        m.runners_started("job"),
        m.runners_started("warm")
    );
    let claims: HashMap<String, String> = pods.with(|l| l.claimed.clone());
    let mut by_run: HashMap<&String, usize> = HashMap::new();
    for run in claims.values() {
        *by_run.entry(run).or_default() += 1;
    }
    for name in &names {
        let pods_of_run = by_run.get(name).copied().unwrap_or(0);
        let jobs = env.jobs_of(name).await?.len();
        ensure!(
            pods_of_run + jobs == 1,
            "{name}: {pods_of_run} claimed pods, {jobs} jobs"
        );
    }
    // No claimed pod was deleted before it finished (the operator deletes spent pods only; it
    // reaps idle ones, which carry no claim).
    pods.with(|l| {
        for (name, pod) in &l.deleted {
            if pod.labels().contains_key("sparkwing.dev/claimed-by") {
                let phase = pod_phase(pod);
                ensure!(
                    phase == "Succeeded" || phase == "Failed",
                    "claimed pod {name} deleted while {phase}"
                );
            }
        }
        let max = l.max_live.get("soak").copied().unwrap_or(0);
        ensure!(
            max as i32 <= max_runners_ever,
            "{max} warm pods alive at once"
        );
        Ok(())
    })?;
    ensure!(env.op().is_running());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Leader election.

/// Scenario 14: two replicas, one leader; runs are reconciled once; a clean stop hands over.
#[tokio::test]
async fn leader_election_hands_over() -> Result<()> {
    let mut env = Env::new("op-leader").await?;
    env.op.take().context("operator")?.stop().await?;
    let lease = |id: &str| {
        let mut l = LeaderConfig::new(env.ns.name(), id);
        l.lease_duration = Duration::from_secs(4);
        l.renew_deadline = Duration::from_secs(3);
        l.renew_interval = Duration::from_millis(500);
        l.retry_interval = Duration::from_millis(500);
        l
    };
    let a = Operator::start(
        env.client.clone(),
        env.config().leader_election(lease("a")).instance("a"),
    );
    let b = Operator::start(
        env.client.clone(),
        env.config().leader_election(lease("b")).instance("b"),
    );
    let leader_is_a = eventually("a leader", WAIT, || {
        let (la, lb) = (a.metrics.is_leader(), b.metrics.is_leader());
        async move { Ok((la != lb).then_some(la)) }
    })
    .await?;
    let (leader, follower) = if leader_is_a { (a, b) } else { (b, a) };
    env.create_run("slow-leader", json!({})).await?;
    env.wait_end("slow-leader", "Succeeded", "Succeeded")
        .await?;
    ensure!(!follower.metrics.is_leader());
    ensure!(
        follower.metrics.status_writes_total() == 0,
        "the follower wrote"
    );
    ensure!(
        leader.metrics.runners_started("job") == 1 && follower.metrics.runners_started("job") == 0
    );
    ensure!(env.jobs_of("slow-leader").await? == ["slow-leader-a1"]);

    // A run the leader starts but does not finish; then the leader stops cleanly.
    env.create_run("slow-handover", json!({})).await?;
    eventually("job slow-handover-a1", WAIT, || async {
        Ok(env.jobs().get_opt("slow-handover-a1").await?)
    })
    .await?;
    let stopped = Instant::now();
    leader.stop().await?;
    env.create_run("ok-after-handover", json!({})).await?;
    eventually("the follower leads", WAIT, || {
        let l = follower.metrics.is_leader();
        async move { Ok(l.then_some(())) }
    })
    .await?;
    let took = stopped.elapsed();
    ensure!(took < Duration::from_secs(4), "handover took {took:?}");
    let (x, y) = tokio::join!(
        env.wait_end("slow-handover", "Succeeded", "Succeeded"),
        env.wait_end("ok-after-handover", "Succeeded", "Succeeded"),
    );
    x?;
    y?;
    ensure!(env.jobs_of("slow-handover").await? == ["slow-handover-a1"]);
    ensure!(env.jobs_of("ok-after-handover").await? == ["ok-after-handover-a1"]);
    ensure!(follower.is_running());
    follower.stop().await?;
    Ok(())
}
