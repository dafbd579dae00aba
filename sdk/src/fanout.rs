//! Fan-out and matrix jobs: a template job expanded into one job per item, `NAME[0]`,
//! `NAME[1]`, …, from a list known when planning ([`Plan::matrix`]) or from an output of
//! another job at run time ([`Plan::fan_out`]).

use crate::error::Result;
use crate::job::Job;
use crate::json::Value;
use crate::plan::{JobBuilder, Plan};

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

impl Plan {
    /// Adds a fan-out template: once job `from` succeeded, the engine reads its output `output`
    /// (a JSON array of strings, e.g. set with [`Job::output_list`]) and runs `body` once per
    /// item, as jobs `id[0]`, `id[1]`, … (at most 1,000). Each reads its item with
    /// [`Job::item`]; each needs `from` (added for you) and the template's other needs, and has
    /// the template's settings (retries, timeout, caches, conditions, …). A job that needs `id`
    /// waits for all of them and reads their outputs with [`Job::inputs`]. An empty list expands
    /// into no jobs.
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.job("shards", |job| {
    ///         job.output_list("list", ["unit", "integration"]);
    ///         Ok(())
    ///     });
    ///     p.fan_out("test", "shards", "list", |job| {
    ///         let shard = job.item().unwrap_or_default().to_string();
    ///         job.bash(&format!("make test-{shard}"))
    ///     })
    ///     .retries(1);
    ///     p.job("report", |job| {
    ///         let results = job.inputs("test", "result")?;
    ///         job.log(&format!("{} shards", results.len()));
    ///         Ok(())
    ///     })
    ///     .needs(["test"]);
    ///     Ok(())
    /// }
    /// ```
    pub fn fan_out<F>(
        &mut self,
        id: impl Into<String>,
        from: impl Into<String>,
        output: impl Into<String>,
        body: F,
    ) -> &mut JobBuilder
    where
        F: Fn(&mut Job) -> Result<()> + Send + Sync + 'static,
    {
        let from = from.into();
        let job = self.job(id, body);
        job.needs([from.clone()]);
        job.expansion = Some(Expansion::FanOut {
            job: from,
            output: output.into(),
        });
        job
    }

    /// Adds a matrix: `body` runs once per item of `items`, as jobs `id[0]`, `id[1]`, … (at most
    /// 1,000), each reading its item with [`Job::item`] and with the template's needs and
    /// settings. A job that needs `id` waits for all of them and reads their outputs with
    /// [`Job::inputs`].
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.matrix("build", ["linux", "macos"], |job| {
    ///         let target = job.item().unwrap_or_default().to_string();
    ///         job.bash(&format!("./build.sh {target}"))
    ///     });
    ///     Ok(())
    /// }
    /// ```
    pub fn matrix<I, S, F>(&mut self, id: impl Into<String>, items: I, body: F) -> &mut JobBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
        F: Fn(&mut Job) -> Result<()> + Send + Sync + 'static,
    {
        let items = items.into_iter().map(Into::into).collect();
        let job = self.job(id, body);
        job.expansion = Some(Expansion::Matrix(items));
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Args;
    use crate::plan::Pipeline;

    fn pipeline() -> Pipeline {
        Pipeline::new("F", |p: &mut Plan, _: &Args| {
            p.job("shards", |job| {
                job.output_list("list", ["a", "b"]);
                Ok(())
            });
            p.fan_out("test", "shards", "list", |job| {
                let item = job.item().unwrap_or("none").to_string();
                job.output("seen", item);
                Ok(())
            })
            .retries(1);
            p.matrix("build", ["x", "y"], |_| Ok(()));
            Ok(())
        })
    }

    #[test]
    fn templates_declare_their_list_and_need_their_producer() {
        let plan = match pipeline().build(&Args::default()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let json = plan.to_json().to_string();
        assert!(
            json.contains(r#""id":"test","needs":["shards"],"retries":1"#),
            "{json}"
        );
        assert!(
            json.contains(r#""fan_out":{"job":"shards","output":"list"}"#),
            "{json}"
        );
        assert!(json.contains(r#""matrix":["x","y"]"#), "{json}");
        assert_eq!(json.matches("fan_out").count(), 1, "{json}");
    }

    #[test]
    fn an_expanded_job_runs_its_templates_body_with_its_item() {
        let plan = match pipeline().build(&Args::default()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let body = plan.take_body("test[1]");
        let Some(body) = body else {
            panic!("no body for test[1]")
        };
        let env = |k: &str| match k {
            "SPARKWING_ITEM" => Some("b".to_string()),
            "SPARKWING_ITEM_INDEX" => Some("1".to_string()),
            _ => None,
        };
        let mut job = match Job::from_env("test[1]", Args::default(), &env) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(job.item(), Some("b"));
        assert_eq!(job.item_index(), Some(1));
        assert!(body(&mut job).is_ok());
        let plan = match pipeline().build(&Args::default()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        // Only templates' bodies answer for NAME[i].
        assert!(plan.take_body("shards[0]").is_none());
    }

    #[test]
    fn a_fan_in_reads_every_expanded_jobs_output_in_index_order() {
        let needs = r#"{"test":{},"test[10]":{"r":"k"},"test[2]":{"r":"c"},"test[0]":{"r":"a"},"tests[1]":{"r":"no"}}"#;
        let env = |k: &str| (k == "SPARKWING_NEEDS_OUTPUTS").then(|| needs.to_string());
        let job = match Job::from_env("report", Args::default(), &env) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(job.item(), None);
        assert_eq!(
            job.inputs("test", "r").ok(),
            Some(vec!["a".to_string(), "c".to_string(), "k".to_string()])
        );
        assert_eq!(job.input("test[2]", "r").ok(), Some("c".to_string()));
        assert!(job.inputs("test", "missing").err().is_some_and(|e| e
            .to_string()
            .contains("job `test[0]` has no output `missing`")));
        assert!(job
            .inputs("other", "r")
            .err()
            .is_some_and(|e| e.to_string().contains("no outputs of `other`")));
        let env = |k: &str| (k == "SPARKWING_NEEDS_OUTPUTS").then(|| r#"{"test":{}}"#.to_string());
        let job = match Job::from_env("report", Args::default(), &env) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(job.inputs("test", "r").ok(), Some(Vec::new()));
    }

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
