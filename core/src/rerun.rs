//! Which jobs a re-run executes and which it takes from the run it retries (`sparkwing runs
//! retry`, `docs/cli.md`).
//!
//! A re-run plans the pipeline's current code with the old run's args. It executes the jobs to
//! retry (with `--failed`: the old run's jobs that did not end well, and jobs the old run did not
//! have; with `--job`: the named ones), every job that (transitively) needs one of them, and every
//! `finally` job. Every other job does not run: one that succeeded or was skipped there is
//! `reused`, its recorded outputs the old run's, so conditions and inputs downstream read them as
//! before; one that failed or was cancelled there (only with `--job`) keeps that outcome, and so
//! fails the re-run as it failed the old one.

use crate::dag::ValidatedPlan;
use crate::state::JobState;
use std::collections::BTreeMap;

/// What a re-run retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryScope {
    /// The jobs recorded `failed`, `cancelled` (also those never started because a need failed),
    /// or unfinished, and the jobs of the current plan the old run did not have.
    Failed,
    /// These jobs of the old run.
    Jobs(Vec<String>),
}

/// One job of the run being retried, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorJob {
    pub id: String,
    pub state: JobState,
    pub reason: Option<String>,
    pub outputs: BTreeMap<String, String>,
}

/// A job of the re-run taken from the old run instead of executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reused {
    /// `reused`, or `failed`/`cancelled` for a job that ended so in the old run.
    pub state: JobState,
    /// Recorded as the job's reason: `reused from run ID` (and how it was skipped there), or
    /// `failed in run ID: REASON`.
    pub reason: String,
    pub outputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    #[error("run {run} has no job {job:?} (jobs: {jobs})")]
    UnknownJob {
        run: String,
        job: String,
        jobs: String,
    },
    #[error("the pipeline's current plan has no job {} that run {run} had; a retry runs the current .sparkwing/ code, so start a fresh run instead", quoted(.jobs))]
    GoneFromPlan { run: String, jobs: Vec<String> },
    #[error("run {run} has no failed, cancelled or unfinished job: nothing to retry (re-run chosen jobs with --job JOB)")]
    NothingToRetry { run: String },
}

fn quoted(jobs: &[String]) -> String {
    jobs.iter()
        .map(|j| format!("{j:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a job of the old run is retried by `--failed`.
fn ended_badly(state: JobState) -> bool {
    !matches!(
        state,
        JobState::Success | JobState::Skipped | JobState::Reused | JobState::Cached
    )
}

/// The jobs `scope` names must be jobs of `run` (its jobs as recorded: `prior`).
pub fn check_scope(run: &str, prior: &[PriorJob], scope: &RetryScope) -> Result<(), RetryError> {
    let RetryScope::Jobs(named) = scope else {
        return Ok(());
    };
    match named
        .iter()
        .find(|job| !prior.iter().any(|p| &p.id == *job))
    {
        None => Ok(()),
        Some(job) => Err(RetryError::UnknownJob {
            run: run.to_string(),
            job: job.clone(),
            jobs: prior
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// For each job of `plan` (the current code's), `None` when the re-run of `run` executes it, else
/// what it reuses from `prior` (that run's jobs).
pub fn plan_retry(
    plan: &ValidatedPlan,
    run: &str,
    prior: &[PriorJob],
    scope: &RetryScope,
) -> Result<Vec<Option<Reused>>, RetryError> {
    let gone: Vec<String> = prior
        .iter()
        .filter(|p| plan.index_of(&p.id).is_none())
        .map(|p| p.id.clone())
        .collect();
    if !gone.is_empty() {
        return Err(RetryError::GoneFromPlan {
            run: run.to_string(),
            jobs: gone,
        });
    }
    check_scope(run, prior, scope)?;
    let prior_of = |id: &str| prior.iter().find(|p| p.id == id);
    let seeds: Vec<usize> = match scope {
        RetryScope::Failed => (0..plan.jobs.len())
            .filter(|&i| prior_of(&plan.jobs[i].id).is_none_or(|p| ended_badly(p.state)))
            .collect(),
        // Named jobs are jobs of the old run (checked), which the plan has (checked).
        RetryScope::Jobs(named) => named.iter().filter_map(|j| plan.index_of(j)).collect(),
    };
    if seeds.is_empty() {
        return Err(RetryError::NothingToRetry {
            run: run.to_string(),
        });
    }
    // `finally` jobs always run, as in a fresh run; what needs them runs after them.
    let mut from = seeds;
    from.extend((0..plan.jobs.len()).filter(|&i| plan.jobs[i].finally));
    let execute = plan.downstream_of(&from);
    Ok(plan
        .jobs
        .iter()
        .zip(execute)
        .map(|(job, execute)| {
            if execute {
                return None;
            }
            // Not executed, so not a seed: the old run has it.
            let p = prior_of(&job.id)?;
            let why = p.reason.as_deref().unwrap_or("no reason recorded");
            let (state, reason) = match p.state {
                // A cached job's outputs were recorded with it: it is reused like a success.
                JobState::Success | JobState::Reused | JobState::Cached => {
                    (JobState::Reused, format!("reused from run {run}"))
                }
                JobState::Skipped => (
                    JobState::Reused,
                    format!("reused from run {run} (skipped: {why})"),
                ),
                JobState::Failed => (JobState::Failed, format!("failed in run {run}: {why}")),
                // Cancelled, or unfinished in a run whose process died.
                other => (JobState::Cancelled, format!("{other} in run {run}: {why}")),
            };
            Some(Reused {
                state,
                reason,
                outputs: p.outputs.clone(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::validate;
    use crate::protocol::{JobSpec, PlanDoc};

    /// prepare -> test -> ship (ship also needs prepare), lint alone, docs (skipped) -> publish,
    /// cleanup (finally).
    fn plan(extra: &[&str]) -> ValidatedPlan {
        let mut cleanup = JobSpec::new("cleanup");
        cleanup.finally = true;
        let mut jobs = vec![
            JobSpec::new("prepare"),
            JobSpec::new("test").needs(&["prepare"]),
            JobSpec::new("ship").needs(&["test", "prepare"]),
            JobSpec::new("lint"),
            JobSpec::new("docs"),
            JobSpec::new("publish").needs(&["docs"]),
            cleanup,
        ];
        jobs.extend(extra.iter().map(|id| JobSpec::new(id)));
        validate(&PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: "T".into(),
            jobs,
        })
        .unwrap()
    }

    fn job(id: &str, state: JobState, reason: Option<&str>) -> PriorJob {
        PriorJob {
            id: id.into(),
            state,
            reason: reason.map(Into::into),
            outputs: BTreeMap::new(),
        }
    }

    /// A run where test failed (ship never started), docs was skipped.
    fn failed_run() -> Vec<PriorJob> {
        let mut prepare = job("prepare", JobState::Success, None);
        prepare.outputs.insert("version".into(), "7".into());
        vec![
            prepare,
            job("test", JobState::Failed, Some("exit code 1")),
            job("ship", JobState::Cancelled, Some("upstream-failed")),
            job("lint", JobState::Success, None),
            job("docs", JobState::Skipped, Some("not today")),
            job("publish", JobState::Success, None),
            job("cleanup", JobState::Success, None),
        ]
    }

    fn executed(plan: &ValidatedPlan, reuse: &[Option<Reused>]) -> Vec<String> {
        plan.jobs
            .iter()
            .zip(reuse)
            .filter(|(_, r)| r.is_none())
            .map(|(j, _)| j.id.clone())
            .collect()
    }

    #[test]
    fn failed_retries_what_ended_badly_its_dependents_and_finally_jobs() {
        let p = plan(&[]);
        let reuse = plan_retry(&p, "run-1", &failed_run(), &RetryScope::Failed).unwrap();
        assert_eq!(executed(&p, &reuse), ["test", "ship", "cleanup"]);
        let prepare = reuse[0].as_ref().unwrap();
        assert_eq!(prepare.reason, "reused from run run-1");
        assert_eq!(prepare.outputs["version"], "7");
        assert_eq!(
            reuse[4].as_ref().unwrap().reason,
            "reused from run run-1 (skipped: not today)"
        );
    }

    #[test]
    fn named_jobs_rerun_with_their_dependents_and_new_jobs_run_with_failed() {
        let p = plan(&[]);
        let scope = RetryScope::Jobs(vec!["prepare".into(), "docs".into()]);
        let reuse = plan_retry(&p, "run-1", &failed_run(), &scope).unwrap();
        assert_eq!(
            executed(&p, &reuse),
            ["prepare", "test", "ship", "docs", "publish", "cleanup"]
        );
        // A failure not retried stays a failure (the re-run fails as the old run did).
        let scope = RetryScope::Jobs(vec!["lint".into()]);
        let reuse = plan_retry(&p, "run-1", &failed_run(), &scope).unwrap();
        assert_eq!(executed(&p, &reuse), ["lint", "cleanup"]);
        let test = reuse[1].as_ref().unwrap();
        assert_eq!(test.state, JobState::Failed);
        assert_eq!(test.reason, "failed in run run-1: exit code 1");
        let ship = reuse[2].as_ref().unwrap();
        assert_eq!(ship.state, JobState::Cancelled);
        assert_eq!(ship.reason, "cancelled in run run-1: upstream-failed");
        assert_eq!(reuse[0].as_ref().unwrap().state, JobState::Reused);
        // A job added to the code since the old run has never run: --failed runs it.
        let p = plan(&["new-check"]);
        let mut ok: Vec<PriorJob> = failed_run();
        ok[1].state = JobState::Success;
        ok[2].state = JobState::Success;
        let reuse = plan_retry(&p, "run-1", &ok, &RetryScope::Failed).unwrap();
        assert_eq!(executed(&p, &reuse), ["cleanup", "new-check"]);
    }

    #[test]
    fn says_what_is_wrong() {
        let p = plan(&[]);
        let scope = RetryScope::Jobs(vec!["nope".into()]);
        let e = plan_retry(&p, "run-1", &failed_run(), &scope).unwrap_err();
        assert_eq!(
            e.to_string(),
            "run run-1 has no job \"nope\" (jobs: prepare, test, ship, lint, docs, publish, cleanup)"
        );
        let mut prior = failed_run();
        prior.push(job("old-job", JobState::Success, None));
        let e = plan_retry(&p, "run-1", &prior, &RetryScope::Failed).unwrap_err();
        assert!(matches!(&e, RetryError::GoneFromPlan { jobs, .. } if jobs == &["old-job"]));
        assert!(e
            .to_string()
            .starts_with("the pipeline's current plan has no job \"old-job\" that run run-1 had"));
        let succeeded: Vec<PriorJob> = failed_run()
            .into_iter()
            .map(|mut j| {
                if j.state != JobState::Skipped {
                    j.state = JobState::Success;
                }
                j
            })
            .collect();
        assert_eq!(
            plan_retry(&p, "run-1", &succeeded, &RetryScope::Failed).unwrap_err(),
            RetryError::NothingToRetry {
                run: "run-1".into()
            }
        );
    }
}
