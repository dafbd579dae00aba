//! `sparkwing`: parse the command line, run the command, exit with its code.

mod box_slots;
mod cli;
mod commands;
mod compile;
mod dashboard;
mod docker;
mod engine;
mod env_vars;
mod exit;
mod git;
mod home;
mod profiles;
mod project;
mod reconcile;
mod remote;
mod store;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
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
        restore_default_sigpipe();
    }
    let code = commands::dispatch(cli);
    std::process::exit(code.code());
}

/// Read commands die quietly when their reader goes away (`sparkwing runs list | head`), like
/// other Unix tools, instead of panicking on a closed stdout. `run` keeps Rust's default (SIGPIPE
/// ignored): a closed stdout must not kill a run, whose record and logs are still kept.
#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called once at start-up, before any thread exists; SIG_DFL is always a valid handler.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}
