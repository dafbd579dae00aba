//! `sparkwing pool run`: host a local runner pool in the foreground.
//!
//! Foreground on purpose: the pool is explicit (started by whoever wants warm runners), visible
//! (its status lines, its terminal) and stops with Ctrl-C, removing its warm containers. No hidden
//! daemon outlives the user's intent; runs fall back to cold containers when no pool runs.

use super::{start_dir, CliError, CmdResult};
use crate::cli::PoolRunArgs;
use crate::exit::ExitCode;
use sparkwing_docker::{self as docker, client, pool};
use sparkwing_engine::home::Home;
use sparkwing_engine::project;

pub fn run(args: PoolRunArgs) -> CmdResult {
    if args.max_runners == 0 || args.min_idle > args.max_runners {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "--max-runners must be at least 1 and at least --min-idle (got min-idle {}, max-runners {})",
                args.min_idle, args.max_runners
            ),
        ));
    }
    if args.name.is_empty()
        || !args
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "pool name {:?} must be letters, digits, '-' or '_'",
                args.name
            ),
        ));
    }
    let home = Home::from_env();
    let project = project::discover(&start_dir(args.dir.as_deref()))?;
    let image = docker::runner_image();
    let runtime = sparkwing_engine::runtime::build()?;
    let code = runtime.block_on(async {
        let client = client::connect().await?;
        client.require_image(&image).await?;
        pool::run_pool(
            client,
            pool::PoolOptions {
                name: args.name,
                min_idle: args.min_idle,
                max_runners: args.max_runners,
                idle_timeout: args.idle_timeout,
                workspace: project.root.clone(),
                home,
                image,
            },
        )
        .await
    })?;
    Ok(code)
}
