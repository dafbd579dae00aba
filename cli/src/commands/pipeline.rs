//! `sparkwing pipeline list|describe`.

use super::{start_dir, CliError, CmdResult};
use crate::cli::{DescribeArgs, OutputFormat, ProjectOutput};
use crate::exit::ExitCode;
use crate::printer::{Column, Printer};
use serde_json::json;
use sparkwing_core::suggest::closest;
use sparkwing_engine::compile::{self, Progress};
use sparkwing_engine::home::Home;
use sparkwing_engine::project;
use std::io::IsTerminal;

pub fn list(args: ProjectOutput) -> CmdResult {
    let project = project::discover(&start_dir(args.dir.as_deref()))?;
    let pipelines = &project.config.pipelines;
    let out = Printer::new(args.output);
    if out.json() {
        for p in pipelines {
            out.json_line(
                &json!({"name": p.name, "entrypoint": p.entrypoint, "description": p.description, "on": p.on, "runner": p.runner}),
            );
        }
        return Ok(ExitCode::Success);
    }
    if pipelines.is_empty() {
        out.line(format_args!(
            "no pipelines in {}; add one with `sparkwing pipeline new --name NAME`",
            project.config_path().display()
        ));
    }
    const TABLE: [Column; 2] = [Column::left(24), Column::left(20)];
    for p in pipelines {
        out.row(&TABLE, &[&p.name, &p.entrypoint, &p.description]);
    }
    Ok(ExitCode::Success)
}

pub fn describe(args: DescribeArgs) -> CmdResult {
    let project = project::discover(&start_dir(args.project.dir.as_deref()))?;
    let Some(p) = project.pipeline(&args.name).cloned() else {
        let hint = closest(
            &args.name,
            project.config.pipelines.iter().map(|p| p.name.as_str()),
        )
        .map(|s| format!("; did you mean {s:?}?"))
        .unwrap_or_default();
        return Err(CliError::new(
            ExitCode::Usage,
            format!("unknown pipeline {:?}{hint}", args.name),
        ));
    };
    let home = Home::from_env();
    let progress = if std::io::stderr().is_terminal() {
        Progress::Terminal
    } else {
        Progress::OnFailure
    };
    let compiled = compile::ensure(&home.cache, &project, progress)
        .map_err(|e| CliError::new(ExitCode::RunFailed, e.to_string()))?;
    let info = compiled.describe.entrypoint(&p.entrypoint).cloned();
    match args.project.output {
        OutputFormat::Json => Printer::new(args.project.output).json_document(&json!({
            "name": p.name, "entrypoint": p.entrypoint, "description": p.description,
            "on": p.on, "runner": p.runner, "config_args": p.args,
            "registered": info.is_some(),
            "about": info.as_ref().map(|i| i.about.clone()),
            "args": info.as_ref().map(|i| i.args.clone()).unwrap_or_default(),
            "secrets": info.as_ref().map(|i| i.secrets.clone()).unwrap_or_default(),
        })),
        OutputFormat::Pretty => {
            println!("name:        {}", p.name);
            println!(
                "entrypoint:  {}{}",
                p.entrypoint,
                if info.is_none() {
                    " (NOT registered in .sparkwing/src/main.rs)"
                } else {
                    ""
                }
            );
            let about = info.as_ref().map(|i| i.about.as_str()).unwrap_or("");
            println!(
                "description: {}",
                if p.description.is_empty() {
                    about
                } else {
                    &p.description
                }
            );
            if let Some(push) = p.on.as_ref().and_then(|o| o.push.as_ref()) {
                println!("on push:     {}", push.branches.join(", "));
            }
            if let Some(i) = &info {
                println!("args:");
                if i.args.is_empty() {
                    println!("  (none)");
                }
                for a in &i.args {
                    let default = a
                        .default
                        .as_ref()
                        .map(|d| format!(" = {d}"))
                        .unwrap_or_default();
                    println!("  --{} {}{default}  {}", a.name, a.kind.as_str(), a.help);
                }
                if !i.secrets.is_empty() {
                    println!("secrets:     {}", i.secrets.join(", "));
                }
            }
        }
    }
    Ok(ExitCode::Success)
}
