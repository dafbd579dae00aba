//! Concurrency groups: at most `limit` runs with the same group key at once (`docs/authoring.md`).
//! A run over the limit waits in arrival order, or, with `cancel_in_progress`, cancels the older
//! runs of its group; a job's group (`job_step`) works the same way, its entries labelled
//! `RUN/JOB`, and cancels the older runs its entries belong to. This module resolves the key and
//! decides each step; the engine keeps the group's slots and queue of local runs (lock files,
//! `engine/src/concurrency.rs`), the cluster API those of cluster runs (entries in its state
//! layer, each kept alive by its runner's lease: [`shared_turn`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a plan declares (`"concurrency"` in the plan document, `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencySpec {
    /// The key, with `{arg}` placeholders filled from the run's args (`deploy-{env}`).
    pub group: String,
    #[serde(default = "default_limit")]
    pub limit: u32,
    #[serde(default)]
    pub cancel_in_progress: bool,
}

fn default_limit() -> u32 {
    1
}

/// Why a group key cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("concurrency group {template:?} names arg {{{arg}}}, which the pipeline does not have (or which is a secret: a group key is shown and stored in clear)")]
    UnknownArg { template: String, arg: String },
    #[error("concurrency group {template:?} has an unclosed `{{`")]
    Unclosed { template: String },
    #[error("concurrency group {key:?} is invalid: use letters, digits, '-', '_' and '.' only (from {template:?})")]
    InvalidKey { template: String, key: String },
    #[error("concurrency group {0:?} has limit 0; a group admits at least one run")]
    ZeroLimit(String),
}

/// The group's key: `template` with each `{name}` replaced by the arg's value as text. `args`
/// holds only the args that may be shown (never secrets).
pub fn resolve_key(template: &str, args: &Map<String, Value>) -> Result<String, KeyError> {
    let mut key = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        key.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(KeyError::Unclosed {
                template: template.to_string(),
            });
        };
        let name = &after[..close];
        let value = match args.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => {
                return Err(KeyError::UnknownArg {
                    template: template.to_string(),
                    arg: name.to_string(),
                })
            }
            Some(other) => other.to_string(),
        };
        key.push_str(&value);
        rest = &after[close + 1..];
    }
    key.push_str(rest);
    if !valid_key(&key) {
        return Err(KeyError::InvalidKey {
            template: template.to_string(),
            key,
        });
    }
    Ok(key)
}

/// Whether `key` may name a group: 1 to 128 letters, digits, `-`, `_` and `.`, not starting
/// with `.`.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !key.starts_with('.')
}

/// How long a cluster run's entry in its group stands without word from its runner: a runner
/// that died (`kill -9`, a lost node) frees its slot or place this long after its last word.
pub const LEASE_MS: i64 = 25_000;
/// How often a runner holding a slot renews its lease (a waiting runner's looks, every
/// 500 ms, renew it too).
pub const RENEW_EVERY_MS: i64 = 5_000;

/// A run's entry in a group kept by the cluster API (its own group), or one of its jobs' (a
/// job's own group), as a turn needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntry {
    pub run: String,
    /// The job whose entry this is; `None`: the run's own.
    pub job: Option<String>,
    pub holding: bool,
    /// Until when the entry stands (Unix ms).
    pub lease_until_ms: i64,
    /// A newer run of the group already asked this one to cancel.
    pub cancel_asked: bool,
}

impl SharedEntry {
    /// How the group's views name the entry: the run, or `RUN/JOB` for a job's entry.
    pub fn label(&self) -> String {
        shared_label(&self.run, self.job.as_deref())
    }
}

/// The label of run `run`'s entry in a shared group (`job`: one of its jobs' entry, `RUN/JOB`).
pub fn shared_label(run: &str, job: Option<&str>) -> String {
    match job {
        None => run.to_string(),
        Some(j) => format!("{run}/{j}"),
    }
}

/// What a turn of run `me` at a shared group decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTurn {
    /// [`GroupStep::Take`] also when `me` already holds its slot.
    pub step: GroupStep,
    /// The group as `me` sees it, without the lapsed entries.
    pub view: GroupView,
    /// Entries whose lease ended (their runner is gone): passed over, to be removed.
    pub lapsed: Vec<String>,
}

/// The group as entry `me` (its [`SharedEntry::label`]) sees it at `now_ms`: `entries` in
/// arrival order, without the entries whose lease ended before `now_ms` (never `me`'s: it is
/// here), named by their labels. Also the labels of the lapsed ones.
pub fn shared_view(
    entries: &[SharedEntry],
    me: &str,
    limit: u32,
    now_ms: i64,
) -> (GroupView, Vec<String>) {
    let (live, lapsed): (Vec<&SharedEntry>, Vec<&SharedEntry>) = entries
        .iter()
        .partition(|e| e.label() == me || e.lease_until_ms >= now_ms);
    let holders = live
        .iter()
        .filter(|e| e.holding && e.label() != me)
        .map(|e| e.label())
        .collect();
    let ahead = live
        .iter()
        .take_while(|e| e.label() != me)
        .filter(|e| !e.holding)
        .map(|e| e.label())
        .collect();
    let gone = lapsed.iter().map(|e| e.label()).collect();
    (
        GroupView {
            limit,
            holders,
            ahead,
        },
        gone,
    )
}

/// The turn of entry `me` (its [`SharedEntry::label`]: a run's own entry or one of its jobs') at
/// a group kept by the cluster API (entering it, or looking again while it waits): `entries` in
/// arrival order with `me` among them. A holder or waiter whose lease ended is passed over. With
/// `cancel_in_progress` what is cancelled are the older *runs* the holders and queued entries
/// belong to, as [`job_step`] decides for a job (for a group of run entries alone that is
/// [`step`]'s answer): each once (the runs already asked are those with an entry that says so),
/// never `me`'s own run. [`GroupStep::Cancel`] names runs, not labels.
pub fn shared_turn(
    entries: &[SharedEntry],
    me: &str,
    limit: u32,
    cancel_in_progress: bool,
    now_ms: i64,
) -> SharedTurn {
    let (view, lapsed) = shared_view(entries, me, limit, now_ms);
    let mine = entries.iter().find(|e| e.label() == me);
    let step = if mine.is_some_and(|e| e.holding) {
        GroupStep::Take
    } else {
        let mut asked: Vec<String> = Vec::new();
        for e in entries.iter().filter(|e| e.cancel_asked) {
            if !asked.contains(&e.run) {
                asked.push(e.run.clone());
            }
        }
        let own_run = mine.map_or(me, |e| e.run.as_str());
        let run_of = |label: &str| {
            entries
                .iter()
                .find(|e| e.label() == label)
                .map_or_else(|| label.to_string(), |e| e.run.clone())
        };
        runs_step(&view, cancel_in_progress, own_run, &asked, run_of)
    };
    SharedTurn { step, view, lapsed }
}

/// A group as its slots and queue show it now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupView {
    pub limit: u32,
    /// The runs holding a slot.
    pub holders: Vec<String>,
    /// The runs queued ahead of this one, oldest first.
    pub ahead: Vec<String>,
}

/// What a run entering its group does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupStep {
    /// A slot is free and nobody is ahead: take it.
    Take,
    /// Wait for a slot (FIFO).
    Wait,
    /// Ask these older runs of the group to cancel, then wait for their slots.
    Cancel(Vec<String>),
}

/// The next step of a run entering its group. With `cancel_in_progress` every older run of the
/// group (holding or queued ahead) is cancelled once; `asked` are those already asked.
pub fn step(view: &GroupView, cancel_in_progress: bool, asked: &[String]) -> GroupStep {
    if view.ahead.is_empty() && (view.holders.len() as u32) < view.limit.max(1) {
        return GroupStep::Take;
    }
    if cancel_in_progress {
        let older: Vec<String> = view
            .holders
            .iter()
            .chain(&view.ahead)
            .filter(|r| !asked.contains(r))
            .cloned()
            .collect();
        if !older.is_empty() {
            return GroupStep::Cancel(older);
        }
    }
    GroupStep::Wait
}

/// The run a slot's or queue entry's label names: a run's own group entry is labelled with its
/// run id, a job's with `RUN/JOB`.
pub fn label_run(label: &str) -> &str {
    label.split_once('/').map_or(label, |(run, _)| run)
}

/// The next step of a job's attempt entering its group (its entries labelled `RUN/JOB`), run
/// `own_run`. As [`step`], except that with `cancel_in_progress` what is cancelled are the older
/// *runs* the group's holders and queued entries belong to (a run's own entry or one of its jobs'),
/// each once (`asked`: the runs already asked), never `own_run` itself: a job of the same run in
/// the group is waited for.
pub fn job_step(
    view: &GroupView,
    cancel_in_progress: bool,
    own_run: &str,
    asked: &[String],
) -> GroupStep {
    runs_step(view, cancel_in_progress, own_run, asked, |l| {
        label_run(l).to_string()
    })
}

/// [`job_step`] with the run of each label told by `run_of`.
fn runs_step(
    view: &GroupView,
    cancel_in_progress: bool,
    own_run: &str,
    asked: &[String],
    run_of: impl Fn(&str) -> String,
) -> GroupStep {
    match step(view, false, &[]) {
        GroupStep::Take => GroupStep::Take,
        _ if !cancel_in_progress => GroupStep::Wait,
        _ => {
            let mut runs: Vec<String> = Vec::new();
            for label in view.holders.iter().chain(&view.ahead) {
                let run = run_of(label);
                let run = run.as_str();
                if run != own_run
                    && !asked.iter().any(|a| a == run)
                    && !runs.iter().any(|r| r == run)
                {
                    runs.push(run.to_string());
                }
            }
            if runs.is_empty() {
                GroupStep::Wait
            } else {
                GroupStep::Cancel(runs)
            }
        }
    }
}

/// How a waiting run describes its wait: `waiting for concurrency group deploy-prod (1/1, held
/// by run run-…)`.
pub fn waiting_line(key: &str, view: &GroupView) -> String {
    let held = if view.holders.is_empty() {
        String::new()
    } else {
        let noun = if view.holders.len() == 1 {
            "run"
        } else {
            "runs"
        };
        format!(", held by {noun} {}", view.holders.join(", "))
    };
    let queued = if view.ahead.is_empty() {
        String::new()
    } else {
        format!(", {} queued ahead", view.ahead.len())
    };
    format!(
        "waiting for concurrency group {key} ({}/{}{held}{queued})",
        view.holders.len(),
        view.limit
    )
}

/// A job of a run waiting for a slot of its own concurrency group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobWaiting {
    pub job: String,
    pub group: String,
    pub limit: u32,
}

/// The jobs of a run waiting for their concurrency group now, from its events in order (job,
/// kind, payload): a job whose last event is `concurrency_waiting` (`{"group", "limit"}`) waits;
/// any later event of the job (`concurrency_admitted`, its end) means it no longer does.
pub fn jobs_waiting<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>,
) -> Vec<JobWaiting> {
    let mut last: Vec<(&str, &str, &Value)> = Vec::new();
    for (job, kind, payload) in events {
        match last.iter_mut().find(|(j, _, _)| *j == job) {
            Some(e) => *e = (job, kind, payload),
            None => last.push((job, kind, payload)),
        }
    }
    last.into_iter()
        .filter(|(_, kind, _)| *kind == "concurrency_waiting")
        .filter_map(|(job, _, p)| {
            Some(JobWaiting {
                job: job.to_string(),
                group: p["group"].as_str()?.to_string(),
                limit: u32::try_from(p["limit"].as_u64()?).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> Map<String, Value> {
        match json!({"env": "prod", "n": 3, "flag": true}) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_job_waits_for_its_group_until_a_later_event_of_it() {
        let g = json!({"group": "deploy-prod", "limit": 1});
        let none = json!({});
        let waiting = jobs_waiting([
            ("build", "job_started", &none),
            ("deploy", "concurrency_waiting", &g),
            ("lint", "concurrency_waiting", &g),
            ("lint", "concurrency_admitted", &none),
            ("build", "job_succeeded", &none),
        ]);
        assert_eq!(
            waiting,
            [JobWaiting {
                job: "deploy".into(),
                group: "deploy-prod".into(),
                limit: 1
            }]
        );
        assert!(jobs_waiting([("deploy", "concurrency_waiting", &none)]).is_empty());
    }

    #[test]
    fn keys_interpolate_args() {
        assert_eq!(resolve_key("deploy-{env}", &args()).unwrap(), "deploy-prod");
        assert_eq!(
            resolve_key("{env}.{n}-{flag}", &args()).unwrap(),
            "prod.3-true"
        );
        assert_eq!(resolve_key("plain", &args()).unwrap(), "plain");
        assert!(matches!(
            resolve_key("deploy-{region}", &args()),
            Err(KeyError::UnknownArg { arg, .. }) if arg == "region"
        ));
        assert!(matches!(
            resolve_key("deploy-{env", &args()),
            Err(KeyError::Unclosed { .. })
        ));
        assert!(matches!(
            resolve_key("deploy {env}", &args()),
            Err(KeyError::InvalidKey { .. })
        ));
        assert!(resolve_key("../{env}", &args()).is_err());
    }

    fn view(limit: u32, holders: &[&str], ahead: &[&str]) -> GroupView {
        GroupView {
            limit,
            holders: holders.iter().map(|s| s.to_string()).collect(),
            ahead: ahead.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn admission_is_fifo_within_the_limit() {
        assert_eq!(step(&view(1, &[], &[]), false, &[]), GroupStep::Take);
        assert_eq!(step(&view(1, &["a"], &[]), false, &[]), GroupStep::Wait);
        assert_eq!(step(&view(2, &["a"], &[]), false, &[]), GroupStep::Take);
        // A free slot is not taken while an older run waits for it.
        assert_eq!(step(&view(2, &["a"], &["b"]), false, &[]), GroupStep::Wait);
    }

    #[test]
    fn cancel_in_progress_cancels_every_older_run_once() {
        assert_eq!(
            step(&view(1, &["a"], &["b"]), true, &[]),
            GroupStep::Cancel(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            step(&view(1, &["a"], &["b"]), true, &["a".into()]),
            GroupStep::Cancel(vec!["b".into()])
        );
        assert_eq!(
            step(&view(1, &["a"], &["b"]), true, &["a".into(), "b".into()]),
            GroupStep::Wait
        );
        assert_eq!(step(&view(1, &[], &[]), true, &[]), GroupStep::Take);
    }

    fn entry(run: &str, holding: bool, lease_until_ms: i64) -> SharedEntry {
        SharedEntry {
            run: run.into(),
            job: None,
            holding,
            lease_until_ms,
            cancel_asked: false,
        }
    }

    #[test]
    fn a_shared_group_is_fifo_and_passes_over_lapsed_leases() {
        // a holds, b waits, c (me) arrives: c waits behind b.
        let e = [
            entry("a", true, 100),
            entry("b", false, 100),
            entry("c", false, 200),
        ];
        let t = shared_turn(&e, "c", 1, false, 50);
        assert_eq!(t.step, GroupStep::Wait);
        assert_eq!(t.view, view(1, &["a"], &["b"]));
        assert!(t.lapsed.is_empty());
        // b's turn once a is gone.
        let t = shared_turn(&e[1..], "b", 1, false, 50);
        assert_eq!(t.step, GroupStep::Take);
        // a's runner died: its lease ended before now, so b takes the slot and a is dropped.
        let t = shared_turn(&e, "b", 1, false, 101);
        assert_eq!((t.step, t.lapsed), (GroupStep::Take, vec!["a".to_string()]));
        // My own entry never lapses (I am here), and a holder keeps holding.
        let t = shared_turn(&e, "a", 1, false, 500);
        assert_eq!(t.step, GroupStep::Take);
        assert_eq!(t.lapsed, vec!["b".to_string(), "c".to_string()]);
        // A lapsed waiter ahead is passed over too.
        let e = [entry("b", false, 10), entry("c", false, 100)];
        assert_eq!(shared_turn(&e, "c", 1, false, 50).step, GroupStep::Take);
    }

    #[test]
    fn a_shared_group_cancels_older_runs_once() {
        let mut e = vec![
            entry("a", true, 100),
            entry("b", false, 100),
            entry("c", false, 100),
        ];
        let t = shared_turn(&e, "c", 1, true, 50);
        assert_eq!(t.step, GroupStep::Cancel(vec!["a".into(), "b".into()]));
        e[0].cancel_asked = true;
        e[1].cancel_asked = true;
        assert_eq!(shared_turn(&e, "c", 1, true, 50).step, GroupStep::Wait);
    }

    fn job_entry(run: &str, job: &str, holding: bool) -> SharedEntry {
        SharedEntry {
            job: Some(job.into()),
            ..entry(run, holding, 100)
        }
    }

    #[test]
    fn a_shared_group_keeps_jobs_entries_as_labels_and_cancels_their_runs() {
        // Run names hold '/' on a cluster (NS/NAME): a job's entry is NS/NAME/JOB.
        let mut e = vec![
            job_entry("ci/a", "deploy", true),
            entry("ci/b", false, 100),
            job_entry("ci/c", "deploy", false),
            job_entry("ci/c", "smoke", false),
        ];
        assert_eq!(e[0].label(), "ci/a/deploy");
        let t = shared_turn(&e, "ci/c/smoke", 1, false, 50);
        assert_eq!(t.step, GroupStep::Wait);
        assert_eq!(t.view, view(1, &["ci/a/deploy"], &["ci/b", "ci/c/deploy"]));
        // cancel_in_progress from a job: the older runs (not labels), never its own run.
        let t = shared_turn(&e, "ci/c/smoke", 1, true, 50);
        assert_eq!(
            t.step,
            GroupStep::Cancel(vec!["ci/a".into(), "ci/b".into()])
        );
        // Each run once: an entry asked marks its run asked.
        e[0].cancel_asked = true;
        assert_eq!(
            shared_turn(&e, "ci/c/smoke", 1, true, 50).step,
            GroupStep::Cancel(vec!["ci/b".into()])
        );
        e[1].cancel_asked = true;
        assert_eq!(
            shared_turn(&e, "ci/c/smoke", 1, true, 50).step,
            GroupStep::Wait
        );
        // A job of the same run ahead is waited for, never cancelled.
        let e = [
            job_entry("ci/c", "deploy", true),
            job_entry("ci/c", "smoke", false),
        ];
        assert_eq!(
            shared_turn(&e, "ci/c/smoke", 1, true, 50).step,
            GroupStep::Wait
        );
        // The run's own entry and its job's are apart: the job holds, the run's entry waits.
        let e = [job_entry("ci/c", "deploy", true), entry("ci/c", false, 100)];
        assert_eq!(shared_turn(&e, "ci/c", 1, false, 50).step, GroupStep::Wait);
        assert_eq!(
            shared_turn(&e, "ci/c/deploy", 1, false, 50).step,
            GroupStep::Take
        );
        assert!(valid_key("deploy-prod.eu_1"));
        assert!(!valid_key(".x") && !valid_key("a b") && !valid_key(""));
        assert!(!valid_key(&"x".repeat(129)));
    }

    #[test]
    fn a_jobs_cancel_in_progress_cancels_the_older_runs_once_never_its_own() {
        // Free: take it, cancel or not.
        assert_eq!(step_of(&view(1, &[], &[]), true), GroupStep::Take);
        // Without cancel_in_progress a job waits.
        assert_eq!(
            step_of(&view(1, &["a/deploy"], &[]), false),
            GroupStep::Wait
        );
        // The runs behind the holders and queued entries, each once, in order; a run's own
        // group entry counts as that run.
        assert_eq!(
            step_of(&view(1, &["a/deploy"], &["b/deploy", "a/other", "c"]), true),
            GroupStep::Cancel(vec!["a".into(), "b".into(), "c".into()])
        );
        // Never the job's own run: another of its jobs in the group is waited for.
        assert_eq!(
            step_of(&view(1, &["me/build"], &["b/deploy"]), true),
            GroupStep::Cancel(vec!["b".into()])
        );
        assert_eq!(step_of(&view(1, &["me/build"], &[]), true), GroupStep::Wait);
        // Runs already asked are not asked again.
        assert_eq!(
            job_step(
                &view(1, &["a/deploy"], &["b/deploy"]),
                true,
                "me",
                &["a".into()]
            ),
            GroupStep::Cancel(vec!["b".into()])
        );
        assert_eq!(
            job_step(
                &view(1, &["a/deploy"], &["b/deploy"]),
                true,
                "me",
                &["a".into(), "b".into()]
            ),
            GroupStep::Wait
        );
        assert_eq!(label_run("run-1/deploy"), "run-1");
        assert_eq!(label_run("run-1"), "run-1");
    }

    fn step_of(view: &GroupView, cancel: bool) -> GroupStep {
        job_step(view, cancel, "me", &[])
    }

    #[test]
    fn the_waiting_line_names_the_holders() {
        assert_eq!(
            waiting_line("deploy-prod", &view(1, &["run-1"], &[])),
            "waiting for concurrency group deploy-prod (1/1, held by run run-1)"
        );
        assert_eq!(
            waiting_line("g", &view(2, &["a", "b"], &["c"])),
            "waiting for concurrency group g (2/2, held by runs a, b, 1 queued ahead)"
        );
        let parsed: ConcurrencySpec = serde_json::from_str(r#"{"group":"g"}"#).unwrap();
        assert_eq!((parsed.limit, parsed.cancel_in_progress), (1, false));
    }
}
