//! Pipeline schedules on the test bed, across operator restarts, without waiting for the clock:
//! each Pipeline's cron names a minute of the hour five minutes ago, so its latest slot is already
//! missed and its next one an hour away, whatever the time the test runs.
//!
//! 1. Created with the operator running: no run (the slot came before the Pipeline), the next
//!    slot in `status.schedules[].nextScheduleTime`, `status.nextScheduleTime` and `kubectl get
//!    swpl`'s NEXT RUN column.
//! 2. The operator stops; the status says the last fired slot was two hours before the latest
//!    (downtime). Restarted (with its API), the `FireOnce` Pipeline fires the latest slot once,
//!    its run with a runner token Secret; the `Skip` one records it as skipped and fires nothing.
//! 3. The operator stops again; the fired slot's status write is undone (as if the operator
//!    died between creating the run and recording it). Restarted, it records the slot again and
//!    creates no second run: the run's name is the slot's.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sparkwing_core::time::{format_rfc3339, parse_rfc3339};
use sparkwing_crds::pipeline::{Pipeline, PIPELINE_LABEL};
use sparkwing_crds::pipeline_run::{PipelineRun, TriggerVia};
use sparkwing_e2e::{OperatorTask, TestBed, TestNamespace, User};
use sparkwing_operator::controller::pipeline_schedule::SCHEDULED_SLOT_ANNOTATION;
use sparkwing_operator::Config;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
const HOUR_MS: i64 = 3_600_000;

/// Poll `f` until it answers `Some`, failing after `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Env {
    client: Client,
    ns: TestNamespace,
}

impl Env {
    fn config(&self) -> Config {
        // No node runs the runners: only the runs' creation is under test.
        Config::new("sparkwing-runner:unused").namespace(self.ns.name())
    }

    /// The operator alone: scheduled runs are created as `kubectl` would create them.
    fn operator(&self) -> OperatorTask {
        OperatorTask::start(self.client.clone(), self.config())
    }

    /// The operator with its API in-process: scheduled runs get their runner token first.
    async fn operator_with_api(&self) -> Result<OperatorTask> {
        OperatorTask::start_with_api(self.client.clone(), self.config(), self.ns.name()).await
    }

    fn pipelines(&self) -> Api<Pipeline> {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    async fn runs_of(&self, pipeline: &str) -> Result<Vec<PipelineRun>> {
        let runs: Api<PipelineRun> = Api::namespaced(self.client.clone(), self.ns.name());
        Ok(runs
            .list(&ListParams::default().labels(&format!("{PIPELINE_LABEL}={pipeline}")))
            .await?
            .items)
    }

    /// `status.schedules[0]` of `name` once `ready` accepts it.
    async fn schedule_status(
        &self,
        name: &str,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let api = self.pipelines();
        eventually(what, WAIT, || async {
            let p = api.get(name).await?;
            let v = serde_json::to_value(p.status.unwrap_or_default())?;
            let s = v["schedules"][0].clone();
            Ok((!s.is_null() && ready(&s)).then_some(s))
        })
        .await
    }

    /// Write `status.schedules[0]` as a stopped operator would have left it.
    async fn set_schedule_status(&self, name: &str, status: serde_json::Value) -> Result<()> {
        self.pipelines()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"schedules": [status]}})),
            )
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_slot_fires_once_across_operator_restarts() -> Result<()> {
    let bed = TestBed::shared().await?;
    bed.install_crds().await?;
    let env = Env {
        client: bed.client().await?,
        ns: bed.namespace("schedules").await?,
    };
    let op = env.operator();

    // The minute of the hour five minutes ago: its latest slot is that, missed.
    let five_ago = now_ms() - 5 * 60_000;
    let minute = (five_ago / 60_000) % 60;
    let slot = five_ago - five_ago.rem_euclid(60_000);
    let cron = format!("{minute} * * * *");
    for (name, missed) in [("fire-once", "FireOnce"), ("skip", "Skip")] {
        let p: Pipeline = serde_json::from_value(json!({
            "apiVersion": "sparkwing.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name},
            "spec": {
                "repository": "http://127.0.0.1:9/acme/app.git",
                "pipeline": "hello",
                "triggers": {"schedule": [{"cron": cron, "branch": "main", "missed": missed}]}
            }
        }))?;
        env.pipelines().create(&PostParams::default(), &p).await?;
    }

    // 1. No run for a slot before the Pipeline existed; the next slot shown.
    let next = format_rfc3339(slot + HOUR_MS);
    for name in ["fire-once", "skip"] {
        let s = env
            .schedule_status(name, "the next slot recorded", |s| {
                s["nextScheduleTime"].as_str() == Some(next.as_str())
            })
            .await?;
        ensure!(s.get("lastScheduledSlot").is_none(), "{s}");
        ensure!(env.runs_of(name).await?.is_empty());
    }
    let p = env.pipelines().get("fire-once").await?;
    ensure!(
        p.status
            .as_ref()
            .and_then(|s| s.next_schedule_time)
            .map(|t| t.0)
            == Some(slot + HOUR_MS)
    );
    let out = bed
        .kubectl(User::Admin)
        .args(["get", "swpl", "-n", env.ns.name()])
        .output()
        .await?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(table.contains("NEXT RUN"), "{table}");
    ensure!(
        table.lines().filter(|l| l.contains(&next)).count() == 2,
        "{table}"
    );

    // 2. Downtime: the last fired slot two hours before the latest.
    op.stop().await?;
    let down = |name: &str| {
        json!({
            "cron": cron, "branch": "main",
            "since": format_rfc3339(slot - 3 * HOUR_MS),
            "lastScheduledSlot": format_rfc3339(slot - 2 * HOUR_MS),
            "nextScheduleTime": format_rfc3339(slot - HOUR_MS),
            "lastScheduledRun": format!("{name}-earlier"),
        })
    };
    for name in ["fire-once", "skip"] {
        env.set_schedule_status(name, down(name)).await?;
    }
    let op = env.operator_with_api().await?;
    let fired = format_rfc3339(slot);
    let s = env
        .schedule_status("fire-once", "the missed slot fired", |s| {
            s["lastScheduledSlot"].as_str() == Some(fired.as_str())
        })
        .await?;
    let runs = env.runs_of("fire-once").await?;
    ensure!(runs.len() == 1, "one run for two missed slots: {runs:?}");
    let run = &runs[0];
    ensure!(
        s["lastScheduledRun"].as_str() == Some(run.name_any().as_str()),
        "{s}"
    );
    ensure!(run.annotations()[SCHEDULED_SLOT_ANNOTATION] == fired);
    let by = run.spec.triggered_by.clone().context("triggeredBy")?;
    ensure!((by.principal.as_str(), by.via) == ("schedule", TriggerVia::Schedule));
    ensure!(s["nextScheduleTime"].as_str() == Some(next.as_str()), "{s}");
    // Its runner token, in place for the runner Job and owned by the run.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), env.ns.name());
    let secret = secrets
        .get(&format!("{}-runner-token", run.name_any()))
        .await
        .context("the scheduled run's runner token Secret")?;
    ensure!(
        secret
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == run.uid().as_ref()),
        "{:?}",
        secret.owner_references()
    );

    let s = env
        .schedule_status("skip", "the missed slot skipped", |s| {
            s["lastSkippedSlot"].as_str() == Some(fired.as_str())
        })
        .await?;
    ensure!(
        s["lastScheduledSlot"].as_str().and_then(parse_rfc3339) == Some(slot - 2 * HOUR_MS),
        "{s}"
    );
    ensure!(env.runs_of("skip").await?.is_empty());

    // 3. The slot's status write lost: restarted (this time without the API: the run is created
    // as kubectl would), the slot is recorded again, not run again.
    op.stop().await?;
    env.set_schedule_status("fire-once", down("fire-once"))
        .await?;
    let op = env.operator();
    env.schedule_status("fire-once", "the fired slot recorded again", |s| {
        s["lastScheduledSlot"].as_str() == Some(fired.as_str())
    })
    .await?;
    let again = env.runs_of("fire-once").await?;
    ensure!(
        again.len() == 1 && again[0].uid() == run.uid(),
        "the slot ran twice: {again:?}"
    );
    ensure!(env.runs_of("skip").await?.is_empty());
    op.stop().await?;
    Ok(())
}
