//! Runtime conditions: a job's `when` predicate, evaluated by the scheduler when the job becomes
//! ready, from its needs' outputs and the run's state (`docs/authoring.md`, `docs/protocol.md`).

use serde::{Deserialize, Serialize};

/// A predicate on the run's state at the moment a job becomes ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Cond {
    /// Output `output` of job `job` (a direct need) equals `value`; an output never set is unequal.
    OutputEq {
        job: String,
        output: String,
        value: String,
    },
    /// Output `output` of job `job` (a direct need) is set and differs from `value`, or is unset.
    OutputNe {
        job: String,
        output: String,
        value: String,
    },
    /// The run's git branch is `name` (false when the run has no branch).
    Branch {
        name: String,
    },
    /// A job this one needs failed or was cancelled. A job whose predicate mentions this waits for
    /// its needs to end whatever their outcome, instead of being cancelled with them.
    UpstreamFailed,
    Not {
        cond: Box<Cond>,
    },
    All {
        conds: Vec<Cond>,
    },
    Any {
        conds: Vec<Cond>,
    },
}

/// What a predicate reads.
pub struct Facts<'a> {
    /// The value of an output of a job, if that job set it.
    pub output: &'a dyn Fn(&str, &str) -> Option<&'a str>,
    pub branch: Option<&'a str>,
    pub upstream_failed: bool,
}

impl Cond {
    pub fn holds(&self, facts: &Facts<'_>) -> bool {
        match self {
            Cond::OutputEq { job, output, value } => {
                (facts.output)(job, output) == Some(value.as_str())
            }
            Cond::OutputNe { job, output, value } => {
                (facts.output)(job, output) != Some(value.as_str())
            }
            Cond::Branch { name } => facts.branch == Some(name.as_str()),
            Cond::UpstreamFailed => facts.upstream_failed,
            Cond::Not { cond } => !cond.holds(facts),
            Cond::All { conds } => conds.iter().all(|c| c.holds(facts)),
            Cond::Any { conds } => conds.iter().any(|c| c.holds(facts)),
        }
    }

    /// Whether the predicate looks at failed needs (then the job waits for them to end).
    pub fn considers_failures(&self) -> bool {
        match self {
            Cond::UpstreamFailed => true,
            Cond::Not { cond } => cond.considers_failures(),
            Cond::All { conds } | Cond::Any { conds } => conds.iter().any(Cond::considers_failures),
            _ => false,
        }
    }

    /// The jobs whose outputs the predicate reads.
    pub fn jobs(&self) -> Vec<&str> {
        match self {
            Cond::OutputEq { job, .. } | Cond::OutputNe { job, .. } => vec![job.as_str()],
            Cond::Not { cond } => cond.jobs(),
            Cond::All { conds } | Cond::Any { conds } => {
                conds.iter().flat_map(Cond::jobs).collect()
            }
            _ => Vec::new(),
        }
    }
}

impl std::fmt::Display for Cond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |f: &mut std::fmt::Formatter<'_>, conds: &[Cond], sep: &str| {
            write!(f, "(")?;
            for (i, c) in conds.iter().enumerate() {
                if i > 0 {
                    write!(f, " {sep} ")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, ")")
        };
        match self {
            Cond::OutputEq { job, output, value } => write!(f, "{job}.{output} == {value:?}"),
            Cond::OutputNe { job, output, value } => write!(f, "{job}.{output} != {value:?}"),
            Cond::Branch { name } => write!(f, "branch == {name:?}"),
            Cond::UpstreamFailed => write!(f, "upstream failed"),
            Cond::Not { cond } => write!(f, "not {cond}"),
            Cond::All { conds } => list(f, conds, "and"),
            Cond::Any { conds } => list(f, conds, "or"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(job: &str, output: &str, value: &str) -> Cond {
        Cond::OutputEq {
            job: job.into(),
            output: output.into(),
            value: value.into(),
        }
    }

    #[test]
    fn reads_outputs_branch_and_failures() {
        let lookup =
            |job: &str, name: &str| (job == "detect" && name == "changed").then_some("true");
        let facts = Facts {
            output: &lookup,
            branch: Some("main"),
            upstream_failed: false,
        };
        assert!(eq("detect", "changed", "true").holds(&facts));
        assert!(!eq("detect", "changed", "false").holds(&facts));
        assert!(!eq("detect", "missing", "true").holds(&facts));
        assert!(Cond::Branch {
            name: "main".into()
        }
        .holds(&facts));
        assert!(!Cond::Branch { name: "dev".into() }.holds(&facts));
        assert!(!Cond::UpstreamFailed.holds(&facts));
        let both = Cond::All {
            conds: vec![
                eq("detect", "changed", "true"),
                Cond::Branch { name: "dev".into() },
            ],
        };
        assert!(!both.holds(&facts));
        assert!(Cond::Not {
            cond: Box::new(both.clone())
        }
        .holds(&facts));
        assert_eq!(
            both.to_string(),
            "(detect.changed == \"true\" and branch == \"dev\")"
        );
    }

    #[test]
    fn json_shape_is_the_documented_one() {
        let c: Cond = serde_json::from_str(
            r#"{"op":"any","conds":[{"op":"output_eq","job":"detect","output":"changed","value":"true"},{"op":"not","cond":{"op":"upstream_failed"}},{"op":"branch","name":"main"}]}"#,
        )
        .unwrap();
        assert!(c.considers_failures());
        assert_eq!(c.jobs(), ["detect"]);
        assert!(serde_json::from_str::<Cond>(r#"{"op":"sometimes"}"#).is_err());
    }
}
