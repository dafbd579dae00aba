//! Resolving a pipeline's args: declared defaults < `sparkwing.yaml` `args:` < command line.

use crate::mask::MASK;
use crate::protocol::{ArgKind, ArgSpec};
use crate::suggest::closest;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    ConfigFile,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::CommandLine => "the command line",
            Source::ConfigFile => "sparkwing.yaml args",
        })
    }
}

/// An arg the run cannot take. Every one lists the args the pipeline declares, so whoever typed
/// it sees what would have worked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}; valid args: {}", valid_list(.valid))]
pub struct ArgError {
    pub problem: ArgProblem,
    /// The declared args' names, in declaration order.
    pub valid: Vec<String>,
}

/// What is wrong with the args, without the list of valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgProblem {
    #[error("unknown arg --{name} (from {origin}){}", suggestion_text(.suggestion))]
    Unknown {
        name: String,
        origin: Source,
        suggestion: Option<String>,
    },
    #[error("--{name} expects {} value, got {value:?} (from {origin})", article(*.kind))]
    Invalid {
        name: String,
        kind: ArgKind,
        value: String,
        origin: Source,
    },
    #[error("--{name} is out of range for {}: {value:?} (from {origin}); {}", article(*.kind), range(*.kind))]
    OutOfRange {
        name: String,
        kind: ArgKind,
        value: String,
        origin: Source,
    },
    #[error("--{0} needs a value (e.g. --{0} VALUE or --{0}=VALUE)")]
    MissingValue(String),
    #[error("--{0} is required; pass --{0} VALUE")]
    Required(String),
    #[error("--{0} is given twice; give it once")]
    Duplicate(String),
    #[error("unexpected argument {0:?}: pipeline args are named, as --NAME VALUE")]
    Positional(String),
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean --{s}?)"),
        None => String::new(),
    }
}

fn valid_list(valid: &[String]) -> String {
    if valid.is_empty() {
        "none (this pipeline takes no args)".to_string()
    } else {
        valid
            .iter()
            .map(|v| format!("--{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn article(kind: ArgKind) -> &'static str {
    match kind {
        ArgKind::String => "a string",
        ArgKind::Int => "an int",
        ArgKind::Float => "a float",
        ArgKind::Bool => "a bool (true or false)",
    }
}

fn range(kind: ArgKind) -> String {
    match kind {
        ArgKind::Int => format!("ints go from {} to {}", i64::MIN, i64::MAX),
        ArgKind::Float => format!("floats must be finite (at most {:e} in size)", f64::MAX),
        ArgKind::String | ArgKind::Bool => String::new(),
    }
}

/// Why a text is not a value of a kind.
enum BadValue {
    Invalid,
    OutOfRange,
}

fn parse(kind: ArgKind, text: &str) -> Result<Value, BadValue> {
    use std::num::IntErrorKind;
    match kind {
        ArgKind::String => Ok(Value::String(text.to_string())),
        ArgKind::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|e| match e.kind() {
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => BadValue::OutOfRange,
                _ => BadValue::Invalid,
            }),
        ArgKind::Float => match text.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::from(f)),
            // `1e999` parses as infinity; "inf" and "NaN" are spelled out and simply invalid.
            Ok(_) if text.trim().chars().any(|c| c.is_ascii_digit()) => Err(BadValue::OutOfRange),
            _ => Err(BadValue::Invalid),
        },
        ArgKind::Bool => match text.trim() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(BadValue::Invalid),
        },
    }
}

/// Parse one textual value as the arg's kind.
pub fn parse_value(kind: ArgKind, text: &str) -> Option<Value> {
    parse(kind, text).ok()
}

fn parse_arg(spec: &ArgSpec, text: &str, origin: Source) -> Result<Value, ArgProblem> {
    parse(spec.kind, text).map_err(|bad| {
        let (name, kind, value) = (spec.name.clone(), spec.kind, text.to_string());
        match bad {
            BadValue::Invalid => ArgProblem::Invalid {
                name,
                kind,
                value,
                origin,
            },
            BadValue::OutOfRange => ArgProblem::OutOfRange {
                name,
                kind,
                value,
                origin,
            },
        }
    })
}

fn unknown(name: &str, specs: &[ArgSpec], origin: Source) -> ArgProblem {
    ArgProblem::Unknown {
        name: name.to_string(),
        origin,
        suggestion: closest(name, specs.iter().map(|s| s.name.as_str())).map(str::to_string),
    }
}

/// Resolve args. `cli` is the tokens after the pipeline name with Sparkwing's own flags removed.
pub fn resolve(
    specs: &[ArgSpec],
    config: &BTreeMap<String, String>,
    cli: &[String],
) -> Result<Map<String, Value>, ArgError> {
    resolve_values(specs, config, cli).map_err(|problem| ArgError {
        problem,
        valid: specs.iter().map(|s| s.name.clone()).collect(),
    })
}

fn resolve_values(
    specs: &[ArgSpec],
    config: &BTreeMap<String, String>,
    cli: &[String],
) -> Result<Map<String, Value>, ArgProblem> {
    let mut values = Map::new();
    for spec in specs {
        if let Some(d) = &spec.default {
            values.insert(spec.name.clone(), d.clone());
        }
    }
    for (name, text) in config {
        let spec = specs
            .iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| unknown(name, specs, Source::ConfigFile))?;
        values.insert(name.clone(), parse_arg(spec, text, Source::ConfigFile)?);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cli.len() {
        let token = &cli[i];
        i += 1;
        let Some(flag) = token.strip_prefix("--").filter(|f| !f.is_empty()) else {
            return Err(ArgProblem::Positional(token.clone()));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let spec = specs
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| unknown(name, specs, Source::CommandLine))?;
        if seen.iter().any(|s| s == name) {
            return Err(ArgProblem::Duplicate(name.to_string()));
        }
        seen.push(name.to_string());
        // The next token is this flag's value unless it is another flag. Pipeline args have no
        // positionals, so a bool flag may take one too (`--loud false`) without ambiguity.
        let next = cli.get(i).filter(|n| !n.starts_with("--"));
        let text = match (inline, next) {
            (Some(v), _) => v,
            (None, Some(next)) => {
                i += 1;
                next.clone()
            }
            // A bare bool flag means true.
            (None, None) if spec.kind == ArgKind::Bool => "true".to_string(),
            (None, None) => return Err(ArgProblem::MissingValue(name.to_string())),
        };
        values.insert(
            name.to_string(),
            parse_arg(spec, &text, Source::CommandLine)?,
        );
    }
    for spec in specs {
        if spec.required && !values.contains_key(&spec.name) {
            return Err(ArgProblem::Required(spec.name.clone()));
        }
    }
    Ok(values)
}

/// The args as they may be stored or shown: secret args replaced by the mask.
pub fn redacted(specs: &[ArgSpec], values: &Map<String, Value>) -> Map<String, Value> {
    values
        .iter()
        .map(|(k, v)| {
            let secret = specs.iter().any(|s| &s.name == k && s.secret);
            let shown = if secret {
                Value::String(MASK.to_string())
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// The secret args' names and textual values, for the masker.
pub fn secret_values(specs: &[ArgSpec], values: &Map<String, Value>) -> Vec<(String, String)> {
    specs
        .iter()
        .filter(|s| s.secret)
        .filter_map(|s| values.get(&s.name).map(|v| (s.name.clone(), v)))
        .map(|(name, v)| match v {
            Value::String(s) => (name, s.clone()),
            other => (name, other.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str, kind: ArgKind, default: Option<Value>) -> ArgSpec {
        ArgSpec {
            name: name.into(),
            kind,
            default,
            help: String::new(),
            required: false,
            secret: false,
        }
    }

    fn specs() -> Vec<ArgSpec> {
        vec![
            spec("name", ArgKind::String, Some(json!("world"))),
            spec("times", ArgKind::Int, Some(json!(1))),
            spec("loud", ArgKind::Bool, Some(json!(false))),
            spec("ratio", ArgKind::Float, None),
        ]
    }

    fn cli(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_default_config_cli() {
        let mut config = BTreeMap::new();
        config.insert("name".to_string(), "yaml".to_string());
        config.insert("times".to_string(), "3".to_string());
        let v = resolve(&specs(), &config, &cli(&["--times", "5", "--loud"])).unwrap();
        assert_eq!(v["name"], json!("yaml"));
        assert_eq!(v["times"], json!(5));
        assert_eq!(v["loud"], json!(true));
        assert!(!v.contains_key("ratio"));
    }

    #[test]
    fn equals_form_and_bool_false() {
        let v = resolve(
            &specs(),
            &BTreeMap::new(),
            &cli(&["--name=a=b", "--loud=false", "--ratio", "0.5"]),
        )
        .unwrap();
        assert_eq!(v["name"], json!("a=b"));
        assert_eq!(v["loud"], json!(false));
        assert_eq!(v["ratio"], json!(0.5));
    }

    #[test]
    fn unknown_arg_suggests_and_lists() {
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["--nme", "x"])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("--nme"), "{text}");
        assert!(text.contains("did you mean --name?"), "{text}");
        assert!(text.contains("--times"), "{text}");
    }

    #[test]
    fn invalid_values_and_missing() {
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["--times", "many"])).unwrap_err();
        assert!(e.to_string().contains("expects an int"), "{e}");
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["--name"])).unwrap_err();
        assert_eq!(e.problem, ArgProblem::MissingValue("name".into()));
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["stray"])).unwrap_err();
        assert_eq!(e.problem, ArgProblem::Positional("stray".into()));
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["--loud", "--loud"])).unwrap_err();
        assert_eq!(e.problem, ArgProblem::Duplicate("loud".into()));
        let mut req = specs();
        req[3].required = true;
        let e = resolve(&req, &BTreeMap::new(), &[]).unwrap_err();
        assert_eq!(e.problem, ArgProblem::Required("ratio".into()));
    }

    // Every kind of arg error names the valid args, not only an unknown arg.
    #[test]
    fn every_error_lists_the_valid_args() {
        let cases: &[&[&str]] = &[
            &["--times", "many"],
            &["--ratio=fast"],
            &["--times", "1", "--times", "2"],
            &["--name"],
            &["--times", "99999999999999999999"],
            &["--loud=maybe"],
            &["--loud", "maybe"],
            &["stray"],
            &["--nme", "x"],
        ];
        for tokens in cases {
            let e = resolve(&specs(), &BTreeMap::new(), &cli(tokens)).unwrap_err();
            assert!(
                e.to_string()
                    .ends_with("; valid args: --name, --times, --loud, --ratio"),
                "{tokens:?}: {e}"
            );
        }
        let mut req = specs();
        req[3].required = true;
        let e = resolve(&req, &BTreeMap::new(), &[]).unwrap_err();
        assert!(e.to_string().contains("valid args: --name"), "{e}");
        let e = resolve(&[], &BTreeMap::new(), &cli(&["--x"])).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("valid args: none (this pipeline takes no args)"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_numbers_say_so() {
        let e = resolve(
            &specs(),
            &BTreeMap::new(),
            &cli(&["--times", "99999999999999999999"]),
        )
        .unwrap_err();
        assert!(matches!(e.problem, ArgProblem::OutOfRange { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("--times is out of range for an int: \"99999999999999999999\""),
            "{e}"
        );
        assert!(e.to_string().contains("9223372036854775807"), "{e}");
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["--ratio", "1e999"])).unwrap_err();
        assert!(matches!(e.problem, ArgProblem::OutOfRange { .. }), "{e}");
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["--ratio", "NaN"])).unwrap_err();
        assert!(matches!(e.problem, ArgProblem::Invalid { .. }), "{e}");
    }

    #[test]
    fn bool_flags_take_a_separate_value_too() {
        let r = |t: &[&str]| resolve(&specs(), &BTreeMap::new(), &cli(t));
        assert_eq!(r(&["--loud", "false"]).unwrap()["loud"], json!(false));
        assert_eq!(r(&["--loud", "true"]).unwrap()["loud"], json!(true));
        assert_eq!(r(&["--loud=false"]).unwrap()["loud"], json!(false));
        // A bare flag is true and leaves the next flag alone.
        let v = r(&["--loud", "--times", "2"]).unwrap();
        assert_eq!((&v["loud"], &v["times"]), (&json!(true), &json!(2)));
        assert_eq!(r(&["--loud"]).unwrap()["loud"], json!(true));
        let e = r(&["--loud", "maybe"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--loud expects a bool (true or false) value, got \"maybe\""),
            "{e}"
        );
    }

    #[test]
    fn config_errors_name_the_file() {
        let mut config = BTreeMap::new();
        config.insert("bogus".to_string(), "1".to_string());
        let e = resolve(&specs(), &config, &[]).unwrap_err();
        assert!(e.to_string().contains("sparkwing.yaml"), "{e}");
    }

    #[test]
    fn redaction() {
        let mut s = specs();
        s[0].secret = true;
        let v = resolve(&s, &BTreeMap::new(), &cli(&["--name", "hunter2"])).unwrap();
        assert_eq!(redacted(&s, &v)["name"], json!(MASK));
        assert_eq!(
            secret_values(&s, &v),
            vec![("name".to_string(), "hunter2".to_string())]
        );
    }
}
