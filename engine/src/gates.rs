//! A waiting approval gate of a local run: no process, only a wait for the decision another
//! process records in the store (`sparkwing runs approve|reject`, the dashboard), for the gate's
//! timeout (whose default outcome is then recorded), or for the run's cancel.
//!
//! The run's own `sparkwing run` process stays alive while its gates wait (it holds the run's
//! lock and, with `--sw-box-slots`, its box slot); it runs no job process for a gate.

use crate::process::Control;
use crate::store::Store;
use sparkwing_core::gate::{self, Decided, GateSpec};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// How often a waiting gate reads the store for a decision: the longest a decision waits before
/// the run sees it.
pub const GATE_POLL: Duration = Duration::from_millis(50);

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
}

/// Wait until the gate is decided (by a person, or by its timeout) or the run stops it.
pub async fn wait_for_decision(g: WaitingGate, mut control: watch::Receiver<Control>) -> GateEnd {
    let mut store = match Store::open(&g.home_root) {
        Ok(s) => s,
        Err(e) => return GateEnd::Broken(format!("gate cannot read the run store: {e}")),
    };
    loop {
        if *control.borrow() != Control::Run {
            return GateEnd::Stopped;
        }
        match store.gate_decision(&g.run_id, &g.gate) {
            Ok(Some(d)) => return GateEnd::Decided(d),
            Ok(None) => {}
            Err(e) => return GateEnd::Broken(format!("gate cannot read the run store: {e}")),
        }
        if let Some(d) = gate::timed_out(&g.spec, g.waiting_since_ms, crate::now_ms()) {
            // A person's decision recorded meanwhile stands over the timeout's.
            return match store.decide_gate(&g.run_id, &g.gate, &d) {
                Ok(standing) => GateEnd::Decided(standing),
                Err(e) => GateEnd::Broken(format!("gate cannot record its timeout: {e}")),
            };
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
