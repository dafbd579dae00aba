//! Concurrency groups: a run takes a slot of its group through [`GroupSlots`], the seam of
//! where the group's slots and queue live. Local runs: across every process on this host (per
//! `SPARKWING_HOME`), box slots in `concurrency/<group>/` labelled with run ids (`box_slots`,
//! [`LocalGroup`]), so a holder killed by `kill -9` frees its slot at once. A run in a runner
//! pod: the cluster API (the runner's `ApiGroup`), whose entries are kept alive by a lease the
//! run renews. Core decides each step (`sparkwing_core::concurrency`); this module waits, records
//! the run `queued` meanwhile, and cancels older runs when the slots' home leaves it to the
//! engine. A job's own group is local ([`job_slot`]) unless the run's home keeps jobs' groups
//! too ([`GroupSlots::for_job`], the cluster API): then each attempt of the job waits through
//! it ([`shared_job_slot`]).

use super::interrupts::Interrupt;
use super::recorder::Recorder;
use super::{now_ms, EngineError};
use crate::box_slots::{BoxSlots, SlotGuard, Ticket};
use crate::store::{RunConcurrency, Store};
use serde_json::json;
use sparkwing_core::concurrency::{
    job_step, step, waiting_line, ConcurrencySpec, GroupStep, GroupView,
};
use sparkwing_core::RunPhase;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a queued local run looks at its group again; a freed slot is taken within about
/// this long.
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

/// What one look at a run's group found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// The run holds a slot (taken now, or held since).
    Holding,
    /// The run waits for a slot.
    Waiting {
        /// The group as the run sees it.
        view: GroupView,
        /// Older runs for the engine to ask to cancel, as `sparkwing runs cancel` does (local
        /// runs; `cancel_in_progress`).
        to_cancel: Vec<String>,
        /// Older runs the slots' home asked to cancel itself (the cluster API).
        cancelled: Vec<String>,
    },
}

/// Why a look at a group failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupError {
    pub message: String,
    /// The same look may succeed later (the API did not answer): the run keeps waiting.
    pub retry: bool,
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where a run's concurrency group keeps its slots and queue: box slots on this host
/// ([`LocalGroup`]), or for a run in a runner pod the cluster API. One per run; its calls block
/// (the engine makes them on the blocking pool).
pub trait GroupSlots: Send + Sync + std::fmt::Debug {
    /// One look at group `key` for this run (the first enters the queue): takes a slot when
    /// core's step says so. `asked`: the older runs already asked to cancel.
    fn look(&self, key: &str, spec: &ConcurrencySpec, asked: &[String])
        -> Result<Look, GroupError>;
    /// Keep the slot the run holds (renew its lease).
    fn renew(&self, key: &str, spec: &ConcurrencySpec) -> Result<(), GroupError>;
    /// Leave the group: the slot or the place in the queue is free.
    fn leave(&self, key: &str);
    /// How often a waiting run looks again.
    fn poll_every(&self) -> Duration;
    /// How often a holder renews; `None`: never (a local slot is a lock its process holds).
    fn renew_every(&self) -> Option<Duration>;
    /// The home of job `job`'s own group for this run (each attempt of the job looks, renews
    /// and leaves through it); `None`: jobs' groups are kept on this host ([`job_slot`]).
    fn for_job(&self, _job: &str) -> Option<Arc<dyn GroupSlots>> {
        None
    }
}

/// A local run's group: box slots under `$SPARKWING_HOME/concurrency/KEY/`, its ticket and slot
/// held by this process (a lock file each; dropped, or the process gone, they are free).
#[derive(Debug)]
pub struct LocalGroup {
    home_root: PathBuf,
    run_id: String,
    held: Mutex<LocalHeld>,
}

#[derive(Debug, Default)]
struct LocalHeld {
    ticket: Option<Ticket>,
    slot: Option<SlotGuard>,
}

impl LocalGroup {
    pub fn new(home_root: &Path, run_id: &str) -> LocalGroup {
        LocalGroup {
            home_root: home_root.to_path_buf(),
            run_id: run_id.to_string(),
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, LocalHeld> {
        // Lock files behind the lock: a panic elsewhere leaves them usable.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn local_err(e: crate::box_slots::BoxSlotError) -> GroupError {
    GroupError {
        message: e.to_string(),
        retry: false,
    }
}

impl GroupSlots for LocalGroup {
    fn look(
        &self,
        key: &str,
        spec: &ConcurrencySpec,
        asked: &[String],
    ) -> Result<Look, GroupError> {
        let group = slots(&self.home_root, key, spec.limit, Some(&self.run_id));
        let mut held = self.held();
        if held.slot.is_some() {
            return Ok(Look::Holding);
        }
        if held.ticket.is_none() {
            if let Some(slot) = group.try_acquire_now().map_err(local_err)? {
                held.slot = Some(slot);
                return Ok(Look::Holding);
            }
            held.ticket = Some(group.enqueue().map_err(local_err)?);
        }
        let number = held.ticket.as_ref().map(|t| t.number);
        let view = GroupView {
            limit: spec.limit,
            holders: group.holders(),
            ahead: group.waiting_before(number),
        };
        let to_cancel = match step(&view, spec.cancel_in_progress, asked) {
            GroupStep::Take => {
                if let Some(slot) = group.try_acquire(&mut held.ticket).map_err(local_err)? {
                    held.slot = Some(slot);
                    return Ok(Look::Holding);
                }
                Vec::new()
            }
            GroupStep::Cancel(older) => older,
            GroupStep::Wait => Vec::new(),
        };
        Ok(Look::Waiting {
            view,
            to_cancel,
            cancelled: Vec::new(),
        })
    }

    fn renew(&self, _key: &str, _spec: &ConcurrencySpec) -> Result<(), GroupError> {
        Ok(())
    }

    fn leave(&self, _key: &str) {
        let mut held = self.held();
        // Leave the queue first, so the next run is not held up.
        held.ticket.take();
        held.slot.take();
    }

    fn poll_every(&self) -> Duration {
        GROUP_POLL
    }

    fn renew_every(&self) -> Option<Duration> {
        None
    }
}

/// Call `f` on the group's slots on the blocking pool.
async fn call<T: Send + 'static>(
    slots: &Arc<dyn GroupSlots>,
    f: impl FnOnce(&dyn GroupSlots) -> T + Send + 'static,
) -> Result<T, EngineError> {
    let slots = slots.clone();
    tokio::task::spawn_blocking(move || f(slots.as_ref()))
        .await
        .map_err(|e| EngineError::Group(format!("the concurrency group's calls stopped: {e}")))
}

/// A slot held by the run until this is dropped (the run's end): its lease renewed meanwhile
/// when its home keeps one, then the group left.
pub(crate) struct HeldSlot {
    slots: Arc<dyn GroupSlots>,
    key: String,
    renewer: Option<tokio::task::JoinHandle<()>>,
    /// Leave on the blocking pool rather than in `drop` (a job's slot, dropped by the run's
    /// loop while its other jobs go on).
    leave_aside: bool,
}

impl HeldSlot {
    fn new(slots: Arc<dyn GroupSlots>, key: &str, spec: &ConcurrencySpec) -> HeldSlot {
        let renewer = slots.renew_every().map(|every| {
            let (slots, key, spec) = (slots.clone(), key.to_string(), spec.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                let mut failing = false;
                loop {
                    ticks.tick().await;
                    let (s, k, sp) = (slots.clone(), key.clone(), spec.clone());
                    let renewed = tokio::task::spawn_blocking(move || s.renew(&k, &sp)).await;
                    match renewed {
                        Ok(Ok(())) => failing = false,
                        Ok(Err(e)) if e.retry => {
                            if !failing {
                                tracing::warn!("cannot renew the slot of concurrency group {key}: {e}; retrying every {every:?}");
                            }
                            failing = true;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("the slot of concurrency group {key} is lost: {e}; the run goes on");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            })
        });
        HeldSlot {
            slots,
            key: key.to_string(),
            renewer,
            leave_aside: false,
        }
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if self.leave_aside {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (slots, key) = (self.slots.clone(), self.key.clone());
                rt.spawn_blocking(move || slots.leave(&key));
                return;
            }
        }
        self.slots.leave(&self.key);
    }
}

/// The slot of a job's group an attempt holds until this is dropped (the attempt's end).
pub(crate) enum JobSlot {
    /// Box slots on this host ([`job_slot`]); held for its `Drop`.
    Local { _slot: SlotGuard },
    /// An entry of the run's group home ([`shared_job_slot`]), its lease renewed meanwhile;
    /// held for its `Drop`.
    Shared { _held: HeldSlot },
}

/// How a run's entry into its group ended.
pub(crate) enum Entered {
    /// The run holds a slot until this is dropped (the run's end).
    Holding(HeldSlot),
    /// The run was cancelled while it waited.
    Cancelled,
}

/// Take a slot of the run's group, waiting in FIFO order (or cancelling the older runs, with
/// `cancel_in_progress`); the run is `queued` while it waits. A stop while waiting cancels it.
pub(crate) async fn enter(
    rec: &mut Recorder,
    group: Arc<dyn GroupSlots>,
    spec: &ConcurrencySpec,
    key: &str,
    stops: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<Entered, EngineError> {
    let run_id = rec.run_id.clone();
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
    let look = |asked: Vec<String>| {
        let (k, sp) = (key.to_string(), spec.clone());
        call(&group, move |g| g.look(&k, &sp, &asked))
    };
    let waited_from = std::time::Instant::now();
    let mut asked: Vec<String> = Vec::new();
    let mut first = true;
    let mut last_line = String::new();
    let mut next_line = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        let looked = look(asked.clone()).await?;
        let looked = match looked {
            Err(e) if !e.retry => {
                let k = key.to_string();
                call(&group, move |g| g.leave(&k)).await?;
                return Err(EngineError::Group(format!("concurrency group {key}: {e}")));
            }
            other => other,
        };
        match looked {
            Ok(Look::Holding) => {
                record(&mut rec.store, "holding")?;
                if !first {
                    rec.store
                        .set_run_status(&run_id, RunPhase::Running, now_ms(), None, None)?;
                }
                let waited_ms = if first {
                    0
                } else {
                    waited_from.elapsed().as_millis() as u64
                };
                rec.event(
                    None,
                    "concurrency_admitted",
                    json!({"group": key, "limit": spec.limit, "waited_ms": waited_ms}),
                    None,
                )?;
                return Ok(Entered::Holding(HeldSlot::new(group, key, spec)));
            }
            Ok(Look::Waiting {
                view,
                to_cancel,
                cancelled,
            }) => {
                failing = false;
                if first {
                    record(&mut rec.store, "waiting")?;
                    rec.store
                        .set_run_status(&run_id, RunPhase::Pending, now_ms(), None, None)?;
                }
                for other in to_cancel {
                    cancel_older(rec, key, &other, None)?;
                    asked.push(other);
                }
                for other in cancelled {
                    let human = format!(
                        "cancelling run {other} of concurrency group {key} (cancel_in_progress)"
                    );
                    rec.event(
                        None,
                        "concurrency_cancelled_older",
                        json!({"group": key, "run": other}),
                        Some(human),
                    )?;
                    asked.push(other);
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
            }
            Err(e) => {
                // Retryable (the API did not answer): the run stays queued and looks again.
                if !failing {
                    eprintln!(
                        "concurrency group {key}: {e}; looking again every {:?}",
                        group.poll_every()
                    );
                }
                failing = true;
                if first {
                    record(&mut rec.store, "waiting")?;
                    rec.store
                        .set_run_status(&run_id, RunPhase::Pending, now_ms(), None, None)?;
                }
            }
        }
        first = false;
        let stopped = tokio::select! {
            _ = tokio::time::sleep(group.poll_every()) => false,
            s = stops.recv() => s.is_some(),
        };
        if stopped {
            // Leave the queue before recording, so the next run is not held up.
            let k = key.to_string();
            call(&group, move |g| g.leave(&k)).await?;
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
    Result<Option<JobSlot>, String>,
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
            Ok(Some(slot)) => return (Ok(Some(JobSlot::Local { _slot: slot })), control),
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

/// Wait for a slot of a job's group kept by the run's group home (`home`, from
/// [`GroupSlots::for_job`]: the cluster API, which decides each look by core's rule and cancels
/// the older runs of a `cancel_in_progress` group itself), looking every `poll_every`, until the
/// run's control asks to stop (`Ok(None)`, the entry left). The older runs the home asked to
/// cancel are handed to `cancelled` (to record). A refusal leaves the entry and is an error; a
/// look the home did not answer is tried again. The slot is held (its lease renewed) until the
/// returned [`JobSlot`] is dropped. Returns the control channel for the attempt that follows.
pub(crate) async fn shared_job_slot(
    home: Arc<dyn GroupSlots>,
    group: JobGroup,
    cancelled: impl Fn(Vec<String>) + Send + 'static,
    mut control: tokio::sync::watch::Receiver<crate::process::Control>,
) -> (
    Result<Option<JobSlot>, String>,
    tokio::sync::watch::Receiver<crate::process::Control>,
) {
    let spec = ConcurrencySpec {
        group: group.key.clone(),
        limit: group.limit,
        cancel_in_progress: group.cancel_in_progress,
    };
    let key = group.key;
    let leave = |home: &Arc<dyn GroupSlots>, key: &str| {
        let (h, k) = (home.clone(), key.to_string());
        async move {
            let _ = tokio::task::spawn_blocking(move || h.leave(&k)).await;
        }
    };
    loop {
        if *control.borrow() != crate::process::Control::Run {
            leave(&home, &key).await;
            return (Ok(None), control);
        }
        let (h, k, sp) = (home.clone(), key.clone(), spec.clone());
        let looked = tokio::task::spawn_blocking(move || h.look(&k, &sp, &[])).await;
        match looked {
            Ok(Ok(Look::Holding)) => {
                let mut held = HeldSlot::new(home, &key, &spec);
                held.leave_aside = true;
                return (Ok(Some(JobSlot::Shared { _held: held })), control);
            }
            Ok(Ok(Look::Waiting {
                cancelled: asked, ..
            })) => {
                if !asked.is_empty() {
                    cancelled(asked);
                }
            }
            Ok(Err(e)) if !e.retry => {
                leave(&home, &key).await;
                return (Err(e.message), control);
            }
            Ok(Err(e)) => {
                tracing::debug!("concurrency group {key}: {e}; looking again");
            }
            Err(e) => {
                return (
                    Err(format!("the concurrency group's calls stopped: {e}")),
                    control,
                )
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(home.poll_every()) => {}
            changed = control.changed() => {
                if changed.is_err() {
                    leave(&home, &key).await;
                    return (Ok(None), control);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, Terminal};
    use crate::store::NewRun;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A group's home that answers scripted looks (then `Holding`), as the cluster API would,
    /// counting renewals and leaves.
    #[derive(Debug, Default)]
    struct Scripted {
        looks: Mutex<VecDeque<Result<Look, GroupError>>>,
        renewals: AtomicUsize,
        leaves: AtomicUsize,
    }

    impl GroupSlots for Scripted {
        fn look(&self, _: &str, _: &ConcurrencySpec, _: &[String]) -> Result<Look, GroupError> {
            self.looks
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Ok(Look::Holding))
        }
        fn renew(&self, _: &str, _: &ConcurrencySpec) -> Result<(), GroupError> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn leave(&self, _: &str) {
            self.leaves.fetch_add(1, Ordering::SeqCst);
        }
        fn poll_every(&self) -> Duration {
            Duration::from_millis(5)
        }
        fn renew_every(&self) -> Option<Duration> {
            Some(Duration::from_millis(10))
        }
    }

    fn recorder() -> (tempfile::TempDir, Recorder) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let now = now_ms();
        store
            .create_run(&NewRun {
                git_branch: None,
                pid: i64::from(std::process::id()),
                runner: "kubernetes".into(),
                ..NewRun::for_test("r", "deploy", now)
            })
            .unwrap();
        let rec = Recorder {
            store,
            run_id: "r".into(),
            masker: sparkwing_core::mask::Masker::new(Vec::<String>::new()),
            term: Terminal::new(Format::Json, "r"),
            sink: None,
            gates: Default::default(),
            needs: Default::default(),
        };
        (dir, rec)
    }

    fn spec() -> ConcurrencySpec {
        ConcurrencySpec {
            group: "deploy-{env}".into(),
            limit: 1,
            cancel_in_progress: true,
        }
    }

    fn waiting(holders: &[&str], cancelled: &[&str]) -> Result<Look, GroupError> {
        Ok(Look::Waiting {
            view: GroupView {
                limit: 1,
                holders: holders.iter().map(|s| s.to_string()).collect(),
                ahead: Vec::new(),
            },
            to_cancel: Vec::new(),
            cancelled: cancelled.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn kinds(rec: &Recorder) -> Vec<String> {
        rec.store
            .events("r", 0)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    /// Wait until `cond` holds, or fail after a deadline.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_waits_through_its_groups_home_is_queued_then_holds_and_renews() {
        let (_dir, mut rec) = recorder();
        let home = Arc::new(Scripted::default());
        home.looks.lock().unwrap().extend([
            waiting(&["ci/old"], &["ci/old"]),
            Err(GroupError {
                message: "the API did not answer".into(),
                retry: true,
            }),
            waiting(&["ci/old"], &[]),
        ]);
        let (_stop, mut stops) = mpsc::unbounded_channel();
        let entered = enter(&mut rec, home.clone(), &spec(), "deploy-prod", &mut stops)
            .await
            .unwrap();
        let Entered::Holding(held) = entered else {
            panic!("the run should hold its slot");
        };
        assert_eq!(
            kinds(&rec),
            [
                "concurrency_cancelled_older",
                "concurrency_waiting",
                "concurrency_admitted"
            ]
        );
        let events = rec.store.events("r", 0).unwrap();
        assert_eq!(
            events[1].payload,
            json!({"group": "deploy-prod", "limit": 1, "holders": ["ci/old"], "ahead": []})
        );
        assert_eq!(events[0].payload["run"], "ci/old");
        let c = rec.store.run_concurrency("r").unwrap().unwrap();
        assert_eq!(
            (c.group.as_str(), c.state.as_str()),
            ("deploy-prod", "holding")
        );
        // Queued while it waited, running again once admitted.
        assert_eq!(
            rec.store.get_run("r").unwrap().unwrap().status,
            RunPhase::Running
        );
        // The held slot's lease is renewed until the run ends, then the group is left.
        until("two renewals", || home.renewals.load(Ordering::SeqCst) >= 2).await;
        assert_eq!(home.leaves.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(home.leaves.load(Ordering::SeqCst), 1);
    }

    fn job_group() -> JobGroup {
        JobGroup {
            key: "deploy-prod".into(),
            limit: 1,
            cancel_in_progress: true,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jobs_attempt_waits_through_the_groups_home_then_holds_renews_and_leaves() {
        let home = Arc::new(Scripted::default());
        home.looks.lock().unwrap().extend([
            waiting(&["ci/old/deploy"], &["ci/old"]),
            Err(GroupError {
                message: "the API did not answer".into(),
                retry: true,
            }),
            waiting(&["ci/old/deploy"], &[]),
        ]);
        let told: Arc<Mutex<Vec<String>>> = Arc::default();
        let t = told.clone();
        let (_control, control_rx) = tokio::sync::watch::channel(crate::process::Control::Run);
        let (slot, _control_rx) = shared_job_slot(
            home.clone(),
            job_group(),
            move |runs| t.lock().unwrap().extend(runs),
            control_rx,
        )
        .await;
        let Ok(Some(JobSlot::Shared { _held: held })) = slot else {
            panic!("the attempt should hold its slot");
        };
        // Every scripted look was made; the runs the home cancelled are told once.
        assert!(home.looks.lock().unwrap().is_empty());
        assert_eq!(*told.lock().unwrap(), ["ci/old"]);
        until("two renewals", || home.renewals.load(Ordering::SeqCst) >= 2).await;
        assert_eq!(home.leaves.load(Ordering::SeqCst), 0);
        // The attempt's end leaves the entry (off the run's loop).
        drop(held);
        until("the entry left", || home.leaves.load(Ordering::SeqCst) == 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jobs_attempt_stopped_while_waiting_leaves_and_a_refusal_is_an_error() {
        let home = Arc::new(Scripted::default());
        home.looks
            .lock()
            .unwrap()
            .extend((0..10_000).map(|_| waiting(&["ci/old/deploy"], &[])));
        let (control, control_rx) = tokio::sync::watch::channel(crate::process::Control::Run);
        let waiter = tokio::spawn(shared_job_slot(
            home.clone(),
            job_group(),
            |_| {},
            control_rx,
        ));
        until("a few looks", || home.looks.lock().unwrap().len() < 9_990).await;
        control.send(crate::process::Control::Stop).unwrap();
        let (slot, _) = waiter.await.unwrap();
        assert!(matches!(slot, Ok(None)));
        assert_eq!(home.leaves.load(Ordering::SeqCst), 1);

        let home = Arc::new(Scripted::default());
        home.looks.lock().unwrap().push_back(Err(GroupError {
            message: "run ci/r already finished".into(),
            retry: false,
        }));
        let (_control, control_rx) = tokio::sync::watch::channel(crate::process::Control::Run);
        let (slot, _) = shared_job_slot(home.clone(), job_group(), |_| {}, control_rx).await;
        assert!(
            matches!(&slot, Err(e) if e.contains("already finished")),
            "a refusal ends the wait"
        );
        assert_eq!(home.leaves.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_while_waiting_leaves_the_queue_and_a_refusal_ends_the_run() {
        let (_dir, mut rec) = recorder();
        let home = Arc::new(Scripted::default());
        home.looks
            .lock()
            .unwrap()
            .extend((0..10_000).map(|_| waiting(&["ci/old"], &[])));
        let (stop, mut stops) = mpsc::unbounded_channel();
        stop.send(Interrupt {
            signal: "SIGTERM",
            hard: false,
        })
        .unwrap();
        let entered = enter(&mut rec, home.clone(), &spec(), "deploy-prod", &mut stops)
            .await
            .unwrap();
        assert!(matches!(entered, Entered::Cancelled));
        assert_eq!(home.leaves.load(Ordering::SeqCst), 1);
        assert_eq!(
            rec.store.get_run("r").unwrap().unwrap().status,
            RunPhase::Pending
        );

        let home = Arc::new(Scripted::default());
        home.looks.lock().unwrap().push_back(Err(GroupError {
            message: "run ci/r already finished".into(),
            retry: false,
        }));
        let err = enter(&mut rec, home.clone(), &spec(), "deploy-prod", &mut stops)
            .await
            .err()
            .expect("a refusal ends the wait");
        assert!(err.to_string().contains("already finished"), "{err}");
        assert_eq!(home.leaves.load(Ordering::SeqCst), 1);
    }
}
