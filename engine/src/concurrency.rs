//! Concurrency groups of local runs: across every process on this host (per `SPARKWING_HOME`),
//! a group's slots and FIFO queue are box slots in `concurrency/<group>/` labelled with run ids
//! (`box_slots`), so a holder killed by `kill -9` frees its slot at once. Core decides each step
//! (`sparkwing_core::concurrency`); this module takes the slot, waits, or cancels older runs.

use super::interrupts::Interrupt;
use super::recorder::Recorder;
use super::{now_ms, EngineError};
use crate::box_slots::{BoxSlots, SlotGuard};
use crate::store::{RunConcurrency, Store};
use serde_json::json;
use sparkwing_core::concurrency::{
    job_step, step, waiting_line, ConcurrencySpec, GroupStep, GroupView,
};
use sparkwing_core::RunPhase;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a queued run looks at its group again; a freed slot is taken within about this long.
const GROUP_POLL: Duration = Duration::from_millis(10);
/// How often the waiting line repeats on stderr.
const WAITING_LINE_EVERY: Duration = Duration::from_secs(5);

/// The slots and queue of group `key`.
fn slots(home_root: &Path, key: &str, limit: u32, run_id: Option<&str>) -> BoxSlots {
    BoxSlots::at(
        home_root.join("concurrency").join(key),
        limit,
        run_id.map(str::to_string),
    )
}

/// The group as run `run_id` sees it now, from outside (`runs status`): its holders and the runs
/// queued ahead of that run.
pub fn view(home_root: &Path, key: &str, limit: u32, run_id: &str) -> GroupView {
    let s = slots(home_root, key, limit, None);
    let mut ahead = s.waiting_before(None);
    if let Some(mine) = ahead.iter().position(|r| r == run_id) {
        ahead.truncate(mine);
    }
    GroupView {
        limit,
        holders: s.holders(),
        ahead,
    }
}

/// How a run's entry into its group ended.
pub(crate) enum Entered {
    /// The run holds a slot until this is dropped (the run's end).
    Holding(SlotGuard),
    /// The run was cancelled while it waited.
    Cancelled,
}

/// Take a slot of the run's group, waiting in FIFO order (or cancelling the older runs, with
/// `cancel_in_progress`); the run is `queued` while it waits. A stop while waiting cancels it.
pub(crate) async fn enter(
    rec: &mut Recorder,
    home_root: &Path,
    spec: &ConcurrencySpec,
    key: &str,
    stops: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<Entered, EngineError> {
    let run_id = rec.run_id.clone();
    let group = slots(home_root, key, spec.limit, Some(&run_id));
    let record = |store: &mut Store, state: &str| {
        store.set_run_concurrency(
            &run_id,
            &RunConcurrency {
                group: key.to_string(),
                limit: spec.limit,
                cancel_in_progress: spec.cancel_in_progress,
                state: state.to_string(),
                since: now_ms(),
            },
        )
    };
    if let Some(slot) = group.try_acquire_now()? {
        record(&mut rec.store, "holding")?;
        rec.event(
            None,
            "concurrency_admitted",
            json!({"group": key, "limit": spec.limit, "waited_ms": 0}),
            None,
        )?;
        return Ok(Entered::Holding(slot));
    }
    let mut ticket = Some(group.enqueue()?);
    let number = ticket.as_ref().map(|t| t.number);
    record(&mut rec.store, "waiting")?;
    rec.store
        .set_run_status(&run_id, RunPhase::Pending, now_ms(), None, None)?;
    let waited_from = std::time::Instant::now();
    let mut asked: Vec<String> = Vec::new();
    let mut last_line = String::new();
    let mut next_line = tokio::time::Instant::now();
    loop {
        let view = GroupView {
            limit: spec.limit,
            holders: group.holders(),
            ahead: group.waiting_before(number),
        };
        match step(&view, spec.cancel_in_progress, &asked) {
            GroupStep::Take => {
                if let Some(slot) = group.try_acquire(&mut ticket)? {
                    record(&mut rec.store, "holding")?;
                    rec.store
                        .set_run_status(&run_id, RunPhase::Running, now_ms(), None, None)?;
                    rec.event(
                        None,
                        "concurrency_admitted",
                        json!({"group": key, "limit": spec.limit, "waited_ms": waited_from.elapsed().as_millis() as u64}),
                        None,
                    )?;
                    return Ok(Entered::Holding(slot));
                }
            }
            GroupStep::Cancel(older) => {
                for other in older {
                    cancel_older(rec, key, &other, None)?;
                    asked.push(other);
                }
            }
            GroupStep::Wait => {}
        }
        let line = waiting_line(key, &view);
        if line != last_line || tokio::time::Instant::now() >= next_line {
            rec.event(
                None,
                "concurrency_waiting",
                json!({"group": key, "limit": spec.limit, "holders": view.holders, "ahead": view.ahead}),
                None,
            )?;
            eprintln!("{line}");
            last_line = line;
            next_line = tokio::time::Instant::now() + WAITING_LINE_EVERY;
        }
        let stopped = tokio::select! {
            _ = tokio::time::sleep(GROUP_POLL) => false,
            s = stops.recv() => s.is_some(),
        };
        if stopped {
            // Leave the queue before recording, so the next run is not held up.
            ticket.take();
            return Ok(Entered::Cancelled);
        }
    }
}

/// Ask an older run of the group to cancel, as `sparkwing runs cancel` does (SIGTERM to its live
/// process on this host); a run already gone or finished needs nothing. `job`: the job whose
/// group it is (none for the run's own group), for the event recorded on this run.
pub(crate) fn cancel_older(
    rec: &mut Recorder,
    key: &str,
    other: &str,
    job: Option<&str>,
) -> Result<(), EngineError> {
    let Some(run) = rec.store.get_run(other)? else {
        return Ok(());
    };
    if run.status.is_terminal() || !crate::abandoned::is_alive(&run) {
        return Ok(());
    }
    let by = format!("concurrency group {key} (run {})", rec.run_id);
    rec.store.append_event(
        &run.id,
        None,
        "cancel_requested",
        &json!({"by": by, "pid": std::process::id()}),
        now_ms(),
    )?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let human = format!(
        "cancelling run {} of concurrency group {key} (cancel_in_progress)",
        run.id
    );
    rec.event(
        job,
        "concurrency_cancelled_older",
        json!({"group": key, "run": run.id}),
        Some(human),
    )
}

/// A job's concurrency group: its key, limit and whether it cancels older runs.
#[derive(Debug, Clone)]
pub(crate) struct JobGroup {
    pub(crate) key: String,
    pub(crate) limit: u32,
    pub(crate) cancel_in_progress: bool,
}

/// Wait for a slot of a job's group (labelled `RUN/JOB`), in FIFO order, until the run's control
/// asks to stop (`Ok(None)`). With `cancel_in_progress` the older runs of the group (`job_step`)
/// are handed to `cancel`, each once, and their slots waited for. The slot is held until the
/// guard is dropped (the attempt's end). Returns the control channel for the attempt that
/// follows.
pub(crate) async fn job_slot(
    home_root: std::path::PathBuf,
    group: JobGroup,
    run_id: String,
    label: String,
    cancel: impl Fn(Vec<String>) + Send + 'static,
    mut control: tokio::sync::watch::Receiver<crate::process::Control>,
) -> (
    Result<Option<SlotGuard>, String>,
    tokio::sync::watch::Receiver<crate::process::Control>,
) {
    let JobGroup {
        key,
        limit,
        cancel_in_progress,
    } = group;
    let group = slots(&home_root, &key, limit, Some(&label));
    let mut ticket = None;
    let mut asked: Vec<String> = Vec::new();
    loop {
        if *control.borrow() != crate::process::Control::Run {
            return (Ok(None), control);
        }
        let got = match &ticket {
            None => group.try_acquire_now(),
            Some(_) => {
                let number = ticket.as_ref().map(|t: &crate::box_slots::Ticket| t.number);
                let view = GroupView {
                    limit,
                    holders: group.holders(),
                    ahead: group.waiting_before(number),
                };
                match job_step(&view, cancel_in_progress, &run_id, &asked) {
                    GroupStep::Take => group.try_acquire(&mut ticket),
                    GroupStep::Cancel(older) => {
                        asked.extend(older.iter().cloned());
                        cancel(older);
                        Ok(None)
                    }
                    GroupStep::Wait => Ok(None),
                }
            }
        };
        match got {
            Ok(Some(slot)) => return (Ok(Some(slot)), control),
            Ok(None) => {}
            Err(e) => return (Err(e.to_string()), control),
        }
        if ticket.is_none() {
            match group.enqueue() {
                Ok(t) => ticket = Some(t),
                Err(e) => return (Err(e.to_string()), control),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(GROUP_POLL) => {}
            changed = control.changed() => {
                if changed.is_err() {
                    return (Ok(None), control);
                }
            }
        }
    }
}
