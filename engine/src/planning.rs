//! Asking a compiled pipeline binary for a plan without running anything (`<bin> plan`,
//! `docs/protocol.md`): what `pipeline plan`, `run --sw-dry-run`, `pipeline lint` and the
//! sub-pipeline preflight use. The run itself asks from its async loop (`dag_run`).

use serde_json::{Map, Value};
use sparkwing_core::protocol::{PlanDoc, PROTOCOL_VERSION};
use std::path::Path;

/// Why the binary gave no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanFailure {
    #[error("cannot start the pipeline binary: {0}")]
    Start(std::io::Error),
    /// The plan function returned an error, or the binary refused the invocation; the message is
    /// what the binary said on stderr.
    #[error("{0}")]
    Refused(String),
    #[error("the pipeline binary printed an invalid plan: {0}")]
    Invalid(serde_json::Error),
}

/// Plans `entrypoint` with the resolved `args` through the pipeline `binary` (synchronously).
pub fn plan(
    binary: &Path,
    repo_root: &Path,
    pipeline: &str,
    entrypoint: &str,
    args: &Map<String, Value>,
) -> Result<PlanDoc, PlanFailure> {
    let out = std::process::Command::new(binary)
        .arg("plan")
        .arg(entrypoint)
        .env("SPARKWING_PROTOCOL", PROTOCOL_VERSION.to_string())
        .env("SPARKWING_ARGS", Value::Object(args.clone()).to_string())
        .env("SPARKWING_PIPELINE", pipeline)
        .current_dir(repo_root)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(PlanFailure::Start)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = stderr.trim();
        return Err(PlanFailure::Refused(if msg.is_empty() {
            format!("the plan function failed ({})", out.status)
        } else {
            msg.to_string()
        }));
    }
    serde_json::from_slice(&out.stdout).map_err(PlanFailure::Invalid)
}
