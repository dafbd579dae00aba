//! Talking to a Sparkwing API (`docs/api.md`, `docs/remote.md`): the HTTP client, source
//! uploads, and following remote runs.

// The client is the API's whole surface; not every call has a command yet.
#[allow(dead_code)]
pub mod client;
pub mod follow;
pub mod git_source;
pub mod materialise;
pub mod podinfo;
pub mod sink;
pub mod target;
pub mod upload;
