//! Dependency caches and artifacts a job declares in the plan (`docs/authoring.md#caches`,
//! `#artifacts`). The engine restores, saves, publishes and hands them over; the job body only
//! finds the files in place.

use crate::json::Value;

/// What keys a cache: the content of files (e.g. `Cargo.lock`) and free strings, plus the
/// prefix a miss falls back to.
///
/// ```
/// # use sparkwing::prelude::*;
/// let key = CacheKey::files(["Cargo.lock"]).text("rust-1.83");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheKey {
    files: Vec<String>,
    texts: Vec<String>,
    fallback: Option<String>,
}

impl CacheKey {
    /// A key from these files' content (relative to the job's working directory); a missing
    /// file keys as missing.
    pub fn files<I, S>(files: I) -> CacheKey
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CacheKey {
            files: files.into_iter().map(Into::into).collect(),
            ..CacheKey::default()
        }
    }

    /// A key from a free string only (e.g. a version).
    pub fn text(mut self, text: impl Into<String>) -> CacheKey {
        self.texts.push(text.into());
        self
    }

    /// On a miss, restore the newest entry whose key starts with `prefix` (default: the key
    /// without its hash, `NAME-TEXT…-`; an empty prefix turns fallback off).
    pub fn fallback(mut self, prefix: impl Into<String>) -> CacheKey {
        self.fallback = Some(prefix.into());
        self
    }
}

impl From<&str> for CacheKey {
    fn from(text: &str) -> CacheKey {
        CacheKey::default().text(text)
    }
}

/// A job's caches and artifacts, as its builder collects them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Storage {
    pub(crate) caches: Vec<(String, Vec<String>, CacheKey)>,
    pub(crate) publishes: Vec<(String, String)>,
    pub(crate) consumes: Vec<(String, String)>,
    pub(crate) memo: Option<crate::memo::Memo>,
}

impl Storage {
    /// The plan fields (`caches`, `publishes`, `consumes`), each only when not empty so other
    /// plans read exactly as before.
    pub(crate) fn json_fields(&self) -> Vec<(&'static str, Value)> {
        let strings =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        let mut out = Vec::new();
        if !self.caches.is_empty() {
            let caches = self
                .caches
                .iter()
                .map(|(name, paths, key)| {
                    Value::object([
                        ("name", Value::from(name.as_str())),
                        ("paths", strings(paths)),
                        ("key_files", strings(&key.files)),
                        ("key_texts", strings(&key.texts)),
                        ("fallback", Value::from(key.fallback.as_deref())),
                    ])
                })
                .collect();
            out.push(("caches", Value::Array(caches)));
        }
        let pairs = |items: &[(String, String)], a: &'static str, b: &'static str| {
            Value::Array(
                items
                    .iter()
                    .map(|(x, y)| {
                        Value::object([(a, Value::from(x.as_str())), (b, Value::from(y.as_str()))])
                    })
                    .collect(),
            )
        };
        if !self.publishes.is_empty() {
            out.push(("publishes", pairs(&self.publishes, "name", "path")));
        }
        if !self.consumes.is_empty() {
            out.push(("consumes", pairs(&self.consumes, "job", "name")));
        }
        if let Some(m) = &self.memo {
            out.push(("memo", m.to_json()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{Pipeline, Plan};
    use crate::{Args, CacheKey};

    #[test]
    fn caches_and_artifacts_in_the_plan() {
        let p = Pipeline::new("P", |p: &mut Plan, _: &Args| {
            p.job("build", |_| Ok(()))
                .cache(
                    "cargo",
                    ["target"],
                    CacheKey::files(["Cargo.lock"])
                        .text("v1")
                        .fallback("cargo-"),
                )
                .publish("app", "dist/app");
            p.job("deploy", |_| Ok(()))
                .needs(["build"])
                .consume("build", "app");
            p.job("plain", |_| Ok(()));
            Ok(())
        });
        let plan = match p.build(&Args::default()) {
            Ok(plan) => plan.to_json().to_string(),
            Err(e) => panic!("{e}"),
        };
        assert!(
            plan.contains(
                r#""caches":[{"name":"cargo","paths":["target"],"key_files":["Cargo.lock"],"key_texts":["v1"],"fallback":"cargo-"}],"publishes":[{"name":"app","path":"dist/app"}]"#
            ),
            "{plan}"
        );
        assert!(
            plan.contains(r#""consumes":[{"job":"build","name":"app"}]"#),
            "{plan}"
        );
        // A job without any reads as before.
        assert!(plan.ends_with(r#""workdir":null,"skip":null}]}"#), "{plan}");
    }
}
