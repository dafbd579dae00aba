//! `sparkwing runs approve|reject`: a decision on a waiting approval gate of a local run, or with
//! `--profile` of a cluster run (through the API).

use super::{api_error, format_time, CliError, CmdResult};
use crate::cli::{DecideArgs, OutputFormat};
use crate::exit::ExitCode;
use crate::printer::Printer;
use crate::remote::target;
use serde_json::json;
use sparkwing_api::wire::GateDecisionRequest;
use sparkwing_api::RemoteError;
use sparkwing_core::gate::{self, Decision, DecisionError};
use sparkwing_engine::abandoned;
use sparkwing_engine::gates::DecideError;
use sparkwing_engine::home::Home;

/// What `runs status` says about a run's gates and concurrency groups.
pub(super) struct StatusLines {
    /// The pretty lines.
    pub lines: Vec<String>,
    /// The JSON field `concurrency` (the run's group; null without one).
    pub group: serde_json::Value,
    /// The JSON field `gates`.
    pub gates: serde_json::Value,
    /// The JSON field `job_groups`: jobs waiting for their own group.
    pub job_groups: Vec<serde_json::Value>,
}

/// What `runs status` says about a run's gates, its concurrency group and its jobs waiting for
/// theirs: pretty lines, and the JSON fields `gates`, `concurrency` and `job_groups`.
pub(super) fn status_lines(
    home: &Home,
    store: &sparkwing_engine::store::Store,
    run: &sparkwing_engine::store::RunRecord,
) -> Result<StatusLines, CliError> {
    let mut lines = Vec::new();
    let group = store.run_concurrency(&run.id)?;
    let group_json = match &group {
        None => serde_json::Value::Null,
        Some(g) => {
            let mut v = serde_json::to_value(g).unwrap_or_default();
            if g.state == "waiting" && !run.status.is_terminal() {
                let view =
                    sparkwing_engine::concurrency::view(&home.root, &g.group, g.limit, &run.id);
                let line = sparkwing_core::concurrency::waiting_line(&g.group, &view);
                v["holders"] = json!(view.holders);
                v["waiting"] = json!(line);
                lines.push(format!("waiting:  {line}"));
            } else {
                let cancel = if g.cancel_in_progress {
                    ", cancel in progress"
                } else {
                    ""
                };
                lines.push(format!(
                    "group:    concurrency group {} (limit {}{cancel})",
                    g.group, g.limit
                ));
            }
            v
        }
    };
    // Jobs waiting for a slot of their own concurrency group.
    let mut job_groups = Vec::new();
    if !run.status.is_terminal() {
        let events = store.events(&run.id, 0)?;
        let waiting = sparkwing_core::concurrency::jobs_waiting(
            events
                .iter()
                .filter_map(|e| Some((e.job_id.as_deref()?, e.kind.as_str(), &e.payload))),
        );
        for w in waiting {
            // A job's slots are labelled RUN/JOB.
            let label = format!("{}/{}", run.id, w.job);
            let view = sparkwing_engine::concurrency::view(&home.root, &w.group, w.limit, &label);
            let line = sparkwing_core::concurrency::waiting_line(&w.group, &view);
            lines.push(format!("job {}: {line}", w.job));
            job_groups.push(json!({"job": w.job, "group": w.group, "limit": w.limit, "holders": view.holders, "waiting": line}));
        }
    }
    let gates = store.gates(&run.id)?;
    for g in &gates {
        let message = g
            .message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        let line = match (&g.decided, g.state) {
            (Some(d), _) => format!(
                "gate {}: {} at {} UTC{message}",
                g.gate,
                gate::reason(d),
                format_time(d.at_ms)
            ),
            (None, sparkwing_core::JobState::Waiting) if !run.status.is_terminal() => {
                let timeout = match (g.timeout_ms, g.waiting_since) {
                    (Some(t), Some(since)) => format!(
                        "; {} at {} UTC",
                        g.on_timeout,
                        format_time(since.saturating_add(t as i64))
                    ),
                    _ => String::new(),
                };
                format!(
                    "gate {}: waiting for a decision{message}{timeout} (sparkwing runs approve|reject --run {} --gate {})",
                    g.gate, run.id, g.gate
                )
            }
            (None, state) => format!("gate {}: {state}{message}", g.gate),
        };
        lines.push(line);
    }
    Ok(StatusLines {
        lines,
        group: group_json,
        gates: serde_json::to_value(&gates).unwrap_or_default(),
        job_groups,
    })
}

pub fn decide(args: DecideArgs, decision: Decision) -> CmdResult {
    if args.run.profile.is_some() {
        return decide_remote(args, decision);
    }
    let mut store = abandoned::open_store(&Home::from_env())?;
    let by = args
        .as_user
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(sparkwing_engine::user_name);
    let (run, decided) = sparkwing_engine::gates::decide(
        &mut store,
        args.run.id(),
        &args.gate,
        decision,
        &by,
        args.comment.clone(),
    )
    .map_err(|e| match e {
        DecideError::Store(s) => CliError::from(s),
        DecideError::Refused(r) => {
            let code = match r {
                DecisionError::UnknownGate { .. } => ExitCode::NotFound,
                _ => ExitCode::Usage,
            };
            CliError::new(code, r.to_string())
        }
    })?;
    print_decision(args.output, &run, &args.gate, &decided);
    Ok(ExitCode::Success)
}

/// The recorded decision, as `runs approve|reject` prints it (local and `--profile` alike).
fn print_decision(output: OutputFormat, run: &str, gate_id: &str, decided: &gate::Decided) {
    match output {
        OutputFormat::Json => Printer::new(output).json_document(&json!({
            "run": run,
            "gate": gate_id,
            "decision": decided.decision,
            "by": decided.by,
            "at": decided.at_ms,
            "comment": decided.comment,
        })),
        OutputFormat::Pretty => println!(
            "gate {gate_id} of run {run}: {} ({} UTC)",
            gate::reason(decided),
            format_time(decided.at_ms)
        ),
    }
}

/// `runs approve|reject --profile P`: the decision is recorded by the cluster's API
/// (`POST .../gates/{gate}`, scope `approvals:write` or an approver of the run's Pipeline) as the
/// token's principal; the run's runner
/// picks it up. Refusals exit as locally: an unknown gate or run 4, a gate already decided, not
/// waiting or of a finished run 2.
fn decide_remote(args: DecideArgs, decision: Decision) -> CmdResult {
    if args.as_user.is_some() {
        return Err(CliError::new(
            ExitCode::Usage,
            "--as is for local runs: with --profile the decision is recorded as the principal of \
             the profile's token",
        ));
    }
    let t = target::resolve(args.run.profile.as_deref())?;
    let (ns, name) = super::remote_runs::resolve_run(&t, args.run.id())?;
    let req = GateDecisionRequest {
        decision,
        comment: args.comment.clone().filter(|c| !c.trim().is_empty()),
        timed_out: false,
    };
    let answer = t
        .client
        .decide_gate(&ns, &name, &args.gate, &req)
        .map_err(|e| match &e {
            RemoteError::Status {
                status: status @ (404 | 409),
                message,
                ..
            } => CliError::new(
                if *status == 404 {
                    ExitCode::NotFound
                } else {
                    ExitCode::Usage
                },
                format!("{message} (the API at {})", t.client.base_url()),
            ),
            _ => api_error(&t, e),
        })?;
    let decided = answer.decided.map(|d| d.decided()).ok_or_else(|| {
        CliError::new(
            ExitCode::Api,
            format!(
                "the API at {} recorded the decision but did not answer it",
                t.client.base_url()
            ),
        )
    })?;
    print_decision(args.output, &format!("{ns}/{name}"), &args.gate, &decided);
    Ok(ExitCode::Success)
}
