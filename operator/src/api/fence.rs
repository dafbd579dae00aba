//! Attempt fencing: a runner names its attempt in every call (`Sparkwing-Attempt`), and a call
//! from an attempt older than the run's current one is refused (409 `superseded`). A lost
//! runner (its pod deleted or evicted) may still be stopping, inside its termination grace,
//! when the operator starts the next attempt; fenced, it cannot post lines over the new
//! attempt's, overwrite its job states or end the run.
//!
//! The current attempt is the highest of the run's `status.attempts` and every attempt seen in
//! a call: attempts only grow, so a call naming a newer attempt raises it without a read, and a
//! replica re-reads the run at most every [`RECHECK`] per run (a log batch must not cost an
//! apiserver read).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ApiError, ApiState};

/// How long a replica trusts what it knows of a run's current attempt before reading the run.
pub const RECHECK: Duration = Duration::from_secs(2);
/// Runs remembered at most; beyond it, entries older than [`RECHECK`] are dropped.
const MAX_RUNS: usize = 10_000;

/// Per run (namespace, name): the highest attempt known, and when the run was last read.
type Known = HashMap<(String, String), (u32, Option<Instant>)>;

#[derive(Default)]
pub struct AttemptFence {
    known: Mutex<Known>,
}

/// What to do with a call from `attempt` given the highest attempt known (pure).
pub fn decide(attempt: u32, current: u32) -> Result<(), String> {
    if attempt < current {
        Err(format!(
            "attempt {attempt} was superseded by attempt {current}; this runner must stop"
        ))
    } else {
        Ok(())
    }
}

impl AttemptFence {
    fn known(&self, ns: &str, name: &str) -> (u32, Option<Instant>) {
        self.lock()
            .get(&(ns.to_string(), name.to_string()))
            .copied()
            .unwrap_or((0, None))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        // Plain numbers behind the lock: a panic elsewhere leaves them usable.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn raise(&self, ns: &str, name: &str, attempt: u32, read_at: Option<Instant>) -> u32 {
        let mut known = self.lock();
        if known.len() >= MAX_RUNS {
            known.retain(|_, (_, at)| at.is_some_and(|t| t.elapsed() < RECHECK));
        }
        let e = known
            .entry((ns.to_string(), name.to_string()))
            .or_insert((0, None));
        e.0 = e.0.max(attempt);
        if read_at.is_some() {
            e.1 = read_at;
        }
        e.0
    }

    /// Refuse a call of run `ns/name` from `attempt` if a newer attempt exists.
    pub async fn check(
        &self,
        st: &ApiState,
        ns: &str,
        name: &str,
        attempt: u32,
    ) -> Result<(), ApiError> {
        let (mut current, read_at) = self.known(ns, name);
        if attempt < current || read_at.is_none_or(|t| t.elapsed() >= RECHECK) {
            // Below what we know, or not read lately: read the run (a run that is gone has no
            // newer attempt; the handler answers for it).
            let read = Instant::now();
            let status_attempts = st
                .runs
                .get(ns, name)
                .await?
                .and_then(|r| r.status)
                .map_or(0, |s| s.attempts);
            current = self.raise(ns, name, status_attempts, Some(read));
        }
        current = self.raise(ns, name, attempt, None).max(current);
        decide(attempt, current).map_err(ApiError::Superseded)
    }
}

#[cfg(test)]
mod tests {
    use super::decide;

    #[test]
    fn only_an_older_attempt_is_refused() {
        assert!(decide(2, 2).is_ok());
        assert!(decide(3, 2).is_ok());
        assert!(decide(1, 0).is_ok());
        let e = decide(1, 2).unwrap_err();
        assert!(e.contains("attempt 1 was superseded by attempt 2"), "{e}");
    }
}
