//! The names the operator gives and reads: labels, annotations, and the deterministic names of
//! runner Jobs and warm pods. Everything the operator creates carries
//! `app.kubernetes.io/managed-by=sparkwing`, and every watch is restricted to that label.
//!
//! Names and label values are limited to 63 characters; a longer run or pool name is shortened to
//! a prefix plus a hash of the whole name ([`shorten`]), so two long names never collide by
//! truncation. Where the exact name matters (mapping a pod back to its run) it is also kept in an
//! annotation, which has no length limit.

/// `app.kubernetes.io/managed-by`: who manages the object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`] on everything the operator creates.
pub const MANAGED_BY_VALUE: &str = "sparkwing";
/// `app.kubernetes.io/name`: what the object is.
pub const APP_NAME: &str = "app.kubernetes.io/name";
/// The value of [`APP_NAME`] on runner Jobs and pods.
pub const APP_NAME_VALUE: &str = "sparkwing-runner";
/// Label: the run (label-safe form, [`label_value`]) a Job or pod runs, or was claimed by.
pub const RUN: &str = "sparkwing.dev/run";
/// Label: the attempt (1, 2, ...) a Job or pod runs.
pub const ATTEMPT: &str = "sparkwing.dev/attempt";
/// Label: the RunnerPool (label-safe form) a warm pod belongs to, or whose settings a Job used.
pub const POOL: &str = "sparkwing.dev/pool";
/// Label: `true` on warm pods of a RunnerPool.
pub const WARM: &str = "sparkwing.dev/warm";
/// Label: set on a warm pod when a run claims it (label-safe run name).
pub const CLAIMED_BY: &str = "sparkwing.dev/claimed-by";

/// Annotation: the exact name of the run a Job or pod runs (labels may be shortened); and the
/// attempt a claimed warm pod runs. The runner reads both: they are `sparkwing-api`'s.
pub use sparkwing_api::names::{ANNOTATION_ATTEMPT, ANNOTATION_RUN};
/// Annotation: the uid of that run, so a run re-created under the same name never adopts the
/// runners of its predecessor.
pub const ANNOTATION_RUN_UID: &str = "sparkwing.dev/run-uid";
/// Annotation: the exact name of the pool of a warm pod.
pub const ANNOTATION_POOL: &str = "sparkwing.dev/pool";

/// The standard labels of the Job controller on the pods of a Job.
pub const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];

/// The longest object name or label value the operator writes.
pub const MAX_NAME: usize = 63;

/// Annotation on a run created from a Pipeline (by a webhook delivery or a schedule): the exact
/// name of its Pipeline (the label may be shortened).
pub const PIPELINE_ANNOTATION: &str = "sparkwing.dev/pipeline";
/// Annotation on a run created from a Pipeline: the branch it runs (the pushed branch, or the
/// schedule's).
pub const BRANCH_ANNOTATION: &str = "sparkwing.dev/branch";
/// Annotation on a run created from a Pipeline: the Pipeline's `spec.path` (where `.sparkwing/`
/// is).
pub const PATH_ANNOTATION: &str = "sparkwing.dev/path";
/// Annotation on a run started by a GitHub delivery: the repository's `owner/name`, where its
/// commit status is posted.
pub const GITHUB_REPOSITORY_ANNOTATION: &str = "sparkwing.dev/github-repository";
/// Annotation on a run started by a GitHub delivery: the commit it runs (the pushed commit, or
/// the pull request's head), whose status it posts.
pub const COMMIT_ANNOTATION: &str = "sparkwing.dev/commit";
/// Annotation on a run of a pull request: its number.
pub const PULL_REQUEST_ANNOTATION: &str = "sparkwing.dev/pull-request";
/// Annotation on a run of a pull request: the branch it merges into.
pub const BASE_BRANCH_ANNOTATION: &str = "sparkwing.dev/base-branch";
/// Annotation on a run of a pull request from a fork: `"true"`.
pub const FORK_ANNOTATION: &str = "sparkwing.dev/fork";
/// Annotation on a run of a pull request whose Pipeline filters paths but whose changed files the
/// API could not list: `"true"` (the run started anyway).
pub const PATHS_UNCHECKED_ANNOTATION: &str = "sparkwing.dev/paths-unchecked";
/// Annotation on a run started by a GitHub delivery: the last commit status state posted for it
/// (`pending`, `success`, `failure`, `error`), so each state is posted once, across restarts.
pub const COMMIT_STATUS_ANNOTATION: &str = "sparkwing.dev/commit-status";
/// Annotation on a run whose commit status GitHub refused: `<reason>: <message>` (reason
/// `Unauthorized`, `NoCredentials`, `Rejected`). The Pipeline's `CommitStatus` condition shows it.
pub const COMMIT_STATUS_ERROR_ANNOTATION: &str = "sparkwing.dev/commit-status-error";

/// Label of a job pod (a placed job's own pod) and its Job: the run whose job it runs. Job pods
/// carry neither [`MANAGED_BY`] nor [`RUN`], so the run and pool controllers never take them for
/// runners.
pub const JOB_RUN: &str = "sparkwing.dev/job-run";
/// Label of a job pod: its job's id in label form ([`job_label`]); the annotation
/// [`ANNOTATION_JOB`] holds the id as the plan spells it.
pub const JOB: &str = "sparkwing.dev/job";
/// Label of a job pod: the job's attempt it runs.
pub const JOB_ATTEMPT: &str = "sparkwing.dev/job-attempt";
/// Annotation of a job pod: its job's id.
pub const ANNOTATION_JOB: &str = "sparkwing.dev/job";

/// `app.kubernetes.io/managed-by=sparkwing`: the selector of every watch.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// FNV-1a, 64 bits: a stable hash that needs no dependency (not for security).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `name` if it fits in `max` characters, else a prefix of it, `-`, and 8 hex digits of its hash.
/// The result starts and ends with an alphanumeric character when `name` does (a DNS label and a
/// label value both require it).
pub fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = format!("{:08x}", fnv1a(name) & 0xffff_ffff);
    let keep = max.saturating_sub(hash.len() + 1);
    let prefix: String = name.chars().take(keep).collect();
    let prefix = prefix.trim_end_matches(['-', '.', '_']);
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// The label-safe form of a run or pool name (at most 63 characters).
pub fn label_value(name: &str) -> String {
    shorten(name, MAX_NAME)
}

/// The name of the runner Job of `attempt` of `run`: `<run>-a<attempt>`, the run part shortened
/// so the whole fits in 63 characters (the Job controller copies it into a pod label).
pub fn job_name(run: &str, attempt: u32) -> String {
    let suffix = format!("-a{attempt}");
    format!("{}{suffix}", shorten(run, MAX_NAME - suffix.len()))
}

/// A job id in the characters of a name: lowercase letters and digits, anything else a `-`
/// (`test[3]` → `test-3`), no `-` at either end.
fn job_slug(job: &str) -> String {
    let mut out = String::new();
    for c in job.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// A job id as a label value: its slug and 8 hex digits of the id's hash (`test-3-1a2b3c4d`), so
/// `test[3]` and `test-3` differ.
pub fn job_label(job: &str) -> String {
    let hash = format!("{:08x}", fnv1a(job) & 0xffff_ffff);
    let slug = shorten(&job_slug(job), MAX_NAME - hash.len() - 1);
    if slug.is_empty() {
        hash
    } else {
        format!("{slug}-{hash}")
    }
}

/// The name of the Job of attempt `attempt` of job `job` of `run`: `<run>-<job label>-j<attempt>`,
/// the front shortened so the whole fits in 63 characters.
pub fn job_pod_name(run: &str, job: &str, attempt: u32) -> String {
    let suffix = format!("-j{attempt}");
    let front = format!("{run}-{}", job_label(job));
    format!("{}{suffix}", shorten(&front, MAX_NAME - suffix.len()))
}

/// The prefix of warm pod names of `pool`; core's pool decision appends `-<now hex>-<i>` (at most
/// 17 more characters), so the whole stays within 63.
pub fn warm_pod_prefix(pool: &str) -> String {
    shorten(pool, 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_pod_names_fit_and_tell_jobs_apart() {
        assert_eq!(job_label("test[3]").len(), "test-3-".len() + 8);
        assert!(job_label("test[3]").starts_with("test-3-"));
        assert_ne!(job_label("test[3]"), job_label("test-3"));
        let n = job_pod_name("build-main", "test[3]", 2);
        assert!(
            n.starts_with("build-main-test-3-") && n.ends_with("-j2"),
            "{n}"
        );
        let long = job_pod_name(&"r".repeat(80), &"j".repeat(80), 12);
        assert!(long.len() <= MAX_NAME && long.ends_with("-j12"), "{long}");
        assert_ne!(long, job_pod_name(&"r".repeat(80), &"k".repeat(80), 12));
        assert_eq!(job_label("[]").len(), 8);
    }

    #[test]
    fn short_names_are_kept() {
        assert_eq!(job_name("build-main", 1), "build-main-a1");
        assert_eq!(label_value("build-main"), "build-main");
        assert_eq!(warm_pod_prefix("default"), "default");
    }

    #[test]
    fn long_names_are_shortened_deterministically_and_distinctly() {
        let a = "a".repeat(70);
        let b = format!("{}b", "a".repeat(69));
        let ja = job_name(&a, 10);
        assert!(ja.len() <= 63, "{ja}");
        assert!(ja.ends_with("-a10"), "{ja}");
        assert_eq!(ja, job_name(&a, 10));
        assert_ne!(ja, job_name(&b, 10));
        assert_eq!(label_value(&a).len(), 63);
        assert_ne!(label_value(&a), label_value(&b));
    }

    #[test]
    fn shortened_names_do_not_end_in_punctuation() {
        let name = format!("{}-.{}", "x".repeat(52), "y".repeat(20));
        let s = shorten(&name, 63);
        assert!(s.len() <= 63);
        let prefix = &s[..s.len() - 9];
        assert!(!prefix.ends_with(['-', '.']), "{s}");
    }

    #[test]
    fn warm_pod_names_fit() {
        // What core's pool decision makes of the prefix: `<prefix>-<now hex>-<i>`.
        let name = format!(
            "{}-{:x}-{}",
            warm_pod_prefix(&"p".repeat(100)),
            i64::MAX,
            99
        );
        assert!(name.len() <= 63, "{name} is {}", name.len());
    }
}
