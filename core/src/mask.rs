//! Secret masking: every secret value is replaced by `***` in whatever is logged or stored.

use std::borrow::Cow;

/// The text that replaces a secret.
pub const MASK: &str = "***";
/// Values shorter than this are not masked: masking one or two characters would shred every log
/// line while hiding nothing worth hiding. Documented in `docs/authoring.md`.
pub const MIN_SECRET_LEN: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<String>,
}

impl Masker {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = values
            .into_iter()
            .filter(|v| v.trim().chars().count() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        Masker { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        Cow::Owned(out)
    }

    /// Mask every string inside a JSON value.
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.mask(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.mask_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let m = Masker::new(["hunter2".to_string(), "hunter2-extra".to_string()]);
        assert_eq!(m.mask("a hunter2-extra b hunter2"), "a *** b ***");
        assert!(matches!(m.mask("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn ignores_tiny_values() {
        let m = Masker::new(["a".to_string(), " ".to_string(), String::new()]);
        assert!(m.is_empty());
        assert_eq!(m.mask("banana"), "banana");
    }

    #[test]
    fn masks_json_strings() {
        let m = Masker::new(["s3cret".to_string()]);
        let v = serde_json::json!({"a": ["x s3cret"], "b": 1});
        assert_eq!(m.mask_json(&v), serde_json::json!({"a": ["x ***"], "b": 1}));
    }
}
