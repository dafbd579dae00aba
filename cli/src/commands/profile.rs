//! `sparkwing profile list|show|set|remove`. Tokens are never printed.

use super::{CliError, CmdResult};
use crate::cli::{OutputFormat, ProfileSetArgs};
use crate::exit::ExitCode;
use crate::printer::Printer;
use crate::profiles::{self, token_source, Profile};
use serde_json::json;

fn describe(name: &str, p: &Profile, is_default: bool) -> serde_json::Value {
    json!({
        "name": name,
        "default": is_default,
        "controller": p.controller,
        "logs": p.logs.clone().or_else(|| p.controller.clone()),
        "namespace": p.namespace,
        "pool": p.pool,
        "mirror_local": p.mirror_local(),
        "token": token_source(p),
    })
}

pub fn list(output: OutputFormat) -> CmdResult {
    let path = profiles::path();
    let file = profiles::load(&path)?;
    match output {
        OutputFormat::Json => {
            let out = Printer::new(output);
            for (name, p) in &file.profiles {
                out.json_line(&describe(name, p, file.default.as_deref() == Some(name)));
            }
        }
        OutputFormat::Pretty => {
            if file.profiles.is_empty() {
                println!(
                    "no profiles in {}; add one with `sparkwing profile set NAME --controller URL --token-env VAR`",
                    path.display()
                );
            }
            for (name, p) in &file.profiles {
                let mark = if file.default.as_deref() == Some(name) {
                    "*"
                } else {
                    " "
                };
                println!(
                    "{mark} {name:<16} {}",
                    p.controller
                        .as_deref()
                        .unwrap_or("(no controller: local state only)")
                );
            }
        }
    }
    Ok(ExitCode::Success)
}

pub fn show(name: Option<&str>, output: OutputFormat) -> CmdResult {
    let path = profiles::path();
    let file = profiles::load(&path)?;
    let (name, p) = profiles::select(&path, &file, name)?;
    let v = describe(&name, p, file.default.as_deref() == Some(name.as_str()));
    match output {
        OutputFormat::Json => Printer::new(output).json_document(&v),
        OutputFormat::Pretty => {
            println!(
                "profile:      {name}{}",
                if v["default"] == true {
                    " (default)"
                } else {
                    ""
                }
            );
            println!("file:         {}", path.display());
            println!(
                "controller:   {}",
                p.controller
                    .as_deref()
                    .unwrap_or("(none: `sparkwing pipeline trigger` needs one)")
            );
            println!("logs:         {}", v["logs"].as_str().unwrap_or("(none)"));
            println!(
                "namespace:    {}",
                p.namespace.as_deref().unwrap_or("(the API's default)")
            );
            println!(
                "pool:         {}",
                p.pool
                    .as_deref()
                    .unwrap_or("(the pipeline's, else the default)")
            );
            println!("mirror_local: {}", p.mirror_local());
            println!("token:        {}", token_source(p));
        }
    }
    Ok(ExitCode::Success)
}

pub fn set(args: ProfileSetArgs) -> CmdResult {
    if !profiles::valid_name(&args.name) {
        return Err(profiles::ProfileError::BadName(args.name).into());
    }
    let path = profiles::path();
    let mut file = profiles::load(&path)?;
    let entry = file.profiles.entry(args.name.clone()).or_default();
    if let Some(c) = args.controller {
        entry.controller = Some(c);
    }
    if let Some(var) = args.token_env {
        entry.token_env = Some(var);
        entry.token = None;
    }
    if args.token_stdin {
        let mut token = String::new();
        std::io::stdin().read_line(&mut token)?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(CliError::new(
                ExitCode::Usage,
                "--token-stdin read an empty token",
            ));
        }
        entry.token = Some(token);
        entry.token_env = None;
    }
    if let Some(l) = args.logs {
        entry.logs = Some(l);
    }
    if let Some(n) = args.namespace {
        entry.namespace = Some(n);
    }
    if let Some(p) = args.pool {
        entry.pool = Some(p);
    }
    if let Some(m) = args.mirror_local {
        entry.mirror_local = Some(m);
    }
    if args.default {
        file.default = Some(args.name.clone());
    }
    profiles::save(&path, &file)?;
    println!(
        "profile {:?} saved in {} (mode 0600)",
        args.name,
        path.display()
    );
    Ok(ExitCode::Success)
}

pub fn remove(name: &str) -> CmdResult {
    let path = profiles::path();
    let mut file = profiles::load(&path)?;
    profiles::select(&path, &file, Some(name))?;
    file.profiles.remove(name);
    if file.default.as_deref() == Some(name) {
        file.default = None;
    }
    profiles::save(&path, &file)?;
    println!("profile {name:?} removed");
    Ok(ExitCode::Success)
}
