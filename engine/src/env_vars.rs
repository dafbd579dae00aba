//! Every environment variable the `sparkwing` command reads, in one place.

/// Root of the local store (default `~/.sparkwing`).
pub const SPARKWING_HOME: &str = sparkwing_api::names::env::SPARKWING_HOME;
/// Where compiled pipeline binaries, the embedded SDK and cargo target dirs live
/// (default `$SPARKWING_HOME/cache`). Tests point several homes at one cache.
pub const SPARKWING_CACHE_DIR: &str = "SPARKWING_CACHE_DIR";
/// Most binaries kept in the cache (default 20).
pub const SPARKWING_CACHE_MAX_ENTRIES: &str = "SPARKWING_CACHE_MAX_ENTRIES";
/// Most bytes kept in the binary cache (default 2 GiB).
pub const SPARKWING_CACHE_MAX_BYTES: &str = "SPARKWING_CACHE_MAX_BYTES";
/// Most bytes kept by jobs' dependency caches under `$SPARKWING_HOME/caches` (default 10 GiB).
pub const SPARKWING_JOB_CACHES_MAX_BYTES: &str = "SPARKWING_JOB_CACHES_MAX_BYTES";
/// Most bytes one artifact may have (default 1 GiB).
pub const SPARKWING_ARTIFACT_MAX_BYTES: &str = "SPARKWING_ARTIFACT_MAX_BYTES";
/// `pretty` or `json`: how `sparkwing run` prints logs (default: pretty on a TTY, else json).
pub const SPARKWING_LOG_FORMAT: &str = "SPARKWING_LOG_FORMAT";
/// Which diagnostics reach stderr, as `tracing` filter directives (`warn`, `debug`,
/// `sparkwing::commands::runner=debug`; default `info`: warnings and progress notes).
pub const SPARKWING_LOG: &str = "SPARKWING_LOG";
/// Set and not empty: no colours anywhere (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// Whether output to a terminal (`tty`) may be coloured: only on a terminal, and never when
/// `NO_COLOR` is set to something.
pub fn colors(tty: bool) -> bool {
    tty && std::env::var_os(NO_COLOR).is_none_or(|v| v.is_empty())
}
/// The cargo to compile pipelines with (default `cargo` on PATH).
pub const CARGO: &str = "CARGO";
