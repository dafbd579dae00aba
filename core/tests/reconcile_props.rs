//! Property tests of the run and pool reconcile decisions, executed against a small simulated
//! world (runners appear, get claimed, finish, get lost; runs get cancelled; time moves), with
//! random interleavings. Invariants: a run never has two runners, busy or claimed runners are
//! never reaped, a pool never exceeds `maxRunners` by its own doing and keeps `minIdle` warm when
//! it can, and a cancelled run always ends terminal.

use proptest::prelude::*;
use sparkwing_core::reconcile::pool::{
    reconcile_pool, ClaimRequest, PoolAction, PoolIntent, PoolRunner, PoolRunnerState,
};
use sparkwing_core::reconcile::run::{
    reconcile_run, CancelRequest, ObservedRunner, RunAction, RunIntent, RunObservation, RunnerState,
};
use sparkwing_core::reconcile::status::{PoolStatus, RunStatus};
use sparkwing_core::RunPhase;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Ev {
    ReconcilePool,
    ReconcileRun(usize),
    RunnerReady(usize),
    RunnerFinishes(usize, bool),
    RunnerLost(usize),
    Cancel(usize, bool),
    Tick(u16),
    ShrinkPool(u8),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => Just(Ev::ReconcilePool),
        6 => (0usize..4).prop_map(Ev::ReconcileRun),
        3 => any::<usize>().prop_map(Ev::RunnerReady),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Ev::RunnerFinishes(i, ok)),
        1 => any::<usize>().prop_map(Ev::RunnerLost),
        1 => (0usize..4, any::<bool>()).prop_map(|(i, g)| Ev::Cancel(i, g)),
        2 => (1u16..40_000).prop_map(Ev::Tick),
        1 => (0u8..4).prop_map(Ev::ShrinkPool),
    ]
}

#[derive(Debug, Clone)]
struct Runner {
    state: PoolRunnerState,
    /// How the run looks on it once it finished.
    finished: Option<RunnerState>,
}

struct World {
    now: i64,
    runners: BTreeMap<String, Runner>,
    runs: Vec<(RunIntent, RunStatus)>,
    claims: Vec<ClaimRequest>,
    pool: PoolIntent,
    pool_status: PoolStatus,
}

impl World {
    fn runner_of(&self, run: &str) -> Vec<String> {
        self.runners
            .iter()
            .filter(|(_, r)| matches!(&r.state, PoolRunnerState::Claimed { run: x } | PoolRunnerState::Busy { run: x } if x == run))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn run_name(i: usize) -> String {
    format!("run{i}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn reconcile_keeps_its_promises(min_idle in 0u32..3, extra in 0u32..3, events in prop::collection::vec(ev(), 1..250)) {
        let mut w = World {
            now: 1_000,
            runners: BTreeMap::new(),
            runs: (0..4).map(|_| (RunIntent { max_attempts: 2, ..Default::default() }, RunStatus::default())).collect(),
            claims: vec![],
            pool: PoolIntent { generation: 1, min_idle, max_runners: min_idle + extra + 1, idle_timeout_ms: 30_000 },
            pool_status: PoolStatus::default(),
        };
        let mut cancel_asked: Vec<Option<i64>> = vec![None; 4];
        // Run everything, then keep reconciling to let every run settle.
        let settle: Vec<Ev> = (0..40).flat_map(|_| {
            let mut v = vec![Ev::ReconcilePool];
            for i in 0..4 { v.push(Ev::RunnerReady(i)); v.push(Ev::ReconcileRun(i)); v.push(Ev::RunnerFinishes(i, true)); }
            v.push(Ev::Tick(1000));
            v
        }).collect();
        for e in events.into_iter().chain(settle) {
            match e {
                Ev::Tick(ms) => w.now += ms as i64,
                Ev::ShrinkPool(by) => {
                    w.pool.max_runners = w.pool.max_runners.saturating_sub(by as u32).max(w.pool.min_idle);
                    w.pool.generation += 1;
                }
                Ev::RunnerReady(i) => {
                    let names: Vec<String> = w.runners.iter().filter(|(_, r)| r.state == PoolRunnerState::Starting).map(|(n, _)| n.clone()).collect();
                    if !names.is_empty() {
                        let n = &names[i % names.len()];
                        w.runners.get_mut(n).unwrap().state = PoolRunnerState::Idle { since: w.now };
                    }
                    // A claimed runner starts working for its run.
                    let claimed: Vec<String> = w.runners.iter().filter(|(_, r)| matches!(r.state, PoolRunnerState::Claimed { .. })).map(|(n, _)| n.clone()).collect();
                    if !claimed.is_empty() {
                        let n = &claimed[i % claimed.len()];
                        let r = w.runners.get_mut(n).unwrap();
                        if let PoolRunnerState::Claimed { run } = r.state.clone() { r.state = PoolRunnerState::Busy { run }; }
                    }
                }
                Ev::RunnerFinishes(i, ok) => {
                    let busy: Vec<String> = w.runners.iter().filter(|(_, r)| matches!(r.state, PoolRunnerState::Busy { .. }) && r.finished.is_none()).map(|(n, _)| n.clone()).collect();
                    if !busy.is_empty() {
                        let n = &busy[i % busy.len()];
                        w.runners.get_mut(n).unwrap().finished = Some(if ok { RunnerState::Succeeded } else { RunnerState::Failed { exit_code: Some(1) } });
                    }
                }
                Ev::RunnerLost(i) => {
                    let names: Vec<String> = w.runners.keys().cloned().collect();
                    if !names.is_empty() {
                        w.runners.remove(&names[i % names.len()]);
                    }
                }
                Ev::Cancel(i, graceful) => {
                    w.runs[i].0.cancel = if graceful { CancelRequest::CancelledRunFinally } else { CancelRequest::Cancelled };
                    cancel_asked[i].get_or_insert(w.now);
                }
                Ev::ReconcilePool => {
                    let runners: Vec<PoolRunner> = w.runners.iter().map(|(n, r)| PoolRunner { name: n.clone(), state: r.state.clone() }).collect();
                    let total_before = runners.len() as u32;
                    let d = reconcile_pool("pool", &w.pool, &w.pool_status, &runners, &w.claims, w.now);
                    let mut created = 0;
                    for a in &d.actions {
                        match a {
                            PoolAction::Create { name } => {
                                prop_assert!(!w.runners.contains_key(name));
                                w.runners.insert(name.clone(), Runner { state: PoolRunnerState::Starting, finished: None });
                                created += 1;
                            }
                            PoolAction::Claim { runner, run } => {
                                prop_assert!(w.runner_of(run).is_empty(), "run {} claimed a second runner", run);
                                let r = w.runners.get_mut(runner).unwrap();
                                prop_assert!(matches!(r.state, PoolRunnerState::Idle { .. }), "claimed a non-idle runner");
                                r.state = PoolRunnerState::Claimed { run: run.clone() };
                                w.claims.retain(|c| &c.run != run);
                            }
                            PoolAction::Reap { runner } => {
                                let r = w.runners.remove(runner).unwrap();
                                prop_assert!(matches!(r.state, PoolRunnerState::Idle { .. }), "reaped a runner that was {:?}", r.state);
                            }
                        }
                    }
                    if created > 0 {
                        prop_assert!(total_before + created <= w.pool.max_runners, "created past maxRunners");
                    }
                    let busy = w.runners.values().filter(|r| matches!(r.state, PoolRunnerState::Busy { .. } | PoolRunnerState::Claimed { .. })).count() as u32;
                    let warm = w.runners.values().filter(|r| matches!(r.state, PoolRunnerState::Idle { .. } | PoolRunnerState::Starting)).count() as u32;
                    if w.runners.len() as u32 <= w.pool.max_runners {
                        prop_assert!(warm >= w.pool.min_idle.min(w.pool.max_runners.saturating_sub(busy)), "warm {} < minIdle {}", warm, w.pool.min_idle);
                    }
                    w.pool_status = d.status;
                }
                Ev::ReconcileRun(i) => {
                    let name = run_name(i);
                    let mine = w.runner_of(&name);
                    prop_assert!(mine.len() <= 1, "run {} has runners {:?}", name, mine);
                    let observed = RunObservation {
                        runner: mine.first().map(|n| {
                            let r = &w.runners[n];
                            ObservedRunner {
                                name: n.clone(),
                                attempt: w.runs[i].1.attempts.max(1),
                                state: match (&r.state, &r.finished) {
                                    (_, Some(f)) => f.clone(),
                                    (PoolRunnerState::Claimed { .. }, None) => RunnerState::Starting { unschedulable: None },
                                    _ => RunnerState::Running,
                                },
                                stopping: false,
                            }
                        }),
                        jobs: vec![],
                    };
                    let (intent, prev) = w.runs[i].clone();
                    let d = reconcile_run(&intent, &prev, &observed, w.now);
                    for a in &d.actions {
                        match a {
                            RunAction::StartRunner { .. } => {
                                if !w.claims.iter().any(|c| c.run == name) && w.runner_of(&name).is_empty() {
                                    w.claims.push(ClaimRequest { run: name.clone(), queued_at: w.now });
                                }
                            }
                            RunAction::StopRunner { name: runner, graceful } => {
                                if let Some(r) = w.runners.get_mut(runner) {
                                    // Stopping ends the runner: graceful ones exit 130 after finally jobs.
                                    r.finished = Some(if *graceful { RunnerState::Failed { exit_code: Some(130) } } else { RunnerState::Lost { reason: "stopped".into() } });
                                    if !*graceful { w.runners.remove(runner); }
                                }
                            }
                            RunAction::DeleteRun | RunAction::Event { .. } => {}
                        }
                    }
                    if d.status.phase.is_terminal() {
                        // The runner's work is done; it leaves the pool (a Job would complete).
                        for n in w.runner_of(&name) { w.runners.remove(&n); }
                        w.claims.retain(|c| c.run != name);
                    }
                    w.runs[i].1 = d.status;
                }
            }
        }
        for (i, asked) in cancel_asked.iter().enumerate() {
            if asked.is_some() {
                prop_assert!(w.runs[i].1.phase.is_terminal(), "cancelled run {} ended {:?}", i, w.runs[i].1.phase);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum ExtEv {
    Reconcile,
    Tick(u16),
    Cancel,
    /// The API records the executor's end (`POST .../finish`).
    Finish(u8),
}

fn ext_ev() -> impl Strategy<Value = ExtEv> {
    prop_oneof![
        5 => Just(ExtEv::Reconcile),
        3 => (1u16..20_000).prop_map(ExtEv::Tick),
        1 => Just(ExtEv::Cancel),
        1 => (0u8..3).prop_map(ExtEv::Finish),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// An external run: the reconcile never starts or stops a runner, never moves a finished run,
    /// keeps the end its executor recorded, and ends when cancelled or past its timeout.
    #[test]
    fn external_runs_only_honour_their_recorded_end(
        timeout in prop::option::of(1_000u64..60_000),
        events in prop::collection::vec(ext_ev(), 1..120),
    ) {
        use sparkwing_core::reconcile::run::record_external_end;
        let mut intent = RunIntent { external: true, timeout_ms: timeout, ..Default::default() };
        let mut status = RunStatus::default();
        let mut now = 1_000i64;
        let mut recorded: Option<RunStatus> = None;
        for e in events.into_iter().chain(std::iter::once(ExtEv::Reconcile)) {
            match e {
                ExtEv::Tick(ms) => now += ms as i64,
                ExtEv::Cancel => intent.cancel = CancelRequest::Cancelled,
                ExtEv::Finish(i) => {
                    let end = [RunPhase::Succeeded, RunPhase::Failed, RunPhase::Cancelled][i as usize];
                    match record_external_end(&status, end, "", intent.generation, now) {
                        Some(s) => {
                            prop_assert!(!status.phase.is_terminal());
                            prop_assert_eq!(s.phase, end);
                            recorded = Some(s.clone());
                            status = s;
                        }
                        None => prop_assert!(status.phase.is_terminal()),
                    }
                }
                ExtEv::Reconcile => {
                    let d = reconcile_run(&intent, &status, &RunObservation::default(), now);
                    // Deterministic: the same inputs give the same decision.
                    prop_assert_eq!(&d, &reconcile_run(&intent, &status, &RunObservation::default(), now));
                    prop_assert!(d.actions.iter().all(|a| matches!(a, RunAction::Event { .. })), "{:?}", d.actions);
                    if status.phase.is_terminal() {
                        prop_assert_eq!(&d.status, &status);
                    }
                    prop_assert_eq!(d.status.runner.as_deref(), None);
                    prop_assert_eq!(d.status.attempts, 0);
                    status = d.status;
                    if let Some(t) = timeout {
                        let started = status.start_time.map(|t| t.0).unwrap_or(now);
                        if now >= started + t as i64 {
                            prop_assert!(status.phase.is_terminal());
                        }
                    }
                    if intent.cancel != CancelRequest::None {
                        prop_assert!(status.phase.is_terminal());
                    }
                }
            }
            if let Some(r) = &recorded {
                prop_assert_eq!(&status, r, "the recorded end was overwritten");
            }
        }
    }
}
