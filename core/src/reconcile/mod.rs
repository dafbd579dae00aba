//! The reconcile decisions for `PipelineRun` and `RunnerPool`, shared by every executor: the
//! Kubernetes operator (runner = Job or claimed warm pod), the Docker executor (runner = container)
//! and the process executor (runner = the engine in the `sparkwing` process).
//!
//! Each is one pure function of (intent, observation, now) returning actions and the status to
//! write. Timestamps in the status change only on a transition, so reconciling an unchanged world
//! returns an identical status (no hot loops, no needless writes).

pub mod executor;
pub mod pool;
pub mod run;
pub mod status;

/// Milliseconds since the Unix epoch; every time in reconcile inputs and outputs uses it.
pub type Millis = i64;
