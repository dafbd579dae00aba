//! Pipelines and their plans: which jobs run, in what order, with which policies.

use std::fmt;
use std::time::Duration;

use crate::args::{Arg, Args};
use crate::cache::{CacheKey, Storage};
use crate::cond::Cond;
use crate::error::Result;
use crate::gate::{Concurrency, GateDecision, GateSettings};
use crate::job::Job;
use crate::json::Value;
use crate::memo::Memo;
use crate::placement::Placement;

pub(crate) type JobFn = Box<dyn Fn(&mut Job) -> Result<()> + Send + Sync>;
type PlanFn = Box<dyn Fn(&mut Plan, &Args) -> Result<()> + Send + Sync>;

/// Backoff before the second attempt when a job does not set one.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// A named pipeline: its arguments, the secrets it reads, and the function that plans its jobs.
pub struct Pipeline {
    pub(crate) entrypoint: String,
    pub(crate) about: String,
    pub(crate) args: Vec<Arg>,
    pub(crate) secrets: Vec<String>,
    plan: PlanFn,
}

impl Pipeline {
    /// Creates a pipeline; `plan` adds its jobs. `plan` must be deterministic: the binary calls it again
    /// in every job process to find that job's body.
    pub fn new(
        entrypoint: impl Into<String>,
        plan: impl Fn(&mut Plan, &Args) -> Result<()> + Send + Sync + 'static,
    ) -> Pipeline {
        Pipeline {
            entrypoint: entrypoint.into(),
            about: String::new(),
            args: Vec::new(),
            secrets: Vec::new(),
            plan: Box::new(plan),
        }
    }

    /// Sets the one-line description shown by `sparkwing` listings.
    pub fn about(mut self, text: impl Into<String>) -> Pipeline {
        self.about = text.into();
        self
    }

    /// Declares an argument.
    pub fn arg(mut self, arg: Arg) -> Pipeline {
        self.args.push(arg);
        self
    }

    /// Declares an environment variable the jobs read with [`Job::secret`]; the engine masks its value.
    pub fn secret(mut self, name: impl Into<String>) -> Pipeline {
        self.secrets.push(name.into());
        self
    }

    /// The name `sparkwing run` uses for this pipeline.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// The declared arguments.
    pub fn args(&self) -> &[Arg] {
        &self.args
    }

    /// Runs the plan function.
    pub(crate) fn build(&self, args: &Args) -> Result<Plan> {
        let mut plan = Plan {
            entrypoint: self.entrypoint.clone(),
            jobs: Vec::new(),
            concurrency: None,
        };
        (self.plan)(&mut plan, args)?;
        Ok(plan)
    }

    pub(crate) fn to_json(&self) -> Value {
        Value::object([
            ("entrypoint", Value::from(self.entrypoint.as_str())),
            ("about", Value::from(self.about.as_str())),
            (
                "args",
                Value::Array(self.args.iter().map(Arg::to_json).collect()),
            ),
            (
                "secrets",
                Value::Array(
                    self.secrets
                        .iter()
                        .map(|s| Value::from(s.as_str()))
                        .collect(),
                ),
            ),
        ])
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("entrypoint", &self.entrypoint)
            .field("about", &self.about)
            .field("args", &self.args)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// The jobs of one run, filled in by a pipeline's plan function.
pub struct Plan {
    entrypoint: String,
    pub(crate) jobs: Vec<JobBuilder>,
    /// The run's concurrency group ([`Plan::concurrency`]).
    pub(crate) concurrency: Option<Concurrency>,
}

impl Plan {
    /// Adds a job and returns its settings for chaining: `p.job("test", body).needs(["build"])`.
    ///
    /// Jobs run in parallel unless ordered with [`JobBuilder::needs`]. Ids should be unique; the engine
    /// rejects a plan with duplicates.
    pub fn job<F>(&mut self, id: impl Into<String>, body: F) -> &mut JobBuilder
    where
        F: Fn(&mut Job) -> Result<()> + Send + Sync + 'static,
    {
        self.jobs.push(JobBuilder {
            id: id.into(),
            needs: Vec::new(),
            retries: 0,
            backoff: DEFAULT_BACKOFF,
            timeout: None,
            optional: false,
            finally: false,
            env: Vec::new(),
            workdir: None,
            skip: None,
            awaits: None,
            when: None,
            gate: None,
            concurrency: None,
            storage: Storage::default(),
            placement: None,
            expansion: None,
            body: Box::new(body),
        });
        let last = self.jobs.len() - 1;
        &mut self.jobs[last]
    }

    /// Adds a job that starts pipeline `pipeline` (a name from `sparkwing.yaml`) as a sub-pipeline
    /// and awaits its result: the job succeeds when the child run succeeds and fails with the
    /// child's reason otherwise. Give the child args with [`JobBuilder::pipeline_arg`], and run it
    /// on a profile's cluster with [`JobBuilder::on_profile`] (for steps that need the cluster's
    /// credentials); by default it runs locally, like `sparkwing run`.
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.job("build", |job| job.bash("cargo build --release"));
    ///     p.await_pipeline("deploy", "deploy-prod")
    ///         .pipeline_arg("env", "prod")
    ///         .on_profile("prod")
    ///         .needs(["build"]);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// The engine runs such a job itself (see `docs/subpipelines.md`); its body in the pipeline
    /// binary only reports that the engine is too old to await pipelines.
    pub fn await_pipeline(
        &mut self,
        id: impl Into<String>,
        pipeline: impl Into<String>,
    ) -> &mut JobBuilder {
        let pipeline = pipeline.into();
        let name = pipeline.clone();
        let job = self.job(id, move |_| {
            Err(crate::error::fail(format!(
                "this job awaits pipeline `{name}`, which the engine runs itself; this sparkwing \
                 engine is too old to await pipelines (upgrade sparkwing)"
            )))
        });
        job.awaits = Some(AwaitSpec {
            pipeline,
            args: Vec::new(),
            profile: None,
        });
        job
    }

    /// The entrypoint of the pipeline being planned.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// The ids of the jobs added so far, in order.
    pub fn job_ids(&self) -> impl Iterator<Item = &str> {
        self.jobs.iter().map(|j| j.id.as_str())
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut fields = vec![
            ("protocol", Value::from(crate::PROTOCOL_VERSION)),
            ("entrypoint", Value::from(self.entrypoint.as_str())),
            (
                "jobs",
                Value::Array(self.jobs.iter().map(JobBuilder::to_json).collect()),
            ),
        ];
        // Only plans with a group carry the field, so other plans read exactly as before.
        if let Some(c) = &self.concurrency {
            fields.push(("concurrency", c.to_json()));
        }
        Value::object(fields)
    }

    /// The body of the first job with this id (the engine rejects duplicates before running any);
    /// for `NAME[i]`, the body of fan-out or matrix template `NAME`.
    pub(crate) fn take_body(self, id: &str) -> Option<JobFn> {
        let template = crate::fanout::template_of(id);
        self.jobs
            .into_iter()
            .find(|j| j.id == id || (j.expansion.is_some() && Some(j.id.as_str()) == template))
            .map(|j| j.body)
    }
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("entrypoint", &self.entrypoint)
            .field("jobs", &self.jobs)
            .finish()
    }
}

// Approval gates and concurrency groups (their types: `gate.rs`).
impl Plan {
    /// Adds an approval gate: a job that runs nothing and, once its needs succeeded, waits for
    /// `sparkwing runs approve` (it succeeds) or `sparkwing runs reject` (it fails, and the jobs
    /// needing it are cancelled). Set a message with [`JobBuilder::message`], and a time limit
    /// with [`JobBuilder::timeout`] whose outcome [`JobBuilder::on_timeout`] chooses (reject by
    /// default).
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.job("build", |job| job.bash("cargo build --release"));
    ///     p.gate("approve-prod")
    ///         .needs(["build"])
    ///         .message("Deploy this build to production?")
    ///         .timeout(Duration::from_secs(3600))
    ///         .on_timeout(GateDecision::Reject);
    ///     p.job("deploy", |job| job.bash("./deploy.sh")).needs(["approve-prod"]);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// The engine decides such a job itself; its body in the pipeline binary only reports that
    /// the engine is too old for gates.
    pub fn gate(&mut self, id: impl Into<String>) -> &mut JobBuilder {
        let job = self.job(id, |_: &mut Job| {
            Err(crate::error::fail(
                "this job is an approval gate, and the sparkwing engine running it is too old to \
                 decide gates; upgrade sparkwing",
            ))
        });
        job.gate = Some(GateSettings {
            message: None,
            on_timeout: GateDecision::Reject,
        });
        job
    }

    /// Puts the run in concurrency group `group`: at most [`Concurrency::limit`] runs of a group
    /// run at once on this host; the others wait in arrival order before their first job. `{name}`
    /// in `group` is replaced by the value of arg `name` (`deploy-{env}` → `deploy-prod`).
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.concurrency("deploy-{env}").cancel_in_progress();
    ///     p.job("deploy", |job| job.bash("./deploy.sh"));
    ///     Ok(())
    /// }
    /// ```
    pub fn concurrency(&mut self, group: impl Into<String>) -> &mut Concurrency {
        self.concurrency.insert(Concurrency::new(group.into()))
    }
}

impl JobBuilder {
    /// Puts this job in concurrency group `group` (`{arg}` filled from the run's args, as for
    /// [`Plan::concurrency`]): at most [`JobBuilder::concurrency_limit`] jobs of the group run at
    /// once on this host, across runs; the others wait in arrival order before each attempt.
    pub fn concurrency(&mut self, group: impl Into<String>) -> &mut JobBuilder {
        self.concurrency = Some(Concurrency::new(group.into()));
        self
    }

    /// How many jobs of this job's [`JobBuilder::concurrency`] group run at once (default 1).
    pub fn concurrency_limit(&mut self, n: u32) -> &mut JobBuilder {
        if let Some(c) = &mut self.concurrency {
            c.set_limit(n);
        }
        self
    }

    /// An attempt of this job that finds its [`JobBuilder::concurrency`] group full (or older
    /// entries queued in it) cancels the older *runs* holding or queued in the group, as
    /// [`Concurrency::cancel_in_progress`] does for a run's group, instead of queueing behind
    /// them; its own run is never cancelled. Without a group it does nothing.
    pub fn concurrency_cancel_in_progress(&mut self) -> &mut JobBuilder {
        if let Some(c) = &mut self.concurrency {
            c.set_cancel_in_progress();
        }
        self
    }

    /// For a gate added with [`Plan::gate`]: the text shown to whoever decides. On other jobs it
    /// does nothing.
    pub fn message(&mut self, text: impl Into<String>) -> &mut JobBuilder {
        if let Some(g) = &mut self.gate {
            g.message = Some(text.into());
        }
        self
    }

    /// For a gate added with [`Plan::gate`]: the decision recorded when its
    /// [`JobBuilder::timeout`] passes without one (default [`GateDecision::Reject`]). On other
    /// jobs it does nothing.
    pub fn on_timeout(&mut self, decision: GateDecision) -> &mut JobBuilder {
        if let Some(g) = &mut self.gate {
            g.on_timeout = decision;
        }
        self
    }
}

/// One job's settings, returned by [`Plan::job`]; every method chains.
pub struct JobBuilder {
    id: String,
    needs: Vec<String>,
    retries: u32,
    backoff: Duration,
    timeout: Option<Duration>,
    optional: bool,
    finally: bool,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    skip: Option<String>,
    awaits: Option<AwaitSpec>,
    when: Option<Cond>,
    /// Set on an approval gate ([`Plan::gate`]).
    gate: Option<GateSettings>,
    /// The job's concurrency group ([`JobBuilder::concurrency`]).
    concurrency: Option<Concurrency>,
    pub(crate) storage: Storage,
    /// Where the job runs on a cluster ([`JobBuilder::placement`]).
    placement: Option<Placement>,
    /// Set on a fan-out or matrix template (`fanout.rs`).
    pub(crate) expansion: Option<crate::fanout::Expansion>,
    body: JobFn,
}

/// The sub-pipeline an await job starts (see [`Plan::await_pipeline`]).
#[derive(Debug, Clone, PartialEq)]
struct AwaitSpec {
    pipeline: String,
    args: Vec<(String, String)>,
    profile: Option<String>,
}

impl JobBuilder {
    /// Adds jobs that must finish (succeed, or be skipped) before this one starts.
    pub fn needs<I, S>(&mut self, ids: I) -> &mut JobBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.needs.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Extra attempts after a failure (default 0).
    pub fn retries(&mut self, n: u32) -> &mut JobBuilder {
        self.retries = n;
        self
    }

    /// Wait before the first retry; it doubles for each later one, capped at 5 minutes (default 1s).
    pub fn backoff(&mut self, wait: Duration) -> &mut JobBuilder {
        self.backoff = wait;
        self
    }

    /// Time limit per attempt (default none).
    pub fn timeout(&mut self, limit: Duration) -> &mut JobBuilder {
        self.timeout = Some(limit);
        self
    }

    /// Lets the run succeed even if this job fails.
    pub fn optional(&mut self) -> &mut JobBuilder {
        self.optional = true;
        self
    }

    /// Runs this job at the end even when other jobs failed (for cleanup).
    pub fn finally(&mut self) -> &mut JobBuilder {
        self.finally = true;
        self
    }

    /// Sets an environment variable for the job's process; a repeated key replaces the earlier value.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut JobBuilder {
        let (key, value) = (key.into(), value.into());
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key, value)),
        }
        self
    }

    /// Runs the job in this directory, relative to the repository root.
    pub fn workdir(&mut self, dir: impl Into<String>) -> &mut JobBuilder {
        self.workdir = Some(dir.into());
        self
    }

    /// Skips the job with `reason` (dependents still run).
    pub fn skip(&mut self, reason: impl Into<String>) -> &mut JobBuilder {
        // The first reason given wins, so chained conditions report the earliest one that applied.
        if self.skip.is_none() {
            self.skip = Some(reason.into());
        }
        self
    }

    /// A runtime condition, decided by the engine when the job becomes ready (its needs ended):
    /// when false, the job is skipped with reason `condition false: <condition>`. Unlike
    /// [`JobBuilder::skip_if`], it can read the outputs of the job's needs and the run's branch.
    /// A second call replaces the first; combine with `&`, `|`, `!`.
    pub fn when(&mut self, cond: Cond) -> &mut JobBuilder {
        self.when = Some(cond);
        self
    }

    /// Skips the job with `reason` when `condition` holds.
    pub fn skip_if(&mut self, condition: bool, reason: impl Into<String>) -> &mut JobBuilder {
        if condition {
            self.skip(reason);
        }
        self
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// For a job added with [`Plan::await_pipeline`]: an arg of the sub-pipeline, as it would be
    /// given on the command line (`--name value`); a repeated name replaces the earlier value. On
    /// other jobs it does nothing.
    pub fn pipeline_arg(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> &mut JobBuilder {
        if let Some(a) = &mut self.awaits {
            let (name, value) = (name.into(), value.into());
            match a.args.iter_mut().find(|(k, _)| *k == name) {
                Some(slot) => slot.1 = value,
                None => a.args.push((name, value)),
            }
        }
        self
    }

    /// For a job added with [`Plan::await_pipeline`]: run the sub-pipeline on this profile's
    /// cluster (`sparkwing pipeline trigger --profile NAME`) instead of locally. On other jobs it
    /// does nothing.
    pub fn on_profile(&mut self, profile: impl Into<String>) -> &mut JobBuilder {
        if let Some(a) = &mut self.awaits {
            a.profile = Some(profile.into());
        }
        self
    }

    /// The pipeline this job awaits, if it was added with [`Plan::await_pipeline`].
    pub fn awaited_pipeline(&self) -> Option<&str> {
        self.awaits.as_ref().map(|a| a.pipeline.as_str())
    }

    fn to_json(&self) -> Value {
        // Clamped to i64 so every JSON reader sees an integer; that is still 292 million years.
        let millis = |d: Duration| Value::Int(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let strings = |items: &[String]| {
            Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect())
        };
        let mut fields = vec![
            ("id", Value::from(self.id.as_str())),
            ("needs", strings(&self.needs)),
            ("retries", Value::from(self.retries)),
            ("backoff_ms", millis(self.backoff)),
            // A gate's timeout is its wait's, carried by its `gate` object.
            (
                "timeout_ms",
                match (&self.gate, self.timeout) {
                    (None, Some(t)) => millis(t),
                    _ => Value::Null,
                },
            ),
            ("optional", Value::Bool(self.optional)),
            ("finally", Value::Bool(self.finally)),
            (
                "env",
                Value::object(
                    self.env
                        .iter()
                        .map(|(k, v)| (k.as_str(), Value::from(v.as_str()))),
                ),
            ),
            ("workdir", Value::from(self.workdir.as_deref())),
            ("skip", Value::from(self.skip.as_deref())),
        ];
        // Only jobs with a condition carry the field, so other plans read exactly as before.
        if let Some(c) = &self.when {
            fields.push(("when", c.to_json()));
        }
        // Only jobs with a group carry the field, so other plans read exactly as before.
        if let Some(c) = &self.concurrency {
            fields.push(("concurrency", c.to_json()));
        }
        // Only gates carry the field, so other plans read exactly as before.
        if let Some(g) = &self.gate {
            fields.push(("gate", g.to_json(self.timeout.map_or(Value::Null, millis))));
        }
        // Only await jobs carry the field, so other plans read exactly as before.
        if let Some(a) = &self.awaits {
            fields.push((
                "await",
                Value::object([
                    ("pipeline", Value::from(a.pipeline.as_str())),
                    (
                        "args",
                        Value::object(
                            a.args
                                .iter()
                                .map(|(k, v)| (k.as_str(), Value::from(v.as_str()))),
                        ),
                    ),
                    ("profile", Value::from(a.profile.as_deref())),
                ]),
            ));
        }
        fields.extend(self.storage.json_fields());
        // Only placed jobs carry the field, so other plans read exactly as before.
        if let Some(p) = &self.placement {
            fields.push(("placement", p.to_json()));
        }
        // Only templates carry the field, so other plans read exactly as before.
        if let Some(e) = &self.expansion {
            fields.push(e.json_field());
        }
        Value::object(fields)
    }
}

/// Caches, artifacts and memoization (`cache.rs`, `memo.rs`): what the engine does around the
/// job's attempts.
impl JobBuilder {
    /// Declares a dependency cache: before the job the engine restores `paths` (relative to the
    /// job's working directory, inside the repository) from the entry of `key`, else from the
    /// newest entry of its fallback prefix; after a success it saves them unless the key was a
    /// hit. A repeated name is a plan error.
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// # fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    /// p.job("build", |job| job.bash("cargo build"))
    ///     .cache("cargo-target", ["target"], CacheKey::files(["Cargo.lock"]).text("v1"));
    /// # Ok(()) }
    /// ```
    pub fn cache<I, S>(
        &mut self,
        name: impl Into<String>,
        paths: I,
        key: impl Into<CacheKey>,
    ) -> &mut JobBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let paths = paths.into_iter().map(Into::into).collect();
        self.storage.caches.push((name.into(), paths, key.into()));
        self
    }

    /// Publishes the file or directory at `path` (relative to the job's working directory) as
    /// artifact `name` when the job succeeds.
    pub fn publish(&mut self, name: impl Into<String>, path: impl Into<String>) -> &mut JobBuilder {
        self.storage.publishes.push((name.into(), path.into()));
        self
    }

    /// Gets artifact `name` of job `job` (which must be in this job's needs) before this job
    /// starts, at the path `job` published it from, under this job's working directory.
    pub fn consume(&mut self, job: impl Into<String>, name: impl Into<String>) -> &mut JobBuilder {
        self.storage.consumes.push((job.into(), name.into()));
        self
    }

    /// Memoizes the job: when a run of this pipeline ran it successfully with the same inputs
    /// within the TTL, the engine does not run it and takes that run's outputs and artifacts
    /// (the job is recorded `cached`). `--sw-no-cache` runs it anyway. A second call replaces
    /// the first.
    pub fn memoize(&mut self, memo: Memo) -> &mut JobBuilder {
        self.storage.memo = Some(memo);
        self
    }
}

/// Placement on a cluster (`placement.rs`).
impl JobBuilder {
    /// Runs this job, on a cluster, in its own runner pod placed as `placement` says (a warm
    /// runner of its pool, cpu, memory, node labels); jobs without one run in the run's runner
    /// pod. A local run ignores it, with a note naming the job. A second call replaces the first.
    pub fn placement(&mut self, placement: Placement) -> &mut JobBuilder {
        self.placement = Some(placement);
        self
    }
}

impl fmt::Debug for JobBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobBuilder")
            .field("id", &self.id)
            .field("needs", &self.needs)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .field("optional", &self.optional)
            .field("finally", &self.finally)
            .field("env", &self.env)
            .field("workdir", &self.workdir)
            .field("skip", &self.skip)
            .field("awaits", &self.awaits)
            .field("when", &self.when)
            .field("gate", &self.gate)
            .field("concurrency", &self.concurrency)
            .field("storage", &self.storage)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

// Fan-out and matrix templates (their declaration: `fanout.rs`).
impl Plan {
    /// Adds a fan-out template: once job `from` succeeded, the engine reads its output `output`
    /// (a JSON array of strings, e.g. set with [`Job::output_list`]) and runs `body` once per
    /// item, as jobs `id[0]`, `id[1]`, … (at most 1,000). Each reads its item with
    /// [`Job::item`]; each needs `from` (added for you) and the template's other needs, and has
    /// the template's settings (retries, timeout, caches, conditions, …). A job that needs `id`
    /// waits for all of them and reads their outputs with [`Job::inputs`]. An empty list expands
    /// into no jobs.
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.job("shards", |job| {
    ///         job.output_list("list", ["unit", "integration"]);
    ///         Ok(())
    ///     });
    ///     p.fan_out("test", "shards", "list", |job| {
    ///         let shard = job.item().unwrap_or_default().to_string();
    ///         job.bash(&format!("make test-{shard}"))
    ///     })
    ///     .retries(1);
    ///     p.job("report", |job| {
    ///         let results = job.inputs("test", "result")?;
    ///         job.log(&format!("{} shards", results.len()));
    ///         Ok(())
    ///     })
    ///     .needs(["test"]);
    ///     Ok(())
    /// }
    /// ```
    pub fn fan_out<F>(
        &mut self,
        id: impl Into<String>,
        from: impl Into<String>,
        output: impl Into<String>,
        body: F,
    ) -> &mut JobBuilder
    where
        F: Fn(&mut Job) -> Result<()> + Send + Sync + 'static,
    {
        let from = from.into();
        let job = self.job(id, body);
        job.needs([from.clone()]);
        job.expansion = Some(crate::fanout::Expansion::FanOut {
            job: from,
            output: output.into(),
        });
        job
    }

    /// Adds a matrix: `body` runs once per item of `items`, as jobs `id[0]`, `id[1]`, … (at most
    /// 1,000), each reading its item with [`Job::item`] and with the template's needs and
    /// settings. A job that needs `id` waits for all of them and reads their outputs with
    /// [`Job::inputs`].
    ///
    /// ```
    /// # use sparkwing::prelude::*;
    /// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
    ///     p.matrix("build", ["linux", "macos"], |job| {
    ///         let target = job.item().unwrap_or_default().to_string();
    ///         job.bash(&format!("./build.sh {target}"))
    ///     });
    ///     Ok(())
    /// }
    /// ```
    pub fn matrix<I, S, F>(&mut self, id: impl Into<String>, items: I, body: F) -> &mut JobBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
        F: Fn(&mut Job) -> Result<()> + Send + Sync + 'static,
    {
        let items = items.into_iter().map(Into::into).collect();
        let job = self.job(id, body);
        job.expansion = Some(crate::fanout::Expansion::Matrix(items));
        job
    }
}

#[cfg(test)]
mod fanout_tests {
    use super::*;

    fn pipeline() -> Pipeline {
        Pipeline::new("F", |p: &mut Plan, _: &Args| {
            p.job("shards", |job| {
                job.output_list("list", ["a", "b"]);
                Ok(())
            });
            p.fan_out("test", "shards", "list", |job| {
                let item = job.item().unwrap_or("none").to_string();
                job.output("seen", item);
                Ok(())
            })
            .retries(1);
            p.matrix("build", ["x", "y"], |_| Ok(()));
            Ok(())
        })
    }

    #[test]
    fn templates_declare_their_list_and_need_their_producer() {
        let plan = match pipeline().build(&Args::default()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let json = plan.to_json().to_string();
        assert!(
            json.contains(r#""id":"test","needs":["shards"],"retries":1"#),
            "{json}"
        );
        assert!(
            json.contains(r#""fan_out":{"job":"shards","output":"list"}"#),
            "{json}"
        );
        assert!(json.contains(r#""matrix":["x","y"]"#), "{json}");
        assert_eq!(json.matches("fan_out").count(), 1, "{json}");
    }

    #[test]
    fn an_expanded_job_runs_its_templates_body_with_its_item() {
        let plan = match pipeline().build(&Args::default()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let body = plan.take_body("test[1]");
        let Some(body) = body else {
            panic!("no body for test[1]")
        };
        let env = |k: &str| match k {
            "SPARKWING_ITEM" => Some("b".to_string()),
            "SPARKWING_ITEM_INDEX" => Some("1".to_string()),
            _ => None,
        };
        let mut job = match Job::from_env("test[1]", Args::default(), &env) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(job.item(), Some("b"));
        assert_eq!(job.item_index(), Some(1));
        assert!(body(&mut job).is_ok());
        let plan = match pipeline().build(&Args::default()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        // Only templates' bodies answer for NAME[i].
        assert!(plan.take_body("shards[0]").is_none());
    }

    #[test]
    fn a_fan_in_reads_every_expanded_jobs_output_in_index_order() {
        let needs = r#"{"test":{},"test[10]":{"r":"k"},"test[2]":{"r":"c"},"test[0]":{"r":"a"},"tests[1]":{"r":"no"}}"#;
        let env = |k: &str| (k == "SPARKWING_NEEDS_OUTPUTS").then(|| needs.to_string());
        let job = match Job::from_env("report", Args::default(), &env) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(job.item(), None);
        assert_eq!(
            job.inputs("test", "r").ok(),
            Some(vec!["a".to_string(), "c".to_string(), "k".to_string()])
        );
        assert_eq!(job.input("test[2]", "r").ok(), Some("c".to_string()));
        assert!(job.inputs("test", "missing").err().is_some_and(|e| e
            .to_string()
            .contains("job `test[0]` has no output `missing`")));
        assert!(job
            .inputs("other", "r")
            .err()
            .is_some_and(|e| e.to_string().contains("no outputs of `other`")));
        let env = |k: &str| (k == "SPARKWING_NEEDS_OUTPUTS").then(|| r#"{"test":{}}"#.to_string());
        let job = match Job::from_env("report", Args::default(), &env) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(job.inputs("test", "r").ok(), Some(Vec::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::fail;

    fn plan_json(p: &Pipeline, args: &str) -> String {
        let args = match Args::from_json(&p.args, args) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        match p.build(&args) {
            Ok(plan) => plan.to_json().to_string(),
            Err(e) => panic!("{e}"),
        }
    }

    fn demo() -> Pipeline {
        Pipeline::new("Demo", |p: &mut Plan, args: &Args| {
            let fast = args.bool("fast")?;
            p.job("build", |_| Ok(()))
                .retries(2)
                .backoff(Duration::from_millis(500))
                .timeout(Duration::from_secs(600))
                .env("RUST_LOG", "info")
                .env("A", "1")
                .env("RUST_LOG", "debug");
            p.job("test", |_| Ok(()))
                .needs(["build"])
                .needs(vec![String::from("lint")])
                .workdir("crates/app")
                .skip_if(fast, "fast mode")
                .skip_if(true, "second reason");
            p.job("cleanup", |_| Ok(())).finally().optional();
            Ok(())
        })
        .arg(Arg::bool("fast"))
    }

    #[test]
    fn plan_json_shape() {
        assert_eq!(
            plan_json(&demo(), r#"{"fast":true}"#),
            concat!(
                r#"{"protocol":1,"entrypoint":"Demo","jobs":["#,
                r#"{"id":"build","needs":[],"retries":2,"backoff_ms":500,"timeout_ms":600000,"#,
                r#""optional":false,"finally":false,"env":{"RUST_LOG":"debug","A":"1"},"workdir":null,"skip":null},"#,
                r#"{"id":"test","needs":["build","lint"],"retries":0,"backoff_ms":1000,"timeout_ms":null,"#,
                r#""optional":false,"finally":false,"env":{},"workdir":"crates/app","skip":"fast mode"},"#,
                r#"{"id":"cleanup","needs":[],"retries":0,"backoff_ms":1000,"timeout_ms":null,"#,
                r#""optional":true,"finally":true,"env":{},"workdir":null,"skip":null}]}"#
            )
        );
        assert!(plan_json(&demo(), "{}").contains(r#""skip":"second reason""#));
    }

    #[test]
    fn await_jobs_carry_the_child_pipeline() {
        let p = Pipeline::new("Ship", |p: &mut Plan, _: &Args| {
            p.job("build", |_| Ok(()));
            p.await_pipeline("deploy", "deploy-prod")
                .pipeline_arg("env", "staging")
                .pipeline_arg("env", "prod")
                .on_profile("prod")
                .needs(["build"]);
            p.await_pipeline("smoke", "smoke");
            // On an ordinary job the await settings do nothing.
            p.job("plain", |_| Ok(()))
                .pipeline_arg("x", "y")
                .on_profile("p");
            assert_eq!(p.jobs[1].awaited_pipeline(), Some("deploy-prod"));
            assert_eq!(p.jobs[3].awaited_pipeline(), None);
            Ok(())
        });
        let json = plan_json(&p, "{}");
        assert!(
            json.contains(concat!(
                r#""skip":null,"await":{"pipeline":"deploy-prod","args":{"env":"prod"},"#,
                r#""profile":"prod"}}"#
            )),
            "{json}"
        );
        assert!(
            json.contains(r#""await":{"pipeline":"smoke","args":{},"profile":null}"#),
            "{json}"
        );
        assert!(json.contains(r#"{"id":"plain","needs":[],"retries":0,"backoff_ms":1000,"timeout_ms":null,"optional":false,"finally":false,"env":{},"workdir":null,"skip":null}"#), "{json}");
        // The body in the binary only says the engine is too old.
        let plan = match p.build(&Args::default()) {
            Ok(plan) => plan,
            Err(e) => panic!("{e}"),
        };
        let body = plan.take_body("deploy").map(|b| {
            let env = |_: &str| None;
            let mut job = match crate::job::Job::from_env("deploy", Args::default(), &env) {
                Ok(j) => j,
                Err(e) => panic!("{e}"),
            };
            b(&mut job).map_err(|e| e.to_string())
        });
        assert!(matches!(body, Some(Err(e)) if e.contains("too old to await pipelines")));
    }

    #[test]
    fn durations_round_to_millis() {
        let p = Pipeline::new("D", |p: &mut Plan, _: &Args| {
            p.job("a", |_| Ok(()))
                .backoff(Duration::from_micros(1500))
                .timeout(Duration::from_secs(u64::MAX));
            Ok(())
        });
        let json = plan_json(&p, "{}");
        assert!(json.contains(r#""backoff_ms":1,"#), "{json}");
        assert!(
            json.contains(&format!(r#""timeout_ms":{},"#, i64::MAX)),
            "{json}"
        );
    }

    #[test]
    fn duplicates_are_kept_and_first_body_wins() {
        let p = Pipeline::new("Dup", |p: &mut Plan, _: &Args| {
            p.job("a", |_| Ok(()));
            p.job("a", |_| Err(fail("second")));
            Ok(())
        });
        let json = plan_json(&p, "{}");
        assert_eq!(json.matches(r#""id":"a""#).count(), 2);
        let plan = p.build(&Args::default()).ok();
        assert_eq!(plan.as_ref().map(|p| p.job_ids().count()), Some(2));
        assert!(plan.and_then(|p| p.take_body("a")).is_some());
    }

    #[test]
    fn describe_json_shape() {
        let p = Pipeline::new("Hello", |_: &mut Plan, _: &Args| Ok(()))
            .about("Say hello")
            .arg(Arg::string("name").default("world").help("who to greet"))
            .secret("DEPLOY_TOKEN");
        assert_eq!(
            p.to_json().to_string(),
            concat!(
                r#"{"entrypoint":"Hello","about":"Say hello","args":[{"name":"name","kind":"string","#,
                r#""default":"world","help":"who to greet","required":false,"secret":false}],"#,
                r#""secrets":["DEPLOY_TOKEN"]}"#
            )
        );
    }

    #[test]
    fn plan_errors_propagate() {
        let p = Pipeline::new("E", |_: &mut Plan, args: &Args| {
            args.int("missing")?;
            Ok(())
        });
        assert_eq!(
            p.build(&Args::default())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err("unknown arg `missing`: the pipeline does not declare it".to_string())
        );
    }
}
