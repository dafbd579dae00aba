//! `sparkwing run <pipeline> [args]`.

use super::pipeline_ref::{checked_plan, registered_entrypoint, resolve_args, unknown_pipeline};
use super::{start_dir, CliError, CmdResult};
use crate::cli::{PlanFormat, RunArgs};
use crate::exit::ExitCode;
use crate::settings::{RunSettings, Runner};
use sparkwing_core::protocol::PipelineInfo;
use sparkwing_core::RunPhase;
use sparkwing_docker::{self as docker, executor::Placement, pool::PoolPlacement, DockerError};
use sparkwing_engine::box_slots::BoxSlots;
use sparkwing_engine::compile::{self, CompileError, Progress};
use sparkwing_engine::env_vars;
use sparkwing_engine::home::Home;
use sparkwing_engine::project::{self, PipelineConfig, Project};
use sparkwing_engine::store::{NewRun, Store};
use sparkwing_engine::{self as engine, now_ms, Admission, BoxGate, Format, RunRequest};
use std::io::IsTerminal;
use std::sync::Arc;

/// The log format: `SPARKWING_LOG_FORMAT`, else pretty on a terminal and JSON lines otherwise.
pub(crate) fn log_format() -> Result<Format, CliError> {
    let tty = std::io::stdout().is_terminal();
    match std::env::var(env_vars::SPARKWING_LOG_FORMAT)
        .ok()
        .as_deref()
    {
        None | Some("") => Ok(if tty {
            Format::Pretty {
                color: env_vars::colors(tty),
            }
        } else {
            Format::Json
        }),
        Some("pretty") => Ok(Format::Pretty {
            color: env_vars::colors(tty),
        }),
        Some("json") => Ok(Format::Json),
        Some(other) => Err(CliError::new(
            ExitCode::Usage,
            format!(
                "{}={other:?} is not a log format; use pretty or json",
                env_vars::SPARKWING_LOG_FORMAT
            ),
        )),
    }
}

fn print_pipeline_help(
    name: &str,
    description: &str,
    info: &PipelineInfo,
    config_defaults: &std::collections::BTreeMap<String, String>,
) {
    println!(
        "{name}: {}",
        if description.is_empty() {
            info.about.as_str()
        } else {
            description
        }
    );
    println!();
    println!("USAGE:\n    sparkwing run {name} [ARGS] [--sw-workers N] [--sw-box-slots N] [--sw-no-wait] [--sw-runner process|docker] [--sw-pool NAME] [--sw-dry-run] [--sw-only JOB | --sw-start-at JOB] [--sw-stop-at JOB]");
    println!();
    println!("ARGS:");
    if info.args.is_empty() {
        println!("    (none)");
    }
    for a in &info.args {
        let mut extra = vec![a.kind.as_str().to_string()];
        // The effective default: sparkwing.yaml's `args:` wins over the one in code.
        if let Some(d) = config_defaults.get(&a.name) {
            extra.push(format!("default: {d} (from sparkwing.yaml)"));
        } else if let Some(d) = &a.default {
            extra.push(format!("default: {d}"));
        }
        if a.required {
            extra.push("required".into());
        }
        if a.secret {
            extra.push("secret".into());
        }
        println!("    --{:<18} {} [{}]", a.name, a.help, extra.join(", "));
    }
    if !info.secrets.is_empty() {
        println!();
        println!(
            "SECRETS (read from the environment, masked in logs when at least {} characters long):",
            sparkwing_core::mask::MIN_SECRET_LEN
        );
        for s in &info.secrets {
            println!("    {s}");
        }
    }
}

/// Record a run that failed before it could start (e.g. its pipeline does not compile).
fn record_failed_start(
    home: &Home,
    project: &Project,
    pipeline: &str,
    entrypoint: &str,
    error: &str,
) -> Result<String, CliError> {
    let mut store = Store::open(&home.root)?;
    let id = engine::new_run_id();
    let run_dir = home.run_dir(&id);
    std::fs::create_dir_all(&run_dir)?;
    let git = sparkwing_engine::git::read(&project.root);
    let now = now_ms();
    store.create_run(&NewRun {
        id: id.clone(),
        pipeline: pipeline.to_string(),
        entrypoint: entrypoint.to_string(),
        status: RunPhase::Failed,
        args_json: "{}".into(),
        repo_root: project.root.to_string_lossy().into_owned(),
        git_branch: git.branch,
        git_commit: git.commit,
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        user: std::env::var("USER").unwrap_or_default(),
        pid: std::process::id() as i64,
        runner: "process".into(),
        created_at: now,
        started_at: Some(now),
        finished_at: Some(now),
        exit_code: Some(ExitCode::RunFailed.code()),
        error: Some(error.to_string()),
        log_dir: run_dir.to_string_lossy().into_owned(),
        retry_of: None,
    })?;
    Ok(id)
}

pub fn run(args: RunArgs) -> CmdResult {
    let flags = RunSettings::resolve(&args)?;
    let Some(pipeline_name) = flags.pipeline.clone() else {
        return run_without_pipeline(flags.help);
    };
    let pool = flags.pool.clone();
    let profile = flags.profile.clone();
    let home = Home::from_env();
    let dir = flags.dir.clone();
    let project = project::discover(&start_dir(dir.as_deref()))?;
    let pipeline = project
        .pipeline(&pipeline_name)
        .ok_or_else(|| unknown_pipeline(&project, &pipeline_name))?
        .clone();
    if flags.dry_run && !flags.help {
        // Before the store, Docker or a box slot: a dry run touches none of them.
        eprintln!(
            "dry run: the plan of pipeline {:?}; nothing is run or recorded",
            pipeline.name
        );
        return super::plan::show(
            &home,
            &project,
            &pipeline,
            &flags.pipeline_args,
            &flags.selection,
            PlanFormat::Pretty,
        );
    }
    let chain = chain_without(&pipeline.name)?;
    let format = log_format()?;
    // Refuse an unusable store before doing any work.
    drop(Store::open(&home.root)?);
    let runtime = sparkwing_engine::runtime::build()?;
    // Docker must be usable before anything is compiled or recorded.
    let docker = if flags.runner == Runner::Docker && !flags.help {
        Some(runtime.block_on(usable_docker())?)
    } else {
        None
    };

    let compiled = compile_project(&home, &project, &pipeline.name, &pipeline.entrypoint)?;
    let info = registered_entrypoint(&project, &pipeline, &compiled.describe)?;
    if flags.help {
        print_pipeline_help(
            &pipeline.name,
            &pipeline.description,
            &info,
            &pipeline.arg_defaults(),
        );
        return Ok(ExitCode::Success);
    }
    let resolved = resolve_args(&info, &pipeline, &flags.pipeline_args)?;
    check_selection(&project, &pipeline, &compiled, &resolved, &flags.selection)?;
    let workers = flags.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    // The pipelines this one awaits must exist and must not await it back.
    engine::subpipeline::preflight(
        &project,
        &compiled.describe,
        &compiled.binary,
        &pipeline.name,
        &pipeline.entrypoint,
        &resolved,
        &chain,
    )
    .map_err(|e| {
        CliError::new(
            ExitCode::Usage,
            format!("refusing to run pipeline {:?}: {e}", pipeline.name),
        )
    })?;
    let box_slots = box_gate(&flags, &home)?;
    let (mirror, unmirrored) = match &profile {
        None => (None, None),
        Some(p) => mirror_to(p, &pipeline.name, &info, &resolved)?,
    };
    let home_for_mirror = home.clone();
    let req = RunRequest {
        home,
        repo_root: project.root.clone(),
        pipeline: pipeline.name.clone(),
        info,
        binary: (&compiled).into(),
        args: resolved,
        workers,
        format,
        box_slots,
        runner: flags.runner.as_str().to_string(),
        sink: mirror
            .as_ref()
            .map(|(_, s)| s.clone() as Arc<dyn engine::RunSink>),
        gate_relay: None,
        group_slots: None,
        selection: flags.selection.clone(),
        retry: None,
        no_cache: flags.no_cache,
        stores: None,
        memo: None,
        job_pods: None,
    };
    let parent = flags.parent.clone();
    let code = match docker {
        None => runtime
            .block_on(execute_with_parent(req, parent))
            .map(|(id, code)| {
                if let Some(id) = id {
                    after_mirror(&home_for_mirror, &id, mirror, unmirrored);
                }
                code
            })
            .map_err(|e| CliError::new(ExitCode::Internal, e.to_string())),
        Some((client, image)) => runtime.block_on(run_in_docker(req, client, image, pool)),
    };
    // The binary's cache entry stays leased until the run is over.
    drop(compiled);
    code
}

/// `--sw-only`/`--sw-start-at`/`--sw-stop-at` must name jobs of the plan: said before anything
/// is recorded (exit 2). A plan that cannot be made here is left to the run, which records why.
fn check_selection(
    project: &Project,
    pipeline: &PipelineConfig,
    compiled: &compile::Compiled,
    resolved: &serde_json::Map<String, serde_json::Value>,
    selection: &sparkwing_core::selection::Selection,
) -> Result<(), CliError> {
    if selection.is_all() {
        return Ok(());
    }
    let Some(validated) = checked_plan(&compiled.binary, project, pipeline, resolved) else {
        return Ok(());
    };
    selection.skips(&validated).map(|_| ()).map_err(|e| {
        CliError::new(
            ExitCode::Usage,
            format!("refusing to run pipeline {:?}: {e}", pipeline.name),
        )
    })
}

/// `sparkwing run` without a pipeline name: its help (asked for) or a usage error.
fn run_without_pipeline(help: bool) -> CmdResult {
    use clap::CommandFactory;
    let mut cmd = crate::cli::Cli::command();
    let run = cmd.find_subcommand_mut("run").expect("run is a subcommand");
    if help {
        let _ = run.print_long_help();
        return Ok(ExitCode::Success);
    }
    let _ = run.print_help();
    Err(CliError::new(
        ExitCode::Usage,
        "a pipeline name is required: sparkwing run NAME [ARGS] (see `sparkwing pipeline list`)",
    ))
}

/// The chain of pipelines this run descends from, refused when it already holds `pipeline`: a run
/// started (directly or not) by a run of this same pipeline would never end.
fn chain_without(pipeline: &str) -> Result<Vec<String>, CliError> {
    let chain = engine::subpipeline::own_chain();
    sparkwing_core::subpipeline::check_chain(&chain, pipeline).map_err(|e| {
        CliError::new(
            ExitCode::Usage,
            format!(
                "refusing to run pipeline {pipeline:?}: {e} ({} is {:?})",
                sparkwing_core::subpipeline::CHAIN_ENV,
                chain.join(",")
            ),
        )
    })?;
    Ok(chain)
}

/// The Docker daemon and the runner image, before anything is compiled or recorded.
async fn usable_docker() -> Result<(docker::client::Client, String), DockerError> {
    let image = docker::runner_image();
    let client = docker::client::connect().await?;
    client.require_image(&image).await?;
    Ok((client, image))
}

/// The project's pipeline binary, compiled if needed; a failed build is recorded as a failed run.
pub(super) fn compile_project(
    home: &Home,
    project: &Project,
    pipeline: &str,
    entrypoint: &str,
) -> Result<compile::Compiled, CliError> {
    let progress = if std::io::stderr().is_terminal() {
        Progress::Terminal
    } else {
        Progress::OnFailure
    };
    match compile::ensure(&home.cache, project, progress) {
        Ok(c) => Ok(c),
        Err(e @ (CompileError::BuildFailed { .. } | CompileError::FetchFailed { .. })) => {
            let msg = format!("compile error: {e}");
            let id = record_failed_start(home, project, pipeline, entrypoint, &msg)?;
            Err(CliError::new(
                ExitCode::RunFailed,
                format!("{msg}; run {id} recorded as failed"),
            ))
        }
        Err(e) => Err(CliError::new(ExitCode::Internal, e.to_string())),
    }
}

/// The host's box slots, when a cap is set. A sub-pipeline runs inside its parent's slot: waiting
/// for another could deadlock.
fn box_gate(flags: &RunSettings, home: &Home) -> Result<Option<BoxGate>, CliError> {
    Ok(sparkwing_engine::box_slots::resolve_cap(flags.box_slots)
        .map_err(|e| CliError::new(ExitCode::Usage, e.to_string()))?
        .map(|max| BoxGate {
            slots: BoxSlots::new(&home.root, max),
            no_wait: flags.no_wait,
        })
        .filter(|_| flags.parent.is_none()))
}

/// Where a `--profile` run is mirrored to.
type Mirror = (super::push::RemoteRun, Arc<sparkwing_runner::sink::ApiSink>);

/// `--profile`: the run is also an external run on the profile's API. Returns where it goes, or
/// (the API unreachable) the profile it could not reach; the run then records locally only.
fn mirror_to(
    profile: &str,
    pipeline: &str,
    info: &PipelineInfo,
    resolved: &serde_json::Map<String, serde_json::Value>,
) -> Result<(Option<Mirror>, Option<String>), CliError> {
    let redacted = sparkwing_core::args::redacted(&info.args, resolved);
    match super::push::trigger_external(Some(profile), pipeline, super::push::api_args(&redacted))?
    {
        Ok(remote) => {
            let sink = Arc::new(remote.sink()?);
            eprintln!(
                "recording the run on {} as {}/{} (profile {})",
                remote.url, remote.namespace, remote.name, remote.profile
            );
            Ok((Some((remote, sink)), None))
        }
        Err(why) => {
            tracing::warn!("{why}; running and recording locally only");
            Ok((None, Some(profile.to_string())))
        }
    }
}

/// [`engine::execute_with_id`], recording the parent of a sub-pipeline run once it is admitted.
async fn execute_with_parent(
    req: RunRequest,
    parent: Option<(String, String)>,
) -> Result<(Option<String>, ExitCode), engine::EngineError> {
    match engine::admit(&req).await? {
        Admission::Admitted(mut a) => {
            let id = a.run_id().to_string();
            if let Some((run, job)) = &parent {
                a.store().set_run_parent(&id, run, job)?;
                a.store().append_event(
                    &id,
                    None,
                    "parent",
                    &serde_json::json!({"parent_run_id": run, "parent_job": job}),
                    now_ms(),
                )?;
            }
            engine::drive(&req, *a).await.map(|code| (Some(id), code))
        }
        Admission::Done(code) => Ok((None, code)),
    }
}

/// After a `--profile` run: keep where it went next to the local run (for `runs push`), and say
/// how to push what did not arrive.
fn after_mirror(home: &Home, id: &str, mirror: Option<Mirror>, unmirrored: Option<String>) {
    use engine::RunSink;
    if let Some(p) = unmirrored {
        tracing::warn!(
            "run {id} is recorded locally only: the API of profile {p:?} could not be reached; push it later with `{}`",
            super::push::push_hint(id, &p)
        );
    }
    let Some((remote, sink)) = mirror else { return };
    if let Err(e) = remote.save(&home.run_dir(id)) {
        tracing::warn!("cannot keep where run {id} went: {e}");
    }
    // The engine already waited for the sink; this only reads what is left.
    let report = sink.flush(std::time::Instant::now());
    if report.is_complete() {
        eprintln!(
            "run {id} recorded on {} as {}/{}",
            remote.url, remote.namespace, remote.name
        );
        if !remote.mirror_local {
            // mirror_local: false — the API has all of it; keep no local copy.
            match sparkwing_engine::store::Store::open(&home.root)
                .and_then(|mut s| s.delete_run(id))
                .map_err(|e| e.to_string())
                .and_then(|_| std::fs::remove_dir_all(home.run_dir(id)).map_err(|e| e.to_string()))
            {
                Ok(()) => eprintln!(
                    "not kept locally (profile {:?} has mirror_local: false)",
                    remote.profile
                ),
                Err(e) => tracing::warn!("cannot remove the local copy of run {id}: {e}"),
            }
        }
    } else {
        tracing::warn!(
            "run {id} did not fully reach the API of profile {:?} ({report}); it is recorded locally: push the rest later with `{}`",
            remote.profile,
            super::push::push_hint(id, &remote.profile)
        );
    }
}

/// The Docker executor: orphans first, then admission and recording here, the DAG in a runner
/// container (claimed from a pool when one serves this project).
async fn run_in_docker(
    req: RunRequest,
    client: docker::client::Client,
    image: String,
    pool: Option<String>,
) -> CmdResult {
    match docker::gc::collect(&client, &req.home).await {
        Ok(removed) => {
            for r in removed {
                eprintln!("removed orphaned runner container {} ({})", r.name, r.why);
            }
        }
        Err(e) => tracing::warn!("could not look for orphaned runner containers: {e}"),
    }
    let placement = match pool {
        None => Placement::Cold,
        Some(name) => match PoolPlacement::find(&req.home, &name, &req.repo_root, &image) {
            Ok(p) => Placement::Pool(p),
            Err(why) => {
                eprintln!("{why}; starting a cold runner container instead");
                Placement::Cold
            }
        },
    };
    let admitted = match engine::admit(&req)
        .await
        .map_err(|e| CliError::new(ExitCode::Internal, e.to_string()))?
    {
        Admission::Admitted(a) => *a,
        Admission::Done(code) => return Ok(code),
    };
    Ok(docker::executor::drive(&req, admitted, client, image, placement).await?)
}
