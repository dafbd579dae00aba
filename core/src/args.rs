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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("unknown arg --{name} (from {origin}){}; valid args: {}", suggestion_text(.suggestion), valid_list(.valid))]
    Unknown {
        name: String,
        origin: Source,
        suggestion: Option<String>,
        valid: Vec<String>,
    },
    #[error("--{name} expects {} value, got {value:?} (from {origin})", article(*.kind))]
    Invalid {
        name: String,
        kind: ArgKind,
        value: String,
        origin: Source,
    },
    #[error("--{0} needs a value (e.g. --{0} VALUE)")]
    MissingValue(String),
    #[error("--{0} is required; pass --{0} VALUE")]
    Required(String),
    #[error("--{0} is given twice")]
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

/// Parse one textual value as the arg's kind.
pub fn parse_value(kind: ArgKind, text: &str) -> Option<Value> {
    match kind {
        ArgKind::String => Some(Value::String(text.to_string())),
        ArgKind::Int => text.trim().parse::<i64>().ok().map(Value::from),
        ArgKind::Float => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from),
        ArgKind::Bool => match text.trim() {
            "true" | "yes" | "1" => Some(Value::Bool(true)),
            "false" | "no" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
    }
}

fn unknown(name: &str, specs: &[ArgSpec], source: Source) -> ArgError {
    ArgError::Unknown {
        name: name.to_string(),
        origin: source,
        suggestion: closest(name, specs.iter().map(|s| s.name.as_str())).map(str::to_string),
        valid: specs.iter().map(|s| s.name.clone()).collect(),
    }
}

/// Resolve args. `cli` is the tokens after the pipeline name with Sparkwing's own flags removed.
pub fn resolve(
    specs: &[ArgSpec],
    config: &BTreeMap<String, String>,
    cli: &[String],
) -> Result<Map<String, Value>, ArgError> {
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
        let v = parse_value(spec.kind, text).ok_or_else(|| ArgError::Invalid {
            name: name.clone(),
            kind: spec.kind,
            value: text.clone(),
            origin: Source::ConfigFile,
        })?;
        values.insert(name.clone(), v);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cli.len() {
        let token = &cli[i];
        i += 1;
        let Some(flag) = token.strip_prefix("--").filter(|f| !f.is_empty()) else {
            return Err(ArgError::Positional(token.clone()));
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
            return Err(ArgError::Duplicate(name.to_string()));
        }
        seen.push(name.to_string());
        let text = match inline {
            Some(v) => v,
            // A bare bool flag means true; it never swallows the next token.
            None if spec.kind == ArgKind::Bool => "true".to_string(),
            None => {
                let next = cli
                    .get(i)
                    .filter(|n| !n.starts_with("--"))
                    .ok_or_else(|| ArgError::MissingValue(name.to_string()))?;
                i += 1;
                next.clone()
            }
        };
        let v = parse_value(spec.kind, &text).ok_or_else(|| ArgError::Invalid {
            name: name.to_string(),
            kind: spec.kind,
            value: text.clone(),
            origin: Source::CommandLine,
        })?;
        values.insert(name.to_string(), v);
    }
    for spec in specs {
        if spec.required && !values.contains_key(&spec.name) {
            return Err(ArgError::Required(spec.name.clone()));
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

/// The textual values of secret args, for the masker.
pub fn secret_values(specs: &[ArgSpec], values: &Map<String, Value>) -> Vec<String> {
    specs
        .iter()
        .filter(|s| s.secret)
        .filter_map(|s| values.get(&s.name))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
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
        assert_eq!(e, ArgError::MissingValue("name".into()));
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["stray"])).unwrap_err();
        assert_eq!(e, ArgError::Positional("stray".into()));
        let e = resolve(&specs(), &BTreeMap::new(), &cli(&["--loud", "--loud"])).unwrap_err();
        assert_eq!(e, ArgError::Duplicate("loud".into()));
        let mut req = specs();
        req[3].required = true;
        let e = resolve(&req, &BTreeMap::new(), &[]).unwrap_err();
        assert_eq!(e, ArgError::Required("ratio".into()));
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
        assert_eq!(secret_values(&s, &v), vec!["hunter2".to_string()]);
    }
}
