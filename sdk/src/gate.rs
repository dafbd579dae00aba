//! Approval gates and concurrency groups: what a plan declares so the engine holds the run for a
//! person's decision, or limits how many runs of a group go at once (`docs/authoring.md`). The
//! methods that declare them are on [`Plan`](crate::Plan) and [`JobBuilder`](crate::JobBuilder).

use crate::json::Value;

/// A decision on an approval gate; also what a gate's timeout decides
/// ([`JobBuilder::on_timeout`](crate::JobBuilder::on_timeout)).
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

/// The gate part of a job added with [`Plan::gate`](crate::Plan::gate).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GateSettings {
    pub(crate) message: Option<String>,
    pub(crate) on_timeout: GateDecision,
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

/// The run's concurrency group, set with [`Plan::concurrency`](crate::Plan::concurrency); every
/// method chains.
#[derive(Debug, Clone, PartialEq)]
pub struct Concurrency {
    group: String,
    limit: u32,
    cancel_in_progress: bool,
}

impl Concurrency {
    /// A job's group ([`JobBuilder::concurrency`](crate::JobBuilder::concurrency)): its limit.
    pub(crate) fn set_limit(&mut self, n: u32) {
        self.limit = n;
    }

    /// A job's group ([`JobBuilder::concurrency_cancel_in_progress`](crate::JobBuilder::concurrency_cancel_in_progress)).
    pub(crate) fn set_cancel_in_progress(&mut self) {
        self.cancel_in_progress = true;
    }

    /// A group of `limit` 1 that queues.
    pub(crate) fn new(group: String) -> Concurrency {
        Concurrency {
            group,
            limit: 1,
            cancel_in_progress: false,
        }
    }

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
    fn a_jobs_group_is_a_field_of_the_job() {
        let p = Pipeline::new("Deploy", |p: &mut Plan, _: &Args| {
            p.job("deploy", |_| Ok(()))
                .concurrency("deploy-{env}")
                .concurrency_limit(3);
            p.job("other", |_| Ok(())).concurrency_limit(2);
            Ok(())
        });
        let json = plan_json(&p);
        assert!(
            json.contains(
                r#""skip":null,"concurrency":{"group":"deploy-{env}","limit":3,"cancel_in_progress":false}}"#
            ),
            "{json}"
        );
        assert_eq!(json.matches("concurrency").count(), 1, "{json}");
    }

    #[test]
    fn a_jobs_group_may_cancel_in_progress() {
        let p = Pipeline::new("Deploy", |p: &mut Plan, _: &Args| {
            p.job("deploy", |_| Ok(()))
                .concurrency("deploy")
                .concurrency_cancel_in_progress();
            // Without a group it does nothing.
            p.job("other", |_| Ok(())).concurrency_cancel_in_progress();
            Ok(())
        });
        let json = plan_json(&p);
        assert!(
            json.contains(
                r#""skip":null,"concurrency":{"group":"deploy","limit":1,"cancel_in_progress":true}}"#
            ),
            "{json}"
        );
        assert_eq!(json.matches("concurrency").count(), 1, "{json}");
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
