//! `sparkwing runner --run NS/NAME --attempt N` (a cluster run's runner Job; with `--job ID
//! --job-attempt M` a placed job's own pod), `sparkwing runner
//! --warm --pool NS/POOL` (a RunnerPool's warm pod), `sparkwing runner gc`, `sparkwing
//! runner-image build` and the hidden `sparkwing __runner` (the entry point of a runner
//! container).

use super::{CliError, CmdResult};
use crate::cli::{ImageBuildArgs, RunnerArgs, RunnerEntryArgs};
use crate::exit::ExitCode;
use sparkwing_docker::{self as docker, client, gc, image, pool, request};
use sparkwing_engine::home::Home;
use sparkwing_engine::{self as engine, Format};

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(sparkwing_engine::runtime::build()?)
}

pub fn gc() -> CmdResult {
    let home = Home::from_env();
    let removed = runtime()?.block_on(async {
        let client = client::connect().await?;
        gc::collect(&client, &home).await
    })?;
    if removed.is_empty() {
        println!("no orphaned runner containers");
    }
    for r in &removed {
        println!("removed {} ({})", r.name, r.why);
    }
    Ok(ExitCode::Success)
}

pub fn build_image(args: ImageBuildArgs) -> CmdResult {
    let tag = args.tag.unwrap_or_else(docker::runner_image);
    let started = std::time::Instant::now();
    let built = runtime()?.block_on(async {
        let client = client::connect().await?;
        image::build(&client, &tag).await
    })?;
    match built {
        image::Built::UpToDate => println!("runner image {tag} is up to date"),
        image::Built::Imported { bytes } => println!(
            "built runner image {tag} ({:.1} MiB root filesystem) in {:.1}s",
            bytes as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(ExitCode::Success)
}

/// Inside a runner container: read the request (waiting for a pool's claim first when warm),
/// then continue the run with the same engine as the process executor.
pub fn entry(args: RunnerEntryArgs) -> CmdResult {
    let path = if args.warm {
        let (Some(pool_name), Some(name)) = (args.pool.as_deref(), args.name.as_deref()) else {
            return Err(CliError::new(
                ExitCode::Usage,
                "__runner --warm needs --pool NAME and --name CONTAINER",
            ));
        };
        match pool::wait_for_claim(&Home::from_env(), pool_name, name)? {
            Some(claim) => claim.request,
            // The pool went away before anyone claimed this runner.
            None => return Ok(ExitCode::Success),
        }
    } else {
        args.request.ok_or_else(|| {
            CliError::new(ExitCode::Usage, "__runner needs --request FILE or --warm")
        })?
    };
    let r = request::take(&path)?;
    // The pipeline's secrets, as the host had them: before any thread starts.
    for (k, v) in &r.env {
        std::env::set_var(k, v);
    }
    let (req, run_id) = r.into_run_request();
    runtime()?
        .block_on(engine::resume(&req, &run_id))
        .map_err(|e| CliError::new(ExitCode::Internal, e.to_string()))
}

/// `sparkwing runner --run NS/NAME --attempt N`: execute one attempt of a cluster run (the
/// entry point of the operator's runner Job; docs/runner.md): the arguments checked here, the
/// attempt run by `sparkwing-runner`.
pub fn cluster(args: RunnerArgs) -> CmdResult {
    let format = super::run::log_format()?;
    if args.warm || args.pool.is_some() {
        return warm(args, format);
    }
    let Some(run) = args.run.as_deref() else {
        return Err(CliError::new(
            ExitCode::Usage,
            "sparkwing runner needs --run NS/NAME --attempt N (one attempt of a cluster run) or a subcommand (gc); see `sparkwing runner --help`",
        ));
    };
    let (ns, name) = run
        .split_once('/')
        .filter(|(n, r)| !n.is_empty() && !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| {
            CliError::new(
                ExitCode::Usage,
                format!("--run {run:?} is not <namespace>/<name>"),
            )
        })?;
    let attempt = args.attempt.ok_or_else(|| {
        CliError::new(
            ExitCode::Usage,
            "sparkwing runner --run needs --attempt N (the operator passes it)",
        )
    })?;
    if let (Some(job), Some(job_attempt)) = (args.job.as_deref(), args.job_attempt) {
        let at = sparkwing_runner::JobAttempt {
            ns,
            name,
            run_attempt: attempt,
            job,
            attempt: job_attempt,
        };
        return Ok(sparkwing_runner::run_job(at, format)?);
    }
    Ok(sparkwing_runner::run_attempt(ns, name, attempt, format)?)
}
/// `sparkwing runner --warm --pool NS/POOL`: a RunnerPool's warm runner (`sparkwing-runner`'s
/// [`sparkwing_runner::run_warm`]), once its arguments are checked.
fn warm(args: RunnerArgs, format: Format) -> CmdResult {
    if !args.warm {
        return Err(CliError::new(
            ExitCode::Usage,
            "--pool is for a warm runner: sparkwing runner --warm --pool NS/POOL",
        ));
    }
    if args.run.is_some() || args.attempt.is_some() || args.job.is_some() {
        return Err(CliError::new(
            ExitCode::Usage,
            "sparkwing runner --warm learns its run from its claim: drop --run and --attempt",
        ));
    }
    let Some(pool_ref) = args.pool.as_deref() else {
        return Err(CliError::new(
            ExitCode::Usage,
            "sparkwing runner --warm needs --pool NS/POOL (the operator passes it)",
        ));
    };
    let (ns, pool) = pool_ref
        .split_once('/')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty() && !p.contains('/'))
        .ok_or_else(|| {
            CliError::new(
                ExitCode::Usage,
                format!("--pool {pool_ref:?} is not <namespace>/<pool>"),
            )
        })?;
    Ok(sparkwing_runner::run_warm(ns, pool, format)?)
}
