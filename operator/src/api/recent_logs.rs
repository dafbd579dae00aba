//! The newest lines of the logs being written, kept in the replica's memory for its followers:
//! lines ingested here, and lines another replica ingested and told through the metadata store's
//! log feed (PostgreSQL's LISTEN/NOTIFY). A follower takes its next lines from here when they are
//! here, and from the content store otherwise (a long-finished log, lines past this window, a
//! feed message missed), so a line reaches followers on every replica without a read of the
//! content store or a wait for the next poll.
//!
//! Per job, the lines held are one contiguous run of seqs: lines that do not follow on from it
//! replace it. Only stored (durable) lines are put here.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sparkwing_state::{LogFeedEvent, LogKey, LogLine};

/// Lines kept per job.
const LINES_PER_JOB: usize = 2_048;
/// Jobs kept (the least recently written are dropped first).
const JOBS: usize = 1_024;

#[derive(Default)]
pub struct RecentLogs {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<LogKey, Window>,
    /// Bumped on every write: a job's `touched` orders eviction.
    clock: u64,
}

struct Window {
    lines: VecDeque<LogLine>,
    touched: u64,
}

/// What the window of a job says about the lines after a seq.
#[derive(Debug, PartialEq, Eq)]
pub enum Recent {
    /// The lines after it (at most the limit asked), from the window.
    Lines(Vec<LogLine>),
    /// The window ends at it: no line after it is known here (the content store may still have
    /// one, written while this replica missed the feed).
    UpToDate,
    /// The window does not hold the next line: read the content store.
    Unknown,
}

impl RecentLogs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `lines` of `key` (stored lines, contiguous, ascending).
    pub fn put(&self, key: &LogKey, lines: &[LogLine]) {
        let Some(first) = lines.first() else { return };
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if !inner.jobs.contains_key(key) && inner.jobs.len() >= JOBS {
            if let Some(oldest) = inner
                .jobs
                .iter()
                .min_by_key(|(_, w)| w.touched)
                .map(|(k, _)| k.clone())
            {
                inner.jobs.remove(&oldest);
            }
        }
        let window = inner.jobs.entry(key.clone()).or_insert_with(|| Window {
            lines: VecDeque::new(),
            touched: now,
        });
        window.touched = now;
        let last = window.lines.back().map(|l| l.seq);
        let skip = match last {
            // Follows on, or overlaps what is held: keep the new part.
            Some(last) if first.seq <= last + 1 => (last + 1 - first.seq) as usize,
            // A hole (a missed message), or the first lines: start again from these.
            _ => {
                window.lines.clear();
                0
            }
        };
        window.lines.extend(lines.iter().skip(skip).cloned());
        while window.lines.len() > LINES_PER_JOB {
            window.lines.pop_front();
        }
    }

    /// The log of `key` reaches `last_seq` through lines not told here: what is held no longer
    /// reaches the end, so it is dropped.
    pub fn reached(&self, key: &LogKey, last_seq: u64) {
        let mut inner = self.lock();
        let behind = inner
            .jobs
            .get(key)
            .is_some_and(|w| w.lines.back().is_none_or(|l| l.seq < last_seq));
        if behind {
            inner.jobs.remove(key);
        }
    }

    /// Forget everything (the feed was interrupted: what is held may no longer be the end).
    pub fn clear(&self) {
        self.lock().jobs.clear();
    }

    /// Take one feed event.
    pub fn apply(&self, event: &LogFeedEvent) {
        match event {
            LogFeedEvent::Lines { key, lines } => self.put(key, lines),
            LogFeedEvent::Reached { key, last_seq } => self.reached(key, *last_seq),
            LogFeedEvent::Resumed => self.clear(),
        }
    }

    /// At most `limit` lines of `key` after seq `after`.
    pub fn after(&self, key: &LogKey, after: u64, limit: usize) -> Recent {
        let inner = self.lock();
        let Some(window) = inner.jobs.get(key) else {
            return Recent::Unknown;
        };
        let (Some(first), Some(last)) = (window.lines.front(), window.lines.back()) else {
            return Recent::Unknown;
        };
        if after >= last.seq {
            return if after == last.seq {
                Recent::UpToDate
            } else {
                Recent::Unknown
            };
        }
        if after + 1 < first.seq {
            return Recent::Unknown;
        }
        let start = (after + 1 - first.seq) as usize;
        Recent::Lines(
            window
                .lines
                .iter()
                .skip(start)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn lines(seqs: std::ops::RangeInclusive<u64>) -> Vec<LogLine> {
        seqs.map(|s| LogLine::new(s, format!("l{s}"))).collect()
    }

    fn seqs(r: Recent) -> Vec<u64> {
        match r {
            Recent::Lines(l) => l.iter().map(|l| l.seq).collect(),
            other => panic!("expected lines, got {other:?}"),
        }
    }

    #[test]
    fn a_window_follows_on_and_starts_again_after_a_hole() {
        let r = RecentLogs::default();
        let k = LogKey::new("ci", "r", "build");
        assert_eq!(r.after(&k, 0, 10), Recent::Unknown);
        r.put(&k, &lines(1..=3));
        assert_eq!(seqs(r.after(&k, 0, 10)), vec![1, 2, 3]);
        assert_eq!(seqs(r.after(&k, 1, 1)), vec![2]);
        assert_eq!(r.after(&k, 3, 10), Recent::UpToDate);
        // Overlapping (a retried batch told twice): only the new part is kept.
        r.put(&k, &lines(2..=5));
        assert_eq!(seqs(r.after(&k, 0, 10)), vec![1, 2, 3, 4, 5]);
        // A hole: the window starts again; older lines are the content store's to answer.
        r.put(&k, &lines(8..=9));
        assert_eq!(r.after(&k, 5, 10), Recent::Unknown);
        assert_eq!(seqs(r.after(&k, 7, 10)), vec![8, 9]);
        assert_eq!(r.after(&k, 12, 10), Recent::Unknown);
    }

    #[test]
    fn a_line_told_only_by_its_seq_ends_the_window_and_resuming_clears_all() {
        let r = RecentLogs::default();
        let (a, b) = (LogKey::new("ci", "r", "a"), LogKey::new("ci", "r", "b"));
        r.put(&a, &lines(1..=2));
        r.put(&b, &lines(1..=2));
        r.apply(&LogFeedEvent::Reached {
            key: a.clone(),
            last_seq: 3,
        });
        assert_eq!(r.after(&a, 2, 10), Recent::Unknown);
        assert_eq!(r.after(&b, 2, 10), Recent::UpToDate);
        r.apply(&LogFeedEvent::Lines {
            key: b.clone(),
            lines: Arc::new(lines(3..=3)),
        });
        assert_eq!(seqs(r.after(&b, 2, 10)), vec![3]);
        r.apply(&LogFeedEvent::Resumed);
        assert_eq!(r.after(&b, 2, 10), Recent::Unknown);
    }

    #[test]
    fn windows_are_bounded() {
        let r = RecentLogs::default();
        let k = LogKey::new("ci", "r", "big");
        r.put(&k, &lines(1..=(LINES_PER_JOB as u64 + 10)));
        assert_eq!(r.after(&k, 0, 10), Recent::Unknown);
        assert_eq!(seqs(r.after(&k, 10, 2)), vec![11, 12]);
        for j in 0..=JOBS {
            r.put(&LogKey::new("ci", "r", &format!("j{j}")), &lines(1..=1));
        }
        // The least recently written job went first.
        assert_eq!(r.after(&k, 10, 1), Recent::Unknown);
        assert_eq!(r.lock().jobs.len(), JOBS);
    }
}
