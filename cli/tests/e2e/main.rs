//! End-to-end tests of the `sparkwing` command: real pipelines compiled from fixture projects,
//! run as processes, and checked through the CLI's own outputs, the store and the log files.

#[path = "../common/mod.rs"]
mod common;

mod args;
mod bad_input;
mod cache;
mod concurrency;
mod conditions;
mod dag;
mod fanout;
mod gates;
mod groups;
mod hello;
mod offline;
mod pipeline_cmds;
mod placement;
mod plan;
mod processes;
mod retry;
mod runs_cmds;
mod secrets;
mod selection;
mod signals;
mod storage;
