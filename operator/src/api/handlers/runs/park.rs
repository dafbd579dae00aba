//! Parked cluster runs (`docs/runner.md`): a runner whose run has nothing but approval gates
//! waiting reports a park in its finish (`"parked"`), recorded here on the run as the
//! annotation `sparkwing.dev/parked` (core's `gate::Parked`), which the operator reads: it keeps
//! the run `Running` (`WaitingForApproval`) with no runner and starts the next attempt once the
//! record says `decided` (or, reading the stores itself, a parked gate has a recorded decision)
//! or the gates' earliest timeout passes. A decision on one of the parked gates sets `decided`.
//!
//! The park and a decision can cross: the park is written first and the decisions read after,
//! a decision is written first and the park read after, so at least one of the two sees the
//! other and `decided` is set.

use std::collections::BTreeMap;

use kube::ResourceExt;
use sparkwing_core::gate::{Parked, PARKED_ANNOTATION};
use sparkwing_state::RunKey;

use crate::api::{ApiError, ApiState};

async fn write(st: &ApiState, ns: &str, name: &str, parked: &Parked) -> Result<(), ApiError> {
    let annotations =
        BTreeMap::from([(PARKED_ANNOTATION.to_string(), Some(parked.to_annotation()))]);
    match st.runs.annotate(ns, name, &annotations).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
    }
}

/// Record that attempt `parked.attempt` of run `ns/name` parked, `decided` already when one of
/// its gates has a decision recorded.
pub async fn record(
    st: &ApiState,
    ns: &str,
    name: &str,
    mut parked: Parked,
) -> Result<(), ApiError> {
    parked.decided = false;
    write(st, ns, name, &parked).await?;
    let decisions = st.store.meta.gate_decisions(&RunKey::new(ns, name)).await?;
    if decisions.iter().any(|(g, _)| parked.gates.contains(g)) {
        parked.decided = true;
        write(st, ns, name, &parked).await?;
    }
    tracing::info!(%ns, %name, attempt = parked.attempt, gates = ?parked.gates, decided = parked.decided, "run parked");
    Ok(())
}

/// Gate `gate` of run `ns/name` was just decided: if the run is parked waiting for it, mark the
/// park decided so the operator resumes the run at once. A failure is logged (the decision
/// stands): the operator also reads the parked gates' recorded decisions from the stores while
/// the run is parked (`controller::run::observe_gate_decisions`), so the run still resumes, at
/// its next look.
pub async fn gate_decided(st: &ApiState, ns: &str, name: &str, gate: &str) {
    let run = match st.runs.get(ns, name).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%ns, %name, %gate, "cannot read the run to resume it after a decision: {e}");
            return;
        }
    };
    let Some(Ok(mut parked)) = run
        .annotations()
        .get(PARKED_ANNOTATION)
        .map(|a| Parked::parse(a))
    else {
        return;
    };
    if parked.decided || !parked.gates.iter().any(|g| g == gate) {
        return;
    }
    parked.decided = true;
    if let Err(e) = write(st, ns, name, &parked).await {
        tracing::warn!(%ns, %name, %gate, "cannot mark the parked run decided: {e}");
    }
}
