//! Talking to a Sparkwing API (`docs/api.md`, `docs/remote.md`) through `sparkwing-api`'s
//! client: source uploads, following remote runs, the runner's sink and source.

pub mod follow;
pub mod git_source;
pub mod materialise;
pub mod podinfo;
pub mod sink;
pub mod target;
pub mod upload;
