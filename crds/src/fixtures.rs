//! Builders for tests: `PipelineRun::test("name").with_timeout("30m").cancelled(..)` and
//! `RunnerPool::test("name").with_min_idle(2)`. Compiled for this crate's tests and, with the
//! `fixtures` feature, for other crates' tests (the operator's).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sparkwing_core::reconcile::status::{PoolStatus, RunStatus};

use crate::pipeline_run::{CancelMode, PipelineRun, PipelineRunSpec, Source, UploadSource};
use crate::runner_pool::{RunnerPool, RunnerPoolSpec};

/// The namespace fixtures live in.
pub const TEST_NAMESPACE: &str = "default";

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(TEST_NAMESPACE.to_string()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

impl PipelineRun {
    /// A stored run of pipeline `build` from an upload, generation 1, no status yet.
    pub fn test(name: &str) -> Self {
        PipelineRun {
            metadata: meta(name),
            spec: PipelineRunSpec {
                pipeline: "build".to_string(),
                args: Default::default(),
                source: Source::Upload(UploadSource {
                    id: format!("upload-{name}"),
                }),
                runner_pool: None,
                timeout: None,
                cancel: None,
                ttl_seconds_after_finished: None,
                max_attempts: 3,
                triggered_by: None,
                secrets: Vec::new(),
            },
            status: None,
        }
    }

    pub fn with_pipeline(mut self, pipeline: &str) -> Self {
        self.spec.pipeline = pipeline.to_string();
        self
    }

    pub fn with_arg(mut self, name: &str, value: &str) -> Self {
        self.spec.args.insert(name.to_string(), value.to_string());
        self
    }

    pub fn with_source(mut self, source: Source) -> Self {
        self.spec.source = source;
        self
    }

    pub fn in_pool(mut self, pool: &str) -> Self {
        self.spec.runner_pool = Some(pool.to_string());
        self
    }

    pub fn with_timeout(mut self, timeout: &str) -> Self {
        self.spec.timeout = Some(timeout.to_string());
        self
    }

    pub fn cancelled(mut self, mode: CancelMode) -> Self {
        self.spec.cancel = Some(mode);
        self
    }

    pub fn with_ttl_seconds(mut self, secs: i32) -> Self {
        self.spec.ttl_seconds_after_finished = Some(secs);
        self
    }

    pub fn with_max_attempts(mut self, n: i32) -> Self {
        self.spec.max_attempts = n;
        self
    }

    pub fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    pub fn with_secrets(mut self, secrets: &[&str]) -> Self {
        self.spec.secrets = secrets.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn with_status(mut self, status: RunStatus) -> Self {
        self.status = Some(status);
        self
    }
}

impl RunnerPool {
    /// A stored pool of runner image `sparkwing-runner:test`, `minIdle` 1, `maxRunners` 4,
    /// `idleTimeout` 10m, generation 1, no status yet.
    pub fn test(name: &str) -> Self {
        RunnerPool {
            metadata: meta(name),
            spec: RunnerPoolSpec {
                image: "sparkwing-runner:test".to_string(),
                min_idle: 1,
                max_runners: 4,
                idle_timeout: "10m".to_string(),
                resources: None,
                node_selector: Default::default(),
                tolerations: Vec::new(),
                service_account_name: None,
                env: Vec::new(),
                volumes: Vec::new(),
                volume_mounts: Vec::new(),
            },
            status: None,
        }
    }

    pub fn with_min_idle(mut self, n: i32) -> Self {
        self.spec.min_idle = n;
        self
    }

    pub fn with_max_runners(mut self, n: i32) -> Self {
        self.spec.max_runners = n;
        self
    }

    pub fn with_idle_timeout(mut self, timeout: &str) -> Self {
        self.spec.idle_timeout = timeout.to_string();
        self
    }

    pub fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    pub fn with_status(mut self, status: PoolStatus) -> Self {
        self.status = Some(status);
        self
    }
}
