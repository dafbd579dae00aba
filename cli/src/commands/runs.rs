//! `sparkwing runs list|status|logs|cancel|wait`: reading and controlling recorded runs.

use super::{format_time, CliError, CmdResult};
use crate::cli::{CancelArgs, ListArgs, LogsArgs, OutputFormat, StatusArgs, WaitArgs};
use crate::exit::ExitCode;
use crate::printer::{Column, Printer};
use serde_json::json;
use sparkwing_core::RunPhase;
use sparkwing_engine::abandoned;
use sparkwing_engine::home::Home;
use sparkwing_engine::job_log::{self, LogRecord};
use sparkwing_engine::now_ms;
use sparkwing_engine::output::human_duration;
use sparkwing_engine::store::{RunFilter, RunRecord, Store};
use std::time::{Duration, Instant};

/// How often follow and wait look again. Reads are cheap (WAL readers never block writers).
const POLL: Duration = Duration::from_millis(200);

fn open() -> Result<(Home, Store), CliError> {
    let home = Home::from_env();
    let store = abandoned::open_store(&home)?;
    Ok((home, store))
}

pub fn list(args: ListArgs) -> CmdResult {
    if args.profile.is_some() {
        return super::remote_runs::list(args);
    }
    let statuses = args
        .statuses
        .iter()
        .map(|s| {
            s.parse::<RunPhase>().map_err(|_| {
                CliError::new(
                    ExitCode::Usage,
                    format!("unknown status {s:?}; use one of queued, running, success, failed, cancelled"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (_, store) = open()?;
    let runs = store.list_runs(&RunFilter {
        pipelines: args.pipelines.clone(),
        statuses,
        limit: Some(args.limit),
    })?;
    let now = now_ms();
    let out = Printer::new(args.output);
    if out.json() {
        for r in &runs {
            out.json_line(&run_json(r, now));
        }
        return Ok(ExitCode::Success);
    }
    if runs.is_empty() {
        out.line("no runs yet: start one with `sparkwing run <pipeline>`");
        return Ok(ExitCode::Success);
    }
    const TABLE: [Column; 5] = [
        Column::left(27),
        Column::left(20),
        Column::left(10),
        Column::left(20),
        Column::right(9).wide_gap(),
    ];
    out.row(
        &TABLE,
        &[
            &"RUN",
            &"PIPELINE",
            &"STATUS",
            &"STARTED (UTC)",
            &"DURATION",
            &"WHO",
        ],
    );
    for r in &runs {
        out.row(
            &TABLE,
            &[
                &r.id,
                &r.pipeline,
                &r.status.local_str(),
                &format_time(r.started_at.unwrap_or(r.created_at)),
                &human_duration(r.duration_ms(now)),
                &format_args!("{}@{}", r.user, r.host),
            ],
        );
    }
    Ok(ExitCode::Success)
}

fn run_json(r: &RunRecord, now: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["duration_ms"] = json!(r.duration_ms(now));
    v
}

pub fn status(args: StatusArgs) -> CmdResult {
    if args.run.profile.is_some() {
        return super::remote_runs::status(args);
    }
    let (home, store) = open()?;
    let run = store.find_run(args.run.id())?;
    let jobs = store.jobs(&run.id)?;
    let now = now_ms();
    let super::gates::StatusLines {
        lines: gate_lines,
        group: group_json,
        gates: gates_json,
        job_groups,
    } = super::gates::status_lines(&home, &store, &run)?;
    match args.output {
        OutputFormat::Json => {
            let mut v = run_json(&run, now);
            // Only runs with gates or a group carry the fields, so others read as before.
            if !group_json.is_null() {
                v["concurrency"] = group_json;
            }
            if gates_json.as_array().is_some_and(|g| !g.is_empty()) {
                v["gates"] = gates_json;
            }
            if !job_groups.is_empty() {
                v["job_groups"] = serde_json::Value::Array(job_groups);
            }
            v["jobs"] = serde_json::to_value(&jobs).unwrap_or_default();
            v["caches"] = serde_json::to_value(store.job_caches(&run.id)?).unwrap_or_default();
            v["artifacts"] = serde_json::to_value(store.artifacts(&run.id)?).unwrap_or_default();
            v["events"] = serde_json::to_value(store.events(&run.id, 0)?).unwrap_or_default();
            Printer::new(args.output).json_document(&v);
        }
        OutputFormat::Pretty => {
            println!("run:      {}", run.id);
            println!("pipeline: {} ({})", run.pipeline, run.entrypoint);
            println!("status:   {}", run.status);
            if let Some(e) = &run.error {
                println!("error:    {e}");
            }
            println!(
                "started:  {} UTC",
                format_time(run.started_at.unwrap_or(run.created_at))
            );
            println!("duration: {}", human_duration(run.duration_ms(now)));
            if let (Some(b), Some(c)) = (&run.git_branch, &run.git_commit) {
                println!("git:      {b} @ {}", &c[..c.len().min(12)]);
            }
            println!("by:       {}@{} (pid {})", run.user, run.host, run.pid);
            println!("args:     {}", run.args);
            println!("logs:     {}", run.log_dir);
            if let (Some(p), Some(j)) = (&run.parent_run_id, &run.parent_job) {
                println!("parent:   {p} job {j}");
            }
            if let Some(r) = &run.retry_of {
                println!("retry of: {r}");
            }
            for line in &gate_lines {
                println!("{line}");
            }
            if !jobs.is_empty() {
                let out = Printer::new(args.output);
                const TABLE: [Column; 4] = [
                    Column::left(24),
                    Column::left(10),
                    Column::right(7),
                    Column::right(9).wide_gap(),
                ];
                out.line("");
                out.row(
                    &TABLE,
                    &[&"JOB", &"STATE", &"ATTEMPT", &"DURATION", &"REASON"],
                );
                for j in &jobs {
                    let dur = match (j.started_at, j.finished_at) {
                        (Some(s), Some(f)) => human_duration(f - s),
                        (Some(s), None) => human_duration(now - s),
                        _ => "-".into(),
                    };
                    out.row(
                        &TABLE,
                        &[
                            &j.job_id,
                            &j.state.as_str(),
                            &j.attempt,
                            &dur,
                            &j.reason.as_deref().unwrap_or_default(),
                        ],
                    );
                    if let Some(c) = &j.child_run {
                        out.row(&TABLE[..1], &[&"", &format_args!("child: {c}")]);
                    }
                    out.job_outputs(TABLE[0], j.outputs.as_ref());
                }
            }
            super::storage::print_run_storage(&store, &run.id)?;
        }
    }
    Ok(ExitCode::of_run(run.status))
}

fn print_record(job: &str, rec: &LogRecord, output: OutputFormat, many: bool) {
    match output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(rec).unwrap_or_default();
            v["job"] = json!(job);
            println!("{v}");
        }
        OutputFormat::Pretty if many => println!("{job} │ {}", rec.line),
        OutputFormat::Pretty => println!("{}", rec.line),
    }
}

pub fn logs(args: LogsArgs) -> CmdResult {
    if args.run.profile.is_some() {
        return super::remote_runs::logs(args);
    }
    let (_, store) = open()?;
    let run = store.find_run(args.run.id())?;
    let mut job_ids: Vec<String> = store.jobs(&run.id)?.into_iter().map(|j| j.job_id).collect();
    if let Some(j) = &args.job {
        if !job_ids.contains(j) {
            return Err(CliError::new(
                ExitCode::NotFound,
                format!(
                    "run {} has no job {j:?} (jobs: {})",
                    run.id,
                    job_ids.join(", ")
                ),
            ));
        }
        job_ids = vec![j.clone()];
    }
    let mut many = job_ids.len() > 1;
    let dir = std::path::PathBuf::from(&run.log_dir);
    // Print what is there (respecting --tail), remembering how far each job got.
    let mut seen: Vec<u64> = Vec::with_capacity(job_ids.len());
    for job in &job_ids {
        let recs = job_log::read(&Home::job_log(&dir, job)).unwrap_or_default();
        let skip = args.tail.map(|t| recs.len().saturating_sub(t)).unwrap_or(0);
        for r in &recs[skip..] {
            print_record(job, r, args.output, many);
        }
        seen.push(recs.last().map(|r| r.seq).unwrap_or(0));
    }
    if !args.follow {
        return Ok(ExitCode::Success);
    }
    loop {
        // Read the status before the logs: once a finished status is seen, one more pass over
        // the logs is guaranteed to include every line written before it.
        let finished = store.find_run(&run.id)?.status.is_terminal() || !abandoned::is_alive(&run);
        // A run followed while it is still being planned has no jobs yet: take them once they
        // are recorded (the plan records all of them at once).
        if job_ids.is_empty() && args.job.is_none() {
            job_ids = store.jobs(&run.id)?.into_iter().map(|j| j.job_id).collect();
            many = job_ids.len() > 1;
            seen = vec![0; job_ids.len()];
        }
        for (i, job) in job_ids.iter().enumerate() {
            let recs = job_log::read(&Home::job_log(&dir, job)).unwrap_or_default();
            let last = seen[i];
            for r in recs.iter().filter(|r| r.seq > last) {
                print_record(job, r, args.output, many);
                seen[i] = r.seq;
            }
        }
        if finished {
            let mut store = store;
            abandoned::abandoned_runs(&mut store)?;
            return Ok(ExitCode::Success);
        }
        std::thread::sleep(POLL);
    }
}

pub fn cancel(args: CancelArgs) -> CmdResult {
    if args.run.profile.is_some() {
        return super::remote_runs::cancel(args);
    }
    let (_, mut store) = open()?;
    let run = store.find_run(args.run.id())?;
    if run.status.is_terminal() {
        println!(
            "run {} already finished ({}); nothing to cancel",
            run.id, run.status
        );
        return Ok(ExitCode::Success);
    }
    if !abandoned::is_alive(&run) {
        abandoned::abandoned_runs(&mut store)?;
        println!("run {} had no live process; recorded as failed", run.id);
        return Ok(ExitCode::Success);
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    if run.host != host {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "run {} runs on host {}, not this one ({host}); cancel it there",
                run.id, run.host
            ),
        ));
    }
    // The run's lock is held, so the pid is that run's sparkwing process: SIGTERM makes it cancel
    // exactly as a first Ctrl-C does.
    store.append_event(
        &run.id,
        None,
        "cancel_requested",
        &json!({"by": std::env::var("USER").unwrap_or_default(), "pid": std::process::id()}),
        now_ms(),
    )?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| {
        CliError::new(
            ExitCode::Internal,
            format!("cannot signal pid {}: {e}", run.pid),
        )
    })?;
    println!(
        "cancelling run {} (pid {}); finally jobs still run",
        run.id, run.pid
    );
    Ok(ExitCode::Success)
}

pub fn wait(args: WaitArgs) -> CmdResult {
    if args.run.profile.is_some() {
        return super::remote_runs::wait(args);
    }
    let (_, mut store) = open()?;
    let run = store.find_run(args.run.id())?;
    let started = Instant::now();
    loop {
        abandoned::abandoned_runs(&mut store)?;
        let cur = store.find_run(&run.id)?;
        if cur.status.is_terminal() {
            println!("run {} {}", cur.id, cur.status);
            return Ok(ExitCode::of_run(cur.status));
        }
        if let Some(t) = args.timeout {
            if started.elapsed() >= t {
                eprintln!(
                    "run {} still {} after {}",
                    cur.id,
                    cur.status,
                    humantime::format_duration(t)
                );
                return Ok(ExitCode::Timeout);
            }
        }
        std::thread::sleep(POLL);
    }
}
