//! Secrets (from the environment, and secret args) never reach stdout, logs or the store.

use crate::common::*;
use serde_json::json;

const TOKEN: &str = "hunter22secret";
const PASSWORD: &str = "pa55-w0rd-value";

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "{what} leaks the token:\n{text}");
    assert!(
        !text.contains(PASSWORD),
        "{what} leaks the password:\n{text}"
    );
}

#[test]
fn secrets_are_masked_everywhere() {
    let mut sw = Sw::fixture("rich");
    sw.env("MY_TOKEN", TOKEN);
    let out = sw.sw(["run", "secrets", "--password", PASSWORD]);
    out.assert_code(0);
    assert_clean("stdout", &out.stdout);
    assert_clean("stderr", &out.stderr);
    let id = out.run_id();

    // What was masked is still there, as `***`.
    let lines: Vec<String> = out
        .json_lines()
        .iter()
        .filter_map(|l| l["line"].as_str().map(str::to_string))
        .collect();
    for expected in [
        "token is ***",
        "password is ***",
        "env token ***",
        "error: bad token ***",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "no {expected:?} in {out}"
        );
    }
    assert!(
        out.events("step_start")
            .iter()
            .any(|e| e["step"] == "step-***"),
        "{out}"
    );
    assert_eq!(
        out.events("run_started")[0]["args"],
        json!({"password": "***"})
    );

    // Log files (and every other file the engine writes for the run, except the outputs file the
    // job itself writes: see `outputs_files_do_not_keep_secrets`).
    let files = files_under(&sw.run_dir(&id));
    assert!(files.iter().any(|f| f.ends_with("leak.log")), "{files:?}");
    for f in files {
        if f.to_string_lossy().ends_with(".outputs.json") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert_clean(&f.display().to_string(), &text);
    }
    assert!(sw
        .log_lines(&id, "leak")
        .iter()
        .any(|l| l == "token is ***"));

    // The store: args, job outputs, events.
    let status = sw.sw(["runs", "status", "--run", &id, "-o", "json"]);
    status.assert_code(0);
    assert_clean("runs status -o json", &status.stdout);
    let st = status.stdout_json();
    assert_eq!(st["args"], json!({"password": "***"}));
    assert_eq!(find_job(&st, "leak")["outputs"], json!({"tok": "***"}));
    assert!(
        st["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "step_start" && e["payload"]["step"] == "step-***"),
        "{st:#}"
    );
    let pretty = sw.sw(["runs", "status", "--run", &id]);
    assert_clean("runs status", &pretty.stdout);
    // The job's outputs, under its row, masked.
    assert!(
        pretty
            .stdout
            .contains(&format!("{:24} output tok=***\n", "")),
        "{pretty}"
    );
    let list = sw.sw(["runs", "list", "-o", "json"]);
    assert_clean("runs list -o json", &list.stdout);
    let logs = sw.sw(["runs", "logs", "--run", &id]);
    logs.assert_code(0);
    assert_clean("runs logs", &logs.stdout);
    assert!(logs.stdout.contains("token is ***"), "{logs}");
}

// A secret a job outputs must not stay on disk unmasked: the engine reads the job's outputs file
// into memory and removes it; only the masked copy is stored.
#[test]
fn outputs_files_do_not_keep_secrets() {
    let mut sw = Sw::fixture("rich");
    sw.env("MY_TOKEN", TOKEN);
    let out = sw.sw(["run", "secrets", "--password", PASSWORD]);
    out.assert_code(0);
    let id = out.run_id();
    for f in files_under(&sw.run_dir(&id)) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert_clean(&f.display().to_string(), &text);
    }
}

/// A key as a PEM file holds it: several lines, the last one ending in a newline.
const KEY: &str =
    "-----BEGIN TEST KEY-----\nline1-AAAAAAAAAAAA\nline2-BBBBBBBBBBBB\n-----END TEST KEY-----\n";
const KEY_LINES: [&str; 4] = [
    "-----BEGIN TEST KEY-----",
    "line1-AAAAAAAAAAAA",
    "line2-BBBBBBBBBBBB",
    "-----END TEST KEY-----",
];

fn assert_no_key_line(what: &str, text: &str) {
    for line in KEY_LINES {
        assert!(!text.contains(line), "{what} leaks {line:?}:\n{text}");
    }
}

// Each line of a multi-line secret is masked wherever it appears: the job's output (one log line per
// line of the key), a log message, an output and an error that hold it across line boundaries.
#[test]
fn every_line_of_a_multi_line_secret_is_masked() {
    let mut sw = Sw::fixture("rich");
    sw.env("MY_KEY", KEY);
    let out = sw.sw(["run", "multiline-secrets"]);
    out.assert_code(0);
    assert_no_key_line("stdout", &out.stdout);
    assert_no_key_line("stderr", &out.stderr);
    let id = out.run_id();
    // A key long enough on every line: no warning.
    assert!(out.events("secret_not_masked").is_empty(), "{out}");

    let show = sw.log_lines(&id, "show");
    // `echo "$MY_KEY"`: four lines, each masked (and the empty one the key ends with); then the
    // log message, over as many lines.
    assert_eq!(show[..5], ["***", "***", "***", "***", ""], "{show:?}");
    assert_eq!(
        show[5..9],
        ["key follows: ***", "***", "***", "***"],
        "{show:?}"
    );
    let fail = sw.log_lines(&id, "fail-with-key");
    assert!(fail.iter().any(|l| l == "error: bad key ***"), "{fail:?}");
    assert!(fail.iter().filter(|l| *l == "***").count() >= 3, "{fail:?}");

    for f in std::fs::read_dir(sw.run_dir(&id)).unwrap() {
        let p = f.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
        assert_no_key_line(&p.display().to_string(), &text);
    }
    let status = sw.sw(["runs", "status", "--run", &id, "-o", "json"]);
    status.assert_code(0);
    assert_no_key_line("runs status -o json", &status.stdout);
    // The output held the key whole, across its lines: masked as one (its final newline is kept).
    assert_eq!(
        find_job(&status.stdout_json(), "show")["outputs"],
        json!({"key": "***\n"})
    );
    // `runs status` keeps it on one row: the newline escaped.
    let pretty = sw.sw(["runs", "status", "--run", &id]);
    assert_no_key_line("runs status", &pretty.stdout);
    assert!(
        pretty
            .stdout
            .contains(&format!("{:24} output key=***\\n\n", "")),
        "{pretty}"
    );
    let logs = sw.sw(["runs", "logs", "--run", &id]);
    assert_no_key_line("runs logs", &logs.stdout);
}

// Secrets shorter than 4 characters are not masked (they would shred ordinary text); the run says
// so for each, in a recorded event and on stderr.
#[test]
fn short_secrets_are_not_masked_and_the_run_warns() {
    let mut sw = Sw::fixture("rich");
    sw.env("MY_KEY", "the");
    let out = sw.sw(["run", "multiline-secrets", "--pin", "123"]);
    out.assert_code(0);
    let id = out.run_id();
    let show = sw.log_lines(&id, "show");
    assert!(show.iter().any(|l| l == "the other weather"), "{show:?}");
    assert!(show.iter().any(|l| l == "pin is 123"), "{show:?}");

    let warnings = out.events("secret_not_masked");
    let named: Vec<(&str, u64)> = warnings
        .iter()
        .map(|w| (w["secret"].as_str().unwrap(), w["chars"].as_u64().unwrap()))
        .collect();
    assert_eq!(named, [("MY_KEY", 3), ("--pin", 3)], "{out}");
    assert!(warnings.iter().all(|w| w["min_chars"] == 4), "{out}");
    assert!(
        out.stderr.contains(
            "warning: secret MY_KEY has 3 characters, fewer than the 4 sparkwing masks, so it is not masked in logs and records; use a longer value"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("warning: secret --pin has 3"), "{out}");
    // Recorded with the run.
    let (_, st) = sw.status(&id);
    let recorded = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "secret_not_masked")
        .count();
    assert_eq!(recorded, 2, "{st:#}");
    // A secret arg is never stored in clear, whatever its length.
    assert_eq!(st["args"], json!({"pin": "***"}));
}

// A short line inside a long multi-line secret is reported by its number; the other lines are
// still masked.
#[test]
fn a_short_line_of_a_multi_line_secret_is_reported() {
    let mut sw = Sw::fixture("rich");
    sw.env("MY_KEY", "first-line-of-it\nxy\nthird-line-of-it");
    let out = sw.sw(["run", "multiline-secrets"]);
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(
        sw.log_lines(&id, "show")[..3],
        ["***", "xy", "***"],
        "{out}"
    );
    let warnings = out.events("secret_not_masked");
    assert_eq!(warnings.len(), 1, "{out}");
    assert_eq!(
        (
            &warnings[0]["secret"],
            &warnings[0]["line"],
            &warnings[0]["chars"]
        ),
        (&json!("MY_KEY"), &json!(2), &json!(2))
    );
    assert!(
        out.stderr
            .contains("warning: line 2 of secret MY_KEY has 2 characters"),
        "{out}"
    );
}
