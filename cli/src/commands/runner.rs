//! `sparkwing runner gc`, `sparkwing runner-image build` and the hidden `sparkwing __runner`
//! (the entry point of a runner container).

use super::{CliError, CmdResult};
use crate::cli::{ImageBuildArgs, RunnerEntryArgs};
use crate::docker::{self, client, gc, image, pool, request};
use crate::engine;
use crate::exit::ExitCode;
use crate::home::Home;

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
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
