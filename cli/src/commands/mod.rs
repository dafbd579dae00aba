//! Command functions: each takes resolved inputs and returns an exit code.

mod dashboard;
mod gates;
mod pipeline;
mod pipeline_ref;
mod plan;
mod pool;
mod profile;
mod push;
mod remote_runs;
mod retry;
mod run;
mod runner;
mod runs;
mod scaffold;
mod storage;
mod token;
mod trigger;

use crate::cli::{
    CacheCommand, Cli, Command, DashboardCommand, OutputFormat, PipelineCommand, PoolCommand,
    ProfileCommand, RunnerCommand, RunnerImageCommand, RunsCommand, TokenCommand,
};
use crate::exit::ExitCode;
use sparkwing_engine::project::ProjectError;
use sparkwing_engine::store::StoreError;

pub use crate::exit::CliError;

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::RunNotFound(_) => ExitCode::NotFound,
            _ => ExitCode::Store,
        };
        CliError::new(code, e.to_string())
    }
}

impl From<crate::profiles::ProfileError> for CliError {
    fn from(e: crate::profiles::ProfileError) -> Self {
        use crate::profiles::ProfileError as P;
        let code = match e {
            P::NotFound { .. }
            | P::NoDefault { .. }
            | P::TwoTokens(_)
            | P::BadUrl { .. }
            | P::BadName(_) => ExitCode::Usage,
            P::Parse { .. } => ExitCode::Project,
            P::Read { .. } | P::Write { .. } => ExitCode::Internal,
        };
        CliError::new(code, e.to_string())
    }
}

impl From<ProjectError> for CliError {
    fn from(e: ProjectError) -> Self {
        CliError::new(ExitCode::Project, e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(ExitCode::Internal, e.to_string())
    }
}

impl From<crate::remote::target::TargetError> for CliError {
    fn from(e: crate::remote::target::TargetError) -> Self {
        use crate::remote::target::TargetError as T;
        match e {
            T::Profile(p) => p.into(),
            e @ (T::NoController { .. }
            | T::TokenEnvUnset { .. }
            | T::NoToken { .. }
            | T::Client { .. }) => CliError::new(ExitCode::Usage, e.to_string()),
        }
    }
}

/// An API error of a command that used `target`, as the user should read it: which profile,
/// which URL, what the API said and what to do.
pub fn api_error(
    target: &crate::remote::target::Target,
    e: sparkwing_api::RemoteError,
) -> CliError {
    use sparkwing_api::RemoteError as R;
    let (p, url) = (&target.name, target.client.base_url());
    match &e {
        R::Unreachable { .. } => CliError::new(ExitCode::Api, format!("profile {p:?}: {e}")),
        R::Status { status: 401, .. } => CliError::new(
            ExitCode::Api,
            format!(
                "the API at {url} refused the token of profile {p:?} ({e}); check where it comes from (`sparkwing profile show --profile {p}`) or ask an admin for a new one (`sparkwing token create`)"
            ),
        ),
        R::Status { status: 403, .. } => {
            let scope = e.missing_scope().unwrap_or("?").to_string();
            CliError::new(
                ExitCode::Api,
                format!(
                    "the token of profile {p:?} lacks the scope {scope} (the API at {url} said: {e}); ask an admin for a token with `--scope {scope}`"
                ),
            )
        }
        R::Status { status: 404, .. } => {
            CliError::new(ExitCode::NotFound, format!("{e} (the API at {url})"))
        }
        R::Status {
            status: 400 | 413, ..
        } => CliError::new(
            ExitCode::Usage,
            format!("the API at {url} refused the request: {e}"),
        ),
        _ => CliError::new(ExitCode::Api, format!("the API at {url}: {e}")),
    }
}

pub type CmdResult = Result<ExitCode, CliError>;

pub fn dispatch(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Runs { command } => match command {
            RunsCommand::List(a) => runs::list(a),
            RunsCommand::Status(a) => runs::status(a),
            RunsCommand::Logs(a) => runs::logs(a),
            RunsCommand::Cancel(a) => runs::cancel(a),
            RunsCommand::Wait(a) => runs::wait(a),
            RunsCommand::Approve(a) => gates::decide(a, sparkwing_core::gate::Decision::Approve),
            RunsCommand::Reject(a) => gates::decide(a, sparkwing_core::gate::Decision::Reject),
            RunsCommand::Retry(a) => retry::retry(a),
            RunsCommand::Rerun(a) => remote_runs::rerun(a),
            RunsCommand::Artifacts(a) => storage::artifacts(a),
            RunsCommand::Push { run, profile } => push::push(&run, profile.as_deref()),
        },
        Command::Pipeline { command } => match command {
            PipelineCommand::List(a) => pipeline::list(a),
            PipelineCommand::Describe(a) => pipeline::describe(a),
            PipelineCommand::New(a) => scaffold::new_pipeline(a),
            PipelineCommand::Trigger(a) => trigger::trigger(a),
            PipelineCommand::Plan(a) => plan::plan(a),
            PipelineCommand::Lint(a) => plan::lint(a),
        },
        Command::Token { command } => match command {
            TokenCommand::Create(a) => token::create(a),
            TokenCommand::List(a) => token::list(a),
            TokenCommand::Revoke(a) => token::revoke(a),
        },
        Command::Profile { command } => match command {
            ProfileCommand::List { output } => profile::list(output),
            ProfileCommand::Show {
                profile: name,
                output,
            } => profile::show(name.as_deref(), output),
            ProfileCommand::Set(a) => profile::set(a),
            ProfileCommand::Remove { name } => profile::remove(&name),
        },
        Command::Dashboard { command } => match command {
            DashboardCommand::Start(a) => dashboard::start(a),
            DashboardCommand::Status => dashboard::status(),
            DashboardCommand::Kill => dashboard::kill(),
            DashboardCommand::Serve(a) => dashboard::serve(a),
        },
        Command::Runner(a) => match a.command {
            Some(RunnerCommand::Gc) => runner::gc(),
            None => runner::cluster(a),
        },
        Command::RunnerImage { command } => match command {
            RunnerImageCommand::Build(a) => runner::build_image(a),
        },
        Command::Pool { command } => match command {
            PoolCommand::Run(a) => pool::run(a),
        },
        Command::RunnerEntry(a) => runner::entry(a),
        Command::Cache { command } => match command {
            CacheCommand::List(a) => storage::cache_list(a),
            CacheCommand::Prune(a) => storage::cache_prune(a),
        },
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "sparkwing", &mut std::io::stdout());
            Ok(ExitCode::Success)
        }
        Command::Version { output } => {
            let version = env!("CARGO_PKG_VERSION");
            let protocol = sparkwing_core::protocol::PROTOCOL_VERSION;
            match output {
                OutputFormat::Json => crate::printer::Printer::new(output).json_line(
                    &serde_json::json!({"version": version, "sdk_version": version, "protocol": protocol, "schema": sparkwing_engine::store::SCHEMA_VERSION}),
                ),
                OutputFormat::Pretty => println!(
                    "sparkwing {version} (sdk {version}, protocol {protocol}, store schema {})",
                    sparkwing_engine::store::SCHEMA_VERSION
                ),
            }
            Ok(ExitCode::Success)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.code
        }
    }
}

/// The directory a project command starts from.
pub fn start_dir(dir: Option<&std::path::Path>) -> std::path::PathBuf {
    match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from(".")),
    }
}

pub use crate::text::format_time;

impl From<sparkwing_runner::RunnerError> for CliError {
    fn from(e: sparkwing_runner::RunnerError) -> Self {
        CliError::new(e.code, e.message)
    }
}

impl From<sparkwing_docker::DockerError> for CliError {
    fn from(e: sparkwing_docker::DockerError) -> Self {
        CliError::new(e.exit_code(), e.to_string())
    }
}
