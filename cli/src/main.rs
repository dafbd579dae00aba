//! `sparkwing`: parse the command line, run the command, exit with its code.

mod box_slots;
mod cli;
mod commands;
mod compile;
mod dashboard;
mod diagnostics;
mod docker;
mod engine;
mod env_vars;
mod exit;
mod git;
mod home;
mod printer;
mod profiles;
mod project;
mod reconcile;
mod remote;
mod runtime;
mod settings;
mod store;
mod text;

use clap::Parser;

fn main() {
    // A job attempt's supervisor: checked before any parsing, it is started for every job.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == engine::supervisor::SUBCOMMAND)
    {
        engine::supervisor::main(&args[2..]);
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
        restore_default_signal(nix::sys::signal::Signal::SIGPIPE);
    }
    let code = commands::dispatch(cli);
    std::process::exit(code.code());
}

/// Read commands die quietly when their reader goes away (`sparkwing runs list | head`), like
/// other Unix tools, instead of panicking on a closed stdout. `run` keeps Rust's default (SIGPIPE
/// ignored): a closed stdout must not kill a run, whose record and logs are still kept.
/// Also used by a job's supervisor to die of the signal that killed the job.
#[allow(unsafe_code)]
fn restore_default_signal(sig: nix::sys::signal::Signal) {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: called from the main thread of a process that installs no signal handlers (at
    // start-up, or in a supervisor, which has no other threads); SIG_DFL is always valid.
    unsafe {
        let _ = signal(sig, SigHandler::SigDfl);
    }
}
