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
    /// A later attempt of the same cluster run resuming from the job states its earlier attempts
    /// recorded (after its coordinator parked while gates waited, or was lost): every job that
    /// did not end there, or ended `cancelled` (its attempt was stopped under it), executes (with
    /// what needs it); every other job that ended keeps its state, reason and outputs as
    /// recorded. Recorded jobs the plan does not have (a runner's `source`
    /// and `compile` pseudo-jobs) are ignored, and a run with nothing unfinished is no error.
    Resume,
}

/// Whether a resume executes a job recorded in `state`: it did not end, or it was cancelled (a
/// runner stopped under it cancels it; a resumed attempt must run it, not carry its cancel).
fn resumes(state: JobState) -> bool {
    !state.is_terminal() || state == JobState::Cancelled
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
    // The jobs a fan-out expanded into are not in the plan before it runs: they stand for their
    // template, which is.
    let in_plan = |id: &str| plan.index_of(id).or_else(|| fan_out_template(plan, id));
    let resume = *scope == RetryScope::Resume;
    let gone: Vec<String> = prior
        .iter()
        .filter(|p| in_plan(&p.id).is_none())
        .map(|p| p.id.clone())
        .collect();
    if !gone.is_empty() && !resume {
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
            .chain(
                prior
                    .iter()
                    .filter(|p| plan.index_of(&p.id).is_none() && ended_badly(p.state))
                    .filter_map(|p| fan_out_template(plan, &p.id)),
            )
            .collect(),
        // Named jobs are jobs of the old run (checked), which the plan has (checked), or jobs a
        // fan-out expanded into (their template stands for them until it expands again).
        RetryScope::Jobs(named) => named.iter().filter_map(|j| in_plan(j)).collect(),
        RetryScope::Resume => (0..plan.jobs.len())
            .filter(|&i| prior_of(&plan.jobs[i].id).is_none_or(|p| resumes(p.state)))
            .chain(
                prior
                    .iter()
                    .filter(|p| plan.index_of(&p.id).is_none() && resumes(p.state))
                    .filter_map(|p| fan_out_template(plan, &p.id)),
            )
            .collect(),
    };
    if seeds.is_empty() && !resume {
        return Err(RetryError::NothingToRetry {
            run: run.to_string(),
        });
    }
    // `finally` jobs always run, as in a fresh run (a resume runs those that did not end yet,
    // seeds already); what needs them runs after them.
    let mut from = seeds;
    if !resume {
        from.extend((0..plan.jobs.len()).filter(|&i| plan.jobs[i].finally));
    }
    let execute = plan.downstream_of(&from);
    Ok(plan
        .jobs
        .iter()
        .zip(execute)
        .map(|(job, execute)| {
            // A fan-out template always expands again; which of its jobs run is decided then
            // (`reuse_expanded`).
            if execute || job.fan_out.is_some() {
                return None;
            }
            // Not executed, so not a seed: the old run has it.
            let p = prior_of(&job.id)?;
            Some(if resume {
                carried_over(p)
            } else {
                reused_from(run, p)
            })
        })
        .collect())
}

/// A job a resumed attempt does not execute: it ended in an earlier attempt of the same run and
/// keeps that state, reason and outputs.
fn carried_over(p: &PriorJob) -> Reused {
    Reused {
        state: p.state,
        reason: p
            .reason
            .clone()
            .unwrap_or_else(|| format!("{} in an earlier attempt", p.state)),
        outputs: p.outputs.clone(),
    }
}

/// How a job of the old run the re-run does not execute settles.
fn reused_from(run: &str, p: &PriorJob) -> Reused {
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
    Reused {
        state,
        reason,
        outputs: p.outputs.clone(),
    }
}

/// The fan-out template of the plan that `id` (`NAME[i]`) was expanded from, if any.
fn fan_out_template(plan: &ValidatedPlan, id: &str) -> Option<usize> {
    let (template, _) = crate::fanout::split_expanded_id(id)?;
    let t = plan.index_of(template)?;
    plan.jobs[t].fan_out.is_some().then_some(t)
}

/// For each job a fan-out just expanded into in a re-run (`expanded`, in index order), `None`
/// when the re-run executes it, else what it reuses from the run retried. One executes when the
/// old run did not have it, when the scope retries it (`--failed`: it did not end well there;
/// `--job`: it is named), or when one of its needs is executed by the re-run
/// (`need_executed`); else it is taken from the old run as `plan_retry` takes any job.
pub fn reuse_expanded(
    expanded: &[crate::protocol::JobSpec],
    need_executed: bool,
    run: &str,
    prior: &[PriorJob],
    scope: &RetryScope,
) -> Vec<Option<Reused>> {
    expanded
        .iter()
        .map(|job| {
            let p = prior.iter().find(|p| p.id == job.id)?;
            let retried = match scope {
                RetryScope::Failed => ended_badly(p.state),
                RetryScope::Jobs(named) => named.contains(&job.id),
                RetryScope::Resume => resumes(p.state),
            };
            if need_executed || retried {
                return None;
            }
            Some(if *scope == RetryScope::Resume {
                carried_over(p)
            } else {
                reused_from(run, p)
            })
        })
        .collect()
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
    fn a_resume_executes_what_did_not_end_and_keeps_what_ended_as_recorded() {
        let p = plan(&[]);
        // Parked while a gate-like job waited: prepare ended, test waits, ship and cleanup
        // pending, lint failed (kept), docs skipped; the runner's pseudo-job is ignored.
        let mut prepare = job("prepare", JobState::Success, None);
        prepare.outputs.insert("version".into(), "7".into());
        let prior = vec![
            job("compile", JobState::Success, None),
            prepare,
            job("test", JobState::Waiting, None),
            job("ship", JobState::Pending, None),
            job("lint", JobState::Failed, Some("exit code 1")),
            job("docs", JobState::Skipped, Some("not today")),
            job("publish", JobState::Success, Some("approved by ana")),
            job("cleanup", JobState::Pending, None),
        ];
        let reuse = plan_retry(&p, "ns/r", &prior, &RetryScope::Resume).unwrap();
        assert_eq!(executed(&p, &reuse), ["test", "ship", "cleanup"]);
        let kept = |i: usize| reuse[i].clone().unwrap();
        assert_eq!(kept(0).state, JobState::Success);
        assert_eq!(kept(0).reason, "success in an earlier attempt");
        assert_eq!(kept(0).outputs["version"], "7");
        assert_eq!(
            (kept(3).state, kept(3).reason),
            (JobState::Failed, "exit code 1".to_string())
        );
        assert_eq!(
            (kept(4).state, kept(4).reason),
            (JobState::Skipped, "not today".to_string())
        );
        assert_eq!(kept(5).reason, "approved by ana");
        // A job the earlier attempts never recorded executes; nothing unfinished is no error.
        let reuse = plan_retry(&p, "ns/r", &prior[..2], &RetryScope::Resume).unwrap();
        assert_eq!(
            executed(&p, &reuse),
            ["test", "ship", "lint", "docs", "publish", "cleanup"]
        );
        let all_done: Vec<PriorJob> = p
            .jobs
            .iter()
            .map(|j| job(&j.id, JobState::Success, None))
            .collect();
        let reuse = plan_retry(&p, "ns/r", &all_done, &RetryScope::Resume).unwrap();
        assert!(executed(&p, &reuse).is_empty());
        // A job cancelled under a stopped runner executes again (with what needs it).
        let mut stopped = all_done.clone();
        stopped[1] = job("test", JobState::Cancelled, Some("cancelled"));
        let reuse = plan_retry(&p, "ns/r", &stopped, &RetryScope::Resume).unwrap();
        assert_eq!(executed(&p, &reuse), ["test", "ship"]);
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

    /// shards -> test (fan-out over shards.list) -> report.
    fn fanned() -> ValidatedPlan {
        let mut t = JobSpec::new("test").needs(&["shards"]);
        t.fan_out = Some(crate::fanout::FanOutSpec {
            job: "shards".into(),
            output: "list".into(),
        });
        validate(&PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: "T".into(),
            jobs: vec![
                JobSpec::new("shards"),
                t,
                JobSpec::new("report").needs(&["test"]),
            ],
        })
        .unwrap()
    }

    /// A run where test[2] of four failed and report was cancelled.
    fn fanned_run() -> Vec<PriorJob> {
        let mut shards = job("shards", JobState::Success, None);
        shards
            .outputs
            .insert("list".into(), r#"["a","b","c","d"]"#.into());
        let mut out = vec![shards, job("test", JobState::Success, None)];
        for i in 0..4 {
            let state = if i == 2 {
                JobState::Failed
            } else {
                JobState::Success
            };
            out.push(job(&format!("test[{i}]"), state, None));
        }
        out.push(job("report", JobState::Cancelled, Some("upstream-failed")));
        out
    }

    #[test]
    fn a_failed_expanded_job_reruns_alone_with_the_fan_in() {
        let p = fanned();
        let reuse = plan_retry(&p, "run-1", &fanned_run(), &RetryScope::Failed).unwrap();
        // The template expands again; report runs; shards is reused with its list.
        assert_eq!(executed(&p, &reuse), ["test", "report"]);
        assert_eq!(
            reuse[0].as_ref().unwrap().outputs["list"],
            r#"["a","b","c","d"]"#
        );
        let items: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let expanded = p.jobs[1].expand(&items);
        let again = reuse_expanded(
            &expanded,
            false,
            "run-1",
            &fanned_run(),
            &RetryScope::Failed,
        );
        let run: Vec<usize> = (0..4).filter(|&i| again[i].is_none()).collect();
        assert_eq!(run, [2]);
        assert_eq!(again[0].as_ref().unwrap().state, JobState::Reused);
        // Its producer executed again: every expanded job runs.
        let again = reuse_expanded(&expanded, true, "run-1", &fanned_run(), &RetryScope::Failed);
        assert!(again.iter().all(Option::is_none));
        // An item the old run did not have runs.
        let more = p.jobs[1].expand(&["a", "b", "c", "d", "e"].map(String::from));
        let again = reuse_expanded(&more, false, "run-1", &fanned_run(), &RetryScope::Failed);
        assert!(again[4].is_none());
    }

    #[test]
    fn a_named_expanded_job_reruns_with_the_fan_in() {
        let p = fanned();
        let mut ok = fanned_run();
        for j in &mut ok {
            j.state = JobState::Success;
        }
        let scope = RetryScope::Jobs(vec!["test[1]".into()]);
        let reuse = plan_retry(&p, "run-1", &ok, &scope).unwrap();
        assert_eq!(executed(&p, &reuse), ["test", "report"]);
        let expanded = p.jobs[1].expand(&["a", "b", "c", "d"].map(String::from));
        let again = reuse_expanded(&expanded, false, "run-1", &ok, &scope);
        let run: Vec<usize> = (0..4).filter(|&i| again[i].is_none()).collect();
        assert_eq!(run, [1]);
        let scope = RetryScope::Jobs(vec!["test[9]".into()]);
        let e = plan_retry(&p, "run-1", &ok, &scope).unwrap_err();
        assert!(e.to_string().contains("has no job \"test[9]\""), "{e}");
    }
}
