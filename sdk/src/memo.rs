//! Memoized jobs (`docs/authoring.md#memoized-jobs`): a job the engine does not run when a
//! successful result for the same inputs is recent enough.

use crate::json::Value;
use std::time::Duration;

/// What a memoized job's result depends on, and how long a result stays good.
///
/// ```
/// # use sparkwing::prelude::*;
/// let memo = Memo::ttl(Duration::from_secs(24 * 3600))
///     .files(["src", "Cargo.lock"])
///     .args(["target"])
///     .output("detect", "version");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Memo {
    ttl: Duration,
    files: Vec<String>,
    args: Vec<String>,
    outputs: Vec<(String, String)>,
}

impl Memo {
    /// A result stays good this long after the run that made it.
    pub fn ttl(ttl: Duration) -> Memo {
        Memo {
            ttl,
            files: Vec::new(),
            args: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Files or directories (relative to the job's working directory) whose content counts.
    pub fn files<I, S>(mut self, paths: I) -> Memo
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.files.extend(paths.into_iter().map(Into::into));
        self
    }

    /// The run's args (by name) whose values count.
    pub fn args<I, S>(mut self, names: I) -> Memo
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(names.into_iter().map(Into::into));
        self
    }

    /// Output `key` of job `job` (one of this job's needs) counts.
    pub fn output(mut self, job: impl Into<String>, key: impl Into<String>) -> Memo {
        self.outputs.push((job.into(), key.into()));
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let strings =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        Value::object([
            (
                "ttl_ms",
                Value::Int(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)),
            ),
            ("files", strings(&self.files)),
            ("args", strings(&self.args)),
            (
                "outputs",
                Value::Array(
                    self.outputs
                        .iter()
                        .map(|(j, k)| {
                            Value::object([
                                ("job", Value::from(j.as_str())),
                                ("output", Value::from(k.as_str())),
                            ])
                        })
                        .collect(),
                ),
            ),
        ])
    }
}
