//! What a job pod runs (`docs/runner.md#job-pods`): `sparkwing runner --run NS/NAME --attempt N
//! --job ID --job-attempt M` fetches the run's source and compiles `.sparkwing/` as the
//! coordinator does, then runs that one attempt of that one job (`sparkwing_engine::one_job`),
//! its log, states and outputs reported to the API under the job's id.

use crate::attempt::{fetch_source, inherit_pipeline_chain, prepare_pipeline, Attempt, Prepared};
use crate::sink::ApiSink;
use crate::{api_error, required_env, RunnerError, RunnerResult};
use crate::{ENV_API_TOKEN, ENV_API_URL};
use sparkwing_api::wire::JobStateReport;
use sparkwing_api::ApiClient;
use sparkwing_core::JobState;
use sparkwing_engine::exit::ExitCode;
use sparkwing_engine::home::Home;
use sparkwing_engine::one_job::{self, OneJob};
use sparkwing_engine::{self as engine, sink, Format, RunSink, SinkLine};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Which job pod this is.
pub struct JobAttempt<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    /// The coordinator's attempt (every call names it: fenced with it).
    pub run_attempt: u32,
    pub job: &'a str,
    pub attempt: u32,
}

/// The outputs of every job the run's states hold (the job's needs among them).
fn outputs_of(
    jobs: Option<&BTreeMap<String, serde_json::Value>>,
) -> BTreeMap<String, BTreeMap<String, String>> {
    jobs.into_iter()
        .flatten()
        .filter_map(|(id, v)| {
            let s = serde_json::from_value::<JobStateReport>(v.clone()).ok()?;
            Some((id.clone(), s.outputs?))
        })
        .collect()
}

/// A failure before the job started (source, compile): the job's log says why, and the attempt
/// ends `Failed` with the reason.
fn fail_job(sink: &ApiSink, at: &JobAttempt<'_>, lines: &[String], reason: &str) -> RunnerResult {
    let now = engine::now_ms();
    sink.job_state(
        at.job,
        sink::job_state_report(JobState::Running, at.attempt, Some(now), None, None, None),
    );
    for (i, line) in lines.iter().enumerate() {
        sink.log_line(SinkLine {
            job: at.job.to_string(),
            seq: i as u64 + 1,
            ts_ms: now,
            stream: "stderr".into(),
            line: line.clone(),
        });
    }
    sink.job_state(
        at.job,
        sink::job_state_report(
            JobState::Failed,
            at.attempt,
            Some(now),
            Some(engine::now_ms()),
            None,
            Some(reason),
        ),
    );
    let report = sink.flush(Instant::now() + engine::SINK_FLUSH_DEADLINE);
    if !report.is_complete() {
        tracing::warn!("job {}: {report}", at.job);
    }
    Err(RunnerError::new(ExitCode::RunFailed, reason.to_string()))
}

/// `sparkwing runner --run NS/NAME --attempt N --job ID --job-attempt M`: run attempt M of job
/// ID of the run in this pod, with the run's token from SPARKWING_API_TOKEN (and the job's item
/// from SPARKWING_JOB_ITEM for an expanded job).
pub fn run_job(at: JobAttempt<'_>, format: Format) -> RunnerResult {
    let url = required_env(ENV_API_URL)?;
    let token = required_env(ENV_API_TOKEN)?;
    let client = ApiClient::new(&url, &token)
        .map_err(|e| RunnerError::new(ExitCode::RunnerEnv, format!("{ENV_API_URL}: {e}")))?
        .with_attempt(at.run_attempt);
    let (ns, name) = (at.ns, at.name);
    let rt = sparkwing_engine::runtime::build()?;
    let view = client
        .get_run(ns, name)
        .map_err(|e| api_error(&format!("cannot read run {ns}/{name} from {url}"), e))?;
    let run = view.run.clone().unwrap_or_default();
    let Some(pipeline_name) = run["spec"]["pipeline"].as_str().map(str::to_string) else {
        return Err(RunnerError::new(
            ExitCode::Api,
            format!("run {ns}/{name} from {url} has no spec.pipeline"),
        ));
    };
    tracing::info!(
        "runner: run {ns}/{name}, job {} attempt {} (coordinator attempt {})",
        at.job,
        at.attempt,
        at.run_attempt
    );
    // This job's lines follow the ones its earlier attempts posted.
    let mut offsets = HashMap::new();
    match client.read_log_tail(ns, name, at.job, 1) {
        Ok(lines) => {
            if let Some(last) = lines.last() {
                offsets.insert(at.job.to_string(), last.seq);
            }
        }
        Err(e) if e.status() == Some(404) => {}
        Err(e) => tracing::warn!("cannot read the earlier log of job {}: {e}", at.job),
    }
    let sink = Arc::new(ApiSink::start_after(client.clone(), ns, name, offsets));
    let home = Home::from_env();
    if let Err(msg) = inherit_pipeline_chain(&run["metadata"], &pipeline_name) {
        return fail_job(&sink, &at, std::slice::from_ref(&msg), &msg);
    }
    let coordinator = Attempt {
        ns,
        name,
        attempt: at.run_attempt,
    };
    let prepared = fetch_source(&client, &home, ns, name, &run).and_then(|root| {
        prepare_pipeline(
            &client,
            &url,
            &coordinator,
            &home,
            &root,
            &run,
            &pipeline_name,
        )
    });
    let Prepared {
        project,
        pipeline,
        compiled,
        info,
        args,
    } = match prepared {
        Ok(p) => p,
        Err(f) => {
            let reason = format!("job pod setup ({}): {}", f.job, f.reason);
            return fail_job(&sink, &at, &f.lines, &reason);
        }
    };
    let stores = crate::stores::api_stores(&client, ns, name, &home.root)?;
    let req = engine::RunRequest {
        home,
        repo_root: project.root.clone(),
        pipeline: pipeline.name.clone(),
        info,
        binary: (&compiled).into(),
        args,
        workers: 1,
        format,
        box_slots: None,
        runner: engine::RUNNER_KUBERNETES.into(),
        selection: Default::default(),
        retry: None,
        sink: Some(sink.clone()),
        gate_relay: None,
        group_slots: None,
        no_cache: false,
        stores: Some(stores),
        // A job pod runs its job: a placed job is never memoized (docs/authoring.md).
        memo: None,
        job_pods: None,
    };
    let one = OneJob {
        job: at.job.to_string(),
        attempt: at.attempt,
        item: std::env::var(sparkwing_api::names::env::JOB_ITEM).ok(),
        needs_outputs: outputs_of(view.jobs.as_ref()),
    };
    let state = rt.block_on(one_job::run(&req, one));
    let report = sink.flush(Instant::now() + engine::SINK_FLUSH_DEADLINE);
    if !report.is_complete() {
        tracing::warn!("job {}: {report}", at.job);
    }
    drop(compiled);
    match state {
        Ok(JobState::Success) => Ok(ExitCode::Success),
        Ok(JobState::Cancelled) => Ok(ExitCode::Cancelled),
        Ok(_) => Ok(ExitCode::RunFailed),
        Err(e) => Err(RunnerError::new(
            ExitCode::Internal,
            format!("the engine failed: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needs_outputs_come_from_the_run_job_states() {
        let mut done = sink::job_state_report(JobState::Success, 1, None, None, None, None);
        done.outputs = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
        let jobs = BTreeMap::from([
            ("a".to_string(), serde_json::to_value(done).unwrap()),
            ("b".to_string(), serde_json::json!({"state": "pending"})),
        ]);
        let out = outputs_of(Some(&jobs));
        assert_eq!(out.len(), 1);
        assert_eq!(out["a"]["k"], "v");
    }
}
