//! Property tests of the scheduler over random plans and random interleavings of job outcomes and
//! a cancel: the promises of `docs/running.md` hold whatever happens.

use proptest::prelude::*;
use sparkwing_core::dag::validate;
use sparkwing_core::protocol::{JobSpec, PlanDoc};
use sparkwing_core::scheduler::{Action, AttemptOutcome};
use sparkwing_core::{JobState, RunPhase, Scheduler};
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
struct JobGen {
    needs_mask: u16,
    optional: bool,
    finally: bool,
    retries: u32,
    skip: bool,
}

fn job_gen() -> impl Strategy<Value = JobGen> {
    (
        any::<u16>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        0u32..3,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(needs_mask, optional, finally, retries, skip)| JobGen {
            needs_mask,
            optional,
            finally,
            retries,
            skip,
        })
}

fn build(gens: &[JobGen]) -> Vec<JobSpec> {
    gens.iter()
        .enumerate()
        .map(|(i, g)| {
            let mut j = JobSpec::new(&format!("j{i}"));
            // Only earlier jobs may be needed, so the graph is a DAG; only finally jobs may need
            // finally jobs (the plan check refuses the rest).
            j.needs = (0..i)
                .filter(|k| g.needs_mask & (1 << k) != 0)
                .filter(|&k| g.finally || !gens[k].finally)
                .map(|k| format!("j{k}"))
                .collect();
            j.optional = g.optional;
            j.finally = g.finally;
            j.retries = g.retries;
            j.skip = g.skip.then(|| "skip".to_string());
            j
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Step {
    /// Finish the running attempt at this position (mod the number running) with this outcome.
    Finish(usize, u8),
    Cancel,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            20 => (any::<usize>(), 0u8..3).prop_map(|(i, o)| Step::Finish(i, o)),
            1 => Just(Step::Cancel),
        ],
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn scheduler_keeps_its_promises(gens in prop::collection::vec(job_gen(), 1..12), workers in 1usize..5, script in steps()) {
        let jobs = build(&gens);
        let plan = validate(&PlanDoc { protocol: 1, concurrency: None, entrypoint: "P".into(), jobs: jobs.clone() }).unwrap();
        let needs = plan.needs.clone();
        let mut s = Scheduler::new(plan, workers);
        let mut running: Vec<usize> = Vec::new(); // attempts in progress (or waiting to retry)
        let mut first_starts: BTreeSet<usize> = BTreeSet::new();
        let mut cancelled = false;

        let handle = |s: &mut Scheduler, actions: Vec<Action>, running: &mut Vec<usize>, first_starts: &mut BTreeSet<usize>| {
            for a in actions {
                match a {
                    Action::Start { job, attempt } => {
                        prop_assert_eq!(attempt, 1);
                        prop_assert!(first_starts.insert(job), "job {} started twice", job);
                        let spec = &jobs[job];
                        if spec.finally {
                            for (k, other) in jobs.iter().enumerate() {
                                if !other.finally {
                                    prop_assert!(s.job(k).state.is_terminal(), "finally {} before {} ended", job, k);
                                }
                            }
                            for &n in &needs[job] {
                                prop_assert!(s.job(n).state.is_terminal());
                            }
                        } else {
                            prop_assert!(!s.is_cancelling(), "job {} started after cancel", job);
                            for &n in &needs[job] {
                                prop_assert!(s.job(n).state.satisfies_needs(), "job {} started before need {}", job, n);
                            }
                        }
                        running.push(job);
                    }
                    Action::Retry { job, .. } => {
                        // The job keeps its worker while it waits to retry.
                        prop_assert_eq!(s.job(job).state, JobState::Running);
                        running.push(job);
                    }
                    Action::Settled { job } => {
                        let st = s.job(job).state;
                        prop_assert!(matches!(st, JobState::Skipped | JobState::Cancelled), "{:?}", st);
                    }
                    // These plans have no fan-out templates.
                    Action::Expand { job } => {
                        prop_assert!(false, "job {} expanded without being a fan-out", job);
                    }
                }
                prop_assert!(running.len() <= workers, "{} running > {} workers", running.len(), workers);
            }
            Ok(())
        };

        let a = s.poll();
        handle(&mut s, a, &mut running, &mut first_starts)?;
        let mut script = script.into_iter();
        let mut guard = 0;
        while !s.is_done() {
            guard += 1;
            prop_assert!(guard < 10_000, "no progress");
            let step = script.next().unwrap_or(Step::Finish(0, 0));
            match step {
                Step::Cancel => {
                    if !cancelled {
                        cancelled = true;
                        let (stop, actions) = s.cancel();
                        for j in &stop {
                            prop_assert!(running.contains(j));
                            prop_assert!(!jobs[*j].finally);
                        }
                        handle(&mut s, actions, &mut running, &mut first_starts)?;
                    }
                }
                Step::Finish(i, o) => {
                    prop_assert!(!running.is_empty(), "nothing running but not done: {:?}", s.jobs());
                    let job = running.remove(i % running.len());
                    let outcome = match (o, cancelled && !jobs[job].finally) {
                        (_, true) => AttemptOutcome::Killed,
                        (0, _) => AttemptOutcome::Success,
                        _ => AttemptOutcome::Failed { reason: "boom".into() },
                    };
                    let actions = s.attempt_finished(job, outcome);
                    handle(&mut s, actions, &mut running, &mut first_starts)?;
                }
            }
        }
        prop_assert!(running.is_empty());
        // Every finally job ran (unless skipped by its plan), whatever happened.
        for (i, j) in jobs.iter().enumerate() {
            if j.finally && j.skip.is_none() {
                prop_assert!(first_starts.contains(&i), "finally job {} never ran", i);
            }
            // A job whose need did not succeed never ran (finally jobs excepted).
            if !j.finally && needs[i].iter().any(|&n| !s.job(n).state.satisfies_needs()) {
                prop_assert!(!first_starts.contains(&i));
            }
        }
        let (status, _) = s.outcome();
        let failed = jobs.iter().enumerate().any(|(i, j)| !j.optional && s.job(i).state == JobState::Failed);
        let expected = if cancelled { RunPhase::Cancelled } else if failed { RunPhase::Failed } else { RunPhase::Succeeded };
        prop_assert_eq!(status, expected);
    }
}
