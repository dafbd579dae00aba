//! `run --profile P`'s remote side and `sparkwing runs push RUN_ID --profile P`.
//!
//! A run executed here with `--profile` is also an *external* run on the profile's API
//! (`source: {external: {}}`): the engine's lines, job states and end go there through an
//! [`ApiSink`]. Where it went is kept next to the local run (`remote.json`, mode 0600: it holds
//! the run's token, which the API revokes at finish). `runs push` replays a finished local run
//! from the store and its JSONL logs: into the same external run when `remote.json` exists (the
//! API ignores lines it already has), else into a new one.

use super::{CliError, CmdResult};
use crate::exit::ExitCode;
use crate::remote::target;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sparkwing_api::wire::{ExternalSource, Source, TriggerRequest};
use sparkwing_api::{ApiClient, RemoteError};
use sparkwing_engine::home::Home;
use sparkwing_engine::job_log;
use sparkwing_engine::sink::{job_state_report, FlushReport, RunSink, SinkLine};
use sparkwing_engine::store::Store;
use sparkwing_runner::sink::ApiSink;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `runs push` waits for the API to take everything.
const PUSH_DEADLINE: Duration = Duration::from_secs(120);

/// The external run a local run is mirrored to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteRun {
    pub profile: String,
    pub url: String,
    pub namespace: String,
    pub name: String,
    /// The run's token (`run:<ns>/<name>`); revoked by the API once the run finished.
    pub token: String,
    /// The profile's `mirror_local`: when false, a run that fully reached the API is removed
    /// from the local store afterwards (one that did not is kept, for `runs push`).
    #[serde(default = "mirror_local_default")]
    pub mirror_local: bool,
}

fn mirror_local_default() -> bool {
    true
}

/// The file, in the local run's directory, naming the external run.
pub const REMOTE_RUN_FILE: &str = "remote.json";

impl RemoteRun {
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(REMOTE_RUN_FILE)
    }

    /// Write it with mode 0600 (it holds a token).
    pub fn save(&self, run_dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(run_dir);
        let tmp = run_dir.join(format!(".{REMOTE_RUN_FILE}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn load(run_dir: &Path) -> Result<Option<RemoteRun>, String> {
        let path = Self::path(run_dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn client(&self) -> Result<ApiClient, CliError> {
        ApiClient::new(&self.url, &self.token)
            .map_err(|e| CliError::new(ExitCode::Usage, format!("profile {:?}: {e}", self.profile)))
    }

    pub fn sink(&self) -> Result<ApiSink, CliError> {
        Ok(ApiSink::start(self.client()?, &self.namespace, &self.name))
    }
}

/// A run's args as the API takes them (strings; secret args already masked).
pub fn api_args(redacted: &Map<String, Value>) -> BTreeMap<String, String> {
    redacted
        .iter()
        .map(|(k, v)| {
            let s = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            (k.clone(), s)
        })
        .collect()
}

/// Create an external run for `pipeline` on the profile's API. `Ok(Err(why))` when the API
/// cannot be reached (or fails on its side): the caller goes on locally. A profile that cannot
/// be used, or an API that refuses (token, scope, request), is an error.
pub fn trigger_external(
    profile: Option<&str>,
    pipeline: &str,
    args: BTreeMap<String, String>,
) -> Result<Result<RemoteRun, String>, CliError> {
    let t = target::resolve(profile).map_err(|e| CliError::new(ExitCode::Usage, e.to_string()))?;
    let mut body = TriggerRequest::new(pipeline, Source::External(ExternalSource {}));
    body.args = args;
    body.namespace = t.profile.namespace.clone();
    let url = t.client.base_url().to_string();
    match t.client.trigger(&body) {
        Ok(r) => match r.runner_token {
            Some(token) => Ok(Ok(RemoteRun {
                profile: t.name.clone(),
                url,
                namespace: r.namespace,
                name: r.name,
                token,
                mirror_local: t.profile.mirror_local(),
            })),
            None => Err(CliError::new(
                ExitCode::Api,
                format!(
                    "the API at {url} created run {}/{} but answered no runner token for it: it does not know external runs (update the operator)",
                    r.namespace, r.name
                ),
            )),
        },
        Err(e) if retryable(&e) => Ok(Err(format!("profile {:?}: {e}", t.name))),
        Err(e) => Err(super::api_error(&t, e)),
    }
}

fn retryable(e: &RemoteError) -> bool {
    e.is_unreachable() || e.status().is_some_and(|s| s >= 500)
}

/// The hint printed when a run did not fully reach the API.
pub fn push_hint(run_id: &str, profile: &str) -> String {
    format!("sparkwing runs push {run_id} --profile {profile}")
}

/// `sparkwing runs push RUN_ID [--profile P]`.
pub fn push(run: &str, profile: Option<&str>) -> CmdResult {
    let home = Home::from_env();
    let store = Store::open(&home.root)?;
    let rec = store.find_run(run)?;
    if !rec.status.is_terminal() {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "run {} is {}: push it once it finished (`sparkwing runs wait --run {}`)",
                rec.id,
                rec.status.local_str(),
                rec.id
            ),
        ));
    }
    let run_dir = PathBuf::from(&rec.log_dir);
    let saved = RemoteRun::load(&run_dir).map_err(|e| CliError::new(ExitCode::Internal, e))?;
    let remote = match saved {
        Some(r) => {
            // The token is revoked once the API recorded the end: nothing left to push.
            match r.client()?.get_run(&r.namespace, &r.name) {
                Ok(_) => r,
                Err(RemoteError::Status { status: 401, .. }) => {
                    println!(
                        "run {} is already on {} as {}/{}",
                        rec.id, r.url, r.namespace, r.name
                    );
                    return Ok(ExitCode::Success);
                }
                Err(e) => {
                    return Err(CliError::new(
                        ExitCode::Api,
                        format!(
                            "run {} goes to {}/{} on {}: {e}",
                            rec.id, r.namespace, r.name, r.url
                        ),
                    ))
                }
            }
        }
        None => {
            let args = rec.args.as_object().map(api_args).unwrap_or_default();
            let r = trigger_external(profile, &rec.pipeline, args)?.map_err(|why| {
                CliError::new(ExitCode::Api, format!("cannot push run {}: {why}", rec.id))
            })?;
            r.save(&run_dir)?;
            r
        }
    };
    let sink = remote.sink()?;
    let mut lines = 0usize;
    let jobs = store.jobs(&rec.id)?;
    for job in &jobs {
        let path = Home::job_log(&run_dir, &job.job_id);
        let records = match job_log::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(CliError::new(
                    ExitCode::Internal,
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        for r in records {
            lines += 1;
            sink.log_line(SinkLine {
                job: job.job_id.clone(),
                seq: r.seq,
                ts_ms: r.ts,
                stream: r.stream,
                line: r.line,
            });
        }
        let mut state = job_state_report(
            job.state,
            job.attempt,
            job.started_at,
            job.finished_at,
            job.exit_code,
            job.reason.as_deref(),
        );
        // Its outputs as the store keeps them (masked when the run recorded them).
        state.outputs = job
            .outputs
            .as_ref()
            .and_then(serde_json::Value::as_object)
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            });
        sink.job_state(&job.job_id, state);
    }
    sink.run_finished(rec.status, rec.error.clone());
    let report: FlushReport = sink.flush(Instant::now() + PUSH_DEADLINE);
    if !report.is_complete() {
        return Err(CliError::new(
            ExitCode::Api,
            format!(
                "run {} was not fully pushed to {}/{} on {}: {report}; run the same command again to go on",
                rec.id, remote.namespace, remote.name, remote.url
            ),
        ));
    }
    println!(
        "pushed run {} to {} as {}/{} ({} jobs, {lines} log lines)",
        rec.id,
        remote.url,
        remote.namespace,
        remote.name,
        jobs.len()
    );
    Ok(ExitCode::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_run_files_are_private_and_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RemoteRun::load(dir.path()).unwrap(), None);
        let r = RemoteRun {
            profile: "p".into(),
            url: "http://127.0.0.1:1".into(),
            namespace: "ci".into(),
            name: "x-1".into(),
            token: "swr_secret".into(),
            mirror_local: true,
        };
        r.save(dir.path()).unwrap();
        let mode = std::fs::metadata(RemoteRun::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(RemoteRun::load(dir.path()).unwrap(), Some(r));
    }

    #[test]
    fn api_args_are_strings() {
        let m: Map<String, Value> =
            serde_json::from_value(json!({"n": 3, "b": true, "s": "x"})).unwrap();
        assert_eq!(
            serde_json::to_value(api_args(&m)).unwrap(),
            json!({"n": "3", "b": "true", "s": "x"})
        );
    }
}
