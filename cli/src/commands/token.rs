//! `sparkwing token create|list|revoke [--profile P]`: API tokens (the profile's token needs the
//! `admin` scope).

use serde_json::Value;
use sparkwing_api::scopes::GRANTABLE_SCOPES;

use super::{api_error, CliError, CmdResult};
use crate::cli::{OutputFormat, TokenCreateArgs, TokenListArgs, TokenRevokeArgs};
use crate::exit::ExitCode;
use crate::printer::{Column, Printer};
use crate::remote::target;

/// A body as `--output json` prints it: its JSON object (keys sorted).
fn json_of(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

pub fn create(args: TokenCreateArgs) -> CmdResult {
    for sc in &args.scopes {
        if !GRANTABLE_SCOPES.contains(&sc.as_str()) {
            return Err(CliError::new(
                ExitCode::Usage,
                format!("unknown scope {sc:?}; use {}", GRANTABLE_SCOPES.join(", ")),
            ));
        }
    }
    let t = target::resolve(args.profile.as_deref())?;
    let v = t
        .client
        .create_token(&args.principal, &args.scopes)
        .map_err(|e| api_error(&t, e))?;
    match args.output {
        OutputFormat::Json => println!("{}", json_of(&v)),
        OutputFormat::Pretty => {
            println!("{}", v.token);
            eprintln!(
                "token {} for {} with scopes {} (shown once: keep it now; revoke with `sparkwing token revoke {} --profile {}`)",
                v.info.id,
                v.info.principal,
                v.info.scopes.join(","),
                v.info.id,
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
            out.json_line(&json_of(v));
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
        out.row(
            &TABLE,
            &[
                &v.id,
                &v.principal,
                &v.scopes.join(","),
                &v.created,
                &if v.revoked { "yes" } else { "no" },
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
