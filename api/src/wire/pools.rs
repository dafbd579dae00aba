//! `POST /api/v1/pools/{ns}/{pool}/claims`: a warm runner trades its pool token for the token of
//! the run its pod was claimed for.

use serde::{Deserialize, Serialize};

/// Which pod asks, for which run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub pod: String,
    pub run: String,
}

/// The run's runner token (`run:<ns>/<run>`), as a runner Job gets it from its Secret.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct ClaimAnswer {
    pub token: String,
    /// The attempt the claim names.
    pub attempt: u32,
}

impl std::fmt::Debug for ClaimAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimAnswer")
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}
