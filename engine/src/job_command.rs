//! How an attempt of a pipeline job runs: the pipeline binary's `job` command with the
//! protocol's environment (`docs/protocol.md`). One definition for the engine's attempts
//! (`dag_run`) and a job pod's single attempt (`one_job`).

use crate::process::{self, AttemptSpec};
use serde_json::{Map, Value};
use sparkwing_core::fanout;
use sparkwing_core::protocol::{JobSpec, PROTOCOL_VERSION};
use std::path::Path;
use std::time::Duration;

/// What the command of a job's attempt is made of besides the job.
pub(crate) struct JobCommand<'a> {
    pub binary: &'a Path,
    pub entrypoint: &'a str,
    pub pipeline: &'a str,
    pub run_id: &'a str,
    pub args_json: &'a str,
    pub repo_root: &'a Path,
    /// Where the job writes its outputs (`SPARKWING_OUTPUTS_FILE`).
    pub outputs_file: &'a Path,
    /// Its needs' outputs, by job id (`SPARKWING_NEEDS_OUTPUTS`).
    pub needs_outputs: Map<String, Value>,
}

/// The attempt `attempt` of job `spec`.
pub(crate) fn attempt_spec(c: JobCommand<'_>, spec: &JobSpec, attempt: u32) -> AttemptSpec {
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend([
        (
            "SPARKWING_PROTOCOL".to_string(),
            PROTOCOL_VERSION.to_string(),
        ),
        ("SPARKWING_ARGS".to_string(), c.args_json.to_string()),
        ("SPARKWING_RUN_ID".to_string(), c.run_id.to_string()),
        ("SPARKWING_PIPELINE".to_string(), c.pipeline.to_string()),
        ("SPARKWING_JOB".to_string(), spec.id.clone()),
        ("SPARKWING_ATTEMPT".to_string(), attempt.to_string()),
        (
            "SPARKWING_WORKSPACE".to_string(),
            c.repo_root.to_string_lossy().into_owned(),
        ),
        (
            "SPARKWING_OUTPUTS_FILE".to_string(),
            c.outputs_file.to_string_lossy().into_owned(),
        ),
        (
            "SPARKWING_NEEDS_OUTPUTS".to_string(),
            Value::Object(c.needs_outputs).to_string(),
        ),
        // A job body that starts `sparkwing run` itself passes the ancestry on too.
        (
            sparkwing_core::subpipeline::CHAIN_ENV.to_string(),
            sparkwing_core::subpipeline::extend_chain(&crate::subpipeline::own_chain(), c.pipeline),
        ),
    ]);
    // A job expanded from a fan-out or matrix gets its item (`Job::item`).
    if let Some(e) = &spec.expanded {
        env.push((fanout::ITEM_ENV.to_string(), e.item.clone()));
        env.push((fanout::INDEX_ENV.to_string(), e.index.to_string()));
    }
    AttemptSpec {
        program: c.binary.to_path_buf(),
        args: vec!["job".into(), c.entrypoint.to_string(), spec.id.clone()],
        cwd: match &spec.workdir {
            Some(w) => c.repo_root.join(w),
            None => c.repo_root.to_path_buf(),
        },
        env,
        timeout: spec.timeout_ms.map(Duration::from_millis),
        stop_grace: process::STOP_GRACE,
        merge_output: true,
    }
}
