//! Pipeline args: help, validation, and the precedence code default < sparkwing.yaml < command line.

use crate::common::*;
use serde_json::json;

fn assert_pipeline_help(out: &Out) {
    out.assert_code(0);
    let help = &out.stdout;
    assert!(help.contains("sparkwing run args"), "{out}");
    assert!(help.contains("Shows its args"), "{out}");
    for (name, text, default) in [
        (
            "--name",
            "who to greet",
            "default: yaml-name (from sparkwing.yaml)",
        ),
        // sparkwing.yaml's `args:` overrides the code's default (3), and help says so.
        (
            "--count",
            "how many times",
            "default: 5 (from sparkwing.yaml)",
        ),
        ("--loud", "shout it", "default: false"),
        ("--ratio", "a ratio", "default: 0.5"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name} in help: {out}"));
        assert!(line.contains(text), "{line}");
        assert!(line.contains(default), "{line}");
    }
}

#[test]
fn run_help_lists_args_with_defaults_and_help() {
    let sw = Sw::fixture("rich");
    // `--help` anywhere among the pipeline's args asks for the pipeline's help.
    assert_pipeline_help(&sw.sw(["run", "args", "--count", "2", "--help"]));
    // --help runs nothing.
    assert!(sw.runs_list().is_empty());
}

// `sparkwing run PIPELINE --help`, the documented form: the pipeline's help, not clap's help of
// `sparkwing run` (a regression test: clap used to take this `--help` as its own flag).
#[test]
fn run_pipeline_help_right_after_the_name() {
    let sw = Sw::fixture("rich");
    assert_pipeline_help(&sw.sw(["run", "args", "--help"]));
    assert!(sw.runs_list().is_empty());
}

#[test]
fn unknown_arg_is_a_usage_error_with_a_suggestion_and_the_valid_list() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "args", "--nmae", "x"]);
    out.assert_code(2);
    assert!(out.stderr.contains("unknown arg --nmae"), "{out}");
    assert!(out.stderr.contains("did you mean --name?"), "{out}");
    assert!(
        out.stderr
            .contains("valid args: --name, --count, --loud, --ratio"),
        "{out}"
    );
    assert!(out.stderr.contains("sparkwing run args --help"), "{out}");
    assert!(sw.runs_list().is_empty(), "a usage error records no run");
}

#[test]
fn invalid_values_and_run_flags_are_usage_errors() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "args", "--count", "many"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("--count expects an int value, got \"many\""),
        "{out}"
    );
    let out = sw.sw(["run", "args", "--ratio=fast"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--ratio expects a float"), "{out}");
    let out = sw.sw(["run", "args", "--count"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--count needs a value"), "{out}");
    let out = sw.sw(["run", "args", "--sw-bogus"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("unknown sparkwing flag --sw-bogus"),
        "{out}"
    );
    let out = sw.sw(["run", "secrets"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--password is required"), "{out}");
    assert!(sw.runs_list().is_empty(), "usage errors record no run");
}

#[test]
fn yaml_arg_defaults_are_overridden_by_the_command_line() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "args"]);
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(
        sw.log_lines(&id, "show"),
        ["name=yaml-name count=5 loud=false ratio=0.5"]
    );
    assert_eq!(
        sw.listed_run(&id)["args"],
        json!({"name": "yaml-name", "count": 5, "loud": false, "ratio": 0.5})
    );

    let out = sw.sw(["run", "args", "--count", "9", "--loud", "--name=cli"]);
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(
        sw.log_lines(&id, "show"),
        ["name=cli count=9 loud=true ratio=0.5"]
    );
    assert_eq!(
        sw.listed_run(&id)["args"],
        json!({"name": "cli", "count": 9, "loud": true, "ratio": 0.5})
    );
}

const VALID: &str = "valid args: --name, --count, --loud, --ratio";

// Every arg error exits 2, records nothing and lists the valid args, whatever went wrong.
#[test]
fn every_arg_error_lists_the_valid_args() {
    let sw = Sw::fixture("rich");
    for (args, problem) in [
        (
            &["--count", "many"][..],
            "--count expects an int value, got \"many\"",
        ),
        (&["--ratio=fast"][..], "--ratio expects a float value"),
        (
            &["--count", "1", "--count", "2"][..],
            "--count is given twice",
        ),
        (&["--count"][..], "--count needs a value"),
        (
            &["--count", "99999999999999999999"][..],
            "--count is out of range for an int: \"99999999999999999999\"",
        ),
        (
            &["--loud=maybe"][..],
            "--loud expects a bool (true or false) value, got \"maybe\"",
        ),
        (&["--nmae", "x"][..], "unknown arg --nmae"),
        (&["stray"][..], "unexpected argument \"stray\""),
    ] {
        let mut cmd = vec!["run", "args"];
        cmd.extend_from_slice(args);
        let out = sw.sw(&cmd);
        out.assert_code(2);
        assert!(out.stderr.contains(problem), "{args:?}: {out}");
        assert!(out.stderr.contains(VALID), "{args:?}: {out}");
        assert!(
            out.stderr.contains("sparkwing run args --help"),
            "{args:?}: {out}"
        );
    }
    // A missing required arg too (this pipeline's only arg).
    let out = sw.sw(["run", "secrets"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("--password is required; pass --password VALUE; valid args: --password"),
        "{out}"
    );
    assert!(sw.runs_list().is_empty(), "usage errors record no run");
}

// `--flag true|false` as a separate token, like `--flag=false` and a bare `--flag`.
#[test]
fn bool_flags_take_true_or_false_as_the_next_token() {
    let sw = Sw::fixture("rich");
    for (args, loud) in [
        (&["--loud", "false"][..], "false"),
        (&["--loud", "true"][..], "true"),
        (&["--loud=false"][..], "false"),
        (&["--loud", "--count", "1"][..], "true"),
        (&["--count", "1", "--loud"][..], "true"),
    ] {
        let mut cmd = vec!["run", "args"];
        cmd.extend_from_slice(args);
        let out = sw.sw(&cmd);
        out.assert_code(0);
        let id = out.run_id();
        assert_eq!(sw.listed_run(&id)["args"]["loud"], json!(loud == "true"));
        let line = &sw.log_lines(&id, "show")[0];
        assert!(line.contains(&format!("loud={loud}")), "{args:?}: {line}");
    }
}
