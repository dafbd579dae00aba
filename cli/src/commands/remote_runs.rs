//! `sparkwing runs list|status|logs|cancel|wait --profile P`: the same commands against a
//! cluster's API (`docs/remote.md`); `runs rerun`, a cluster run's whole re-run.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::Value;
use sparkwing_api::wire::{CancelMode, RunView};

use super::{api_error, CliError, CmdResult};
use crate::cli::{CancelArgs, ListArgs, LogsArgs, OutputFormat, RerunArgs, StatusArgs, WaitArgs};
use crate::exit::ExitCode;
use crate::printer::{Column, Printer};
use crate::remote::follow::{self, FollowPrinter, Outcome, Select, Style};

/// The longest tail the API reads from a log's end in one request (`?tail=`, docs/api.md#logs).
const TAIL_FROM_SERVER: usize = 10_000;
use crate::remote::target::{self, Target};

const POLL: Duration = Duration::from_millis(500);

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn who(v: &RunView) -> String {
    match &v.triggered_by {
        Some(t) => match t.host.as_deref() {
            None | Some("") => t.principal.clone(),
            Some(h) => format!("{}@{h}", t.principal),
        },
        None => String::new(),
    }
}

/// A run's view as printed by `--output json`: its JSON object (keys sorted).
fn json_of(v: &RunView) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// `NS/NAME`, or `NAME` in the profile's namespace, or the one run of that name the API shows.
pub fn resolve_run(t: &Target, given: &str) -> Result<(String, String), CliError> {
    if let Some((ns, name)) = given.split_once('/') {
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return Err(CliError::new(
                ExitCode::Usage,
                format!("{given:?} is not a run; give NAMESPACE/NAME or NAME"),
            ));
        }
        return Ok((ns.to_string(), name.to_string()));
    }
    if let Some(ns) = &t.profile.namespace {
        return Ok((ns.clone(), given.to_string()));
    }
    let runs = t.client.list_runs(None).map_err(|e| api_error(t, e))?;
    let found: Vec<&RunView> = runs.iter().filter(|r| r.name == given).collect();
    match found.as_slice() {
        [one] => Ok((one.namespace.clone(), given.to_string())),
        [] => Err(CliError::new(
            ExitCode::NotFound,
            format!(
                "no run {given:?} at the API at {} (list them with `sparkwing runs list --profile {}`)",
                t.client.base_url(),
                t.name
            ),
        )),
        _ => Err(CliError::new(
            ExitCode::Usage,
            format!("run {given:?} exists in several namespaces; give NAMESPACE/{given}"),
        )),
    }
}

fn phase_matches(phase: &str, wanted: &str) -> bool {
    let w = wanted.to_ascii_lowercase();
    let p = phase.to_ascii_lowercase();
    p == w
        || matches!(
            (w.as_str(), p.as_str()),
            ("success", "succeeded") | ("queued", "pending") | ("failed", "failed")
        )
}

pub fn list(args: ListArgs) -> CmdResult {
    let t = target::resolve(args.profile.as_deref())?;
    let ns = args.namespace.clone().or(t.profile.namespace.clone());
    let runs = t
        .client
        .list_runs(ns.as_deref())
        .map_err(|e| api_error(&t, e))?;
    let runs: Vec<&RunView> = runs
        .iter()
        .filter(|r| args.pipelines.is_empty() || args.pipelines.contains(&r.pipeline))
        .filter(|r| {
            args.statuses.is_empty()
                || args
                    .statuses
                    .iter()
                    .any(|s| phase_matches(r.phase.phase_str(), s))
        })
        .take(args.limit as usize)
        .collect();
    let out = Printer::new(args.output);
    if out.json() {
        for r in &runs {
            out.json_line(&json_of(r));
        }
        return Ok(ExitCode::Success);
    }
    if runs.is_empty() {
        out.line(format_args!(
            "no runs at {}: start one with `sparkwing pipeline trigger <pipeline> --profile {}`",
            t.client.base_url(),
            t.name
        ));
        return Ok(ExitCode::Success);
    }
    const TABLE: [Column; 4] = [
        Column::left(40),
        Column::left(20),
        Column::left(10),
        Column::left(22),
    ];
    out.row(
        &TABLE,
        &[&"RUN", &"PIPELINE", &"PHASE", &"CREATED (UTC)", &"WHO"],
    );
    for r in &runs {
        out.row(
            &TABLE,
            &[
                &format_args!("{}/{}", r.namespace, r.name),
                &r.pipeline,
                &r.phase.phase_str(),
                &r.created
                    .as_deref()
                    .unwrap_or("")
                    .replace('T', " ")
                    .trim_end_matches('Z'),
                &who(r),
            ],
        );
    }
    Ok(ExitCode::Success)
}

pub fn status(args: StatusArgs) -> CmdResult {
    let t = target::resolve(args.run.profile.as_deref())?;
    let (ns, name) = resolve_run(&t, args.run.id())?;
    let v = t.client.get_run(&ns, &name).map_err(|e| api_error(&t, e))?;
    let phase = v.phase;
    match args.output {
        OutputFormat::Json => Printer::new(args.output).json_document(&json_of(&v)),
        OutputFormat::Pretty => {
            println!("run:      {ns}/{name}");
            println!("pipeline: {}", v.pipeline);
            println!("phase:    {}", phase.phase_str());
            println!("created:  {}", v.created.as_deref().unwrap_or(""));
            println!("by:       {}", who(&v));
            if let Some(pr) = v
                .triggered_by
                .as_ref()
                .and_then(|t| t.pull_request.as_ref())
            {
                let fork = if pr.fork { " (from a fork)" } else { "" };
                println!(
                    "pull request: #{} {} -> {}{fork}",
                    pr.number, pr.head, pr.base
                );
            }
            // A sub-pipeline: the run and job that awaited it (as `runs status` of a local child).
            if let Some(p) = &v.parent {
                match p.host.as_deref() {
                    None | Some("") => println!("parent:   {} job {}", p.run, p.job),
                    Some(h) => println!("parent:   {} job {} (on {h})", p.run, p.job),
                }
            }
            let spec = v.run.as_ref().and_then(|r| r.get("spec"));
            if let Some(src) = spec.and_then(|s| s.get("source")) {
                println!("source:   {src}");
            }
            if let Some(args) = spec.and_then(|s| s.get("args")) {
                println!("args:     {args}");
            }
            // Why it is in its phase: the `Succeeded` condition (`RunnerLost: …`), once the
            // run is no longer plainly running.
            if let Some(c) = v
                .run
                .as_ref()
                .and_then(|r| r.pointer("/status/conditions"))
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Succeeded"))
            {
                match (str_of(c, "reason"), str_of(c, "message")) {
                    ("" | "Pending" | "Running" | "Succeeded", "") => {}
                    (reason, "") => println!("reason:   {reason}"),
                    (reason, message) => println!("reason:   {reason}: {message}"),
                }
            }
            let kept = match (v.live, v.archived) {
                (false, _) => "archived (the PipelineRun is gone)",
                (_, true) => "live, archived",
                _ => "live",
            };
            println!("kept:     {kept}");
            // Its concurrency group, as `runs status` of a local run shows it.
            if let Some(g) = &v.concurrency {
                match &g.waiting {
                    Some(line) if !phase.is_terminal() => println!("waiting:  {line}"),
                    _ => {
                        let cancel = if g.cancel_in_progress {
                            ", cancel in progress"
                        } else {
                            ""
                        };
                        println!(
                            "group:    concurrency group {} (limit {}{cancel})",
                            g.group, g.limit
                        );
                    }
                }
            }
            // Its jobs waiting for their own groups.
            if !phase.is_terminal() {
                for g in &v.job_groups {
                    if let (Some(job), Some(line)) = (&g.job, &g.waiting) {
                        println!("job {job}: {line}");
                    }
                }
            }
            if let Some(jobs) = &v.jobs {
                if !jobs.is_empty() {
                    let out = Printer::new(args.output);
                    const TABLE: [Column; 3] = [
                        Column::left(24),
                        Column::left(10),
                        Column::right(7).wide_gap(),
                    ];
                    out.line("");
                    out.row(&TABLE, &[&"JOB", &"STATE", &"ATTEMPT", &"REASON"]);
                    for (job, s) in jobs {
                        out.row(
                            &TABLE,
                            &[
                                job,
                                &str_of(s, "state"),
                                &s.get("attempt").map(Value::to_string).unwrap_or_default(),
                                &str_of(s, "reason"),
                            ],
                        );
                        out.job_outputs(TABLE[0], s.get("outputs"));
                    }
                    // How to decide a gate that waits (its decision shows as its reason).
                    for (job, s) in jobs {
                        if str_of(s, "state") == "waiting" && !phase.is_terminal() {
                            out.line(format!(
                                "gate {job}: waiting for a decision (sparkwing runs approve|reject {ns}/{name} --gate {job} --profile {})",
                                t.name
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(ExitCode::of_run(phase))
}

pub fn logs(args: LogsArgs) -> CmdResult {
    let t = target::resolve(args.run.profile.as_deref())?;
    let (ns, name) = resolve_run(&t, args.run.id())?;
    let mut jobs = t.logs.log_jobs(&ns, &name).map_err(|e| api_error(&t, e))?;
    if let Some(j) = &args.job {
        if !jobs.contains(j) && !args.follow {
            return Err(CliError::new(
                ExitCode::NotFound,
                format!(
                    "run {ns}/{name} has no log for job {j:?} (jobs with a log: {})",
                    if jobs.is_empty() {
                        "none yet".to_string()
                    } else {
                        jobs.join(", ")
                    }
                ),
            ));
        }
        jobs.retain(|x| x == j);
    }
    let mut printer = FollowPrinter::new(
        Style::detect(args.output == OutputFormat::Json),
        &format!("{ns}/{name}"),
    );
    printer.prefix = args.job.is_none() && (jobs.len() > 1 || args.follow);
    printer.events = false;
    let mut after = BTreeMap::new();
    for job in &jobs {
        // The server reads a tail from the log's end; a longer one than it serves at once is cut
        // from the whole log here.
        let lines = match args.tail {
            Some(n) if n <= TAIL_FROM_SERVER => t.logs.read_log_tail(&ns, &name, job, n.max(1)),
            _ => t.logs.read_logs(&ns, &name, job, 0),
        }
        .map_err(|e| api_error(&t, e))?;
        let skip = args
            .tail
            .map(|n| lines.len().saturating_sub(n))
            .unwrap_or(0);
        for l in &lines[skip..] {
            printer.line(l);
        }
        after.insert(job.clone(), lines.last().map(|l| l.seq).unwrap_or(0));
    }
    if !args.follow {
        return Ok(ExitCode::Success);
    }
    let select = Select {
        job: args.job.clone(),
        after,
    };
    let never = AtomicBool::new(false);
    match follow::follow_run(
        &t.client,
        &t.logs,
        &ns,
        &name,
        &select,
        &mut printer,
        &never,
    )
    .map_err(|e| api_error(&t, e))?
    {
        Outcome::Finished(_) | Outcome::Interrupted => Ok(ExitCode::Success),
    }
}

pub fn cancel(args: CancelArgs) -> CmdResult {
    let t = target::resolve(args.run.profile.as_deref())?;
    let (ns, name) = resolve_run(&t, args.run.id())?;
    let mode = if args.now {
        CancelMode::Cancelled
    } else {
        CancelMode::CancelledRunFinally
    };
    t.client
        .cancel_run(&ns, &name, Some(mode))
        .map_err(|e| api_error(&t, e))?;
    if args.now {
        println!("cancelling run {ns}/{name} now (finally jobs do not run)");
    } else {
        println!("cancelling run {ns}/{name}; finally jobs still run");
    }
    Ok(ExitCode::Success)
}

/// `runs rerun RUN --profile P`: `POST .../rerun`; prints the new run as `pipeline trigger
/// --detach` does (`NS/NAME`, or with `-o json` one object).
pub fn rerun(args: RerunArgs) -> CmdResult {
    let t = target::resolve(args.profile.as_deref())?;
    let (ns, name) = resolve_run(&t, &args.run)?;
    let run = t.client.rerun(&ns, &name).map_err(|e| api_error(&t, e))?;
    let full = format!("{}/{}", run.namespace, run.name);
    if args.output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({"namespace": run.namespace, "name": run.name, "profile": t.name,
                               "rerunOf": format!("{ns}/{name}")})
        );
    } else {
        println!("{full}");
    }
    Ok(ExitCode::Success)
}

pub fn wait(args: WaitArgs) -> CmdResult {
    let t = target::resolve(args.run.profile.as_deref())?;
    let (ns, name) = resolve_run(&t, args.run.id())?;
    let started = Instant::now();
    loop {
        let v = t.client.get_run(&ns, &name).map_err(|e| api_error(&t, e))?;
        let phase = v.phase;
        if phase.is_terminal() {
            println!("run {ns}/{name} {}", phase.phase_str());
            return Ok(ExitCode::of_run(phase));
        }
        if let Some(limit) = args.timeout {
            if started.elapsed() >= limit {
                eprintln!(
                    "run {ns}/{name} still {} after {}",
                    phase.phase_str(),
                    humantime::format_duration(limit)
                );
                return Ok(ExitCode::Timeout);
            }
        }
        std::thread::sleep(POLL);
    }
}
