//! `sparkwing pipeline trigger NAME --profile P [ARGS] [--detach] [-o json]`: upload the project
//! to the profile's API, trigger a PipelineRun, and follow it (`docs/remote.md`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde_json::json;

use super::run::RunFlags;
use super::{api_error, start_dir, CliError, CmdResult};
use crate::cli::{OutputFormat, TriggerArgs};
use crate::exit::ExitCode;
use crate::project;
use crate::remote::follow::{self, Outcome, Printer, Select, Style};
use crate::remote::target;
use crate::remote::upload::{self, UploadError};
use sparkwing_api::wire::{CancelMode, Parent, RunSource, TriggerRequest};
use sparkwing_api::RemoteError;

/// Trigger's own flags among the args after the pipeline's name.
#[derive(Debug, Default, PartialEq)]
struct TriggerFlags {
    profile: Option<String>,
    detach: bool,
    json: bool,
    /// `--sw-cancel-on-interrupt`: SIGINT/SIGTERM cancel the remote run (an await job's child)
    /// instead of only stopping the follow.
    cancel_on_interrupt: bool,
    /// `--sw-timeout DURATION`: the run's `spec.timeout` (the API checks its form).
    timeout: Option<String>,
    /// `--sw-max-attempts N`: runner attempts allowed when runners are lost.
    max_attempts: Option<i32>,
    rest: Vec<String>,
}

fn usage(m: impl Into<String>) -> CliError {
    CliError::new(ExitCode::Usage, m)
}

impl TriggerFlags {
    /// Take `--profile P`, `--detach`, `-o json|pretty`, `--sw-timeout D`, `--sw-max-attempts N`
    /// (each valued one also as `--name=value`) out of `tokens` (a pipeline's own `--output` arg
    /// stays the pipeline's).
    fn parse(tokens: &[String]) -> Result<TriggerFlags, CliError> {
        const VALUED: [&str; 4] = ["--profile", "-o", "--sw-timeout", "--sw-max-attempts"];
        let mut f = TriggerFlags::default();
        let mut i = 0;
        while i < tokens.len() {
            let t = tokens[i].as_str();
            i += 1;
            let (name, inline) = match t.split_once('=') {
                Some((n, v)) if VALUED.contains(&n) => (n, Some(v.to_string())),
                _ => (t, None),
            };
            match name {
                "--detach" => f.detach = true,
                "--sw-cancel-on-interrupt" => f.cancel_on_interrupt = true,
                _ if VALUED.contains(&name) => {
                    let v = match inline {
                        Some(v) => v,
                        None => {
                            let Some(v) = tokens.get(i) else {
                                return Err(usage(format!("{name} needs a value")));
                            };
                            i += 1;
                            v.clone()
                        }
                    };
                    match name {
                        "--profile" => f.profile = Some(v),
                        "-o" => f.json = output_json(&v)?,
                        "--sw-timeout" => f.timeout = Some(v),
                        _ => f.max_attempts = Some(max_attempts(&v)?),
                    }
                }
                _ => f.rest.push(t.to_string()),
            }
        }
        Ok(f)
    }
}

fn max_attempts(v: &str) -> Result<i32, CliError> {
    v.parse().map_err(|_| {
        usage(format!(
            "--sw-max-attempts expects a whole number of runner attempts (1 to 10), got {v:?}"
        ))
    })
}

fn output_json(v: &str) -> Result<bool, CliError> {
    match v {
        "json" => Ok(true),
        "pretty" => Ok(false),
        _ => Err(usage(format!("unknown output {v:?}; use pretty or json"))),
    }
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
    let flags = TriggerFlags::parse(&args.args)?;
    let run_flags = RunFlags::parse(&flags.rest)?;
    let Some(pipeline_name) = args.pipeline.clone() else {
        use clap::CommandFactory;
        let mut cmd = crate::cli::Cli::command();
        cmd.build();
        let trig = cmd
            .find_subcommand_mut("pipeline")
            .and_then(|p| p.find_subcommand_mut("trigger"))
            .expect("pipeline trigger is a subcommand");
        if args.help || run_flags.help {
            let _ = trig.print_long_help();
            return Ok(ExitCode::Success);
        }
        let _ = trig.print_help();
        return Err(usage(
            "a pipeline name is required: sparkwing pipeline trigger NAME --profile PROFILE [ARGS] (see `sparkwing pipeline list`)",
        ));
    };
    if args.help || run_flags.help {
        println!("USAGE:\n    sparkwing pipeline trigger {pipeline_name} --profile PROFILE [ARGS] [--detach] [-o json] [--sw-pool POOL] [--sw-timeout DURATION] [--sw-max-attempts N]");
        println!("\nThe pipeline's args are those of `sparkwing run {pipeline_name} --help`.");
        return Ok(ExitCode::Success);
    }
    if run_flags.workers.is_some()
        || run_flags.box_slots.is_some()
        || run_flags.no_wait
        || run_flags.runner.is_some()
    {
        return Err(usage(
            "--sw-workers, --sw-box-slots, --sw-no-wait and --sw-runner are for local runs; a triggered run takes --sw-pool POOL (the cluster's runner pool), --sw-timeout DURATION and --sw-max-attempts N",
        ));
    }
    let profile = flags.profile.clone().or(args.profile.clone());
    let detach = flags.detach || args.detach;
    let json_out = flags.json || args.output == OutputFormat::Json;
    let dir: Option<PathBuf> = run_flags.dir.clone().or(args.dir.clone());
    // Local checks first: the profile, the project, the pipeline, its args.
    let t = target::resolve(profile.as_deref())?;
    let project = project::discover(&start_dir(dir.as_deref()))?;
    let pipeline = project
        .pipeline(&pipeline_name)
        .ok_or_else(|| super::run::unknown_pipeline(&project, &pipeline_name))?
        .clone();
    let pipeline_args = args_map(&run_flags.pipeline_args)?;
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
        eprintln!("warning: not uploaded: {s}");
    }
    eprintln!("{}", report.summary());

    let mut body = TriggerRequest::new(
        &pipeline.name,
        RunSource::Upload {
            id: report.id.clone(),
        },
    );
    body.args = pipeline_args;
    body.namespace = t.profile.namespace.clone();
    body.runner_pool = run_flags.pool.clone().or(t.profile.pool.clone());
    body.timeout = flags.timeout.clone();
    body.max_attempts = flags.max_attempts;
    // `--sw-parent RUN/JOB`: an await job's child records its parent (`docs/subpipelines.md`).
    if let Some((run, job)) = &run_flags.parent {
        body.parent = Some(Parent {
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
    let chain = crate::engine::subpipeline::own_chain();
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
    let mut printer = Printer::new(Style::detect(json_out), &full);
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
            phase.as_str(),
            report.compressed_bytes_sent,
            report.uploaded_files,
            report.files
        );
    }
    Ok(ExitCode::of_phase(phase))
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
                eprintln!(
                    "warning: the API at {} does not {what}; triggering without it",
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
        eprintln!("error: cannot cancel run {ns}/{name}: {e}");
    }
    std::process::exit(ExitCode::Cancelled.code())
}

impl Canceller {
    fn install(client: sparkwing_api::ApiClient, profile: String) -> Canceller {
        let state = std::sync::Arc::new(std::sync::Mutex::new(CancelState::default()));
        let shared = state.clone();
        let (client_here, profile_here) = (client.clone(), profile.clone());
        let (ready, is_ready) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = ready.send(());
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    let _ = ready.send(());
                    return;
                };
                let _ = ready.send(());
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                match st.run.clone() {
                    Some((ns, name)) => cancel_and_exit(&client, &profile, &ns, &name),
                    // Not triggered yet: `set_run` cancels it once it is.
                    None => st.interrupted = true,
                }
            });
        });
        let _ = is_ready.recv_timeout(std::time::Duration::from_secs(5));
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
    fn own_flags_are_taken_out() {
        let f = TriggerFlags::parse(&toks(&[
            "--env",
            "prod",
            "--profile",
            "p",
            "--detach",
            "-o",
            "json",
            "--fast",
        ]))
        .unwrap();
        assert_eq!(f.profile.as_deref(), Some("p"));
        assert!(f.detach && f.json);
        assert_eq!(f.rest, toks(&["--env", "prod", "--fast"]));
        assert!(TriggerFlags::parse(&toks(&["-o", "yaml"])).is_err());
    }

    #[test]
    fn run_settings_are_taken_out() {
        let f = TriggerFlags::parse(&toks(&[
            "--sw-timeout",
            "30m",
            "--x=1",
            "--sw-max-attempts=1",
            "--profile=ci",
            "-o=json",
        ]))
        .unwrap();
        assert_eq!(f.timeout.as_deref(), Some("30m"));
        assert_eq!(f.max_attempts, Some(1));
        assert_eq!(f.profile.as_deref(), Some("ci"));
        assert!(f.json);
        assert_eq!(f.rest, toks(&["--x=1"]));
        let e = TriggerFlags::parse(&toks(&["--sw-max-attempts", "many"])).unwrap_err();
        assert!(e.message.contains("whole number"), "{e:?}");
        assert_eq!(e.code, ExitCode::Usage);
        let e = TriggerFlags::parse(&toks(&["--sw-timeout"])).unwrap_err();
        assert!(e.message.contains("--sw-timeout needs a value"), "{e:?}");
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
