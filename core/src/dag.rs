//! Checks a plan's job graph before anything runs: duplicate ids, unknown needs, cycles.

use crate::cache;
use crate::protocol::{JobSpec, PlanDoc};
use std::collections::HashMap;

/// Why a plan cannot run. Each names the job at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("duplicate job id {0:?}: each job in a plan needs its own id")]
    DuplicateJob(String),
    #[error("job {job:?} needs {need:?}, which is not a job in this plan")]
    UnknownNeed { job: String, need: String },
    #[error("job {0:?} needs itself")]
    SelfNeed(String),
    #[error("cycle in job needs: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("job id {0:?} is invalid: use letters, digits, '-', '_' and '.' only")]
    InvalidId(String),
    #[error("the plan has no jobs")]
    Empty,
    #[error("job {job:?} has a condition on the outputs of {target:?}, which is not a job it needs; a condition reads only the outputs of the job's own needs (add {target:?} to its needs)")]
    ConditionNotANeed { job: String, target: String },
    #[error("job {job:?} needs {need:?}, a finally job; finally jobs run after every other job, so only another finally job can need one")]
    NeedsFinally { job: String, need: String },
    #[error("job {job:?} cache {cache:?}: {problem}")]
    InvalidCache {
        job: String,
        cache: String,
        problem: String,
    },
    #[error("job {job:?} artifact {artifact:?}: {problem}")]
    InvalidArtifact {
        job: String,
        artifact: String,
        problem: String,
    },
    #[error("job {job:?} is memoized on an output of {target:?}, which is not a job it needs (add {target:?} to its needs)")]
    MemoNotANeed { job: String, target: String },
    #[error("job {job:?} is memoized on a file: {problem}")]
    InvalidMemo { job: String, problem: String },
    #[error("job {job:?} consumes an artifact of {target:?}, which is not a job it needs (add {target:?} to its needs)")]
    ConsumeNotANeed { job: String, target: String },
    #[error("artifact {name:?} of job {target:?} not found (job {job:?} consumes it; {target:?} publishes {published})")]
    UnknownArtifact {
        job: String,
        target: String,
        name: String,
        published: String,
    },
    #[error("job {job:?} placement: {problem}")]
    InvalidPlacement {
        job: String,
        problem: crate::placement::PlacementError,
    },
    #[error("job id {0:?} is invalid: ids NAME[i] are given to the jobs a fan-out or matrix expands into; name the job without '[' and ']'")]
    ReservedId(String),
    #[error("job {job:?} fans out over an output of {target:?}, which is not a job it needs (add {target:?} to its needs)")]
    FanOutNotANeed { job: String, target: String },
    #[error("job {job:?}: {problem}")]
    InvalidFanOut { job: String, problem: String },
}

impl PlanError {
    /// A stable name for the error, for machine-read reports (`pipeline lint -o json`).
    pub fn kind(&self) -> &'static str {
        match self {
            PlanError::DuplicateJob(_) => "duplicate_job",
            PlanError::UnknownNeed { .. } => "unknown_need",
            PlanError::SelfNeed(_) => "self_need",
            PlanError::Cycle(_) => "cycle",
            PlanError::InvalidId(_) => "invalid_id",
            PlanError::Empty => "empty_plan",
            PlanError::NeedsFinally { .. } => "needs_finally",
            PlanError::ConditionNotANeed { .. } => "condition_not_a_need",
            PlanError::InvalidCache { .. } => "invalid_cache",
            PlanError::InvalidArtifact { .. } => "invalid_artifact",
            PlanError::ConsumeNotANeed { .. } => "consume_not_a_need",
            PlanError::UnknownArtifact { .. } => "unknown_artifact",
            PlanError::MemoNotANeed { .. } => "memo_not_a_need",
            PlanError::InvalidMemo { .. } => "invalid_memo",
            PlanError::InvalidPlacement { .. } => "invalid_placement",
            PlanError::ReservedId(_) => "reserved_id",
            PlanError::FanOutNotANeed { .. } => "fan_out_not_a_need",
            PlanError::InvalidFanOut { .. } => "invalid_fan_out",
        }
    }
}

/// A plan whose graph is known to be a DAG; jobs keep their declared order.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedPlan {
    pub jobs: Vec<JobSpec>,
    /// For each job (by index), the indexes of the jobs it needs.
    pub needs: Vec<Vec<usize>>,
    /// The run's concurrency group, as the plan declared it (`concurrency`).
    pub concurrency: Option<crate::concurrency::ConcurrencySpec>,
}

impl ValidatedPlan {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == id)
    }

    /// Adds the jobs template `template` expanded into (`fanout::expand`) at the end of the plan:
    /// each needs what the template needs, and every job that needs the template now needs each
    /// of them too (so it waits for all, and reads their outputs). Returns their indexes.
    pub fn add_expanded(
        &mut self,
        template: usize,
        expanded: Vec<JobSpec>,
    ) -> std::ops::Range<usize> {
        let start = self.jobs.len();
        let needs = self.needs[template].clone();
        for job in expanded {
            self.jobs.push(job);
            self.needs.push(needs.clone());
        }
        let end = self.jobs.len();
        for k in 0..start {
            if self.needs[k].contains(&template) {
                self.needs[k].extend(start..end);
            }
        }
        start..end
    }

    /// The jobs template `template` expanded into so far, in index order.
    pub fn expanded_of(&self, template: &str) -> Vec<usize> {
        let mut out: Vec<(usize, usize)> = (0..self.jobs.len())
            .filter_map(|i| {
                let e = self.jobs[i].expanded.as_ref()?;
                (e.template == template).then_some((e.index, i))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, i)| i).collect()
    }

    /// For each job, whether it is one of `from` or (transitively) needs one of them.
    pub fn downstream_of(&self, from: &[usize]) -> Vec<bool> {
        self.closure(from, |j| {
            (0..self.jobs.len())
                .filter(|&k| self.needs[k].contains(&j))
                .collect()
        })
    }

    /// For each job, whether it is one of `from` or (transitively) needed by one of them.
    pub fn upstream_of(&self, from: &[usize]) -> Vec<bool> {
        self.closure(from, |j| self.needs[j].clone())
    }

    /// `from` and every job reached from it through `next`.
    fn closure(&self, from: &[usize], next: impl Fn(usize) -> Vec<usize>) -> Vec<bool> {
        let mut seen = vec![false; self.jobs.len()];
        let mut stack = from.to_vec();
        while let Some(j) = stack.pop() {
            if !std::mem::replace(&mut seen[j], true) {
                stack.extend(next(j));
            }
        }
        seen
    }
}

/// An approval gate whose decision cannot do what a gate is for (`sparkwing pipeline lint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateFinding {
    /// Skipped by the plan: it never waits, and a skipped job satisfies its dependents, so the
    /// jobs that need it run without a decision.
    Unreachable {
        gate: String,
        reason: String,
        ungated: Vec<String>,
    },
    /// No job needs it: the run waits for a decision that starts nothing.
    Unused { gate: String },
}

impl GateFinding {
    /// The finding's kind, as `pipeline lint` reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            GateFinding::Unreachable { .. } => "unreachable_gate",
            GateFinding::Unused { .. } => "unused_gate",
        }
    }
}

impl std::fmt::Display for GateFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateFinding::Unreachable {
                gate,
                reason,
                ungated,
            } => {
                write!(
                    f,
                    "approval gate {gate:?} is skipped by the plan ({reason}): it never waits for a decision"
                )?;
                if !ungated.is_empty() {
                    write!(f, ", and {} run without one", ungated.join(", "))?;
                }
                Ok(())
            }
            GateFinding::Unused { gate } => write!(
                f,
                "approval gate {gate:?} gates nothing: no job needs it, so a decision starts nothing (add it to the needs of the jobs it should hold)"
            ),
        }
    }
}

/// The plan's approval gates that cannot gate anything: skipped by the plan, or needed by no job.
pub fn gate_findings(plan: &ValidatedPlan) -> Vec<GateFinding> {
    let mut out = Vec::new();
    for (i, job) in plan.jobs.iter().enumerate() {
        if job.gate.is_none() {
            continue;
        }
        let needed_by: Vec<usize> = (0..plan.jobs.len())
            .filter(|&k| plan.needs[k].contains(&i))
            .collect();
        if let Some(reason) = &job.skip {
            out.push(GateFinding::Unreachable {
                gate: job.id.clone(),
                reason: reason.clone(),
                ungated: needed_by.iter().map(|&k| plan.jobs[k].id.clone()).collect(),
            });
        } else if needed_by.is_empty() {
            out.push(GateFinding::Unused {
                gate: job.id.clone(),
            });
        }
    }
    out
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id != "."
        && id != ".."
}

/// Validate a plan's job graph.
pub fn validate(plan: &PlanDoc) -> Result<ValidatedPlan, PlanError> {
    if plan.jobs.is_empty() {
        return Err(PlanError::Empty);
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, job) in plan.jobs.iter().enumerate() {
        if !valid_id(&job.id) {
            if job.id.contains('[') || job.id.contains(']') {
                return Err(PlanError::ReservedId(job.id.clone()));
            }
            return Err(PlanError::InvalidId(job.id.clone()));
        }
        if index.insert(job.id.as_str(), i).is_some() {
            return Err(PlanError::DuplicateJob(job.id.clone()));
        }
    }
    let mut needs = Vec::with_capacity(plan.jobs.len());
    for job in &plan.jobs {
        let mut mine: Vec<usize> = Vec::new();
        for need in &job.needs {
            if need == &job.id {
                return Err(PlanError::SelfNeed(job.id.clone()));
            }
            let Some(&n) = index.get(need.as_str()) else {
                return Err(PlanError::UnknownNeed {
                    job: job.id.clone(),
                    need: need.clone(),
                });
            };
            if plan.jobs[n].finally && !job.finally {
                return Err(PlanError::NeedsFinally {
                    job: job.id.clone(),
                    need: need.clone(),
                });
            }
            if !mine.contains(&n) {
                mine.push(n);
            }
        }
        // Outputs reach a job only from its direct needs (SPARKWING_NEEDS_OUTPUTS), so a condition
        // can read no other job's: naming one is a mistake the author should hear of now.
        if let Some(cond) = &job.when {
            if let Some(target) = cond
                .jobs()
                .into_iter()
                .find(|t| !job.needs.iter().any(|n| n == t))
            {
                return Err(PlanError::ConditionNotANeed {
                    job: job.id.clone(),
                    target: target.to_string(),
                });
            }
        }
        check_caches_and_artifacts(plan, job)?;
        if let Some(p) = &job.placement {
            crate::placement::validate(p).map_err(|problem| PlanError::InvalidPlacement {
                job: job.id.clone(),
                problem,
            })?;
        }
        check_fan_out(plan, job)?;
        needs.push(mine);
    }
    if let Some(cycle) = find_cycle(&needs) {
        return Err(PlanError::Cycle(
            cycle.into_iter().map(|i| plan.jobs[i].id.clone()).collect(),
        ));
    }
    let mut validated = ValidatedPlan {
        jobs: plan.jobs.clone(),
        needs,
        concurrency: plan.concurrency.clone(),
    };
    // A matrix is known now: its jobs are in the plan from the start.
    for (i, job) in plan.jobs.iter().enumerate() {
        if let Some(items) = &job.matrix {
            validated.add_expanded(i, job.expand(items));
        }
    }
    Ok(validated)
}

/// A template's declaration: one kind, a producer among its needs that is an ordinary job, a
/// matrix within the cap, and none of what a template cannot be (a gate, an await job).
fn check_fan_out(plan: &PlanDoc, job: &JobSpec) -> Result<(), PlanError> {
    use crate::fanout::MAX_ITEMS;
    let bad = |problem: String| PlanError::InvalidFanOut {
        job: job.id.clone(),
        problem,
    };
    if job.expanded.is_some() {
        return Err(bad(
            "\"expanded\" is set by the engine on the jobs a template expands into; a plan cannot declare it".into(),
        ));
    }
    if !job.is_template() {
        return Ok(());
    }
    if job.fan_out.is_some() && job.matrix.is_some() {
        return Err(bad(
            "it is both a fan-out and a matrix; declare one (Plan::fan_out or Plan::matrix)".into(),
        ));
    }
    if job.gate.is_some() || job.awaits.is_some() {
        return Err(bad(
            "an approval gate or a job that awaits a pipeline cannot fan out; fan out an ordinary job".into(),
        ));
    }
    if let Some(items) = &job.matrix {
        if items.len() > MAX_ITEMS {
            return Err(bad(format!(
                "its matrix has {} items, over the cap of {MAX_ITEMS} jobs per matrix; give each job a batch of items so the list has at most {MAX_ITEMS}",
                items.len()
            )));
        }
    }
    if let Some(f) = &job.fan_out {
        if !job.needs.contains(&f.job) {
            return Err(PlanError::FanOutNotANeed {
                job: job.id.clone(),
                target: f.job.clone(),
            });
        }
        if f.output.is_empty() {
            return Err(bad(format!(
                "it fans out over an output of {:?} with an empty name; name the output that holds the list",
                f.job
            )));
        }
        if plan.jobs.iter().any(|p| p.id == f.job && p.is_template()) {
            return Err(bad(format!(
                "it fans out over an output of {:?}, itself a fan-out or matrix, which has no outputs; fan out over an ordinary job's output",
                f.job
            )));
        }
    }
    Ok(())
}

/// A job's caches and artifacts: usable names, paths inside the workspace, and consumes of
/// artifacts its needs publish.
fn check_caches_and_artifacts(plan: &PlanDoc, job: &JobSpec) -> Result<(), PlanError> {
    let workdir = job.workdir.as_deref();
    for (i, c) in job.caches.iter().enumerate() {
        let bad = |problem: String| PlanError::InvalidCache {
            job: job.id.clone(),
            cache: c.name.clone(),
            problem,
        };
        if !cache::valid_name(&c.name) {
            return Err(bad(
                "the name must be 1 to 64 of letters, digits, '-', '_', '.'".into(),
            ));
        }
        if job.caches[..i].iter().any(|d| d.name == c.name) {
            return Err(bad("declared twice".into()));
        }
        if c.paths.is_empty() {
            return Err(bad("it covers no paths".into()));
        }
        for p in c.paths.iter().chain(&c.key_files) {
            cache::workspace_path(workdir, p).map_err(|e| bad(e.to_string()))?;
        }
    }
    if let Some(m) = &job.memo {
        if let Some(o) = m.outputs.iter().find(|o| !job.needs.contains(&o.job)) {
            return Err(PlanError::MemoNotANeed {
                job: job.id.clone(),
                target: o.job.clone(),
            });
        }
        for f in &m.files {
            cache::workspace_path(workdir, f).map_err(|e| PlanError::InvalidMemo {
                job: job.id.clone(),
                problem: e.to_string(),
            })?;
        }
    }
    for (i, a) in job.publishes.iter().enumerate() {
        let bad = |problem: String| PlanError::InvalidArtifact {
            job: job.id.clone(),
            artifact: a.name.clone(),
            problem,
        };
        if !cache::valid_name(&a.name) {
            return Err(bad(
                "the name must be 1 to 64 of letters, digits, '-', '_', '.'".into(),
            ));
        }
        if job.publishes[..i].iter().any(|b| b.name == a.name) {
            return Err(bad("published twice".into()));
        }
        cache::workspace_path(workdir, &a.path).map_err(|e| bad(e.to_string()))?;
    }
    for c in &job.consumes {
        if !job.needs.contains(&c.job) {
            return Err(PlanError::ConsumeNotANeed {
                job: job.id.clone(),
                target: c.job.clone(),
            });
        }
        let producer = plan.jobs.iter().find(|j| j.id == c.job);
        // A template runs nothing: each of its jobs publishes its own copy, under one path.
        if producer.is_some_and(|p| p.fan_out.is_some() || p.matrix.is_some()) {
            return Err(PlanError::InvalidFanOut {
                job: job.id.clone(),
                problem: format!(
                    "consumes artifact {:?} of {:?}, a fan-out or matrix template, which publishes nothing (each of its jobs {}[0], {}[1], ... publishes its own); have one job that needs the template publish what the others consume",
                    c.name, c.job, c.job, c.job
                ),
            });
        }
        let published: Vec<&str> = producer
            .map(|p| p.publishes.iter().map(|a| a.name.as_str()).collect())
            .unwrap_or_default();
        if !published.contains(&c.name.as_str()) {
            return Err(PlanError::UnknownArtifact {
                job: job.id.clone(),
                target: c.job.clone(),
                name: c.name.clone(),
                published: if published.is_empty() {
                    "none".into()
                } else {
                    published.join(", ")
                },
            });
        }
        // The artifact lands at its published path under this job's working directory.
        if let Some(a) = producer.and_then(|p| p.publishes.iter().find(|a| a.name == c.name)) {
            cache::workspace_path(workdir, &a.path).map_err(|e| PlanError::InvalidArtifact {
                job: job.id.clone(),
                artifact: c.name.clone(),
                problem: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// Depth-first search; returns the cycle as a closed path (first == last).
fn find_cycle(needs: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; needs.len()];
    for root in 0..needs.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next child index) with the active path on the stack.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::Active;
        while let Some(&mut (node, ref mut child)) = stack.last_mut() {
            if let Some(&next) = needs[node].get(*child) {
                *child += 1;
                match marks[next] {
                    Mark::New => {
                        marks[next] = Mark::Active;
                        stack.push((next, 0));
                    }
                    Mark::Active => {
                        let start = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut path: Vec<usize> = stack[start..].iter().map(|(n, _)| *n).collect();
                        path.push(next);
                        return Some(path);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(jobs: Vec<JobSpec>) -> PlanDoc {
        PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: "T".into(),
            jobs,
        }
    }

    #[test]
    fn gates_skipped_by_the_plan_or_needed_by_nobody_are_findings() {
        let gate = |id: &str| {
            let mut j = JobSpec::new(id);
            j.gate = Some(crate::gate::GateSpec {
                message: None,
                timeout_ms: None,
                on_timeout: crate::gate::Decision::Reject,
            });
            j
        };
        let mut skipped = gate("approve-prod");
        skipped.skip = Some("only on main".into());
        let p = validate(&plan(vec![
            JobSpec::new("build"),
            gate("approve-staging").needs(&["build"]),
            JobSpec::new("staging").needs(&["approve-staging"]),
            skipped.needs(&["build"]),
            JobSpec::new("prod").needs(&["approve-prod"]),
            gate("approve-docs"),
        ]))
        .unwrap();
        let found = gate_findings(&p);
        assert_eq!(
            found,
            [
                GateFinding::Unreachable {
                    gate: "approve-prod".into(),
                    reason: "only on main".into(),
                    ungated: vec!["prod".into()],
                },
                GateFinding::Unused {
                    gate: "approve-docs".into()
                },
            ]
        );
        assert_eq!(found[0].kind(), "unreachable_gate");
        assert_eq!(
            found[0].to_string(),
            "approval gate \"approve-prod\" is skipped by the plan (only on main): it never waits for a decision, and prod run without one"
        );
        assert_eq!(found[1].kind(), "unused_gate");
        // A plan whose gates each hold a job has none.
        let p = validate(&plan(vec![
            JobSpec::new("build"),
            gate("approve").needs(&["build"]),
            JobSpec::new("deploy").needs(&["approve"]),
        ]))
        .unwrap();
        assert!(gate_findings(&p).is_empty());
    }

    #[test]
    fn accepts_a_diamond() {
        let p = validate(&plan(vec![
            JobSpec::new("a"),
            JobSpec::new("b").needs(&["a"]),
            JobSpec::new("c").needs(&["a"]),
            JobSpec::new("d").needs(&["b", "c"]),
        ]))
        .unwrap();
        assert_eq!(p.needs[3], vec![1, 2]);
    }

    #[test]
    fn names_duplicate() {
        let e = validate(&plan(vec![JobSpec::new("a"), JobSpec::new("a")])).unwrap_err();
        assert_eq!(e, PlanError::DuplicateJob("a".into()));
        assert_eq!(e.kind(), "duplicate_job");
        assert!(e.to_string().contains("\"a\""));
    }

    #[test]
    fn names_unknown_need() {
        let e = validate(&plan(vec![JobSpec::new("a").needs(&["zz"])])).unwrap_err();
        assert_eq!(
            e,
            PlanError::UnknownNeed {
                job: "a".into(),
                need: "zz".into()
            }
        );
    }

    #[test]
    fn names_the_cycle() {
        let e = validate(&plan(vec![
            JobSpec::new("setup"),
            JobSpec::new("a").needs(&["setup", "c"]),
            JobSpec::new("b").needs(&["a"]),
            JobSpec::new("c").needs(&["b"]),
        ]))
        .unwrap_err();
        match e {
            PlanError::Cycle(path) => {
                assert_eq!(path.first(), path.last());
                for id in ["a", "b", "c"] {
                    assert!(path.contains(&id.to_string()), "{path:?}");
                }
                assert!(!path.contains(&"setup".to_string()));
            }
            other => panic!("expected cycle, got {other:?}"),
        }
    }

    #[test]
    fn only_finally_jobs_may_need_finally_jobs() {
        let mut cleanup = JobSpec::new("cleanup");
        cleanup.finally = true;
        let mut report = JobSpec::new("report").needs(&["cleanup"]);
        let e = validate(&plan(vec![cleanup.clone(), report.clone()])).unwrap_err();
        assert!(matches!(e, PlanError::NeedsFinally { .. }), "{e}");
        report.finally = true;
        validate(&plan(vec![cleanup, report])).unwrap();
    }

    #[test]
    fn a_condition_reads_only_the_outputs_of_needs() {
        let mut deploy = JobSpec::new("deploy").needs(&["build"]);
        deploy.when = Some(crate::condition::Cond::OutputEq {
            job: "detect".into(),
            output: "changed".into(),
            value: "true".into(),
        });
        let jobs = vec![
            JobSpec::new("detect"),
            JobSpec::new("build"),
            deploy.clone(),
        ];
        let e = validate(&plan(jobs.clone())).unwrap_err();
        assert_eq!(
            e,
            PlanError::ConditionNotANeed {
                job: "deploy".into(),
                target: "detect".into()
            }
        );
        assert!(e.to_string().contains("add \"detect\" to its needs"), "{e}");
        let mut ok = jobs;
        ok[2] = deploy.needs(&["detect"]);
        validate(&plan(ok)).unwrap();
    }

    #[test]
    fn self_need_and_bad_ids_and_empty() {
        assert_eq!(
            validate(&plan(vec![JobSpec::new("a").needs(&["a"])])).unwrap_err(),
            PlanError::SelfNeed("a".into())
        );
        assert!(matches!(
            validate(&plan(vec![JobSpec::new("a b")])).unwrap_err(),
            PlanError::InvalidId(_)
        ));
        assert!(matches!(
            validate(&plan(vec![JobSpec::new("../x")])).unwrap_err(),
            PlanError::InvalidId(_)
        ));
        assert_eq!(validate(&plan(vec![])).unwrap_err(), PlanError::Empty);
    }

    #[test]
    fn caches_and_artifacts_are_checked_at_plan_time() {
        use crate::artifact::{ArtifactSpec, ConsumeSpec};
        use crate::cache::CacheSpec;
        let mut build = JobSpec::new("build");
        build.publishes = vec![ArtifactSpec {
            name: "app".into(),
            path: "dist/app".into(),
        }];
        let mut deploy = JobSpec::new("deploy").needs(&["build"]);
        deploy.consumes = vec![ConsumeSpec {
            job: "build".into(),
            name: "app".into(),
        }];
        validate(&plan(vec![build.clone(), deploy.clone()])).unwrap();

        let mut unknown = deploy.clone();
        unknown.consumes[0].name = "nope".into();
        let e = validate(&plan(vec![build.clone(), unknown])).unwrap_err();
        assert_eq!(e.kind(), "unknown_artifact");
        assert!(
            e.to_string()
                .starts_with("artifact \"nope\" of job \"build\" not found"),
            "{e}"
        );

        let mut not_a_need = deploy.clone();
        not_a_need.needs.clear();
        let e = validate(&plan(vec![build.clone(), not_a_need])).unwrap_err();
        assert_eq!(e.kind(), "consume_not_a_need");

        let mut outside = build.clone();
        outside.publishes[0].path = "../elsewhere".into();
        let e = validate(&plan(vec![outside])).unwrap_err();
        assert_eq!(e.kind(), "invalid_artifact");
        assert!(e.to_string().contains("outside the workspace"), "{e}");

        let mut cached = JobSpec::new("c");
        cached.caches = vec![CacheSpec {
            name: "cargo".into(),
            paths: vec!["../../home/.cargo".into()],
            key_files: vec![],
            key_texts: vec![],
            fallback: None,
        }];
        let e = validate(&plan(vec![cached.clone()])).unwrap_err();
        assert_eq!(e.kind(), "invalid_cache");
        assert!(
            e.to_string()
                .contains("cache \"cargo\": path \"../../home/.cargo\" is outside the workspace"),
            "{e}"
        );
        cached.caches[0].paths = vec!["target".into()];
        validate(&plan(vec![cached])).unwrap();
    }

    #[test]
    fn a_memo_reads_only_outputs_of_needs_and_files_inside() {
        use crate::memo::{MemoOutput, MemoSpec};
        let mut build = JobSpec::new("build").needs(&["detect"]);
        build.memo = Some(MemoSpec {
            ttl_ms: 1000,
            files: vec!["src".into()],
            args: vec![],
            outputs: vec![MemoOutput {
                job: "detect".into(),
                output: "version".into(),
            }],
        });
        validate(&plan(vec![JobSpec::new("detect"), build.clone()])).unwrap();
        let mut not_a_need = build.clone();
        not_a_need.needs.clear();
        let e = validate(&plan(vec![JobSpec::new("detect"), not_a_need])).unwrap_err();
        assert_eq!(e.kind(), "memo_not_a_need");
        let mut outside = build;
        if let Some(m) = &mut outside.memo {
            m.files = vec!["../../etc".into()];
        }
        let e = validate(&plan(vec![JobSpec::new("detect"), outside])).unwrap_err();
        assert_eq!(e.kind(), "invalid_memo");
    }

    #[test]
    fn a_bad_placement_is_a_plan_error_naming_the_job() {
        let mut gpu = JobSpec::new("gpu-test");
        gpu.placement = Some(crate::placement::PlacementSpec {
            cpu: Some("4 cores".into()),
            ..Default::default()
        });
        let e = validate(&plan(vec![gpu.clone()])).unwrap_err();
        assert_eq!(e.kind(), "invalid_placement");
        assert!(
            e.to_string().starts_with(
                "job \"gpu-test\" placement: cpu \"4 cores\" is not a Kubernetes quantity"
            ),
            "{e}"
        );
        if let Some(p) = &mut gpu.placement {
            p.cpu = Some("4".into());
        }
        validate(&plan(vec![gpu])).unwrap();
    }

    #[test]
    fn consuming_an_artifact_of_a_template_is_refused_at_plan_time() {
        let mut t = fan_out_job("test", "shards");
        t.publishes.push(crate::artifact::ArtifactSpec {
            name: "report".into(),
            path: "report.xml".into(),
        });
        let mut fan_in = JobSpec::new("sum").needs(&["test"]);
        fan_in.consumes.push(crate::artifact::ConsumeSpec {
            job: "test".into(),
            name: "report".into(),
        });
        let e = refused(vec![JobSpec::new("shards"), t, fan_in]);
        assert_eq!(e.kind(), "invalid_fan_out");
        assert!(
            e.to_string()
                .contains("consumes artifact \"report\" of \"test\", a fan-out or matrix template"),
            "{e}"
        );
    }

    fn fan_out_job(id: &str, from: &str) -> JobSpec {
        let mut j = JobSpec::new(id).needs(&[from]);
        j.fan_out = Some(crate::fanout::FanOutSpec {
            job: from.into(),
            output: "list".into(),
        });
        j
    }

    fn refused(jobs: Vec<JobSpec>) -> PlanError {
        validate(&PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: "T".into(),
            jobs,
        })
        .unwrap_err()
    }

    #[test]
    fn fan_out_declarations_are_checked() {
        let mut t = fan_out_job("test", "shards");
        t.needs.clear();
        let e = refused(vec![JobSpec::new("shards"), t]);
        assert_eq!(e.kind(), "fan_out_not_a_need");
        assert_eq!(
            e.to_string(),
            r#"job "test" fans out over an output of "shards", which is not a job it needs (add "shards" to its needs)"#
        );
        let e = refused(vec![JobSpec::new("shards"), JobSpec::new("test[0]")]);
        assert_eq!(e.kind(), "reserved_id");
        assert!(
            e.to_string()
                .contains("ids NAME[i] are given to the jobs a fan-out or matrix expands into"),
            "{e}"
        );
        let e = refused(vec![
            JobSpec::new("shards"),
            fan_out_job("test", "shards"),
            fan_out_job("test", "shards"),
        ]);
        assert_eq!(e.kind(), "duplicate_job");
        let mut both = fan_out_job("test", "shards");
        both.matrix = Some(vec!["a".into()]);
        let e = refused(vec![JobSpec::new("shards"), both]);
        assert_eq!(e.kind(), "invalid_fan_out");
        assert!(e.to_string().contains("both a fan-out and a matrix"), "{e}");
        let mut big = JobSpec::new("m");
        big.matrix = Some((0..10_000).map(|i| i.to_string()).collect());
        let e = refused(vec![big]);
        assert!(
            e.to_string()
                .contains("10000 items, over the cap of 1000 jobs per matrix"),
            "{e}"
        );
        let mut m = JobSpec::new("m");
        m.matrix = Some(vec!["a".into()]);
        let e = refused(vec![m, fan_out_job("test", "m")]);
        assert!(e.to_string().contains("itself a fan-out or matrix"), "{e}");
        let mut e_set = JobSpec::new("x");
        e_set.expanded = Some(crate::fanout::Expanded {
            template: "t".into(),
            index: 0,
            item: "a".into(),
        });
        assert_eq!(refused(vec![e_set]).kind(), "invalid_fan_out");
    }
}
