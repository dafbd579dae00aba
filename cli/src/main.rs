//! `sparkwing`: parse the command line, run the command, exit with its code.

mod box_slots;
mod cli;
mod commands;
mod compile;
mod engine;
mod env_vars;
mod exit;
mod git;
mod home;
mod project;
mod reconcile;
mod store;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = commands::dispatch(cli);
    std::process::exit(code.code());
}
