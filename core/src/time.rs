//! Unix-millisecond times: RFC 3339 on the wire and UTC text for people, through `jiff`.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The instant `ms` after the epoch, clamped to what `jiff` represents (years -9999 to 9999).
fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `ms` in UTC, formatted with a `strftime` pattern (e.g. `%Y-%m-%d %H:%M:%S`).
pub fn format_utc(ms: i64, pattern: &str) -> String {
    timestamp(ms).strftime(pattern).to_string()
}

/// `2026-11-27T12:01:02Z` (seconds precision, as Kubernetes writes times).
pub fn format_rfc3339(ms: i64) -> String {
    format_utc(ms, "%Y-%m-%dT%H:%M:%SZ")
}

/// A duration for people: `850ms`, `1.2s`, `2m03s` (negative reads as 0).
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Parse an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`) to Unix milliseconds
/// (sub-millisecond digits are dropped).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

/// A point in time, Unix milliseconds inside, RFC 3339 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub i64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(self.0))
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s)
            .map(Time)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = parse_rfc3339("2026-11-27T12:01:02Z").unwrap();
        assert_eq!(t, 1_795_780_862_000);
        assert_eq!(format_rfc3339(t), "2026-11-27T12:01:02Z");
        // Milliseconds are kept when parsing, dropped when formatting (seconds on the wire).
        assert_eq!(parse_rfc3339("2026-11-27T12:01:02.5Z"), Some(t + 500));
        assert_eq!(format_rfc3339(t + 999), "2026-11-27T12:01:02Z");
        assert_eq!(parse_rfc3339("2026-11-27T13:01:02+01:00"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-27t12:01:02z"), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(
            parse_rfc3339("2026-11-27T12:01:02"),
            None,
            "an offset is required"
        );
        assert_eq!(parse_rfc3339("2026-13-27T12:01:02Z"), None);
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(t, "%Y%m%d-%H%M%S"), "20261127-120102");
        // Out of range: clamped, never a panic.
        assert!(format_rfc3339(i64::MAX).starts_with("9999-12-3"));
        assert!(format_rfc3339(i64::MIN).contains("9999-01-0"));
    }

    #[test]
    fn serde_as_string() {
        let v = serde_json::to_value(Time(0)).unwrap();
        assert_eq!(v, "1970-01-01T00:00:00Z");
        let t: Time = serde_json::from_value(v).unwrap();
        assert_eq!(t, Time(0));
    }
}
