//! Schedules: which slot of a cron expression in a time zone fires now (pure).
//!
//! A schedule's *slots* are the instants its cron expression names in its zone's wall clock
//! (`croner`, Vixie cron's five fields and `@daily`-style nicknames; day of week 0–7, Sunday
//! being 0 and 7; day of month and day of week ORed when both are restricted). Around a daylight
//! saving change a fixed-time slot (`30 2 * * *`) that falls in the gap fires at the first minute
//! after it, and one in a repeated hour fires once, at its first pass; a slot of an interval
//! (`*/15 * * * *`) in the gap does not exist, and in a repeated hour exists on both passes.
//!
//! [`decide`] answers, from the last fired slot, when the schedule started to count and the time
//! now, the one slot to fire now (the latest that is due: a run per slot missed while nothing
//! watched would pile up), or, by the [`MissedPolicy`], to record as skipped; and the next slot.

use std::sync::OnceLock;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{Timestamp, Zoned};

/// How late a slot may be fired and still count as on time (ms): the minute it names. A slot
/// found later than this was missed (the operator was down or behind).
pub const ON_TIME_MS: i64 = 60_000;

/// Why a schedule's cron expression or time zone is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron expression {expr:?} is invalid: {reason}")]
    Cron { expr: String, reason: String },
    #[error(
        "time zone {0:?} is not in the time zone database (an IANA name like Europe/Berlin or UTC)"
    )]
    Zone(String),
}

/// What to do with a slot that was missed (found more than [`ON_TIME_MS`] after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedPolicy {
    /// Fire the latest missed slot once, late; older missed slots are not fired.
    #[default]
    FireOnce,
    /// Fire nothing; the slot is recorded as skipped.
    Skip,
}

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: TimeZone,
}

/// The time zone database schedules use: the one bundled into the binary (no file is read, and a
/// zone's rules are the same on every machine that runs this build).
fn zones() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

impl CronSchedule {
    /// Parse `expr` (five fields, or a nickname like `@daily`) in the IANA zone `zone`
    /// (`None`: UTC).
    pub fn parse(expr: &str, zone: Option<&str>) -> Result<CronSchedule, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_string(),
                reason: e.to_string(),
            })?;
        let zone = match zone.map(str::trim) {
            None => TimeZone::UTC,
            Some(name) => zones()
                .get(name)
                .map_err(|_| ScheduleError::Zone(name.to_string()))?,
        };
        // A pattern no date matches (`0 0 31 2 *`) parses; it would never fire.
        let schedule = CronSchedule { cron, zone };
        if schedule.next_after(0).is_none() {
            return Err(ScheduleError::Cron {
                expr: expr.to_string(),
                reason: "it matches no date".to_string(),
            });
        }
        Ok(schedule)
    }

    fn zoned(&self, ms: i64) -> Option<Zoned> {
        Some(
            Timestamp::from_millisecond(ms)
                .ok()?
                .to_zoned(self.zone.clone()),
        )
    }

    /// The first slot strictly after `ms` (Unix milliseconds); `None` past the supported years.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let from = self.zoned(ms)?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The latest slot at or before `ms`.
    pub fn latest_at_or_before(&self, ms: i64) -> Option<i64> {
        // Slots are whole minutes: search from the minute `ms` is in, inclusively.
        let from = self.zoned(ms.div_euclid(60_000) * 60_000)?;
        let prev = self.cron.find_previous_occurrence(&from, true).ok()?;
        Some(prev.timestamp().as_millisecond())
    }
}

/// What a schedule does at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tick {
    /// The slot to fire now (start its run), if any.
    pub fire: Option<i64>,
    /// The slot missed and skipped by [`MissedPolicy::Skip`], if any (recorded, never fired).
    pub skipped: Option<i64>,
    /// The first slot after now: when to look again.
    pub next: Option<i64>,
}

/// What `schedule` does at `now` (Unix ms), given the last slot it fired or skipped (`last`) and
/// the moment it started to count (`since`: slots at or before it never fire, so a schedule
/// added at 03:00:20 does not fire 03:00). At most one slot is due: the latest one after both.
/// Fired within [`ON_TIME_MS`] of its time it is on time; later, `missed` decides.
///
/// Asking again with the answer's slot as `last` gives no slot until the next one: with the
/// fired slot recorded, a restart fires nothing twice.
pub fn decide(
    schedule: &CronSchedule,
    missed: MissedPolicy,
    last: Option<i64>,
    since: i64,
    now: i64,
) -> Tick {
    let floor = last.map_or(since, |l| l.max(since));
    let due = schedule.latest_at_or_before(now).filter(|&s| s > floor);
    let (fire, skipped) = match due {
        Some(slot) if now - slot < ON_TIME_MS || missed == MissedPolicy::FireOnce => {
            (Some(slot), None)
        }
        Some(slot) => (None, Some(slot)),
        None => (None, None),
    };
    Tick {
        fire,
        skipped,
        next: schedule.next_after(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{format_rfc3339, parse_rfc3339};

    fn t(s: &str) -> i64 {
        parse_rfc3339(s).unwrap_or_else(|| panic!("bad fixture time {s}"))
    }

    fn at(ms: Option<i64>) -> Option<String> {
        ms.map(format_rfc3339)
    }

    fn sched(expr: &str, zone: Option<&str>) -> CronSchedule {
        CronSchedule::parse(expr, zone).unwrap()
    }

    #[test]
    fn invalid_expressions_and_zones_are_refused_with_the_reason() {
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "* 24 * * *",
            "0 0 31 2 *",
            "nightly",
        ] {
            let e = CronSchedule::parse(bad, None).unwrap_err();
            assert!(matches!(e, ScheduleError::Cron { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = CronSchedule::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(e, ScheduleError::Zone("Mars/Olympus".into()));
        for ok in ["0 3 * * *", "@daily", "*/15 9-17 * * MON-FRI", "0 0 29 2 *"] {
            assert!(
                CronSchedule::parse(ok, Some("Europe/Berlin")).is_ok(),
                "{ok}"
            );
        }
        // Zone names are IANA names, case-insensitively.
        assert!(CronSchedule::parse("0 3 * * *", Some("europe/berlin")).is_ok());
    }

    #[test]
    fn slots_are_wall_clock_minutes_of_the_zone() {
        let s = sched("0 3 * * *", Some("Europe/Berlin"));
        // Winter: 03:00 CET is 02:00Z; summer: 03:00 CEST is 01:00Z.
        assert_eq!(
            at(s.next_after(t("2026-12-03T12:00:00Z"))),
            Some("2026-12-04T02:00:00Z".into())
        );
        assert_eq!(
            at(s.next_after(t("2026-07-01T12:00:00Z"))),
            Some("2026-07-02T01:00:00Z".into())
        );
        // Exactly at a slot: the next one is the following day's; the latest is this one.
        assert_eq!(
            at(s.next_after(t("2026-12-04T02:00:00Z"))),
            Some("2026-12-05T02:00:00Z".into())
        );
        assert_eq!(
            at(s.latest_at_or_before(t("2026-12-04T02:00:00Z"))),
            Some("2026-12-04T02:00:00Z".into())
        );
        assert_eq!(
            at(s.latest_at_or_before(t("2026-12-04T02:00:59.999Z"))),
            Some("2026-12-04T02:00:00Z".into())
        );
        assert_eq!(
            at(s.latest_at_or_before(t("2026-12-04T01:59:59.999Z"))),
            Some("2026-12-03T02:00:00Z".into())
        );
        // Unset zone: UTC.
        let u = sched("0 3 * * *", None);
        assert_eq!(
            at(u.next_after(t("2026-12-03T12:00:00Z"))),
            Some("2026-12-04T03:00:00Z".into())
        );
    }

    #[test]
    fn minute_boundaries() {
        let s = sched("* * * * *", None);
        let fired = decide(
            &s,
            MissedPolicy::FireOnce,
            None,
            0,
            t("2026-12-03T10:00:00Z"),
        );
        assert_eq!(at(fired.fire), Some("2026-12-03T10:00:00Z".into()));
        assert_eq!(at(fired.next), Some("2026-12-03T10:01:00Z".into()));
        // One millisecond before the next minute: nothing new.
        let later = decide(
            &s,
            MissedPolicy::FireOnce,
            fired.fire,
            0,
            t("2026-12-03T10:00:59.999Z"),
        );
        assert_eq!(later.fire, None);
        assert_eq!(at(later.next), Some("2026-12-03T10:01:00Z".into()));
        // At the next minute: that slot.
        let next = decide(
            &s,
            MissedPolicy::Skip,
            fired.fire,
            0,
            t("2026-12-03T10:01:00Z"),
        );
        assert_eq!(at(next.fire), Some("2026-12-03T10:01:00Z".into()));
    }

    #[test]
    fn restart_right_after_firing_fires_nothing_again() {
        let s = sched("0 3 * * *", Some("Europe/Berlin"));
        let since = t("2026-11-01T00:00:00Z");
        let now = t("2026-12-04T02:00:00.400Z");
        let first = decide(&s, MissedPolicy::FireOnce, None, since, now);
        assert_eq!(at(first.fire), Some("2026-12-04T02:00:00Z".into()));
        // The operator restarts and asks again with the recorded slot, a second later.
        for policy in [MissedPolicy::FireOnce, MissedPolicy::Skip] {
            let again = decide(&s, policy, first.fire, since, now + 1_000);
            assert_eq!(
                again,
                Tick {
                    fire: None,
                    skipped: None,
                    next: Some(t("2026-12-05T02:00:00Z"))
                }
            );
        }
    }

    #[test]
    fn a_schedule_never_fires_slots_before_it_existed() {
        let s = sched("* * * * *", None);
        // Created at 10:00:20: 10:00 is not its slot; 10:01 is.
        let since = t("2026-12-03T10:00:20Z");
        let d = decide(&s, MissedPolicy::FireOnce, None, since, since + 5_000);
        assert_eq!(d.fire, None);
        assert_eq!(at(d.next), Some("2026-12-03T10:01:00Z".into()));
        let d = decide(
            &s,
            MissedPolicy::FireOnce,
            None,
            since,
            t("2026-12-03T10:01:00.2Z"),
        );
        assert_eq!(at(d.fire), Some("2026-12-03T10:01:00Z".into()));
        // Created exactly at a slot (whole seconds, as Kubernetes records creation): not fired.
        let since = t("2026-12-03T10:02:00Z");
        assert_eq!(
            decide(&s, MissedPolicy::FireOnce, None, since, since + 300).fire,
            None
        );
    }

    #[test]
    fn downtime_over_many_slots_fires_the_latest_once_or_skips_it() {
        let s = sched("*/5 * * * *", None);
        let last = Some(t("2026-12-03T08:00:00Z"));
        // Down from 08:02 to 11:03:30: 36 slots missed; only 11:00 fires, late.
        let now = t("2026-12-03T11:03:30Z");
        let d = decide(&s, MissedPolicy::FireOnce, last, 0, now);
        assert_eq!(
            (at(d.fire), d.skipped, at(d.next)),
            (
                Some("2026-12-03T11:00:00Z".into()),
                None,
                Some("2026-12-03T11:05:00Z".into())
            )
        );
        // Skip: recorded as skipped, nothing fired.
        let d = decide(&s, MissedPolicy::Skip, last, 0, now);
        assert_eq!(
            (d.fire, at(d.skipped)),
            (None, Some("2026-12-03T11:00:00Z".into()))
        );
        // Then recorded as the last slot, nothing more until 11:05.
        let d2 = decide(&s, MissedPolicy::Skip, d.skipped, 0, now + 10_000);
        assert_eq!((d2.fire, d2.skipped), (None, None));
        // Back within the slot's minute: on time, fired even with Skip.
        let d = decide(&s, MissedPolicy::Skip, last, 0, t("2026-12-03T11:00:59Z"));
        assert_eq!(at(d.fire), Some("2026-12-03T11:00:00Z".into()));
        // A year of downtime of a yearly schedule is found without walking every slot.
        let y = sched("0 0 1 1 *", Some("Asia/Tokyo"));
        let d = decide(
            &y,
            MissedPolicy::FireOnce,
            Some(t("2024-12-31T15:00:00Z")),
            0,
            t("2026-12-03T00:00:00Z"),
        );
        assert_eq!(at(d.fire), Some("2025-12-31T15:00:00Z".into()));
        assert_eq!(at(d.next), Some("2026-12-31T15:00:00Z".into()));
    }

    #[test]
    fn dst_gap_fires_a_fixed_slot_after_the_gap_and_skips_interval_slots_in_it() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
        let fixed = sched("30 2 * * *", Some("Europe/Berlin"));
        assert_eq!(
            at(fixed.next_after(t("2026-03-28T12:00:00Z"))),
            Some("2026-03-29T01:00:00Z".into()),
            "02:30 does not exist that day: it fires at 03:00 CEST"
        );
        assert_eq!(
            at(fixed.next_after(t("2026-03-29T01:00:00Z"))),
            Some("2026-03-30T00:30:00Z".into())
        );
        let d = decide(
            &fixed,
            MissedPolicy::FireOnce,
            Some(t("2026-03-28T01:30:00Z")),
            0,
            t("2026-03-29T01:00:10Z"),
        );
        assert_eq!(at(d.fire), Some("2026-03-29T01:00:00Z".into()));
        // Every 15 minutes: 01:45 CET is followed by 03:00 CEST; no 02:xx slots.
        let every = sched("*/15 * * * *", Some("Europe/Berlin"));
        assert_eq!(
            at(every.next_after(t("2026-03-29T00:45:00Z"))),
            Some("2026-03-29T01:00:00Z".into())
        );
    }

    #[test]
    fn dst_overlap_fires_a_fixed_slot_once_and_interval_slots_on_both_passes() {
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:xx happens twice
        // (00:xxZ then 01:xxZ).
        let fixed = sched("30 2 * * *", Some("Europe/Berlin"));
        assert_eq!(
            at(fixed.next_after(t("2026-10-24T12:00:00Z"))),
            Some("2026-10-25T00:30:00Z".into())
        );
        assert_eq!(
            at(fixed.next_after(t("2026-10-25T00:30:00Z"))),
            Some("2026-10-26T01:30:00Z".into()),
            "the second 02:30 is not a slot"
        );
        let d = decide(
            &fixed,
            MissedPolicy::FireOnce,
            Some(t("2026-10-25T00:30:00Z")),
            0,
            t("2026-10-25T01:30:30Z"),
        );
        assert_eq!(d.fire, None, "{:?}", at(d.fire));
        let every = sched("30 * * * *", Some("Europe/Berlin"));
        let first = every.next_after(t("2026-10-25T00:00:00Z"));
        assert_eq!(at(first), Some("2026-10-25T00:30:00Z".into()));
        assert_eq!(
            at(every.next_after(first.unwrap())),
            Some("2026-10-25T01:30:00Z".into())
        );
        let d = decide(
            &every,
            MissedPolicy::Skip,
            first,
            0,
            t("2026-10-25T01:30:05Z"),
        );
        assert_eq!(at(d.fire), Some("2026-10-25T01:30:00Z".into()));
    }
}
