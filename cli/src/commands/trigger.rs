//! `sparkwing pipeline trigger NAME --profile P [ARGS] [--detach] [-o json]`: upload the project
//! to the profile's API, trigger a PipelineRun, and follow it (`docs/remote.md`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde_json::json;

use super::{api_error, start_dir, CliError, CmdResult};
use crate::cli::TriggerArgs;
use crate::exit::ExitCode;
use crate::remote::follow::{self, FollowPrinter, Outcome, Select, Style};
use crate::remote::target;
use crate::remote::upload::{self, UploadError};
use crate::settings::TriggerSettings;
use sparkwing_api::wire::{CancelMode, ParentRef, Source, TriggerRequest, UploadSource};
use sparkwing_api::RemoteError;
use sparkwing_engine::project;

fn usage(m: impl Into<String>) -> CliError {
    CliError::new(ExitCode::Usage, m)
}

/// The pipeline's args as the PipelineRun's `args` map: `--name value`, `--name=value`,
/// `name=value`, and `--flag` (followed by another `--` arg or nothing) as `"true"`.
fn args_map(tokens: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        i += 1;
        let (k, v) = if let Some(body) = t.strip_prefix("--") {
            match body.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => match tokens.get(i) {
                    Some(next) if !next.starts_with("--") => {
                        i += 1;
                        (body.to_string(), next.clone())
                    }
                    _ => (body.to_string(), "true".to_string()),
                },
            }
        } else if let Some((k, v)) = t.split_once('=') {
            (k.to_string(), v.to_string())
        } else {
            return Err(usage(format!(
                "unexpected argument {t:?}; pipeline args are --name value, --name=value, name=value or --flag"
            )));
        };
        if k.is_empty() {
            return Err(usage(format!("argument {t:?} has no name")));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(usage(format!("argument --{k} given twice")));
        }
    }
    Ok(out)
}

pub fn trigger(args: TriggerArgs) -> CmdResult {
    let flags = TriggerSettings::resolve(&args)?;
    let Some(pipeline_name) = flags.pipeline.clone() else {
        use clap::CommandFactory;
        let mut cmd = crate::cli::Cli::command();
        cmd.build();
        let trig = cmd
            .find_subcommand_mut("pipeline")
            .and_then(|p| p.find_subcommand_mut("trigger"))
            .expect("pipeline trigger is a subcommand");
        if flags.help {
            let _ = trig.print_long_help();
            return Ok(ExitCode::Success);
        }
        let _ = trig.print_help();
        return Err(usage(
            "a pipeline name is required: sparkwing pipeline trigger NAME --profile PROFILE [ARGS] (see `sparkwing pipeline list`)",
        ));
    };
    if flags.help {
        println!("USAGE:\n    sparkwing pipeline trigger {pipeline_name} --profile PROFILE [ARGS] [--detach] [-o json] [--sw-pool POOL] [--sw-timeout DURATION] [--sw-max-attempts N]");
        println!("\nThe pipeline's args are those of `sparkwing run {pipeline_name} --help`.");
        return Ok(ExitCode::Success);
    }
    let profile = flags.profile.clone();
    let detach = flags.detach;
    let json_out = flags.json;
    let dir: Option<PathBuf> = flags.dir.clone();
    // Local checks first: the profile, the project, the pipeline, its args.
    let t = target::resolve(profile.as_deref())?;
    let project = project::discover(&start_dir(dir.as_deref()))?;
    let pipeline = project
        .pipeline(&pipeline_name)
        .ok_or_else(|| super::pipeline_ref::unknown_pipeline(&project, &pipeline_name))?
        .clone();
    let pipeline_args = args_map(&flags.pipeline_args)?;
    // From here on an interrupt must not leave a remote run behind that nobody awaits.
    let canceller = flags
        .cancel_on_interrupt
        .then(|| Canceller::install(t.client.clone(), t.name.clone()));

    let report = match upload::upload(&t.client, &project.root) {
        Ok(r) => r,
        Err(UploadError::Remote(e)) => return Err(api_error(&t, e)),
        Err(e @ UploadError::Manifest(_)) => return Err(usage(e.to_string())),
        Err(e) => return Err(CliError::new(ExitCode::Internal, e.to_string())),
    };
    for s in &report.skipped {
        tracing::warn!("not uploaded: {s}");
    }
    eprintln!("{}", report.summary());

    let mut body = TriggerRequest::new(
        &pipeline.name,
        Source::Upload(UploadSource {
            id: report.id.clone(),
        }),
    );
    body.args = pipeline_args;
    body.namespace = t.profile.namespace.clone();
    body.runner_pool = flags.pool.clone().or(t.profile.pool.clone());
    body.timeout = flags.timeout.clone();
    body.max_attempts = flags.max_attempts;
    body.no_cache = flags.no_cache;
    // `--sw-parent RUN/JOB`: an await job's child records its parent (`docs/subpipelines.md`).
    if let Some((run, job)) = &flags.parent {
        body.parent = Some(ParentRef {
            run: run.clone(),
            job: job.clone(),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty()),
        });
    }
    // The pipelines this run descends from (`SPARKWING_PIPELINE_CHAIN`, which the engine sets on
    // every job and await job it starts, ending with its own pipeline): the API refuses a cycle and
    // records the chain, and the run's runner passes it on to the run's jobs.
    let chain = sparkwing_engine::subpipeline::own_chain();
    if !chain.is_empty() {
        body.pipeline_chain = Some(chain.clone());
    }
    let run = trigger_run(&t, &mut body, &pipeline.name, &chain)?;
    let full = format!("{}/{}", run.namespace, run.name);

    if detach {
        if json_out {
            println!(
                "{}",
                json!({"namespace": run.namespace, "name": run.name, "profile": t.name, "upload": report})
            );
        } else {
            println!("{full}");
        }
        return Ok(ExitCode::Success);
    }

    match &canceller {
        Some(c) => {
            c.set_run(&run.namespace, &run.name);
            eprintln!(
                "triggered {full} on profile {:?}; following it (an interrupt cancels the run)",
                t.name
            );
        }
        None => {
            follow::exit_on_ctrl_c(format!(
                "stopped following; run {full} goes on. Cancel it with: sparkwing runs cancel {full} --profile {}",
                t.name
            ));
            eprintln!(
                "triggered {full} on profile {:?}; following it (Ctrl-C stops following, the run goes on)",
                t.name
            );
        }
    }
    let mut printer = FollowPrinter::new(Style::detect(json_out), &full);
    let never = AtomicBool::new(false);
    let outcome = follow::follow_run(
        &t.client,
        &t.logs,
        &run.namespace,
        &run.name,
        &Select::default(),
        &mut printer,
        &never,
    )
    .map_err(|e| api_error(&t, e))?;
    let phase = match outcome {
        Outcome::Finished(p) => p,
        Outcome::Interrupted => return Ok(ExitCode::Cancelled),
    };
    if json_out {
        println!(
            "{}",
            json!({"run": full, "event": "end", "phase": phase, "upload": report})
        );
    } else {
        eprintln!(
            "run {full} {}; sent {} bytes compressed ({} of {} files uploaded)",
            phase.phase_str(),
            report.compressed_bytes_sent,
            report.uploaded_files,
            report.files
        );
    }
    Ok(ExitCode::of_run(phase))
}

/// Optional trigger fields an older API refuses as unknown, and what it then does not do: the run
/// matters more than them, so the trigger warns and goes on without.
const OPTIONAL_FIELDS: [(&str, &str); 2] = [
    ("parent", "record a run's parent"),
    ("pipelineChain", "check the pipeline chain"),
];

/// Whether `body` sets the optional field `field` (one of [`OPTIONAL_FIELDS`]); `clear` unsets it.
fn optional_field(body: &mut TriggerRequest, field: &str, clear: bool) -> bool {
    match field {
        "parent" if clear => body.parent.take().is_some(),
        "parent" => body.parent.is_some(),
        "pipelineChain" if clear => body.pipeline_chain.take().is_some(),
        "pipelineChain" => body.pipeline_chain.is_some(),
        _ => false,
    }
}

/// What the API says when a pipeline is already in the chain (`docs/api.md`).
const CYCLE: &str = "cycle of pipelines awaiting each other";

/// `refusing to run pipeline "a" on profile "p": cycle of pipelines awaiting each other: a -> b
/// -> a (SPARKWING_PIPELINE_CHAIN is "a,b"; WHO)`: exit 2, as `sparkwing run` refuses a cycle.
fn cycle_error(
    t: &target::Target,
    pipeline: &str,
    chain: &[String],
    cycle: &str,
    who: &str,
) -> CliError {
    usage(format!(
        "refusing to run pipeline {pipeline:?} on profile {:?}: {cycle} ({} is {:?}; {who})",
        t.name,
        sparkwing_core::subpipeline::CHAIN_ENV,
        chain.join(",")
    ))
}

/// `POST /api/v1/runs` with `body`. An optional field the API does not know is dropped (with a
/// warning) and the trigger sent again; without `pipelineChain` the chain is checked here
/// instead. A cycle the API refuses is exit 2 naming it.
fn trigger_run(
    t: &target::Target,
    body: &mut TriggerRequest,
    pipeline: &str,
    chain: &[String],
) -> Result<sparkwing_api::wire::CreatedRun, CliError> {
    loop {
        let e = match t.client.trigger(body) {
            Ok(run) => return Ok(run),
            Err(e) => e,
        };
        if let RemoteError::Status {
            status: 400,
            message,
            ..
        } = &e
        {
            if message.starts_with(CYCLE) {
                return Err(cycle_error(
                    t,
                    pipeline,
                    chain,
                    message,
                    &format!("the API at {} refused it", t.client.base_url()),
                ));
            }
            let unknown = OPTIONAL_FIELDS.iter().find(|(field, _)| {
                optional_field(body, field, false)
                    && message.contains(&format!("unknown field `{field}`"))
            });
            if let Some((field, what)) = unknown {
                tracing::warn!(
                    "the API at {} does not {what}; triggering without it",
                    t.client.base_url()
                );
                optional_field(body, field, true);
                if *field == "pipelineChain" {
                    sparkwing_core::subpipeline::check_chain(chain, pipeline).map_err(|c| {
                        cycle_error(t, pipeline, chain, &c.to_string(), "checked here")
                    })?;
                }
                continue;
            }
        }
        return Err(api_error(t, e));
    }
}

/// `--sw-cancel-on-interrupt`: on SIGINT or SIGTERM, cancel the triggered run through the API
/// (finally jobs still run), then exit 130. An interrupt that comes before the run exists cancels
/// it as soon as it does.
struct Canceller {
    state: std::sync::Arc<std::sync::Mutex<CancelState>>,
    client: sparkwing_api::ApiClient,
    profile: String,
}

#[derive(Default)]
struct CancelState {
    run: Option<(String, String)>,
    interrupted: bool,
}

fn cancel_and_exit(client: &sparkwing_api::ApiClient, profile: &str, ns: &str, name: &str) -> ! {
    eprintln!("interrupted: cancelling run {ns}/{name} on profile {profile:?}");
    if let Err(e) = client.cancel_run(ns, name, Some(CancelMode::CancelledRunFinally)) {
        tracing::error!("cannot cancel run {ns}/{name}: {e}");
    }
    std::process::exit(ExitCode::Cancelled.code())
}

impl Canceller {
    fn install(client: sparkwing_api::ApiClient, profile: String) -> Canceller {
        let state = std::sync::Arc::new(std::sync::Mutex::new(CancelState::default()));
        let shared = state.clone();
        let (client_here, profile_here) = (client.clone(), profile.clone());
        use tokio::signal::unix::SignalKind;
        sparkwing_engine::runtime::on_signal(
            &[SignalKind::interrupt(), SignalKind::terminate()],
            move || {
                let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                match st.run.clone() {
                    Some((ns, name)) => cancel_and_exit(&client, &profile, &ns, &name),
                    // Not triggered yet: `set_run` cancels it once it is.
                    None => st.interrupted = true,
                }
            },
        );
        Canceller {
            state,
            client: client_here,
            profile: profile_here,
        }
    }

    /// The run now exists: an interrupt cancels it (at once, if one came already).
    fn set_run(&self, ns: &str, name: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.interrupted {
            cancel_and_exit(&self.client, &self.profile, ns, name);
        }
        st.run = Some((ns.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_become_a_map() {
        let m = args_map(&toks(&["--env", "prod", "--fast", "--n=3", "k=v"])).unwrap();
        assert_eq!(m["env"], "prod");
        assert_eq!(m["fast"], "true");
        assert_eq!(m["n"], "3");
        assert_eq!(m["k"], "v");
        assert!(args_map(&toks(&["bare"])).is_err());
        assert!(args_map(&toks(&["--a", "1", "--a", "2"])).is_err());
    }
}
