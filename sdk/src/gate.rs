//! Approval gates and concurrency groups: what a plan declares so the engine holds the run for a
//! person's decision, or limits how many runs of a group go at once (`docs/authoring.md`).

use crate::job::Job;
use crate::json::Value;
use crate::plan::{JobBuilder, Plan};

/// A decision on an approval gate; also what a gate's timeout decides ([`JobBuilder::on_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// The gate succeeds and the jobs that need it run.
    Approve,
    /// The gate fails: the jobs that need it are cancelled, as after a failed job.
    Reject,
}

impl GateDecision {
    fn as_str(self) -> &'static str {
        match self {
            GateDecision::Approve => "approve",
            GateDecision::Reject => "reject",
        }
    }
}

/// The gate part of a job added with [`Plan::gate`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GateSettings {
    message: Option<String>,
    on_timeout: GateDecision,
}

impl GateSettings {
    /// The `"gate"` object of the job (`docs/protocol.md`); the job's timeout is the gate's.
    pub(crate) fn to_json(&self, timeout_ms: Value) -> Value {
        Value::object([
            ("message", Value::from(self.message.as_deref())),
            ("timeout_ms", timeout_ms),
            ("on_timeout", Value::from(self.on_timeout.as_str())),
        ])
    }
}

/// The run's concurrency group, set with [`Plan::concurrency`]; every method chains.
#[derive(Debug, Clone, PartialEq)]
pub struct Concurrency {
    group: String,
    limit: u32,
    cancel_in_progress: bool,
}

impl Concurrency {
    /// How many runs of the group may run at once (default 1).
    pub fn limit(&mut self, n: u32) -> &mut Concurrency {
        self.limit = n;
        self
    }

    /// A new run cancels the older runs of its group (running or queued) instead of queueing
    /// behind them.
    pub fn cancel_in_progress(&mut self) -> &mut Concurrency {
        self.cancel_in_progress = true;
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        Value::object([
            ("group", Value::from(self.group.as_str())),
            ("limit", Value::from(self.limit)),
            ("cancel_in_progress", Value::Bool(self.cancel_in_progress)),
        ])
    }
}

impl Plan {
    /// Adds an approval gate: a job that runs nothing and, once its needs succeeded, waits for
    /// `sparkwing runs approve` (it succeeds) or `sparkwing runs reject` (it fails, and the jobs
    /// needing it are cancelled). Set a message with [`JobBuilder::message`], and a time limit
    /// with [`JobBuilder::timeout`] whose outcome [`JobBuilder::on_timeout`] chooses (reject by
    /// default).
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.job("build", |job| job.bash("cargo build --release"));
    ///     p.gate("approve-prod")
    ///         .needs(["build"])
    ///         .message("Deploy this build to production?")
    ///         .timeout(Duration::from_secs(3600))
    ///         .on_timeout(GateDecision::Reject);
    ///     p.job("deploy", |job| job.bash("./deploy.sh")).needs(["approve-prod"]);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// The engine decides such a job itself; its body in the pipeline binary only reports that
    /// the engine is too old for gates.
    pub fn gate(&mut self, id: impl Into<String>) -> &mut JobBuilder {
        let job = self.job(id, |_: &mut Job| {
            Err(crate::error::fail(
                "this job is an approval gate, and the sparkwing engine running it is too old to \
                 decide gates; upgrade sparkwing",
            ))
        });
        job.gate = Some(GateSettings {
            message: None,
            on_timeout: GateDecision::Reject,
        });
        job
    }

    /// Puts the run in concurrency group `group`: at most [`Concurrency::limit`] runs of a group
    /// run at once on this host; the others wait in arrival order before their first job. `{name}`
    /// in `group` is replaced by the value of arg `name` (`deploy-{env}` → `deploy-prod`).
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.concurrency("deploy-{env}").cancel_in_progress();
    ///     p.job("deploy", |job| job.bash("./deploy.sh"));
    ///     Ok(())
    /// }
    /// ```
    pub fn concurrency(&mut self, group: impl Into<String>) -> &mut Concurrency {
        self.concurrency.insert(Concurrency {
            group: group.into(),
            limit: 1,
            cancel_in_progress: false,
        })
    }
}

impl JobBuilder {
    /// For a gate added with [`Plan::gate`]: the text shown to whoever decides. On other jobs it
    /// does nothing.
    pub fn message(&mut self, text: impl Into<String>) -> &mut JobBuilder {
        if let Some(g) = &mut self.gate {
            g.message = Some(text.into());
        }
        self
    }

    /// For a gate added with [`Plan::gate`]: the decision recorded when its
    /// [`JobBuilder::timeout`] passes without one (default [`GateDecision::Reject`]). On other
    /// jobs it does nothing.
    pub fn on_timeout(&mut self, decision: GateDecision) -> &mut JobBuilder {
        if let Some(g) = &mut self.gate {
            g.on_timeout = decision;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use crate::args::Args;
    use crate::plan::{Pipeline, Plan};
    use crate::GateDecision;
    use std::time::Duration;

    fn plan_json(p: &Pipeline) -> String {
        match p.build(&Args::default()) {
            Ok(plan) => plan.to_json().to_string(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn gates_carry_their_settings_and_plain_jobs_do_not() {
        let p = Pipeline::new("Ship", |p: &mut Plan, _: &Args| {
            p.job("build", |_| Ok(()))
                .message("ignored")
                .on_timeout(GateDecision::Approve);
            p.gate("approve")
                .needs(["build"])
                .message("Ship it?")
                .timeout(Duration::from_secs(90))
                .on_timeout(GateDecision::Approve);
            p.gate("plain-gate");
            Ok(())
        });
        let json = plan_json(&p);
        assert!(
            json.contains(concat!(
                r#"{"id":"approve","needs":["build"],"retries":0,"backoff_ms":1000,"timeout_ms":null,"#,
                r#""optional":false,"finally":false,"env":{},"workdir":null,"skip":null,"#,
                r#""gate":{"message":"Ship it?","timeout_ms":90000,"on_timeout":"approve"}}"#
            )),
            "{json}"
        );
        assert!(
            json.contains(r#""gate":{"message":null,"timeout_ms":null,"on_timeout":"reject"}"#),
            "{json}"
        );
        assert_eq!(json.matches("gate\":").count(), 2, "{json}");
        assert!(!json.contains("concurrency"), "{json}");
    }

    #[test]
    fn the_concurrency_group_is_a_field_of_the_plan() {
        let p = Pipeline::new("Deploy", |p: &mut Plan, _: &Args| {
            p.concurrency("deploy-{env}").limit(2).cancel_in_progress();
            p.job("deploy", |_| Ok(()));
            Ok(())
        });
        let json = plan_json(&p);
        assert!(
            json.contains(
                r#""concurrency":{"group":"deploy-{env}","limit":2,"cancel_in_progress":true}"#
            ),
            "{json}"
        );
    }
}
