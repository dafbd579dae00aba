//! `sparkwing token create|list|revoke [--profile P]`: API tokens (the profile's token needs the
//! `admin` scope).

use serde_json::Value;

use super::{api_error, CliError, CmdResult};
use crate::cli::{OutputFormat, TokenCreateArgs, TokenListArgs, TokenRevokeArgs};
use crate::exit::ExitCode;
use crate::printer::{Column, Printer};
use crate::remote::target;

const SCOPES: &str = "runs:read, runs:trigger, admin";

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn scopes(v: &Value) -> String {
    v.get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub fn create(args: TokenCreateArgs) -> CmdResult {
    for sc in &args.scopes {
        if !matches!(sc.as_str(), "runs:read" | "runs:trigger" | "admin") {
            return Err(CliError::new(
                ExitCode::Usage,
                format!("unknown scope {sc:?}; use {SCOPES}"),
            ));
        }
    }
    let t = target::resolve(args.profile.as_deref())?;
    let v = t
        .client
        .create_token(&args.principal, &args.scopes)
        .map_err(|e| api_error(&t, e))?;
    match args.output {
        OutputFormat::Json => println!("{v}"),
        OutputFormat::Pretty => {
            println!("{}", s(&v, "token"));
            eprintln!(
                "token {} for {} with scopes {} (shown once: keep it now; revoke with `sparkwing token revoke {} --profile {}`)",
                s(&v, "id"),
                s(&v, "principal"),
                scopes(&v),
                s(&v, "id"),
                t.name
            );
        }
    }
    Ok(ExitCode::Success)
}

pub fn list(args: TokenListArgs) -> CmdResult {
    let t = target::resolve(args.profile.as_deref())?;
    let tokens = t.client.list_tokens().map_err(|e| api_error(&t, e))?;
    let out = Printer::new(args.output);
    if out.json() {
        for v in &tokens {
            out.json_line(v);
        }
        return Ok(ExitCode::Success);
    }
    const TABLE: [Column; 4] = [
        Column::left(14),
        Column::left(28),
        Column::left(30),
        Column::left(22),
    ];
    out.row(
        &TABLE,
        &[&"ID", &"PRINCIPAL", &"SCOPES", &"CREATED", &"REVOKED"],
    );
    for v in &tokens {
        let revoked = if v.get("revoked") == Some(&Value::Bool(true)) {
            "yes"
        } else {
            "no"
        };
        out.row(
            &TABLE,
            &[
                &s(v, "id"),
                &s(v, "principal"),
                &scopes(v),
                &s(v, "created"),
                &revoked,
            ],
        );
    }
    Ok(ExitCode::Success)
}

pub fn revoke(args: TokenRevokeArgs) -> CmdResult {
    let t = target::resolve(args.profile.as_deref())?;
    t.client
        .revoke_token(&args.id)
        .map_err(|e| api_error(&t, e))?;
    println!("revoked token {}", args.id);
    Ok(ExitCode::Success)
}
