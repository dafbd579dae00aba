//! Bad input: each is refused with a message that says what and where, and the documented exit code.

use crate::common::*;
use std::process::Command;

fn write(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A project whose sparkwing.yaml is `yaml` (never compiled: these fail before).
fn project_with_yaml(yaml: &str) -> Sw {
    let sw = Sw::empty();
    let dir = sw.root().join(".sparkwing");
    write(
        &dir.join("Cargo.toml"),
        "[package]\nname = \"p\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nsparkwing = \"0.1.0\"\n\n[workspace]\n",
    );
    write(&dir.join("src/main.rs"), "fn main() {}\n");
    write(&dir.join("sparkwing.yaml"), yaml);
    sw
}

#[test]
fn no_project_names_the_start_directory() {
    let sw = Sw::empty();
    let out = sw.sw(["run", "hello"]);
    out.assert_code(3);
    let start = sw.root().canonicalize().unwrap();
    assert!(
        out.stderr.contains(&format!(
            "no .sparkwing/ directory found in {}",
            start.display()
        )),
        "{out}"
    );
    assert!(out.stderr.contains("sparkwing pipeline new"), "{out}");

    // -C names the directory given.
    let sub = sw.root().join("deep/er");
    std::fs::create_dir_all(&sub).unwrap();
    let out = sw.sw(["run", "-C", sub.to_str().unwrap(), "hello"]);
    out.assert_code(3);
    assert!(out.stderr.contains(sub.to_str().unwrap()), "{out}");
    let out = sw.sw(["pipeline", "list"]);
    out.assert_code(3);
    assert!(
        out.stderr.contains("no .sparkwing/ directory found"),
        "{out}"
    );
}

#[test]
fn unknown_yaml_key_names_file_line_and_key() {
    let sw = project_with_yaml(
        "pipelines:\n  - name: hello\n    entrypoint: Hello\n    entrypiont: Oops\n",
    );
    let out = sw.sw(["run", "hello"]);
    out.assert_code(3);
    let path = sw
        .root()
        .canonicalize()
        .unwrap()
        .join(".sparkwing/sparkwing.yaml");
    assert!(
        out.stderr.contains(&format!("{}:4:", path.display())),
        "expected {}:4: in {out}",
        path.display()
    );
    assert!(out.stderr.contains("entrypiont"), "{out}");
    let out = sw.sw(["pipeline", "list"]);
    out.assert_code(3);
    assert!(out.stderr.contains("entrypiont"), "{out}");
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let sw = project_with_yaml("pipelines:\n  - name: hello\n    entrypoint: [Hello\n");
    let out = sw.sw(["run", "hello"]);
    out.assert_code(3);
    let path = sw
        .root()
        .canonicalize()
        .unwrap()
        .join(".sparkwing/sparkwing.yaml");
    let prefix = format!("error: {}:", path.display());
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}LINE:COL` in {out}"));
    let loc: Vec<&str> = line[prefix.len()..].splitn(3, ':').collect();
    assert!(
        loc.len() == 3 && loc[0].parse::<u32>().is_ok() && loc[1].parse::<u32>().is_ok(),
        "{line}"
    );
}

#[test]
fn unknown_pipeline_suggests_the_closest() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "featurs"]);
    out.assert_code(2);
    assert!(out.stderr.contains("unknown pipeline \"featurs\""), "{out}");
    assert!(out.stderr.contains("did you mean \"features\"?"), "{out}");
    assert!(out.stderr.contains("dag, features, timeout"), "{out}");
    let out = sw.sw(["pipeline", "describe", "--name", "featurs"]);
    out.assert_code(2);
    assert!(out.stderr.contains("did you mean \"features\"?"), "{out}");
}

fn assert_invalid_plan(pipeline: &str, expected: &[&str], jobs: &[&str]) {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", pipeline]);
    out.assert_code(1);
    let id = out.run_id();
    assert_eq!(out.events("plan_invalid").len(), 1, "{out}");
    let run = sw.listed_run(&id);
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.starts_with("invalid plan: "), "{error}");
    for e in expected {
        assert!(error.contains(e), "{e:?} not in {error:?}");
    }
    // No job ran: none started, none logged anything.
    assert!(out.events("job_started").is_empty(), "{out}");
    assert!(
        !out.json_lines().iter().any(|l| l.get("line").is_some()),
        "{out}"
    );
    for job in jobs {
        assert!(sw.log_lines(&id, job).is_empty(), "{job} ran");
    }
    let (code, st) = sw.status(&id);
    assert_eq!(code, 1);
    assert_eq!(st["jobs"], serde_json::json!([]), "{st:#}");
}

#[test]
fn duplicate_job_id_fails_the_run_naming_the_job() {
    assert_invalid_plan("dup", &["duplicate job id \"same\""], &["same", "other"]);
}

#[test]
fn cycle_fails_the_run_naming_the_cycle() {
    assert_invalid_plan(
        "cycle",
        &["cycle in job needs", "egg", "chicken"],
        &["free", "egg", "chicken"],
    );
}

#[test]
fn compile_error_shows_cargo_output_and_records_a_failed_run() {
    let sw = Sw::fixture("compile-error");
    let out = sw.sw(["run", "broken"]);
    out.assert_code(1);
    // cargo's own diagnostic reaches the user.
    assert!(out.stderr.contains("undefined_thing_xyz"), "{out}");
    assert!(out.stderr.contains("error[E0425]"), "{out}");
    assert!(out.stderr.contains("compile error"), "{out}");
    let runs = sw.runs_list();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["pipeline"], "broken");
    let error = runs[0]["error"].as_str().unwrap();
    assert!(error.starts_with("compile error"), "{error}");
    let id = runs[0]["id"].as_str().unwrap();
    assert!(
        out.stderr.contains(id),
        "the message names the recorded run: {out}"
    );
    let (code, _) = sw.status(id);
    assert_eq!(code, 1);
}

#[test]
fn unregistered_entrypoint_lists_the_registered_ones() {
    let sw = Sw::fixture("small");
    let out = sw.sw(["run", "ghost"]);
    out.assert_code(3);
    assert!(out.stderr.contains("entrypoint \"Ghost\""), "{out}");
    assert!(out.stderr.contains("registered: Registered"), "{out}");
    assert!(sw.runs_list().is_empty(), "{out}");
}

#[test]
fn corrupt_store_is_refused_and_left_untouched() {
    let sw = Sw::fixture("rich");
    let db = sw.home().join("state.db");
    let junk: Vec<u8> = b"this is not a sqlite database, just junk bytes written by a test. "
        .iter()
        .copied()
        .cycle()
        .take(8192)
        .collect();
    std::fs::write(&db, &junk).unwrap();
    let out = sw.sw(["runs", "list"]);
    out.assert_code(4);
    assert!(out.stderr.contains("move it aside"), "{out}");
    assert!(out.stderr.contains(db.to_str().unwrap()), "{out}");
    let out = sw.sw(["run", "args"]);
    out.assert_code(4);
    assert!(out.stderr.contains("move it aside"), "{out}");
    assert_eq!(std::fs::read(&db).unwrap(), junk, "state.db was modified");
}

#[test]
fn store_from_a_newer_sparkwing_is_refused() {
    let sw = Sw::fixture("rich");
    sw.sw(["run", "args"]).assert_code(0);
    let db = sw.home().join("state.db");
    let py = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute('PRAGMA user_version = 99')\nc.commit()\nc.close()")
        .arg(&db)
        .output()
        .expect("python3");
    assert!(py.status.success(), "{py:?}");
    let out = sw.sw(["runs", "list"]);
    out.assert_code(4);
    assert!(out.stderr.contains("upgrade sparkwing"), "{out}");
    assert!(out.stderr.contains("schema version 99"), "{out}");
    let out = sw.sw(["run", "args"]);
    out.assert_code(4);
    assert!(out.stderr.contains("upgrade sparkwing"), "{out}");
}
