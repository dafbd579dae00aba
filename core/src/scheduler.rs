//! The run's job state machine: which jobs start, which are skipped or cancelled, when the run ends
//! and with which status. The engine reports what happened; the scheduler answers with actions.
//!
//! Rules (also in `docs/running.md`):
//! - a job starts once every job it needs has succeeded or been skipped, within the worker bound;
//! - a job a re-run does not execute (`rerun`) settles at once, `reused` with the old run's
//!   outputs (or `failed`/`cancelled` as it ended there);
//! - a job whose need failed or was cancelled is cancelled with reason `upstream-failed`, unless
//!   its `when` condition asks whether an upstream failed (then it waits for its needs to end);
//! - a job with a `when` condition is skipped, with reason `condition false: <condition>`, when
//!   the condition is false at the moment it would start (`condition`);
//! - an approval gate (`gate`) that is ready becomes `waiting` instead of starting; it holds no
//!   worker, ends as its decision says (`gate_decided`: approved succeeds, rejected fails) and is
//!   never retried;
//! - a failed attempt is retried while attempts remain, unless the run is being cancelled;
//! - `finally` jobs start once every other job is terminal and their own needs are terminal,
//!   whatever the outcomes, also when the run was cancelled;
//! - the run fails when a non-optional job failed, is cancelled when cancel was asked, else succeeds.

use crate::condition::{Cond, Facts};
use crate::dag::ValidatedPlan;
use crate::protocol::retry_delay_ms;
use crate::state::{JobState, RunPhase};
use std::collections::BTreeMap;

/// Reason recorded for a job cancelled because a job it needs did not succeed.
pub const UPSTREAM_FAILED: &str = "upstream-failed";
/// Reason recorded for a job stopped or never started because the run was cancelled.
pub const CANCELLED: &str = "cancelled";

/// What the engine must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start attempt `attempt` of job `job` now.
    Start { job: usize, attempt: u32 },
    /// Start attempt `attempt` of job `job` after waiting `after_ms`.
    Retry {
        job: usize,
        attempt: u32,
        after_ms: u64,
    },
    /// A job reached a terminal state without running (skipped or cancelled); record it.
    Settled { job: usize },
    /// A fan-out template is ready: read its list from the job it fans out from
    /// (`fanout::items`), then report `expand` or `fan_out_failed`.
    Expand { job: usize },
}

/// How one attempt of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success,
    Failed {
        reason: String,
    },
    /// Stopped by the engine because the run is being cancelled.
    Killed,
    /// Not run: a memoized job's result was taken from an earlier run (`memo`); `reason` says
    /// which.
    Cached {
        reason: String,
    },
}

/// One job's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    pub state: JobState,
    pub reason: Option<String>,
    pub attempt: u32,
}

#[derive(Debug, Clone)]
pub struct Scheduler {
    plan: ValidatedPlan,
    jobs: Vec<JobProgress>,
    max_workers: usize,
    /// Jobs holding a worker: running an attempt or waiting to retry.
    busy: usize,
    cancelling: bool,
    /// Each job's outputs, once it succeeded (read by conditions).
    outputs: Vec<BTreeMap<String, String>>,
    /// The run's git branch (read by conditions).
    branch: Option<String>,
    /// How each job a re-run takes from the run it retries settles, and why (`rerun`).
    reused: Vec<Option<(JobState, String)>>,
    /// Placed jobs run in pods of their own (a cluster's coordinator, `job_pod`): they hold no
    /// worker of this runner.
    own_pods: bool,
}

impl Scheduler {
    pub fn new(plan: ValidatedPlan, max_workers: usize) -> Self {
        let count = plan.jobs.len();
        let jobs = plan
            .jobs
            .iter()
            .map(|_| JobProgress {
                state: JobState::Pending,
                reason: None,
                attempt: 0,
            })
            .collect();
        Scheduler {
            plan,
            jobs,
            max_workers: max_workers.max(1),
            busy: 0,
            cancelling: false,
            outputs: vec![BTreeMap::new(); count],
            branch: None,
            reused: vec![None; count],
            own_pods: false,
        }
    }

    /// Placed jobs run in pods of their own (`job_pod`): they start without waiting for a worker
    /// of this runner, and hold none.
    pub fn with_own_pods(mut self, own_pods: bool) -> Self {
        self.own_pods = own_pods;
        self
    }

    /// Whether job `i` holds a worker while it runs: not a gate, nor a placed job in its own pod.
    fn holds_worker(&self, i: usize) -> bool {
        let spec = &self.plan.jobs[i];
        spec.gate.is_none() && !(self.own_pods && spec.placement.is_some() && spec.awaits.is_none())
    }

    /// The run's git branch, for `branch` conditions.
    pub fn with_branch(mut self, branch: Option<String>) -> Self {
        self.branch = branch;
        self
    }

    /// The jobs a re-run does not execute (by job, from `rerun::plan_retry`): each settles without
    /// running, in the state given, its outputs those of the run retried.
    pub fn with_reused(mut self, reused: Vec<Option<crate::rerun::Reused>>) -> Self {
        for (i, r) in reused.into_iter().enumerate() {
            if let Some(r) = r {
                self.outputs[i] = r.outputs;
                self.reused[i] = Some((r.state, r.reason));
            }
        }
        self
    }

    /// Report a job's outputs; call before reporting its attempt's end.
    pub fn set_outputs(&mut self, job: usize, outputs: BTreeMap<String, String>) {
        self.outputs[job] = outputs;
    }

    /// Why a ready job must be skipped instead of started: its condition is false.
    fn condition_false(&self, cond: &Cond, upstream_failed: bool) -> Option<String> {
        let output = |job: &str, name: &str| {
            self.plan
                .index_of(job)
                .and_then(|j| self.outputs[j].get(name))
                .map(String::as_str)
        };
        let facts = Facts {
            output: &output,
            branch: self.branch.as_deref(),
            upstream_failed,
        };
        (!cond.holds(&facts)).then(|| format!("condition false: {cond}"))
    }

    pub fn plan(&self) -> &ValidatedPlan {
        &self.plan
    }

    pub fn job(&self, job: usize) -> &JobProgress {
        &self.jobs[job]
    }

    pub fn jobs(&self) -> &[JobProgress] {
        &self.jobs
    }

    pub fn is_cancelling(&self) -> bool {
        self.cancelling
    }

    /// Decide what can move now. Call after creating the scheduler and after every report.
    pub fn poll(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        loop {
            let mut changed = false;
            for i in 0..self.jobs.len() {
                if self.jobs[i].state != JobState::Pending {
                    continue;
                }
                match self.readiness(i) {
                    Readiness::Wait => {}
                    Readiness::Settle(state, reason) => {
                        self.jobs[i].state = state;
                        self.jobs[i].reason = Some(reason);
                        actions.push(Action::Settled { job: i });
                        changed = true;
                    }
                    // A fan-out template runs nothing: the engine reads its list now.
                    Readiness::Ready if self.plan.jobs[i].fan_out.is_some() => {
                        self.jobs[i].state = JobState::Running;
                        self.jobs[i].attempt = 1;
                        actions.push(Action::Expand { job: i });
                        changed = true;
                    }
                    // A gate runs nothing, so it waits without holding a worker.
                    Readiness::Ready if self.plan.jobs[i].gate.is_some() => {
                        self.jobs[i].state = JobState::Waiting;
                        self.jobs[i].attempt = 1;
                        actions.push(Action::Start { job: i, attempt: 1 });
                        changed = true;
                    }
                    Readiness::Ready if !self.holds_worker(i) => {
                        self.jobs[i].state = JobState::Running;
                        self.jobs[i].attempt = 1;
                        actions.push(Action::Start { job: i, attempt: 1 });
                        changed = true;
                    }
                    Readiness::Ready => {
                        if self.busy < self.max_workers {
                            self.busy += 1;
                            self.jobs[i].state = JobState::Running;
                            self.jobs[i].attempt = 1;
                            actions.push(Action::Start { job: i, attempt: 1 });
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                return actions;
            }
        }
    }

    fn readiness(&self, i: usize) -> Readiness {
        let spec = &self.plan.jobs[i];
        if spec.is_template() {
            return self.template_readiness(i);
        }
        if let Some((state, reason)) = &self.reused[i] {
            return Readiness::Settle(*state, reason.clone());
        }
        if let Some(reason) = &spec.skip {
            return Readiness::Settle(JobState::Skipped, reason.clone());
        }
        let needs = &self.plan.needs[i];
        let failed = |n: &usize| {
            let st = self.jobs[*n].state;
            st.is_terminal() && !st.satisfies_needs()
        };
        let decide = |upstream_failed: bool| match &spec.when {
            Some(cond) => match self.condition_false(cond, upstream_failed) {
                Some(reason) => Readiness::Settle(JobState::Skipped, reason),
                None => Readiness::Ready,
            },
            None => Readiness::Ready,
        };
        if spec.finally {
            let others_done = self
                .jobs
                .iter()
                .zip(&self.plan.jobs)
                .all(|(p, s)| s.finally || p.state.is_terminal());
            let needs_done = needs.iter().all(|&n| self.jobs[n].state.is_terminal());
            return if others_done && needs_done {
                decide(needs.iter().any(failed))
            } else {
                Readiness::Wait
            };
        }
        if self.cancelling {
            return Readiness::Settle(JobState::Cancelled, CANCELLED.to_string());
        }
        let waits_for_failures = spec.when.as_ref().is_some_and(Cond::considers_failures);
        if !waits_for_failures && needs.iter().any(failed) {
            return Readiness::Settle(JobState::Cancelled, UPSTREAM_FAILED.to_string());
        }
        if needs.iter().all(|&n| self.jobs[n].state.is_terminal()) {
            decide(needs.iter().any(failed))
        } else {
            Readiness::Wait
        }
    }

    /// A template (fan-out or matrix) runs nothing itself: once its needs succeeded a matrix
    /// (expanded at plan time) settles `success`, a fan-out is ready to expand; its `when` is its
    /// expanded jobs', decided for each of them.
    fn template_readiness(&self, i: usize) -> Readiness {
        let spec = &self.plan.jobs[i];
        if let Some(reason) = &spec.skip {
            return Readiness::Settle(JobState::Skipped, reason.clone());
        }
        let needs = &self.plan.needs[i];
        let failed = |n: &usize| {
            let st = self.jobs[*n].state;
            st.is_terminal() && !st.satisfies_needs()
        };
        let needs_done = needs.iter().all(|&n| self.jobs[n].state.is_terminal());
        if spec.finally {
            // As a finally job: once every other job and its own needs ended, whatever happened.
            let others_done = self
                .jobs
                .iter()
                .zip(&self.plan.jobs)
                .all(|(p, s)| s.finally || p.state.is_terminal());
            if !(others_done && needs_done) {
                return Readiness::Wait;
            }
        } else {
            if self.cancelling {
                return Readiness::Settle(JobState::Cancelled, CANCELLED.to_string());
            }
            // Its jobs' condition may ask whether an upstream failed: then they decide.
            let waits_for_failures = spec.when.as_ref().is_some_and(Cond::considers_failures);
            if !waits_for_failures && needs.iter().any(failed) {
                return Readiness::Settle(JobState::Cancelled, UPSTREAM_FAILED.to_string());
            }
            if !needs_done {
                return Readiness::Wait;
            }
        }
        match &spec.fan_out {
            None => Readiness::Settle(
                JobState::Success,
                crate::fanout::expanded_reason(&spec.id, self.plan.expanded_of(&spec.id).len()),
            ),
            Some(f) => match self.plan.index_of(&f.job).map(|p| self.jobs[p].state) {
                Some(JobState::Skipped) => Readiness::Settle(
                    JobState::Skipped,
                    crate::fanout::producer_skipped_reason(&f.job),
                ),
                // No list without a producer that succeeded.
                Some(st) if !st.satisfies_needs() => {
                    Readiness::Settle(JobState::Cancelled, UPSTREAM_FAILED.to_string())
                }
                _ => Readiness::Ready,
            },
        }
    }

    /// The outputs of job `job` as reported (`set_outputs`), or reused from the run retried.
    pub fn outputs_of(&self, job: usize) -> &BTreeMap<String, String> {
        &self.outputs[job]
    }

    /// Report the jobs fan-out template `template` expanded into (`fanout::expand`), each with
    /// what a re-run reuses for it (`rerun::reuse_expanded`; `None` executes it). They join the
    /// plan (`ValidatedPlan::add_expanded`), the template succeeds with reason `fanned out into N
    /// jobs`, and the jobs needing it wait for all of them.
    pub fn expand(
        &mut self,
        template: usize,
        expanded: Vec<crate::protocol::JobSpec>,
        reused: Vec<Option<crate::rerun::Reused>>,
    ) -> Vec<Action> {
        assert_eq!(
            self.jobs[template].state,
            JobState::Running,
            "not expanding"
        );
        let count = expanded.len();
        let added = self.plan.add_expanded(template, expanded);
        let mut reused = reused.into_iter();
        for _ in added {
            let r = reused.next().flatten();
            self.jobs.push(JobProgress {
                state: JobState::Pending,
                reason: None,
                attempt: 0,
            });
            match r {
                Some(r) => {
                    self.outputs.push(r.outputs);
                    self.reused.push(Some((r.state, r.reason)));
                }
                None => {
                    self.outputs.push(BTreeMap::new());
                    self.reused.push(None);
                }
            }
        }
        self.jobs[template].state = JobState::Success;
        self.jobs[template].reason = Some(crate::fanout::expanded_reason(
            &self.plan.jobs[template].id,
            count,
        ));
        self.poll()
    }

    /// Report that fan-out template `template` could not expand (`fanout::FanOutError`): it
    /// fails with that reason, and the jobs needing it are cancelled.
    pub fn fan_out_failed(&mut self, template: usize, reason: String) -> Vec<Action> {
        assert_eq!(
            self.jobs[template].state,
            JobState::Running,
            "not expanding"
        );
        self.jobs[template].state = JobState::Failed;
        self.jobs[template].reason = Some(reason);
        self.poll()
    }

    /// Report how an attempt ended.
    pub fn attempt_finished(&mut self, job: usize, outcome: AttemptOutcome) -> Vec<Action> {
        assert!(
            matches!(self.jobs[job].state, JobState::Running | JobState::Waiting),
            "job not running"
        );
        let spec = &self.plan.jobs[job];
        match outcome {
            AttemptOutcome::Success => self.finish(job, JobState::Success, None),
            AttemptOutcome::Failed { reason } => {
                let attempt = self.jobs[job].attempt;
                let stop_retrying = self.cancelling && !spec.finally;
                if attempt <= spec.retries && !stop_retrying && spec.gate.is_none() {
                    let next = attempt + 1;
                    self.jobs[job].attempt = next;
                    self.jobs[job].reason = Some(reason);
                    let mut actions = vec![Action::Retry {
                        job,
                        attempt: next,
                        after_ms: retry_delay_ms(spec.backoff_ms, next),
                    }];
                    actions.extend(self.poll());
                    return actions;
                }
                self.finish(job, JobState::Failed, Some(reason))
            }
            AttemptOutcome::Killed => self.finish(job, JobState::Cancelled, Some(CANCELLED.into())),
            AttemptOutcome::Cached { reason } => self.finish(job, JobState::Cached, Some(reason)),
        }
    }

    /// Report a waiting gate's decision: approved, it succeeds; rejected, it fails with a reason
    /// naming who decided, so the jobs needing it are cancelled as after a failed job.
    pub fn gate_decided(&mut self, job: usize, decided: &crate::gate::Decided) -> Vec<Action> {
        let outcome = match decided.decision {
            crate::gate::Decision::Approve => AttemptOutcome::Success,
            crate::gate::Decision::Reject => AttemptOutcome::Failed {
                reason: crate::gate::reason(decided),
            },
        };
        self.attempt_finished(job, outcome)
    }

    fn finish(&mut self, job: usize, state: JobState, reason: Option<String>) -> Vec<Action> {
        if self.holds_worker(job) {
            self.busy -= 1;
        }
        self.jobs[job].state = state;
        self.jobs[job].reason = reason;
        self.poll()
    }

    /// Ask the run to stop. Returns the running jobs the engine must stop (finally jobs are left to
    /// finish); pending jobs are settled as cancelled by the actions this also returns.
    pub fn cancel(&mut self) -> (Vec<usize>, Vec<Action>) {
        self.cancelling = true;
        let to_stop = (0..self.jobs.len())
            .filter(|&i| {
                matches!(self.jobs[i].state, JobState::Running | JobState::Waiting)
                    && !self.plan.jobs[i].finally
            })
            .collect();
        (to_stop, self.poll())
    }

    /// What the run does with its box slot now (`gate::box_slot_step`): the jobs holding a
    /// worker need it, gates waiting alone do not.
    pub fn box_slot_step(&self, now: crate::gate::BoxSlotHold) -> crate::gate::BoxSlotStep {
        crate::gate::box_slot_step(now, self.busy, &self.waiting_gates())
    }

    /// The gates waiting for a decision, in plan order.
    pub fn waiting_gates(&self) -> Vec<&str> {
        self.jobs
            .iter()
            .zip(&self.plan.jobs)
            .filter(|(p, _)| p.state == JobState::Waiting)
            .map(|(_, s)| s.id.as_str())
            .collect()
    }

    /// Why the run's coordinator may park now (`gate::only_gates_wait`): nothing but gates is
    /// in flight. `None` while a job holds a worker or no gate waits.
    pub fn only_gates_wait(&self) -> Option<String> {
        if self.cancelling {
            return None;
        }
        crate::gate::only_gates_wait(self.busy, &self.waiting_gates())
    }

    pub fn is_done(&self) -> bool {
        self.jobs.iter().all(|j| j.state.is_terminal())
    }

    /// The run's status and error once every job is terminal.
    pub fn outcome(&self) -> (RunPhase, Option<String>) {
        if self.cancelling {
            return (RunPhase::Cancelled, Some("cancelled".to_string()));
        }
        let failed: Vec<&str> = self
            .jobs
            .iter()
            .zip(&self.plan.jobs)
            .filter(|(p, s)| p.state == JobState::Failed && !s.optional)
            .map(|(_, s)| s.id.as_str())
            .collect();
        if failed.is_empty() {
            (RunPhase::Succeeded, None)
        } else {
            let noun = if failed.len() == 1 { "job" } else { "jobs" };
            (
                RunPhase::Failed,
                Some(format!("{noun} failed: {}", failed.join(", "))),
            )
        }
    }
}

enum Readiness {
    Wait,
    Ready,
    Settle(JobState, String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::validate;
    use crate::protocol::{JobSpec, PlanDoc};

    #[test]
    fn placed_jobs_in_their_own_pods_hold_no_worker() {
        let mut jobs: Vec<JobSpec> = (0..3)
            .map(|i| {
                let mut j = JobSpec::new(&format!("p{i}"));
                j.placement = Some(crate::placement::PlacementSpec::default());
                j
            })
            .collect();
        jobs.push(JobSpec::new("local"));
        let mut s = sched(jobs.clone(), 1).with_own_pods(true);
        let started: Vec<usize> = s
            .poll()
            .into_iter()
            .filter_map(|a| match a {
                Action::Start { job, .. } => Some(job),
                _ => None,
            })
            .collect();
        assert_eq!(started, vec![0, 1, 2, 3]);
        s.attempt_finished(0, AttemptOutcome::Success);
        s.attempt_finished(3, AttemptOutcome::Success);
        // Without pods of their own, placed jobs wait for the one worker like any job.
        let mut s = sched(jobs, 1);
        assert_eq!(s.poll(), vec![Action::Start { job: 0, attempt: 1 }]);
    }

    fn sched(jobs: Vec<JobSpec>, workers: usize) -> Scheduler {
        let plan = validate(&PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: "T".into(),
            jobs,
        })
        .unwrap();
        Scheduler::new(plan, workers)
    }

    fn started(actions: &[Action]) -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { job, .. } => Some(*job),
                _ => None,
            })
            .collect()
    }

    fn fail(reason: &str) -> AttemptOutcome {
        AttemptOutcome::Failed {
            reason: reason.into(),
        }
    }

    #[test]
    fn parallel_where_needs_allow_and_bounded() {
        let mut s = sched(
            vec![
                JobSpec::new("a"),
                JobSpec::new("b"),
                JobSpec::new("c"),
                JobSpec::new("d").needs(&["a", "b", "c"]),
            ],
            2,
        );
        assert_eq!(started(&s.poll()), vec![0, 1]);
        assert_eq!(
            started(&s.attempt_finished(0, AttemptOutcome::Success)),
            vec![2]
        );
        assert!(started(&s.attempt_finished(1, AttemptOutcome::Success)).is_empty());
        assert_eq!(
            started(&s.attempt_finished(2, AttemptOutcome::Success)),
            vec![3]
        );
        s.attempt_finished(3, AttemptOutcome::Success);
        assert!(s.is_done());
        assert_eq!(s.outcome(), (RunPhase::Succeeded, None));
    }

    #[test]
    fn failure_cancels_dependents_but_not_independent_branches() {
        let mut s = sched(
            vec![
                JobSpec::new("a"),
                JobSpec::new("b").needs(&["a"]),
                JobSpec::new("c").needs(&["b"]),
                JobSpec::new("x"),
                JobSpec::new("y").needs(&["x"]),
            ],
            4,
        );
        assert_eq!(started(&s.poll()), vec![0, 3]);
        let acts = s.attempt_finished(0, fail("exit code 1"));
        assert!(acts.contains(&Action::Settled { job: 1 }));
        assert!(acts.contains(&Action::Settled { job: 2 }));
        assert_eq!(s.job(1).reason.as_deref(), Some(UPSTREAM_FAILED));
        assert_eq!(s.job(2).state, JobState::Cancelled);
        assert_eq!(
            started(&s.attempt_finished(3, AttemptOutcome::Success)),
            vec![4]
        );
        s.attempt_finished(4, AttemptOutcome::Success);
        assert!(s.is_done());
        assert_eq!(
            s.outcome(),
            (RunPhase::Failed, Some("job failed: a".to_string()))
        );
    }

    #[test]
    fn retries_with_backoff_then_fails() {
        let mut j = JobSpec::new("flaky");
        j.retries = 2;
        j.backoff_ms = 100;
        let mut s = sched(vec![j], 1);
        s.poll();
        assert_eq!(
            s.attempt_finished(0, fail("boom")),
            vec![Action::Retry {
                job: 0,
                attempt: 2,
                after_ms: 100
            }]
        );
        assert_eq!(
            s.attempt_finished(0, fail("boom")),
            vec![Action::Retry {
                job: 0,
                attempt: 3,
                after_ms: 200
            }]
        );
        assert!(s.attempt_finished(0, fail("boom")).is_empty());
        assert_eq!(s.job(0).state, JobState::Failed);
        assert_eq!(s.job(0).attempt, 3);
    }

    #[test]
    fn optional_failure_does_not_fail_the_run() {
        let mut lint = JobSpec::new("lint");
        lint.optional = true;
        let mut s = sched(vec![lint, JobSpec::new("build")], 2);
        s.poll();
        s.attempt_finished(0, fail("exit code 1"));
        s.attempt_finished(1, AttemptOutcome::Success);
        assert_eq!(s.outcome(), (RunPhase::Succeeded, None));
        assert_eq!(s.job(0).state, JobState::Failed);
    }

    #[test]
    fn finally_runs_after_everything_even_on_failure() {
        let mut cleanup = JobSpec::new("cleanup");
        cleanup.finally = true;
        let mut s = sched(
            vec![cleanup, JobSpec::new("a"), JobSpec::new("b").needs(&["a"])],
            4,
        );
        assert_eq!(started(&s.poll()), vec![1]);
        let acts = s.attempt_finished(1, fail("x"));
        assert!(acts.contains(&Action::Settled { job: 2 }));
        assert_eq!(started(&acts), vec![0]);
        s.attempt_finished(0, AttemptOutcome::Success);
        assert!(s.is_done());
        assert_eq!(s.outcome().0, RunPhase::Failed);
    }

    #[test]
    fn cancel_stops_running_settles_pending_and_runs_finally() {
        let mut cleanup = JobSpec::new("cleanup");
        cleanup.finally = true;
        let mut s = sched(
            vec![JobSpec::new("a"), JobSpec::new("b").needs(&["a"]), cleanup],
            4,
        );
        assert_eq!(started(&s.poll()), vec![0]);
        let (stop, acts) = s.cancel();
        assert_eq!(stop, vec![0]);
        assert_eq!(acts, vec![Action::Settled { job: 1 }]);
        assert_eq!(s.job(1).reason.as_deref(), Some(CANCELLED));
        let acts = s.attempt_finished(0, AttemptOutcome::Killed);
        assert_eq!(started(&acts), vec![2]);
        s.attempt_finished(2, AttemptOutcome::Success);
        assert!(s.is_done());
        assert_eq!(s.outcome().0, RunPhase::Cancelled);
        assert_eq!(s.job(0).state, JobState::Cancelled);
    }

    #[test]
    fn cancel_stops_retrying() {
        let mut j = JobSpec::new("flaky");
        j.retries = 5;
        let mut s = sched(vec![j], 1);
        s.poll();
        s.cancel();
        assert!(s.attempt_finished(0, fail("boom")).is_empty());
        assert_eq!(s.job(0).state, JobState::Failed);
        assert_eq!(s.outcome().0, RunPhase::Cancelled);
    }

    fn when(job: JobSpec, cond: Cond) -> JobSpec {
        JobSpec {
            when: Some(cond),
            ..job
        }
    }

    fn output_eq(job: &str, output: &str, value: &str) -> Cond {
        Cond::OutputEq {
            job: job.into(),
            output: output.into(),
            value: value.into(),
        }
    }

    #[test]
    fn conditions_on_outputs_start_or_skip_with_the_reason() {
        let mut s = sched(
            vec![
                JobSpec::new("detect"),
                when(
                    JobSpec::new("build").needs(&["detect"]),
                    output_eq("detect", "changed", "true"),
                ),
                when(
                    JobSpec::new("docs").needs(&["detect"]),
                    output_eq("detect", "docs", "yes"),
                ),
                JobSpec::new("after-docs").needs(&["docs"]),
            ],
            4,
        );
        assert_eq!(started(&s.poll()), vec![0]);
        s.set_outputs(
            0,
            BTreeMap::from([("changed".to_string(), "true".to_string())]),
        );
        let actions = s.attempt_finished(0, AttemptOutcome::Success);
        // build starts; docs is skipped (its output unset), which satisfies after-docs.
        assert_eq!(started(&actions), vec![1, 3]);
        assert_eq!(s.job(2).state, JobState::Skipped);
        assert_eq!(
            s.job(2).reason.as_deref(),
            Some("condition false: detect.docs == \"yes\"")
        );
        assert!(actions.contains(&Action::Settled { job: 2 }));
    }

    #[test]
    fn branch_conditions_read_the_runs_branch() {
        let jobs = vec![when(
            JobSpec::new("deploy"),
            Cond::Branch {
                name: "main".into(),
            },
        )];
        let mut on_main = sched(jobs.clone(), 1).with_branch(Some("main".into()));
        assert_eq!(started(&on_main.poll()), vec![0]);
        let mut elsewhere = sched(jobs.clone(), 1).with_branch(Some("dev".into()));
        assert!(started(&elsewhere.poll()).is_empty());
        assert_eq!(elsewhere.job(0).state, JobState::Skipped);
        let mut no_git = sched(jobs, 1);
        no_git.poll();
        assert_eq!(no_git.job(0).state, JobState::Skipped);
    }

    #[test]
    fn upstream_failed_conditions_wait_for_failed_needs_instead_of_being_cancelled() {
        let mut s = sched(
            vec![
                JobSpec::new("build"),
                when(
                    JobSpec::new("notify").needs(&["build"]),
                    Cond::UpstreamFailed,
                ),
                JobSpec::new("ship").needs(&["build"]),
            ],
            4,
        );
        assert_eq!(started(&s.poll()), vec![0]);
        let actions = s.attempt_finished(0, fail("exit code 1"));
        assert_eq!(started(&actions), vec![1]);
        assert_eq!(s.job(2).state, JobState::Cancelled);
        assert_eq!(s.job(2).reason.as_deref(), Some(UPSTREAM_FAILED));
        s.attempt_finished(1, AttemptOutcome::Success);
        // The run still failed: build is not optional.
        assert_eq!(s.outcome().0, RunPhase::Failed);

        let mut ok = sched(
            vec![
                JobSpec::new("build"),
                when(
                    JobSpec::new("notify").needs(&["build"]),
                    Cond::UpstreamFailed,
                ),
            ],
            4,
        );
        ok.poll();
        ok.attempt_finished(0, AttemptOutcome::Success);
        assert_eq!(ok.job(1).state, JobState::Skipped);
        assert_eq!(
            ok.job(1).reason.as_deref(),
            Some("condition false: upstream failed")
        );
        assert_eq!(ok.outcome().0, RunPhase::Succeeded);
    }

    fn gate(id: &str) -> JobSpec {
        JobSpec {
            gate: Some(crate::gate::GateSpec {
                message: None,
                timeout_ms: None,
                on_timeout: crate::gate::Decision::Reject,
            }),
            retries: 3,
            ..JobSpec::new(id)
        }
    }

    #[test]
    fn a_ready_gate_waits_without_a_worker_and_ends_as_decided() {
        let mut s = sched(
            vec![
                JobSpec::new("build"),
                gate("approve").needs(&["build"]),
                JobSpec::new("deploy").needs(&["approve"]),
                JobSpec::new("lint"),
            ],
            1,
        );
        assert_eq!(started(&s.poll()), vec![0]);
        // The gate waits and lint takes the one worker meanwhile.
        let acts = s.attempt_finished(0, AttemptOutcome::Success);
        assert_eq!(started(&acts), vec![1, 3]);
        assert_eq!(s.job(1).state, JobState::Waiting);
        assert!(!s.job(1).state.is_terminal());
        s.attempt_finished(3, AttemptOutcome::Success);
        let approved = crate::gate::Decided {
            decision: crate::gate::Decision::Approve,
            by: "ana".into(),
            at_ms: 1,
            comment: None,
            timed_out: false,
        };
        let acts = s.gate_decided(1, &approved);
        assert_eq!(started(&acts), vec![2]);
        assert_eq!(s.job(1).state, JobState::Success);
    }

    #[test]
    fn the_box_slot_is_needed_by_jobs_in_flight_not_by_waiting_gates() {
        use crate::gate::{BoxSlotHold, BoxSlotStep};
        let mut s = sched(
            vec![
                JobSpec::new("build"),
                gate("approve").needs(&["build"]),
                JobSpec::new("deploy").needs(&["approve"]),
                JobSpec {
                    retries: 1,
                    ..JobSpec::new("lint")
                },
            ],
            4,
        );
        s.poll();
        s.attempt_finished(0, AttemptOutcome::Success);
        // The gate waits while lint runs: the slot is kept.
        assert_eq!(s.box_slot_step(BoxSlotHold::Held), BoxSlotStep::Keep);
        s.attempt_finished(3, fail("exit code 1"));
        // A failed job waiting to retry still holds its worker, and so the slot.
        assert_eq!(s.box_slot_step(BoxSlotHold::Held), BoxSlotStep::Keep);
        s.attempt_finished(3, AttemptOutcome::Success);
        assert_eq!(
            s.box_slot_step(BoxSlotHold::Held),
            BoxSlotStep::Release {
                reason: "waiting for gate approve".into()
            }
        );
        assert_eq!(s.box_slot_step(BoxSlotHold::Released), BoxSlotStep::Keep);
        let approved = crate::gate::Decided {
            decision: crate::gate::Decision::Approve,
            by: "ana".into(),
            at_ms: 1,
            comment: None,
            timed_out: false,
        };
        assert_eq!(started(&s.gate_decided(1, &approved)), vec![2]);
        assert_eq!(s.box_slot_step(BoxSlotHold::Released), BoxSlotStep::Queue);
        // Cancelled while queued: the job that wanted the slot ends, the queue is left.
        let (stop, _) = s.cancel();
        assert_eq!(stop, vec![2]);
        assert_eq!(s.box_slot_step(BoxSlotHold::Queued), BoxSlotStep::Keep);
        s.attempt_finished(2, AttemptOutcome::Killed);
        assert_eq!(
            s.box_slot_step(BoxSlotHold::Queued),
            BoxSlotStep::LeaveQueue
        );
    }

    #[test]
    fn a_rejected_gate_fails_once_and_cancels_its_dependents() {
        let mut s = sched(
            vec![gate("approve"), JobSpec::new("deploy").needs(&["approve"])],
            1,
        );
        assert_eq!(started(&s.poll()), vec![0]);
        let rejected = crate::gate::Decided {
            decision: crate::gate::Decision::Reject,
            by: "bo".into(),
            at_ms: 1,
            comment: Some("no".into()),
            timed_out: false,
        };
        // retries do not apply to a gate: a rejection is final.
        let acts = s.gate_decided(0, &rejected);
        assert_eq!(acts, vec![Action::Settled { job: 1 }]);
        assert_eq!(s.job(0).state, JobState::Failed);
        assert_eq!(s.job(0).reason.as_deref(), Some("rejected by bo: no"));
        assert_eq!(s.job(1).reason.as_deref(), Some(UPSTREAM_FAILED));
        assert_eq!(s.outcome().0, RunPhase::Failed);
    }

    #[test]
    fn cancel_stops_a_waiting_gate() {
        let mut s = sched(
            vec![gate("approve"), JobSpec::new("deploy").needs(&["approve"])],
            1,
        );
        s.poll();
        let (stop, _) = s.cancel();
        assert_eq!(stop, vec![0]);
        s.attempt_finished(0, AttemptOutcome::Killed);
        assert!(s.is_done());
        assert_eq!(s.job(0).state, JobState::Cancelled);
        assert_eq!(s.outcome().0, RunPhase::Cancelled);
    }

    #[test]
    fn skipped_jobs_satisfy_dependents() {
        let mut deploy = JobSpec::new("deploy");
        deploy.skip = Some("only on main".into());
        let mut s = sched(vec![deploy, JobSpec::new("notify").needs(&["deploy"])], 2);
        let acts = s.poll();
        assert_eq!(acts[0], Action::Settled { job: 0 });
        assert_eq!(started(&acts), vec![1]);
        assert_eq!(s.job(0).state, JobState::Skipped);
    }

    #[test]
    fn reused_jobs_settle_at_once_and_their_outputs_feed_conditions() {
        let deploy = when(
            JobSpec::new("deploy").needs(&["build"]),
            output_eq("build", "changed", "true"),
        );
        let mut s = sched(vec![JobSpec::new("build"), deploy], 2).with_reused(vec![
            Some(crate::rerun::Reused {
                state: JobState::Reused,
                reason: "reused from run r1".into(),
                outputs: [("changed".to_string(), "true".to_string())].into(),
            }),
            None,
        ]);
        let acts = s.poll();
        assert_eq!(acts[0], Action::Settled { job: 0 });
        assert_eq!(started(&acts), vec![1]);
        assert_eq!(s.job(0).state, JobState::Reused);
        assert_eq!(s.job(0).reason.as_deref(), Some("reused from run r1"));
        let acts = s.attempt_finished(1, AttemptOutcome::Success);
        assert!(acts.is_empty());
        assert_eq!(s.outcome(), (RunPhase::Succeeded, None));
    }

    fn fan_out(id: &str, from: &str, output: &str) -> JobSpec {
        let mut j = JobSpec::new(id).needs(&[from]);
        j.fan_out = Some(crate::fanout::FanOutSpec {
            job: from.into(),
            output: output.into(),
        });
        j
    }

    /// shards -> test (fan-out over shards.list) -> report.
    fn fanned() -> Scheduler {
        sched(
            vec![
                JobSpec::new("shards"),
                fan_out("test", "shards", "list"),
                JobSpec::new("report").needs(&["test"]),
            ],
            8,
        )
    }

    fn expand_into(s: &mut Scheduler, items: &[&str]) -> Vec<Action> {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        let jobs = s.plan().jobs[1].expand(&items);
        let n = jobs.len();
        s.expand(1, jobs, vec![None; n])
    }

    #[test]
    fn a_fan_out_expands_once_its_producer_succeeded_and_the_fan_in_waits_for_all() {
        let mut s = fanned();
        assert_eq!(started(&s.poll()), vec![0]);
        let acts = s.attempt_finished(0, AttemptOutcome::Success);
        assert_eq!(acts, vec![Action::Expand { job: 1 }]);
        let acts = expand_into(&mut s, &["a", "b", "c"]);
        assert_eq!(started(&acts), vec![3, 4, 5]);
        assert_eq!(s.plan().jobs[4].id, "test[1]");
        assert_eq!(s.plan().needs[4], vec![0]);
        assert_eq!(s.plan().needs[2], vec![1, 3, 4, 5]);
        assert_eq!(s.job(1).state, JobState::Success);
        assert_eq!(
            s.job(1).reason.as_deref(),
            Some("fanned out into 3 jobs (test[0] … test[2])")
        );
        assert!(started(&s.attempt_finished(3, AttemptOutcome::Success)).is_empty());
        assert!(started(&s.attempt_finished(5, AttemptOutcome::Success)).is_empty());
        assert_eq!(
            started(&s.attempt_finished(4, AttemptOutcome::Success)),
            vec![2]
        );
        s.attempt_finished(2, AttemptOutcome::Success);
        assert!(s.is_done());
        assert_eq!(s.outcome(), (RunPhase::Succeeded, None));
    }

    #[test]
    fn a_failed_expanded_job_cancels_the_fan_in_and_fails_the_run() {
        let mut s = fanned();
        s.poll();
        s.attempt_finished(0, AttemptOutcome::Success);
        expand_into(&mut s, &["a", "b", "c"]);
        s.attempt_finished(3, AttemptOutcome::Success);
        let acts = s.attempt_finished(5, fail("exit code 1"));
        assert!(acts.contains(&Action::Settled { job: 2 }));
        assert_eq!(s.job(2).reason.as_deref(), Some(UPSTREAM_FAILED));
        s.attempt_finished(4, AttemptOutcome::Success);
        assert!(s.is_done());
        assert_eq!(
            s.outcome(),
            (RunPhase::Failed, Some("job failed: test[2]".to_string()))
        );
    }

    #[test]
    fn zero_items_expand_into_no_jobs_and_the_fan_in_runs() {
        let mut s = fanned();
        s.poll();
        s.attempt_finished(0, AttemptOutcome::Success);
        let acts = expand_into(&mut s, &[]);
        assert_eq!(started(&acts), vec![2]);
        assert_eq!(s.job(1).state, JobState::Success);
        assert_eq!(s.job(1).reason.as_deref(), Some("fanned out into 0 jobs"));
        assert_eq!(s.plan().jobs.len(), 3);
    }

    #[test]
    fn a_fan_out_that_cannot_expand_fails_and_cancels_its_dependents() {
        let mut s = fanned();
        s.poll();
        s.attempt_finished(0, AttemptOutcome::Success);
        let acts = s.fan_out_failed(1, "not a list".into());
        assert!(acts.contains(&Action::Settled { job: 2 }));
        assert_eq!(s.job(1).state, JobState::Failed);
        assert_eq!(s.job(2).state, JobState::Cancelled);
        assert_eq!(
            s.outcome(),
            (RunPhase::Failed, Some("job failed: test".to_string()))
        );
    }

    #[test]
    fn a_failed_or_skipped_producer_never_expands() {
        let mut s = fanned();
        s.poll();
        let acts = s.attempt_finished(0, fail("boom"));
        assert!(!acts.iter().any(|a| matches!(a, Action::Expand { .. })));
        assert_eq!(s.job(1).state, JobState::Cancelled);
        assert_eq!(s.job(1).reason.as_deref(), Some(UPSTREAM_FAILED));

        let mut shards = JobSpec::new("shards");
        shards.skip = Some("not today".into());
        let mut s = sched(
            vec![
                shards,
                fan_out("test", "shards", "list"),
                JobSpec::new("report").needs(&["test"]),
            ],
            2,
        );
        let acts = s.poll();
        assert_eq!(started(&acts), vec![2]);
        assert_eq!(s.job(1).state, JobState::Skipped);
        assert!(s.job(1).reason.as_deref().unwrap().contains("was skipped"));
    }

    #[test]
    fn expanded_jobs_reused_by_a_rerun_settle_and_the_others_run() {
        let mut s = fanned();
        s.poll();
        s.attempt_finished(0, AttemptOutcome::Success);
        let items: Vec<String> = vec!["a".into(), "b".into()];
        let jobs = s.plan().jobs[1].expand(&items);
        let reused = crate::rerun::Reused {
            state: JobState::Reused,
            reason: "reused from run r1".into(),
            outputs: [("k".to_string(), "v".to_string())].into(),
        };
        let acts = s.expand(1, jobs, vec![Some(reused), None]);
        assert!(acts.contains(&Action::Settled { job: 3 }));
        assert_eq!(started(&acts), vec![4]);
        assert_eq!(s.outputs_of(3).get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn a_matrix_is_in_the_plan_from_the_start() {
        let mut m = JobSpec::new("build");
        m.matrix = Some(vec!["linux".into(), "macos".into()]);
        let mut s = sched(vec![m, JobSpec::new("ship").needs(&["build"])], 4);
        assert_eq!(s.plan().jobs[2].id, "build[0]");
        assert_eq!(s.plan().jobs[3].id, "build[1]");
        assert_eq!(
            s.plan().jobs[3].expanded.as_ref().map(|e| e.item.as_str()),
            Some("macos")
        );
        let acts = s.poll();
        assert!(acts.contains(&Action::Settled { job: 0 }));
        assert_eq!(
            s.job(0).reason.as_deref(),
            Some("fanned out into 2 jobs (build[0] … build[1])")
        );
        assert_eq!(started(&acts), vec![2, 3]);
        s.attempt_finished(2, AttemptOutcome::Success);
        assert_eq!(
            started(&s.attempt_finished(3, AttemptOutcome::Success)),
            vec![1]
        );
    }

    #[test]
    fn a_finally_template_expands_after_everything_else_whatever_happened() {
        let mut t = fan_out("notify", "shards", "list");
        t.finally = true;
        t.needs.push("build".into());
        let mut s = sched(vec![JobSpec::new("shards"), JobSpec::new("build"), t], 4);
        assert_eq!(started(&s.poll()), vec![0, 1]);
        s.attempt_finished(0, AttemptOutcome::Success);
        // build still runs: the finally template waits.
        assert_eq!(s.job(2).state, JobState::Pending);
        let acts = s.attempt_finished(1, fail("boom"));
        assert_eq!(acts, vec![Action::Expand { job: 2 }]);
        let jobs = s.plan().jobs[2].expand(&["a".into()]);
        let acts = s.expand(2, jobs, vec![None]);
        assert_eq!(started(&acts), vec![3]);
        assert!(s.plan().jobs[3].finally);
    }

    #[test]
    fn a_fan_out_whose_jobs_ask_about_failures_still_expands_after_another_need_failed() {
        let mut t = when(fan_out("test", "shards", "list"), Cond::UpstreamFailed);
        t.needs.push("lint".into());
        let mut s = sched(vec![JobSpec::new("shards"), JobSpec::new("lint"), t], 4);
        s.poll();
        s.attempt_finished(1, fail("boom"));
        assert_eq!(s.job(2).state, JobState::Pending);
        assert_eq!(
            s.attempt_finished(0, AttemptOutcome::Success),
            vec![Action::Expand { job: 2 }]
        );
    }
}
