//! The JSON shapes of the pipeline binary protocol (see `docs/protocol.md`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The protocol version this engine speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Output of `<bin> describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Describe {
    pub protocol: u32,
    pub sdk_version: String,
    pub pipelines: Vec<PipelineInfo>,
}

impl Describe {
    pub fn entrypoint(&self, name: &str) -> Option<&PipelineInfo> {
        self.pipelines.iter().find(|p| p.entrypoint == name)
    }
}

/// One registered pipeline entrypoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineInfo {
    pub entrypoint: String,
    #[serde(default)]
    pub about: String,
    #[serde(default)]
    pub args: Vec<ArgSpec>,
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// A typed arg a pipeline accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgKind,
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    #[serde(default)]
    pub help: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgKind {
    String,
    Int,
    Float,
    Bool,
}

impl ArgKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArgKind::String => "string",
            ArgKind::Int => "int",
            ArgKind::Float => "float",
            ArgKind::Bool => "bool",
        }
    }
}

/// Output of `<bin> plan <ENTRYPOINT>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDoc {
    pub protocol: u32,
    pub entrypoint: String,
    pub jobs: Vec<JobSpec>,
    /// The run's concurrency group (`docs/protocol.md`); absent when the plan declares none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<crate::concurrency::ConcurrencySpec>,
}

/// One job as the pipeline declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: String,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub finally: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub skip: Option<String>,
    /// Set on a job that starts another pipeline and awaits its result (`docs/subpipelines.md`);
    /// absent on ordinary jobs (and in every plan of an older SDK).
    #[serde(default, rename = "await", skip_serializing_if = "Option::is_none")]
    pub awaits: Option<AwaitSpec>,
    /// The job's runtime condition (`docs/protocol.md`): decided when the job becomes ready; when
    /// false the job is skipped. Absent on jobs without one (and in every plan of an older SDK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<crate::condition::Cond>,
    /// Set on an approval gate (`docs/protocol.md`): the job runs nothing and waits for a
    /// decision. Absent on other jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::gate::GateSpec>,
    /// The job's concurrency group (`docs/protocol.md`): each attempt waits for a slot of it.
    /// Absent on jobs without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<crate::concurrency::ConcurrencySpec>,
    /// The job's dependency caches (`docs/authoring.md#caches`); absent when it has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<crate::cache::CacheSpec>,
    /// The artifacts the job publishes when it succeeds; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishes: Vec<crate::artifact::ArtifactSpec>,
    /// The artifacts of its needs the job gets before it starts; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumes: Vec<crate::artifact::ConsumeSpec>,
    /// Set on a memoized job (`docs/authoring.md#memoized-jobs`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<crate::memo::MemoSpec>,
    /// Where the job runs on a cluster (`docs/authoring.md#placement`); absent on jobs without
    /// one (and in every plan of an older SDK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::placement::PlacementSpec>,
    /// Set on a fan-out template (`docs/authoring.md#fan-out-and-matrix`): expanded at run time
    /// into one job per item of an output of the job it fans out from. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<crate::fanout::FanOutSpec>,
    /// Set on a matrix template: expanded when the plan is validated into one job per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Vec<String>>,
    /// Set by the engine on a job expanded from a template (never in a binary's plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expanded: Option<crate::fanout::Expanded>,
}

/// The sub-pipeline an await job starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitSpec {
    /// A pipeline name from `sparkwing.yaml`.
    pub pipeline: String,
    /// Its args, as text (parsed by the child's declared kinds).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// Run it on this profile's cluster instead of locally.
    #[serde(default)]
    pub profile: Option<String>,
}

impl AwaitSpec {
    /// The args as command-line tokens (`--name value`), in name order.
    pub fn arg_tokens(&self) -> Vec<String> {
        self.args
            .iter()
            .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
            .collect()
    }
}

fn default_backoff_ms() -> u64 {
    1000
}

impl JobSpec {
    /// A job with defaults; used by tests and fixtures.
    pub fn new(id: &str) -> Self {
        JobSpec {
            id: id.to_string(),
            needs: Vec::new(),
            retries: 0,
            backoff_ms: default_backoff_ms(),
            timeout_ms: None,
            optional: false,
            finally: false,
            env: BTreeMap::new(),
            workdir: None,
            skip: None,
            awaits: None,
            when: None,
            gate: None,
            concurrency: None,
            caches: Vec::new(),
            publishes: Vec::new(),
            consumes: Vec::new(),
            memo: None,
            placement: None,
            fan_out: None,
            matrix: None,
            expanded: None,
        }
    }

    pub fn needs(mut self, ids: &[&str]) -> Self {
        self.needs.extend(ids.iter().map(|s| s.to_string()));
        self
    }

    /// Whether the job is a template (a fan-out or a matrix) rather than a job that runs.
    pub fn is_template(&self) -> bool {
        self.fan_out.is_some() || self.matrix.is_some()
    }

    /// The jobs this template expands into, one per item, in item order: `NAME[i]` with the
    /// template's settings and needs, and the item (`fanout`).
    pub fn expand(&self, items: &[String]) -> Vec<JobSpec> {
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let mut job = self.clone();
                job.id = crate::fanout::expanded_id(&self.id, index);
                job.fan_out = None;
                job.matrix = None;
                job.expanded = Some(crate::fanout::Expanded {
                    template: self.id.clone(),
                    index,
                    item: item.clone(),
                });
                job
            })
            .collect()
    }
}

/// Wait before attempt `next_attempt` (2 = first retry): `backoff * 2^(n-2)`, capped at 5 minutes.
pub fn retry_delay_ms(backoff_ms: u64, next_attempt: u32) -> u64 {
    const CAP_MS: u64 = 5 * 60 * 1000;
    let exp = next_attempt.saturating_sub(2).min(32);
    backoff_ms.saturating_mul(1u64 << exp).min(CAP_MS)
}

/// A control record a job prints on stdout (`\x1esparkwing {json}`).
pub const CONTROL_PREFIX: &str = "\u{1e}sparkwing ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_doc_parses_protocol_example() {
        let json = r#"{"protocol":1,"entrypoint":"Hello","jobs":[
            {"id":"build","needs":[],"retries":2,"backoff_ms":500,"timeout_ms":600000,
             "optional":false,"finally":false,"env":{"RUST_LOG":"info"},"workdir":null,"skip":null},
            {"id":"test","needs":["build"],"retries":0,"backoff_ms":1000,"timeout_ms":null,
             "optional":false,"finally":false,"env":{},"workdir":"crates/app","skip":"not on main"}]}"#;
        let doc: PlanDoc = serde_json::from_str(json).unwrap();
        assert_eq!(doc.jobs.len(), 2);
        assert_eq!(doc.jobs[0].timeout_ms, Some(600_000));
        assert_eq!(doc.jobs[1].skip.as_deref(), Some("not on main"));
        assert_eq!(doc.jobs[1].workdir.as_deref(), Some("crates/app"));
    }

    #[test]
    fn await_jobs_parse_and_older_plans_still_do() {
        let json = r#"{"protocol":1,"entrypoint":"Ship","jobs":[
            {"id":"deploy","needs":[],"await":{"pipeline":"deploy","args":{"env":"prod"},"profile":"p"}},
            {"id":"old"}]}"#;
        let doc: PlanDoc = serde_json::from_str(json).unwrap();
        let a = doc.jobs[0].awaits.clone().unwrap();
        assert_eq!(a.pipeline, "deploy");
        assert_eq!(a.profile.as_deref(), Some("p"));
        assert_eq!(
            a.arg_tokens(),
            vec!["--env".to_string(), "prod".to_string()]
        );
        assert_eq!(doc.jobs[1].awaits, None);
        assert!(!serde_json::to_string(&doc.jobs[1])
            .unwrap()
            .contains("await"));
    }

    #[test]
    fn retry_delay_doubles_and_caps() {
        assert_eq!(retry_delay_ms(500, 2), 500);
        assert_eq!(retry_delay_ms(500, 3), 1000);
        assert_eq!(retry_delay_ms(500, 4), 2000);
        assert_eq!(retry_delay_ms(500, 40), 300_000);
    }

    #[test]
    fn expansion_copies_the_template_with_ids_and_items() {
        let mut t = JobSpec::new("test").needs(&["shards", "build"]);
        t.retries = 2;
        t.fan_out = Some(crate::fanout::FanOutSpec {
            job: "shards".into(),
            output: "list".into(),
        });
        let jobs = t.expand(&["x".into(), "y".into()]);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].id, "test[1]");
        assert_eq!(jobs[1].needs, vec!["shards", "build"]);
        assert_eq!(jobs[1].retries, 2);
        assert_eq!(jobs[1].fan_out, None);
        assert_eq!(
            jobs[1].expanded,
            Some(crate::fanout::Expanded {
                template: "test".into(),
                index: 1,
                item: "y".into()
            })
        );
        assert!(t.is_template());
        assert!(!jobs[1].is_template());
        assert!(t.expand(&[]).is_empty());
    }
}
