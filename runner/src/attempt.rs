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
pub(crate) fn inherit_pipeline_chain(
    metadata: &serde_json::Value,
    pipeline: &str,
) -> Result<(), String> {
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

/// Whether the run was triggered with `--sw-no-cache` (its `sparkwing.dev/no-cache` annotation):
/// then its memoized jobs run.
fn no_cache(metadata: &serde_json::Value) -> bool {
    metadata["annotations"][sparkwing_api::names::NO_CACHE_ANNOTATION].as_str() == Some("true")
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

/// A failure before the pipeline started: reported as the pseudo-job `job` with `lines` as its
/// log, and the run ended `Failed` with `reason` (see [`fail_setup`]).
pub(crate) struct SetupFailure {
    pub(crate) job: &'static str,
    pub(crate) lines: Vec<String>,
    pub(crate) reason: String,
}

impl SetupFailure {
    /// A failure whose log is its reason alone.
    fn new(job: &'static str, reason: String) -> Self {
        SetupFailure {
            job,
            lines: vec![reason.clone()],
            reason,
        }
    }
}

/// One attempt of a cluster run with a client holding the run's token: what `--run` does, and
/// what a warm runner does once claimed. `early_term` is the SIGTERM stream installed before.
pub(crate) fn execute_attempt(
    rt: &tokio::runtime::Runtime,
    mut early_term: tokio::signal::unix::Signal,
    client: &ApiClient,
    url: &str,
    at: Attempt<'_>,
    format: Format,
) -> RunnerResult {
    let Attempt { ns, name, attempt } = at;
    // Every call names the attempt: once a newer one exists the API refuses this one's.
    let client = &client.with_attempt(attempt);
    let view = client
        .get_run(ns, name)
        .map_err(|e| api_error(&format!("cannot read run {ns}/{name} from {url}"), e))?;
    // A later attempt resumes from what the earlier ones recorded.
    let resume = (attempt > 1)
        .then(|| crate::resume::resume_from(ns, name, view.jobs.as_ref()))
        .flatten();
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
    let sink = Arc::new(ApiSink::start_after(client.clone(), ns, name, offsets).parking(attempt));
    let home = Home::from_env();
    if let Err(msg) = inherit_pipeline_chain(&run["metadata"], &pipeline_name) {
        return fail_setup(&sink, COMPILE_JOB, std::slice::from_ref(&msg), &msg)
            .map_err(|e| RunnerError::new(ExitCode::Usage, e.message));
    }
    let prepared = fetch_source(client, &home, ns, name, &run)
        .and_then(|root| prepare_pipeline(client, url, &at, &home, &root, &run, &pipeline_name));
    let Prepared {
        project,
        pipeline,
        compiled,
        info,
        args,
    } = match prepared {
        Ok(p) => p,
        Err(f) => return fail_setup(&sink, f.job, &f.lines, &f.reason),
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
    let box_slots = sparkwing_engine::box_slots::resolve_cap(None)
        .map_err(|e| RunnerError::new(ExitCode::Usage, e.to_string()))?
        .map(|max| engine::BoxGate {
            slots: sparkwing_engine::box_slots::BoxSlots::new(&home.root, max),
            no_wait: false,
        });
    // The jobs' caches and artifacts are kept by the API: they outlive this pod.
    let stores = crate::stores::api_stores(client, ns, name, &home.root)?;
    let req = engine::RunRequest {
        home,
        repo_root: project.root.clone(),
        pipeline: pipeline.name.clone(),
        info,
        binary: (&compiled).into(),
        args,
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        format,
        box_slots,
        runner: engine::RUNNER_KUBERNETES.into(),
        selection: Default::default(),
        retry: resume,
        sink: Some(sink.clone()),
        gate_relay: Some(Arc::new(crate::gate_relay::ApiGateRelay::new(
            client.clone(),
            ns,
            name,
        ))),
        group_slots: Some(Arc::new(crate::group_slots::ApiGroup::new(
            client.clone(),
            ns,
            name,
        ))),
        no_cache: no_cache(&run["metadata"]),
        stores: Some(stores),
        memo: Some(Arc::new(crate::memo::ApiMemoStore::new(
            client.clone(),
            ns,
            name,
        ))),
        job_pods: crate::job_pods::in_cluster_pod().then(|| {
            Arc::new(crate::job_pods::ApiJobPods::new(client.clone(), ns, name))
                as Arc<dyn engine::job_pods::JobPods>
        }),
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
    if sink.has_parked() {
        linger_parked(rt, &mut early_term);
    }
    Ok(code)
}

/// How long a parked runner waits for the operator to stop it before it exits by itself.
pub const PARKED_LINGER: std::time::Duration = std::time::Duration::from_secs(300);

/// The run parked (its park is recorded in the API): wait until the operator, which sees the
/// park, stops this runner (SIGTERM), so its exit is never taken for the run's end; at most
/// [`PARKED_LINGER`].
fn linger_parked(rt: &tokio::runtime::Runtime, term: &mut tokio::signal::unix::Signal) {
    tracing::info!("runner: the run parked; waiting for the operator to stop this runner");
    rt.block_on(async {
        let _ = tokio::time::timeout(PARKED_LINGER, term.recv()).await;
    });
}

/// The run's source on this runner: an upload fetched into the work directory, a git commit
/// checked out there, or a `local` path used in place.
pub(crate) fn fetch_source(
    client: &ApiClient,
    home: &Home,
    ns: &str,
    name: &str,
    run: &serde_json::Value,
) -> Result<PathBuf, SetupFailure> {
    let source = &run["spec"]["source"];
    let dest = home.root.join("work").join(format!("{ns}-{name}"));
    if let Some(id) = source["upload"]["id"].as_str() {
        if std::fs::symlink_metadata(&dest).is_ok() {
            std::fs::remove_dir_all(&dest).map_err(|e| {
                SetupFailure::new(
                    SOURCE_JOB,
                    format!("cannot clear {} for the source: {e}", dest.display()),
                )
            })?;
        }
        let started = Instant::now();
        let m = materialise::materialise(client, id, &dest).map_err(|e| {
            SetupFailure::new(
                SOURCE_JOB,
                format!("fetching the source (upload {id}) failed: {e}"),
            )
        })?;
        tracing::info!(
            "runner: upload {id}: {} files, {} symlinks, {} bytes ({} blobs fetched) in {:.1}s",
            m.files,
            m.symlinks,
            m.bytes,
            m.fetched,
            started.elapsed().as_secs_f64()
        );
        Ok(dest)
    } else if let Some(path) = source["local"]["path"].as_str() {
        Ok(PathBuf::from(path))
    } else if let (Some(url), Some(rev)) = (
        source["git"]["url"].as_str(),
        source["git"]["revision"].as_str(),
    ) {
        git_source::fetch_for_run(url, rev, &dest, &run["metadata"])
            .map_err(|msg| SetupFailure::new(SOURCE_JOB, msg))
    } else {
        let kind = source
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_else(|| "none".into());
        Err(SetupFailure::new(
            SOURCE_JOB,
            format!(
                "a `{kind}` source is not supported by this runner (it runs `upload`, `git` and `local` sources)"
            ),
        ))
    }
}

/// What the engine needs once the source is here: the project, its pipeline, the compiled
/// pipeline binary, the entrypoint's description and the run's resolved args.
pub(crate) struct Prepared {
    pub(crate) project: project::Project,
    pub(crate) pipeline: project::PipelineConfig,
    pub(crate) compiled: compile::Compiled,
    pub(crate) info: sparkwing_core::protocol::PipelineInfo,
    pub(crate) args: serde_json::Map<String, serde_json::Value>,
}

/// Read the project at `root`, report a webhook run's branch check, compile `.sparkwing/` and
/// resolve the run's args against its entrypoint. Every failure is the `compile` pseudo-job's.
pub(crate) fn prepare_pipeline(
    client: &ApiClient,
    url: &str,
    Attempt { ns, name, .. }: &Attempt<'_>,
    home: &Home,
    root: &std::path::Path,
    run: &serde_json::Value,
    pipeline_name: &str,
) -> Result<Prepared, SetupFailure> {
    let project = project::discover(root).map_err(|e| {
        SetupFailure::new(
            COMPILE_JOB,
            format!("the source has no usable .sparkwing/: {e}"),
        )
    })?;
    let Some(pipeline) = project.pipeline(pipeline_name).cloned() else {
        return Err(SetupFailure::new(
            COMPILE_JOB,
            format!(
                "pipeline {pipeline_name:?} is not in {}",
                project.config_path().display()
            ),
        ));
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
    let compiled =
        compile::ensure(&home.cache, &project, compile::Progress::OnFailure).map_err(|e| {
            let mut lines: Vec<String> = match &e {
                CompileError::BuildFailed { output, .. }
                | CompileError::FetchFailed { output, .. } => {
                    output.lines().map(str::to_string).collect()
                }
                _ => Vec::new(),
            };
            let reason = format!("compile error: {e}");
            lines.push(reason.clone());
            SetupFailure {
                job: COMPILE_JOB,
                lines,
                reason,
            }
        })?;
    let Some(info) = compiled.describe.entrypoint(&pipeline.entrypoint).cloned() else {
        return Err(SetupFailure::new(
            COMPILE_JOB,
            format!(
                "pipeline {pipeline_name:?} names entrypoint {:?}, which .sparkwing/ does not register",
                pipeline.entrypoint
            ),
        ));
    };
    let tokens: Vec<String> = run["spec"]["args"]
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
    let args = sparkwing_core::args::resolve(&info.args, &pipeline.arg_defaults(), &tokens)
        .map_err(|e| SetupFailure::new(COMPILE_JOB, format!("the run's args: {e}")))?;
    Ok(Prepared {
        project,
        pipeline,
        compiled,
        info,
        args,
    })
}
