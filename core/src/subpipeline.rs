//! Sub-pipelines: checks on the pipelines a plan awaits, before anything runs and at run time.
//!
//! A job of a plan may await another pipeline (`JobSpec::awaits`). Before a run starts, the engine
//! checks every awaited pipeline against `sparkwing.yaml` and plans it in turn, so a pipeline that
//! does not exist or a cycle of pipelines awaiting each other is refused at plan time. A cycle that
//! no plan shows (a job body that starts `sparkwing run` itself) is caught at run time through the
//! ancestry chain every run passes to what it starts: [`CHAIN_ENV`].

use crate::protocol::{AwaitSpec, PlanDoc};
use crate::suggest::closest;

/// The pipelines a run descends from, outermost first, comma-separated (`a,b`): set by the engine
/// on every job and sub-pipeline it starts.
pub const CHAIN_ENV: &str = "SPARKWING_PIPELINE_CHAIN";

/// The PipelineRun annotation holding a cluster run's chain in [`CHAIN_ENV`]'s format: written by
/// the API from a trigger's `pipelineChain`, read by the runner (`docs/api.md`).
pub const CHAIN_ANNOTATION: &str = "sparkwing.dev/pipeline-chain";

/// Parses [`CHAIN_ENV`]'s value.
pub fn parse_chain(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The chain a run of `pipeline` passes on: its own chain, then itself.
pub fn extend_chain(chain: &[String], pipeline: &str) -> String {
    chain
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(pipeline))
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a plan's sub-pipelines cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubpipelineError {
    #[error("job {job:?} of pipeline {parent:?} awaits pipeline {pipeline:?}, which is not in sparkwing.yaml{}", suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    Unknown {
        parent: String,
        job: String,
        pipeline: String,
        suggestion: Option<String>,
    },
    #[error("cycle of pipelines awaiting each other: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("job {job:?} of pipeline {parent:?} awaits pipeline {pipeline:?}: {message}")]
    Child {
        parent: String,
        job: String,
        pipeline: String,
        message: String,
    },
}

/// Refuses a run of `pipeline` whose ancestry `chain` already holds it.
pub fn check_chain(chain: &[String], pipeline: &str) -> Result<(), SubpipelineError> {
    match chain.iter().position(|p| p == pipeline) {
        None => Ok(()),
        Some(i) => {
            let mut path: Vec<String> = chain[i..].to_vec();
            path.push(pipeline.to_string());
            Err(SubpipelineError::Cycle(path))
        }
    }
}

/// The await jobs of a plan: (job id, what it awaits).
pub fn awaits(plan: &PlanDoc) -> Vec<(String, AwaitSpec)> {
    plan.jobs
        .iter()
        .filter(|j| j.skip.is_none())
        .filter_map(|j| j.awaits.clone().map(|a| (j.id.clone(), a)))
        .collect()
}

/// Checks the pipelines `plan` (of pipeline `pipeline`, run with ancestry `chain`) awaits, and
/// theirs in turn: each must be in `known` (the names in `sparkwing.yaml`), and none may await an
/// ancestor. `plan_child(pipeline, await)` plans a child with the await's args; `Ok(None)` means
/// its plan cannot be known here (it is checked when it runs), `Err` refuses the run.
pub fn check_plan(
    pipeline: &str,
    plan: &PlanDoc,
    chain: &[String],
    known: &[&str],
    plan_child: &mut dyn FnMut(&AwaitSpec) -> Result<Option<PlanDoc>, String>,
) -> Result<(), SubpipelineError> {
    check_chain(chain, pipeline)?;
    let mut path: Vec<String> = chain.to_vec();
    path.push(pipeline.to_string());
    for (job, a) in awaits(plan) {
        if !known.contains(&a.pipeline.as_str()) {
            return Err(SubpipelineError::Unknown {
                parent: pipeline.to_string(),
                job,
                pipeline: a.pipeline.clone(),
                suggestion: closest(&a.pipeline, known.iter().copied()).map(str::to_string),
            });
        }
        check_chain(&path, &a.pipeline)?;
        let child = plan_child(&a).map_err(|message| SubpipelineError::Child {
            parent: pipeline.to_string(),
            job: job.clone(),
            pipeline: a.pipeline.clone(),
            message,
        })?;
        if let Some(child) = child {
            check_plan(&a.pipeline, &child, &path, known, plan_child)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobSpec;
    use std::collections::BTreeMap;

    fn plan(entry: &str, awaits: &[&str]) -> PlanDoc {
        let mut jobs = vec![JobSpec::new("build")];
        for a in awaits {
            let mut j = JobSpec::new(&format!("await-{a}"));
            j.awaits = Some(AwaitSpec {
                pipeline: a.to_string(),
                args: BTreeMap::new(),
                profile: None,
            });
            jobs.push(j);
        }
        PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: entry.to_string(),
            jobs,
        }
    }

    fn world(
        edges: &'static [(&'static str, &'static [&'static str])],
    ) -> impl FnMut(&AwaitSpec) -> Result<Option<PlanDoc>, String> {
        move |a: &AwaitSpec| {
            Ok(edges
                .iter()
                .find(|(p, _)| *p == a.pipeline)
                .map(|(p, c)| plan(p, c)))
        }
    }

    #[test]
    fn chains() {
        assert_eq!(parse_chain(" a, b,,"), vec!["a", "b"]);
        assert_eq!(extend_chain(&parse_chain("a,b"), "c"), "a,b,c");
        assert_eq!(extend_chain(&[], "c"), "c");
        assert_eq!(check_chain(&parse_chain("a,b"), "c"), Ok(()));
        let e = check_chain(&parse_chain("x,a,b"), "a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cycle of pipelines awaiting each other: a -> b -> a"
        );
    }

    #[test]
    fn unknown_child_is_named_with_a_suggestion() {
        let known = ["ship", "deploy"];
        let e = check_plan(
            "ship",
            &plan("Ship", &["deplyo"]),
            &[],
            &known,
            &mut world(&[]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "job \"await-deplyo\" of pipeline \"ship\" awaits pipeline \"deplyo\", which is not in sparkwing.yaml; did you mean \"deploy\"?"
        );
    }

    #[test]
    fn static_cycles_are_refused() {
        let known = ["a", "b", "c"];
        let mut w = world(&[("b", &["c"]), ("c", &["a"])]);
        let e = check_plan("a", &plan("A", &["b"]), &[], &known, &mut w).unwrap_err();
        assert_eq!(
            e,
            SubpipelineError::Cycle(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        // A pipeline awaiting itself.
        let e = check_plan("a", &plan("A", &["a"]), &[], &known, &mut world(&[])).unwrap_err();
        assert_eq!(e, SubpipelineError::Cycle(vec!["a".into(), "a".into()]));
        // A diamond is fine: b and c both await leaf pipeline c's plan.
        let mut w = world(&[("b", &["c"]), ("c", &[])]);
        check_plan("a", &plan("A", &["b", "c"]), &[], &known, &mut w).unwrap();
    }

    #[test]
    fn skipped_await_jobs_are_not_checked_and_child_errors_name_the_job() {
        let mut p = plan("A", &["nope"]);
        p.jobs[1].skip = Some("not today".into());
        check_plan("a", &p, &[], &["a"], &mut world(&[])).unwrap();
        let mut failing = |_: &AwaitSpec| Err("unknown arg --x".to_string());
        let e = check_plan("a", &plan("A", &["b"]), &[], &["a", "b"], &mut failing).unwrap_err();
        assert!(
            e.to_string().contains("\"await-b\"") && e.to_string().contains("unknown arg --x"),
            "{e}"
        );
    }
}
