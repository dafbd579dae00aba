//! A local run's box slot while its jobs run (`docs/box-slots.md`): given up while nothing but
//! approval gates waits, queued for again (FIFO, like a new run) once a job is ready to start.
//! Core decides each step (`sparkwing_core::gate::box_slot_step`, through the scheduler); this
//! module holds the slot, waits for it on a task of its own and records what happens.

use super::admission::{waiting_line, HeldBoxSlot, SLOT_POLL, WAITING_LINE_EVERY};
use super::recorder::Recorder;
use super::EngineError;
use crate::box_slots::{BoxSlotError, BoxSlots, SlotGuard, Ticket};
use serde_json::json;
use sparkwing_core::gate::{BoxSlotHold, BoxSlotStep};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The run's place in the queue, shared with the task that waits: leaving it (dropping the
/// ticket) happens at once, whatever the task is doing.
#[derive(Default)]
struct Place {
    ticket: Option<Ticket>,
    left: bool,
}

/// The wait for a slot; dropping it leaves the queue and stops the task.
struct Waiting {
    place: Arc<Mutex<Place>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut place = self.place.lock().unwrap_or_else(|e| e.into_inner());
        place.left = true;
        place.ticket.take();
        self.task.abort();
    }
}

/// One look at the queue: take a slot when free and first in line, else (first time) join it.
/// `None` once the run left the queue.
fn look(slots: &BoxSlots, place: &Mutex<Place>) -> Option<Result<Option<SlotGuard>, BoxSlotError>> {
    let mut place = place.lock().unwrap_or_else(|e| e.into_inner());
    if place.left {
        return None;
    }
    let mut take = || {
        if place.ticket.is_none() {
            if let Some(g) = slots.try_acquire_now()? {
                return Ok(Some(g));
            }
            place.ticket = Some(slots.enqueue()?);
        }
        slots.try_acquire(&mut place.ticket)
    };
    Some(take())
}

/// The run's box slot and the job attempts waiting for it.
pub(crate) struct RunSlot {
    slots: BoxSlots,
    guard: Option<SlotGuard>,
    hold: BoxSlotHold,
    waiting: Option<Waiting>,
    queued_at: Option<Instant>,
    /// Job attempts (job, attempt) ready to start while the run holds no slot, in the order they
    /// became ready; they start once it holds one again.
    pub(crate) deferred: Vec<(usize, u32)>,
}

impl RunSlot {
    pub(crate) fn new(held: HeldBoxSlot) -> RunSlot {
        RunSlot {
            slots: held.slots,
            guard: Some(held.guard),
            hold: BoxSlotHold::Held,
            waiting: None,
            queued_at: None,
            deferred: Vec::new(),
        }
    }

    /// Where the run stands with its slot (what core's decision starts from).
    pub(crate) fn hold(&self) -> BoxSlotHold {
        self.hold
    }

    /// Whether a job may start now.
    pub(crate) fn is_held(&self) -> bool {
        self.guard.is_some()
    }

    /// Carry out core's step. `jobs` are the ids of the attempts waiting to start (for the
    /// record); `deliver` gets the slot once the queue gives one (or the queue's error).
    pub(crate) fn apply(
        &mut self,
        step: BoxSlotStep,
        rec: &mut Recorder,
        jobs: Vec<String>,
        deliver: impl FnOnce(Result<SlotGuard, String>) + Send + 'static,
    ) -> Result<(), EngineError> {
        match step {
            BoxSlotStep::Keep => Ok(()),
            BoxSlotStep::Release { reason } => {
                let index = self.guard.take().map(|g| g.index);
                self.hold = BoxSlotHold::Released;
                let human = format!(
                    "{} box slot released while {reason}; the run queues for one again when a job is ready",
                    rec.term.yellow("⏸")
                );
                rec.event(
                    None,
                    "box_slot_released",
                    json!({"reason": reason, "slot": index}),
                    Some(human),
                )
            }
            BoxSlotStep::Queue => {
                self.hold = BoxSlotHold::Queued;
                self.queued_at = Some(Instant::now());
                let human = format!(
                    "{} {} ready: waiting for a box slot ({} active, max {})",
                    rec.term.dim("…"),
                    jobs.join(", "),
                    self.slots.active(),
                    self.slots.max()
                );
                rec.event(
                    None,
                    "queued",
                    json!({"max": self.slots.max(), "active": self.slots.active(), "jobs": jobs}),
                    Some(human),
                )?;
                let slots = self.slots.clone();
                let place = Arc::new(Mutex::new(Place::default()));
                let shared = place.clone();
                let task = tokio::spawn(async move {
                    let mut next_line = tokio::time::Instant::now();
                    let got = loop {
                        match look(&slots, &shared) {
                            None => return,
                            Some(Ok(Some(g))) => break Ok(g),
                            Some(Ok(None)) => {}
                            Some(Err(e)) => break Err(e.to_string()),
                        }
                        if tokio::time::Instant::now() >= next_line {
                            eprintln!("{}", waiting_line(&slots));
                            next_line += WAITING_LINE_EVERY;
                        }
                        tokio::time::sleep(SLOT_POLL).await;
                    };
                    deliver(got);
                });
                self.waiting = Some(Waiting { place, task });
                Ok(())
            }
            BoxSlotStep::LeaveQueue => {
                self.waiting = None;
                self.queued_at = None;
                self.hold = BoxSlotHold::Released;
                Ok(())
            }
        }
    }

    /// The queue gave a slot: hold it and record `admitted`. False (the slot is dropped) when the
    /// run left the queue meanwhile.
    pub(crate) fn taken(
        &mut self,
        rec: &mut Recorder,
        slot: SlotGuard,
    ) -> Result<bool, EngineError> {
        if self.hold != BoxSlotHold::Queued {
            return Ok(false);
        }
        self.waiting = None;
        let waited_ms = self
            .queued_at
            .take()
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or(0);
        let index = slot.index;
        self.guard = Some(slot);
        self.hold = BoxSlotHold::Held;
        rec.event(
            None,
            "admitted",
            json!({"waited_ms": waited_ms, "slot": index}),
            None,
        )?;
        Ok(true)
    }

    /// The queue failed (its files): the run holds no slot and waits for none.
    pub(crate) fn failed(&mut self) {
        self.waiting = None;
        self.queued_at = None;
        self.hold = BoxSlotHold::Released;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_joins_the_queue_once_then_takes_the_freed_slot() {
        let dir = tempfile::tempdir().unwrap();
        let slots = BoxSlots::new(dir.path(), 1);
        let held = slots.try_acquire_now().unwrap().expect("free slot");
        let place = Mutex::new(Place::default());
        assert!(matches!(look(&slots, &place), Some(Ok(None))));
        let number = place.lock().unwrap().ticket.as_ref().map(|t| t.number);
        assert!(matches!(look(&slots, &place), Some(Ok(None))));
        assert_eq!(
            place.lock().unwrap().ticket.as_ref().map(|t| t.number),
            number,
            "one ticket, kept"
        );
        assert_eq!(slots.waiting_before(None).len(), 1);
        drop(held);
        assert!(matches!(look(&slots, &place), Some(Ok(Some(_)))));
        assert!(
            place.lock().unwrap().ticket.is_none(),
            "the ticket is used up"
        );
        place.lock().unwrap().left = true;
        assert!(look(&slots, &place).is_none());
    }

    #[test]
    fn dropping_the_wait_leaves_the_queue_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let slots = BoxSlots::new(dir.path(), 1);
        let _held = slots.try_acquire_now().unwrap().expect("free slot");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let place = Arc::new(Mutex::new(Place::default()));
        assert!(matches!(look(&slots, &place), Some(Ok(None))));
        let task = runtime.spawn(std::future::pending::<()>());
        let waiting = Waiting {
            place: place.clone(),
            task,
        };
        assert_eq!(slots.waiting_before(None).len(), 1);
        drop(waiting);
        // No ticket file is left, without the task ever running again.
        assert!(slots.waiting_before(None).is_empty());
        let files: Vec<String> = std::fs::read_dir(dir.path().join("box-slots"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("ticket"))
            .collect();
        assert!(files.is_empty(), "{files:?}");
        assert!(look(&slots, &place).is_none());
    }
}
