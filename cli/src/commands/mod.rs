//! Command functions: each takes resolved inputs and returns an exit code.

mod dashboard;
mod pipeline;
mod pool;
mod profile;
mod run;
mod runner;
mod runs;
mod scaffold;

use crate::cli::{
    Cli, Command, DashboardCommand, OutputFormat, PipelineCommand, PoolCommand, ProfileCommand,
    RunnerCommand, RunnerImageCommand, RunsCommand,
};
use crate::exit::ExitCode;
use crate::project::ProjectError;
use crate::store::StoreError;

/// An error that ends a command: printed as `error: <message>` with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub message: String,
}

impl CliError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
}

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
        },
        Command::Pipeline { command } => match command {
            PipelineCommand::List(a) => pipeline::list(a),
            PipelineCommand::Describe(a) => pipeline::describe(a),
            PipelineCommand::New(a) => scaffold::new_pipeline(a),
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
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({"version": version, "sdk_version": version, "protocol": protocol, "schema": crate::store::SCHEMA_VERSION})
                ),
                OutputFormat::Pretty => println!(
                    "sparkwing {version} (sdk {version}, protocol {protocol}, store schema {})",
                    crate::store::SCHEMA_VERSION
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

/// A short local time for tables (UTC, `YYYY-MM-DD HH:MM:SS`).
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = crate::engine::civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}
