//! Pipeline arguments: declarations ([`Arg`]) and resolved values ([`Args`]).
//!
//! The engine parses the command line; the binary only sees typed JSON values in `SPARKWING_ARGS`.

use crate::error::{Error, Result};
use crate::json::Value;

/// The type of a pipeline argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A string.
    String,
    /// A signed 64-bit integer.
    Int,
    /// A 64-bit float.
    Float,
    /// A boolean flag.
    Bool,
}

impl ArgKind {
    /// The protocol name: `string`, `int`, `float` or `bool`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArgKind::String => "string",
            ArgKind::Int => "int",
            ArgKind::Float => "float",
            ArgKind::Bool => "bool",
        }
    }
}

/// A typed argument value, used for defaults. Built with `.into()` from strings, integers, floats and bools.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// A string value.
    String(String),
    /// An integer value.
    Int(i64),
    /// A float value.
    Float(f64),
    /// A boolean value.
    Bool(bool),
}

impl ArgValue {
    fn kind(&self) -> ArgKind {
        match self {
            ArgValue::String(_) => ArgKind::String,
            ArgValue::Int(_) => ArgKind::Int,
            ArgValue::Float(_) => ArgKind::Float,
            ArgValue::Bool(_) => ArgKind::Bool,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        match self {
            ArgValue::String(s) => Value::String(s.clone()),
            ArgValue::Int(i) => Value::Int(*i),
            ArgValue::Float(f) => Value::Float(*f),
            ArgValue::Bool(b) => Value::Bool(*b),
        }
    }
}

impl From<&str> for ArgValue {
    fn from(v: &str) -> Self {
        ArgValue::String(v.to_string())
    }
}
impl From<String> for ArgValue {
    fn from(v: String) -> Self {
        ArgValue::String(v)
    }
}
impl From<&String> for ArgValue {
    fn from(v: &String) -> Self {
        ArgValue::String(v.clone())
    }
}
impl From<i64> for ArgValue {
    fn from(v: i64) -> Self {
        ArgValue::Int(v)
    }
}
impl From<i32> for ArgValue {
    fn from(v: i32) -> Self {
        ArgValue::Int(i64::from(v))
    }
}
impl From<u32> for ArgValue {
    fn from(v: u32) -> Self {
        ArgValue::Int(i64::from(v))
    }
}
impl From<f64> for ArgValue {
    fn from(v: f64) -> Self {
        ArgValue::Float(v)
    }
}
impl From<bool> for ArgValue {
    fn from(v: bool) -> Self {
        ArgValue::Bool(v)
    }
}

/// Declares a pipeline argument: `Arg::int("times").default(1).help("how often")`.
#[derive(Debug, Clone)]
pub struct Arg {
    pub(crate) name: String,
    pub(crate) kind: ArgKind,
    pub(crate) default: Option<ArgValue>,
    pub(crate) help: String,
    pub(crate) required: bool,
    pub(crate) secret: bool,
}

impl Arg {
    /// Declares an argument of the given kind, optional and without default.
    pub fn new(name: impl Into<String>, kind: ArgKind) -> Arg {
        Arg {
            name: name.into(),
            kind,
            default: None,
            help: String::new(),
            required: false,
            secret: false,
        }
    }

    /// A string argument.
    pub fn string(name: impl Into<String>) -> Arg {
        Arg::new(name, ArgKind::String)
    }

    /// An integer argument.
    pub fn int(name: impl Into<String>) -> Arg {
        Arg::new(name, ArgKind::Int)
    }

    /// A float argument.
    pub fn float(name: impl Into<String>) -> Arg {
        Arg::new(name, ArgKind::Float)
    }

    /// A boolean flag; it defaults to `false` unless given another default.
    pub fn bool(name: impl Into<String>) -> Arg {
        Arg {
            default: Some(ArgValue::Bool(false)),
            ..Arg::new(name, ArgKind::Bool)
        }
    }

    /// Sets the default value; it must match the kind (an integer is accepted for a float arg).
    pub fn default(mut self, value: impl Into<ArgValue>) -> Arg {
        let value = match (self.kind, value.into()) {
            (ArgKind::Float, ArgValue::Int(i)) => ArgValue::Float(i as f64),
            (_, v) => v,
        };
        self.default = Some(value);
        self
    }

    /// Sets the help text shown by `sparkwing run --help`.
    pub fn help(mut self, text: impl Into<String>) -> Arg {
        self.help = text.into();
        self
    }

    /// Marks the argument as required: a run must give it (a default, if any, is still reported).
    pub fn required(mut self) -> Arg {
        self.required = true;
        self
    }

    /// Marks the value as secret: the engine masks it in every log line and record.
    pub fn secret(mut self) -> Arg {
        self.secret = true;
        self
    }

    /// The argument's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The argument's kind.
    pub fn kind(&self) -> ArgKind {
        self.kind
    }

    /// The declared default, if any.
    pub fn default_value(&self) -> Option<&ArgValue> {
        self.default.as_ref()
    }

    /// Checks the declaration is consistent, naming the arg on failure.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::msg("an arg has an empty name"));
        }
        if let Some(d) = &self.default {
            if d.kind() != self.kind {
                return Err(Error::msg(format!(
                    "arg `{}` is {} but its default is {}",
                    self.name,
                    self.kind.as_str(),
                    d.kind().as_str()
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn to_json(&self) -> Value {
        Value::object([
            ("name", Value::from(self.name.as_str())),
            ("kind", Value::from(self.kind.as_str())),
            (
                "default",
                self.default.as_ref().map_or(Value::Null, ArgValue::to_json),
            ),
            ("help", Value::from(self.help.as_str())),
            ("required", Value::Bool(self.required)),
            ("secret", Value::Bool(self.secret)),
        ])
    }
}

/// The resolved arguments of a run, read with typed getters that fall back to declared defaults.
#[derive(Debug, Clone, Default)]
pub struct Args {
    decls: Vec<Arg>,
    values: Vec<(String, Value)>,
}

impl Args {
    /// Parses `SPARKWING_ARGS` (a JSON object) against the pipeline's declarations.
    pub(crate) fn from_json(decls: &[Arg], text: &str) -> Result<Args> {
        let value = Value::parse(text).map_err(|e| Error::msg(format!("invalid JSON: {e}")))?;
        match value {
            Value::Object(fields) => Ok(Args {
                decls: decls.to_vec(),
                // Absent optional args may also arrive as null; treat both the same.
                values: fields
                    .into_iter()
                    .filter(|(_, v)| *v != Value::Null)
                    .collect(),
            }),
            other => Err(Error::msg(format!(
                "expected a JSON object, got {}",
                other.type_name()
            ))),
        }
    }

    /// Whether the run gave this argument explicitly (defaults do not count).
    pub fn contains(&self, name: &str) -> bool {
        self.given(name).is_some()
    }

    fn given(&self, name: &str) -> Option<&Value> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The given value, else the declared default, else `None`; an undeclared, absent name is an error.
    fn lookup(&self, name: &str) -> Result<Option<Value>> {
        if let Some(v) = self.given(name) {
            return Ok(Some(v.clone()));
        }
        match self.decls.iter().find(|a| a.name == name) {
            Some(decl) => Ok(decl.default.as_ref().map(ArgValue::to_json)),
            None => Err(Error::msg(format!(
                "unknown arg `{name}`: the pipeline does not declare it"
            ))),
        }
    }

    fn missing(&self, name: &str) -> Error {
        let required = self.decls.iter().any(|a| a.name == name && a.required);
        if required {
            Error::msg(format!("arg `{name}` is required but was not given"))
        } else {
            Error::msg(format!("arg `{name}` was not given and has no default"))
        }
    }

    fn typed<T>(
        &self,
        name: &str,
        kind: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.lookup(name)? {
            None => Ok(None),
            Some(v) => match convert(&v) {
                Some(t) => Ok(Some(t)),
                None => Err(Error::msg(format!(
                    "arg `{name}`: expected {kind}, got {}",
                    describe_value(&v)
                ))),
            },
        }
    }

    /// A string argument; errors if absent without default or of another kind.
    pub fn string(&self, name: &str) -> Result<String> {
        self.opt_string(name)?.ok_or_else(|| self.missing(name))
    }

    /// An integer argument; errors if absent without default or of another kind.
    pub fn int(&self, name: &str) -> Result<i64> {
        self.opt_int(name)?.ok_or_else(|| self.missing(name))
    }

    /// A float argument (integers are accepted); errors if absent without default or of another kind.
    pub fn float(&self, name: &str) -> Result<f64> {
        self.opt_float(name)?.ok_or_else(|| self.missing(name))
    }

    /// A boolean argument; errors if absent without default or of another kind.
    pub fn bool(&self, name: &str) -> Result<bool> {
        self.opt_bool(name)?.ok_or_else(|| self.missing(name))
    }

    /// A string argument, `None` when absent without default.
    pub fn opt_string(&self, name: &str) -> Result<Option<String>> {
        self.typed(name, "string", |v| v.as_str().map(str::to_string))
    }

    /// An integer argument, `None` when absent without default.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>> {
        self.typed(name, "int", Value::as_i64)
    }

    /// A float argument, `None` when absent without default.
    pub fn opt_float(&self, name: &str) -> Result<Option<f64>> {
        self.typed(name, "float", Value::as_f64)
    }

    /// A boolean argument, `None` when absent without default.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>> {
        self.typed(name, "bool", Value::as_bool)
    }
}

fn describe_value(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 40 => {
            format!("string {v}", v = Value::from(s.as_str()))
        }
        other => other.type_name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls() -> Vec<Arg> {
        vec![
            Arg::string("name").default("world").help("who"),
            Arg::int("times").default(1),
            Arg::float("ratio").default(2),
            Arg::bool("loud"),
            Arg::string("token").secret(),
            Arg::string("target").required(),
        ]
    }

    fn args(json: &str) -> Args {
        match Args::from_json(&decls(), json) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_apply_when_absent() {
        let a = args("{}");
        assert_eq!(a.string("name").ok(), Some("world".to_string()));
        assert_eq!(a.int("times").ok(), Some(1));
        assert_eq!(a.float("ratio").ok(), Some(2.0));
        assert_eq!(a.bool("loud").ok(), Some(false));
        assert_eq!(a.opt_string("token").ok(), Some(None));
        assert_eq!(a.opt_string("name").ok(), Some(Some("world".to_string())));
        assert!(!a.contains("name"));
    }

    #[test]
    fn given_values_win() {
        let a = args(
            r#"{"name":"bob","times":3,"ratio":4,"loud":true,"token":"s3","target":"prod","extra":1}"#,
        );
        assert_eq!(a.string("name").ok(), Some("bob".to_string()));
        assert_eq!(a.int("times").ok(), Some(3));
        assert_eq!(a.float("ratio").ok(), Some(4.0));
        assert_eq!(a.bool("loud").ok(), Some(true));
        assert_eq!(a.opt_string("token").ok(), Some(Some("s3".to_string())));
        assert_eq!(a.string("target").ok(), Some("prod".to_string()));
        assert_eq!(a.int("extra").ok(), Some(1));
        assert!(a.contains("name"));
        assert_eq!(args(r#"{"times":5.0}"#).int("times").ok(), Some(5));
        assert_eq!(
            args(r#"{"token":null}"#).opt_string("token").ok(),
            Some(None)
        );
    }

    #[test]
    fn errors_name_the_arg() {
        let a = args(r#"{"times":"three","ratio":1.5,"loud":1}"#);
        assert_eq!(
            err(a.int("times")),
            "arg `times`: expected int, got string \"three\""
        );
        assert_eq!(err(a.bool("loud")), "arg `loud`: expected bool, got int");
        assert_eq!(err(a.int("ratio")), "arg `ratio`: expected int, got float");
        assert_eq!(
            err(a.string("target")),
            "arg `target` is required but was not given"
        );
        assert_eq!(
            err(a.string("token")),
            "arg `token` was not given and has no default"
        );
        assert_eq!(
            err(a.string("nope")),
            "unknown arg `nope`: the pipeline does not declare it"
        );
        assert_eq!(
            err(a.opt_int("times")),
            "arg `times`: expected int, got string \"three\""
        );
    }

    #[test]
    fn rejects_non_object_json() {
        assert!(Args::from_json(&decls(), "[]").is_err());
        assert!(Args::from_json(&decls(), "{").is_err());
    }

    #[test]
    fn declaration_json_and_validation() {
        let d = decls();
        assert_eq!(
            d[0].to_json().to_string(),
            r#"{"name":"name","kind":"string","default":"world","help":"who","required":false,"secret":false}"#
        );
        assert_eq!(
            d[2].to_json().get("default").map(ToString::to_string),
            Some("2.0".to_string())
        );
        assert_eq!(d[3].to_json().get("default"), Some(&Value::Bool(false)));
        assert_eq!(d[4].to_json().get("default"), Some(&Value::Null));
        assert_eq!(d[4].to_json().get("secret"), Some(&Value::Bool(true)));
        assert_eq!(d[5].to_json().get("required"), Some(&Value::Bool(true)));
        assert!(d.iter().all(|a| a.validate().is_ok()));
        assert_eq!(
            Arg::int("n")
                .default("x")
                .validate()
                .map_err(|e| e.to_string()),
            Err("arg `n` is int but its default is string".to_string())
        );
        assert!(Arg::int("n").default(1.5).validate().is_err());
        assert!(Arg::string("").validate().is_err());
    }
}
