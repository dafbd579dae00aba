//! A Pipeline's schedules (`spec.triggers.schedule`), the pure half: which runs to create now and
//! the `status.schedules` to record, from the Pipeline (its spec, its status) and the time.
//! `core::schedule::decide` picks each schedule's slot; this names its run and keeps its status.
//!
//! Exactly once per slot: a slot's run has a name derived from the Pipeline, the branch and the
//! slot ([`scheduled_run_name`]), so creating it again (after a restart that lost the status
//! write, or by a second replica) is refused as already existing; the fired slot is then recorded
//! in `status.schedules[].lastScheduledSlot`, and later decisions start after it.

use std::collections::BTreeMap;

use kube::ResourceExt;
use sha2::{Digest, Sha256};
use sparkwing_core::schedule::{decide, Tick};
use sparkwing_core::time::{format_rfc3339, Time};
use sparkwing_crds::pipeline::{Pipeline, ScheduleStatus};
use sparkwing_crds::pipeline_run::{GitSource, PipelineRun, Source, TriggerVia, TriggeredBy};

use crate::runs::from_pipeline::pipeline_run;

/// Annotation on a scheduled run: the slot it was started for (RFC 3339, UTC).
pub const SCHEDULED_SLOT_ANNOTATION: &str = "sparkwing.dev/scheduled-slot";
/// Annotation on a scheduled run: the schedule's cron expression (and zone, after a space).
pub const SCHEDULE_ANNOTATION: &str = "sparkwing.dev/schedule";
/// The `triggeredBy.principal` of scheduled runs.
pub const SCHEDULE_PRINCIPAL: &str = "schedule";

/// What the Pipeline's schedules do now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchedulePlan {
    /// Runs to create, one per schedule whose slot fires now.
    pub runs: Vec<PipelineRun>,
    /// `status.schedules` once those runs exist.
    pub statuses: Vec<ScheduleStatus>,
    /// The earliest next slot of all schedules (`status.nextScheduleTime`; when to look again).
    pub next: Option<i64>,
}

/// The name of the run of `branch`'s schedule slot `slot_ms` of the Pipeline `ns/name`:
/// `<pipeline>-<8 hex>`, the hex a hash of all four, so the same slot always names the same run.
/// Two schedules of one branch that share a slot start one run.
pub fn scheduled_run_name(ns: &str, name: &str, branch: &str, slot_ms: i64) -> String {
    let h = Sha256::digest(format!("schedule\n{ns}\n{name}\n{branch}\n{slot_ms}"));
    format!(
        "{}-{}",
        crate::runs::backend::run_name_slug(name),
        hex::encode(&h[..4])
    )
}

/// The schedules' plan for `pipeline` at `now` (Unix ms; pure). A Pipeline whose spec has
/// problems, or that is being deleted, fires nothing (its statuses are kept, without a next
/// slot). A schedule counts from its `since`: the Pipeline's creation for a schedule it was
/// created with (generation 1), else the first time the operator saw it.
pub fn plan(pipeline: &Pipeline, now: i64) -> SchedulePlan {
    let previous = pipeline
        .status
        .as_ref()
        .map(|s| s.schedules.as_slice())
        .unwrap_or_default();
    let schedules = &pipeline.spec.triggers.schedule;
    let usable =
        pipeline.spec.problems().is_empty() && pipeline.metadata.deletion_timestamp.is_none();
    let created = pipeline
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond());
    let since_new = match (pipeline.metadata.generation, created) {
        (Some(1) | None, Some(c)) => c,
        _ => now,
    };
    let ns = pipeline.namespace().unwrap_or_default();
    let name = pipeline.name_any();
    let mut out = SchedulePlan::default();
    for s in schedules {
        let mut status = previous
            .iter()
            .find(|p| s.owns(p))
            .cloned()
            .unwrap_or_else(|| ScheduleStatus {
                cron: s.cron.clone(),
                time_zone: s.time_zone.clone(),
                branch: s.branch.clone(),
                since: Time(since_new),
                ..ScheduleStatus::default()
            });
        let parsed = match s.parsed() {
            Ok(p) if usable => p,
            _ => {
                status.next_schedule_time = None;
                out.statuses.push(status);
                continue;
            }
        };
        let last = [status.last_scheduled_slot, status.last_skipped_slot]
            .into_iter()
            .flatten()
            .map(|t| t.0)
            .max();
        let Tick {
            fire,
            skipped,
            next,
        } = decide(&parsed, s.missed.into(), last, status.since.0, now);
        if let Some(slot) = fire {
            let run_name = scheduled_run_name(&ns, &name, &s.branch, slot);
            let mut run = pipeline_run(
                pipeline,
                run_name.clone(),
                &s.branch,
                Source::Git(GitSource {
                    url: pipeline.spec.repository.clone(),
                    revision: s.branch.clone(),
                }),
                TriggeredBy {
                    principal: SCHEDULE_PRINCIPAL.to_string(),
                    host: None,
                    via: TriggerVia::Schedule,
                    delivery_id: None,
                    pull_request: None,
                },
            );
            let annotations: &mut BTreeMap<String, String> = run.annotations_mut();
            annotations.insert(SCHEDULED_SLOT_ANNOTATION.into(), format_rfc3339(slot));
            annotations.insert(
                SCHEDULE_ANNOTATION.into(),
                match &s.time_zone {
                    Some(z) => format!("{} {z}", s.cron),
                    None => s.cron.clone(),
                },
            );
            out.runs.push(run);
            status.last_scheduled_slot = Some(Time(slot));
            status.last_scheduled_run = Some(run_name);
        }
        if let Some(slot) = skipped {
            status.last_skipped_slot = Some(Time(slot));
        }
        status.next_schedule_time = next.map(Time);
        out.next = match (out.next, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        out.statuses.push(status);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KubeTime;
    use sparkwing_core::time::parse_rfc3339;
    use sparkwing_crds::pipeline::{
        MissedSlots, PipelineSpec, PipelineStatus, PipelineTriggers, ScheduleTrigger,
    };

    fn t(s: &str) -> i64 {
        parse_rfc3339(s).unwrap()
    }

    fn nightly(missed: MissedSlots) -> ScheduleTrigger {
        ScheduleTrigger {
            cron: "0 3 * * *".into(),
            time_zone: Some("Europe/Berlin".into()),
            branch: "main".into(),
            missed,
        }
    }

    fn pipeline(created: &str, schedules: Vec<ScheduleTrigger>) -> Pipeline {
        let mut p = Pipeline::new(
            "app",
            PipelineSpec {
                repository: "https://example.com/acme/app.git".into(),
                pipeline: "build".into(),
                path: Some("ci".into()),
                triggers: PipelineTriggers {
                    schedule: schedules,
                    ..PipelineTriggers::default()
                },
                secrets: vec!["deploy-key".into()],
                ..PipelineSpec::default()
            },
        );
        p.metadata.namespace = Some("team".into());
        p.metadata.generation = Some(1);
        p.metadata.creation_timestamp = Some(KubeTime(
            k8s_openapi::jiff::Timestamp::from_millisecond(t(created)).unwrap(),
        ));
        p
    }

    fn with_status(mut p: Pipeline, statuses: Vec<ScheduleStatus>) -> Pipeline {
        p.status = Some(PipelineStatus {
            schedules: statuses,
            ..PipelineStatus::default()
        });
        p
    }

    #[test]
    fn a_due_slot_creates_its_run_and_records_the_slot() {
        let p = pipeline("2026-12-01T10:00:00Z", vec![nightly(MissedSlots::FireOnce)]);
        // Before the first slot: nothing, the next slot in status.
        let early = plan(&p, t("2026-12-01T12:00:00Z"));
        assert!(early.runs.is_empty());
        assert_eq!(early.next, Some(t("2026-12-02T02:00:00Z")));
        assert_eq!(
            early.statuses[0].since,
            Time(t("2026-12-01T10:00:00Z")),
            "a schedule the Pipeline was created with counts from its creation"
        );
        // At 03:00 Berlin (02:00Z), half a second late.
        let p = with_status(p, early.statuses);
        let now = t("2026-12-02T02:00:00.5Z");
        let due = plan(&p, now);
        assert_eq!(due.runs.len(), 1);
        let run = &due.runs[0];
        let name = scheduled_run_name("team", "app", "main", t("2026-12-02T02:00:00Z"));
        assert_eq!(run.name_any(), name);
        assert_eq!(run.namespace().as_deref(), Some("team"));
        assert_eq!(
            run.spec.source,
            Source::Git(GitSource {
                url: "https://example.com/acme/app.git".into(),
                revision: "main".into()
            })
        );
        let by = run.spec.triggered_by.clone().unwrap();
        assert_eq!(
            (by.principal.as_str(), by.via),
            ("schedule", TriggerVia::Schedule)
        );
        assert_eq!(run.spec.secrets, vec!["deploy-key".to_string()]);
        let a = run.annotations();
        assert_eq!(a[SCHEDULED_SLOT_ANNOTATION], "2026-12-02T02:00:00Z");
        assert_eq!(a[SCHEDULE_ANNOTATION], "0 3 * * * Europe/Berlin");
        assert_eq!(a[crate::labels::PATH_ANNOTATION], "ci");
        assert_eq!(a[crate::labels::BRANCH_ANNOTATION], "main");
        assert!(!a.contains_key(sparkwing_crds::pipeline::PUSH_BRANCHES_ANNOTATION));
        let st = &due.statuses[0];
        assert_eq!(
            st.last_scheduled_slot,
            Some(Time(t("2026-12-02T02:00:00Z")))
        );
        assert_eq!(st.last_scheduled_run.as_deref(), Some(name.as_str()));
        assert_eq!(st.next_schedule_time, Some(Time(t("2026-12-03T02:00:00Z"))));
        // With the slot recorded (a restart, a second replica): nothing again.
        let p = with_status(p, due.statuses.clone());
        let again = plan(&p, now + 2_000);
        assert!(again.runs.is_empty());
        assert_eq!(again.statuses, due.statuses);
        // The status write lost (restart before it): the same run, by name, which the API
        // refuses as existing.
        let lost = plan(&with_status(p, Vec::new()), now + 2_000);
        assert_eq!(lost.runs[0].name_any(), name);
    }

    #[test]
    fn an_added_schedule_counts_from_when_it_was_seen() {
        let mut p = pipeline("2026-01-01T00:00:00Z", vec![nightly(MissedSlots::FireOnce)]);
        p.metadata.generation = Some(4);
        let now = t("2026-12-02T02:30:00Z");
        let d = plan(&p, now);
        assert!(
            d.runs.is_empty(),
            "03:00 came before the schedule was added"
        );
        assert_eq!(d.statuses[0].since, Time(now));
    }

    #[test]
    fn missed_slots_fire_once_or_are_skipped_by_policy() {
        let seen = |missed| {
            with_status(
                pipeline("2026-11-01T00:00:00Z", vec![nightly(missed)]),
                vec![ScheduleStatus {
                    cron: "0 3 * * *".into(),
                    time_zone: Some("Europe/Berlin".into()),
                    branch: "main".into(),
                    since: Time(t("2026-11-01T00:00:00Z")),
                    last_scheduled_slot: Some(Time(t("2026-11-28T02:00:00Z"))),
                    ..ScheduleStatus::default()
                }],
            )
        };
        // Down four days: the latest slot fires once.
        let now = t("2026-12-02T09:00:00Z");
        let d = plan(&seen(MissedSlots::FireOnce), now);
        assert_eq!(d.runs.len(), 1);
        assert_eq!(
            d.runs[0].annotations()[SCHEDULED_SLOT_ANNOTATION],
            "2026-12-02T02:00:00Z"
        );
        let d = plan(&seen(MissedSlots::Skip), now);
        assert!(d.runs.is_empty());
        assert_eq!(
            d.statuses[0].last_skipped_slot,
            Some(Time(t("2026-12-02T02:00:00Z")))
        );
        assert_eq!(
            d.statuses[0].last_scheduled_slot,
            Some(Time(t("2026-11-28T02:00:00Z")))
        );
        // Recorded as skipped: not skipped or fired again.
        let p = with_status(seen(MissedSlots::Skip), d.statuses.clone());
        assert_eq!(plan(&p, now + 60_000).statuses, d.statuses);
    }

    #[test]
    fn edited_invalid_and_several_schedules() {
        let hourly = ScheduleTrigger {
            cron: "@hourly".into(),
            time_zone: None,
            branch: "release".into(),
            missed: MissedSlots::Skip,
        };
        let p = pipeline(
            "2026-12-01T10:00:00Z",
            vec![nightly(MissedSlots::FireOnce), hourly.clone()],
        );
        let d = plan(&p, t("2026-12-01T11:00:10Z"));
        assert_eq!(d.runs.len(), 1);
        assert_eq!(
            d.runs[0].spec.source,
            Source::Git(GitSource {
                url: "https://example.com/acme/app.git".into(),
                revision: "release".into()
            })
        );
        // The earliest next slot of both.
        assert_eq!(d.next, Some(t("2026-12-01T12:00:00Z")));
        assert_eq!(d.statuses.len(), 2);
        // An edited schedule (another cron) is another schedule: a fresh status entry.
        let mut p = with_status(p, d.statuses);
        p.metadata.generation = Some(2);
        p.spec.triggers.schedule[1].cron = "30 * * * *".into();
        let now = t("2026-12-01T11:10:00Z");
        let d = plan(&p, now);
        assert_eq!(d.statuses[1].cron, "30 * * * *");
        assert_eq!(d.statuses[1].since, Time(now));
        assert_eq!(d.statuses[1].last_scheduled_slot, None);
        // An invalid spec fires nothing and shows no next slot.
        p.spec.triggers.schedule[0].time_zone = Some("Nowhere/Nothing".into());
        let d = plan(&p, t("2026-12-02T02:00:00Z"));
        assert!(d.runs.is_empty());
        assert_eq!(d.next, None);
        assert!(d.statuses.iter().all(|s| s.next_schedule_time.is_none()));
    }
}
