//! A whole-run re-run of a cluster run: a new PipelineRun of the same pipeline, source, args and
//! run settings as the original, every job run again (`POST /api/v1/runs/{ns}/{name}/rerun`,
//! the cluster dashboard's Re-run button). What it keeps and what it drops is decided here, with
//! no IO; the API checks the source and creates the run as a trigger does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use sparkwing_api::names::RERUN_OF_ANNOTATION;
use sparkwing_crds::pipeline::PIPELINE_LABEL;
use sparkwing_crds::pipeline_run::{PipelineRun, PipelineRunSpec, TriggeredBy};

use crate::labels::{
    BASE_BRANCH_ANNOTATION, BRANCH_ANNOTATION, COMMIT_ANNOTATION, FORK_ANNOTATION,
    GITHUB_REPOSITORY_ANNOTATION, PATHS_UNCHECKED_ANNOTATION, PATH_ANNOTATION, PIPELINE_ANNOTATION,
    PULL_REQUEST_ANNOTATION,
};

/// The annotations a re-run carries over: what the run *is* (its Pipeline, branch, path, commit
/// and repository, pull request, fork, pipeline chain). Not carried over: what happened to the
/// original (commit status posted, branch check, who cancelled it) and a sub-pipeline's parent
/// (nobody awaits the re-run).
pub const KEPT_ANNOTATIONS: [&str; 10] = [
    PIPELINE_ANNOTATION,
    BRANCH_ANNOTATION,
    PATH_ANNOTATION,
    GITHUB_REPOSITORY_ANNOTATION,
    COMMIT_ANNOTATION,
    PULL_REQUEST_ANNOTATION,
    BASE_BRANCH_ANNOTATION,
    FORK_ANNOTATION,
    PATHS_UNCHECKED_ANNOTATION,
    sparkwing_core::subpipeline::CHAIN_ANNOTATION,
];

/// The labels a re-run carries over: its Pipeline's.
pub const KEPT_LABELS: [&str; 1] = [PIPELINE_LABEL];

/// A re-run of `original`, named `name` in the original's namespace, asked for by
/// `triggered_by` (its `pull_request` is the original's, so a fork's run stays marked as one).
/// The spec is the original's — pipeline, args, source, runner pool, timeout, TTL, attempts and
/// Secrets as the original's spec has them (a run without Secrets, a fork's, stays without) —
/// with no cancel. Annotated [`RERUN_OF_ANNOTATION`] `NS/NAME`, plus [`KEPT_ANNOTATIONS`] and
/// [`KEPT_LABELS`] that the original has.
pub fn rerun_of(original: &PipelineRun, name: String, triggered_by: TriggeredBy) -> PipelineRun {
    let ns = original.namespace().unwrap_or_default();
    let keep = |from: &BTreeMap<String, String>, keys: &[&str]| -> BTreeMap<String, String> {
        keys.iter()
            .filter_map(|k| from.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect()
    };
    let mut annotations = keep(original.annotations(), &KEPT_ANNOTATIONS);
    annotations.insert(
        RERUN_OF_ANNOTATION.to_string(),
        format!("{ns}/{}", original.name_any()),
    );
    let labels = keep(original.labels(), &KEPT_LABELS);
    let spec = &original.spec;
    let pull_request = spec
        .triggered_by
        .as_ref()
        .and_then(|t| t.pull_request.clone());
    PipelineRun {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: PipelineRunSpec {
            pipeline: spec.pipeline.clone(),
            args: spec.args.clone(),
            source: spec.source.clone(),
            runner_pool: spec.runner_pool.clone(),
            timeout: spec.timeout.clone(),
            cancel: None,
            ttl_seconds_after_finished: spec.ttl_seconds_after_finished,
            max_attempts: spec.max_attempts,
            secrets: spec.secrets.clone(),
            triggered_by: Some(TriggeredBy {
                pull_request,
                ..triggered_by
            }),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_crds::pipeline_run::{
        CancelMode, GitSource, ParentRef, Source, TriggerVia, TriggeringPullRequest,
    };

    fn by(principal: &str) -> TriggeredBy {
        TriggeredBy {
            principal: principal.into(),
            host: Some("10.0.0.9".into()),
            via: TriggerVia::Cli,
            delivery_id: None,
            pull_request: None,
        }
    }

    fn fork_run() -> PipelineRun {
        let mut run = PipelineRun::test("pr-1a2b").with_source(Source::Git(GitSource {
            url: "https://example.com/fork/app.git".into(),
            revision: "0123abcd".into(),
        }));
        run.metadata.namespace = Some("ci".into());
        run.spec.args = BTreeMap::from([("env".to_string(), "test".to_string())]);
        run.spec.runner_pool = None;
        run.spec.timeout = Some("20m".into());
        run.spec.ttl_seconds_after_finished = Some(60);
        run.spec.max_attempts = 2;
        run.spec.cancel = Some(CancelMode::Cancelled);
        run.spec.triggered_by = Some(TriggeredBy {
            principal: "octocat".into(),
            host: None,
            via: TriggerVia::Webhook,
            delivery_id: Some("d-1".into()),
            pull_request: Some(TriggeringPullRequest {
                number: 12,
                base: "main".into(),
                head: "fix".into(),
                fork: true,
            }),
        });
        run.set_parent(&ParentRef {
            run: "ci/up".into(),
            job: "await".into(),
            host: None,
        });
        let a = run.annotations_mut();
        for (k, v) in [
            (PIPELINE_ANNOTATION, "app"),
            (FORK_ANNOTATION, "true"),
            (PULL_REQUEST_ANNOTATION, "12"),
            (COMMIT_ANNOTATION, "0123abcd"),
            (crate::labels::COMMIT_STATUS_ANNOTATION, "failure"),
            (sparkwing_api::names::CANCELLED_BY_ANNOTATION, "x"),
            (RERUN_OF_ANNOTATION, "ci/older"),
        ] {
            a.insert(k.into(), v.into());
        }
        run.labels_mut().insert(PIPELINE_LABEL.into(), "app".into());
        run.labels_mut().insert("other".into(), "x".into());
        run
    }

    #[test]
    fn a_rerun_keeps_the_spec_and_what_the_run_is_and_drops_what_happened_to_it() {
        let original = fork_run();
        let new = rerun_of(&original, "pr-9f8e".into(), by("alice"));
        assert_eq!(new.name_any(), "pr-9f8e");
        assert_eq!(new.namespace().as_deref(), Some("ci"));
        let (a, b) = (&new.spec, &original.spec);
        assert_eq!(a.pipeline, b.pipeline);
        assert_eq!(a.args, b.args);
        assert_eq!(a.source, b.source);
        assert_eq!(a.runner_pool, b.runner_pool);
        assert_eq!(a.timeout, b.timeout);
        assert_eq!(a.ttl_seconds_after_finished, Some(60));
        assert_eq!(a.max_attempts, 2);
        assert_eq!(a.cancel, None);
        // A fork's run had no Secrets: its re-run has none either.
        assert!(a.secrets.is_empty());
        let t = a.triggered_by.as_ref().unwrap();
        assert_eq!((t.principal.as_str(), t.via), ("alice", TriggerVia::Cli));
        assert_eq!(t.host.as_deref(), Some("10.0.0.9"));
        assert_eq!(t.delivery_id, None);
        assert!(t
            .pull_request
            .as_ref()
            .is_some_and(|p| p.fork && p.number == 12));

        let ann = new.annotations();
        assert_eq!(ann[RERUN_OF_ANNOTATION], "ci/pr-1a2b");
        for k in [
            PIPELINE_ANNOTATION,
            FORK_ANNOTATION,
            PULL_REQUEST_ANNOTATION,
            COMMIT_ANNOTATION,
        ] {
            assert_eq!(ann.get(k), original.annotations().get(k), "{k}");
        }
        for k in [
            crate::labels::COMMIT_STATUS_ANNOTATION,
            sparkwing_api::names::CANCELLED_BY_ANNOTATION,
        ] {
            assert!(!ann.contains_key(k), "{k} in {ann:?}");
        }
        assert_eq!(new.parent(), None);
        assert_eq!(new.labels()[PIPELINE_LABEL], "app");
        assert!(!new.labels().contains_key("other"));
    }

    #[test]
    fn a_rerun_keeps_the_secrets_the_original_had() {
        let mut original = fork_run();
        original.spec.secrets = vec!["deploy-keys".to_string()];
        original.spec.triggered_by = None;
        let new = rerun_of(&original, "x-1".into(), by("bob"));
        assert_eq!(new.spec.secrets, original.spec.secrets);
        assert_eq!(new.spec.triggered_by.unwrap().pull_request, None);
    }
}
