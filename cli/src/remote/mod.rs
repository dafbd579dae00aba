//! Talking to a Sparkwing API (`docs/api.md`, `docs/remote.md`) through `sparkwing-api`'s
//! client: source uploads, following remote runs, the profile a command targets. The runner's
//! side (its sink, source and podinfo) is the `sparkwing-runner` crate.

pub mod follow;
pub mod target;
pub mod upload;
