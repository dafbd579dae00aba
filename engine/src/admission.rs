//! Admission and recording: everything before the plan (box slots, the run row, `run.lock`).

use super::interrupts::Interrupts;
use super::output::Terminal;
use super::recorder::{finish, masker_for, warn_unmasked, Recorder};
use super::{io_err, new_run_id, now_ms, EngineError, RunRequest};
use crate::box_slots::{BoxSlots, SlotGuard, Ticket};
use crate::exit::ExitCode;
use crate::home::Home;
use crate::store::{NewRun, Store};
use serde_json::{json, Value};
use sparkwing_core::{JobState, RunPhase};
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

/// A run that is recorded and admitted: what `drive` needs to execute it.
pub struct Admitted {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub(super) rec: Recorder,
    pub(super) created: i64,
    /// The run's box slot (with `--sw-box-slots`): held from admission; the process executor's
    /// engine gives it up while only gates wait (`run_slot`), another executor holds it to the end.
    pub(super) box_slot: Option<HeldBoxSlot>,
    /// Held by the process that owns the run (the host side); a runner container has none.
    pub(super) _run_lock: Option<File>,
    pub(super) interrupts: Interrupts,
}

impl Admitted {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn run_dir(&self) -> &std::path::Path {
        &self.run_dir
    }

    /// The run's interrupts (the host side of a run driven by another executor reads them).
    pub fn interrupts(&mut self) -> &mut Interrupts {
        &mut self.interrupts
    }

    /// The run's store (the same SQLite file a runner writes through its bind mount).
    pub fn store(&mut self) -> &mut Store {
        &mut self.rec.store
    }

    /// End the run from the outside (its runner could not finish it: OOM, killed, never
    /// started): jobs not yet finished are recorded `cancelled`, then the run, printed like the
    /// engine prints its own end.
    pub fn finish_from_outside(
        &mut self,
        status: RunPhase,
        reason: String,
    ) -> Result<ExitCode, EngineError> {
        let now = now_ms();
        let run_id = self.run_id.clone();
        for job in self.rec.store.jobs(&run_id)? {
            if !job.state.is_terminal() {
                self.rec.store.job_finished(
                    &run_id,
                    &job.job_id,
                    JobState::Cancelled,
                    Some(&reason),
                    None,
                    None,
                    now,
                )?;
            }
        }
        finish(&mut self.rec, status, Some(reason), self.created)
    }
}

/// The outcome of admission: admitted, or already finished (declined or cancelled while queued).
pub enum Admission {
    Admitted(Box<Admitted>),
    Done(ExitCode),
}

/// A box slot a run holds, with the slots it came from (to queue for one again).
pub(crate) struct HeldBoxSlot {
    pub(crate) slots: BoxSlots,
    pub(crate) guard: SlotGuard,
}

/// Admission through box slots (`--sw-box-slots`).
pub struct BoxGate {
    pub slots: BoxSlots,
    /// Fail at once instead of queueing when every slot is taken.
    pub no_wait: bool,
}

/// How often the stderr line repeats while a run waits for a box slot.
pub(crate) const WAITING_LINE_EVERY: Duration = Duration::from_secs(5);
/// How often a queued run looks for a free slot; a freed slot is taken within about this long.
pub(crate) const SLOT_POLL: Duration = Duration::from_millis(10);

/// The line a run waiting for a box slot prints on stderr.
pub(crate) fn waiting_line(slots: &BoxSlots) -> String {
    format!(
        "waiting for box slot ({} active, max {})",
        slots.active(),
        slots.max()
    )
}

/// Wait in the box-slot queue until `ticket` is first in line and a slot is free (the ticket is
/// then used up), printing `waiting for box slot (N active, max M)` on stderr at once and every
/// 5 s. Dropping the future while it waits leaves the caller's ticket in place.
async fn wait_in_line(
    slots: &BoxSlots,
    ticket: &mut Option<Ticket>,
) -> Result<SlotGuard, crate::box_slots::BoxSlotError> {
    let mut next_line = tokio::time::Instant::now();
    loop {
        if let Some(g) = slots.try_acquire(ticket)? {
            return Ok(g);
        }
        if tokio::time::Instant::now() >= next_line {
            eprintln!("{}", waiting_line(slots));
            next_line += WAITING_LINE_EVERY;
        }
        tokio::time::sleep(SLOT_POLL).await;
    }
}

/// The run's lock: held for the life of this process, so readers can tell a live run from one
/// whose process died (they can take the lock only in the second case).
fn take_run_lock(run_dir: &std::path::Path) -> Result<File, EngineError> {
    let path = Home::run_lock(run_dir);
    let f = File::create(&path).map_err(io_err(format!("create {}", path.display())))?;
    f.lock()
        .map_err(io_err(format!("lock {}", path.display())))?;
    Ok(f)
}

/// The OS user running this process (`$USER`, `$LOGNAME`, else the passwd entry).
pub fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Admission (box slots) and recording: everything before the plan.
pub async fn admit(req: &RunRequest) -> Result<Admission, EngineError> {
    let mut interrupts = Interrupts::install().map_err(io_err("install signal handlers"))?;
    // Admission first: a run that may not start is not recorded at all with --sw-no-wait.
    let mut slot: Option<SlotGuard> = None;
    let mut ticket: Option<Ticket> = None;
    if let Some(gate) = &req.box_slots {
        match gate.slots.try_acquire_now()? {
            Some(g) => slot = Some(g),
            None if gate.no_wait => {
                eprintln!("error: box slots full (max={})", gate.slots.max());
                return Ok(Admission::Done(ExitCode::BoxSlotsFull));
            }
            None => ticket = Some(gate.slots.enqueue()?),
        }
    }
    let run_id = new_run_id();
    let run_dir = req.home.run_dir(&run_id);
    std::fs::create_dir_all(&run_dir).map_err(io_err(format!("create {}", run_dir.display())))?;
    let run_lock = take_run_lock(&run_dir)?;
    let masker = masker_for(req);
    let redacted = sparkwing_core::args::redacted(&req.info.args, &req.args);
    let git = crate::git::read(&req.repo_root);
    let mut store = Store::open(&req.home.root)?;
    let created = now_ms();
    store.create_run(&NewRun {
        id: run_id.clone(),
        pipeline: req.pipeline.clone(),
        entrypoint: req.info.entrypoint.clone(),
        status: if ticket.is_some() {
            RunPhase::Pending
        } else {
            RunPhase::Running
        },
        args_json: Value::Object(redacted.clone()).to_string(),
        repo_root: req.repo_root.to_string_lossy().into_owned(),
        git_branch: git.branch,
        git_commit: git.commit,
        host: host_name(),
        user: user_name(),
        pid: std::process::id() as i64,
        runner: req.runner.clone(),
        created_at: created,
        started_at: if ticket.is_some() {
            None
        } else {
            Some(created)
        },
        finished_at: None,
        exit_code: None,
        error: None,
        log_dir: run_dir.to_string_lossy().into_owned(),
        retry_of: req.retry.as_ref().map(|r| r.of_run.clone()),
    })?;
    let mut rec = Recorder {
        store,
        run_id: run_id.clone(),
        masker,
        term: Terminal::new(req.format, &run_id),
        sink: req.sink.clone(),
        gates: Default::default(),
        needs: Default::default(),
    };
    let start_line = format!(
        "{} {} {}",
        rec.term.dim("run"),
        run_id,
        rec.term
            .dim(&format!("({}, binary {})", req.pipeline, req.binary.source))
    );
    rec.event(
        None,
        "run_started",
        json!({"pipeline": req.pipeline, "args": redacted, "binary": req.binary.source, "binary_key": req.binary.key, "runner": req.runner, "log_dir": run_dir, "retry_of": req.retry.as_ref().map(|r| &r.of_run)}),
        Some(start_line),
    )?;
    warn_unmasked(&mut rec, req)?;

    if let (Some(gate), true) = (&req.box_slots, ticket.is_some()) {
        let waited_from = std::time::Instant::now();
        rec.event(
            None,
            "queued",
            json!({"max": gate.slots.max(), "active": gate.slots.active()}),
            None,
        )?;
        let got = tokio::select! {
            g = wait_in_line(&gate.slots, &mut ticket) => Some(g?),
            _ = interrupts.next() => None,
        };
        match got {
            Some(g) => slot = Some(g),
            None => {
                // Leave the queue before recording, so the next run is not held up.
                ticket.take();
                let code = finish(
                    &mut rec,
                    RunPhase::Cancelled,
                    Some("cancelled while waiting for a box slot".into()),
                    created,
                )?;
                return Ok(Admission::Done(code));
            }
        }
        let now = now_ms();
        rec.store
            .set_run_status(&run_id, RunPhase::Running, now, None, None)?;
        rec.event(None, "admitted", json!({"waited_ms": waited_from.elapsed().as_millis() as u64, "slot": slot.as_ref().map(|g| g.index)}), None)?;
    }

    Ok(Admission::Admitted(Box::new(Admitted {
        run_id,
        run_dir,
        rec,
        created,
        box_slot: match (&req.box_slots, slot) {
            (Some(gate), Some(guard)) => Some(HeldBoxSlot {
                slots: gate.slots.clone(),
                guard,
            }),
            _ => None,
        },
        _run_lock: Some(run_lock),
        interrupts,
    })))
}
