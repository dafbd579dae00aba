//! A pipeline named on the command line, resolved against the project as `run`, `pipeline plan`
//! and `pipeline trigger` all resolve it: its config, its registered entrypoint and its args.

use super::CliError;
use crate::exit::ExitCode;
use sparkwing_core::protocol::PipelineInfo;
use sparkwing_core::suggest::closest;
use sparkwing_engine::project::{PipelineConfig, Project};

/// What the compiled project says of `pipeline`'s entrypoint, or the error naming the
/// entrypoints it registers (run and `runs retry`).
pub(super) fn registered_entrypoint(
    project: &Project,
    pipeline: &PipelineConfig,
    describe: &sparkwing_core::protocol::Describe,
) -> Result<PipelineInfo, CliError> {
    describe
        .entrypoint(&pipeline.entrypoint)
        .cloned()
        .ok_or_else(|| {
            let registered: Vec<String> = describe
                .pipelines
                .iter()
                .map(|p| p.entrypoint.clone())
                .collect();
            unregistered_entrypoint(project, &pipeline.name, &pipeline.entrypoint, &registered)
        })
}

/// The pipeline's plan for `args`, checked, when the binary gives a valid one; `None` otherwise
/// (a check before a run that leaves such failures to the run itself, which records them).
pub(super) fn checked_plan(
    binary: &std::path::Path,
    project: &Project,
    pipeline: &PipelineConfig,
    args: &serde_json::Map<String, serde_json::Value>,
) -> Option<sparkwing_core::dag::ValidatedPlan> {
    let plan = sparkwing_engine::planning::plan(
        binary,
        &project.root,
        &pipeline.name,
        &pipeline.entrypoint,
        args,
    )
    .ok()?;
    sparkwing_core::dag::validate(&plan).ok()
}

/// Exit 2 naming the pipelines `sparkwing.yaml` has and the closest to `name` (run and trigger).
pub(super) fn unknown_pipeline(project: &Project, name: &str) -> CliError {
    let names: Vec<&str> = project
        .config
        .pipelines
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let hint = match closest(name, names.iter().copied()) {
        Some(s) => format!("; did you mean {s:?}?"),
        None => String::new(),
    };
    let list = if names.is_empty() {
        "none yet (add one with `sparkwing pipeline new --name NAME`)".to_string()
    } else {
        names.join(", ")
    };
    CliError::new(
        ExitCode::Usage,
        format!(
            "unknown pipeline {name:?}{hint} (pipelines in {}: {list})",
            project.config_path().display()
        ),
    )
}

pub(super) fn unregistered_entrypoint(
    project: &Project,
    pipeline: &str,
    entrypoint: &str,
    registered: &[String],
) -> CliError {
    CliError::new(
        ExitCode::Project,
        format!(
            "pipeline {pipeline:?} names entrypoint {entrypoint:?} in {}, but .sparkwing/ registers no such entrypoint (registered: {}); register it in sparkwing::main(...) in .sparkwing/src/main.rs, or fix the entrypoint",
            project.config_path().display(),
            if registered.is_empty() { "none".to_string() } else { registered.join(", ") }
        ),
    )
}

/// The pipeline's args from the command line over `sparkwing.yaml`'s; an error exits 2.
pub(super) fn resolve_args(
    info: &PipelineInfo,
    pipeline: &PipelineConfig,
    tokens: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    sparkwing_core::args::resolve(&info.args, &pipeline.arg_defaults(), tokens).map_err(|e| {
        CliError::new(
            ExitCode::Usage,
            format!("{e} (see `sparkwing run {} --help`)", pipeline.name),
        )
    })
}
