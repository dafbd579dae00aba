//! The `RunnerPool` reconcile: (intent, observed runners, queued claims, now) -> create / claim /
//! reap + status.
//!
//! A pool keeps `minIdle` warm runners so a run starts by claiming one instead of waiting for a new
//! pod or container. It never has more than `maxRunners`, never reaps a runner that is busy, claimed
//! or starting, and reaps idle runners beyond `minIdle` once they were idle for `idleTimeout`.

use super::status::{set_condition, Condition, ConditionStatus, PoolStatus};
use super::Millis;
use crate::time::Time;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolIntent {
    pub generation: i64,
    pub min_idle: u32,
    pub max_runners: u32,
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRunnerState {
    /// Created, not ready for work yet.
    Starting,
    /// Ready and unclaimed since this time.
    Idle { since: Millis },
    /// Claimed by a run that has not started on it yet.
    Claimed { run: String },
    /// Running a run.
    Busy { run: String },
    /// Being deleted.
    Terminating,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRunner {
    pub name: String,
    pub state: PoolRunnerState,
}

/// A run waiting for a warm runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub run: String,
    pub queued_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolAction {
    /// Create a warm runner with this name.
    Create { name: String },
    /// Hand idle runner `runner` to `run`. Adapters make this a guarded update (resourceVersion),
    /// so if two decisions race, one claim fails and is decided again.
    Claim { runner: String, run: String },
    /// Delete an idle runner.
    Reap { runner: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDecision {
    pub actions: Vec<PoolAction>,
    pub status: PoolStatus,
    pub requeue_after_ms: Option<u64>,
}

/// The condition type a pool reports.
pub const READY: &str = "Ready";

/// Decide what the pool does now. `name_prefix` names new runners (`<prefix>-<now hex>-<i>`).
pub fn reconcile_pool(
    name_prefix: &str,
    intent: &PoolIntent,
    prev: &PoolStatus,
    runners: &[PoolRunner],
    claims: &[ClaimRequest],
    now: Millis,
) -> PoolDecision {
    let mut actions = Vec::new();
    let live: Vec<&PoolRunner> = runners
        .iter()
        .filter(|r| r.state != PoolRunnerState::Terminating)
        .collect();
    // Runs that already hold a runner must not get a second one.
    let holding: Vec<&str> = live
        .iter()
        .filter_map(|r| match &r.state {
            PoolRunnerState::Claimed { run } | PoolRunnerState::Busy { run } => Some(run.as_str()),
            _ => None,
        })
        .collect();
    let mut idle: Vec<(&str, Millis)> = live
        .iter()
        .filter_map(|r| match r.state {
            PoolRunnerState::Idle { since } => Some((r.name.as_str(), since)),
            _ => None,
        })
        .collect();
    // Longest idle first: fair, and deterministic.
    idle.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
    let mut waiting: Vec<&ClaimRequest> = claims
        .iter()
        .filter(|c| !holding.contains(&c.run.as_str()))
        .collect();
    waiting.sort_by(|a, b| a.queued_at.cmp(&b.queued_at).then(a.run.cmp(&b.run)));
    waiting.dedup_by(|a, b| a.run == b.run);

    let mut claimed_now = 0usize;
    for (c, (runner, _)) in waiting.iter().zip(idle.iter()) {
        actions.push(PoolAction::Claim {
            runner: runner.to_string(),
            run: c.run.clone(),
        });
        claimed_now += 1;
    }
    let idle_left: Vec<(&str, Millis)> = idle[claimed_now..].to_vec();
    let starting = live
        .iter()
        .filter(|r| r.state == PoolRunnerState::Starting)
        .count() as u32;
    let busy = live.len() as u32 - starting - idle.len() as u32 + claimed_now as u32;
    let total = live.len() as u32;

    // Reap: idle runners past their timeout beyond minIdle, and idle runners beyond maxRunners
    // (when the pool was shrunk). Busy, claimed and starting runners are never touched.
    let mut reaped = 0u32;
    let mut next_due: Option<Millis> = None;
    let over_max = total.saturating_sub(intent.max_runners);
    for (name, since) in idle_left.iter() {
        let remaining_idle = idle_left.len() as u32 - reaped;
        let surplus = remaining_idle > intent.min_idle;
        if !surplus && reaped >= over_max {
            break;
        }
        let due = since.saturating_add(intent.idle_timeout_ms as i64);
        if reaped < over_max || (surplus && now >= due) {
            actions.push(PoolAction::Reap {
                runner: name.to_string(),
            });
            reaped += 1;
        } else if surplus {
            next_due = Some(next_due.map_or(due, |d: Millis| d.min(due)));
        }
    }
    let total_after_reap = total - reaped;
    let warm = (idle_left.len() as u32 - reaped) + starting;
    let want = intent.min_idle.saturating_sub(warm);
    let room = intent.max_runners.saturating_sub(total_after_reap);
    let create = want.min(room);
    // Names are deterministic but never reuse a name still present.
    let mut suffix = 0u32;
    for _ in 0..create {
        let name = loop {
            let candidate = format!("{name_prefix}-{now:x}-{suffix}");
            suffix += 1;
            if !runners.iter().any(|r| r.name == candidate) {
                break candidate;
            }
        };
        actions.push(PoolAction::Create { name });
    }

    let idle_after = idle_left.len() as u32 - reaped;
    let mut status = prev.clone();
    status.idle = idle_after;
    status.busy = busy;
    status.starting = starting + create;
    status.total = total_after_reap + create;
    status.observed_generation = intent.generation;
    let (cs, reason, message) = if idle_after >= intent.min_idle {
        (
            ConditionStatus::True,
            "Ready",
            format!("{idle_after} idle of {} wanted", intent.min_idle),
        )
    } else if room == 0 && want > 0 {
        (
            ConditionStatus::False,
            "AtMaxRunners",
            format!(
                "{idle_after} idle of {} wanted; maxRunners {} reached",
                intent.min_idle, intent.max_runners
            ),
        )
    } else {
        (
            ConditionStatus::False,
            "ScalingUp",
            format!(
                "{idle_after} idle of {} wanted; {} starting",
                intent.min_idle, status.starting
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        Condition {
            type_: READY.to_string(),
            status: cs,
            reason: reason.to_string(),
            message,
            last_transition_time: Time(now),
            observed_generation: intent.generation,
        },
    );
    PoolDecision {
        actions,
        status,
        requeue_after_ms: next_due.map(|d| (d - now).max(0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(min_idle: u32, max_runners: u32) -> PoolIntent {
        PoolIntent {
            generation: 1,
            min_idle,
            max_runners,
            idle_timeout_ms: 60_000,
        }
    }

    fn r(name: &str, state: PoolRunnerState) -> PoolRunner {
        PoolRunner {
            name: name.into(),
            state,
        }
    }

    fn idle(name: &str, since: Millis) -> PoolRunner {
        r(name, PoolRunnerState::Idle { since })
    }

    fn creates(d: &PoolDecision) -> usize {
        d.actions
            .iter()
            .filter(|a| matches!(a, PoolAction::Create { .. }))
            .count()
    }

    #[test]
    fn fills_up_to_min_idle_within_max() {
        let d = reconcile_pool("p", &intent(2, 3), &PoolStatus::default(), &[], &[], 0);
        assert_eq!(creates(&d), 2);
        assert_eq!(d.status.starting, 2);
        let busy = [
            r("a", PoolRunnerState::Busy { run: "x".into() }),
            r("b", PoolRunnerState::Busy { run: "y".into() }),
        ];
        let d = reconcile_pool("p", &intent(2, 3), &PoolStatus::default(), &busy, &[], 0);
        assert_eq!(creates(&d), 1, "only room for one more");
        assert_eq!(d.status.conditions[0].reason, "ScalingUp");
    }

    #[test]
    fn claims_oldest_idle_for_oldest_run_once() {
        let runners = [idle("old", 10), idle("new", 20)];
        let claims = [
            ClaimRequest {
                run: "r2".into(),
                queued_at: 5,
            },
            ClaimRequest {
                run: "r1".into(),
                queued_at: 1,
            },
            ClaimRequest {
                run: "r1".into(),
                queued_at: 1,
            },
        ];
        let d = reconcile_pool(
            "p",
            &intent(0, 5),
            &PoolStatus::default(),
            &runners,
            &claims,
            100,
        );
        assert_eq!(
            d.actions,
            vec![
                PoolAction::Claim {
                    runner: "old".into(),
                    run: "r1".into()
                },
                PoolAction::Claim {
                    runner: "new".into(),
                    run: "r2".into()
                },
            ]
        );
        // A run that already holds a runner gets no second one.
        let runners = [
            r("a", PoolRunnerState::Claimed { run: "r1".into() }),
            idle("b", 1),
        ];
        let d = reconcile_pool(
            "p",
            &intent(0, 5),
            &PoolStatus::default(),
            &runners,
            &claims[1..2],
            100,
        );
        assert!(d.actions.is_empty(), "{:?}", d.actions);
    }

    #[test]
    fn reaps_only_surplus_idle_after_timeout() {
        let runners = [
            idle("a", 0),
            idle("b", 50_000),
            r("c", PoolRunnerState::Busy { run: "x".into() }),
        ];
        let d = reconcile_pool(
            "p",
            &intent(1, 5),
            &PoolStatus::default(),
            &runners,
            &[],
            30_000,
        );
        assert!(d.actions.is_empty());
        assert_eq!(d.requeue_after_ms, Some(30_000));
        let d = reconcile_pool(
            "p",
            &intent(1, 5),
            &PoolStatus::default(),
            &runners,
            &[],
            70_000,
        );
        assert_eq!(d.actions, vec![PoolAction::Reap { runner: "a".into() }]);
        assert_eq!(d.status.idle, 1);
        assert_eq!(d.status.busy, 1);
    }

    #[test]
    fn shrinking_max_reaps_idle_never_busy() {
        let runners = [
            idle("a", 0),
            r("b", PoolRunnerState::Busy { run: "x".into() }),
            r("c", PoolRunnerState::Claimed { run: "y".into() }),
            r("d", PoolRunnerState::Starting),
        ];
        let d = reconcile_pool("p", &intent(0, 1), &PoolStatus::default(), &runners, &[], 1);
        assert_eq!(d.actions, vec![PoolAction::Reap { runner: "a".into() }]);
    }

    #[test]
    fn unchanged_pool_writes_the_same_status() {
        let runners = [idle("a", 0)];
        let first = reconcile_pool(
            "p",
            &intent(1, 2),
            &PoolStatus::default(),
            &runners,
            &[],
            10,
        );
        let second = reconcile_pool("p", &intent(1, 2), &first.status, &runners, &[], 500);
        assert_eq!(first.status, second.status);
        assert!(second.actions.is_empty());
    }
}
