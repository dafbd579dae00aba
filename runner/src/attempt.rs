//! One attempt of a cluster run: read the run from the API, fetch its source, compile
//! `.sparkwing/`, run the plan with the local engine and report everything through an
//! [`ApiSink`]. A failure before the pipeline starts is reported as a pseudo-job
//! ([`SOURCE_JOB`], [`COMPILE_JOB`]) with the reason as its log.

use crate::sink::ApiSink;
use crate::{api_error, git_source, materialise, required_env, RunnerError, RunnerResult};
use crate::{ENV_API_TOKEN, ENV_API_URL};
use futures_util::FutureExt;
use sparkwing_api::ApiClient;
use sparkwing_core::{JobState, RunPhase};
use sparkwing_engine::compile::{self, CompileError};
use sparkwing_engine::exit::ExitCode;
use sparkwing_engine::home::Home;
use sparkwing_engine::{self as engine, project, sink, Format, RunSink, SinkLine};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The pseudo-job under which a runner reports fetching the source.
pub const SOURCE_JOB: &str = "source";
/// The pseudo-job under which a runner reports compiling `.sparkwing/` (and reading the
/// project and the run's args), with the compiler's output as its log.
pub const COMPILE_JOB: &str = "compile";

/// `sparkwing runner --run NS/NAME --attempt N`: execute one attempt of a cluster run (the
/// entry point of the operator's runner Job; docs/runner.md), with the run's token from
/// SPARKWING_API_TOKEN. `format` is how the engine prints the run on stdout (the pod's log).
pub fn run_attempt(ns: &str, name: &str, attempt: u32, format: Format) -> RunnerResult {
    let url = required_env(ENV_API_URL)?;
    let token = required_env(ENV_API_TOKEN)?;
    let client = ApiClient::new(&url, &token)
        .map_err(|e| RunnerError::new(ExitCode::RunnerEnv, format!("{ENV_API_URL}: {e}")))?;
    let rt = sparkwing_engine::runtime::build()?;
    // SIGTERM before the engine takes over (fetching, compiling) cancels the run once that step
    // is over; from then on the engine's own handler cancels it (finally jobs run).
    let early_term = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    execute_attempt(
        &rt,
        early_term,
        &client,
        &url,
        Attempt { ns, name, attempt },
        format,
    )
}

/// Which attempt of which run.
pub(crate) struct Attempt<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    pub attempt: u32,
}

/// Report a failure before the pipeline started as a pseudo-job with `lines` as its log, end
/// the run `Failed` with `reason`, and exit 1.
fn fail_setup(sink: &ApiSink, job: &str, lines: &[String], reason: &str) -> RunnerResult {
    let now = engine::now_ms();
    sink.job_state(
        job,
        sink::job_state_report(JobState::Running, 1, Some(now), None, None, None),
    );
    for (i, line) in lines.iter().enumerate() {
        sink.log_line(SinkLine {
            job: job.to_string(),
            seq: i as u64 + 1,
            ts_ms: now,
            stream: "stderr".into(),
            line: line.clone(),
        });
    }
    sink.job_state(
        job,
        sink::job_state_report(
            JobState::Failed,
            1,
            Some(now),
            Some(engine::now_ms()),
            None,
            Some(reason),
        ),
    );
    sink.run_finished(RunPhase::Failed, Some(reason.to_string()));
    let report = sink.flush(Instant::now() + engine::SINK_FLUSH_DEADLINE);
    if !report.is_complete() {
        tracing::warn!("run {}: {report}", sink.run_ref());
    }
    Err(RunnerError::new(ExitCode::RunFailed, reason.to_string()))
}

/// The run's ancestry, from its `sparkwing.dev/pipeline-chain` annotation (the API writes it from
/// the trigger's `pipelineChain`): the engine passes it on to the run's jobs and children, with
/// this pipeline after it, as a local run passes `SPARKWING_PIPELINE_CHAIN` on. A run of a
/// pipeline already in it is refused as `sparkwing run` refuses one (docs/subpipelines.md).
fn inherit_pipeline_chain(metadata: &serde_json::Value, pipeline: &str) -> Result<(), String> {
    let chain = metadata["annotations"][engine::subpipeline::CHAIN_ANNOTATION]
        .as_str()
        .map(sparkwing_core::subpipeline::parse_chain)
        .unwrap_or_default();
    sparkwing_core::subpipeline::check_chain(&chain, pipeline).map_err(|e| {
        format!(
            "refusing to run pipeline {pipeline:?}: {e} (the run's {} is {:?})",
            engine::subpipeline::CHAIN_ANNOTATION,
            chain.join(",")
        )
    })?;
    engine::subpipeline::inherit_chain(chain);
    Ok(())
}

/// Per job, the last seq an earlier attempt of the run posted (a later attempt's lines follow
/// them). The API cannot be asked for it directly: read each job's lines once.
fn earlier_lines(client: &ApiClient, ns: &str, name: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let jobs = match client.log_jobs(ns, name) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!("cannot read the earlier attempts' logs of {ns}/{name}: {e}; this attempt's first lines may be taken for theirs");
            return out;
        }
    };
    for job in jobs {
        match client.read_logs(ns, name, &job, 0) {
            Ok(lines) => {
                if let Some(last) = lines.last() {
                    out.insert(job, last.seq);
                }
            }
            Err(e) => tracing::warn!("cannot read the earlier log of job {job}: {e}"),
        }
    }
    out
}

/// One attempt of a cluster run with a client holding the run's token: what `--run` does, and
/// what a warm runner does once claimed. `early_term` is the SIGTERM stream installed before.
pub(crate) fn execute_attempt(
    rt: &tokio::runtime::Runtime,
    mut early_term: tokio::signal::unix::Signal,
    client: &ApiClient,
    url: &str,
    Attempt { ns, name, attempt }: Attempt<'_>,
    format: Format,
) -> RunnerResult {
    let view = client
        .get_run(ns, name)
        .map_err(|e| api_error(&format!("cannot read run {ns}/{name} from {url}"), e))?;
    // The PipelineRun as the API shows it (`Null` if absent: every lookup below then fails
    // with its own message).
    let run = view.run.unwrap_or_default();
    let spec = &run["spec"];
    let Some(pipeline_name) = spec["pipeline"].as_str().map(str::to_string) else {
        return Err(RunnerError::new(
            ExitCode::Api,
            format!("run {ns}/{name} from {url} has no spec.pipeline"),
        ));
    };
    tracing::info!("runner: run {ns}/{name}, attempt {attempt}, pipeline {pipeline_name}");
    let offsets = if attempt > 1 {
        earlier_lines(client, ns, name)
    } else {
        HashMap::new()
    };
    let sink = Arc::new(ApiSink::start_after(client.clone(), ns, name, offsets));
    let home = Home::from_env();
    if let Err(msg) = inherit_pipeline_chain(&run["metadata"], &pipeline_name) {
        return fail_setup(&sink, COMPILE_JOB, std::slice::from_ref(&msg), &msg)
            .map_err(|e| RunnerError::new(ExitCode::Usage, e.message));
    }

    // The source.
    let source = &spec["source"];
    let root = if let Some(id) = source["upload"]["id"].as_str() {
        let dest = home.root.join("work").join(format!("{ns}-{name}"));
        if std::fs::symlink_metadata(&dest).is_ok() {
            std::fs::remove_dir_all(&dest)?;
        }
        let started = Instant::now();
        match materialise::materialise(client, id, &dest) {
            Ok(m) => {
                tracing::info!(
                    "runner: upload {id}: {} files, {} symlinks, {} bytes ({} blobs fetched) in {:.1}s",
                    m.files,
                    m.symlinks,
                    m.bytes,
                    m.fetched,
                    started.elapsed().as_secs_f64()
                );
                dest
            }
            Err(e) => {
                let msg = format!("fetching the source (upload {id}) failed: {e}");
                return fail_setup(&sink, SOURCE_JOB, std::slice::from_ref(&msg), &msg);
            }
        }
    } else if let Some(path) = source["local"]["path"].as_str() {
        PathBuf::from(path)
    } else if let (Some(url), Some(rev)) = (
        source["git"]["url"].as_str(),
        source["git"]["revision"].as_str(),
    ) {
        let dest = home.root.join("work").join(format!("{ns}-{name}"));
        match git_source::fetch_for_run(url, rev, &dest, &run["metadata"]) {
            Ok(root) => root,
            Err(msg) => return fail_setup(&sink, SOURCE_JOB, std::slice::from_ref(&msg), &msg),
        }
    } else {
        let kind = source
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_else(|| "none".into());
        let msg = format!(
            "a `{kind}` source is not supported by this runner (it runs `upload`, `git` and `local` sources)"
        );
        return fail_setup(&sink, SOURCE_JOB, std::slice::from_ref(&msg), &msg);
    };

    // The project and its pipeline binary.
    let project = match project::discover(&root) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("the source has no usable .sparkwing/: {e}");
            return fail_setup(&sink, COMPILE_JOB, std::slice::from_ref(&msg), &msg);
        }
    };
    let Some(pipeline) = project.pipeline(&pipeline_name).cloned() else {
        let msg = format!(
            "pipeline {pipeline_name:?} is not in {}",
            project.config_path().display()
        );
        return fail_setup(&sink, COMPILE_JOB, std::slice::from_ref(&msg), &msg);
    };
    // A webhook run: warn about a drift and report the comparison, which becomes the Pipeline's
    // BranchesInSync condition. Not reporting it only leaves that condition as it was.
    if let Some(check) = git_source::warn_branch_drift(&run["metadata"], &pipeline) {
        if let Err(e) = client.put_branch_check(ns, name, &check.body()) {
            tracing::warn!(
                "cannot report the branch check of run {ns}/{name} to {url}: {e}; the Pipeline's BranchesInSync condition stays as it was"
            );
        }
    }
    let compiled = match compile::ensure(&home.cache, &project, compile::Progress::OnFailure) {
        Ok(c) => c,
        Err(e) => {
            let mut lines: Vec<String> = match &e {
                CompileError::BuildFailed { output, .. }
                | CompileError::FetchFailed { output, .. } => {
                    output.lines().map(str::to_string).collect()
                }
                _ => Vec::new(),
            };
            let msg = format!("compile error: {e}");
            lines.push(msg.clone());
            return fail_setup(&sink, COMPILE_JOB, &lines, &msg);
        }
    };
    if rt
        .block_on(async { early_term.recv().now_or_never() })
        .is_some()
    {
        sink.run_finished(
            RunPhase::Cancelled,
            Some("cancelled (SIGTERM) before the pipeline started".into()),
        );
        sink.flush(Instant::now() + engine::SINK_FLUSH_DEADLINE);
        return Ok(ExitCode::Cancelled);
    }
    let Some(info) = compiled.describe.entrypoint(&pipeline.entrypoint).cloned() else {
        let msg = format!(
            "pipeline {pipeline_name:?} names entrypoint {:?}, which .sparkwing/ does not register",
            pipeline.entrypoint
        );
        return fail_setup(&sink, COMPILE_JOB, std::slice::from_ref(&msg), &msg);
    };
    let tokens: Vec<String> = spec["args"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    format!(
                        "--{k}={}",
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let resolved =
        match sparkwing_core::args::resolve(&info.args, &pipeline.arg_defaults(), &tokens) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("the run's args: {e}");
                return fail_setup(&sink, COMPILE_JOB, std::slice::from_ref(&msg), &msg);
            }
        };
    let box_slots = sparkwing_engine::box_slots::resolve_cap(None)
        .map_err(|e| RunnerError::new(ExitCode::Usage, e.to_string()))?
        .map(|max| engine::BoxGate {
            slots: sparkwing_engine::box_slots::BoxSlots::new(&home.root, max),
            no_wait: false,
        });
    let req = engine::RunRequest {
        home,
        repo_root: project.root.clone(),
        pipeline: pipeline.name.clone(),
        info,
        binary: (&compiled).into(),
        args: resolved,
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        format,
        box_slots,
        runner: "kubernetes".into(),
        sink: Some(sink.clone()),
    };
    let code = match rt.block_on(engine::execute(req)) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("the engine failed: {e}");
            sink.run_finished(RunPhase::Failed, Some(msg.clone()));
            sink.flush(Instant::now() + engine::SINK_FLUSH_DEADLINE);
            return Err(RunnerError::new(ExitCode::Internal, msg));
        }
    };
    drop(compiled);
    tracing::info!(
        "runner: {} log lines delivered to {url}",
        sink.delivered_lines()
    );
    Ok(code)
}
