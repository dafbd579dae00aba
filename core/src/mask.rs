//! Secret masking: every secret value is replaced by `***` in whatever is logged or stored.
//!
//! A job's output reaches the engine one line at a time, so a multi-line secret (a PEM key) never
//! appears whole in a log line: each of its lines is masked on its own as well as the whole value
//! (which outputs and errors can hold across line boundaries).

use std::borrow::Cow;

/// The text that replaces a secret.
pub const MASK: &str = "***";
/// Values (and lines of multi-line values) shorter than this, in characters once surrounding
/// whitespace is trimmed, are not masked: short values occur in ordinary text (`the` would turn
/// `the other weather` into `*** o***r wea***r`) while masking them hides next to nothing. A run
/// warns about each one (`secret_not_masked`). Documented in `docs/authoring.md`.
pub const MIN_SECRET_LEN: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// The texts to hide: each secret whole and each of its lines, trimmed; longest first.
    pieces: Vec<String>,
}

/// A secret, or a line of a multi-line secret, too short to be masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmasked {
    /// What the secret is called: an environment variable (`DEPLOY_TOKEN`) or an arg (`--token`).
    pub name: String,
    /// For a multi-line secret, which of its lines (1-based); `None` for the value as a whole.
    pub line: Option<usize>,
    /// Its length in characters (trimmed).
    pub chars: usize,
}

impl std::fmt::Display for Unmasked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.line {
            None => format!("secret {}", self.name),
            Some(n) => format!("line {n} of secret {}", self.name),
        };
        write!(
            f,
            "{what} has {} characters, fewer than the {MIN_SECRET_LEN} sparkwing masks, so it is not masked in logs and records; use a longer value",
            self.chars
        )
    }
}

/// The texts the masker hides for one secret value: the value and, when it has several lines,
/// each line; trimmed (a value read from a file often ends in a newline that no log line has).
fn pieces(value: &str) -> impl Iterator<Item = &str> {
    let lines = value.lines();
    let multi = value.trim().contains('\n');
    std::iter::once(value.trim())
        .chain(lines.filter(move |_| multi).map(str::trim))
        .filter(|p| p.chars().count() >= MIN_SECRET_LEN)
}

/// Which of the named secret values are (partly) too short to be masked: the value as a whole,
/// or a non-blank line of a multi-line value. Blank values and lines hide nothing and are not
/// reported.
pub fn unmasked<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Unmasked> {
    let mut out = Vec::new();
    for (name, value) in secrets {
        let whole = value.trim();
        let chars = whole.chars().count();
        if whole.contains('\n') {
            for (i, line) in value.lines().enumerate() {
                let n = line.trim().chars().count();
                if n > 0 && n < MIN_SECRET_LEN {
                    out.push(Unmasked {
                        name: name.to_string(),
                        line: Some(i + 1),
                        chars: n,
                    });
                }
            }
        } else if chars > 0 && chars < MIN_SECRET_LEN {
            out.push(Unmasked {
                name: name.to_string(),
                line: None,
                chars,
            });
        }
    }
    out
}

impl Masker {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut pieces: Vec<String> = Vec::new();
        for v in values {
            pieces.extend(self::pieces(&v).map(str::to_string));
        }
        pieces.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        pieces.dedup();
        Masker { pieces }
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// `text` with every occurrence of every piece replaced by [`MASK`]. Occurrences that overlap
    /// or touch are masked as one, so one secret's masking never leaves part of another in clear.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for p in &self.pieces {
            let mut from = 0;
            while let Some(at) = text[from..].find(p.as_str()) {
                let start = from + at;
                spans.push((start, start + p.len()));
                // Overlapping occurrences too: continue one character after this one's start.
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        let mut iter = spans.into_iter().peekable();
        while let Some((start, mut end)) = iter.next() {
            while let Some(&(s, e)) = iter.peek() {
                if s > end {
                    break;
                }
                end = end.max(e);
                iter.next();
            }
            out.push_str(&text[done..start]);
            out.push_str(MASK);
            done = end;
        }
        out.push_str(&text[done..]);
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

    const KEY: &str = "-----BEGIN KEY-----\nline1-aaaaaaaa\nline2-bbbbbbbb\n-----END KEY-----\n";

    #[test]
    fn masks_every_occurrence_longest_first() {
        let m = Masker::new(["hunter22".to_string(), "hunter22-extra".to_string()]);
        assert_eq!(m.mask("a hunter22-extra b hunter22"), "a *** b ***");
        assert!(matches!(m.mask("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn overlapping_secrets_are_masked_as_one() {
        let m = Masker::new(["abcdefgh12".to_string(), "12345678xy".to_string()]);
        assert_eq!(m.mask("[abcdefgh12345678xy]"), "[***]");
        let m = Masker::new(["aaaaaaaa".to_string()]);
        assert_eq!(m.mask("aaaaaaaaa b"), "*** b");
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked_in_log_lines() {
        let m = Masker::new([KEY.to_string()]);
        // The engine masks a job's output line by line: no line of the key may survive.
        let logged: Vec<String> = KEY.lines().map(|l| m.mask(l).into_owned()).collect();
        assert_eq!(logged, ["***", "***", "***", "***"]);
        assert_eq!(m.mask("key: line2-bbbbbbbb (2)"), "key: *** (2)");
    }

    #[test]
    fn a_multi_line_secret_is_masked_across_line_boundaries() {
        let m = Masker::new([KEY.to_string()]);
        // Whole, as an output or an error holds it.
        assert_eq!(
            m.mask(&format!("error: bad key {KEY}.")),
            "error: bad key ***\n."
        );
        // With other line endings or indentation, line by line.
        let crlf = KEY.replace('\n', "\r\n");
        let masked = m.mask(&crlf);
        assert!(
            !masked.contains("line1") && !masked.contains("line2"),
            "{masked}"
        );
        let indented = KEY.replace('\n', "\n    ");
        let masked = m.mask(&indented);
        assert!(
            !masked.contains("line1") && !masked.contains("line2"),
            "{masked}"
        );
        let json = serde_json::json!({"key": KEY});
        assert_eq!(m.mask_json(&json), serde_json::json!({"key": "***\n"}));
    }

    #[test]
    fn a_trailing_newline_does_not_stop_masking() {
        let m = Masker::new(["s3cret-token\n".to_string()]);
        assert_eq!(m.mask("token=s3cret-token"), "token=***");
    }

    #[test]
    fn short_values_are_not_masked_and_are_reported() {
        let m = Masker::new(["e".to_string(), "the".to_string(), " ".to_string()]);
        assert!(m.is_empty());
        assert_eq!(m.mask("the other weather"), "the other weather");
        let short = unmasked([
            ("TOKEN", "the"),
            ("--pw", "long-enough"),
            ("E", " e\n"),
            ("EMPTY", ""),
        ]);
        assert_eq!(
            short,
            [
                Unmasked {
                    name: "TOKEN".into(),
                    line: None,
                    chars: 3
                },
                Unmasked {
                    name: "E".into(),
                    line: None,
                    chars: 1
                }
            ]
        );
        assert_eq!(
            short[0].to_string(),
            "secret TOKEN has 3 characters, fewer than the 4 sparkwing masks, so it is not masked in logs and records; use a longer value"
        );
        // Exactly the minimum is masked.
        let m = Masker::new(["1234".to_string()]);
        assert_eq!(m.mask("a1234b"), "a***b");
        assert!(unmasked([("X", "1234")]).is_empty());
    }

    #[test]
    fn short_lines_of_a_multi_line_secret_are_reported_not_masked_alone() {
        let value = "first-line-long\nab\n\nthird-line-long";
        let m = Masker::new([value.to_string()]);
        assert_eq!(m.mask("ab"), "ab");
        assert_eq!(m.mask(value), "***");
        assert_eq!(m.mask("first-line-long"), "***");
        assert_eq!(
            unmasked([("KEY", value)]),
            [Unmasked {
                name: "KEY".into(),
                line: Some(2),
                chars: 2
            }]
        );
        assert_eq!(
            unmasked([("KEY", value)])[0].to_string(),
            "line 2 of secret KEY has 2 characters, fewer than the 4 sparkwing masks, so it is not masked in logs and records; use a longer value"
        );
    }

    #[test]
    fn masks_json_strings() {
        let m = Masker::new(["s3cret-value".to_string()]);
        let v = serde_json::json!({"a": ["x s3cret-value"], "b": 1});
        assert_eq!(m.mask_json(&v), serde_json::json!({"a": ["x ***"], "b": 1}));
    }
}
