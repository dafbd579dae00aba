//! The binary's side of `docs/protocol.md`: `describe`, `plan` and `job` subcommands.

use std::any::Any;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::args::Args;
use crate::error::{CommandEnd, Error, Result};
use crate::job::Job;
use crate::json::Value;
use crate::plan::{Pipeline, Plan};
use crate::{PROTOCOL_VERSION, SDK_VERSION};

/// Exit code: success.
const EXIT_OK: i32 = 0;
/// Exit code: the plan function or the job body failed.
const EXIT_FAILED: i32 = 1;
/// Exit code: bad invocation (argv, environment).
const EXIT_USAGE: i32 = 2;
/// Exit code: the entrypoint is not registered.
const EXIT_UNKNOWN_ENTRYPOINT: i32 = 3;

const USAGE: &str = "\
usage: <pipeline-binary> describe
       <pipeline-binary> plan <ENTRYPOINT>
       <pipeline-binary> job <ENTRYPOINT> <JOB_ID>
       <pipeline-binary> --version

This is a sparkwing pipeline binary; the `sparkwing` CLI runs it (see docs/protocol.md).";

/// The entry point of a pipeline binary: registers `pipelines`, serves the protocol subcommand given on
/// the command line and exits the process with the protocol's exit code.
///
/// ```no_run
/// # use sparkwing::prelude::*;
/// # fn pipeline() -> Pipeline { Pipeline::new("Hello", |_: &mut Plan, _: &Args| Ok(())) }
/// fn main() {
///     sparkwing::main(vec![pipeline()]);
/// }
/// ```
pub fn main(pipelines: Vec<Pipeline>) -> ! {
    // Lossy so a stray non-UTF-8 argument yields a usage error instead of a panic.
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env = |name: &str| std::env::var(name).ok();
    let code = run(
        &pipelines,
        &argv,
        &env,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Serves one invocation; returns the exit code. `out` receives the JSON documents, `err` diagnostics.
pub(crate) fn run(
    pipelines: &[Pipeline],
    argv: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let result = match argv.as_slice() {
        ["describe"] => describe(pipelines, out),
        ["plan", entrypoint] => plan(pipelines, entrypoint, env, out),
        ["job", entrypoint, job_id] => job(pipelines, entrypoint, job_id, env),
        ["--version" | "-V"] => {
            let _ = writeln!(
                out,
                "sparkwing-sdk {SDK_VERSION} (protocol {PROTOCOL_VERSION})"
            );
            Ok(())
        }
        ["--help" | "-h" | "help"] => {
            let _ = writeln!(out, "{USAGE}");
            Ok(())
        }
        _ => Err((
            EXIT_USAGE,
            format!("unrecognized invocation {argv:?}\n\n{USAGE}"),
        )),
    };
    let _ = out.flush();
    match result {
        Ok(()) => EXIT_OK,
        Err((code, message)) => {
            let _ = writeln!(err, "error: {message}");
            let _ = err.flush();
            code
        }
    }
}

/// A failed invocation: exit code and the message printed after `error: `.
type Failure = (i32, String);

fn describe(pipelines: &[Pipeline], out: &mut dyn Write) -> Result<(), Failure> {
    validate(pipelines)?;
    let doc = Value::object([
        ("protocol", Value::from(PROTOCOL_VERSION)),
        ("sdk_version", Value::from(SDK_VERSION)),
        (
            "pipelines",
            Value::Array(pipelines.iter().map(Pipeline::to_json).collect()),
        ),
    ]);
    write_doc(out, &doc)
}

fn plan(
    pipelines: &[Pipeline],
    entrypoint: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let (_, plan) = prepare(pipelines, entrypoint, env)?;
    write_doc(out, &plan.to_json())
}

fn job(
    pipelines: &[Pipeline],
    entrypoint: &str,
    job_id: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Failure> {
    let (args, plan) = prepare(pipelines, entrypoint, env)?;
    let body = plan.take_body(job_id).ok_or_else(|| {
        (
            EXIT_FAILED,
            format!("pipeline `{entrypoint}` has no job `{job_id}`"),
        )
    })?;
    let mut job = Job::from_env(job_id, args, env).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let outcome = catch_unwind(AssertUnwindSafe(|| body(&mut job)));
    // Outputs set before a failure are still written: they can help explain it.
    let written = job.write_outputs();
    let mut code = EXIT_FAILED;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            if let Some(end) = e.command_end() {
                code = report_command_end(end);
            }
            Some(e.to_string())
        }
        Err(panic) => Some(format!(
            "job `{job_id}` panicked: {}",
            panic_message(panic.as_ref())
        )),
    };
    match (failure, written) {
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => Err((EXIT_FAILED, e.to_string())),
        (Some(f), Ok(())) => Err((code, f)),
        (Some(f), Err(e)) => Err((code, format!("{f} (and {e})"))),
    }
}

/// A job that failed because a command failed ends as that command did: the `command_failed`
/// control record tells the engine its exit code or signal, and the job exits with the same code
/// (128 + the signal for a killed command, as a shell reports it). Returns that exit code.
fn report_command_end(end: CommandEnd) -> i32 {
    let (field, value, code) = match end {
        CommandEnd::Exited(c) if (1..=255).contains(&c) => ("exit_code", c, c),
        CommandEnd::Exited(c) => ("exit_code", c, EXIT_FAILED),
        CommandEnd::Signalled(s) => ("signal", s, 128 + s),
    };
    crate::job::print_control(&Value::object([
        ("event", Value::from("command_failed")),
        (field, Value::from(value as i64)),
    ]));
    code
}

/// Finds the pipeline, reads its args and runs its plan function: the shared part of `plan` and `job`.
fn prepare(
    pipelines: &[Pipeline],
    entrypoint: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Args, Plan), Failure> {
    if let Some(asked) = env("SPARKWING_PROTOCOL") {
        if asked.trim() != PROTOCOL_VERSION.to_string() {
            return Err((
                EXIT_USAGE,
                format!(
                    "the engine speaks sparkwing protocol {asked} but this binary speaks protocol \
                     {PROTOCOL_VERSION} (sdk {SDK_VERSION})"
                ),
            ));
        }
    }
    validate(pipelines)?;
    let Some(pipeline) = pipelines.iter().find(|p| p.entrypoint == entrypoint) else {
        let names: Vec<&str> = pipelines.iter().map(|p| p.entrypoint.as_str()).collect();
        let registered = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        return Err((
            EXIT_UNKNOWN_ENTRYPOINT,
            format!("unknown entrypoint `{entrypoint}`; registered: {registered}"),
        ));
    };
    // No (or empty) SPARKWING_ARGS means no args given, which keeps running a binary by hand easy.
    let args_json = env("SPARKWING_ARGS")
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "{}".to_string());
    let args = Args::from_json(&pipeline.args, &args_json)
        .map_err(|e| (EXIT_USAGE, format!("SPARKWING_ARGS: {e}")))?;
    let plan = match catch_unwind(AssertUnwindSafe(|| pipeline.build(&args))) {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => {
            return Err((
                EXIT_FAILED,
                format!("planning pipeline `{entrypoint}` failed: {e}"),
            ))
        }
        Err(panic) => {
            return Err((
                EXIT_FAILED,
                format!(
                    "planning pipeline `{entrypoint}` panicked: {}",
                    panic_message(panic.as_ref())
                ),
            ))
        }
    };
    Ok((args, plan))
}

/// Rejects registrations the engine could not use: empty or repeated names, defaults of the wrong kind.
fn validate(pipelines: &[Pipeline]) -> Result<(), Failure> {
    let check = || -> Result<()> {
        for (i, p) in pipelines.iter().enumerate() {
            if p.entrypoint.is_empty() {
                return Err(Error::msg("a pipeline has an empty entrypoint"));
            }
            if pipelines[..i].iter().any(|q| q.entrypoint == p.entrypoint) {
                return Err(Error::msg(format!(
                    "entrypoint `{}` is registered twice",
                    p.entrypoint
                )));
            }
            for (j, a) in p.args.iter().enumerate() {
                a.validate()
                    .map_err(|e| e.context(format!("pipeline `{}`", p.entrypoint)))?;
                if p.args[..j].iter().any(|b| b.name == a.name) {
                    return Err(Error::msg(format!(
                        "pipeline `{}`: arg `{}` is declared twice",
                        p.entrypoint, a.name
                    )));
                }
            }
        }
        Ok(())
    };
    check().map_err(|e| (EXIT_FAILED, e.to_string()))
}

fn write_doc(out: &mut dyn Write, doc: &Value) -> Result<(), Failure> {
    writeln!(out, "{}", doc.to_pretty())
        .and_then(|()| out.flush())
        .map_err(|e| (EXIT_FAILED, format!("writing to stdout: {e}")))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Arg;
    use crate::error::fail;

    fn pipelines() -> Vec<Pipeline> {
        vec![
            Pipeline::new("Hello", |p: &mut Plan, args: &Args| {
                let who = args.string("name")?;
                p.job("greet", move |job| {
                    job.log(&who);
                    Ok(())
                });
                Ok(())
            })
            .about("Say hello")
            .arg(Arg::string("name").default("world").help("who to greet"))
            .secret("DEPLOY_TOKEN"),
            Pipeline::new("Broken", |_: &mut Plan, _: &Args| {
                Err(fail("no plan today"))
            }),
            Pipeline::new("Panics", |_: &mut Plan, _: &Args| panic!("boom")),
        ]
    }

    fn call(pipelines: &[Pipeline], argv: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(pipelines, &argv, &env, &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[test]
    fn describe_document() {
        let (code, out, _) = call(&pipelines(), &["describe"], &[]);
        assert_eq!(code, 0);
        let doc = Value::parse(&out).unwrap_or(Value::Null);
        assert_eq!(doc.get("protocol"), Some(&Value::Int(1)));
        assert_eq!(
            doc.get("sdk_version").and_then(Value::as_str),
            Some(SDK_VERSION)
        );
        let first = doc
            .get("pipelines")
            .and_then(Value::as_array)
            .and_then(|p| p.first())
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            first.to_string(),
            concat!(
                r#"{"entrypoint":"Hello","about":"Say hello","args":[{"name":"name","kind":"string","#,
                r#""default":"world","help":"who to greet","required":false,"secret":false}],"#,
                r#""secrets":["DEPLOY_TOKEN"]}"#
            )
        );
    }

    #[test]
    fn plan_exit_codes() {
        let ps = pipelines();
        let (code, out, _) = call(&ps, &["plan", "Hello"], &[("SPARKWING_PROTOCOL", "1")]);
        assert_eq!(code, 0);
        assert!(Value::parse(&out).is_ok());
        let (code, _, err) = call(&ps, &["plan", "Nope"], &[]);
        assert_eq!(code, 3);
        assert!(err.contains("Hello, Broken, Panics"), "{err}");
        let (code, _, err) = call(&ps, &["plan", "Broken"], &[]);
        assert_eq!(code, 1);
        assert!(err.contains("no plan today"), "{err}");
        let (code, _, err) = call(&ps, &["plan", "Panics"], &[]);
        assert_eq!(code, 1);
        assert!(err.contains("panicked: boom"), "{err}");
        let (code, _, _) = call(&ps, &["plan", "Hello"], &[("SPARKWING_ARGS", "[")]);
        assert_eq!(code, 2);
        let (code, _, err) = call(&ps, &["plan", "Hello"], &[("SPARKWING_PROTOCOL", "2")]);
        assert_eq!(code, 2);
        assert!(
            err.contains("protocol 2") && err.contains("protocol 1"),
            "{err}"
        );
        let (code, _, err) = call(
            &ps,
            &["plan", "Hello"],
            &[("SPARKWING_ARGS", r#"{"name":3}"#)],
        );
        assert_eq!(code, 1);
        assert!(err.contains("arg `name`"), "{err}");
    }

    #[test]
    fn bad_invocations() {
        let ps = pipelines();
        for argv in [
            &[][..],
            &["plan"],
            &["describe", "x"],
            &["job", "Hello"],
            &["run"],
        ] {
            let (code, out, err) = call(&ps, argv, &[]);
            assert_eq!((code, out.as_str()), (2, ""), "{argv:?}");
            assert!(err.contains("usage:"));
        }
        let (code, out, _) = call(&ps, &["--version"], &[]);
        assert_eq!(code, 0);
        assert!(out.contains(SDK_VERSION));
    }

    #[test]
    fn job_lookup() {
        let ps = pipelines();
        let (code, _, err) = call(&ps, &["job", "Hello", "nope"], &[]);
        assert_eq!(code, 1);
        assert!(err.contains("no job `nope`"), "{err}");
        let (code, _, _) = call(&ps, &["job", "Missing", "greet"], &[]);
        assert_eq!(code, 3);
        let (code, _, err) = call(&ps, &["job", "Broken", "x"], &[]);
        assert_eq!(code, 1);
        assert!(err.contains("no plan today"), "{err}");
    }

    #[test]
    fn invalid_registrations() {
        let twice = vec![
            Pipeline::new("A", |_: &mut Plan, _: &Args| Ok(())),
            Pipeline::new("A", |_: &mut Plan, _: &Args| Ok(())),
        ];
        let (code, _, err) = call(&twice, &["describe"], &[]);
        assert_eq!(code, 1);
        assert!(err.contains("`A` is registered twice"), "{err}");
        let bad_default = vec![
            Pipeline::new("B", |_: &mut Plan, _: &Args| Ok(())).arg(Arg::int("n").default("x"))
        ];
        let (code, _, err) = call(&bad_default, &["plan", "B"], &[]);
        assert_eq!(code, 1);
        assert!(err.contains("pipeline `B`: arg `n` is int"), "{err}");
        let dup_arg = vec![Pipeline::new("C", |_: &mut Plan, _: &Args| Ok(()))
            .arg(Arg::int("n"))
            .arg(Arg::string("n"))];
        let (code, _, err) = call(&dup_arg, &["describe"], &[]);
        assert_eq!(code, 1);
        assert!(err.contains("declared twice"), "{err}");
    }
}
