//! Upload manifests live in `sparkwing-core` (the CLI builds them and the runner checks them with
//! the same rules); re-exported here for the API's handlers.

pub use sparkwing_core::upload_manifest::*;
