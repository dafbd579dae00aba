//! `sparkwing runs retry --run ID [--failed | --job J ...]`: a new run of the same pipeline with
//! the same args, on the current `.sparkwing/` code, that executes only the jobs to retry and
//! what needs them; the rest are reused from the old run (`sparkwing_core::rerun`).

use super::pipeline_ref::{checked_plan, registered_entrypoint, resolve_args, unknown_pipeline};
use super::run::{compile_project, log_format};
use super::{CliError, CmdResult};
use crate::cli::RetryArgs;
use crate::exit::ExitCode;
use serde_json::{Map, Value};
use sparkwing_core::protocol::PipelineInfo;
use sparkwing_core::rerun::{self, PriorJob, RetryError, RetryScope};
use sparkwing_engine::box_slots::BoxSlots;
use sparkwing_engine::home::Home;
use sparkwing_engine::project::{self, PipelineConfig, Project};
use sparkwing_engine::store::{JobRecord, RunRecord};
use sparkwing_engine::{self as engine, abandoned, BoxGate, RunRequest};
use std::collections::BTreeMap;
use std::path::Path;

pub fn retry(args: RetryArgs) -> CmdResult {
    if args.profile.is_some() {
        return Err(CliError::new(
            ExitCode::Usage,
            "runs retry --profile is not supported yet: retry a cluster run by triggering it again",
        ));
    }
    let scope = if args.jobs.is_empty() {
        RetryScope::Failed
    } else {
        RetryScope::Jobs(args.jobs.clone())
    };
    let home = Home::from_env();
    let store = abandoned::open_store(&home)?;
    let old = store.find_run(args.id())?;
    if !old.status.is_terminal() {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "run {} is still {} (pid {} on {}); wait for it (`sparkwing runs wait {0}`) or cancel it (`sparkwing runs cancel {0}`) before retrying it",
                old.id, old.status, old.pid, old.host
            ),
        ));
    }
    let prior: Vec<PriorJob> = store.jobs(&old.id)?.iter().map(prior_job).collect();
    drop(store);
    rerun::check_scope(&old.id, &prior, &scope).map_err(|e| retry_error(&old.id, e))?;

    // The pipeline as the project has it now (a retry runs the current code).
    let project = project::discover(Path::new(&old.repo_root))?;
    let pipeline = project
        .pipeline(&old.pipeline)
        .ok_or_else(|| unknown_pipeline(&project, &old.pipeline))?
        .clone();
    let format = log_format()?;
    let runtime = engine::runtime::build()?;
    let compiled = compile_project(&home, &project, &pipeline.name, &pipeline.entrypoint)?;
    let info = registered_entrypoint(&project, &pipeline, &compiled.describe)?;
    let resolved = old_args(&old, &info, &pipeline)?;
    check_retry(
        &project,
        &pipeline,
        &compiled.binary,
        &resolved,
        &old.id,
        &prior,
        &scope,
    )?;
    let box_slots = engine::box_slots::resolve_cap(None)
        .map_err(|e| CliError::new(ExitCode::Usage, e.to_string()))?
        .map(|max| BoxGate {
            slots: BoxSlots::new(&home.root, max),
            no_wait: false,
        });
    eprintln!("retrying run {} ({})", old.id, scope_text(&scope));
    let req = RunRequest {
        home,
        repo_root: project.root.clone(),
        pipeline: pipeline.name.clone(),
        info,
        binary: (&compiled).into(),
        args: resolved,
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        format,
        box_slots,
        runner: "process".into(),
        sink: None,
        gate_relay: None,
        group_slots: None,
        no_cache: false,
        stores: None,
        memo: None,
        job_pods: None,
        selection: Default::default(),
        retry: Some(engine::Retry {
            of_run: old.id.clone(),
            scope,
            prior,
            waiting_since: Default::default(),
        }),
    };
    let code = runtime
        .block_on(engine::execute(req))
        .map_err(|e| CliError::new(ExitCode::Internal, e.to_string()));
    // The binary's cache entry stays leased until the run is over.
    drop(compiled);
    code
}

fn scope_text(scope: &RetryScope) -> String {
    match scope {
        RetryScope::Failed => "its failed jobs and what needs them".into(),
        RetryScope::Jobs(jobs) => format!("{} and what needs them", jobs.join(", ")),
        RetryScope::Resume => "the jobs that did not end and what needs them".into(),
    }
}

fn prior_job(j: &JobRecord) -> PriorJob {
    let outputs: BTreeMap<String, String> = j
        .outputs
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    PriorJob {
        id: j.job_id.clone(),
        state: j.state,
        reason: j.reason.clone(),
        outputs,
    }
}

/// The old run's args, checked against the pipeline's args as the code declares them now. A
/// secret arg is not stored (only its mask), so a run given one cannot be retried.
fn old_args(
    old: &RunRecord,
    info: &PipelineInfo,
    pipeline: &PipelineConfig,
) -> Result<Map<String, Value>, CliError> {
    let stored = old.args.as_object().cloned().unwrap_or_default();
    if let Some(secret) = info
        .args
        .iter()
        .find(|a| a.secret && stored.get(&a.name).is_some_and(|v| !v.is_null()))
    {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "run {} was given the secret arg --{}, whose value is not recorded; a retry cannot give it again: start a fresh run",
                old.id, secret.name
            ),
        ));
    }
    let tokens: Vec<String> = stored
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => format!("--{k}={s}"),
            other => format!("--{k}={other}"),
        })
        .collect();
    resolve_args(info, pipeline, &tokens).map_err(|e| {
        CliError::new(
            e.code,
            format!("the args of run {} no longer fit: {}", old.id, e.message),
        )
    })
}

/// What the retry executes must be decidable on the current plan: said before anything is
/// recorded. A plan that cannot be made here is left to the run, which records why.
fn check_retry(
    project: &Project,
    pipeline: &PipelineConfig,
    binary: &Path,
    resolved: &Map<String, Value>,
    run: &str,
    prior: &[PriorJob],
    scope: &RetryScope,
) -> Result<(), CliError> {
    let Some(validated) = checked_plan(binary, project, pipeline, resolved) else {
        return Ok(());
    };
    rerun::plan_retry(&validated, run, prior, scope)
        .map(|_| ())
        .map_err(|e| retry_error(run, e))
}

/// The documented exit code of each reason a retry is refused (`docs/exit-codes.md`).
fn retry_error(run: &str, e: RetryError) -> CliError {
    let code = match e {
        RetryError::UnknownJob { .. } => ExitCode::NotFound,
        RetryError::GoneFromPlan { .. } => ExitCode::Project,
        RetryError::NothingToRetry { .. } => ExitCode::Usage,
    };
    CliError::new(code, format!("cannot retry run {run}: {e}"))
}
