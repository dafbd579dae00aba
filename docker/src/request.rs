//! The runner request: what a runner container needs to continue a run the host recorded.
//!
//! It holds the resolved args and the pipeline's secret environment variables in clear, so it is
//! written with mode 0600 in the run's directory (created atomically) and the runner deletes it as
//! soon as it has read it. Secrets travel in this file rather than in the container's
//! environment, where `docker inspect` would show them.

use super::{io, DockerError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sparkwing_core::protocol::PipelineInfo;
use sparkwing_engine::home::Home;
use sparkwing_engine::{BinaryRef, Format, RunRequest};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerRequest {
    pub run_id: String,
    pub home: Home,
    pub repo_root: PathBuf,
    pub pipeline: String,
    pub info: PipelineInfo,
    pub binary: BinaryRef,
    pub args: Map<String, Value>,
    pub workers: usize,
    pub format: Format,
    /// The pipeline's declared secrets, read from the host's environment.
    pub env: BTreeMap<String, String>,
}

impl RunnerRequest {
    pub fn from_run(req: &RunRequest, run_id: &str) -> RunnerRequest {
        let env = req
            .info
            .secrets
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
            .collect();
        RunnerRequest {
            run_id: run_id.to_string(),
            home: req.home.clone(),
            repo_root: req.repo_root.clone(),
            pipeline: req.pipeline.clone(),
            info: req.info.clone(),
            binary: req.binary.clone(),
            args: req.args.clone(),
            workers: req.workers,
            format: req.format,
            env,
        }
    }

    /// The engine's request (no admission: the host already admitted the run).
    pub fn into_run_request(self) -> (RunRequest, String) {
        (
            RunRequest {
                home: self.home,
                repo_root: self.repo_root,
                pipeline: self.pipeline,
                info: self.info,
                binary: self.binary,
                args: self.args,
                workers: self.workers,
                format: self.format,
                box_slots: None,
                runner: "docker".to_string(),
                selection: Default::default(),
                retry: None,
                sink: None,
                no_cache: false,
                stores: None,
                memo: None,
                job_pods: None,
                gate_relay: None,
                group_slots: None,
            },
            self.run_id,
        )
    }
}

/// Where the request of a run is written.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("runner-request.json")
}

/// Write the request 0600 under a temporary name, then rename it into place, so a reader never
/// sees half a file.
pub fn write(run_dir: &Path, r: &RunnerRequest) -> Result<PathBuf, DockerError> {
    let dest = path(run_dir);
    let tmp = run_dir.join(".runner-request.json.tmp");
    let text = serde_json::to_vec(r)
        .map_err(|e| DockerError::Other(format!("encode runner request: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("create {}", tmp.display())))?;
    f.write_all(&text)
        .map_err(io(format!("write {}", tmp.display())))?;
    drop(f);
    std::fs::rename(&tmp, &dest).map_err(io(format!("rename to {}", dest.display())))?;
    Ok(dest)
}

/// Read a request and delete the file (it holds secrets).
pub fn take(path: &Path) -> Result<RunnerRequest, DockerError> {
    let text = std::fs::read(path).map_err(io(format!("read {}", path.display())))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_slice(&text)
        .map_err(|e| DockerError::Other(format!("{} is not a runner request: {e}", path.display())))
}
