//! Concurrency groups of cluster runs: per group, one entry per run that entered it (the run's
//! own group) and one per job of a run that entered it (a job's own group), in arrival order, holding a slot or waiting for one, kept alive by its runner's lease (`docs/state.md`,
//! "Concurrency groups"). The store decides nothing: [`crate::MetadataStore::change_group`] hands
//! the group's entries to the caller's change (the API asks `sparkwing_core::concurrency`) and
//! writes back what it changed, atomically per group.

use std::sync::{Arc, Mutex};

use crate::error::{Result, StateError};
use crate::types::{check_job, check_name, check_run};
use crate::{MetadataStore, RunKey};

/// One run's entry in a concurrency group (or one of its jobs' entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub run: RunKey,
    /// The job whose own group this entry is in (its id); empty: the run's own entry.
    pub job: String,
    /// Arrival order within the group (lower arrived first); the change that adds an entry gives
    /// it one more than the highest in the group.
    pub position: i64,
    /// Holds a slot (otherwise waits for one).
    pub holding: bool,
    /// The limit the run declared.
    pub limit: u32,
    pub cancel_in_progress: bool,
    /// When the entry came to its state (waiting since, holding since; Unix ms).
    pub since_ms: i64,
    /// Until when the entry stands without word from its runner (Unix ms).
    pub lease_until_ms: i64,
    /// A newer run of the group has asked this run to cancel (it is asked once).
    pub cancel_asked: bool,
}

/// A change of one group's entries: it gets them in arrival order and edits the list (adds,
/// removes, changes entries). Runs inside the store's transaction: no IO, and quick.
pub type GroupChange = Box<dyn FnOnce(&mut Vec<GroupEntry>) + Send + 'static>;

/// The entries a group's change leaves: which runs to delete and which entries to write.
pub(crate) struct GroupWrites {
    /// The runs and jobs (empty: the run's own entry) whose entries go.
    pub delete: Vec<(RunKey, String)>,
    pub upsert: Vec<GroupEntry>,
}

/// What a change did to a group (`before` as read, `after` as changed), checked: every entry a
/// valid run (and job name), each run's entry and each job's once, a positive limit.
pub(crate) fn writes(
    group: &str,
    before: &[GroupEntry],
    after: &[GroupEntry],
) -> Result<GroupWrites> {
    check_name("concurrency group", group)?;
    let mut seen = std::collections::BTreeSet::new();
    for e in after {
        check_run(&e.run)?;
        if !e.job.is_empty() {
            check_job(&e.job)?;
        }
        if e.limit == 0 {
            return Err(StateError::invalid(
                "concurrency group limit",
                "0",
                "a group admits at least one run",
            ));
        }
        if !seen.insert((&e.run, &e.job)) {
            let who = if e.job.is_empty() {
                format!("{}/{}", e.run.namespace, e.run.name)
            } else {
                format!("{}/{}/{}", e.run.namespace, e.run.name, e.job)
            };
            return Err(StateError::invalid(
                "concurrency group entry",
                &who,
                "a run (and each of its jobs) is in a group once",
            ));
        }
    }
    let delete = before
        .iter()
        .filter(|b| !seen.contains(&(&b.run, &b.job)))
        .map(|b| (b.run.clone(), b.job.clone()))
        .collect();
    let upsert = after
        .iter()
        .filter(|a| !before.contains(a))
        .cloned()
        .collect();
    Ok(GroupWrites { delete, upsert })
}

/// [`MetadataStore::change_group`] with a change that answers something: what `change` returned,
/// once the change is stored.
pub async fn change_group_with<T: Send + 'static>(
    meta: &dyn MetadataStore,
    group: &str,
    change: impl FnOnce(&mut Vec<GroupEntry>) -> T + Send + 'static,
) -> Result<T> {
    let answer: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let slot = answer.clone();
    meta.change_group(
        group,
        Box::new(move |entries| {
            let out = change(entries);
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
        }),
    )
    .await?;
    let out = answer.lock().unwrap_or_else(|p| p.into_inner()).take();
    out.ok_or_else(|| StateError::Backend {
        backend: "concurrency group",
        detail: format!("the change of group {group} was stored but did not run"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, position: i64) -> GroupEntry {
        GroupEntry {
            run: RunKey::new("ci", name),
            job: String::new(),
            position,
            holding: false,
            limit: 1,
            cancel_in_progress: false,
            since_ms: 1,
            lease_until_ms: 2,
            cancel_asked: false,
        }
    }

    #[test]
    fn writes_are_what_changed_and_bad_entries_are_refused() {
        let before = vec![entry("a", 1), entry("b", 2)];
        let mut after = vec![entry("b", 2), entry("c", 3)];
        after[0].holding = true;
        let w = writes("deploy-prod", &before, &after).unwrap();
        assert_eq!(w.delete, vec![(RunKey::new("ci", "a"), String::new())]);
        assert_eq!(w.upsert, after);
        let same = writes("deploy-prod", &before, &before).unwrap();
        assert!(same.delete.is_empty() && same.upsert.is_empty());

        let twice = vec![entry("a", 1), entry("a", 2)];
        assert!(matches!(
            writes("g", &[], &twice),
            Err(StateError::Invalid { why, .. }) if why.contains("once")
        ));
        let mut zero = entry("a", 1);
        zero.limit = 0;
        assert!(writes("g", &[], &[zero]).is_err());
        assert!(writes("../g", &[], &[]).is_err());
        assert!(writes("g", &[], &[entry("../x", 1)]).is_err());

        // A run's own entry and its jobs' entries are distinct; a job twice is not.
        let mut job = entry("a", 2);
        job.job = "deploy".into();
        let mut other = entry("a", 3);
        other.job = "smoke".into();
        let w = writes("g", &[], &[entry("a", 1), job.clone(), other]).unwrap();
        assert_eq!(w.upsert.len(), 3);
        assert!(writes("g", &[], &[job.clone(), job.clone()]).is_err());
        let w = writes("g", &[entry("a", 1), job.clone()], &[entry("a", 1)]).unwrap();
        assert_eq!(
            w.delete,
            vec![(RunKey::new("ci", "a"), "deploy".to_string())]
        );
        let mut bad = job;
        bad.job = "../x".into();
        assert!(writes("g", &[], &[bad]).is_err());
    }
}
