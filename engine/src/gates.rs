//! A waiting approval gate of a local run: no process, only a wait for the decision another
//! process records in the store (`sparkwing runs approve|reject`, the dashboard), for the gate's
//! timeout (whose default outcome is then recorded), or for the run's cancel.
//!
//! The run's own `sparkwing run` process stays alive while its gates wait (it holds the run's
//! lock and, with `--sw-box-slots`, its box slot); it runs no job process for a gate.
//!
//! A run in a runner pod has a second place decisions come from: its [`GateRelay`] (the
//! cluster API), asked every [`RELAY_POLL`] while a gate waits; what it answers is recorded in
//! the run's own store, so the run's records and events are the same as for a local decision.

use crate::process::Control;
use crate::store::Store;
use sparkwing_core::gate::{self, Decided, GateSpec};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a waiting gate reads the store for a decision: the longest a decision waits before
/// the run sees it.
pub const GATE_POLL: Duration = Duration::from_millis(50);

/// How often a waiting gate asks its [`GateRelay`]: the longest a decision recorded there waits
/// before the run sees it.
pub const RELAY_POLL: Duration = Duration::from_millis(500);

/// How long a gate whose timeout passed keeps asking its [`GateRelay`] to record the timeout
/// (every [`RELAY_POLL`]: the relay may not know yet that the gate waits, or be briefly
/// unreachable) before the timeout decides in the run's store alone.
pub const TIMEOUT_RELAY_GRACE: Duration = Duration::from_secs(3);

/// Where decisions on a run's gates are recorded besides the run's own store: the cluster API
/// for a run in a runner pod, whose store nobody else can write. Its calls block (the engine
/// makes them on the blocking pool).
pub trait GateRelay: Send + Sync + std::fmt::Debug {
    /// The decision recorded on `gate`, if any.
    fn decision(&self, gate: &str) -> Result<Option<Decided>, String>;
    /// Record `timeout`, the gate's timeout's decision; returns the decision that stands (a
    /// person's, when one was recorded first).
    fn record_timeout(&self, gate: &str, timeout: &Decided) -> Result<Decided, String>;
}

/// How a gate's wait ended.
#[derive(Debug, Clone, PartialEq)]
pub enum GateEnd {
    Decided(Decided),
    /// The run was cancelled while the gate waited.
    Stopped,
    /// The store could not be read; the gate fails with this reason.
    Broken(String),
}

/// What a waiting gate needs to know.
#[derive(Debug, Clone)]
pub struct WaitingGate {
    pub home_root: PathBuf,
    pub run_id: String,
    pub gate: String,
    pub spec: GateSpec,
    pub waiting_since_ms: i64,
    /// Where else decisions are recorded (a run in a runner pod: the cluster API).
    pub relay: Option<Arc<dyn GateRelay>>,
}

/// Call `f` on the relay on the blocking pool.
async fn relay_call<T: Send + 'static>(
    relay: &Arc<dyn GateRelay>,
    f: impl FnOnce(&dyn GateRelay) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let relay = relay.clone();
    tokio::task::spawn_blocking(move || f(relay.as_ref()))
        .await
        .map_err(|e| format!("the gate relay stopped: {e}"))?
}

/// Wait until the gate is decided (by a person, or by its timeout) or the run stops it.
pub async fn wait_for_decision(g: WaitingGate, mut control: watch::Receiver<Control>) -> GateEnd {
    let mut store = match Store::open(&g.home_root) {
        Ok(s) => s,
        Err(e) => return GateEnd::Broken(format!("gate cannot read the run store: {e}")),
    };
    let mut next_relay = Instant::now();
    let mut relay_failing = false;
    // When the relay first failed to record the timeout, and when to ask it again.
    let mut timeout_refused: Option<Instant> = None;
    let mut next_timeout_try = Instant::now();
    loop {
        if *control.borrow() != Control::Run {
            return GateEnd::Stopped;
        }
        match store.gate_decision(&g.run_id, &g.gate) {
            Ok(Some(d)) => return GateEnd::Decided(d),
            Ok(None) => {}
            Err(e) => return GateEnd::Broken(format!("gate cannot read the run store: {e}")),
        }
        if let Some(relay) = g.relay.as_ref().filter(|_| Instant::now() >= next_relay) {
            next_relay = Instant::now() + RELAY_POLL;
            let gate_id = g.gate.clone();
            match relay_call(relay, move |r| r.decision(&gate_id)).await {
                Ok(Some(d)) => {
                    // Recorded as it was decided there: who, when and why.
                    return match store.decide_gate(&g.run_id, &g.gate, &d) {
                        Ok(standing) => GateEnd::Decided(standing),
                        Err(e) => GateEnd::Broken(format!("gate cannot record its decision: {e}")),
                    };
                }
                Ok(None) => relay_failing = false,
                Err(e) => {
                    // Asked again at the next poll; said once per outage.
                    if !relay_failing {
                        tracing::warn!("gate {}: cannot read its decision: {e}", g.gate);
                    }
                    relay_failing = true;
                }
            }
        }
        if let Some(mut d) = gate::timed_out(&g.spec, g.waiting_since_ms, crate::now_ms()) {
            let mut decided = true;
            if let Some(relay) = &g.relay {
                if Instant::now() < next_timeout_try {
                    decided = false;
                } else {
                    let (gate_id, timeout) = (g.gate.clone(), d.clone());
                    match relay_call(relay, move |r| r.record_timeout(&gate_id, &timeout)).await {
                        // A person's decision recorded there first stands over the timeout's.
                        Ok(standing) => d = standing,
                        Err(e) => {
                            let since = *timeout_refused.get_or_insert_with(Instant::now);
                            if since.elapsed() < TIMEOUT_RELAY_GRACE {
                                next_timeout_try = Instant::now() + RELAY_POLL;
                                decided = false;
                            } else {
                                tracing::warn!(
                                    "gate {}: its timeout is recorded here only, not where it is decided: {e}",
                                    g.gate
                                );
                            }
                        }
                    }
                }
            }
            if decided {
                // A person's decision recorded meanwhile stands over the timeout's.
                return match store.decide_gate(&g.run_id, &g.gate, &d) {
                    Ok(standing) => GateEnd::Decided(standing),
                    Err(e) => GateEnd::Broken(format!("gate cannot record its timeout: {e}")),
                };
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(GATE_POLL) => {}
            changed = control.changed() => {
                if changed.is_err() {
                    return GateEnd::Stopped;
                }
            }
        }
    }
}

/// Why a decision was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Refused(#[from] gate::DecisionError),
}

/// Record `decision` on gate `gate` of local run `run` (an id, the `run-` prefix optional) by
/// `by`, for `sparkwing runs approve|reject` and the dashboard; the run's process picks it up
/// within [`GATE_POLL`]. Returns the run's id and the decision recorded.
pub fn decide(
    store: &mut Store,
    run: &str,
    gate_id: &str,
    decision: gate::Decision,
    by: &str,
    comment: Option<String>,
) -> Result<(String, Decided), DecideError> {
    let record = store.find_run(run)?;
    let views: Vec<gate::GateView> = store
        .gates(&record.id)?
        .into_iter()
        .map(|g| gate::GateView {
            gate: g.gate,
            state: g.state,
            decided: g.decided,
        })
        .collect();
    // A run whose process died cannot act on a decision: it is abandoned, not live.
    let status = if record.status.is_terminal() || crate::abandoned::is_alive(&record) {
        record.status
    } else {
        sparkwing_core::RunPhase::Failed
    };
    gate::check_decision(&record.id, status, &views, gate_id)?;
    let wanted = Decided {
        decision,
        by: by.to_string(),
        at_ms: crate::now_ms(),
        comment: comment.filter(|c| !c.is_empty()),
        timed_out: false,
    };
    let standing = store.decide_gate(&record.id, gate_id, &wanted)?;
    if standing != wanted {
        // Someone (or the timeout) decided between the check and the write.
        return Err(gate::DecisionError::AlreadyDecided {
            run: record.id,
            gate: gate_id.to_string(),
            decided: Box::new(standing),
        }
        .into());
    }
    Ok((record.id, standing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewJob, NewRun};
    use sparkwing_core::gate::Decision;
    use std::sync::Mutex;

    /// A relay holding decisions in memory, as the API would: the first one recorded stands.
    #[derive(Debug, Default)]
    struct Memory {
        decided: Mutex<Option<Decided>>,
        /// Answer every call with this error (the API cannot be reached).
        down: Option<String>,
        timeouts: Mutex<Vec<Decided>>,
    }

    impl GateRelay for Memory {
        fn decision(&self, _gate: &str) -> Result<Option<Decided>, String> {
            match &self.down {
                Some(e) => Err(e.clone()),
                None => Ok(self.decided.lock().unwrap().clone()),
            }
        }

        fn record_timeout(&self, _gate: &str, timeout: &Decided) -> Result<Decided, String> {
            if let Some(e) = &self.down {
                return Err(e.clone());
            }
            self.timeouts.lock().unwrap().push(timeout.clone());
            let mut d = self.decided.lock().unwrap();
            Ok(d.get_or_insert_with(|| timeout.clone()).clone())
        }
    }

    fn person(decision: Decision) -> Decided {
        Decided {
            decision,
            by: "ana@example.com".into(),
            at_ms: 1_700_000_000_000,
            comment: Some("via the API".into()),
            timed_out: false,
        }
    }

    /// A home with run `r` whose gate `approve` waits (since now) with `spec`.
    fn waiting(spec: GateSpec, relay: Arc<Memory>) -> (tempfile::TempDir, WaitingGate) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let now = crate::now_ms();
        s.create_run(&NewRun {
            git_branch: None,
            pid: i64::from(std::process::id()),
            runner: "kubernetes".into(),
            ..NewRun::for_test("r", "p", now)
        })
        .unwrap();
        s.insert_jobs(
            "r",
            &[NewJob {
                id: "approve".into(),
                needs: vec![],
                optional: false,
                finally: false,
            }],
        )
        .unwrap();
        s.insert_gates("r", &[("approve".into(), spec.clone())])
            .unwrap();
        s.gate_waiting("r", "approve", now).unwrap();
        let g = WaitingGate {
            home_root: dir.path().to_path_buf(),
            run_id: "r".into(),
            gate: "approve".into(),
            spec,
            waiting_since_ms: now,
            relay: Some(relay),
        };
        (dir, g)
    }

    fn no_timeout() -> GateSpec {
        GateSpec {
            message: None,
            timeout_ms: None,
            on_timeout: Decision::Reject,
        }
    }

    fn recorded(dir: &tempfile::TempDir) -> Option<Decided> {
        Store::open(dir.path())
            .unwrap()
            .gate_decision("r", "approve")
            .unwrap()
    }

    #[tokio::test]
    async fn a_decision_recorded_by_the_relay_ends_the_wait_and_is_recorded_as_decided() {
        let relay = Arc::new(Memory::default());
        let (dir, g) = waiting(no_timeout(), relay.clone());
        let (_tx, rx) = watch::channel(Control::Run);
        let wait = tokio::spawn(wait_for_decision(g, rx));
        // Decided elsewhere while the gate waits.
        *relay.decided.lock().unwrap() = Some(person(Decision::Approve));
        let end = tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the wait ends within a few relay polls")
            .unwrap();
        assert_eq!(end, GateEnd::Decided(person(Decision::Approve)));
        // Recorded in the run's store as decided there: who, when and why.
        assert_eq!(recorded(&dir), Some(person(Decision::Approve)));
    }

    #[tokio::test]
    async fn a_timeout_is_recorded_through_the_relay_and_a_decision_there_first_stands() {
        let spec = GateSpec {
            message: None,
            timeout_ms: Some(1),
            on_timeout: Decision::Reject,
        };
        // Nobody decided: the timeout's decision is recorded there and here.
        let relay = Arc::new(Memory::default());
        let (dir, g) = waiting(spec.clone(), relay.clone());
        let (_tx, rx) = watch::channel(Control::Run);
        let GateEnd::Decided(d) = wait_for_decision(g, rx).await else {
            panic!("not decided")
        };
        assert!(d.timed_out && d.by == gate::TIMEOUT_DECIDER, "{d:?}");
        assert_eq!(*relay.timeouts.lock().unwrap(), std::slice::from_ref(&d));
        assert_eq!(recorded(&dir), Some(d));

        // A person decided there just before the timeout was recorded: theirs stands.
        let relay = Arc::new(Memory::default());
        let (dir, g) = waiting(spec.clone(), relay.clone());
        relay.timeouts.lock().unwrap().clear();
        let racing = Arc::new(RacingRelay(relay.clone()));
        let g = WaitingGate {
            relay: Some(racing),
            ..g
        };
        let (_tx, rx) = watch::channel(Control::Run);
        let end = wait_for_decision(g, rx).await;
        assert_eq!(end, GateEnd::Decided(person(Decision::Approve)));
        assert_eq!(recorded(&dir), Some(person(Decision::Approve)));

        // The relay refuses at first (it does not know yet that the gate waits): asked again.
        let relay = Arc::new(Memory::default());
        let (dir, g) = waiting(spec.clone(), relay.clone());
        let g = WaitingGate {
            relay: Some(Arc::new(RefusesOnce(relay.clone(), Mutex::new(false)))),
            ..g
        };
        let (_tx, rx) = watch::channel(Control::Run);
        let GateEnd::Decided(d) = wait_for_decision(g, rx).await else {
            panic!("not decided")
        };
        assert!(d.timed_out, "{d:?}");
        assert_eq!(relay.timeouts.lock().unwrap().len(), 1);
        assert_eq!(*relay.decided.lock().unwrap(), Some(d.clone()));
        assert_eq!(recorded(&dir), Some(d));

        // The relay cannot be reached: after its grace the timeout decides here all the same.
        let relay = Arc::new(Memory {
            down: Some("cannot reach the API".into()),
            ..Default::default()
        });
        let (dir, g) = waiting(spec, relay);
        let (_tx, rx) = watch::channel(Control::Run);
        let GateEnd::Decided(d) = wait_for_decision(g, rx).await else {
            panic!("not decided")
        };
        assert!(d.timed_out, "{d:?}");
        assert_eq!(recorded(&dir), Some(d));
    }

    /// A relay that refuses the first timeout it is asked to record.
    #[derive(Debug)]
    struct RefusesOnce(Arc<Memory>, Mutex<bool>);

    impl GateRelay for RefusesOnce {
        fn decision(&self, gate: &str) -> Result<Option<Decided>, String> {
            self.0.decision(gate)
        }

        fn record_timeout(&self, gate: &str, timeout: &Decided) -> Result<Decided, String> {
            let mut refused = self.1.lock().unwrap();
            if !*refused {
                *refused = true;
                return Err(
                    "gate \"approve\" is not waiting for a decision (it is pending)".into(),
                );
            }
            self.0.record_timeout(gate, timeout)
        }
    }

    /// A relay where a person's approval lands between the gate's last ask and its timeout.
    #[derive(Debug)]
    struct RacingRelay(Arc<Memory>);

    impl GateRelay for RacingRelay {
        fn decision(&self, _gate: &str) -> Result<Option<Decided>, String> {
            Ok(None)
        }

        fn record_timeout(&self, gate: &str, timeout: &Decided) -> Result<Decided, String> {
            *self.0.decided.lock().unwrap() = Some(person(Decision::Approve));
            self.0.record_timeout(gate, timeout)
        }
    }

    #[tokio::test]
    async fn cancel_ends_the_wait_whatever_the_relay_says() {
        let relay = Arc::new(Memory {
            down: Some("cannot reach the API".into()),
            ..Default::default()
        });
        let (dir, g) = waiting(no_timeout(), relay);
        let (tx, rx) = watch::channel(Control::Run);
        let wait = tokio::spawn(wait_for_decision(g, rx));
        tx.send(Control::Stop).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the wait ends on cancel")
            .unwrap();
        assert_eq!(end, GateEnd::Stopped);
        assert_eq!(recorded(&dir), None);
    }
}
