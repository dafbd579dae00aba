//! The runner's work: plan the DAG, start job attempts as core's scheduler decides, record every
//! line and state, and stop as the executor asks.

use super::interrupts::Interrupt;
use super::job_log::JobLog;
use super::output::human_duration;
use super::process::{self, AttemptSpec, Control, Line, ProcessEnd};
use super::recorder::{finish, Recorder};
use super::sink::SinkLine;
use super::{io_err, now_ms, sink, subpipeline, EngineError, RunRequest};
use crate::exit::ExitCode;
use crate::home::Home;
use crate::job_storage::{JobStorage, StorageEvent};
use crate::memo_probe::{MemoFound, MemoProbe};
use crate::store::NewJob;
use serde_json::{json, Map, Value};
use sparkwing_api::wire::ReportedJobState;
use sparkwing_core::protocol::{PlanDoc, CONTROL_PREFIX};
use sparkwing_core::scheduler::{Action, AttemptOutcome};
use sparkwing_core::{dag, fanout, rerun, JobState, RunPhase, Scheduler};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

struct JobRuntime {
    log: JobLog,
    control: Option<watch::Sender<Control>>,
    started_ms: i64,
    outputs: BTreeMap<String, String>,
    /// For an await job's attempt: what its child run printed so far.
    child: Option<subpipeline::ChildTracker>,
    /// The attempt's `command_failed` control record: the job failed because a command did, and
    /// is recorded with that command's exit code or signal.
    failed_command: Option<FailedCommand>,
    /// The slot of the job's concurrency group, held for the length of an attempt.
    group_slot: Option<crate::concurrency::JobSlot>,
    /// A memoized job that took an earlier result: the run it came from.
    cached_from: Option<String>,
    /// A resumed attempt does not execute this job: it ended in an earlier attempt, whose record
    /// of it (in the API) stays as it is, so its state is not reported again.
    carried_over: bool,
}

/// How the command that failed a job ended (from the SDK's `command_failed` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailedCommand {
    Exited(i32),
    Signalled(i32),
}

impl FailedCommand {
    pub(crate) fn from_record(v: &Value) -> Option<FailedCommand> {
        let int = |k: &str| v[k].as_i64().and_then(|n| i32::try_from(n).ok());
        match (int("exit_code"), int("signal")) {
            (Some(c), _) if c != 0 => Some(FailedCommand::Exited(c)),
            (_, Some(s)) if s > 0 => Some(FailedCommand::Signalled(s)),
            _ => None,
        }
    }

    /// The job's reason and exit code.
    pub(crate) fn reason(self) -> (String, Option<i32>) {
        match self {
            FailedCommand::Exited(c) => (format!("exit code {c}"), Some(c)),
            FailedCommand::Signalled(s) => (format!("killed by signal {s}"), None),
        }
    }
}

enum Msg {
    Line {
        job: usize,
        attempt: u32,
        line: Line,
    },
    AttemptEnded {
        job: usize,
        end: ProcessEnd,
    },
    RetryDue {
        job: usize,
        attempt: u32,
    },
    /// A job's wait for a slot of its concurrency group ended (`concurrency::job_slot`).
    GroupSlot {
        job: usize,
        attempt: u32,
        slot: Result<Option<crate::concurrency::JobSlot>, String>,
        control: watch::Receiver<Control>,
    },
    /// A job's attempt found its group full, with `cancel_in_progress`: cancel these older runs.
    GroupCancel {
        job: usize,
        key: String,
        runs: Vec<String>,
    },
    /// The home of a job's group (the cluster API) asked these older runs to cancel.
    GroupCancelled {
        job: usize,
        key: String,
        runs: Vec<String>,
    },
    /// The run's wait for its box slot again ended (`run_slot`).
    BoxSlot {
        slot: Result<crate::box_slots::SlotGuard, String>,
    },
    /// A waiting gate's wait ended (`gates`).
    GateEnded {
        job: usize,
        end: crate::gates::GateEnd,
    },
    /// A memoized job runs; a later run finds its success by this input hash.
    MemoHash {
        job: usize,
        hash: String,
    },
    /// A memoized job does not run: run `from_run`'s result is taken.
    Cached {
        job: usize,
        from_run: String,
        outputs: BTreeMap<String, String>,
        events: Vec<StorageEvent>,
    },
    /// An attempt in a job pod ended (`job_pods`).
    PodEnded {
        job: usize,
        end: crate::job_pods::PodAttemptEnd,
    },
    /// What happened to the job's caches and artifacts around an attempt.
    Storage {
        job: usize,
        attempt: u32,
        events: Vec<StorageEvent>,
    },
}

/// What the runner of a local run owns: the run's records and where its logs go.
pub(super) struct DagRun {
    pub(super) run_id: String,
    pub(super) run_dir: PathBuf,
    pub(super) rec: Recorder,
    pub(super) created: i64,
    /// The run's box slot (`--sw-box-slots`), given up while only gates wait.
    pub(super) box_slot: Option<super::admission::HeldBoxSlot>,
}

/// Plan and run the DAG of an admitted run, then record how it ended. `stops` are the stops its
/// executor sends (a graceful one cancels with `finally` jobs, a hard one kills every job).
pub(super) async fn run_dag(
    req: &RunRequest,
    dag: DagRun,
    mut stops: mpsc::UnboundedReceiver<Interrupt>,
) -> Result<ExitCode, EngineError> {
    let DagRun {
        run_id,
        run_dir,
        mut rec,
        created,
        box_slot,
    } = dag;
    let args_json = Value::Object(req.args.clone()).to_string();
    // Plan, unless stopped first.
    let plan = tokio::select! {
        p = plan(req) => p,
        Some(_) = stops.recv() => Err("cancelled while planning".to_string()),
    };
    let plan = match plan {
        Ok(p) => p,
        Err(msg) => {
            let status = if msg.starts_with("cancelled") {
                RunPhase::Cancelled
            } else {
                RunPhase::Failed
            };
            return finish(&mut rec, status, Some(format!("plan: {msg}")), created);
        }
    };
    let validated = match dag::validate(&plan) {
        Ok(v) => v,
        Err(e) => {
            return refuse_plan(&mut rec, "invalid plan", e, created);
        }
    };
    // Without a home of job pods (`RunRequest::job_pods`: a cluster's runner pod) this engine
    // runs every job in its own processes: placement is ignored, and said so once per run.
    let here = if req.runner == crate::RUNNER_KUBERNETES {
        sparkwing_core::placement::RunsHere::InRunnerPod
    } else {
        sparkwing_core::placement::RunsHere::Locally
    };
    let note = sparkwing_core::placement::ignored_note(
        validated
            .jobs
            .iter()
            .filter(|j| j.placement.is_some())
            .map(|j| j.id.as_str()),
        here,
    );
    if let (Some(note), None) = (note, &req.job_pods) {
        tracing::info!("{note}");
    }
    // Jobs left out by --sw-only/--sw-start-at/--sw-stop-at are skipped, saying why (a reason
    // decided at plan time stays).
    let mut validated = validated;
    match req.selection.skips(&validated) {
        Ok(skips) => {
            for (job, skip) in validated.jobs.iter_mut().zip(skips) {
                if job.skip.is_none() {
                    job.skip = skip;
                }
            }
        }
        Err(e) => {
            return refuse_plan(&mut rec, "invalid selection", e, created);
        }
    }
    // A re-run: the jobs it does not retry are reused from the run it retries.
    let reused = match &req.retry {
        None => vec![None; validated.jobs.len()],
        Some(r) => match rerun::plan_retry(&validated, &r.of_run, &r.prior, &r.scope) {
            Ok(reused) => reused,
            Err(e) => {
                return refuse_plan(&mut rec, "invalid retry", e, created);
            }
        },
    };
    // Concurrency groups' keys, from the args that may be shown (never a secret's).
    let shown: Map<String, Value> = req
        .args
        .iter()
        .filter(|(k, _)| !req.info.args.iter().any(|a| &a.name == *k && a.secret))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let group_key = |spec: &sparkwing_core::concurrency::ConcurrencySpec| {
        sparkwing_core::concurrency::resolve_key(&spec.group, &shown).and_then(|key| {
            if spec.limit == 0 {
                Err(sparkwing_core::concurrency::KeyError::ZeroLimit(key))
            } else {
                Ok(key)
            }
        })
    };
    let job_groups: Result<Vec<Option<crate::concurrency::JobGroup>>, _> = validated
        .jobs
        .iter()
        .map(|j| {
            j.concurrency
                .as_ref()
                .map(|c| {
                    group_key(c).map(|key| crate::concurrency::JobGroup {
                        key,
                        limit: c.limit,
                        cancel_in_progress: c.cancel_in_progress,
                    })
                })
                .transpose()
        })
        .collect();
    let job_groups = match job_groups {
        Ok(g) => g,
        Err(e) => {
            return refuse_plan(&mut rec, "invalid plan", e, created);
        }
    };
    // The run's concurrency group: wait for a slot before any job is recorded or started.
    let _group_slot = match &plan.concurrency {
        None => None,
        Some(spec) => {
            let key = match group_key(spec) {
                Ok(k) => k,
                Err(e) => {
                    return refuse_plan(&mut rec, "invalid plan", e, created);
                }
            };
            let slots: std::sync::Arc<dyn crate::concurrency::GroupSlots> =
                match req.group_slots.clone() {
                    Some(home) => home,
                    None => std::sync::Arc::new(crate::concurrency::LocalGroup::new(
                        &req.home.root,
                        &run_id,
                    )),
                };
            match crate::concurrency::enter(&mut rec, slots, spec, &key, &mut stops).await? {
                crate::concurrency::Entered::Holding(slot) => Some(slot),
                crate::concurrency::Entered::Cancelled => {
                    return finish(
                        &mut rec,
                        RunPhase::Cancelled,
                        Some(format!(
                            "cancelled while waiting for concurrency group {key}"
                        )),
                        created,
                    );
                }
            }
        }
    };
    // Caches and artifacts: set up only when a job declares some.
    let uses_storage = validated
        .jobs
        .iter()
        .any(|j| !j.caches.is_empty() || !j.publishes.is_empty() || !j.consumes.is_empty());
    let stores = if uses_storage {
        let stores = match &req.stores {
            Some(s) => Ok(s.clone()),
            None => crate::job_storage::local_stores(&req.home, &run_dir),
        };
        match stores {
            Ok(s) => Some(s),
            Err(e) => return finish(&mut rec, RunPhase::Failed, Some(e), created),
        }
    } else {
        None
    };
    let new_jobs: Vec<NewJob> = validated
        .jobs
        .iter()
        .map(|j| NewJob {
            id: j.id.clone(),
            needs: j.needs.clone(),
            optional: j.optional,
            finally: j.finally,
        })
        .collect();
    rec.store.insert_jobs(&run_id, &new_jobs)?;
    let gates: Vec<_> = validated
        .jobs
        .iter()
        .filter_map(|j| j.gate.clone().map(|g| (j.id.clone(), g)))
        .collect();
    rec.store.insert_gates(&run_id, &gates)?;
    rec.gates = gates
        .iter()
        .map(|(id, g)| (id.clone(), g.message.clone()))
        .collect();
    rec.needs = validated
        .jobs
        .iter()
        .filter(|j| !j.needs.is_empty())
        .map(|j| (j.id.clone(), j.needs.clone()))
        .collect();
    let resuming = req
        .retry
        .as_ref()
        .is_some_and(|r| r.scope == rerun::RetryScope::Resume);
    for (j, reused) in new_jobs.iter().zip(&reused) {
        if !(resuming && reused.is_some()) {
            rec.sink_state(
                &j.id,
                sink::job_state_report(JobState::Pending, 0, None, None, None, None),
            );
        }
    }
    rec.term
        .set_job_names(validated.jobs.iter().map(|j| j.id.as_str()));
    rec.event(
        None,
        "plan",
        json!({"jobs": validated.jobs.iter().map(|j| json!({"id": j.id, "needs": j.needs})).collect::<Vec<_>>()}),
        None,
    )?;

    let mut jobs: Vec<JobRuntime> = Vec::with_capacity(validated.jobs.len());
    for (j, reused) in validated.jobs.iter().zip(&reused) {
        let path = Home::job_log(&run_dir, &j.id);
        jobs.push(JobRuntime {
            log: JobLog::open(&path).map_err(io_err(format!("open {}", path.display())))?,
            control: None,
            started_ms: 0,
            // A reused job's outputs are the old run's: recorded with it, and read by its
            // dependents' inputs.
            outputs: reused
                .as_ref()
                .map(|r| r.outputs.clone())
                .unwrap_or_default(),
            child: None,
            failed_command: None,
            group_slot: None,
            cached_from: None,
            carried_over: resuming && reused.is_some(),
        });
    }
    // `branch` conditions read the branch recorded with the run.
    let branch = rec.store.get_run(&run_id)?.and_then(|r| r.git_branch);
    let mut sched = Scheduler::new(validated, req.workers)
        .with_own_pods(req.job_pods.is_some())
        .with_branch(branch)
        .with_reused(reused);
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut ctx = Ctx {
        supervisors: process::Supervisors::default(),
        req,
        run_id: &run_id,
        run_dir: &run_dir,
        args_json: &args_json,
        tx: tx.clone(),
        job_groups,
        stores,
        box_slot: box_slot.map(crate::run_slot::RunSlot::new),
    };
    let actions = sched.poll();
    apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
    settle_box_slot(&mut ctx, &mut rec, &sched)?;
    if let Some(code) = crate::park::try_park(req, &mut rec, &sched, |j| jobs[j].started_ms).await?
    {
        return Ok(code);
    }
    let mut killed = false;
    while !sched.is_done() {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    Msg::Line { job, attempt, line } => on_line(&mut rec, &sched, &mut jobs, job, attempt, line)?,
                    Msg::AttemptEnded { job, end } => {
                        let actions = on_attempt_end(&mut ctx, &mut rec, &mut sched, &mut jobs, job, end)?;
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                    Msg::GroupSlot { job, attempt, slot, control } => {
                        let actions = on_group_slot(&mut ctx, &mut rec, &mut sched, &mut jobs, job, attempt, slot, control)?;
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                    Msg::GroupCancel { job, key, runs } => {
                        let id = sched.plan().jobs[job].id.clone();
                        for other in runs {
                            crate::concurrency::cancel_older(&mut rec, &key, &other, Some(&id))?;
                        }
                    }
                    Msg::GroupCancelled { job, key, runs } => {
                        let id = sched.plan().jobs[job].id.clone();
                        for other in runs {
                            let human = format!("cancelling run {other} of concurrency group {key} (cancel_in_progress)");
                            rec.event(Some(&id), "concurrency_cancelled_older", json!({"group": key, "run": other}), Some(human))?;
                        }
                    }
                    Msg::BoxSlot { slot } => {
                        let actions = on_box_slot(&mut ctx, &mut rec, &mut sched, &mut jobs, slot)?;
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                    Msg::GateEnded { job, end } => {
                        let actions = on_gate_end(&mut rec, &mut sched, &mut jobs, job, end)?;
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                    Msg::PodEnded { job, end } => {
                        let actions = on_pod_end(&mut rec, &mut sched, &mut jobs, job, end)?;
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                    Msg::Storage { job, attempt, events } => on_storage(&mut rec, &sched, &mut jobs, job, attempt, events)?,
                    Msg::MemoHash { job, hash } => {
                        let id = sched.plan().jobs[job].id.clone();
                        rec.store.set_job_memo(&run_id, &id, &hash)?;
                    }
                    Msg::Cached { job, from_run, outputs, events } => {
                        let actions = on_cached(&mut rec, &mut sched, &mut jobs, job, from_run, outputs, events)?;
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                    Msg::RetryDue { job, attempt } => {
                        let actions = if sched.is_cancelling() {
                            sched.attempt_finished(job, AttemptOutcome::Killed)
                        } else {
                            vec![Action::Start { job, attempt }]
                        };
                        if sched.job(job).state == JobState::Cancelled {
                            record_terminal(&mut rec, &sched, &mut jobs, job, None)?;
                        }
                        apply(&mut ctx, &mut rec, &mut sched, &mut jobs, actions)?;
                    }
                }
            }
            Some(stop) = stops.recv() => {
                killed = stop.hard;
                on_interrupt(&mut ctx, &mut rec, &mut sched, &mut jobs, stop)?;
            }
        }
        if killed {
            // A hard stop: everything was killed; do not wait for anything else.
            return finish(
                &mut rec,
                RunPhase::Cancelled,
                Some("cancelled (killed at once by a second interrupt)".into()),
                created,
            );
        }
        settle_box_slot(&mut ctx, &mut rec, &sched)?;
        if let Some(code) =
            crate::park::try_park(req, &mut rec, &sched, |j| jobs[j].started_ms).await?
        {
            return Ok(code);
        }
    }
    drop(tx);
    let (status, error) = sched.outcome();
    finish(&mut rec, status, error, created)
}

/// A plan this run cannot execute (invalid, a bad selection or retry, a bad group key): record
/// why (`plan_invalid`) and end the run `Failed` with "WHAT: ERROR".
fn refuse_plan(
    rec: &mut Recorder,
    what: &str,
    e: impl std::fmt::Display,
    created: i64,
) -> Result<ExitCode, EngineError> {
    rec.event(None, "plan_invalid", json!({"error": e.to_string()}), None)?;
    finish(rec, RunPhase::Failed, Some(format!("{what}: {e}")), created)
}

struct Ctx<'a> {
    supervisors: process::Supervisors,
    req: &'a RunRequest,
    run_id: &'a str,
    run_dir: &'a std::path::Path,
    args_json: &'a str,
    tx: mpsc::UnboundedSender<Msg>,
    /// Each job's concurrency group, if it has one.
    job_groups: Vec<Option<crate::concurrency::JobGroup>>,
    stores: Option<crate::job_storage::Stores>,
    /// The run's box slot, when it has a cap (`run_slot`).
    box_slot: Option<crate::run_slot::RunSlot>,
}

/// Ask the binary for the plan (on a blocking thread: planning is one short process).
async fn plan(req: &RunRequest) -> Result<PlanDoc, String> {
    let binary = req.binary.path.clone();
    let root = req.repo_root.clone();
    let pipeline = req.pipeline.clone();
    let entrypoint = req.info.entrypoint.clone();
    let args = req.args.clone();
    tokio::task::spawn_blocking(move || {
        crate::planning::plan(&binary, &root, &pipeline, &entrypoint, &args)
    })
    .await
    .map_err(|e| format!("planning stopped: {e}"))?
    .map_err(|e| e.to_string())
}

fn apply(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut Vec<JobRuntime>,
    actions: Vec<Action>,
) -> Result<(), EngineError> {
    for action in actions {
        match action {
            Action::Start { job, attempt } => {
                // A job (not a gate) starts only while the run holds its box slot.
                let gate = sched.plan().jobs[job].gate.is_some();
                match ctx.box_slot.as_mut().filter(|s| !s.is_held() && !gate) {
                    Some(slot) => slot.deferred.push((job, attempt)),
                    None => start(ctx, rec, sched, jobs, job, attempt)?,
                }
            }
            Action::Retry {
                job,
                attempt,
                after_ms,
            } => {
                let id = sched.plan().jobs[job].id.clone();
                let reason = sched.job(job).reason.clone().unwrap_or_default();
                let human = format!(
                    "{} {id} attempt {} failed ({reason}); retrying in {}",
                    rec.term.yellow("↻"),
                    attempt - 1,
                    human_duration(after_ms as i64)
                );
                rec.event(
                    Some(&id),
                    "job_retry",
                    json!({"attempt": attempt, "after_ms": after_ms, "reason": reason}),
                    Some(human),
                )?;
                let reason = rec.masker.mask(&reason).into_owned();
                rec.sink_state(
                    &id,
                    sink::job_state_report(
                        ReportedJobState::Retrying,
                        attempt - 1,
                        Some(jobs[job].started_ms),
                        None,
                        None,
                        Some(&reason),
                    ),
                );
                let tx = ctx.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    let _ = tx.send(Msg::RetryDue { job, attempt });
                });
            }
            Action::Settled { job } => record_terminal(rec, sched, jobs, job, None)?,
            Action::Expand { job } => {
                let more = on_expand(ctx, rec, sched, jobs, job)?;
                apply(ctx, rec, sched, jobs, more)?;
            }
        }
    }
    Ok(())
}

/// A fan-out template is ready: read its list from the job it fans out from, add the jobs it
/// expands into to the run (recorded, logged, reported like the plan's own), or fail it saying
/// why the list is unusable (`sparkwing_core::fanout`).
fn on_expand(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut Vec<JobRuntime>,
    job: usize,
) -> Result<Vec<Action>, EngineError> {
    let spec = sched.plan().jobs[job].clone();
    let from = spec.fan_out.clone().expect("only fan-out templates expand");
    let producer = sched
        .plan()
        .index_of(&from.job)
        .expect("a validated fan-out's producer is a job of the plan");
    let items = match fanout::items(&spec.id, &from, &jobs[producer].outputs) {
        Ok(items) => items,
        Err(e) => {
            let reason = e.to_string();
            rec.event(
                Some(&spec.id),
                "fan_out_failed",
                json!({"kind": e.kind(), "from": from.job, "output": from.output, "error": reason}),
                None,
            )?;
            let actions = sched.fan_out_failed(job, reason);
            record_terminal(rec, sched, jobs, job, None)?;
            return Ok(actions);
        }
    };
    let expanded = spec.expand(&items);
    // A re-run executes an expanded job the run retried did not have, one its scope retries, or
    // one whose need it executes; it takes the others from that run.
    let reused = match &ctx.req.retry {
        None => vec![None; expanded.len()],
        Some(r) => {
            let need_executed = sched.plan().needs[job]
                .iter()
                .any(|&n| sched.job(n).state != JobState::Reused);
            rerun::reuse_expanded(&expanded, need_executed, &r.of_run, &r.prior, &r.scope)
        }
    };
    let new_jobs: Vec<NewJob> = expanded
        .iter()
        .map(|j| NewJob {
            id: j.id.clone(),
            needs: j.needs.clone(),
            optional: j.optional,
            finally: j.finally,
        })
        .collect();
    rec.store.insert_jobs(ctx.run_id, &new_jobs)?;
    for (j, r) in expanded.iter().zip(&reused) {
        if !j.needs.is_empty() {
            rec.needs.insert(j.id.clone(), j.needs.clone());
        }
        rec.sink_state(
            &j.id,
            sink::job_state_report(JobState::Pending, 0, None, None, None, None),
        );
        let path = Home::job_log(ctx.run_dir, &j.id);
        jobs.push(JobRuntime {
            log: JobLog::open(&path).map_err(io_err(format!("open {}", path.display())))?,
            control: None,
            started_ms: 0,
            outputs: r.as_ref().map(|r| r.outputs.clone()).unwrap_or_default(),
            child: None,
            failed_command: None,
            group_slot: None,
            cached_from: None,
            carried_over: r.is_some()
                && ctx
                    .req
                    .retry
                    .as_ref()
                    .is_some_and(|r| r.scope == rerun::RetryScope::Resume),
        });
        let group = ctx.job_groups[job].clone();
        ctx.job_groups.push(group);
    }
    let ids: Vec<&str> = expanded.iter().map(|j| j.id.as_str()).collect();
    let human = format!(
        "{} {} {} (from {}.{})",
        rec.term.dim("⑂"),
        spec.id,
        fanout::expanded_reason(&spec.id, ids.len()),
        from.job,
        from.output
    );
    rec.event(
        Some(&spec.id),
        "fan_out",
        json!({"from": from.job, "output": from.output, "items": items, "jobs": ids}),
        Some(human),
    )?;
    let actions = sched.expand(job, expanded, reused);
    record_terminal(rec, sched, jobs, job, None)?;
    Ok(actions)
}

/// Give the box slot up, queue for it or leave the queue, as core decides from the jobs in
/// flight (`Scheduler::box_slot_step`).
fn settle_box_slot(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &Scheduler,
) -> Result<(), EngineError> {
    let Some(slot) = ctx.box_slot.as_mut() else {
        return Ok(());
    };
    let step = sched.box_slot_step(slot.hold());
    if step == sparkwing_core::gate::BoxSlotStep::Keep {
        return Ok(());
    }
    let ready: Vec<String> = slot
        .deferred
        .iter()
        .map(|&(j, _)| sched.plan().jobs[j].id.clone())
        .collect();
    let tx = ctx.tx.clone();
    slot.apply(step, rec, ready, move |slot| {
        let _ = tx.send(Msg::BoxSlot { slot });
    })
}

/// The run holds its box slot again: start the attempts that waited for it. When the queue
/// failed, they fail with its error.
fn on_box_slot(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    got: Result<crate::box_slots::SlotGuard, String>,
) -> Result<Vec<Action>, EngineError> {
    let Some(slot) = ctx.box_slot.as_mut() else {
        return Ok(Vec::new());
    };
    let deferred = std::mem::take(&mut slot.deferred);
    match got {
        Ok(guard) => {
            if !slot.taken(rec, guard)? {
                slot.deferred = deferred;
                return Ok(Vec::new());
            }
            for (job, attempt) in deferred {
                if sched.job(job).state == JobState::Running {
                    start(ctx, rec, sched, jobs, job, attempt)?;
                }
            }
            Ok(Vec::new())
        }
        Err(e) => {
            slot.failed();
            let mut actions = Vec::new();
            for (job, _) in deferred {
                actions.extend(on_attempt_end(
                    ctx,
                    rec,
                    sched,
                    jobs,
                    job,
                    ProcessEnd::SpawnFailed(format!("box slot: {e}")),
                )?);
            }
            Ok(actions)
        }
    }
}

fn start(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    attempt: u32,
) -> Result<(), EngineError> {
    if let Some(gate) = sched.plan().jobs[job].gate.clone() {
        return start_gate(ctx, rec, sched, jobs, job, gate);
    }
    record_start(ctx, rec, sched, jobs, job, attempt)?;
    let spec = &sched.plan().jobs[job];
    let initial = if sched.is_cancelling() && !spec.finally {
        Control::Stop
    } else {
        Control::Run
    };
    let (control_tx, control_rx) = watch::channel(initial);
    jobs[job].control = Some(control_tx);
    // A job of a concurrency group waits for a slot first (on a task: other jobs go on).
    if let Some(group) = ctx.job_groups[job].clone() {
        let id = spec.id.clone();
        let (key, limit) = (group.key.clone(), group.limit);
        let human = format!(
            "{} {id} waits for a slot of concurrency group {key} (limit {limit})",
            rec.term.dim("…")
        );
        rec.event(
            Some(&id),
            "concurrency_waiting",
            json!({"group": key, "limit": limit}),
            Some(human),
        )?;
        let (tx, root) = (ctx.tx.clone(), ctx.req.home.root.clone());
        // The run's group home may keep jobs' groups too (the cluster API): wait through it.
        if let Some(home) = ctx.req.group_slots.as_ref().and_then(|h| h.for_job(&id)) {
            let cancel_tx = tx.clone();
            let cancelled = move |runs: Vec<String>| {
                let _ = cancel_tx.send(Msg::GroupCancelled {
                    job,
                    key: key.clone(),
                    runs,
                });
            };
            tokio::spawn(async move {
                let (slot, control) =
                    crate::concurrency::shared_job_slot(home, group, cancelled, control_rx).await;
                let _ = tx.send(Msg::GroupSlot {
                    job,
                    attempt,
                    slot,
                    control,
                });
            });
            return Ok(());
        }
        let label = format!("{}/{id}", ctx.run_id);
        let cancel_tx = tx.clone();
        let cancel = move |runs: Vec<String>| {
            let _ = cancel_tx.send(Msg::GroupCancel {
                job,
                key: key.clone(),
                runs,
            });
        };
        let run_id = ctx.run_id.to_string();
        tokio::spawn(async move {
            let (slot, control) =
                crate::concurrency::job_slot(root, group, run_id, label, cancel, control_rx).await;
            let _ = tx.send(Msg::GroupSlot {
                job,
                attempt,
                slot,
                control,
            });
        });
        return Ok(());
    }
    launch(ctx, sched, jobs, job, attempt, control_rx);
    Ok(())
}

/// A job's wait for its group ended: start the attempt holding the slot, or end it (cancelled
/// while waiting, or the group's files failed).
#[allow(clippy::too_many_arguments)]
fn on_group_slot(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    attempt: u32,
    slot: Result<Option<crate::concurrency::JobSlot>, String>,
    control: watch::Receiver<Control>,
) -> Result<Vec<Action>, EngineError> {
    let id = sched.plan().jobs[job].id.clone();
    match slot {
        Ok(Some(slot)) => {
            jobs[job].group_slot = Some(slot);
            rec.event(Some(&id), "concurrency_admitted", json!({}), None)?;
            launch(ctx, sched, jobs, job, attempt, control);
            Ok(Vec::new())
        }
        Ok(None) => on_attempt_end(ctx, rec, sched, jobs, job, ProcessEnd::Stopped),
        Err(e) => on_attempt_end(
            ctx,
            rec,
            sched,
            jobs,
            job,
            ProcessEnd::SpawnFailed(format!("concurrency group: {e}")),
        ),
    }
}

/// Start an attempt's process (or an await job's child run) under `control`.
fn launch(
    ctx: &mut Ctx<'_>,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    attempt: u32,
    control_rx: watch::Receiver<Control>,
) {
    let spec = &sched.plan().jobs[job];
    if let Some(pods) = own_pod(ctx, spec) {
        let a = crate::job_pods::PodAttempt {
            job: spec.id.clone(),
            attempt,
            placement: spec.placement.clone().unwrap_or_default(),
            item: spec.expanded.as_ref().map(|e| e.item.clone()),
            timeout_ms: spec.timeout_ms,
        };
        let tx = ctx.tx.clone();
        tokio::spawn(async move {
            let end = crate::job_pods::run_attempt(pods, a, control_rx).await;
            let _ = tx.send(Msg::PodEnded { job, end });
        });
        return;
    }
    let attempt_spec = match &spec.awaits {
        // An await job: the child pipeline runs as `sparkwing run` (or `pipeline trigger`).
        Some(a) => {
            jobs[job].child = Some(subpipeline::ChildTracker::new(a));
            subpipeline::attempt_spec(
                a,
                &ctx.req.pipeline,
                ctx.run_id,
                &spec.id,
                &ctx.req.repo_root,
                spec.env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                spec.timeout_ms.map(Duration::from_millis),
            )
        }
        None => job_attempt_spec(ctx, sched, jobs, job, attempt),
    };
    let storage = JobStorage::of(
        spec,
        &sched.plan().jobs,
        &ctx.req.repo_root,
        ctx.stores.as_ref(),
    );
    let memo = match &spec.memo {
        Some(m) if attempt == 1 && !ctx.req.no_cache => {
            Some(memo_probe(ctx, sched, jobs, job, m.clone()))
        }
        _ => None,
    };
    spawn_attempt(ctx, job, attempt, attempt_spec, control_rx, storage, memo);
}

/// The home of the job's own pod when it runs in one: a placed job (not an await job) of a run
/// whose runner can start job pods (`RunRequest::job_pods`).
fn own_pod(
    ctx: &Ctx<'_>,
    spec: &sparkwing_core::protocol::JobSpec,
) -> Option<std::sync::Arc<dyn crate::job_pods::JobPods>> {
    match (&ctx.req.job_pods, &spec.placement, &spec.awaits) {
        (Some(pods), Some(_), None) => Some(pods.clone()),
        _ => None,
    }
}

/// An attempt in a job pod ended: its outcome and, on success, the outputs its pod reported, as
/// a local attempt's (the pod recorded its log and storage itself).
fn on_pod_end(
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    end: crate::job_pods::PodAttemptEnd,
) -> Result<Vec<Action>, EngineError> {
    jobs[job].control = None;
    jobs[job].group_slot = None;
    if end.outcome == AttemptOutcome::Success {
        jobs[job].outputs = end.outputs;
    }
    sched.set_outputs(job, jobs[job].outputs.clone());
    let actions = sched.attempt_finished(job, end.outcome);
    if sched.job(job).state.is_terminal() {
        record_terminal(rec, sched, jobs, job, None)?;
    }
    Ok(actions)
}

/// A gate whose needs ended: record it `waiting`, say how to decide it, and wait for the decision
/// on a task of its own (`gates`); a cancel reaches it through its control channel.
fn start_gate(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    spec: sparkwing_core::gate::GateSpec,
) -> Result<(), EngineError> {
    let id = sched.plan().jobs[job].id.clone();
    // A resumed gate has waited since its earlier attempt: its timeout counts from then.
    let now = ctx
        .req
        .retry
        .as_ref()
        .and_then(|r| r.waiting_since.get(&id).copied())
        .unwrap_or_else(now_ms);
    rec.store.gate_waiting(ctx.run_id, &id, now)?;
    jobs[job].started_ms = now;
    let message = spec
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let human = format!(
        "{} {id} waits for approval{message} (sparkwing runs approve --run {} --gate {id})",
        rec.term.yellow("⏸"),
        ctx.run_id
    );
    rec.event(
        Some(&id),
        "gate_waiting",
        json!({"message": spec.message, "timeout_ms": spec.timeout_ms, "on_timeout": spec.on_timeout}),
        Some(human),
    )?;
    rec.sink_state(
        &id,
        sink::job_state_report(JobState::Waiting, 1, Some(now), None, None, None),
    );
    let initial = if sched.is_cancelling() {
        Control::Stop
    } else {
        Control::Run
    };
    let (control_tx, control_rx) = watch::channel(initial);
    jobs[job].control = Some(control_tx);
    let waiting = crate::gates::WaitingGate {
        home_root: ctx.req.home.root.clone(),
        run_id: ctx.run_id.to_string(),
        gate: id,
        spec,
        waiting_since_ms: now,
        relay: ctx.req.gate_relay.clone(),
    };
    let tx = ctx.tx.clone();
    tokio::spawn(async move {
        let end = crate::gates::wait_for_decision(waiting, control_rx).await;
        let _ = tx.send(Msg::GateEnded { job, end });
    });
    Ok(())
}

/// A gate's wait ended: it succeeds or fails as decided (recorded with who, when and why), or is
/// cancelled with the run.
fn on_gate_end(
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    end: crate::gates::GateEnd,
) -> Result<Vec<Action>, EngineError> {
    use crate::gates::GateEnd;
    use sparkwing_core::gate;
    jobs[job].control = None;
    let id = sched.plan().jobs[job].id.clone();
    let (outcome, decided) = match end {
        GateEnd::Decided(d) => (None, Some(d)),
        GateEnd::Stopped => (Some(AttemptOutcome::Killed), None),
        GateEnd::Broken(reason) => (Some(AttemptOutcome::Failed { reason }), None),
    };
    if let Some(d) = &decided {
        let reason = gate::reason(d);
        let mark = match d.decision {
            gate::Decision::Approve => rec.term.green("✓"),
            gate::Decision::Reject => rec.term.red("✗"),
        };
        rec.event(
            Some(&id),
            "gate_decided",
            json!({"decision": d.decision, "by": d.by, "at": d.at_ms, "comment": d.comment, "timed_out": d.timed_out}),
            Some(format!("{mark} {id} {reason}")),
        )?;
    }
    let actions = match (outcome, &decided) {
        (Some(o), _) => sched.attempt_finished(job, o),
        (None, Some(d)) => sched.gate_decided(job, d),
        (None, None) => Vec::new(),
    };
    if sched.job(job).state.is_terminal() {
        record_terminal(rec, sched, jobs, job, None)?;
        // An approval is a success with a reason: who approved it, when the dashboard shows it.
        if let (Some(d), JobState::Success) = (&decided, sched.job(job).state) {
            let reason = rec.masker.mask(&gate::reason(d)).into_owned();
            let now = now_ms();
            rec.store.job_finished(
                &rec.run_id.clone(),
                &id,
                JobState::Success,
                Some(&reason),
                None,
                None,
                now,
            )?;
            rec.sink_state(
                &id,
                sink::job_state_report(
                    JobState::Success,
                    sched.job(job).attempt,
                    Some(jobs[job].started_ms),
                    Some(now),
                    None,
                    Some(&reason),
                ),
            );
        }
    }
    Ok(actions)
}

/// Record (and show) that an attempt starts.
fn record_start(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    attempt: u32,
) -> Result<(), EngineError> {
    let spec = &sched.plan().jobs[job];
    let now = now_ms();
    rec.store.job_started(ctx.run_id, &spec.id, attempt, now)?;
    if attempt == 1 {
        jobs[job].started_ms = now;
    }
    let human = format!(
        "{} {}{}",
        rec.term.dim("▶"),
        spec.id,
        if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        }
    );
    rec.event(
        Some(&spec.id),
        "job_started",
        json!({"attempt": attempt}),
        Some(human),
    )?;
    // A job in its own pod reports its running state itself (a later report of ours could land
    // over its end).
    if own_pod(ctx, spec).is_some() {
        return Ok(());
    }
    rec.sink_state(
        &spec.id,
        sink::job_state_report(
            JobState::Running,
            attempt,
            Some(jobs[job].started_ms),
            None,
            None,
            None,
        ),
    );
    Ok(())
}

/// How an attempt of a job of the pipeline runs: the pipeline binary's `job` command with the
/// protocol's environment (`docs/protocol.md`).
fn job_attempt_spec(
    ctx: &Ctx<'_>,
    sched: &Scheduler,
    jobs: &[JobRuntime],
    job: usize,
    attempt: u32,
) -> AttemptSpec {
    let spec = &sched.plan().jobs[job];
    let mut needs_outputs = Map::new();
    for &n in &sched.plan().needs[job] {
        let outputs: Map<String, Value> = jobs[n]
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        needs_outputs.insert(sched.plan().jobs[n].id.clone(), Value::Object(outputs));
    }
    let outputs_file = ctx.run_dir.join(format!("{}.outputs.json", spec.id));
    let _ = std::fs::remove_file(&outputs_file);
    crate::job_command::attempt_spec(
        crate::job_command::JobCommand {
            binary: &ctx.req.binary.path,
            entrypoint: &ctx.req.info.entrypoint,
            pipeline: &ctx.req.pipeline,
            run_id: ctx.run_id,
            args_json: ctx.args_json,
            repo_root: &ctx.req.repo_root,
            outputs_file: &outputs_file,
            needs_outputs,
        },
        spec,
        attempt,
    )
}

/// Run the attempt on its own task; its lines and its end come back as messages.
fn spawn_attempt(
    ctx: &Ctx<'_>,
    job: usize,
    attempt: u32,
    spec: AttemptSpec,
    control: watch::Receiver<Control>,
    storage: Option<JobStorage>,
    memo: Option<MemoProbe>,
) {
    let tx = ctx.tx.clone();
    let supervisors = ctx.supervisors.clone();
    tokio::spawn(async move {
        // A memoized job: take an earlier result when there is one, else run and say by which
        // input hash the success can be found.
        let mut memo_miss = None;
        if let Some(probe) = memo {
            let found = tokio::task::spawn_blocking(move || {
                let found = probe.probe(now_ms());
                (probe, found)
            })
            .await;
            match found {
                Ok((
                    _,
                    MemoFound::Hit {
                        from_run,
                        outputs,
                        events,
                    },
                )) => {
                    let _ = tx.send(Msg::Cached {
                        job,
                        from_run,
                        outputs,
                        events,
                    });
                    return;
                }
                Ok((probe, MemoFound::Miss { hash })) => {
                    let _ = tx.send(Msg::MemoHash {
                        job,
                        hash: hash.clone(),
                    });
                    memo_miss = Some((probe, hash));
                }
                Err(_) => {}
            }
        }
        // Caches and artifacts before the attempt, on a blocking thread (they copy files).
        let mut restored = Vec::new();
        if let Some(storage) = storage.clone() {
            let (events, ready) = tokio::task::spawn_blocking(move || {
                let mut events = Vec::new();
                let ready = storage.before(&mut events);
                (events, ready)
            })
            .await
            .unwrap_or_else(|e| (Vec::new(), Err(format!("caches and artifacts: {e}"))));
            restored = events.clone();
            let _ = tx.send(Msg::Storage {
                job,
                attempt,
                events,
            });
            if let Err(reason) = ready {
                let _ = tx.send(Msg::AttemptEnded {
                    job,
                    end: ProcessEnd::StorageFailed(reason),
                });
                return;
            }
        }
        let (line_tx, mut line_rx) = mpsc::unbounded_channel::<Line>();
        let forward_tx = tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(line) = line_rx.recv().await {
                if forward_tx.send(Msg::Line { job, attempt, line }).is_err() {
                    return;
                }
            }
        });
        let mut end = process::run_attempt(spec, line_tx, control, supervisors).await;
        let _ = forward.await;
        if let (ProcessEnd::Exited(0), Some(storage)) = (&end, storage) {
            let (events, done) = tokio::task::spawn_blocking(move || {
                let mut events = Vec::new();
                let done = storage.after_success(&restored, &mut events);
                (events, done)
            })
            .await
            .unwrap_or_else(|e| (Vec::new(), Err(format!("caches and artifacts: {e}"))));
            let _ = tx.send(Msg::Storage {
                job,
                attempt,
                events,
            });
            if let Err(reason) = done {
                end = ProcessEnd::StorageFailed(reason);
            }
        }
        if let (ProcessEnd::Exited(0), Some((probe, hash))) = (&end, memo_miss) {
            record_memo_success(probe, hash).await;
        }
        let _ = tx.send(Msg::AttemptEnded { job, end });
    });
}

/// A memoized job that ran succeeded (its artifacts published): record the result in the run's
/// memo store before the job is recorded done. A failure is a warning: the run goes on.
async fn record_memo_success(probe: MemoProbe, hash: String) {
    let job = probe.job.clone();
    let recorded = tokio::task::spawn_blocking(move || probe.record_success(&hash))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = recorded {
        tracing::warn!("memoized job {job}: its result was not recorded for later runs: {e}");
    }
}

fn on_line(
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    attempt: u32,
    line: Line,
) -> Result<(), EngineError> {
    let id = sched.plan().jobs[job].id.clone();
    let mut line = line;
    if let Some(child) = &mut jobs[job].child {
        match child.see(&line) {
            subpipeline::Seen::Log(stream, text) => line = Line { stream, text },
            subpipeline::Seen::Nothing => return Ok(()),
            subpipeline::Seen::Child(run) => {
                let (pipeline, profile) = (child.pipeline.clone(), child.profile.clone());
                rec.store.set_job_child(&rec.run_id.clone(), &id, &run)?;
                let human = format!(
                    "{} {id} awaits pipeline {pipeline} as run {run}",
                    rec.term.dim("↳")
                );
                return rec.event(
                    Some(&id),
                    "child_run",
                    json!({"child_run": run, "pipeline": pipeline, "profile": profile}),
                    Some(human),
                );
            }
        }
        // The child's lines are log lines, never control records of this job.
        let text = rec.masker.mask(&line.text).into_owned();
        return log_line(rec, jobs, job, &id, attempt, line.stream, text);
    }
    if line.stream == process::Stream::Stdout {
        if let Some(rest) = line.text.strip_prefix(CONTROL_PREFIX) {
            if let Ok(v) = serde_json::from_str::<Value>(rest) {
                let kind = v["event"].as_str().unwrap_or("control").to_string();
                let human = match kind.as_str() {
                    "step_start" => Some(format!(
                        "{} {id} › {}",
                        rec.term.dim("·"),
                        v["step"].as_str().unwrap_or("?")
                    )),
                    "step_end"
                        if v["ok"] == Value::Bool(false)
                            && v["continue_on_error"] == Value::Bool(true) =>
                    {
                        Some(format!(
                            "{} {id} › {} failed; the job goes on",
                            rec.term.yellow("·"),
                            v["step"].as_str().unwrap_or("?")
                        ))
                    }
                    "step_end" if v["ok"] == Value::Bool(false) => Some(format!(
                        "{} {id} › {} failed",
                        rec.term.red("·"),
                        v["step"].as_str().unwrap_or("?")
                    )),
                    _ => None,
                };
                if kind == "command_failed" {
                    jobs[job].failed_command = FailedCommand::from_record(&v);
                }
                rec.event(Some(&id), &kind, v, human)?;
                return Ok(());
            }
        }
    }
    let text = rec.masker.mask(&line.text).into_owned();
    log_line(rec, jobs, job, &id, attempt, line.stream, text)
}

/// What a memoized job's probe needs: its declared args and its needs' declared outputs now.
fn memo_probe(
    ctx: &Ctx<'_>,
    sched: &Scheduler,
    jobs: &[JobRuntime],
    job: usize,
    spec: sparkwing_core::memo::MemoSpec,
) -> MemoProbe {
    let plan = sched.plan();
    let job_spec = &plan.jobs[job];
    let args = spec
        .args
        .iter()
        .map(|a| (a.clone(), ctx.req.args.get(a).map(Value::to_string)))
        .collect();
    let outputs = spec
        .outputs
        .iter()
        .map(|o| {
            let value = plan
                .index_of(&o.job)
                .and_then(|n| jobs[n].outputs.get(&o.output).cloned());
            (o.job.clone(), o.output.clone(), value)
        })
        .collect();
    MemoProbe {
        pipeline: ctx.req.pipeline.clone(),
        job: job_spec.id.clone(),
        spec,
        workspace: ctx.req.repo_root.clone(),
        workdir: job_spec.workdir.clone(),
        args,
        outputs,
        publishes: job_spec.publishes.clone(),
        item: job_spec.expanded.as_ref().map(|e| e.item.clone()),
        stores: ctx.stores.clone(),
        memo: match &ctx.req.memo {
            Some(m) => m.clone(),
            None => {
                std::sync::Arc::new(crate::memo_store::LocalMemoStore::new(ctx.req.home.clone()))
            }
        },
        outputs_file: ctx.run_dir.join(format!("{}.outputs.json", job_spec.id)),
        masker: super::recorder::masker_for(ctx.req),
    }
}

/// A memoized job took an earlier run's result: its outputs, its artifacts, state `cached`.
fn on_cached(
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    from_run: String,
    outputs: BTreeMap<String, String>,
    events: Vec<StorageEvent>,
) -> Result<Vec<Action>, EngineError> {
    jobs[job].control = None;
    let id = sched.plan().jobs[job].id.clone();
    on_storage(rec, sched, jobs, job, 1, events)?;
    jobs[job].outputs = outputs;
    sched.set_outputs(job, jobs[job].outputs.clone());
    rec.store
        .set_job_cached_from(&rec.run_id.clone(), &id, &from_run)?;
    jobs[job].cached_from = Some(from_run.clone());
    let actions = sched.attempt_finished(
        job,
        AttemptOutcome::Cached {
            reason: format!("cached from run {from_run}"),
        },
    );
    record_terminal(rec, sched, jobs, job, None)?;
    Ok(actions)
}

/// Record what happened to a job's caches and artifacts: the store's records, an event, and a
/// line in the job's log.
fn on_storage(
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    attempt: u32,
    events: Vec<StorageEvent>,
) -> Result<(), EngineError> {
    let id = sched.plan().jobs[job].id.clone();
    let run_id = rec.run_id.clone();
    for ev in events {
        match &ev {
            StorageEvent::CacheRestored {
                name,
                key,
                outcome,
                restored_key,
                size_bytes,
                ..
            } => rec.store.record_cache_restore(
                &run_id,
                &crate::store::JobCacheRecord {
                    job_id: id.clone(),
                    name: name.clone(),
                    key: key.clone(),
                    outcome: outcome.to_string(),
                    restored_key: restored_key.clone(),
                    saved: None,
                    size_bytes: *size_bytes,
                },
            )?,
            StorageEvent::CacheSaved {
                name,
                saved,
                size_bytes,
                ..
            } => rec
                .store
                .record_cache_save(&run_id, &id, name, saved, *size_bytes)?,
            StorageEvent::ArtifactPublished {
                name,
                path,
                size_bytes,
                files,
            } => rec.store.record_artifact(
                &run_id,
                &crate::store::ArtifactRecord {
                    job_id: id.clone(),
                    name: name.clone(),
                    path: path.clone(),
                    size_bytes: *size_bytes,
                    files: *files,
                    created_at: now_ms(),
                },
            )?,
            StorageEvent::ArtifactConsumed { .. } => {}
        }
        rec.event(Some(&id), ev.kind(), ev.payload(), None)?;
        let line = rec.masker.mask(&ev.log_line()).into_owned();
        log_line(rec, jobs, job, &id, attempt, process::Stream::Stdout, line)?;
    }
    Ok(())
}

/// Append one (masked) log line to a job's log, the terminal and the sink.
fn log_line(
    rec: &mut Recorder,
    jobs: &mut [JobRuntime],
    job: usize,
    id: &str,
    attempt: u32,
    stream: process::Stream,
    text: String,
) -> Result<(), EngineError> {
    let ts = now_ms();
    let seq = jobs[job]
        .log
        .append(ts, attempt, stream.as_str(), &text)
        .map_err(io_err(format!("write log of job {id}")))?;
    rec.term.log_line(id, job, ts, seq, stream.as_str(), &text);
    if let Some(s) = &rec.sink {
        s.log_line(SinkLine {
            job: id.to_string(),
            seq,
            ts_ms: ts,
            stream: stream.as_str().to_string(),
            line: text,
        });
    }
    Ok(())
}

fn on_attempt_end(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    end: ProcessEnd,
) -> Result<Vec<Action>, EngineError> {
    jobs[job].control = None;
    // The group's slot is held for one attempt: a retry queues again.
    jobs[job].group_slot = None;
    let spec = sched.plan().jobs[job].clone();
    let failed_command = jobs[job].failed_command.take();
    let (mut outcome, exit_code) = match &end {
        ProcessEnd::Exited(0) => (AttemptOutcome::Success, Some(0)),
        // The job failed because a command did: record the command's own status.
        ProcessEnd::Exited(_) if failed_command.is_some() => {
            let (reason, code) = failed_command
                .map(FailedCommand::reason)
                .unwrap_or_default();
            (AttemptOutcome::Failed { reason }, code)
        }
        ProcessEnd::Exited(c) => (
            AttemptOutcome::Failed {
                reason: format!("exit code {c}"),
            },
            Some(*c),
        ),
        ProcessEnd::Signalled(s) => (
            AttemptOutcome::Failed {
                reason: format!("killed by signal {s}"),
            },
            None,
        ),
        ProcessEnd::TimedOut => (
            AttemptOutcome::Failed {
                reason: format!(
                    "timeout after {}",
                    human_duration(spec.timeout_ms.unwrap_or(0) as i64)
                ),
            },
            None,
        ),
        ProcessEnd::Stopped => (AttemptOutcome::Killed, None),
        ProcessEnd::SpawnFailed(m) | ProcessEnd::StorageFailed(m) => {
            (AttemptOutcome::Failed { reason: m.clone() }, None)
        }
    };
    // An await job fails with its child's reason.
    if let (AttemptOutcome::Failed { reason }, Some(child)) = (&mut outcome, jobs[job].child.take())
    {
        if let Some(r) = child.reason(&end) {
            *reason = r;
        }
    }
    // Outputs may hold secrets: read them into memory, then remove the file (only the masked
    // copy is stored).
    let path = ctx.run_dir.join(format!("{}.outputs.json", spec.id));
    let outputs_text = std::fs::read_to_string(&path).ok();
    let _ = std::fs::remove_file(&path);
    if outcome == AttemptOutcome::Success {
        if let Some(text) = outputs_text {
            if matches!(serde_json::from_str::<Value>(&text), Ok(Value::Object(_))) {
                jobs[job].outputs = crate::memo_probe::read_outputs(&text);
            }
        }
    }
    // Conditions of the jobs that need this one read its outputs.
    sched.set_outputs(job, jobs[job].outputs.clone());
    let actions = sched.attempt_finished(job, outcome);
    if sched.job(job).state.is_terminal() {
        record_terminal(rec, sched, jobs, job, exit_code)?;
    }
    Ok(actions)
}

/// Store and print a job's terminal state.
fn record_terminal(
    rec: &mut Recorder,
    sched: &Scheduler,
    jobs: &mut [JobRuntime],
    job: usize,
    exit_code: Option<i32>,
) -> Result<(), EngineError> {
    let spec = &sched.plan().jobs[job];
    let progress = sched.job(job);
    // The attempt its row holds: a template (fan-out or matrix) runs nothing, so no attempt
    // started and its row keeps 0, although core's scheduler counts a fan-out's expansion as
    // attempt 1. The event and the runner's report to the API say the same as the row.
    let attempt = if spec.is_template() {
        0
    } else {
        progress.attempt
    };
    let now = now_ms();
    // Masked once: the store and the sink get the same values.
    let masked: Option<BTreeMap<String, String>> = (!jobs[job].outputs.is_empty()).then(|| {
        jobs[job]
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), rec.masker.mask(v).into_owned()))
            .collect()
    });
    let outputs = masked
        .as_ref()
        .map(|m| serde_json::to_string(m).unwrap_or_default());
    let reason = progress
        .reason
        .as_deref()
        .map(|r| rec.masker.mask(r).into_owned());
    rec.store.job_finished(
        &rec.run_id.clone(),
        &spec.id,
        progress.state,
        reason.as_deref(),
        exit_code,
        outputs.as_deref(),
        now,
    )?;
    let took = if jobs[job].started_ms > 0 {
        human_duration(now - jobs[job].started_ms)
    } else {
        String::new()
    };
    let why = reason.clone().map(|r| format!(": {r}")).unwrap_or_default();
    let optional = if spec.optional && progress.state == JobState::Failed {
        " (optional)"
    } else {
        ""
    };
    let human = match progress.state {
        JobState::Success if spec.is_template() => format!(
            "{} {} {}",
            rec.term.green("✓"),
            spec.id,
            reason.as_deref().unwrap_or_default()
        ),
        JobState::Success => format!(
            "{} {} {}",
            rec.term.green("✓"),
            spec.id,
            rec.term.dim(&took)
        ),
        JobState::Failed => format!(
            "{} {}{optional} {}{why}",
            rec.term.red("✗"),
            spec.id,
            rec.term.dim(&took)
        ),
        JobState::Skipped => format!("{} {} skipped{why}", rec.term.dim("○"), spec.id),
        JobState::Reused | JobState::Cached => format!(
            "{} {} {}",
            rec.term.dim("↺"),
            spec.id,
            reason.as_deref().unwrap_or(progress.state.as_str())
        ),
        _ => format!(
            "{} {} {}{why}",
            rec.term.yellow("■"),
            spec.id,
            progress.state
        ),
    };
    let mut report = sink::job_state_report(
        progress.state,
        attempt,
        Some(jobs[job].started_ms),
        Some(now),
        exit_code,
        reason.as_deref(),
    );
    report.outputs = masked;
    report.cached_from = jobs[job].cached_from.clone();
    if !jobs[job].carried_over {
        rec.sink_state(&spec.id, report);
    }
    let kind = match progress.state {
        JobState::Success => "job_succeeded",
        JobState::Failed => "job_failed",
        JobState::Skipped => "job_skipped",
        JobState::Reused => "job_reused",
        JobState::Cached => "job_cached",
        _ => "job_cancelled",
    };
    rec.event(
        Some(&spec.id),
        kind,
        json!({"state": progress.state.as_str(), "reason": reason, "attempt": attempt, "exit_code": exit_code}),
        Some(human),
    )
}

fn on_interrupt(
    ctx: &mut Ctx<'_>,
    rec: &mut Recorder,
    sched: &mut Scheduler,
    jobs: &mut Vec<JobRuntime>,
    stop: Interrupt,
) -> Result<(), EngineError> {
    let signal_name = stop.signal;
    if !stop.hard {
        let (stop, actions) = sched.cancel();
        let human = format!(
            "{} {signal_name}: cancelling the run (running jobs get SIGTERM; finally jobs still run). Press Ctrl-C again to kill at once.",
            rec.term.yellow("■")
        );
        eprintln!("{human}");
        rec.event(None, "run_cancelling", json!({"signal": signal_name}), None)?;
        let mut never_started = Vec::new();
        for j in stop {
            if let Some(c) = &jobs[j].control {
                let _ = c.send(Control::Stop);
            }
            // An attempt still waiting for the run's box slot ends without starting.
            if let Some(slot) = &mut ctx.box_slot {
                if let Some(pos) = slot.deferred.iter().position(|&(d, _)| d == j) {
                    slot.deferred.remove(pos);
                    never_started.push(j);
                }
            }
        }
        apply(ctx, rec, sched, jobs, actions)?;
        for j in never_started {
            let actions = on_attempt_end(ctx, rec, sched, jobs, j, ProcessEnd::Stopped)?;
            apply(ctx, rec, sched, jobs, actions)?;
        }
    } else {
        eprintln!(
            "{} second interrupt: killing every job now",
            rec.term.red("■")
        );
        // A local sub-pipeline's jobs are in process groups of their own: its `sparkwing run`
        // kills them (its own second interrupt) before this one kills it.
        subpipeline::kill_local_children(
            &rec.store,
            jobs.iter().filter_map(|rt| rt.child.as_ref()),
        );
        // Kill here, synchronously: the run ends right after this, and the attempts' tasks may
        // never get to act on their Kill message.
        process::kill_all(&ctx.supervisors);
        let now = now_ms();
        for (j, rt) in jobs.iter_mut().enumerate() {
            if let Some(c) = &rt.control {
                let _ = c.send(Control::Kill);
            }
            let state = sched.job(j).state;
            if !state.is_terminal() {
                let id = sched.plan().jobs[j].id.clone();
                rec.store.job_finished(
                    ctx.run_id,
                    &id,
                    JobState::Cancelled,
                    Some("killed"),
                    None,
                    None,
                    now,
                )?;
                rec.sink_state(
                    &id,
                    sink::job_state_report(
                        JobState::Cancelled,
                        sched.job(j).attempt,
                        Some(rt.started_ms),
                        Some(now),
                        None,
                        Some("killed"),
                    ),
                );
            }
        }
        rec.event(None, "run_killed", json!({"signal": signal_name}), None)?;
    }
    Ok(())
}
