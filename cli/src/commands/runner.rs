//! `sparkwing runner --run NS/NAME --attempt N` (a cluster run's runner Job), `sparkwing runner
//! --warm --pool NS/POOL` (a RunnerPool's warm pod), `sparkwing runner gc`, `sparkwing
//! runner-image build` and the hidden `sparkwing __runner` (the entry point of a runner
//! container).

use super::{CliError, CmdResult};
use crate::cli::{ImageBuildArgs, RunnerArgs, RunnerEntryArgs};
use crate::compile::{self, CompileError};
use crate::docker::{self, client, gc, image, pool, request};
use crate::engine::{self, sink, RunSink, SinkLine};
use crate::exit::ExitCode;
use crate::home::Home;
use crate::project;
use crate::remote::git_source;
use crate::remote::materialise;
use crate::remote::podinfo;
use crate::remote::sink::ApiSink;
use futures_util::FutureExt;
use sparkwing_api::{ApiClient, RemoteError};
use sparkwing_core::{JobState, RunPhase};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(crate::runtime::build()?)
}

pub fn gc() -> CmdResult {
    let home = Home::from_env();
    let removed = runtime()?.block_on(async {
        let client = client::connect().await?;
        gc::collect(&client, &home).await
    })?;
    if removed.is_empty() {
        println!("no orphaned runner containers");
    }
    for r in &removed {
        println!("removed {} ({})", r.name, r.why);
    }
    Ok(ExitCode::Success)
}

pub fn build_image(args: ImageBuildArgs) -> CmdResult {
    let tag = args.tag.unwrap_or_else(docker::runner_image);
    let started = std::time::Instant::now();
    let built = runtime()?.block_on(async {
        let client = client::connect().await?;
        image::build(&client, &tag).await
    })?;
    match built {
        image::Built::UpToDate => println!("runner image {tag} is up to date"),
        image::Built::Imported { bytes } => println!(
            "built runner image {tag} ({:.1} MiB root filesystem) in {:.1}s",
            bytes as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(ExitCode::Success)
}

/// Inside a runner container: read the request (waiting for a pool's claim first when warm),
/// then continue the run with the same engine as the process executor.
pub fn entry(args: RunnerEntryArgs) -> CmdResult {
    let path = if args.warm {
        let (Some(pool_name), Some(name)) = (args.pool.as_deref(), args.name.as_deref()) else {
            return Err(CliError::new(
                ExitCode::Usage,
                "__runner --warm needs --pool NAME and --name CONTAINER",
            ));
        };
        match pool::wait_for_claim(&Home::from_env(), pool_name, name)? {
            Some(claim) => claim.request,
            // The pool went away before anyone claimed this runner.
            None => return Ok(ExitCode::Success),
        }
    } else {
        args.request.ok_or_else(|| {
            CliError::new(ExitCode::Usage, "__runner needs --request FILE or --warm")
        })?
    };
    let r = request::take(&path)?;
    // The pipeline's secrets, as the host had them: before any thread starts.
    for (k, v) in &r.env {
        std::env::set_var(k, v);
    }
    let (req, run_id) = r.into_run_request();
    runtime()?
        .block_on(engine::resume(&req, &run_id))
        .map_err(|e| CliError::new(ExitCode::Internal, e.to_string()))
}

/// The API's URL and the run's token, from the runner Job's environment.
pub use sparkwing_api::names::env::{API_TOKEN as ENV_API_TOKEN, API_URL as ENV_API_URL};

/// The pseudo-job under which a runner reports fetching the source.
pub const SOURCE_JOB: &str = "source";
/// The pseudo-job under which a runner reports compiling `.sparkwing/` (and reading the
/// project and the run's args), with the compiler's output as its log.
pub const COMPILE_JOB: &str = "compile";

fn required_env(name: &str) -> Result<String, CliError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(CliError::new(
            ExitCode::RunnerEnv,
            format!(
                "{name} is not set: `sparkwing runner --run` reports to the Sparkwing API; the operator sets {ENV_API_URL} and {ENV_API_TOKEN} on runner Jobs (to run one by hand, export both: the API's URL and the run's runner token)"
            ),
        )),
    }
}

fn api_error(what: &str, e: RemoteError) -> CliError {
    let hint = match e.status() {
        Some(401) => {
            "; the token is missing, invalid or revoked (a run's token is revoked when it finishes)"
        }
        Some(403) => "; the token does not grant this run (a runner token is scoped to one run)",
        Some(404) => "; no such run (deleted, or a typo in --run)",
        _ => "",
    };
    CliError::new(ExitCode::Api, format!("{what}: {e}{hint}"))
}

/// Report a failure before the pipeline started as a pseudo-job with `lines` as its log, end
/// the run `Failed` with `reason`, and exit 1.
fn fail_setup(sink: &ApiSink, job: &str, lines: &[String], reason: &str) -> CmdResult {
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
    Err(CliError::new(ExitCode::RunFailed, reason.to_string()))
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

/// A warm runner's pool credential and where it reads its own pod (set by the operator on warm
/// pods; docs/runner.md).
pub use sparkwing_api::names::env::{
    PODINFO_DIR as ENV_PODINFO_DIR, POD_NAME as ENV_POD_NAME, POOL_TOKEN as ENV_POOL_TOKEN,
};

/// How often an idle warm runner reads its annotations file (a cheap file read).
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a claimed warm runner keeps asking the API for its run's token (409 while the API
/// does not see the claim yet, unreachable, 5xx).
const EXCHANGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

fn warm_env(name: &str, why: &str) -> Result<String, CliError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(CliError::new(
            ExitCode::RunnerEnv,
            format!(
                "{name} is not set: {why} (the operator sets it on warm pods; see docs/runner.md)"
            ),
        )),
    }
}

/// `sparkwing runner --warm --pool NS/POOL`: a RunnerPool's warm runner. Idles reading its own
/// pod's annotations (a downwardAPI volume) until the operator claims it, trades the pool token
/// for the run's token at the API, then runs that attempt exactly as `--run` does. SIGTERM while
/// idle (a reap) exits 0 at once.
fn warm(args: RunnerArgs) -> CmdResult {
    if !args.warm {
        return Err(CliError::new(
            ExitCode::Usage,
            "--pool is for a warm runner: sparkwing runner --warm --pool NS/POOL",
        ));
    }
    if args.run.is_some() || args.attempt.is_some() {
        return Err(CliError::new(
            ExitCode::Usage,
            "sparkwing runner --warm learns its run from its claim: drop --run and --attempt",
        ));
    }
    let Some(pool_ref) = args.pool.as_deref() else {
        return Err(CliError::new(
            ExitCode::Usage,
            "sparkwing runner --warm needs --pool NS/POOL (the operator passes it)",
        ));
    };
    let (ns, pool) = pool_ref
        .split_once('/')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty() && !p.contains('/'))
        .ok_or_else(|| {
            CliError::new(
                ExitCode::Usage,
                format!("--pool {pool_ref:?} is not <namespace>/<pool>"),
            )
        })?;
    let url = required_env(ENV_API_URL)?;
    let pool_token = warm_env(
        ENV_POOL_TOKEN,
        &format!(
            "a warm runner trades the pool's token (the Secret {pool}-pool-token, which the operator keeps only when it serves the API in the same process, `--api-addr`) for its run's token; without an API give the pool `minIdle: 0` so its runs get runner Jobs"
        ),
    )?;
    let podinfo = PathBuf::from(warm_env(
        ENV_PODINFO_DIR,
        "the directory of the pod's downwardAPI volume, where the claim appears",
    )?);
    let pod = warm_env(
        ENV_POD_NAME,
        "the warm pod's own name, which the API checks the claim of",
    )?;
    let pool_client = ApiClient::new(&url, &pool_token)
        .map_err(|e| CliError::new(ExitCode::RunnerEnv, format!("{ENV_API_URL}: {e}")))?;
    let rt = runtime()?;
    let mut term = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    tracing::info!(
        "runner: warm runner {pod} of pool {ns}/{pool}, waiting for a claim in {}",
        podinfo.join(podinfo::ANNOTATIONS_FILE).display()
    );
    let idle_since = Instant::now();
    let mut warned: Option<String> = None;
    let (run, claimed_attempt) = loop {
        match podinfo::read_claim(&podinfo) {
            Ok(Some(claim)) => break claim,
            Ok(None) => {}
            Err(e) => {
                if warned.as_deref() != Some(e.as_str()) {
                    tracing::warn!("{e}; still waiting for a claim");
                    warned = Some(e);
                }
            }
        }
        let terminated = rt.block_on(async {
            tokio::select! {
                _ = term.recv() => true,
                () = tokio::time::sleep(CLAIM_POLL) => false,
            }
        });
        if terminated {
            tracing::info!("runner: SIGTERM while idle (reaped); exiting");
            return Ok(ExitCode::Success);
        }
    };
    tracing::info!(
        "runner: claimed by run {ns}/{run} attempt {claimed_attempt} after {:.1}s idle",
        idle_since.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + EXCHANGE_DEADLINE;
    let mut backoff = std::time::Duration::from_millis(100);
    let (token, attempt) = loop {
        match pool_client.claim_token(ns, pool, &pod, &run) {
            Ok(got) => break (got.token, got.attempt),
            Err(e) => {
                let retry =
                    e.is_unreachable() || matches!(e.status(), Some(409 | 408 | 429 | 500..=599));
                if !retry || Instant::now() >= deadline {
                    return Err(api_error(
                        &format!(
                            "cannot trade the pool token of {ns}/{pool} for run {ns}/{run}'s token at {url}"
                        ),
                        e,
                    ));
                }
            }
        }
        let terminated = rt.block_on(async {
            tokio::select! {
                _ = term.recv() => true,
                () = tokio::time::sleep(backoff) => false,
            }
        });
        if terminated {
            tracing::info!("runner: SIGTERM before run {ns}/{run} started; exiting");
            return Ok(ExitCode::Cancelled);
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
    };
    if attempt != claimed_attempt {
        tracing::warn!(
            "the pod's annotations say attempt {claimed_attempt}, the API {attempt}; running attempt {attempt}"
        );
    }
    let client = ApiClient::new(&url, &token)
        .map_err(|e| CliError::new(ExitCode::RunnerEnv, format!("{ENV_API_URL}: {e}")))?;
    execute_attempt(&rt, term, &client, &url, ns, &run, attempt)
}

/// `sparkwing runner --run NS/NAME --attempt N`: execute one attempt of a cluster run (the
/// entry point of the operator's runner Job; docs/runner.md).
pub fn cluster(args: RunnerArgs) -> CmdResult {
    if args.warm || args.pool.is_some() {
        return warm(args);
    }
    let Some(run) = args.run.as_deref() else {
        return Err(CliError::new(
            ExitCode::Usage,
            "sparkwing runner needs --run NS/NAME --attempt N (one attempt of a cluster run) or a subcommand (gc); see `sparkwing runner --help`",
        ));
    };
    let (ns, name) = run
        .split_once('/')
        .filter(|(n, r)| !n.is_empty() && !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| {
            CliError::new(
                ExitCode::Usage,
                format!("--run {run:?} is not <namespace>/<name>"),
            )
        })?;
    let attempt = args.attempt.ok_or_else(|| {
        CliError::new(
            ExitCode::Usage,
            "sparkwing runner --run needs --attempt N (the operator passes it)",
        )
    })?;
    let url = required_env(ENV_API_URL)?;
    let token = required_env(ENV_API_TOKEN)?;
    let client = ApiClient::new(&url, &token)
        .map_err(|e| CliError::new(ExitCode::RunnerEnv, format!("{ENV_API_URL}: {e}")))?;
    let rt = runtime()?;
    // SIGTERM before the engine takes over (fetching, compiling) cancels the run once that step
    // is over; from then on the engine's own handler cancels it (finally jobs run).
    let early_term = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    execute_attempt(&rt, early_term, &client, &url, ns, name, attempt)
}

/// One attempt of a cluster run with a client holding the run's token: what `--run` does, and
/// what a warm runner does once claimed. `early_term` is the SIGTERM stream installed before.
fn execute_attempt(
    rt: &tokio::runtime::Runtime,
    mut early_term: tokio::signal::unix::Signal,
    client: &ApiClient,
    url: &str,
    ns: &str,
    name: &str,
    attempt: u32,
) -> CmdResult {
    let view = client
        .get_run(ns, name)
        .map_err(|e| api_error(&format!("cannot read run {ns}/{name} from {url}"), e))?;
    // The PipelineRun as the API shows it (`Null` if absent: every lookup below then fails
    // with its own message).
    let run = view.run.unwrap_or_default();
    let spec = &run["spec"];
    let Some(pipeline_name) = spec["pipeline"].as_str().map(str::to_string) else {
        return Err(CliError::new(
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
            .map_err(|e| CliError::new(ExitCode::Usage, e.message));
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
    let box_slots = crate::box_slots::resolve_cap(None)
        .map_err(|e| CliError::new(ExitCode::Usage, e.to_string()))?
        .map(|max| engine::BoxGate {
            slots: crate::box_slots::BoxSlots::new(&home.root, max),
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
        format: super::run::log_format()?,
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
            return Err(CliError::new(ExitCode::Internal, msg));
        }
    };
    drop(compiled);
    tracing::info!(
        "runner: {} log lines delivered to {url}",
        sink.delivered_lines()
    );
    Ok(code)
}
