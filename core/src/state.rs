//! Run and job states, and how they read as text (the store and `-o json` use these strings).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

// The one vocabulary of a run's state, locally and on a cluster, with two spellings. A
// `PipelineRun`'s `status.phase`, the API and its JSON use the Kubernetes one (`phase_str`, serde):
// `Pending`, `Running`, `Succeeded`, `Failed`, `Cancelled`. The local store, `sparkwing runs` and
// the dashboard use the local one (`local_str`, `Display`, `FromStr`): `queued`, `running`,
// `success`, `failed`, `cancelled` (`queued`: recorded, waiting for admission before any job).
/// The phase of a `PipelineRun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum RunPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunPhase {
    pub const ALL: [RunPhase; 5] = [
        RunPhase::Pending,
        RunPhase::Running,
        RunPhase::Succeeded,
        RunPhase::Failed,
        RunPhase::Cancelled,
    ];

    /// The Kubernetes spelling (`status.phase`, the API).
    pub fn phase_str(self) -> &'static str {
        match self {
            RunPhase::Pending => "Pending",
            RunPhase::Running => "Running",
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Failed => "Failed",
            RunPhase::Cancelled => "Cancelled",
        }
    }

    /// The local spelling (the store, `sparkwing runs`, the dashboard).
    pub fn local_str(self) -> &'static str {
        match self {
            RunPhase::Pending => "queued",
            RunPhase::Running => "running",
            RunPhase::Succeeded => "success",
            RunPhase::Failed => "failed",
            RunPhase::Cancelled => "cancelled",
        }
    }

    /// The phase spelled the Kubernetes way; `None` for anything else.
    pub fn from_phase_str(s: &str) -> Option<RunPhase> {
        RunPhase::ALL.into_iter().find(|p| p.phase_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunPhase::Succeeded | RunPhase::Failed | RunPhase::Cancelled
        )
    }
}

/// Serde in the local spelling, for records the local store and `sparkwing runs -o json` show.
pub mod local_spelling {
    use super::RunPhase;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(phase: &RunPhase, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(phase.local_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RunPhase, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The state of one job in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Running,
    /// An approval gate whose needs ended: it runs nothing and waits for a decision
    /// (`sparkwing runs approve|reject`) or its timeout.
    Waiting,
    Success,
    Failed,
    Cancelled,
    Skipped,
    /// Not run: a re-run (`sparkwing runs retry`) took this job's outcome and outputs from the run
    /// it retries.
    Reused,
    /// Not run: a memoized job whose inputs match a recent success; its outputs and artifacts
    /// are that run's (`memo`).
    Cached,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Waiting => "waiting",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Skipped => "skipped",
            JobState::Reused => "reused",
            JobState::Cached => "cached",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            JobState::Pending | JobState::Running | JobState::Waiting
        )
    }

    /// Whether dependents may run after this state.
    pub fn satisfies_needs(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Skipped | JobState::Reused | JobState::Cached
        )
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

impl fmt::Display for RunPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.local_str())
    }
}

impl FromStr for RunPhase {
    type Err = UnknownState;
    /// The local spelling (`queued`, `success`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunPhase::ALL
            .into_iter()
            .find(|v| v.local_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}
text_enum!(
    JobState,
    [
        JobState::Pending,
        JobState::Running,
        JobState::Waiting,
        JobState::Success,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Skipped,
        JobState::Reused,
        JobState::Cached
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for p in RunPhase::ALL {
            assert_eq!(p.local_str().parse::<RunPhase>().unwrap(), p);
            assert_eq!(RunPhase::from_phase_str(p.phase_str()), Some(p));
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json, p.phase_str());
        }
        assert!("passed".parse::<RunPhase>().is_err());
        assert!("Succeeded".parse::<RunPhase>().is_err());
        assert_eq!(RunPhase::from_phase_str("success"), None);
        assert_eq!("skipped".parse::<JobState>().unwrap(), JobState::Skipped);
        assert_eq!("reused".parse::<JobState>().unwrap(), JobState::Reused);
    }

    #[test]
    fn local_spelling_in_records() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Row {
            #[serde(with = "local_spelling")]
            status: RunPhase,
        }
        let row = Row {
            status: RunPhase::Pending,
        };
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(json, r#"{"status":"queued"}"#);
        assert_eq!(serde_json::from_str::<Row>(&json).unwrap(), row);
    }
}
