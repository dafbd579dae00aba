//! Sparkwing SDK: write CI/CD pipelines as Rust programs.
//!
//! A repository's `.sparkwing/` crate registers its pipelines with [`main`]; the `sparkwing` CLI builds
//! that crate and talks to the resulting binary through the protocol in `docs/protocol.md`.
//!
//! ```no_run
//! use sparkwing::prelude::*;
//!
//! fn plan(p: &mut Plan, args: &Args) -> Result<()> {
//!     let name = args.string("name")?;
//!     p.job("greet", move |job| job.bash(&format!("echo hello {name}")));
//!     p.job("check", |job| job.exec("true", &[])).needs(["greet"]);
//!     Ok(())
//! }
//!
//! fn main() {
//!     sparkwing::main(vec![Pipeline::new("Hello", plan)
//!         .about("Say hello")
//!         .arg(Arg::string("name").default("world").help("who to greet"))]);
//! }
//! ```

#![warn(missing_docs)]

mod args;
mod cache;
mod cond;
mod error;
mod fanout;
mod gate;
mod job;
#[doc(hidden)]
pub mod json;
mod memo;
mod placement;
mod plan;
mod protocol;

pub use args::{Arg, ArgKind, ArgValue, Args};
pub use cache::CacheKey;
pub use cond::{Cond, OutputRef};
pub use error::{fail, CommandEnd, Context, Error, Result};
pub use gate::{Concurrency, GateDecision};
pub use job::{Cmd, Job};
pub use memo::Memo;
pub use placement::Placement;
pub use plan::{JobBuilder, Pipeline, Plan};
pub use protocol::main;
pub use std::time::Duration;

/// The protocol version this SDK speaks (see `docs/protocol.md`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The version of this SDK crate.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Returns early from a function with an [`Error`] built like `format!`.
///
/// ```
/// # use sparkwing::prelude::*;
/// fn check(n: i64) -> Result<()> {
///     if n < 0 {
///         bail!("n must not be negative, got {n}");
///     }
///     Ok(())
/// }
/// # assert!(check(-1).is_err());
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::std::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}

/// Everything a pipeline file usually needs: `use sparkwing::prelude::*;`.
pub mod prelude {
    pub use crate::bail;
    pub use crate::{
        fail, Arg, Args, CacheKey, Cmd, Cond, Context, Duration, Error, GateDecision, Job,
        JobBuilder, Memo, Pipeline, Placement, Plan, Result,
    };
}
