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
