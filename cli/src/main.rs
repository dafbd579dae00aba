//! `sparkwing`: parse the command line, run the command, exit with its code.

mod cli;
mod commands;
mod dashboard;
mod diagnostics;
mod exit;
mod printer;
mod profiles;
mod remote;
mod settings;
mod text;

use clap::Parser;

fn main() {
    // A job attempt's supervisor: checked before any parsing, it is started for every job.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == sparkwing_engine::supervisor::SUBCOMMAND)
    {
        sparkwing_engine::supervisor::main(&args[2..]);
    }
    let cli = cli::Cli::parse();
    diagnostics::init();
    // Only for commands that print and exit; `run` and the dashboard server keep running.
    if matches!(
        cli.command,
        cli::Command::Runs { .. }
            | cli::Command::Pipeline { .. }
            | cli::Command::Profile { .. }
            | cli::Command::Token { .. }
            | cli::Command::Completion { .. }
            | cli::Command::Version { .. }
    ) {
        sparkwing_engine::signals::restore_default_signal(nix::sys::signal::Signal::SIGPIPE);
    }
    let code = commands::dispatch(cli);
    std::process::exit(code.code());
}
