//! A run built from a `Pipeline`: what a push delivery and a schedule create.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use sparkwing_crds::pipeline::{Pipeline, PIPELINE_LABEL};
use sparkwing_crds::pipeline_run::{
    PipelineRun, PipelineRunSpec, Source, TriggeredBy, DEFAULT_MAX_ATTEMPTS,
};

use crate::labels::{BRANCH_ANNOTATION, PATH_ANNOTATION, PIPELINE_ANNOTATION};

/// A run of the Pipeline `p` named `name` (in its namespace), of `branch` at `source`: labelled
/// and annotated with its Pipeline (and its `spec.path`), with the Pipeline's run settings. What a
/// push delivery and a schedule create.
pub fn pipeline_run(
    p: &Pipeline,
    name: String,
    branch: &str,
    source: Source,
    triggered_by: TriggeredBy,
) -> PipelineRun {
    let pipeline_name = p.name_any();
    let mut annotations = BTreeMap::from([
        (PIPELINE_ANNOTATION.to_string(), pipeline_name.clone()),
        (BRANCH_ANNOTATION.to_string(), branch.to_string()),
    ]);
    if let Some(path) = p.spec.path.as_deref().filter(|s| !s.is_empty()) {
        annotations.insert(PATH_ANNOTATION.to_string(), path.to_string());
    }
    PipelineRun {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: p.namespace(),
            labels: Some(BTreeMap::from([(
                PIPELINE_LABEL.to_string(),
                crate::labels::label_value(&pipeline_name),
            )])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: PipelineRunSpec {
            pipeline: p.spec.pipeline.clone(),
            args: p.spec.args.clone(),
            source,
            runner_pool: p.spec.runner_pool.clone(),
            timeout: p.spec.timeout.clone(),
            cancel: None,
            ttl_seconds_after_finished: p.spec.ttl_seconds_after_finished,
            max_attempts: p.spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            secrets: p.spec.secrets.clone(),
            triggered_by: Some(triggered_by),
        },
        status: None,
    }
}
