//! The Sparkwing API's contract (`docs/api.md`), shared by its server (the operator), its
//! clients (the CLI, the runner) and the end-to-end tests:
//!
//! - [`wire`]: every request and answer body, `Serialize` and `Deserialize` on both sides, so
//!   the JSON a client writes is the JSON the server reads;
//! - [`scopes`]: what a token may do;
//! - [`names`]: the annotations, labels and environment variables the operator writes and the
//!   runner reads;
//! - [`client`]: the one blocking HTTP client (JSON calls, log follow over server-sent events).
//!
//! Types the API shows but does not own come from `sparkwing-core` (a run's [`RunPhase`], a job's
//! [`JobState`], an upload [`Manifest`]); the PipelineRun itself is a type parameter where a
//! body embeds it, so this crate needs no Kubernetes types.
//!
//! [`RunPhase`]: sparkwing_core::reconcile::status::RunPhase
//! [`JobState`]: sparkwing_core::state::JobState
//! [`Manifest`]: sparkwing_core::upload_manifest::Manifest

pub mod client;
pub mod names;
pub mod scopes;
pub mod wire;

pub use client::{ApiClient, Flow, RemoteError, StreamEnd};
pub use scopes::Scope;
