//! Durations as the custom resources spell them: `90s`, `30m`, `1h`, `1h30m`, `2h0m15s`.
//!
//! Units are hours, minutes and seconds, each at most once and in that order, each a run of
//! decimal digits followed by its letter. The schema checks the same shape with
//! [`DURATION_PATTERN`], so the apiserver rejects what [`parse_duration`] would reject (except
//! values too large to count in milliseconds, which only the parser catches).

use thiserror::Error;

/// The regular expression the schema puts on every duration field. Kept equal to what
/// [`parse_duration`] accepts (a test checks both on the same cases).
pub const DURATION_PATTERN: &str = r"^([0-9]+h([0-9]+m)?([0-9]+s)?|[0-9]+m([0-9]+s)?|[0-9]+s)$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("empty duration; write it like 90s, 30m, 1h or 1h30m")]
    Empty,
    #[error("invalid duration {0:?}; write it like 90s, 30m, 1h or 1h30m")]
    Invalid(String),
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

/// Parse a duration into milliseconds.
///
/// ```
/// use sparkwing_crds::duration::parse_duration;
/// assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
/// assert!(parse_duration("30").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<u64, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(s.to_string());
    let too_large = || DurationError::TooLarge(s.to_string());
    // Units allowed from here on, largest first; each one used consumes itself and the larger ones.
    const UNITS: [(u8, u64); 3] = [(b'h', 3_600_000), (b'm', 60_000), (b's', 1_000)];
    let mut next_unit = 0;
    let mut total: u64 = 0;
    let mut digits: Option<u64> = None;
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => {
                let d = u64::from(b - b'0');
                let n = digits.unwrap_or(0);
                digits = Some(
                    n.checked_mul(10)
                        .and_then(|n| n.checked_add(d))
                        .ok_or_else(too_large)?,
                );
            }
            _ => {
                let n = digits.take().ok_or_else(invalid)?;
                let pos = UNITS[next_unit..]
                    .iter()
                    .position(|(u, _)| *u == b)
                    .ok_or_else(invalid)?;
                let (_, ms) = UNITS[next_unit + pos];
                next_unit += pos + 1;
                total = n
                    .checked_mul(ms)
                    .and_then(|v| total.checked_add(v))
                    .ok_or_else(too_large)?;
            }
        }
    }
    if digits.is_some() {
        // Trailing digits without a unit: "30" is ambiguous, so refuse it.
        return Err(invalid());
    }
    Ok(total)
}

/// Format milliseconds the way [`parse_duration`] reads them (whole seconds; `0s` for zero).
pub fn format_duration(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings the parser (and the schema pattern) must accept, with their value in ms.
    const VALID: &[(&str, u64)] = &[
        ("90s", 90_000),
        ("30m", 1_800_000),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        ("1h30s", 3_630_000),
        ("2h0m15s", 7_215_000),
        ("5m30s", 330_000),
        ("0s", 0),
        ("120m", 7_200_000),
        ("007s", 7_000),
    ];

    /// Strings both must refuse.
    const INVALID: &[&str] = &[
        "", "30", "m", "1d", "30M", "1m1h", "1s1m", "1h1h", "1.5h", "-1s", " 1s", "1s ", "1 h",
        "h1", "1hm",
    ];

    #[test]
    fn parses_valid_durations() {
        for (s, ms) in VALID {
            assert_eq!(parse_duration(s), Ok(*ms), "{s}");
        }
    }

    #[test]
    fn refuses_invalid_durations() {
        for s in INVALID {
            assert!(parse_duration(s).is_err(), "{s:?} should be refused");
        }
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("30").unwrap_err().to_string(),
            "invalid duration \"30\"; write it like 90s, 30m, 1h or 1h30m"
        );
    }

    /// The schema pattern and the parser agree on every case.
    #[test]
    fn schema_pattern_matches_parser() {
        let schema = serde_json::json!({"type": "string", "pattern": DURATION_PATTERN});
        let v = jsonschema::validator_for(&schema).unwrap();
        for (s, _) in VALID {
            assert!(v.is_valid(&serde_json::json!(s)), "pattern refuses {s:?}");
        }
        for s in INVALID {
            assert!(!v.is_valid(&serde_json::json!(s)), "pattern accepts {s:?}");
        }
    }

    #[test]
    fn refuses_overflow() {
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::TooLarge(_))
        ));
        assert!(matches!(
            parse_duration("9999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_round_trip() {
        for ms in [
            0, 1_000, 90_000, 3_600_000, 5_400_000, 7_215_000, 86_400_000,
        ] {
            assert_eq!(parse_duration(&format_duration(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(0), "0s");
    }
}
