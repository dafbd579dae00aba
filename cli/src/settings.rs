//! One settings layer between clap and the commands: `run` and `pipeline trigger` take their own
//! flags (`--sw-*`, `-C`, `--profile`, ...) from among the pipeline's args with one scanner, and
//! resolve them with their clap options into the settings the command runs with. Every bad
//! input is a usage error (exit 2) naming the flag and what it takes.

use std::path::PathBuf;

use crate::cli::{OutputFormat, PlanArgs, PlanFormat, RunArgs, TriggerArgs};
use crate::exit::CliError;
use crate::exit::ExitCode;
use clap::ValueEnum;
use sparkwing_core::selection::Selection;

fn usage(m: impl Into<String>) -> CliError {
    CliError::new(ExitCode::Usage, m)
}

/// Which setting a flag sets.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Key {
    Help,
    Dir,
    Workers,
    BoxSlots,
    NoWait,
    NoCache,
    Runner,
    Pool,
    Profile,
    Parent,
    Detach,
    CancelOnInterrupt,
    Output,
    Timeout,
    MaxAttempts,
    DryRun,
    Only,
    StartAt,
    StopAt,
}

/// How a flag is spelled among the args.
struct Flag {
    names: &'static [&'static str],
    key: Key,
    /// What its value is, for "`--x` needs ..."; `None`: a switch.
    value: Option<&'static str>,
    /// Also `--name=value`.
    inline: bool,
}

const fn switch(names: &'static [&'static str], key: Key) -> Flag {
    Flag {
        names,
        key,
        value: None,
        inline: false,
    }
}

const fn valued(
    names: &'static [&'static str],
    key: Key,
    what: &'static str,
    inline: bool,
) -> Flag {
    Flag {
        names,
        key,
        value: Some(what),
        inline,
    }
}

/// The flags of a run, after the pipeline's name (`run`, and `trigger`'s second pass).
const RUN_FLAGS: &[Flag] = &[
    switch(&["--help", "-h"], Key::Help),
    valued(&["-C"], Key::Dir, "a directory", false),
    valued(&["--sw-workers"], Key::Workers, "a number of workers", true),
    valued(
        &["--sw-box-slots"],
        Key::BoxSlots,
        "a number of slots",
        true,
    ),
    switch(&["--sw-no-wait"], Key::NoWait),
    switch(&["--sw-no-cache"], Key::NoCache),
    valued(
        &["--sw-runner"],
        Key::Runner,
        "a runner (process or docker)",
        true,
    ),
    valued(&["--sw-pool"], Key::Pool, "a pool name", true),
    valued(&["--profile"], Key::Profile, "a profile name", false),
    valued(&["--sw-profile"], Key::Profile, "a profile name", true),
    valued(&["--sw-parent"], Key::Parent, "RUN/JOB", true),
    switch(&["--sw-dry-run"], Key::DryRun),
    valued(&["--sw-only"], Key::Only, "a job id", true),
    valued(&["--sw-start-at"], Key::StartAt, "a job id", true),
    valued(&["--sw-stop-at"], Key::StopAt, "a job id", true),
];

/// What `run` says of a `--sw-*` flag it does not know.
const UNKNOWN_RUN_FLAG: &str = "run flags are --sw-workers N, --sw-box-slots N, --sw-no-wait, --sw-no-cache, --sw-runner process|docker, --sw-pool NAME, --sw-dry-run, --sw-only JOB, --sw-start-at JOB, --sw-stop-at JOB (and -C DIR, --profile NAME)";

/// The flags of `pipeline plan` among the pipeline's args.
const PLAN_FLAGS: &[Flag] = &[
    valued(
        &["-o"],
        Key::Output,
        "an output format (pretty, json or dot)",
        true,
    ),
    valued(&["-C"], Key::Dir, "a directory", false),
];

/// What `pipeline plan` says of a `--sw-*` flag.
const UNKNOWN_PLAN_FLAG: &str =
    "`pipeline plan` takes the pipeline's args, -o pretty|json|dot and -C DIR";

/// The flags only `pipeline trigger` takes, taken out first (the rest are a run's).
const TRIGGER_FLAGS: &[Flag] = &[
    switch(&["--detach"], Key::Detach),
    switch(&["--sw-cancel-on-interrupt"], Key::CancelOnInterrupt),
    valued(&["--profile"], Key::Profile, "a value", true),
    valued(&["-o"], Key::Output, "a value", true),
    valued(&["--sw-timeout"], Key::Timeout, "a value", true),
    valued(&["--sw-max-attempts"], Key::MaxAttempts, "a value", true),
];

/// The flags found (in order, with their values) and the tokens that are none of them.
type Scanned = (Vec<(Key, Option<String>)>, Vec<String>);

/// The flags of `flags` found in `tokens`, in order, and the tokens that are none of them.
/// With `unknown` set, any other `--sw-*` token is an error saying `unknown`.
fn scan(tokens: &[String], flags: &[Flag], unknown: Option<&str>) -> Result<Scanned, CliError> {
    let find = |name: &str| flags.iter().find(|f| f.names.contains(&name));
    let mut found = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        i += 1;
        let (name, inline) = match t.split_once('=') {
            Some((n, v))
                if find(n).is_some_and(|f| f.inline && f.value.is_some())
                    || (unknown.is_some() && n.starts_with("--sw-")) =>
            {
                (n, Some(v.to_string()))
            }
            _ => (t.as_str(), None),
        };
        let Some(flag) = find(name) else {
            if let Some(known) = unknown.filter(|_| name.starts_with("--sw-")) {
                return Err(usage(format!("unknown sparkwing flag {name}; {known}")));
            }
            rest.push(t.clone());
            continue;
        };
        let value = match (flag.value, inline) {
            (None, _) => None,
            (Some(_), Some(v)) => Some(v),
            (Some(what), None) => {
                let v = tokens
                    .get(i)
                    .cloned()
                    .ok_or_else(|| usage(format!("{name} needs {what}")))?;
                i += 1;
                Some(v)
            }
        };
        found.push((flag.key, value));
    }
    Ok((found, rest))
}

/// Sparkwing's own flags among a run's args (`--sw-*`), the rest being the pipeline's.
#[derive(Debug, Default, PartialEq)]
pub struct RunFlags {
    pub workers: Option<usize>,
    pub box_slots: Option<u32>,
    pub no_wait: bool,
    /// `--sw-no-cache`: memoized jobs run even when a result for their inputs exists.
    pub no_cache: bool,
    pub dir: Option<PathBuf>,
    pub help: bool,
    /// `--sw-runner`: `process` or `docker`.
    pub runner: Option<String>,
    /// `--sw-pool`: claim a warm runner container from this local pool.
    pub pool: Option<String>,
    /// `--profile` / `--sw-profile`: also record the run on this profile's cluster API.
    pub profile: Option<String>,
    /// `--sw-parent RUN/JOB`: this run is a sub-pipeline awaited by that job (set by the engine).
    pub parent: Option<(String, String)>,
    /// `--sw-dry-run`: print the plan; run and record nothing.
    pub dry_run: bool,
    /// `--sw-only`, `--sw-start-at`, `--sw-stop-at`: the jobs that execute.
    pub selection: Selection,
    pub pipeline_args: Vec<String>,
}

impl RunFlags {
    pub fn parse(tokens: &[String]) -> Result<RunFlags, CliError> {
        let (found, rest) = scan(tokens, RUN_FLAGS, Some(UNKNOWN_RUN_FLAG))?;
        let mut flags = RunFlags {
            pipeline_args: rest,
            ..RunFlags::default()
        };
        for (key, value) in found {
            let v = value.unwrap_or_default();
            match key {
                Key::Help => flags.help = true,
                Key::Dir => flags.dir = Some(PathBuf::from(v)),
                Key::Workers => flags.workers = Some(positive("--sw-workers", &v)?),
                Key::BoxSlots => flags.box_slots = Some(positive("--sw-box-slots", &v)?),
                Key::NoWait => flags.no_wait = true,
                Key::NoCache => flags.no_cache = true,
                Key::DryRun => flags.dry_run = true,
                Key::Only => flags.selection.only = Some(job_id("--sw-only", v)?),
                Key::StartAt => flags.selection.start_at = Some(job_id("--sw-start-at", v)?),
                Key::StopAt => flags.selection.stop_at = Some(job_id("--sw-stop-at", v)?),
                Key::Runner => flags.runner = Some(v),
                Key::Pool => flags.pool = Some(v),
                Key::Profile => flags.profile = Some(v),
                Key::Parent => {
                    // A job name has no `/`; a run may (`namespace/name` on a cluster).
                    let (run, job) = v
                        .rsplit_once('/')
                        .filter(|(r, j)| !r.is_empty() && !j.is_empty())
                        .ok_or_else(|| usage(format!("--sw-parent expects RUN/JOB, got {v:?}")))?;
                    flags.parent = Some((run.to_string(), job.to_string()));
                }
                _ => unreachable!("{key:?} is not a run flag"),
            }
        }
        Ok(flags)
    }
}

fn job_id(flag: &str, v: String) -> Result<String, CliError> {
    if v.is_empty() || v.starts_with('-') {
        return Err(usage(format!("{flag} needs a job id, got {v:?}")));
    }
    Ok(v)
}

fn positive<N: std::str::FromStr + PartialOrd + Default>(
    flag: &str,
    v: &str,
) -> Result<N, CliError> {
    v.parse()
        .ok()
        .filter(|n| *n > N::default())
        .ok_or_else(|| usage(format!("{flag} expects a positive number, got {v:?}")))
}

/// How a run is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    Process,
    Docker,
}

impl Runner {
    /// As `--runner` spells it (and the run record keeps it).
    pub fn as_str(self) -> &'static str {
        match self {
            Runner::Process => "process",
            Runner::Docker => "docker",
        }
    }
}

/// `sparkwing run`'s settings: its clap options and the flags among its args, resolved.
#[derive(Debug)]
pub struct RunSettings {
    /// `None`: no pipeline named (clap's help or a usage error).
    pub pipeline: Option<String>,
    pub help: bool,
    pub runner: Runner,
    pub pool: Option<String>,
    pub profile: Option<String>,
    pub dir: Option<PathBuf>,
    pub workers: Option<usize>,
    pub box_slots: Option<u32>,
    pub no_wait: bool,
    /// `--sw-no-cache`: memoized jobs run even when a result for their inputs exists.
    pub no_cache: bool,
    pub parent: Option<(String, String)>,
    /// `--sw-dry-run`: print the plan; run and record nothing.
    pub dry_run: bool,
    /// `--sw-only`, `--sw-start-at`, `--sw-stop-at`: the jobs that execute.
    pub selection: Selection,
    pub pipeline_args: Vec<String>,
}

impl RunSettings {
    /// Flags among the args win over the same options before the pipeline's name.
    pub fn resolve(args: &RunArgs) -> Result<RunSettings, CliError> {
        let flags = RunFlags::parse(&args.args)?;
        let help = flags.help || args.help;
        let mut settings = RunSettings {
            pipeline: args.pipeline.clone(),
            help,
            runner: Runner::Process,
            pool: flags.pool.or(args.pool.clone()),
            profile: flags.profile.or(args.profile.clone()),
            dir: flags.dir.or(args.dir.clone()),
            workers: flags.workers,
            box_slots: flags.box_slots,
            no_wait: flags.no_wait,
            no_cache: flags.no_cache,
            parent: flags.parent,
            dry_run: flags.dry_run,
            selection: flags.selection,
            pipeline_args: flags.pipeline_args,
        };
        if settings.pipeline.is_none() {
            // Only the help or the missing name is said then.
            return Ok(settings);
        }
        settings.runner = match flags.runner.or(args.runner.clone()).as_deref() {
            None | Some("process") => Runner::Process,
            Some("docker") => Runner::Docker,
            Some(other) => {
                return Err(usage(format!(
                    "unknown runner {other:?}; use process (the default) or docker"
                )))
            }
        };
        if settings.profile.is_some() && settings.runner == Runner::Docker {
            return Err(usage(
                "--profile with --runner docker is not supported yet; use the process runner (the default) to mirror a run to a cluster API",
            ));
        }
        if !settings.selection.is_all() && settings.runner == Runner::Docker {
            return Err(usage(
                "--sw-only, --sw-start-at and --sw-stop-at are not supported with --runner docker yet; use the process runner (the default)",
            ));
        }
        if settings.pool.is_some() && settings.runner != Runner::Docker {
            return Err(usage(
                "--pool needs --runner docker (pools hold runner containers)",
            ));
        }
        Ok(settings)
    }
}

/// Trigger's own flags among the args after the pipeline's name.
#[derive(Debug, Default, PartialEq)]
pub struct TriggerFlags {
    pub profile: Option<String>,
    pub detach: bool,
    pub json: bool,
    /// `--sw-cancel-on-interrupt`: SIGINT/SIGTERM cancel the remote run (an await job's child)
    /// instead of only stopping the follow.
    pub cancel_on_interrupt: bool,
    /// `--sw-timeout DURATION`: the run's `spec.timeout` (the API checks its form).
    pub timeout: Option<String>,
    /// `--sw-max-attempts N`: runner attempts allowed when runners are lost.
    pub max_attempts: Option<i32>,
    pub rest: Vec<String>,
}

impl TriggerFlags {
    /// Take `--profile P`, `--detach`, `-o json|pretty`, `--sw-timeout D`, `--sw-max-attempts N`
    /// (each valued one also as `--name=value`) out of `tokens` (a pipeline's own `--output` arg
    /// stays the pipeline's).
    pub fn parse(tokens: &[String]) -> Result<TriggerFlags, CliError> {
        let (found, rest) = scan(tokens, TRIGGER_FLAGS, None)?;
        let mut f = TriggerFlags {
            rest,
            ..TriggerFlags::default()
        };
        for (key, value) in found {
            let v = value.unwrap_or_default();
            match key {
                Key::Detach => f.detach = true,
                Key::CancelOnInterrupt => f.cancel_on_interrupt = true,
                Key::Profile => f.profile = Some(v),
                Key::Output => f.json = output_json(&v)?,
                Key::Timeout => f.timeout = Some(v),
                Key::MaxAttempts => f.max_attempts = Some(max_attempts(&v)?),
                _ => unreachable!("{key:?} is not a trigger flag"),
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

/// `sparkwing pipeline trigger`'s settings: its clap options, its own flags and a run's flags
/// among its args, resolved.
#[derive(Debug)]
pub struct TriggerSettings {
    /// `None`: no pipeline named (clap's help or a usage error).
    pub pipeline: Option<String>,
    pub help: bool,
    pub profile: Option<String>,
    pub detach: bool,
    pub json: bool,
    pub dir: Option<PathBuf>,
    pub cancel_on_interrupt: bool,
    pub timeout: Option<String>,
    pub max_attempts: Option<i32>,
    /// `--sw-pool`: the cluster's runner pool.
    pub pool: Option<String>,
    pub parent: Option<(String, String)>,
    /// `--sw-no-cache`: the run's memoized jobs run even when a result for their inputs exists.
    pub no_cache: bool,
    pub pipeline_args: Vec<String>,
}

impl TriggerSettings {
    pub fn resolve(args: &TriggerArgs) -> Result<TriggerSettings, CliError> {
        let flags = TriggerFlags::parse(&args.args)?;
        let run = RunFlags::parse(&flags.rest)?;
        if !run.selection.is_all() {
            return Err(usage(
                "--sw-only, --sw-start-at and --sw-stop-at are for `sparkwing run`; a triggered run executes its whole plan",
            ));
        }
        if run.dry_run {
            return Err(usage(
                "--sw-dry-run is for `sparkwing run`; `sparkwing pipeline plan NAME [ARGS]` prints a plan without running it",
            ));
        }
        let settings = TriggerSettings {
            pipeline: args.pipeline.clone(),
            help: args.help || run.help,
            profile: flags.profile.or(args.profile.clone()),
            detach: flags.detach || args.detach,
            json: flags.json || args.output == OutputFormat::Json,
            dir: run.dir.or(args.dir.clone()),
            cancel_on_interrupt: flags.cancel_on_interrupt,
            timeout: flags.timeout,
            max_attempts: flags.max_attempts,
            pool: run.pool,
            parent: run.parent,
            no_cache: run.no_cache,
            pipeline_args: run.pipeline_args,
        };
        if settings.pipeline.is_some()
            && !settings.help
            && (run.workers.is_some()
                || run.box_slots.is_some()
                || run.no_wait
                || run.runner.is_some())
        {
            return Err(usage(
                "--sw-workers, --sw-box-slots, --sw-no-wait and --sw-runner are for local runs; a triggered run takes --sw-pool POOL (the cluster's runner pool), --sw-timeout DURATION and --sw-max-attempts N",
            ));
        }
        Ok(settings)
    }
}

/// `sparkwing pipeline plan`'s settings: its clap options and the same flags among its args.
#[derive(Debug)]
pub struct PlanSettings {
    pub pipeline: String,
    pub dir: Option<PathBuf>,
    pub output: PlanFormat,
    pub pipeline_args: Vec<String>,
}

impl PlanSettings {
    pub fn resolve(args: &PlanArgs) -> Result<PlanSettings, CliError> {
        let (found, rest) = scan(&args.args, PLAN_FLAGS, Some(UNKNOWN_PLAN_FLAG))?;
        let mut settings = PlanSettings {
            pipeline: args.pipeline.clone(),
            dir: args.dir.clone(),
            output: args.output,
            pipeline_args: rest,
        };
        for (key, value) in found {
            let v = value.unwrap_or_default();
            match key {
                Key::Dir => settings.dir = Some(PathBuf::from(v)),
                Key::Output => {
                    settings.output = PlanFormat::from_str(&v, false).map_err(|_| {
                        usage(format!("unknown output {v:?}; use pretty, json or dot"))
                    })?
                }
                _ => unreachable!("{key:?} is not a plan flag"),
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn toks(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn separates_sparkwing_flags_from_pipeline_args() {
        let f = RunFlags::parse(&toks(&[
            "--name",
            "x",
            "--sw-workers",
            "3",
            "--sw-box-slots=2",
            "--sw-no-wait",
            "--loud",
            "--sw-runner",
            "docker",
            "--sw-pool=p",
        ]))
        .unwrap();
        assert_eq!(f.runner.as_deref(), Some("docker"));
        assert_eq!(f.pool.as_deref(), Some("p"));
        assert_eq!(f.workers, Some(3));
        assert_eq!(f.box_slots, Some(2));
        assert!(f.no_wait);
        assert_eq!(f.pipeline_args, toks(&["--name", "x", "--loud"]));
    }

    #[test]
    fn dry_run_is_a_run_flag() {
        let f = RunFlags::parse(&toks(&["--name", "x", "--sw-dry-run"])).unwrap();
        assert!(f.dry_run);
        assert_eq!(f.pipeline_args, toks(&["--name", "x"]));
        assert!(!RunFlags::parse(&toks(&["--name", "x"])).unwrap().dry_run);
    }

    #[test]
    fn selection_flags_name_jobs() {
        let f = RunFlags::parse(&toks(&[
            "--sw-only",
            "build",
            "--x",
            "1",
            "--sw-stop-at=test",
        ]))
        .unwrap();
        assert_eq!(f.selection.only.as_deref(), Some("build"));
        assert_eq!(f.selection.stop_at.as_deref(), Some("test"));
        assert_eq!(f.pipeline_args, toks(&["--x", "1"]));
        let e = RunFlags::parse(&toks(&["--sw-start-at", "--x"])).unwrap_err();
        assert_eq!(e.code, ExitCode::Usage);
        assert!(
            e.message.contains("--sw-start-at needs a job id"),
            "{}",
            e.message
        );
    }

    #[test]
    fn plan_takes_its_output_and_dir_from_among_the_args() {
        let args = crate::cli::Cli::try_parse_from([
            "sparkwing",
            "pipeline",
            "plan",
            "hello",
            "--name",
            "x",
            "-o",
            "dot",
            "-C",
            "/tmp/p",
        ])
        .unwrap();
        let crate::cli::Command::Pipeline {
            command: crate::cli::PipelineCommand::Plan(plan),
        } = args.command
        else {
            panic!("not a plan command");
        };
        let s = PlanSettings::resolve(&plan).unwrap();
        assert_eq!(s.output, PlanFormat::Dot);
        assert_eq!(s.dir, Some(PathBuf::from("/tmp/p")));
        assert_eq!(s.pipeline_args, toks(&["--name", "x"]));

        let bad = PlanArgs {
            dir: None,
            output: PlanFormat::Pretty,
            pipeline: "hello".into(),
            args: toks(&["-o", "yaml"]),
        };
        let e = PlanSettings::resolve(&bad).unwrap_err();
        assert_eq!(e.code, ExitCode::Usage);
        assert!(e.message.contains("pretty, json or dot"), "{}", e.message);
        let sw = PlanArgs {
            args: toks(&["--sw-workers", "2"]),
            ..bad
        };
        assert_eq!(
            PlanSettings::resolve(&sw).unwrap_err().code,
            ExitCode::Usage
        );
    }

    #[test]
    fn rejects_bad_sparkwing_flags() {
        assert_eq!(
            RunFlags::parse(&toks(&["--sw-workers", "0"]))
                .unwrap_err()
                .code,
            ExitCode::Usage
        );
        assert_eq!(
            RunFlags::parse(&toks(&["--sw-bogus"])).unwrap_err().code,
            ExitCode::Usage
        );
        assert_eq!(
            RunFlags::parse(&toks(&["--sw-workers"])).unwrap_err().code,
            ExitCode::Usage
        );
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

    fn run_settings(argv: &[&str]) -> Result<RunSettings, CliError> {
        let cli = crate::cli::Cli::try_parse_from(["sparkwing", "run"].iter().chain(argv)).unwrap();
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not a run: {argv:?}");
        };
        RunSettings::resolve(&args)
    }

    fn trigger_settings(argv: &[&str]) -> Result<TriggerSettings, CliError> {
        let cli = crate::cli::Cli::try_parse_from(
            ["sparkwing", "pipeline", "trigger"].iter().chain(argv),
        )
        .unwrap();
        let crate::cli::Command::Pipeline {
            command: crate::cli::PipelineCommand::Trigger(args),
        } = cli.command
        else {
            panic!("not a trigger: {argv:?}");
        };
        TriggerSettings::resolve(&args)
    }

    /// A usage error whose message contains every one of `parts`.
    #[track_caller]
    fn says<T: std::fmt::Debug>(r: Result<T, CliError>, parts: &[&str]) {
        let e = r.unwrap_err();
        assert_eq!(e.code, ExitCode::Usage, "{e:?}");
        for p in parts {
            assert!(e.message.contains(p), "{p:?} not in {:?}", e.message);
        }
    }

    #[test]
    fn run_settings_resolve_flags_over_options() {
        let s = run_settings(&[
            "--runner",
            "process",
            "--profile",
            "a",
            "ci",
            "--sw-profile=b",
            "--k",
            "v",
        ])
        .unwrap();
        assert_eq!(s.pipeline.as_deref(), Some("ci"));
        assert_eq!(s.runner, Runner::Process);
        assert_eq!(s.profile.as_deref(), Some("b"));
        assert_eq!(s.pipeline_args, toks(&["--k", "v"]));
        let s = run_settings(&["ci", "--sw-runner=docker", "--sw-pool", "warm"]).unwrap();
        assert_eq!(
            (s.runner, s.pool.as_deref()),
            (Runner::Docker, Some("warm"))
        );
        let s = run_settings(&["ci", "--sw-parent", "ns/r1/build"]).unwrap();
        assert_eq!(s.parent, Some(("ns/r1".into(), "build".into())));
    }

    #[test]
    fn bad_run_settings_name_the_flag_and_the_fix() {
        says(
            run_settings(&["ci", "--sw-workers", "none"]),
            &["--sw-workers expects a positive number", "\"none\""],
        );
        says(
            run_settings(&["ci", "--sw-box-slots=0"]),
            &["--sw-box-slots expects a positive number"],
        );
        says(
            run_settings(&["ci", "--sw-pool"]),
            &["--sw-pool needs a pool name"],
        );
        says(
            run_settings(&["ci", "--sw-wrokers", "2"]),
            &["unknown sparkwing flag --sw-wrokers", "--sw-workers N"],
        );
        says(
            run_settings(&["ci", "--sw-parent", "r1"]),
            &["--sw-parent expects RUN/JOB", "\"r1\""],
        );
        says(
            run_settings(&["ci", "--sw-runner", "vm"]),
            &[
                "unknown runner \"vm\"",
                "use process (the default) or docker",
            ],
        );
        says(
            run_settings(&["--runner", "docker", "--profile", "p", "ci"]),
            &["--profile with --runner docker", "use the process runner"],
        );
        says(
            run_settings(&["ci", "--sw-pool=warm"]),
            &["--pool needs --runner docker"],
        );
    }

    #[test]
    fn bad_trigger_settings_name_the_flag_and_the_fix() {
        says(
            trigger_settings(&["ci", "--x", "1", "--sw-timeout"]),
            &["--sw-timeout needs a value"],
        );
        says(
            trigger_settings(&["ci", "--sw-max-attempts=lots"]),
            &["--sw-max-attempts expects a whole number", "\"lots\""],
        );
        says(
            trigger_settings(&["ci", "--sw-workers", "2"]),
            &["are for local runs", "--sw-pool POOL"],
        );
        says(
            trigger_settings(&["ci", "--sw-nope"]),
            &["unknown sparkwing flag --sw-nope"],
        );
        let s = trigger_settings(&[
            "--detach",
            "ci",
            "--profile=p",
            "-o=json",
            "--sw-pool",
            "gpu",
            "--env",
            "prod",
        ])
        .unwrap();
        assert!(s.detach && s.json);
        assert_eq!(
            (s.profile.as_deref(), s.pool.as_deref()),
            (Some("p"), Some("gpu"))
        );
        assert_eq!(s.pipeline_args, toks(&["--env", "prod"]));
        assert!(!s.no_cache);
        // `--sw-no-cache` is a triggered run's too (its memoized jobs run).
        let s = trigger_settings(&["ci", "--sw-no-cache", "--env", "prod"]).unwrap();
        assert!(s.no_cache);
        assert_eq!(s.pipeline_args, toks(&["--env", "prod"]));
        // Help wins over the local-only check; no pipeline: nothing is checked.
        assert!(
            trigger_settings(&["ci", "--sw-workers", "2", "--help"])
                .unwrap()
                .help
        );
        assert!(trigger_settings(&[]).unwrap().pipeline.is_none());
    }
}
