//! Runtime conditions (`JobBuilder::when`): decided by the engine when the job becomes ready, from
//! its needs' outputs and the run's state. The JSON written here is `docs/protocol.md`'s `when`.

use crate::json::Value;

/// A job's runtime condition. When it is false as the job becomes ready, the job is recorded
/// `skipped` with reason `condition false: <condition>` (and, skipped, still satisfies its
/// dependents).
///
/// ```
/// # use sparkwing::prelude::*;
/// let deploy = Cond::output("detect", "changed").eq("true") & Cond::branch("main");
/// let notify = Cond::upstream_failed();
/// let quiet = !Cond::branch("main");
/// # let _ = (deploy, notify, quiet);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Cond(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    OutputEq(String, String, String),
    OutputNe(String, String, String),
    Branch(String),
    UpstreamFailed,
    Not(Box<Node>),
    All(Vec<Node>),
    Any(Vec<Node>),
}

/// An output of a job this one needs, to compare (see [`Cond::output`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRef {
    job: String,
    name: String,
}

impl OutputRef {
    /// The output equals `value` (an output the job never set equals nothing).
    pub fn eq(self, value: impl Into<String>) -> Cond {
        Cond(Node::OutputEq(self.job, self.name, value.into()))
    }

    /// The output differs from `value`, or was never set.
    pub fn ne(self, value: impl Into<String>) -> Cond {
        Cond(Node::OutputNe(self.job, self.name, value.into()))
    }
}

impl Cond {
    /// Output `name` of `job`, which must be one of this job's needs (the plan is refused
    /// otherwise: outputs reach a job only from its needs).
    pub fn output(job: impl Into<String>, name: impl Into<String>) -> OutputRef {
        OutputRef {
            job: job.into(),
            name: name.into(),
        }
    }

    /// The run's git branch is `name` (false when the run has none).
    pub fn branch(name: impl Into<String>) -> Cond {
        Cond(Node::Branch(name.into()))
    }

    /// A job this one needs failed or was cancelled. A job whose condition uses this is not
    /// cancelled with its failed needs: it waits for them to end, then asks.
    pub fn upstream_failed() -> Cond {
        Cond(Node::UpstreamFailed)
    }

    /// Every condition holds (`a & b` for two).
    pub fn all(conds: impl IntoIterator<Item = Cond>) -> Cond {
        Cond(Node::All(conds.into_iter().map(|c| c.0).collect()))
    }

    /// At least one condition holds (`a | b` for two).
    pub fn any(conds: impl IntoIterator<Item = Cond>) -> Cond {
        Cond(Node::Any(conds.into_iter().map(|c| c.0).collect()))
    }

    pub(crate) fn to_json(&self) -> Value {
        node_json(&self.0)
    }
}

fn node_json(node: &Node) -> Value {
    let output = |op: &str, job: &str, name: &str, value: &str| {
        Value::object([
            ("op", Value::from(op)),
            ("job", Value::from(job)),
            ("output", Value::from(name)),
            ("value", Value::from(value)),
        ])
    };
    let list = |op: &str, nodes: &[Node]| {
        Value::object([
            ("op", Value::from(op)),
            ("conds", Value::Array(nodes.iter().map(node_json).collect())),
        ])
    };
    match node {
        Node::OutputEq(j, n, v) => output("output_eq", j, n, v),
        Node::OutputNe(j, n, v) => output("output_ne", j, n, v),
        Node::Branch(name) => Value::object([
            ("op", Value::from("branch")),
            ("name", Value::from(name.as_str())),
        ]),
        Node::UpstreamFailed => Value::object([("op", Value::from("upstream_failed"))]),
        Node::Not(inner) => Value::object([("op", Value::from("not")), ("cond", node_json(inner))]),
        Node::All(nodes) => list("all", nodes),
        Node::Any(nodes) => list("any", nodes),
    }
}

impl std::ops::Not for Cond {
    type Output = Cond;
    fn not(self) -> Cond {
        Cond(Node::Not(Box::new(self.0)))
    }
}

impl std::ops::BitAnd for Cond {
    type Output = Cond;
    fn bitand(self, other: Cond) -> Cond {
        Cond::all([self, other])
    }
}

impl std::ops::BitOr for Cond {
    type Output = Cond;
    fn bitor(self, other: Cond) -> Cond {
        Cond::any([self, other])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_protocols() {
        let c = (Cond::output("detect", "changed").eq("true") & !Cond::branch("main"))
            | Cond::upstream_failed();
        assert_eq!(
            c.to_json().to_string(),
            concat!(
                r#"{"op":"any","conds":[{"op":"all","conds":["#,
                r#"{"op":"output_eq","job":"detect","output":"changed","value":"true"},"#,
                r#"{"op":"not","cond":{"op":"branch","name":"main"}}]},"#,
                r#"{"op":"upstream_failed"}]}"#
            )
        );
    }
}
