//! A pipeline's plan without running it: `sparkwing pipeline plan`, `sparkwing run --sw-dry-run`
//! and `sparkwing pipeline lint`. Nothing here opens the run store: no run is recorded.

use super::pipeline_ref::{resolve_args, unknown_pipeline, unregistered_entrypoint};
use super::{start_dir, CliError, CmdResult};
use crate::cli::{PlanArgs, PlanFormat, ProjectOutput};
use crate::exit::ExitCode;
use crate::printer::Printer;
use crate::settings::PlanSettings;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sparkwing_core::args::{self, ArgProblem};
use sparkwing_core::dag::{self, ValidatedPlan};
use sparkwing_core::mask::Masker;
use sparkwing_core::protocol::{JobSpec, PipelineInfo};
use sparkwing_core::selection::Selection;
use sparkwing_engine::compile::{self, CompileError, Compiled, Progress};
use sparkwing_engine::home::Home;
use sparkwing_engine::output::human_duration;
use sparkwing_engine::planning;
use sparkwing_engine::project::{self, PipelineConfig, Project};
use std::io::IsTerminal;

/// `sparkwing pipeline plan NAME [ARGS]`.
pub fn plan(args: PlanArgs) -> CmdResult {
    let settings = PlanSettings::resolve(&args)?;
    let project = project::discover(&start_dir(settings.dir.as_deref()))?;
    let pipeline = project
        .pipeline(&settings.pipeline)
        .ok_or_else(|| unknown_pipeline(&project, &settings.pipeline))?
        .clone();
    show(
        &Home::from_env(),
        &project,
        &pipeline,
        &settings.pipeline_args,
        &Selection::default(),
        settings.output,
    )
}

/// Compile, resolve the args as a run would (an error exits 2), plan, check the graph and print
/// the plan, with the jobs `selection` leaves out skipped (a selection naming no job exits 2).
/// An invalid plan or a failing plan function exits 1, as the run would fail.
pub(super) fn show(
    home: &Home,
    project: &Project,
    pipeline: &PipelineConfig,
    tokens: &[String],
    selection: &Selection,
    format: PlanFormat,
) -> CmdResult {
    let compiled = compile_unrecorded(home, project)?;
    let info = registered(project, pipeline, &compiled)?;
    let resolved = resolve_args(&info, pipeline, tokens)?;
    let mut plan = plan_of(project, pipeline, &compiled, &resolved)
        .map_err(|f| CliError::new(ExitCode::RunFailed, f.message))?;
    let skips = selection
        .skips(&plan)
        .map_err(|e| CliError::new(ExitCode::Usage, e.to_string()))?;
    for (job, skip) in plan.jobs.iter_mut().zip(skips) {
        if job.skip.is_none() {
            job.skip = skip;
        }
    }
    let masker = Masker::new(
        args::secret_values(&info.args, &resolved)
            .into_iter()
            .map(|(_, v)| v),
    );
    let shown = args::redacted(&info.args, &resolved);
    let out = Printer::json_if(format == PlanFormat::Json);
    match format {
        PlanFormat::Json => {
            let mut doc = json!({
                "pipeline": pipeline.name,
                "entrypoint": pipeline.entrypoint,
                "args": shown,
                "jobs": plan.jobs,
            });
            // Only plans with a group carry the field, so other plans read exactly as before.
            if let Some(c) = concurrency_json(&plan, &shown) {
                doc["concurrency"] = c;
            }
            out.json_document(&masker.mask_json(&doc))
        }
        PlanFormat::Pretty => print!("{}", masker.mask(&text(pipeline, &shown, &plan))),
        PlanFormat::Dot => print!("{}", masker.mask(&dot(pipeline, &plan))),
    }
    Ok(ExitCode::Success)
}

/// The pipeline binary, compiled if needed; a failed build exits 1 and, unlike a run's, is not
/// recorded.
fn compile_unrecorded(home: &Home, project: &Project) -> Result<Compiled, CliError> {
    let progress = if std::io::stderr().is_terminal() {
        Progress::Terminal
    } else {
        Progress::OnFailure
    };
    compile::ensure(&home.cache, project, progress).map_err(|e| match e {
        CompileError::BuildFailed { .. } | CompileError::FetchFailed { .. } => {
            CliError::new(ExitCode::RunFailed, format!("compile error: {e}"))
        }
        other => CliError::new(ExitCode::Internal, other.to_string()),
    })
}

/// What `.sparkwing/` registers for the pipeline's entrypoint; none exits 3.
fn registered(
    project: &Project,
    pipeline: &PipelineConfig,
    compiled: &Compiled,
) -> Result<PipelineInfo, CliError> {
    compiled
        .describe
        .entrypoint(&pipeline.entrypoint)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = compiled
                .describe
                .pipelines
                .iter()
                .map(|p| p.entrypoint.clone())
                .collect();
            unregistered_entrypoint(project, &pipeline.name, &pipeline.entrypoint, &names)
        })
}

/// A problem `pipeline lint` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Finding {
    /// Stable: `unregistered_entrypoint`, `unknown_arg`, `bad_arg`, `plan_failed`, a plan
    /// error's kind (`duplicate_job`, `unknown_need`, `cycle`, ...), or a gate's
    /// (`unreachable_gate`, `unused_gate`).
    kind: &'static str,
    message: String,
}

/// The plan of `pipeline` with `resolved` args, checked; the finding when there is none.
fn plan_of(
    project: &Project,
    pipeline: &PipelineConfig,
    compiled: &Compiled,
    resolved: &Map<String, Value>,
) -> Result<ValidatedPlan, Finding> {
    let doc = planning::plan(
        &compiled.binary,
        &project.root,
        &pipeline.name,
        &pipeline.entrypoint,
        resolved,
    )
    .map_err(|e| Finding {
        kind: "plan_failed",
        message: format!("plan: {e}"),
    })?;
    dag::validate(&doc).map_err(|e| Finding {
        kind: e.kind(),
        message: format!("invalid plan: {e}"),
    })
}

/// What `pipeline lint` found for one pipeline.
#[derive(Debug, Serialize)]
struct PipelineLint {
    pipeline: String,
    entrypoint: String,
    /// `ok`, `findings`, or `not_planned` (a required arg has no default, so there is no default
    /// plan to check).
    status: &'static str,
    findings: Vec<Finding>,
    note: Option<String>,
}

/// `sparkwing pipeline lint`: every pipeline of `sparkwing.yaml`, planned with its default args.
pub fn lint(args: ProjectOutput) -> CmdResult {
    let project = project::discover(&start_dir(args.dir.as_deref()))?;
    let compiled = compile_unrecorded(&Home::from_env(), &project)?;
    let reports: Vec<PipelineLint> = project
        .config
        .pipelines
        .iter()
        .map(|p| lint_one(&project, p, &compiled))
        .collect();
    let out = Printer::new(args.output);
    let findings: usize = reports.iter().map(|r| r.findings.len()).sum();
    if out.json() {
        for r in &reports {
            out.json_line(r);
        }
    } else {
        let row = |status: &str, pipeline: &str, what: &str| {
            let row = format!("{status:<11} {pipeline:<24} {what}");
            out.line(row.trim_end());
        };
        for r in &reports {
            match &r.note {
                Some(note) if r.findings.is_empty() => row("not planned", &r.pipeline, note),
                _ if r.findings.is_empty() => row("ok", &r.pipeline, ""),
                _ => {
                    for f in &r.findings {
                        row(
                            "finding",
                            &r.pipeline,
                            &format!("{}: {}", f.kind, f.message),
                        );
                    }
                }
            }
        }
        out.line(format_args!(
            "{} pipelines checked, {findings} finding{}",
            reports.len(),
            if findings == 1 { "" } else { "s" }
        ));
    }
    Ok(if findings == 0 {
        ExitCode::Success
    } else {
        ExitCode::RunFailed
    })
}

fn lint_one(project: &Project, pipeline: &PipelineConfig, compiled: &Compiled) -> PipelineLint {
    let mut report = PipelineLint {
        pipeline: pipeline.name.clone(),
        entrypoint: pipeline.entrypoint.clone(),
        status: "ok",
        findings: Vec::new(),
        note: None,
    };
    let findings = match registered(project, pipeline, compiled) {
        Err(e) => vec![Finding {
            kind: "unregistered_entrypoint",
            message: e.message,
        }],
        Ok(info) => match args::resolve(&info.args, &pipeline.arg_defaults(), &[]) {
            Err(e) => match &e.problem {
                ArgProblem::Required(_) => {
                    report.status = "not_planned";
                    report.note = Some(format!("{} (no default to plan with)", e.problem));
                    Vec::new()
                }
                ArgProblem::Unknown { .. } => vec![Finding {
                    kind: "unknown_arg",
                    message: e.to_string(),
                }],
                _ => vec![Finding {
                    kind: "bad_arg",
                    message: e.to_string(),
                }],
            },
            Ok(resolved) => match plan_of(project, pipeline, compiled, &resolved) {
                Err(f) => vec![f],
                Ok(plan) => dag::gate_findings(&plan)
                    .into_iter()
                    .map(|g| Finding {
                        kind: g.kind(),
                        message: g.to_string(),
                    })
                    .collect(),
            },
        },
    };
    if !findings.is_empty() {
        report.status = "findings";
        report.findings = findings;
    }
    report
}

/// What a job's plan says besides its id and needs, one item each.
fn notes(job: &JobSpec) -> Vec<String> {
    let mut notes = Vec::new();
    if job.retries > 0 {
        notes.push(format!(
            "retries {} (backoff {})",
            job.retries,
            human_duration(job.backoff_ms as i64)
        ));
    }
    if let Some(t) = job.timeout_ms {
        notes.push(format!("timeout {}", human_duration(t as i64)));
    }
    if job.optional {
        notes.push("optional".into());
    }
    if job.finally {
        notes.push("finally".into());
    }
    if let Some(reason) = &job.skip {
        notes.push(format!("skipped: {reason}"));
    }
    if let Some(cond) = &job.when {
        notes.push(format!("when {cond}"));
    }
    if let Some(dir) = &job.workdir {
        notes.push(format!("workdir {dir}"));
    }
    if !job.env.is_empty() {
        let names: Vec<&str> = job.env.keys().map(String::as_str).collect();
        notes.push(format!("env {}", names.join(" ")));
    }
    if let Some(g) = &job.gate {
        notes.push(gate_note(g));
    }
    if let Some(c) = &job.concurrency {
        let cancel = if c.cancel_in_progress {
            ", cancel in progress"
        } else {
            ""
        };
        notes.push(format!(
            "concurrency group {} (limit {}{cancel})",
            c.group, c.limit
        ));
    }
    for c in &job.caches {
        let key: Vec<&str> = c
            .key_files
            .iter()
            .chain(&c.key_texts)
            .map(String::as_str)
            .collect();
        notes.push(format!(
            "cache {} ({}; key {})",
            c.name,
            c.paths.join(" "),
            if key.is_empty() {
                "-".into()
            } else {
                key.join(" ")
            }
        ));
    }
    for a in &job.publishes {
        notes.push(format!("publishes {} ({})", a.name, a.path));
    }
    for c in &job.consumes {
        notes.push(format!("consumes {}/{}", c.job, c.name));
    }
    if let Some(m) = &job.memo {
        let inputs: Vec<String> = m
            .files
            .iter()
            .cloned()
            .chain(m.args.iter().map(|a| format!("--{a}")))
            .chain(m.outputs.iter().map(|o| format!("{}.{}", o.job, o.output)))
            .collect();
        notes.push(format!(
            "memoized {} on {}",
            human_duration(i64::try_from(m.ttl_ms).unwrap_or(i64::MAX)),
            if inputs.is_empty() {
                "nothing".to_string()
            } else {
                inputs.join(" ")
            }
        ));
    }
    if let Some(p) = &job.placement {
        notes.push(format!("placement {}", p.summary()));
    }
    if let Some(f) = &job.fan_out {
        notes.push(format!("fanned out from {}.{}", f.job, f.output));
    }
    if let Some(items) = &job.matrix {
        notes.push(format!(
            "matrix of {} item{}",
            items.len(),
            if items.len() == 1 { "" } else { "s" }
        ));
    }
    if let Some(e) = &job.expanded {
        notes.push(format!("item {:?}", e.item));
    }
    if let Some(a) = &job.awaits {
        let mut target = format!("awaits pipeline {}", a.pipeline);
        if let Some(p) = &a.profile {
            target.push_str(&format!(" on profile {p}"));
        }
        notes.push(target);
    }
    notes
}

/// An approval gate as the plan shows it: `gate "Ship it?" (timeout 1h, then reject)`.
fn gate_note(g: &sparkwing_core::gate::GateSpec) -> String {
    let mut note = "gate".to_string();
    if let Some(m) = &g.message {
        note.push_str(&format!(" {m:?}"));
    }
    if let Some(t) = g.timeout_ms {
        note.push_str(&format!(
            " (timeout {}, then {})",
            human_duration(t as i64),
            g.on_timeout
        ));
    }
    note
}

/// The plan's concurrency group as declared, with its key resolved from the shown args (`key` is
/// `null` when it cannot be resolved).
fn concurrency_json(plan: &ValidatedPlan, shown: &Map<String, Value>) -> Option<Value> {
    plan.concurrency.as_ref().map(|c| {
        json!({
            "group": c.group,
            "key": sparkwing_core::concurrency::resolve_key(&c.group, shown).ok(),
            "limit": c.limit,
            "cancel_in_progress": c.cancel_in_progress,
        })
    })
}

/// The concurrency line of the text form: `concurrency: group deploy-prod (limit 1, cancel in
/// progress)`.
fn concurrency_text(plan: &ValidatedPlan, shown: &Map<String, Value>) -> Option<String> {
    let c = plan.concurrency.as_ref()?;
    let key = match sparkwing_core::concurrency::resolve_key(&c.group, shown) {
        Ok(k) if k == c.group => k,
        Ok(k) => format!("{k} (from {})", c.group),
        Err(e) => format!("{} (invalid: {e})", c.group),
    };
    let cancel = if c.cancel_in_progress {
        ", cancel in progress"
    } else {
        ""
    };
    Some(format!(
        "concurrency: group {key} (limit {}{cancel})",
        c.limit
    ))
}

/// The human form: a header, the args, then one row per job in declared order.
/// How a job is named in a printed plan: a template (fan-out or matrix) as `NAME[*]`, the jobs it
/// stands for.
fn shown_id(plan: &ValidatedPlan, id: &str) -> String {
    match plan.index_of(id) {
        Some(i) if plan.jobs[i].is_template() => format!("{id}[*]"),
        _ => id.to_string(),
    }
}

fn text(pipeline: &PipelineConfig, args: &Map<String, Value>, plan: &ValidatedPlan) -> String {
    let mut out = format!(
        "pipeline {} (entrypoint {}): {} job{}\n",
        pipeline.name,
        pipeline.entrypoint,
        plan.jobs.len(),
        if plan.jobs.len() == 1 { "" } else { "s" }
    );
    let shown: Vec<String> = args
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("--{k} {s}"),
            other => format!("--{k} {other}"),
        })
        .collect();
    out.push_str(&format!(
        "args: {}\n",
        if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join(" ")
        }
    ));
    if let Some(line) = concurrency_text(plan, args) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    let needs = |j: &JobSpec| {
        if j.needs.is_empty() {
            "-".to_string()
        } else {
            j.needs
                .iter()
                .map(|n| shown_id(plan, n))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let id_width = plan
        .jobs
        .iter()
        .map(|j| shown_id(plan, &j.id).len())
        .max()
        .unwrap_or(0)
        .max(3);
    let needs_width = plan
        .jobs
        .iter()
        .map(|j| needs(j).len())
        .max()
        .unwrap_or(0)
        .max(5);
    let line = |id: &str, needs: &str, rest: &str| {
        format!("{id:<id_width$}  {needs:<needs_width$}  {rest}")
            .trim_end()
            .to_string()
            + "\n"
    };
    out.push_str(&line("JOB", "NEEDS", "NOTES"));
    for j in &plan.jobs {
        out.push_str(&line(
            &shown_id(plan, &j.id),
            &needs(j),
            &notes(j).join("; "),
        ));
    }
    out
}

/// A Graphviz digraph: one node per job (its notes under its id), one edge per need, pointing
/// from the job needed to the job that needs it.
fn dot(pipeline: &PipelineConfig, plan: &ValidatedPlan) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
        quote(&pipeline.name)
    );
    if let Some(c) = &plan.concurrency {
        let cancel = if c.cancel_in_progress {
            ", cancel in progress"
        } else {
            ""
        };
        out.push_str(&format!(
            "  label={};\n",
            quote(&format!(
                "concurrency group {} (limit {}{cancel})",
                c.group, c.limit
            ))
        ));
    }
    for j in &plan.jobs {
        let mut label = quote(&shown_id(plan, &j.id));
        for n in notes(j) {
            // `\n` inside a quoted label is Graphviz's line break.
            label = format!("{}\\n{}", &label[..label.len() - 1], &quote(&n)[1..]);
        }
        let mut attrs = vec![format!("label={label}")];
        if j.optional || j.skip.is_some() {
            attrs.push("style=dashed".into());
        }
        if j.finally {
            attrs.push("peripheries=2".into());
        }
        out.push_str(&format!(
            "  {} [{}];\n",
            quote(&shown_id(plan, &j.id)),
            attrs.join(", ")
        ));
    }
    // A matrix's jobs hang from their template, which stands for them in its dependents' needs.
    for (i, needs) in plan.needs.iter().enumerate() {
        if let Some(e) = &plan.jobs[i].expanded {
            out.push_str(&format!(
                "  {} -> {} [style=dotted];\n",
                quote(&shown_id(plan, &e.template)),
                quote(&plan.jobs[i].id)
            ));
            continue;
        }
        for &n in needs.iter().filter(|&&n| plan.jobs[n].expanded.is_none()) {
            out.push_str(&format!(
                "  {} -> {};\n",
                quote(&shown_id(plan, &plan.jobs[n].id)),
                quote(&shown_id(plan, &plan.jobs[i].id))
            ));
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> PipelineConfig {
        serde_yaml_ng::from_str(&format!("name: {name}\nentrypoint: E\n")).unwrap()
    }

    fn validated(jobs: Vec<JobSpec>) -> ValidatedPlan {
        dag::validate(&sparkwing_core::protocol::PlanDoc {
            protocol: 1,
            concurrency: None,
            entrypoint: "E".into(),
            jobs,
        })
        .unwrap()
    }

    #[test]
    fn dot_quotes_names_and_points_from_need_to_needer() {
        let mut fin = JobSpec::new("fin");
        fin.finally = true;
        let plan = validated(vec![
            JobSpec::new("a"),
            JobSpec::new("b").needs(&["a"]),
            fin,
        ]);
        let d = dot(&config("say \"hi\""), &plan);
        assert!(d.starts_with("digraph \"say \\\"hi\\\"\" {\n"), "{d}");
        assert!(d.contains("  \"a\" -> \"b\";\n"), "{d}");
        assert!(
            d.contains("  \"fin\" [label=\"fin\\nfinally\", peripheries=2];\n"),
            "{d}"
        );
    }

    #[test]
    fn text_lists_jobs_in_declared_order_with_notes() {
        let mut slow = JobSpec::new("slow").needs(&["first"]);
        slow.timeout_ms = Some(1500);
        slow.retries = 2;
        let plan = validated(vec![JobSpec::new("first"), slow]);
        let t = text(&config("p"), &Map::new(), &plan);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "pipeline p (entrypoint E): 2 jobs");
        assert_eq!(lines[1], "args: none");
        assert_eq!(lines[3], "JOB    NEEDS  NOTES");
        assert_eq!(lines[4], "first  -");
        assert_eq!(
            lines[5],
            "slow   first  retries 2 (backoff 1.0s); timeout 1.5s"
        );
    }
}
