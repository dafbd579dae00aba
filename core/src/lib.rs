//! Sparkwing's decisions, free of IO.
//!
//! The CLI engine (and later the operator) observes the world, asks this crate what to do, and does
//! it. Everything here is deterministic and tested from fixtures.

pub mod args;
pub mod artifact;
pub mod cache;
pub mod chunked;
pub mod concurrency;
pub mod condition;
pub mod dag;
pub mod fanout;
pub mod gate;
pub mod job_pod;
pub mod mask;
pub mod memo;
pub mod placement;
pub mod protocol;
pub mod reconcile;
pub mod rerun;
pub mod run_spec;
pub mod schedule;
pub mod scheduler;
pub mod selection;
pub mod state;
pub mod subpipeline;
pub mod suggest;
pub mod time;
pub mod upload_manifest;

pub use dag::{PlanError, ValidatedPlan};
pub use scheduler::{Action, AttemptOutcome, Scheduler};
pub use state::{JobState, RunPhase};
