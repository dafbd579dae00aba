//! Per-host concurrency: at most N `sparkwing run`s at once on this host (per `SPARKWING_HOME`),
//! admitted in strict arrival order across processes.
//!
//! Everything is a file lock, so liveness comes from the kernel, never from PIDs: a process that
//! dies (even by `kill -9`) drops its locks at once.
//! - `slot-<i>.lock` (i < max): a run holds an exclusive lock on one while it runs.
//! - `ticket-<n>.lock`: a waiting run holds an exclusive lock on its ticket. Numbers come from a
//!   counter guarded by `queue.lock`, so they follow arrival order. A ticket is created under a
//!   temporary name, locked, then renamed, so a visible ticket is always locked while its owner
//!   lives; one that can be locked by someone else belongs to a dead process and is removed.
//! - A waiter takes a slot only when no live ticket is older than its own (FIFO).
//!
//! Concurrency groups (`concurrency`) are the same slots and queue in a directory per group, with
//! a label (the run id) written into each slot and ticket so others can say who holds and waits.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Cap from `--sw-box-slots` or this variable (the flag wins). Unset: no cap.
pub const ENV_BOX_SLOTS: &str = "SPARKWING_BOX_SLOTS";
/// Set to `1` by cluster runners: Kubernetes already caps their CPU, so they skip the gate.
pub const ENV_SKIP_BOX_SLOTS: &str = sparkwing_api::names::env::SKIP_BOX_SLOTS;

#[derive(Debug, thiserror::Error)]
pub enum BoxSlotError {
    #[error("{ENV_BOX_SLOTS}={0:?} is not a positive number; set it to the number of runs this host may run at once, or unset it for no cap")]
    InvalidEnv(String),
    #[error("box slots in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BoxSlotError + '_ {
    move |source| BoxSlotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cap in force: the flag, else the environment, else none. Cluster runners get none.
pub fn resolve_cap(flag: Option<u32>) -> Result<Option<u32>, BoxSlotError> {
    if std::env::var(ENV_SKIP_BOX_SLOTS).is_ok_and(|v| v == "1" || v == "true") {
        return Ok(None);
    }
    if flag.is_some() {
        return Ok(flag);
    }
    match std::env::var(ENV_BOX_SLOTS) {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or(BoxSlotError::InvalidEnv(v)),
    }
}

#[derive(Debug, Clone)]
pub struct BoxSlots {
    dir: PathBuf,
    max: u32,
    /// Written into a slot taken and a ticket made (a concurrency group's run id).
    label: Option<String>,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotGuard {
    _file: File,
    pub index: u32,
}

/// A place in the queue; dropping it leaves the queue.
#[derive(Debug)]
pub struct Ticket {
    file: Option<File>,
    path: PathBuf,
    pub number: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Remove while still locked, so nobody mistakes the file for a dead ticket meanwhile.
        let _ = std::fs::remove_file(&self.path);
        self.file.take();
    }
}

fn ticket_number(name: &str) -> Option<u64> {
    name.strip_prefix("ticket-")?
        .strip_suffix(".lock")?
        .parse()
        .ok()
}

impl BoxSlots {
    pub fn new(home_root: &Path, max: u32) -> Self {
        BoxSlots::at(home_root.join("box-slots"), max, None)
    }

    /// Slots and queue in `dir`, labelling what this process takes with `label`.
    pub fn at(dir: PathBuf, max: u32, label: Option<String>) -> Self {
        BoxSlots {
            dir,
            max: max.max(1),
            label,
        }
    }

    /// The labels of the slots held now (by any process).
    pub fn holders(&self) -> Vec<String> {
        (0..self.max)
            .filter_map(|i| {
                let mut f = File::options()
                    .read(true)
                    .write(true)
                    .open(self.slot_path(i))
                    .ok()?;
                if f.try_lock().is_ok() {
                    return None;
                }
                let mut text = String::new();
                f.read_to_string(&mut text).ok()?;
                Some(text.trim().to_string())
            })
            .collect()
    }

    /// The labels of the live tickets older than `before` (all, when `None`), oldest first.
    pub fn waiting_before(&self, before: Option<u64>) -> Vec<String> {
        let Ok(read) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(u64, String)> = read
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let n = ticket_number(&entry.file_name().to_string_lossy())?;
                if before.is_some_and(|b| n >= b) {
                    return None;
                }
                let mut f = File::options()
                    .read(true)
                    .write(true)
                    .open(entry.path())
                    .ok()?;
                if f.try_lock().is_ok() {
                    return None; // its owner died while waiting
                }
                let mut text = String::new();
                f.read_to_string(&mut text).ok()?;
                Some((n, text.trim().to_string()))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, label)| label).collect()
    }

    fn write_label(&self, f: &mut File) {
        if let Some(label) = &self.label {
            // Best effort: a missing label only makes `runs status` less precise.
            let _ = f.set_len(0).and_then(|()| f.write_all(label.as_bytes()));
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    fn ensure_dir(&self) -> Result<(), BoxSlotError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))
    }

    fn slot_path(&self, i: u32) -> PathBuf {
        self.dir.join(format!("slot-{i}.lock"))
    }

    fn try_slots(&self) -> Result<Option<SlotGuard>, BoxSlotError> {
        for i in 0..self.max {
            let p = self.slot_path(i);
            let mut f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p)
                .map_err(io(&p))?;
            if f.try_lock().is_ok() {
                self.write_label(&mut f);
                return Ok(Some(SlotGuard { _file: f, index: i }));
            }
        }
        Ok(None)
    }

    /// How many slots are held right now.
    pub fn active(&self) -> u32 {
        (0..self.max)
            .filter(
                |&i| match File::options().write(true).open(self.slot_path(i)) {
                    Ok(f) => f.try_lock().is_err(),
                    Err(_) => false,
                },
            )
            .count() as u32
    }

    /// Live tickets older than `before` (all, when `None`); dead ones are removed on the way.
    fn live_tickets_before(&self, before: Option<u64>) -> Result<usize, BoxSlotError> {
        let read = match std::fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut live = 0;
        for entry in read.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(n) = ticket_number(&name.to_string_lossy()) else {
                continue;
            };
            if before.is_some_and(|b| n >= b) {
                continue;
            }
            let Ok(f) = File::options().write(true).open(entry.path()) else {
                continue; // removed meanwhile: its owner left the queue
            };
            if f.try_lock().is_ok() {
                // Its owner died while waiting.
                let _ = std::fs::remove_file(entry.path());
            } else {
                live += 1;
            }
        }
        Ok(live)
    }

    /// Take a slot at once if one is free and nobody is queued.
    pub fn try_acquire_now(&self) -> Result<Option<SlotGuard>, BoxSlotError> {
        self.ensure_dir()?;
        if self.live_tickets_before(None)? > 0 {
            return Ok(None);
        }
        self.try_slots()
    }

    /// Join the queue.
    pub fn enqueue(&self) -> Result<Ticket, BoxSlotError> {
        self.ensure_dir()?;
        let qpath = self.dir.join("queue.lock");
        let mut q = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&qpath)
            .map_err(io(&qpath))?;
        q.lock().map_err(io(&qpath))?;
        let mut text = String::new();
        q.read_to_string(&mut text).map_err(io(&qpath))?;
        let number = text.trim().parse::<u64>().unwrap_or(0) + 1;
        q.seek(SeekFrom::Start(0)).map_err(io(&qpath))?;
        q.set_len(0).map_err(io(&qpath))?;
        q.write_all(number.to_string().as_bytes())
            .map_err(io(&qpath))?;
        let tmp = self
            .dir
            .join(format!(".ticket-{number}-{}.tmp", std::process::id()));
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.lock().map_err(io(&tmp))?;
        self.write_label(&mut f);
        let path = self.dir.join(format!("ticket-{number:020}.lock"));
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        drop(q);
        Ok(Ticket {
            file: Some(f),
            path,
            number,
        })
    }

    /// Take a slot if this ticket is first in line and a slot is free; the ticket is used up.
    pub fn try_acquire(
        &self,
        ticket: &mut Option<Ticket>,
    ) -> Result<Option<SlotGuard>, BoxSlotError> {
        let Some(t) = ticket.as_ref() else {
            return self.try_slots();
        };
        if self.live_tickets_before(Some(t.number))? > 0 {
            return Ok(None);
        }
        let got = self.try_slots()?;
        if got.is_some() {
            ticket.take();
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_caps_within_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let slots = BoxSlots::new(dir.path(), 1);
        let first = slots.try_acquire_now().unwrap().expect("free slot");
        assert_eq!(slots.active(), 1);
        assert!(slots.try_acquire_now().unwrap().is_none());
        let mut a = Some(slots.enqueue().unwrap());
        let mut b = Some(slots.enqueue().unwrap());
        assert!(a.as_ref().unwrap().number < b.as_ref().unwrap().number);
        // Nobody may jump the queue, even once the slot is free.
        assert!(slots.try_acquire(&mut b).unwrap().is_none());
        drop(first);
        assert!(
            slots.try_acquire(&mut b).unwrap().is_none(),
            "b is behind a"
        );
        assert!(
            slots.try_acquire_now().unwrap().is_none(),
            "newcomers queue too"
        );
        let held = slots.try_acquire(&mut a).unwrap().expect("a is first");
        assert!(a.is_none());
        assert!(slots.try_acquire(&mut b).unwrap().is_none(), "slot taken");
        drop(held);
        assert!(slots.try_acquire(&mut b).unwrap().is_some());
    }

    #[test]
    fn a_dropped_ticket_leaves_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let slots = BoxSlots::new(dir.path(), 2);
        let t = slots.enqueue().unwrap();
        assert!(slots.try_acquire_now().unwrap().is_none());
        drop(t);
        assert!(slots.try_acquire_now().unwrap().is_some());
    }

    #[test]
    fn labels_name_holders_and_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let group = |label: &str| BoxSlots::at(dir.path().join("g"), 1, Some(label.into()));
        let held = group("run-a").try_acquire_now().unwrap().expect("free");
        let b = group("run-b").enqueue().unwrap();
        let c = group("run-c").enqueue().unwrap();
        assert_eq!(group("x").holders(), vec!["run-a".to_string()]);
        assert_eq!(
            group("x").waiting_before(Some(c.number)),
            vec!["run-b".to_string()]
        );
        assert_eq!(group("x").waiting_before(None).len(), 2);
        drop((held, b));
        assert!(group("x").holders().is_empty());
        assert_eq!(group("x").waiting_before(None), vec!["run-c".to_string()]);
    }

    #[test]
    fn cap_resolution() {
        assert_eq!(resolve_cap(Some(3)).unwrap(), Some(3));
    }
}
