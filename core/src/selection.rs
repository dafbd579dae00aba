//! Which jobs of a fresh run execute: `--sw-only J`, `--sw-start-at J`, `--sw-stop-at J`
//! (`docs/cli.md`). Jobs left out are skipped with a reason naming the flag; `finally` jobs always
//! stay in.

use crate::dag::ValidatedPlan;

/// The part of the plan a run executes; the default is all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only this job.
    pub only: Option<String>,
    /// This job and every job that (transitively) needs it.
    pub start_at: Option<String>,
    /// This job and every job it (transitively) needs.
    pub stop_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("{flag} names no job {job:?} of this plan (jobs: {jobs})")]
    UnknownJob {
        flag: &'static str,
        job: String,
        jobs: String,
    },
    #[error("{flag} {job:?}: that job is expanded at run time by fan-out {template:?}, so a fresh run cannot select it alone; select the template ({flag} {template}) for all of its jobs, or re-run this one with `sparkwing runs retry --job {job}`")]
    ExpandedAtRunTime {
        flag: &'static str,
        job: String,
        template: String,
    },
    #[error("--sw-only cannot be combined with --sw-start-at or --sw-stop-at")]
    OnlyWithRange,
    #[error("--sw-start-at {start:?} and --sw-stop-at {stop:?} leave no job: {stop:?} does not depend on {start:?}")]
    Empty { start: String, stop: String },
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self == &Selection::default()
    }

    /// For each job, `None` when it runs, else why it is skipped.
    pub fn skips(&self, plan: &ValidatedPlan) -> Result<Vec<Option<String>>, SelectionError> {
        let n = plan.jobs.len();
        if self.is_all() {
            return Ok(vec![None; n]);
        }
        if self.only.is_some() && (self.start_at.is_some() || self.stop_at.is_some()) {
            return Err(SelectionError::OnlyWithRange);
        }
        let index = |flag: &'static str, job: &str| {
            if let Some((template, _)) = crate::fanout::split_expanded_id(job) {
                if plan.index_of(job).is_none()
                    && plan
                        .index_of(template)
                        .is_some_and(|t| plan.jobs[t].fan_out.is_some())
                {
                    return Err(SelectionError::ExpandedAtRunTime {
                        flag,
                        job: job.to_string(),
                        template: template.to_string(),
                    });
                }
            }
            plan.index_of(job)
                .ok_or_else(|| SelectionError::UnknownJob {
                    flag,
                    job: job.to_string(),
                    jobs: plan
                        .jobs
                        .iter()
                        .map(|j| j.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        let mut keep = vec![true; n];
        let mut reason = String::new();
        if let Some(only) = &self.only {
            let i = index("--sw-only", only)?;
            keep = (0..n).map(|j| j == i).collect();
            reason = format!("not selected (--sw-only {only})");
        }
        if let Some(start) = &self.start_at {
            let i = index("--sw-start-at", start)?;
            let down = plan.downstream_of(&[i]);
            keep = keep.iter().zip(&down).map(|(a, b)| *a && *b).collect();
            reason = format!("not selected (--sw-start-at {start})");
        }
        if let Some(stop) = &self.stop_at {
            let i = index("--sw-stop-at", stop)?;
            let up = plan.upstream_of(&[i]);
            if !keep[i] {
                return Err(SelectionError::Empty {
                    start: self.start_at.clone().unwrap_or_default(),
                    stop: stop.clone(),
                });
            }
            keep = keep.iter().zip(&up).map(|(a, b)| *a && *b).collect();
            reason = match &self.start_at {
                Some(start) => format!("not selected (--sw-start-at {start} --sw-stop-at {stop})"),
                None => format!("not selected (--sw-stop-at {stop})"),
            };
        }
        // A matrix's jobs go with their template: selecting it selects all of them.
        for j in 0..n {
            if let Some(e) = &plan.jobs[j].expanded {
                if plan.index_of(&e.template).is_some_and(|t| keep[t]) {
                    keep[j] = true;
                }
            }
        }
        Ok((0..n)
            .map(|j| (!keep[j] && !plan.jobs[j].finally).then(|| reason.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::validate;
    use crate::protocol::{JobSpec, PlanDoc};

    /// a -> b -> c, a -> d, e alone, fin (finally).
    fn plan() -> ValidatedPlan {
        let mut fin = JobSpec::new("fin");
        fin.finally = true;
        validate(&PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: "T".into(),
            jobs: vec![
                JobSpec::new("a"),
                JobSpec::new("b").needs(&["a"]),
                JobSpec::new("c").needs(&["b"]),
                JobSpec::new("d").needs(&["a"]),
                JobSpec::new("e"),
                fin,
            ],
        })
        .unwrap()
    }

    fn kept(sel: Selection) -> Vec<&'static str> {
        let ids = ["a", "b", "c", "d", "e", "fin"];
        sel.skips(&plan())
            .unwrap()
            .iter()
            .zip(ids)
            .filter(|(s, _)| s.is_none())
            .map(|(_, id)| id)
            .collect()
    }

    fn sel(only: Option<&str>, start: Option<&str>, stop: Option<&str>) -> Selection {
        Selection {
            only: only.map(Into::into),
            start_at: start.map(Into::into),
            stop_at: stop.map(Into::into),
        }
    }

    #[test]
    fn selects_only_from_and_up_to_a_job_and_keeps_finally_jobs() {
        assert_eq!(kept(Selection::default()), ["a", "b", "c", "d", "e", "fin"]);
        assert_eq!(kept(sel(Some("b"), None, None)), ["b", "fin"]);
        assert_eq!(kept(sel(None, Some("b"), None)), ["b", "c", "fin"]);
        assert_eq!(kept(sel(None, None, Some("c"))), ["a", "b", "c", "fin"]);
        assert_eq!(kept(sel(None, Some("a"), Some("b"))), ["a", "b", "fin"]);
        let skips = sel(Some("b"), None, None).skips(&plan()).unwrap();
        assert_eq!(skips[0].as_deref(), Some("not selected (--sw-only b)"));
    }

    #[test]
    fn names_what_is_wrong() {
        let e = sel(Some("zz"), None, None).skips(&plan()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--sw-only names no job \"zz\" of this plan (jobs: a, b, c, d, e, fin)"
        );
        assert_eq!(
            sel(Some("a"), Some("a"), None).skips(&plan()).unwrap_err(),
            SelectionError::OnlyWithRange
        );
        assert!(matches!(
            sel(None, Some("d"), Some("c")).skips(&plan()).unwrap_err(),
            SelectionError::Empty { .. }
        ));
    }

    #[test]
    fn a_matrix_goes_with_its_template_and_a_fan_outs_jobs_are_not_selectable() {
        let mut m = JobSpec::new("build");
        m.matrix = Some(vec!["x".into(), "y".into()]);
        let mut f = JobSpec::new("test").needs(&["shards"]);
        f.fan_out = Some(crate::fanout::FanOutSpec {
            job: "shards".into(),
            output: "list".into(),
        });
        let p = validate(&PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: "T".into(),
            jobs: vec![m, JobSpec::new("shards"), f],
        })
        .unwrap();
        let kept = |sel: Selection| -> Vec<String> {
            sel.skips(&p)
                .unwrap()
                .iter()
                .zip(&p.jobs)
                .filter(|(s, _)| s.is_none())
                .map(|(_, j)| j.id.clone())
                .collect()
        };
        assert_eq!(
            kept(Selection {
                only: Some("build".into()),
                ..Selection::default()
            }),
            ["build", "build[0]", "build[1]"]
        );
        assert_eq!(
            kept(Selection {
                only: Some("build[1]".into()),
                ..Selection::default()
            }),
            ["build[1]"]
        );
        let e = Selection {
            only: Some("test[2]".into()),
            ..Selection::default()
        }
        .skips(&p)
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("\"test[2]\": that job is expanded at run time by fan-out \"test\""),
            "{e}"
        );
    }
}
