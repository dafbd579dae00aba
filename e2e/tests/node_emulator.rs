//! The node emulator against the real bed (its real controller-manager and scheduler) and the
//! real Docker engine: the pods of Jobs, and pods labelled `app.kubernetes.io/managed-by=sparkwing`,
//! run as containers and get the status a kubelet would give them. The bed runs the emulated node
//! whatever `SPARKWING_E2E_NODE` says.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStateTerminated, Pod};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, PropagationPolicy};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use sparkwing_e2e::node_emulator::{OOM_KILL_ANNOTATION, POD_IP};
use sparkwing_e2e::{
    busybox_image, LossKind, NodeEmulator, NodeEmulatorOptions, NodeKind, TestBed, TestNamespace,
};

/// How long anything here may take on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

struct Setup {
    ns: TestNamespace,
    client: Client,
    node: NodeEmulator,
    image: String,
}

impl Setup {
    async fn new(hint: &str) -> Result<Setup> {
        let bed = TestBed::shared_on(NodeKind::Emulator).await?;
        let image = busybox_image().await?;
        let ns = bed.namespace(hint).await?;
        let client = bed.client().await?;
        let node = NodeEmulator::start(client.clone(), &ns, NodeEmulatorOptions::default()).await?;
        Ok(Setup {
            ns,
            client,
            node,
            image,
        })
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A Job as the operator makes one: labelled, backoffLimit 0, restartPolicy Never.
    fn job(&self, name: &str, script: &str, extra: serde_json::Value) -> Result<Job> {
        let mut job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "sparkwing"}},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/managed-by": "sparkwing"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{
                            "name": "runner",
                            "image": self.image,
                            "command": ["sh", "-c"],
                            "args": [script],
                        }],
                    },
                },
            },
        });
        merge(&mut job, extra);
        Ok(serde_json::from_value(job)?)
    }

    /// A bare pod (a warm runner, say).
    fn pod(&self, name: &str, script: &str, extra: serde_json::Value) -> Result<Pod> {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "sparkwing"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "runner",
                    "image": self.image,
                    "command": ["sh", "-c", script],
                }],
            },
        });
        merge(&mut pod, extra);
        Ok(serde_json::from_value(pod)?)
    }

    async fn create_job(&self, job: &Job) -> Result<()> {
        self.jobs().create(&PostParams::default(), job).await?;
        Ok(())
    }

    async fn create_pod(&self, pod: &Pod) -> Result<()> {
        self.pods().create(&PostParams::default(), pod).await?;
        Ok(())
    }

    /// Every pod the Job controller makes for `job` from now on, seen through a watch (a pod that
    /// lives for less than a list's round trip, as a Job failed by its deadline, is still seen):
    /// the names in the order they appeared.
    /// Returns once the watch is established.
    async fn watch_job_pods(
        &self,
        job: &str,
    ) -> Result<std::sync::Arc<std::sync::Mutex<Vec<String>>>> {
        use futures_util::StreamExt as _;
        use kube::runtime::watcher;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let config =
            watcher::Config::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
        let mut events = watcher(self.pods(), config).boxed();
        let names = seen.clone();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        let mut names = names.lock().unwrap();
                        if !names.contains(&p.name_any()) {
                            names.push(p.name_any());
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(WAIT, ready)
            .await
            .context("the pod watch did not start")?
            .context("the pod watch ended")?;
        Ok(seen)
    }

    /// The (first) pod the Job controller made for `job`.
    async fn job_pod(&self, job: &str) -> Result<Pod> {
        let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(pod) = self.pods().list(&lp).await?.items.into_iter().next() {
                return Ok(pod);
            }
            ensure!(
                Instant::now() < deadline,
                "no pod for Job {job} within {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until the emulator holds no container for the pod.
    async fn no_container(&self, pod: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let containers = self.node.containers(pod).await?;
            if containers.is_empty() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "pod {pod} still has containers {containers:?} after {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Merges `extra` into `base` (JSON merge patch rules).
fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Waits (watching) until `name` satisfies `what`; fails after [`WAIT`] showing the object.
async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, cond: impl Fn(&K) -> bool) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let waited = tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, move |o: Option<&K>| o.is_some_and(&cond)),
    )
    .await;
    match waited {
        Ok(Ok(Some(object))) => Ok(object),
        Ok(Ok(None)) => bail!("{name} is gone while waiting for {what}"),
        Ok(Err(err)) => Err(err).context(format!("waiting for {what}")),
        Err(_) => bail!(
            "{name} not {what} within {WAIT:?}: {:#?}",
            api.get_opt(name).await?
        ),
    }
}

async fn wait_deleted<K>(api: &Api<K>, name: &str, uid: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, conditions::is_deleted(uid)),
    )
    .await
    .with_context(|| format!("{name} not deleted within {WAIT:?}"))??;
    Ok(())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

fn waiting_reason(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .as_deref()
}

fn pod_condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

fn job_condition<'a>(job: &'a Job, kind: &str) -> Option<(&'a str, Option<&'a str>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.as_str(), c.reason.as_deref()))
}

fn job_failed(job: &Job) -> bool {
    job_condition(job, "Failed").is_some_and(|(s, _)| s == "True")
}

#[tokio::test]
async fn a_job_that_exits_0_succeeds() -> Result<()> {
    let s = Setup::new("emu-ok").await?;
    s.create_job(&s.job("hello", "echo hi; exit 0", json!({}))?)
        .await?;
    let job = wait_for(&s.jobs(), "hello", "Complete", |j: &Job| {
        job_condition(j, "Complete").is_some_and(|(s, _)| s == "True")
    })
    .await?;
    let status = job.status.clone().unwrap_or_default();
    assert_eq!(status.succeeded, Some(1), "{status:#?}");
    assert_eq!(status.active.unwrap_or(0), 0, "{status:#?}");
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert_eq!(
        job_condition(&job, "SuccessCriteriaMet"),
        Some(("True", Some("CompletionsReached")))
    );

    let pod = s.job_pod("hello").await?;
    let name = pod.name_any();
    assert!(
        name.starts_with("hello-") && name.len() == "hello-".len() + 5,
        "{name}"
    );
    let owner = &pod.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "hello"));
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.uid, job.uid().unwrap());
    assert_eq!(
        pod.labels().get("job-name").map(String::as_str),
        Some("hello")
    );
    assert_eq!(
        pod.labels().get("controller-uid"),
        job.uid().as_ref(),
        "{:?}",
        pod.labels()
    );
    let pod = wait_for(&s.pods(), &name, "Succeeded", |p: &Pod| {
        phase(p) == "Succeeded"
    })
    .await?;
    let done = terminated(&pod).context("no terminated state")?;
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(s.node.node_name())
    );
    assert_eq!(s.node.logs(&name).await?, "hi\n");
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_job_that_exits_3_fails_with_the_exit_code() -> Result<()> {
    let s = Setup::new("emu-exit3").await?;
    s.create_job(&s.job("three", "echo bad >&2; exit 3", json!({}))?)
        .await?;
    let job = wait_for(&s.jobs(), "three", "Failed", job_failed).await?;
    assert_eq!(
        job_condition(&job, "Failed"),
        Some(("True", Some("BackoffLimitExceeded")))
    );
    assert_eq!(
        job_condition(&job, "FailureTarget"),
        Some(("True", Some("BackoffLimitExceeded")))
    );
    let status = job.status.clone().unwrap_or_default();
    assert_eq!((status.failed, status.succeeded.unwrap_or(0)), (Some(1), 0));
    assert!(
        status.completion_time.is_none(),
        "only Complete Jobs get one"
    );
    let pod = s.job_pod("three").await?;
    assert_eq!(phase(&pod), "Failed");
    let done = terminated(&pod).context("no terminated state")?;
    assert_eq!((done.exit_code, done.reason.as_deref()), (3, Some("Error")));
    assert_eq!(s.node.logs(&pod.name_any()).await?, "bad\n");
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_oom_annotation_kills_with_oomkilled() -> Result<()> {
    let s = Setup::new("emu-oom").await?;
    let extra =
        json!({"spec": {"template": {"metadata": {"annotations": {OOM_KILL_ANNOTATION: "true"}}}}});
    s.create_job(&s.job("hungry", "sleep 30", extra)?).await?;
    let job = wait_for(&s.jobs(), "hungry", "Failed", job_failed).await?;
    assert_eq!(
        job_condition(&job, "Failed"),
        Some(("True", Some("BackoffLimitExceeded")))
    );
    let pod = s.job_pod("hungry").await?;
    assert_eq!(phase(&pod), "Failed");
    let done = terminated(&pod).context("no terminated state")?;
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (137, Some("OOMKilled"))
    );
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn oom_kill_kills_a_running_bare_pod() -> Result<()> {
    let s = Setup::new("emu-oom-call").await?;
    s.create_pod(&s.pod("warm", "sleep 30", json!({}))?).await?;
    wait_for(&s.pods(), "warm", "Running", |p: &Pod| {
        phase(p) == "Running"
    })
    .await?;
    s.node.oom_kill("warm").await?;
    let pod = wait_for(&s.pods(), "warm", "Failed", |p: &Pod| phase(p) == "Failed").await?;
    let done = terminated(&pod).context("no terminated state")?;
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (137, Some("OOMKilled"))
    );
    assert_eq!(pod_condition(&pod, "Ready"), Some("False"));
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_image_backs_off_and_never_runs() -> Result<()> {
    let s = Setup::new("emu-noimage").await?;
    let extra = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "runner", "image": "sparkwing-e2e-no-such-image:404", "command": ["true"],
    }]}}}});
    s.create_job(&s.job("nowhere", "", extra)?).await?;
    let pod = s.job_pod("nowhere").await?;
    let pod = wait_for(&s.pods(), &pod.name_any(), "ImagePullBackOff", |p: &Pod| {
        waiting_reason(p) == Some("ImagePullBackOff")
    })
    .await?;
    assert_eq!(phase(&pod), "Pending");
    let message = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        message.contains("sparkwing-e2e-no-such-image:404"),
        "{message}"
    );
    assert!(s.node.containers(&pod.name_any()).await?.is_empty());
    let job = s.jobs().get("nowhere").await?;
    assert_eq!(job.status.unwrap_or_default().active, Some(1));
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn active_deadline_seconds_fails_the_job_and_kills_the_pod() -> Result<()> {
    let s = Setup::new("emu-deadline").await?;
    let extra = json!({"spec": {"activeDeadlineSeconds": 1}});
    // Its pod lives about the 1 s deadline: a list polled for it can miss it on a busy machine.
    let pods = s.watch_job_pods("slow").await?;
    let started = Instant::now();
    s.create_job(&s.job("slow", "sleep 30", extra)?).await?;
    let job = wait_for(&s.jobs(), "slow", "Failed", job_failed).await?;
    let pod = pods
        .lock()
        .unwrap()
        .first()
        .cloned()
        .context("the Job controller made no pod for Job slow")?;
    assert!(started.elapsed() < Duration::from_secs(20), "{started:?}");
    assert_eq!(
        job_condition(&job, "Failed"),
        Some(("True", Some("DeadlineExceeded")))
    );
    assert_eq!(
        job_condition(&job, "FailureTarget"),
        Some(("True", Some("DeadlineExceeded")))
    );
    let status = job.status.clone().unwrap_or_default();
    assert_eq!(
        (status.active.unwrap_or(0), status.failed),
        (0, Some(1)),
        "{status:#?}"
    );
    // Failed is written once the pod's container is gone.
    assert!(s.node.containers(&pod).await?.is_empty());
    assert!(s.pods().get_opt(&pod).await?.is_none());
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_lost_pod_is_deleted_and_fails_its_job() -> Result<()> {
    let s = Setup::new("emu-lost").await?;
    s.create_job(&s.job("lost", "sleep 30", json!({}))?).await?;
    let pod = s.job_pod("lost").await?;
    let name = pod.name_any();
    wait_for(&s.pods(), &name, "Running", |p: &Pod| phase(p) == "Running").await?;
    s.node.lose(&name, LossKind::Deleted).await?;
    wait_deleted(&s.pods(), &name, &pod.uid().unwrap()).await?;
    assert!(s.node.containers(&name).await?.is_empty());
    let job = wait_for(&s.jobs(), "lost", "Failed", job_failed).await?;
    assert_eq!(
        job_condition(&job, "Failed"),
        Some(("True", Some("BackoffLimitExceeded")))
    );
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn an_evicted_pod_fails_with_reason_evicted() -> Result<()> {
    let s = Setup::new("emu-evicted").await?;
    s.create_pod(&s.pod("evictee", "sleep 30", json!({}))?)
        .await?;
    wait_for(&s.pods(), "evictee", "Running", |p: &Pod| {
        phase(p) == "Running"
    })
    .await?;
    s.node.lose("evictee", LossKind::Evicted).await?;
    let pod = s.pods().get("evictee").await?;
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("low on resource")),
        "{status:#?}"
    );
    assert_eq!(pod_condition(&pod, "DisruptionTarget"), Some("True"));
    assert_eq!(pod_condition(&pod, "Ready"), Some("False"));
    assert!(s.node.containers("evictee").await?.is_empty());
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_running_pod_terminates_it_gracefully() -> Result<()> {
    let s = Setup::new("emu-delete").await?;
    // Exits on SIGTERM: gone long before its 30 s grace period.
    let polite = s.pod(
        "polite",
        "trap 'exit 0' TERM; sleep 30 & wait",
        json!({"spec": {"terminationGracePeriodSeconds": 30}}),
    )?;
    // Ignores SIGTERM (sh is PID 1): killed when its 2 s grace period runs out.
    let stubborn = s.pod(
        "stubborn",
        "sleep 30",
        json!({"spec": {"terminationGracePeriodSeconds": 2}}),
    )?;
    s.create_pod(&polite).await?;
    s.create_pod(&stubborn).await?;
    for name in ["polite", "stubborn"] {
        wait_for(&s.pods(), name, "Running", |p: &Pod| phase(p) == "Running").await?;
    }
    for name in ["polite", "stubborn"] {
        let uid = s.pods().get(name).await?.uid().unwrap();
        let started = Instant::now();
        let deleted = s.pods().delete(name, &DeleteParams::default()).await?;
        assert!(
            deleted
                .left()
                .is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
            "a bound pod is deleted gracefully"
        );
        wait_deleted(&s.pods(), name, &uid).await?;
        let took = started.elapsed();
        if name == "polite" {
            assert!(took < Duration::from_secs(15), "{name}: {took:?}");
        } else {
            assert!(took >= Duration::from_secs(2), "{name}: {took:?}");
        }
        s.no_container(name).await?;
    }
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_bare_pod_runs_and_becomes_ready() -> Result<()> {
    let s = Setup::new("emu-bare").await?;
    let extra = json!({"spec": {"containers": [{
        "name": "runner",
        "image": s.image,
        "command": ["sh", "-c"],
        "args": ["echo \"$GREETING from $(pwd)\"; sleep 30"],
        "env": [{"name": "GREETING", "value": "hello"}],
        "workingDir": "/tmp",
    }]}});
    s.create_pod(&s.pod("bare", "", extra)?).await?;
    let pod = wait_for(&s.pods(), "bare", "Ready", |p: &Pod| {
        pod_condition(p, "Ready") == Some("True")
    })
    .await?;
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some(POD_IP));
    let container = &status.container_statuses.as_ref().unwrap()[0];
    assert!(container.ready);
    assert!(container
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .is_some_and(|r| r.started_at.is_some()));
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.last_transition_time.is_some());
    let deadline = Instant::now() + WAIT;
    while s.node.logs("bare").await? != "hello from /tmp\n" {
        ensure!(
            Instant::now() < deadline,
            "logs: {:?}",
            s.node.logs("bare").await?
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(s.node.containers("bare").await?.len(), 1);
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_job_deletes_its_pods() -> Result<()> {
    let s = Setup::new("emu-gc").await?;
    let policies = [
        ("background", Some(PropagationPolicy::Background)),
        ("foreground", Some(PropagationPolicy::Foreground)),
    ];
    for (name, _) in &policies {
        s.create_job(&s.job(name, "sleep 30", json!({}))?).await?;
    }
    for (name, policy) in policies {
        let pod = s.job_pod(name).await?;
        let job_uid = s.jobs().get(name).await?.uid().unwrap();
        wait_for(&s.pods(), &pod.name_any(), "Running", |p: &Pod| {
            phase(p) == "Running"
        })
        .await?;
        let dp = DeleteParams {
            propagation_policy: policy,
            ..DeleteParams::default()
        };
        s.jobs().delete(name, &dp).await?;
        wait_deleted(&s.pods(), &pod.name_any(), &pod.uid().unwrap()).await?;
        wait_deleted(&s.jobs(), name, &job_uid).await?;
        s.no_container(&pod.name_any()).await?;
    }
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_job_without_a_policy_orphans_its_pod() -> Result<()> {
    let s = Setup::new("emu-orphan").await?;
    s.create_job(&s.job("orphaner", "sleep 30", json!({}))?)
        .await?;
    let pod = s.job_pod("orphaner").await?;
    let job_uid = s.jobs().get("orphaner").await?.uid().unwrap();
    // batch/v1 Jobs default to orphaning their pods: the `orphan` finalizer is the GC's to remove.
    s.jobs()
        .delete("orphaner", &DeleteParams::default())
        .await?;
    wait_deleted(&s.jobs(), "orphaner", &job_uid).await?;
    let pod = wait_for(&s.pods(), &pod.name_any(), "orphaned", |p: &Pod| {
        p.owner_references().is_empty()
    })
    .await?;
    assert!(pod.metadata.deletion_timestamp.is_none());
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn deleting_an_owner_collects_its_jobs() -> Result<()> {
    let s = Setup::new("emu-owner").await?;
    // A ConfigMap stands in for a PipelineRun: any kind the apiserver knows will do.
    let configmaps: Api<ConfigMap> = Api::namespaced(s.client.clone(), &s.ns);
    let owner = configmaps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("run".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await?;
    let extra = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "run", "uid": owner.uid().unwrap(),
        "controller": true, "blockOwnerDeletion": true,
    }]}});
    s.create_job(&s.job("owned", "sleep 30", extra)?).await?;
    let pod = s.job_pod("owned").await?;
    let job_uid = s.jobs().get("owned").await?.uid().unwrap();
    configmaps
        .delete("run", &DeleteParams::background())
        .await?;
    wait_deleted(&s.jobs(), "owned", &job_uid).await?;
    wait_deleted(&s.pods(), &pod.name_any(), &pod.uid().unwrap()).await?;
    s.no_container(&pod.name_any()).await?;
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn dropping_the_emulator_removes_its_containers() -> Result<()> {
    let s = Setup::new("emu-drop").await?;
    s.create_pod(&s.pod("left", "sleep 30", json!({}))?).await?;
    wait_for(&s.pods(), "left", "Running", |p: &Pod| {
        phase(p) == "Running"
    })
    .await?;
    let id = s.node.id().to_string();
    assert_eq!(s.node.all_containers().await?.len(), 1);
    drop(s.node);
    let docker = bollard::Docker::connect_with_defaults()?
        .negotiate_version()
        .await?;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!(
            "{}={id}",
            sparkwing_e2e::node_emulator::EMULATOR_LABEL
        )],
    )]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let left = docker.list_containers(Some(opts)).await?;
    assert!(left.is_empty(), "{left:#?}");
    Ok(())
}

/// Waits until the pod ran to `Succeeded` and returns its log.
async fn succeeded_logs(s: &Setup, pod: &str) -> Result<String> {
    let done = wait_for(&s.pods(), pod, "finished", |p: &Pod| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await?;
    let logs = s.node.logs(pod).await?;
    ensure!(
        phase(&done) == "Succeeded",
        "pod {pod} ended {} ({:?}): {logs}",
        phase(&done),
        terminated(&done)
    );
    Ok(logs)
}

#[tokio::test]
async fn env_from_secrets_and_fields_is_resolved() -> Result<()> {
    let s = Setup::new("emu-env").await?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(s.client.clone(), &s.ns);
    let secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"token": "s3cret"},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let script = "echo \"token=$TOKEN name=$NAME ns=$NS uid=$UID_ node=$NODE app=$APP \
                  missing=${MISSING-unset} nokey=${NOKEY-unset}\"";
    let extra = json!({
        "metadata": {"labels": {"app": "emu"}},
        "spec": {"containers": [{
            "name": "runner", "image": s.image, "command": ["sh", "-c", script],
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "token", "optional": true}}},
                {"name": "NOKEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "other", "optional": true}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "UID_", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            ],
        }]},
    });
    s.create_pod(&s.pod("env", "", extra)?).await?;
    let logs = succeeded_logs(&s, "env").await?;
    let uid = s.pods().get("env").await?.uid().unwrap_or_default();
    assert_eq!(
        logs,
        format!(
            "token=s3cret name=env ns={} uid={uid} node={} app=emu missing=unset nokey=unset\n",
            s.ns.name(),
            s.node.node_name()
        )
    );
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_secret_keeps_the_pod_pending_until_it_exists() -> Result<()> {
    let s = Setup::new("emu-nosecret").await?;
    let extra = json!({"spec": {"containers": [{
        "name": "runner", "image": s.image, "command": ["sh", "-c", "echo \"got $TOKEN\""],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}],
    }]}});
    s.create_pod(&s.pod("waits", "", extra)?).await?;
    let pod = wait_for(
        &s.pods(),
        "waits",
        "CreateContainerConfigError",
        |p: &Pod| waiting_reason(p) == Some("CreateContainerConfigError"),
    )
    .await?;
    assert_eq!(phase(&pod), "Pending");
    let message = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert_eq!(message, "secret \"later\" not found");
    assert!(s.node.containers("waits").await?.is_empty());
    // The kubelet retries: once the Secret exists, the container starts.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(s.client.clone(), &s.ns);
    let secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "later"}, "stringData": {"token": "now"},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    assert_eq!(succeeded_logs(&s, "waits").await?, "got now\n");
    // Deleting a pod that waits for its configuration removes it at once.
    let extra = json!({"spec": {"containers": [{
        "name": "runner", "image": s.image, "command": ["true"],
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "nokey"}}}],
    }]}});
    s.create_pod(&s.pod("stuck", "", extra)?).await?;
    let pod = wait_for(
        &s.pods(),
        "stuck",
        "CreateContainerConfigError",
        |p: &Pod| waiting_reason(p) == Some("CreateContainerConfigError"),
    )
    .await?;
    let uid = pod.uid().unwrap_or_default();
    s.pods().delete("stuck", &DeleteParams::default()).await?;
    wait_deleted(&s.pods(), "stuck", &uid).await?;
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn empty_dir_and_host_path_volumes_are_mounted() -> Result<()> {
    let s = Setup::new("emu-volumes").await?;
    let host = tempfile::tempdir()?;
    std::fs::write(host.path().join("hello.txt"), "from the host")?;
    let script = "set -e; cat /host/hello.txt; echo; ls -A /scratch | wc -l; \
                  echo written > /scratch/f; cat /scratch/f; \
                  if (echo x > /host/nope) 2>/dev/null; then echo host-writable; else echo host-read-only; fi; \
                  echo rw > /rw/out; id -u";
    let extra = json!({"spec": {
        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
        "containers": [{
            "name": "runner", "image": s.image, "command": ["sh", "-c", script],
            "volumeMounts": [
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "host", "mountPath": "/host", "readOnly": true},
                {"name": "rw", "mountPath": "/rw"},
            ],
        }],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": host.path().to_string_lossy()}},
            {"name": "rw", "emptyDir": {"medium": "Memory"}},
        ],
    }});
    s.create_pod(&s.pod("vols", "", extra)?).await?;
    let logs = succeeded_logs(&s, "vols").await?;
    assert_eq!(
        logs, "from the host\n0\nwritten\nhost-read-only\n65532\n",
        "emptyDir fresh and writable by a non-root user, hostPath read-only"
    );
    assert!(!host.path().join("nope").exists());
    // An unsupported volume kind keeps the pod pending, saying why. (A configMap volume: the
    // scheduler binds the pod, where a missing PVC would keep it unscheduled.)
    let extra = json!({"spec": {
        "containers": [{"name": "runner", "image": s.image, "command": ["true"],
            "volumeMounts": [{"name": "cfg", "mountPath": "/cache"}]}],
        "volumes": [{"name": "cfg", "configMap": {"name": "cache"}}],
    }});
    s.create_pod(&s.pod("cfg", "", extra)?).await?;
    let pod = wait_for(&s.pods(), "cfg", "CreateContainerConfigError", |p: &Pod| {
        waiting_reason(p) == Some("CreateContainerConfigError")
    })
    .await?;
    assert_eq!(phase(&pod), "Pending");
    s.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn downward_api_files_follow_the_pods_annotations() -> Result<()> {
    let s = Setup::new("emu-downward").await?;
    // Prints the annotations file each time it changes (a warm runner polls it the same way).
    let script = "last=''; while true; do cur=$(cat /podinfo/annotations); \
                  if [ \"$cur\" != \"$last\" ]; then echo \"== $(cat /podinfo/name) \
                  $(cat /podinfo/namespace)\"; echo \"$cur\"; echo \"$(cat /podinfo/labels)\"; \
                  last=$cur; fi; sleep 0.05; done";
    let extra = json!({
        "metadata": {"annotations": {"sparkwing.dev/pool": "warm"}},
        "spec": {
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
            "containers": [{
                "name": "runner", "image": s.image, "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "podinfo", "mountPath": "/podinfo", "readOnly": true}],
            }],
            "volumes": [{"name": "podinfo", "downwardAPI": {"items": [
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
            ]}}],
        },
    });
    s.create_pod(&s.pod("downward", "", extra)?).await?;
    let ns = s.ns.to_string();
    let first = format!(
        "== downward {ns}\nsparkwing.dev/pool=\"warm\"\napp.kubernetes.io/managed-by=\"sparkwing\"\n"
    );
    let logs_with = |want: String| {
        let node = &s.node;
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let logs = node.logs("downward").await?;
                if logs.contains(&want) {
                    return Ok::<_, anyhow::Error>(logs);
                }
                ensure!(
                    Instant::now() < deadline,
                    "no {want:?} in the logs: {logs:?}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
    };
    logs_with(first.clone()).await?;
    // Claim it as the operator does: the container sees the new annotations (quoted as Go does).
    let patch = json!({"metadata": {
        "annotations": {"sparkwing.dev/run": "r1", "sparkwing.dev/attempt": "2",
                        "note": "say \"hi\"\nbye"},
        "labels": {"sparkwing.dev/claimed-by": "r1"},
    }});
    s.pods()
        .patch(
            "downward",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    let claimed = format!(
        "== downward {ns}\nnote=\"say \\\"hi\\\"\\nbye\"\nsparkwing.dev/attempt=\"2\"\n\
         sparkwing.dev/pool=\"warm\"\nsparkwing.dev/run=\"r1\"\n\
         app.kubernetes.io/managed-by=\"sparkwing\"\nsparkwing.dev/claimed-by=\"r1\"\n"
    );
    let logs = logs_with(claimed).await?;
    assert!(logs.starts_with(&first), "{logs}");
    // The container kept running throughout.
    let pod = s.pods().get("downward").await?;
    assert_eq!(phase(&pod), "Running");
    s.node.shutdown().await?;
    Ok(())
}
