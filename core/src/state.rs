//! Run and job states, and how they read as text (the store and `-o json` use these strings).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The state of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Recorded, waiting for admission (a box slot) before any job starts.
    Queued,
    Running,
    Success,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Success,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// The process exit code a finished run maps to (`docs/exit-codes.md`).
    pub fn exit_code(self) -> i32 {
        match self {
            RunStatus::Success => 0,
            RunStatus::Cancelled => 130,
            _ => 1,
        }
    }
}

/// The state of one job in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Running,
    Success,
    Failed,
    Cancelled,
    Skipped,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    /// Whether dependents may run after this state.
    pub fn satisfies_needs(self) -> bool {
        matches!(self, JobState::Success | JobState::Skipped)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

macro_rules! text_enum {
    ($t:ty, [$($v:expr),*]) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                [$($v),*]
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownState(s.to_string()))
            }
        }
    };
}

text_enum!(
    RunStatus,
    [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Success,
        RunStatus::Failed,
        RunStatus::Cancelled
    ]
);
text_enum!(
    JobState,
    [
        JobState::Pending,
        JobState::Running,
        JobState::Success,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Skipped
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
        }
        assert!("passed".parse::<RunStatus>().is_err());
        assert_eq!("skipped".parse::<JobState>().unwrap(), JobState::Skipped);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(RunStatus::Success.exit_code(), 0);
        assert_eq!(RunStatus::Failed.exit_code(), 1);
        assert_eq!(RunStatus::Cancelled.exit_code(), 130);
    }
}
