//! The store's side of approval gates (`gates`: each gate's settings and decision) and
//! concurrency groups (`run_concurrency`: a run's group and whether it waits for it).

use super::{Result, Store};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sparkwing_core::gate::{Decided, Decision, GateSpec};
use sparkwing_core::JobState;

/// One gate of a run as recorded, with its job's state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateRecord {
    pub gate: String,
    pub state: JobState,
    pub message: Option<String>,
    pub timeout_ms: Option<u64>,
    pub on_timeout: Decision,
    pub waiting_since: Option<i64>,
    pub decided: Option<Decided>,
}

impl GateRecord {
    /// The gate's settings as declared.
    pub fn spec(&self) -> GateSpec {
        GateSpec {
            message: self.message.clone(),
            timeout_ms: self.timeout_ms,
            on_timeout: self.on_timeout,
        }
    }
}

/// A run's concurrency group as recorded: `state` is `waiting` until the run holds a slot, then
/// `holding`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunConcurrency {
    pub group: String,
    pub limit: u32,
    pub cancel_in_progress: bool,
    pub state: String,
    pub since: i64,
}

fn decision_column(text: Option<String>) -> Option<Decision> {
    text.as_deref().and_then(Decision::parse)
}

impl Store {
    /// Record the gates of a run's plan (undecided); call after `insert_jobs`.
    pub fn insert_gates(&mut self, run_id: &str, gates: &[(String, GateSpec)]) -> Result<()> {
        self.immediate(|tx| {
            let mut stmt = tx.prepare(
                "INSERT INTO gates (run_id, job_id, message, timeout_ms, on_timeout)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (id, g) in gates {
                stmt.execute(params![
                    run_id,
                    id,
                    g.message,
                    g.timeout_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                    g.on_timeout.as_str(),
                ])?;
            }
            Ok(())
        })
    }

    /// A gate's needs ended: its job is `waiting` from `now`.
    pub fn gate_waiting(&mut self, run_id: &str, gate: &str, now: i64) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE jobs SET state = 'waiting', attempt = 1, started_at = COALESCE(started_at, ?3),
                    reason = NULL
                 WHERE run_id = ?1 AND job_id = ?2",
                params![run_id, gate, now],
            )?;
            tx.execute(
                "UPDATE gates SET waiting_since = COALESCE(waiting_since, ?3)
                 WHERE run_id = ?1 AND job_id = ?2",
                params![run_id, gate, now],
            )?;
            Ok(())
        })
    }

    /// Record a decision on a gate unless one is recorded already; returns the decision that
    /// stands (the earlier one when two deciders race).
    pub fn decide_gate(&mut self, run_id: &str, gate: &str, d: &Decided) -> Result<Decided> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE gates SET decision = ?3, decided_by = ?4, decided_at = ?5, comment = ?6,
                    timed_out = ?7
                 WHERE run_id = ?1 AND job_id = ?2 AND decision IS NULL",
                params![
                    run_id,
                    gate,
                    d.decision.as_str(),
                    d.by,
                    d.at_ms,
                    d.comment,
                    d.timed_out
                ],
            )?;
            Ok(())
        })?;
        Ok(self
            .gate_decision(run_id, gate)?
            .unwrap_or_else(|| d.clone()))
    }

    /// The decision recorded on a gate, if any.
    pub fn gate_decision(&self, run_id: &str, gate: &str) -> Result<Option<Decided>> {
        self.conn
            .query_row(
                "SELECT decision, decided_by, decided_at, comment, timed_out FROM gates
                 WHERE run_id = ?1 AND job_id = ?2",
                params![run_id, gate],
                |row| {
                    Ok(decision_column(row.get(0)?).map(|decision| Decided {
                        decision,
                        by: row
                            .get::<_, Option<String>>(1)
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                        at_ms: row.get::<_, Option<i64>>(2).ok().flatten().unwrap_or(0),
                        comment: row.get(3).ok().flatten(),
                        timed_out: row.get(4).unwrap_or(false),
                    }))
                },
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// A run's gates in plan order, with their jobs' states.
    pub fn gates(&self, run_id: &str) -> Result<Vec<GateRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT g.job_id, j.state, g.message, g.timeout_ms, g.on_timeout, g.waiting_since,
                    g.decision, g.decided_by, g.decided_at, g.comment, g.timed_out
                 FROM gates g JOIN jobs j ON j.run_id = g.run_id AND j.job_id = g.job_id
                 WHERE g.run_id = ?1 ORDER BY j.position",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], |row| {
                let state: String = row.get(1)?;
                let on_timeout: String = row.get(4)?;
                Ok(GateRecord {
                    gate: row.get(0)?,
                    state: state.parse().unwrap_or(JobState::Pending),
                    message: row.get(2)?,
                    timeout_ms: row.get::<_, Option<i64>>(3)?.map(|t| t.max(0) as u64),
                    on_timeout: Decision::parse(&on_timeout).unwrap_or(Decision::Reject),
                    waiting_since: row.get(5)?,
                    decided: decision_column(row.get(6)?).map(|decision| Decided {
                        decision,
                        by: row
                            .get::<_, Option<String>>(7)
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                        at_ms: row.get::<_, Option<i64>>(8).ok().flatten().unwrap_or(0),
                        comment: row.get(9).ok().flatten(),
                        timed_out: row.get(10).unwrap_or(false),
                    }),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Record a run's concurrency group and where the run stands in it.
    pub fn set_run_concurrency(&mut self, run_id: &str, c: &RunConcurrency) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT INTO run_concurrency (run_id, group_key, group_limit, cancel_in_progress,
                    state, since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, since = excluded.since",
                params![
                    run_id,
                    c.group,
                    c.limit,
                    c.cancel_in_progress,
                    c.state,
                    c.since
                ],
            )?;
            Ok(())
        })
    }

    /// A run's concurrency group, if its plan declared one.
    pub fn run_concurrency(&self, run_id: &str) -> Result<Option<RunConcurrency>> {
        self.conn
            .query_row(
                "SELECT group_key, group_limit, cancel_in_progress, state, since
                 FROM run_concurrency WHERE run_id = ?1",
                params![run_id],
                |row| {
                    Ok(RunConcurrency {
                        group: row.get(0)?,
                        limit: row.get(1)?,
                        cancel_in_progress: row.get(2)?,
                        state: row.get(3)?,
                        since: row.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}
