//! Fan-out and matrix jobs: a template job expanded into one job per item, `NAME[0]`,
//! `NAME[1]`, …, from a list known when planning (`Plan::matrix`) or from an output of another
//! job at run time (`Plan::fan_out`). This module holds what the plan and the job share: the
//! declaration and the expanded jobs' ids; the builders are in `plan.rs`, the accessors in
//! `job.rs`.

use crate::json::Value;

/// What a template expands into.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expansion {
    /// One job per item of output `output` of job `job` (a JSON array of strings).
    FanOut { job: String, output: String },
    /// One job per item of this list.
    Matrix(Vec<String>),
}

impl Expansion {
    /// The plan field that declares it (`docs/protocol.md`).
    pub(crate) fn json_field(&self) -> (&'static str, Value) {
        match self {
            Expansion::FanOut { job, output } => (
                "fan_out",
                Value::object([
                    ("job", Value::from(job.as_str())),
                    ("output", Value::from(output.as_str())),
                ]),
            ),
            Expansion::Matrix(items) => (
                "matrix",
                Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect()),
            ),
        }
    }
}

/// The template of an expanded job's id: `test[3]` → `test`.
pub(crate) fn template_of(id: &str) -> Option<&str> {
    let open = id.rfind('[')?;
    let digits = id[open + 1..].strip_suffix(']')?;
    (open > 0 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| &id[..open])
}

/// The index of an expanded job's id under template `template`: `test[3]` → 3.
pub(crate) fn index_under(id: &str, template: &str) -> Option<usize> {
    let rest = id.strip_prefix(template)?.strip_prefix('[')?;
    let digits = rest.strip_suffix(']')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanded_ids() {
        assert_eq!(template_of("test[3]"), Some("test"));
        assert_eq!(template_of("test"), None);
        assert_eq!(template_of("[3]"), None);
        assert_eq!(template_of("test[x]"), None);
        assert_eq!(index_under("test[12]", "test"), Some(12));
        assert_eq!(index_under("tests[1]", "test"), None);
        assert_eq!(index_under("test", "test"), None);
    }
}
