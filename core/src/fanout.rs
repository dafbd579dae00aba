//! Fan-out and matrix jobs (`docs/authoring.md#fan-out-and-matrix`): a template job expanded into
//! one job per item, `NAME[0]`, `NAME[1]`, …; statically from a list known when planning
//! (`matrix`), or at run time from an output of the job it fans out from (`fan_out`), once that
//! job succeeded. This module holds the expansion and its checks; the scheduler adds the expanded
//! jobs to the run (`ValidatedPlan::add_expanded`); a template's expansion into jobs is
//! `JobSpec::expand`.

use serde::{Deserialize, Serialize};

/// The most jobs one template expands into.
pub const MAX_ITEMS: usize = 1000;

/// The environment variable that carries an expanded job's item to its process.
pub const ITEM_ENV: &str = "SPARKWING_ITEM";
/// The environment variable that carries an expanded job's index (from 0) to its process.
pub const INDEX_ENV: &str = "SPARKWING_ITEM_INDEX";

/// Where a fan-out template's items come from: output `output` of job `job`, a JSON array of
/// strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutSpec {
    pub job: String,
    pub output: String,
}

/// What an expanded job was expanded from: its template's id, its index and its item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expanded {
    pub template: String,
    pub index: usize,
    pub item: String,
}

/// Why a fan-out could not expand at run time. Each names the template and where its list came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FanOutError {
    #[error("fan-out {template:?}: job {job:?} did not set output {output:?} (it set {set}); set it to a JSON array of strings, e.g. job.output_list({output:?}, &items), or [] for no jobs")]
    Unset {
        template: String,
        job: String,
        output: String,
        set: String,
    },
    #[error("fan-out {template:?}: output {output:?} of job {job:?} is not a list: {problem}; set it to a JSON array of strings, e.g. [\"a\",\"b\"] (job.output_list({output:?}, &items))")]
    NotAList {
        template: String,
        job: String,
        output: String,
        problem: String,
    },
    #[error("fan-out {template:?}: output {output:?} of job {job:?} has {count} items, over the cap of {cap} jobs per fan-out; give each job a batch of items (e.g. join several into one item) so the list has at most {cap}")]
    TooMany {
        template: String,
        job: String,
        output: String,
        count: usize,
        cap: usize,
    },
}

impl FanOutError {
    /// A stable name for the error (the `fan_out_failed` event's `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            FanOutError::Unset { .. } => "fan_out_unset",
            FanOutError::NotAList { .. } => "fan_out_not_a_list",
            FanOutError::TooMany { .. } => "fan_out_too_many",
        }
    }
}

/// The id of item `index` of template `template`: `test[3]`.
pub fn expanded_id(template: &str, index: usize) -> String {
    format!("{template}[{index}]")
}

/// The template and index of an expanded job's id (`test[3]` → `("test", 3)`); `None` for any
/// other id.
pub fn split_expanded_id(id: &str) -> Option<(&str, usize)> {
    let open = id.rfind('[')?;
    let digits = id[open + 1..].strip_suffix(']')?;
    if open == 0
        || digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    Some((&id[..open], digits.parse().ok()?))
}

/// The items of a fan-out, read from its producer's outputs (`outputs`: what `spec.job` set).
pub fn items(
    template: &str,
    spec: &FanOutSpec,
    outputs: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>, FanOutError> {
    let Some(raw) = outputs.get(&spec.output) else {
        let set = if outputs.is_empty() {
            "no outputs".to_string()
        } else {
            outputs
                .keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(FanOutError::Unset {
            template: template.to_string(),
            job: spec.job.clone(),
            output: spec.output.clone(),
            set,
        });
    };
    let not_a_list = |problem: String| FanOutError::NotAList {
        template: template.to_string(),
        job: spec.job.clone(),
        output: spec.output.clone(),
        problem,
    };
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
        not_a_list(format!(
            "{:?} is not JSON ({e})",
            raw.chars().take(60).collect::<String>()
        ))
    })?;
    let serde_json::Value::Array(values) = value else {
        return Err(not_a_list(format!("it is a JSON {}", json_kind(&value))));
    };
    if values.len() > MAX_ITEMS {
        return Err(FanOutError::TooMany {
            template: template.to_string(),
            job: spec.job.clone(),
            output: spec.output.clone(),
            count: values.len(),
            cap: MAX_ITEMS,
        });
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            serde_json::Value::String(s) => Ok(s),
            other => Err(not_a_list(format!(
                "item {i} is a JSON {}, not a string",
                json_kind(&other)
            ))),
        })
        .collect()
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// How a template's expansion is recorded as its reason: `fanned out into 3 jobs (test[0] …
/// test[2])`, `fanned out into 0 jobs`.
pub fn expanded_reason(template: &str, count: usize) -> String {
    match count {
        0 => "fanned out into 0 jobs".to_string(),
        1 => format!("fanned out into 1 job ({})", expanded_id(template, 0)),
        n => format!(
            "fanned out into {n} jobs ({} … {})",
            expanded_id(template, 0),
            expanded_id(template, n - 1)
        ),
    }
}

/// The reason a fan-out template is skipped when the job it fans out from was skipped.
pub fn producer_skipped_reason(producer: &str) -> String {
    format!("the job it fans out from, {producer:?}, was skipped: there is no list")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec() -> FanOutSpec {
        FanOutSpec {
            job: "shards".into(),
            output: "list".into(),
        }
    }

    fn outputs(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("list".to_string(), v.to_string())])
    }

    #[test]
    fn ids_round_trip_and_odd_ones_are_not_expanded() {
        assert_eq!(expanded_id("test", 3), "test[3]");
        assert_eq!(split_expanded_id("test[3]"), Some(("test", 3)));
        assert_eq!(split_expanded_id("a.b[12]"), Some(("a.b", 12)));
        for id in [
            "test", "test[]", "test[x]", "[3]", "test[03]", "test[3]x", "test[-1]",
        ] {
            assert_eq!(split_expanded_id(id), None, "{id}");
        }
    }

    #[test]
    fn items_from_a_json_array_of_strings() {
        assert_eq!(
            items("test", &spec(), &outputs(r#"["a","b c",""]"#)).unwrap(),
            vec!["a", "b c", ""]
        );
        assert_eq!(
            items("test", &spec(), &outputs("[]")).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_lists_are_refused_saying_what_is_wrong() {
        let e = items("test", &spec(), &outputs("a,b")).unwrap_err();
        assert_eq!(e.kind(), "fan_out_not_a_list");
        assert!(e.to_string().contains("is not JSON"), "{e}");
        assert!(e.to_string().contains("JSON array of strings"), "{e}");
        let e = items("test", &spec(), &outputs(r#"{"a":1}"#)).unwrap_err();
        assert!(e.to_string().contains("it is a JSON object"), "{e}");
        let e = items("test", &spec(), &outputs(r#"["a",2]"#)).unwrap_err();
        assert!(
            e.to_string()
                .contains("item 1 is a JSON number, not a string"),
            "{e}"
        );
    }

    #[test]
    fn an_unset_output_names_what_was_set() {
        let mut o = BTreeMap::new();
        o.insert("other".to_string(), "x".to_string());
        let e = items("test", &spec(), &o).unwrap_err();
        assert_eq!(e.kind(), "fan_out_unset");
        assert!(
            e.to_string()
                .contains(r#"job "shards" did not set output "list" (it set "other")"#),
            "{e}"
        );
        let e = items("test", &spec(), &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("(it set no outputs)"), "{e}");
    }

    #[test]
    fn the_cap_is_enforced_and_named() {
        let list = |n: usize| {
            serde_json::to_string(&(0..n).map(|i| i.to_string()).collect::<Vec<_>>()).unwrap()
        };
        assert_eq!(
            items("test", &spec(), &outputs(&list(MAX_ITEMS)))
                .unwrap()
                .len(),
            1000
        );
        let e = items("test", &spec(), &outputs(&list(10_000))).unwrap_err();
        assert_eq!(e.kind(), "fan_out_too_many");
        assert!(
            e.to_string()
                .contains("has 10000 items, over the cap of 1000 jobs per fan-out"),
            "{e}"
        );
        assert!(e.to_string().contains("at most 1000"), "{e}");
    }

    #[test]
    fn reasons() {
        assert_eq!(
            expanded_reason("test", 4),
            "fanned out into 4 jobs (test[0] … test[3])"
        );
        assert_eq!(
            expanded_reason("test", 1),
            "fanned out into 1 job (test[0])"
        );
        assert_eq!(expanded_reason("test", 0), "fanned out into 0 jobs");
    }
}
