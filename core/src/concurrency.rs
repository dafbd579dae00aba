//! Concurrency groups: at most `limit` runs with the same group key at once (`docs/authoring.md`).
//! A run over the limit waits in arrival order, or, with `cancel_in_progress`, cancels the older
//! runs of its group; a job's group (`job_step`) works the same way, its entries labelled
//! `RUN/JOB`, and cancels the older runs its entries belong to. This module resolves the key and
//! decides each step; the engine keeps the group's slots and queue (lock files,
//! `engine/src/concurrency.rs`).

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
    let valid = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !key.starts_with('.');
    if !valid {
        return Err(KeyError::InvalidKey {
            template: template.to_string(),
            key,
        });
    }
    Ok(key)
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
    match step(view, false, &[]) {
        GroupStep::Take => GroupStep::Take,
        _ if !cancel_in_progress => GroupStep::Wait,
        _ => {
            let mut runs: Vec<String> = Vec::new();
            for label in view.holders.iter().chain(&view.ahead) {
                let run = label_run(label);
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
