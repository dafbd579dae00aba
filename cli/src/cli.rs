//! The command line, as clap structs only. Resolution and behaviour live in `commands/`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "sparkwing",
    version,
    about = "CI/CD whose pipelines are Rust programs: run them here, or on Kubernetes.",
    after_help = "Exit codes: see docs/exit-codes.md (0 success, 1 run failed, 2 usage, 3 project, 4 store, 5 not found, 6 timeout, 7 docker, 8 runner environment, 9 API, 75 box slots full, 130 cancelled)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline here: `sparkwing run NAME [--arg value ...]`.
    Run(RunArgs),
    /// Read and control recorded runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// List, describe and create pipelines.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Profiles: which cluster API to reach and how (never prints a token).
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// API tokens of a cluster (needs a token with the admin scope): create, list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Serve the local web dashboard: live runs, their job graphs and logs.
    Dashboard {
        #[command(subcommand)]
        command: DashboardCommand,
    },
    /// Run one attempt of a cluster run (`runner --run NS/NAME --attempt N`, what the operator's
    /// runner Job executes), or manage runner containers of the Docker executor (`runner gc`).
    Runner(RunnerArgs),
    /// The runner image of the Docker executor (built locally; no registry needed).
    #[command(name = "runner-image")]
    RunnerImage {
        #[command(subcommand)]
        command: RunnerImageCommand,
    },
    /// Local runner pools: warm runner containers that runs claim (`run --runner docker --pool`).
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Inside a runner container: continue a run the host recorded.
    #[command(name = "__runner", hide = true)]
    RunnerEntry(RunnerEntryArgs),
    /// Jobs' dependency caches on this machine (`$SPARKWING_HOME/caches`): list and prune.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the version of sparkwing, its SDK and protocol.
    Version {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
        output: OutputFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Pretty,
    Json,
}

#[derive(Debug, Args)]
// `--help` after the pipeline's name is the pipeline's help, so clap must not take it.
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Look for .sparkwing/ from DIR instead of the current directory.
    #[arg(short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Help: `sparkwing run --help` for this command, `sparkwing run NAME --help` for a pipeline's.
    #[arg(short = 'h', long = "help", action = clap::ArgAction::SetTrue)]
    pub help: bool,
    /// What executes the run: `process` (this process, the default) or `docker` (a runner
    /// container). Also `--sw-runner` among the args.
    #[arg(long = "runner", value_name = "RUNNER")]
    pub runner: Option<String>,
    /// With `--runner docker`: claim a warm container from this local pool (`sparkwing pool run`).
    /// Also `--sw-pool` among the args.
    #[arg(long = "pool", value_name = "NAME")]
    pub pool: Option<String>,
    /// Also record the run on this profile's cluster API (an external run: logs, job states
    /// and the end). Also `--profile NAME` after the pipeline's name.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// The pipeline's name in sparkwing.yaml.
    pub pipeline: Option<String>,
    /// The pipeline's args (`--name value`, `--flag`, `--name=value`), `--help` for the pipeline's
    /// own help, and Sparkwing's run flags: `--sw-workers N`, `--sw-box-slots N`, `--sw-no-wait`,
    /// `--sw-runner process|docker`, `--sw-pool NAME`, `--sw-dry-run` (print the plan; run and record
    /// nothing), `--sw-only JOB`, `--sw-start-at JOB`, `--sw-stop-at JOB` (run part of the plan).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List(ListArgs),
    /// Show one run and its jobs; exits 0 only when the run succeeded.
    Status(StatusArgs),
    /// Print a run's logs.
    Logs(LogsArgs),
    /// Cancel a live run (as Ctrl-C would: finally jobs still run).
    Cancel(CancelArgs),
    /// Wait until a run finishes; exits like `runs status`.
    Wait(WaitArgs),
    /// Approve a waiting approval gate of a live run (local, or with --profile on a cluster): the
    /// gate succeeds and the jobs that need it start.
    Approve(DecideArgs),
    /// Reject a waiting approval gate of a live run (local, or with --profile on a cluster): the
    /// gate fails and the jobs that need it are cancelled.
    Reject(DecideArgs),
    /// Re-run a finished local run on the current code: its failed jobs (or the named ones) and
    /// what needs them run again, the other jobs are reused; exits like `run`.
    Retry(RetryArgs),
    /// Re-run a cluster run whole (every job runs again) on its cluster: a new run of the same
    /// pipeline, source, args and settings; prints the new run.
    Rerun(RerunArgs),
    /// List the artifacts a run's jobs published, or download one (`--download NAME`).
    Artifacts(ArtifactsArgs),
    /// Send a finished local run (jobs, logs, outcome) to a profile's cluster API, e.g. one
    /// `run --profile` could not deliver.
    Push {
        /// The local run id (the `run-` prefix may be left out).
        #[arg(value_name = "RUN_ID")]
        run: String,
        /// The profile whose API receives it (else $SPARKWING_PROFILE, else the default).
        #[arg(long = "profile", value_name = "PROFILE")]
        profile: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RunRef {
    /// The run: a local run id (the `run-` prefix may be left out), or with --profile a remote
    /// run's `NAMESPACE/NAME` (or NAME in the profile's namespace).
    #[arg(value_name = "RUN", required_unless_present = "run_flag")]
    pub run_pos: Option<String>,
    /// The run, as a flag (same as RUN).
    #[arg(long = "run", value_name = "ID", conflicts_with = "run_pos")]
    pub run_flag: Option<String>,
    /// Read the run from this profile's cluster API instead of the local store.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
}

impl RunRef {
    /// The run given, positionally or with --run.
    pub fn id(&self) -> &str {
        self.run_pos
            .as_deref()
            .or(self.run_flag.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs of this pipeline (repeatable).
    #[arg(long = "pipeline", value_name = "NAME")]
    pub pipelines: Vec<String>,
    /// Only runs in this status: queued, running, success, failed, cancelled (repeatable).
    #[arg(long = "status", value_name = "STATUS")]
    pub statuses: Vec<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// `json` prints one JSON object per line.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
    /// List the runs of this profile's cluster API instead of the local store.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// With --profile: only runs in this namespace (default: every namespace the API shows).
    #[arg(long = "namespace", value_name = "NS", requires = "profile")]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    #[command(flatten)]
    pub run: RunRef,
    /// Copy this artifact (`NAME`, or `JOB/NAME` when two jobs publish one name) out of the run.
    #[arg(long = "download", value_name = "NAME")]
    pub download: Option<String>,
    /// With --download: into this directory (default: the current one).
    #[arg(long = "to", value_name = "DIR", requires = "download")]
    pub to: Option<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cache entries, most recently used first.
    List(CacheListArgs),
    /// Remove cache entries: every one (`--all`) or those unused for a while (`--older-than`).
    Prune(CachePruneArgs),
}

#[derive(Debug, Args)]
pub struct CacheListArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
    /// List the caches of this profile's cluster (through its API, `runs:read`) instead of
    /// this machine's.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// With --profile: only this namespace's caches.
    #[arg(long = "namespace", value_name = "NS", requires = "profile")]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CachePruneArgs {
    /// Remove every entry.
    #[arg(
        long,
        conflicts_with_all = ["older_than", "key"],
        required_unless_present_any = ["older_than", "key"]
    )]
    pub all: bool,
    /// Remove the entries not used for this long (e.g. 7d, 12h).
    #[arg(long = "older-than", value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "key")]
    pub older_than: Option<std::time::Duration>,
    /// Remove the entry with this key (an unknown key exits 5).
    #[arg(long = "key", value_name = "KEY")]
    pub key: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
    /// Prune the caches of this profile's cluster (through its API, `admin`) instead of this
    /// machine's.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// With --profile: only this namespace's caches.
    #[arg(long = "namespace", value_name = "NS", requires = "profile")]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub run: RunRef,
    /// With --profile: stop at once, without running `finally` jobs.
    #[arg(long, requires = "profile")]
    pub now: bool,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    #[command(flatten)]
    pub run: RunRef,
    /// The gate (its job id in the plan).
    #[arg(long = "gate", value_name = "GATE")]
    pub gate: String,
    /// Why, recorded with the decision and shown by `runs status`.
    #[arg(long = "comment", value_name = "TEXT")]
    pub comment: Option<String>,
    /// Who decides, as recorded (default: the OS user); local runs only (with --profile: the
    /// token's principal).
    #[arg(long = "as", value_name = "NAME")]
    pub as_user: Option<String>,
    /// `json` prints the recorded decision as one JSON object.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub run: RunRef,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub run: RunRef,
    /// Only this job's log.
    #[arg(long = "job", value_name = "JOB")]
    pub job: Option<String>,
    /// Keep printing new lines until the run finishes.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (of each job).
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// `json` prints the stored records, one per line.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RerunArgs {
    /// The cluster run: NAMESPACE/NAME (or NAME in the profile's namespace).
    #[arg(value_name = "RUN")]
    pub run: String,
    /// The profile whose cluster API holds the run (else $SPARKWING_PROFILE, else the default).
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// `json` prints the new run as one JSON object.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The local run to retry (the `run-` prefix may be left out).
    #[arg(value_name = "RUN", required_unless_present = "run_flag")]
    pub run_pos: Option<String>,
    /// The run, as a flag (same as RUN).
    #[arg(long = "run", value_name = "ID", conflicts_with = "run_pos")]
    pub run_flag: Option<String>,
    /// Not supported yet: a cluster run is retried by triggering its pipeline again.
    #[arg(long = "profile", value_name = "PROFILE", hide = true)]
    pub profile: Option<String>,
    /// Retry the jobs that failed, were cancelled or never finished (the default).
    #[arg(long, conflicts_with = "jobs")]
    pub failed: bool,
    /// Retry this job (repeatable) instead of the failed ones.
    #[arg(long = "job", value_name = "JOB")]
    pub jobs: Vec<String>,
}

impl RetryArgs {
    /// The run given, positionally or with --run.
    pub fn id(&self) -> &str {
        self.run_pos
            .as_deref()
            .or(self.run_flag.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub run: RunRef,
    /// Give up after this long (e.g. 30s, 10m); exit code 6.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// List the pipelines of this project (from sparkwing.yaml; no compile).
    List(ProjectOutput),
    /// Describe one pipeline: its args, secrets and triggers (compiles when needed).
    Describe(DescribeArgs),
    /// Scaffold a new pipeline that runs as it is.
    New(NewArgs),
    /// Run a pipeline on a cluster: upload the source to the profile's API, trigger, follow.
    Trigger(TriggerArgs),
    /// Print a pipeline's plan (its jobs, needs, retries, timeouts, conditions) without running
    /// or recording anything: `pipeline plan NAME [ARGS] [-o json|dot]`.
    Plan(PlanArgs),
    /// Check every pipeline of the project: compile `.sparkwing/`, plan each with its default
    /// args, report invalid graphs and args; exit 0 clean, 1 findings.
    Lint(ProjectOutput),
}

/// How `pipeline plan` prints a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table of the jobs.
    #[value(alias = "text")]
    Pretty,
    /// One JSON document.
    Json,
    /// A Graphviz digraph.
    Dot,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Look for .sparkwing/ from DIR instead of the current directory.
    #[arg(short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// `pretty` (or `text`), `json` or `dot`. Also `-o FORMAT` after the pipeline's name.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanFormat::Pretty)]
    pub output: PlanFormat,
    /// The pipeline's name in sparkwing.yaml.
    pub pipeline: String,
    /// The pipeline's args (`--name value`, `--flag`, `--name=value`), as for `sparkwing run`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
// `--help` after the pipeline's name is the pipeline's help, so clap must not take it.
#[command(disable_help_flag = true)]
pub struct TriggerArgs {
    /// Look for .sparkwing/ from DIR instead of the current directory.
    #[arg(short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[arg(short = 'h', long = "help", action = clap::ArgAction::SetTrue)]
    pub help: bool,
    /// The profile whose controller runs it (else $SPARKWING_PROFILE, else the default profile).
    /// Also accepted after the pipeline's name.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Return once the run exists (print `NAMESPACE/NAME`) instead of following it. Also
    /// accepted after the pipeline's name.
    #[arg(long)]
    pub detach: bool,
    /// `json`: the run (and upload) as JSON with --detach; JSON lines while following. Also
    /// `-o json` after the pipeline's name.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
    /// The pipeline's name in sparkwing.yaml.
    pub pipeline: Option<String>,
    /// The pipeline's args (`--name value`, `--flag`, `--name=value`, `name=value`), and
    /// `--sw-pool NAME` (the cluster's runner pool).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for PRINCIPAL; it is printed once (with its id), keep it safe.
    Create(TokenCreateArgs),
    /// List tokens (ids, principals, scopes; never the tokens).
    List(TokenListArgs),
    /// Revoke a token by id: its next request is refused.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Who the token is for (shown as triggeredBy of the runs it starts).
    #[arg(value_name = "PRINCIPAL")]
    pub principal: String,
    /// A scope: runs:read, runs:trigger, approvals:write or admin (repeatable).
    #[arg(long = "scope", value_name = "SCOPE", required = true)]
    pub scopes: Vec<String>,
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct TokenListArgs {
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (from `token list` or `token create`).
    #[arg(value_name = "ID")]
    pub id: String,
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProjectOutput {
    #[arg(short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[arg(long = "name", value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub project: ProjectOutput,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The pipeline's name (lowercase letters, digits, '-').
    #[arg(long = "name", value_name = "NAME")]
    pub name: String,
    /// Create or extend .sparkwing/ in DIR instead of the current directory's project.
    #[arg(short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DashboardCommand {
    /// Start the dashboard in the background (replacing a running one); prints its URL.
    Start(DashboardAddr),
    /// Print the dashboard's URL; exits 1 when it is not running.
    Status,
    /// Stop the dashboard (SIGTERM, then SIGKILL after a grace period).
    Kill,
    /// Serve in the foreground (what `start` runs, detached).
    #[command(hide = true)]
    Serve(DashboardAddr),
}

#[derive(Debug, Args)]
pub struct DashboardAddr {
    /// The address to listen on (loopback by default; the dashboard has no authentication).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4343")]
    pub addr: std::net::SocketAddr,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RunnerArgs {
    #[command(subcommand)]
    pub command: Option<RunnerCommand>,
    /// The PipelineRun to execute, `<namespace>/<name>` (reads SPARKWING_API_URL and
    /// SPARKWING_API_TOKEN; see docs/runner.md).
    #[arg(long = "run", value_name = "NS/NAME")]
    pub run: Option<String>,
    /// The attempt of the run this runner executes (1, 2, ...).
    #[arg(long = "attempt", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: Option<u32>,
    /// Run only this job of the run, in this pod (a job pod: the run's coordinator asked for it;
    /// see docs/runner.md#job-pods); needs --job-attempt.
    #[arg(long = "job", value_name = "ID", requires = "job_attempt")]
    pub job: Option<String>,
    /// The attempt of --job this pod runs (1, 2, ...).
    #[arg(long = "job-attempt", value_name = "N", value_parser = clap::value_parser!(u32).range(1..), requires = "job")]
    pub job_attempt: Option<u32>,
    /// Wait for a RunnerPool's claim, then run that attempt (a warm runner: reads
    /// SPARKWING_PODINFO_DIR, SPARKWING_POOL_TOKEN, POD_NAME; see docs/runner.md).
    #[arg(long)]
    pub warm: bool,
    /// The RunnerPool of a warm runner, `<namespace>/<pool>`.
    #[arg(long = "pool", value_name = "NS/POOL")]
    pub pool: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RunnerCommand {
    /// Remove runner containers nothing owns any more (finished runs, dead hosts, stopped pools).
    Gc,
}

#[derive(Debug, Subcommand)]
pub enum RunnerImageCommand {
    /// Build the runner image from this sparkwing, bash and busybox; quick when up to date.
    Build(ImageBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// The image's tag (default: sparkwing-runner:<version>, or SPARKWING_RUNNER_IMAGE).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Keep a pool of warm runner containers, in the foreground, until Ctrl-C.
    Run(PoolRunArgs),
}

#[derive(Debug, Args)]
pub struct PoolRunArgs {
    /// The pool's name; runs claim from it with `--pool NAME`.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub name: String,
    /// Warm (idle) runners to keep.
    #[arg(long = "min-idle", value_name = "N", default_value_t = 1)]
    pub min_idle: u32,
    /// Most runners at once, idle and busy.
    #[arg(long = "max-runners", value_name = "N", default_value_t = 4)]
    pub max_runners: u32,
    /// Idle runners beyond --min-idle are removed after this long (e.g. 60s, 5m).
    #[arg(long = "idle-timeout", value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// The project the pool's runners mount (default: found from the current directory).
    #[arg(short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunnerEntryArgs {
    /// The runner request file (cold runner).
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// Wait for a claim from a pool instead (warm runner).
    #[arg(long)]
    pub warm: bool,
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
    /// This container's name (a warm runner's claim is filed under it).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List the profiles (the default is marked).
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
        output: OutputFormat,
    },
    /// Show the effective profile (the given one, else the default).
    Show {
        #[arg(long = "profile", value_name = "NAME")]
        profile: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
        output: OutputFormat,
    },
    /// Create or change a profile (the file is written with mode 0600).
    Set(ProfileSetArgs),
    /// Remove a profile.
    Remove {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ProfileSetArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The cluster API URL (http:// or https://).
    #[arg(long)]
    pub controller: Option<String>,
    /// The environment variable that holds the bearer token.
    #[arg(long = "token-env", value_name = "VAR", conflicts_with = "token_stdin")]
    pub token_env: Option<String>,
    /// Read the bearer token from standard input and store it in the file (0600).
    #[arg(long = "token-stdin")]
    pub token_stdin: bool,
    /// Where to follow logs from (defaults to the controller).
    #[arg(long)]
    pub logs: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub pool: Option<String>,
    /// Also record runs in the local store (default true).
    #[arg(long = "mirror-local", value_name = "BOOL")]
    pub mirror_local: Option<bool>,
    /// Make this the default profile.
    #[arg(long)]
    pub default: bool,
}
