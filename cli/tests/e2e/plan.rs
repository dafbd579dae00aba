//! `pipeline plan`, `run --sw-dry-run` and `pipeline lint`: plans printed without running or
//! recording anything. The printed plans are compared with golden files in `cli/tests/golden/plan/`
//! (`SPARKWING_UPDATE_GOLDEN=1` rewrites them from the current output).

use crate::common::*;
use std::path::PathBuf;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/plan")
        .join(name);
    if std::env::var_os("SPARKWING_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (SPARKWING_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "{} differs", path.display());
}

#[test]
fn plan_prints_text_json_and_dot_like_the_golden_files() {
    let sw = Sw::fixture("rich");
    let cases: &[(&[&str], &str)] = &[
        (&["pipeline", "plan", "features"], "features.txt"),
        (
            &["pipeline", "plan", "timeout", "-o", "text"],
            "timeout.txt",
        ),
        (&["pipeline", "plan", "dag", "-o", "dot"], "dag.dot"),
        (&["pipeline", "plan", "-o", "json", "dag"], "dag.json"),
        // Flags after the name, args over sparkwing.yaml's, a secret arg redacted.
        (
            &["pipeline", "plan", "args", "--count", "4", "-o", "json"],
            "args.json",
        ),
        (
            &[
                "pipeline",
                "plan",
                "secrets",
                "--password",
                "hunter2-secret",
            ],
            "secrets.txt",
        ),
        (&["pipeline", "plan", "conditions"], "conditions.txt"),
        (
            &["pipeline", "plan", "conditions", "-o", "dot"],
            "conditions.dot",
        ),
        (
            &["pipeline", "plan", "conditions", "-o", "json"],
            "conditions.json",
        ),
    ];
    for (args, file) in cases {
        let out = sw.sw(*args);
        out.assert_code(0);
        assert!(!out.stdout.contains("hunter2-secret"), "{out}");
        golden(file, &out.stdout);
    }
    // Nothing was recorded.
    assert!(!sw.home().join("state.db").exists());
}

#[test]
fn dry_run_prints_the_plan_and_runs_and_records_nothing() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["run", "interrupt", "--sw-dry-run"]);
    out.assert_code(0);
    let plan = sw.sw(["pipeline", "plan", "interrupt"]);
    plan.assert_code(0);
    assert_eq!(out.stdout, plan.stdout);
    assert!(out.stdout.contains("fin"), "{out}");
    assert!(out.stderr.contains("nothing is run or recorded"), "{out}");
    // The finally job would have touched this file; no store, no run directory.
    assert!(!sw.root().join("finally-ran").exists());
    assert!(!sw.home().join("state.db").exists());
    assert!(!sw.home().join("runs").exists());
    let list = sw.sw(["runs", "list", "-o", "json"]);
    list.assert_code(0);
    assert!(list.json_lines().is_empty(), "{list}");
}

#[test]
fn bad_input_exits_like_a_run_and_records_nothing() {
    let sw = Sw::fixture("rich");
    // Bad args: 2, with the run's message.
    let out = sw.sw(["run", "args", "--nmae", "x", "--sw-dry-run"]);
    out.assert_code(2);
    assert!(out.stderr.contains("unknown arg --nmae"), "{out}");
    assert!(out.stderr.contains("did you mean --name?"), "{out}");
    let out = sw.sw(["pipeline", "plan", "args", "--count", "many"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--count expects an int value"), "{out}");
    // A required arg not given.
    let out = sw.sw(["pipeline", "plan", "secrets"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--password is required"), "{out}");
    // An invalid plan: 1, naming the fault.
    let out = sw.sw(["run", "dup", "--sw-dry-run"]);
    out.assert_code(1);
    assert!(out.stderr.contains("duplicate job id \"same\""), "{out}");
    let out = sw.sw(["pipeline", "plan", "cycle"]);
    out.assert_code(1);
    assert!(out.stderr.contains("cycle in job needs"), "{out}");
    // Unknown pipeline, unknown format, a --sw-* flag plan does not take: 2.
    let out = sw.sw(["pipeline", "plan", "featurs"]);
    out.assert_code(2);
    assert!(out.stderr.contains("did you mean \"features\"?"), "{out}");
    for bad in [
        &["dag", "-o", "yaml"][..],
        &["args", "--count", "2", "-o", "yaml"],
    ] {
        let out = sw.sw(["pipeline", "plan"].iter().chain(bad));
        out.assert_code(2);
        assert!(out.stderr.contains("pretty, json"), "{out}");
        assert!(out.stderr.contains("dot"), "{out}");
    }
    let out = sw.sw(["pipeline", "plan", "dag", "--sw-workers", "2"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("unknown sparkwing flag --sw-workers"),
        "{out}"
    );
    // A dry run on a cluster is not a thing: pipeline plan is.
    let out = sw.sw(["pipeline", "trigger", "dag", "--sw-dry-run"]);
    out.assert_code(2);
    assert!(out.stderr.contains("pipeline plan"), "{out}");
    assert!(!sw.home().join("state.db").exists());

    // An entrypoint .sparkwing/ does not register: 3.
    let small = Sw::fixture("small");
    let out = small.sw(["pipeline", "plan", "ghost"]);
    out.assert_code(3);
    assert!(out.stderr.contains("registers no such entrypoint"), "{out}");
    let out = small.sw(["run", "ghost", "--sw-dry-run"]);
    out.assert_code(3);

    // No project: 3.
    let empty = Sw::empty();
    empty.sw(["pipeline", "plan", "x"]).assert_code(3);
    empty.sw(["pipeline", "lint"]).assert_code(3);
}

#[test]
fn lint_reports_every_pipelines_findings_with_exit_codes_for_ci() {
    let sw = Sw::fixture("rich");
    let out = sw.sw(["pipeline", "lint", "-o", "json"]);
    out.assert_code(1);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 15, "{out}");
    let of = |name: &str| {
        lines
            .iter()
            .find(|l| l["pipeline"] == name)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .clone()
    };
    assert_eq!(of("dag")["status"], "ok");
    assert_eq!(of("dag")["findings"].as_array().unwrap().len(), 0);
    assert_eq!(of("dup")["status"], "findings");
    assert_eq!(of("dup")["findings"][0]["kind"], "duplicate_job");
    assert_eq!(of("cycle")["findings"][0]["kind"], "cycle");
    assert!(of("cycle")["findings"][0]["message"]
        .as_str()
        .unwrap()
        .contains("egg -> chicken -> egg"));
    assert_eq!(
        of("bad-when")["findings"][0]["kind"],
        "condition_not_a_need"
    );
    assert_eq!(of("conditions")["status"], "ok");
    assert_eq!(of("secrets")["status"], "not_planned");
    assert!(of("secrets")["note"]
        .as_str()
        .unwrap()
        .contains("--password is required"));

    let pretty = sw.sw(["pipeline", "lint"]);
    pretty.assert_code(1);
    assert!(
        pretty
            .stdout
            .ends_with("15 pipelines checked, 3 findings\n"),
        "{pretty}"
    );
    assert!(pretty
        .stdout
        .lines()
        .any(|l| l.starts_with("finding") && l.contains("dup")));

    // A clean project: 0.
    let hello = Sw::hello();
    let out = hello.sw(["pipeline", "lint"]);
    out.assert_code(0);
    assert!(
        out.stdout.ends_with("2 pipelines checked, 0 findings\n"),
        "{out}"
    );

    // An unregistered entrypoint and an arg in sparkwing.yaml the pipeline does not declare.
    let small = Sw::fixture("small");
    let yaml = small.root().join(".sparkwing/sparkwing.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(
        &yaml,
        text.replace(
            "    entrypoint: Registered\n",
            "    entrypoint: Registered\n    args:\n      nobody-reads-me: 1\n",
        ),
    )
    .unwrap();
    let out = small.sw(["pipeline", "lint", "-o", "json"]);
    out.assert_code(1);
    let lines = out.json_lines();
    assert_eq!(lines[0]["findings"][0]["kind"], "unknown_arg", "{out}");
    assert!(lines[0]["findings"][0]["message"]
        .as_str()
        .unwrap()
        .contains("--nobody-reads-me"));
    assert_eq!(lines[1]["findings"][0]["kind"], "unregistered_entrypoint");
}

#[test]
fn plan_shows_gates_and_the_concurrency_group() {
    let sw = Sw::fixture("gates");
    let cases: &[(&[&str], &str)] = &[
        (&["pipeline", "plan", "ship"], "gates.txt"),
        (
            &["pipeline", "plan", "timed", "--on-timeout", "approve"],
            "gate-timeout.txt",
        ),
        (&["pipeline", "plan", "ship", "-o", "json"], "gates.json"),
        (&["pipeline", "plan", "deploy", "--cancel"], "group.txt"),
        (
            &[
                "pipeline", "plan", "deploy", "--env", "staging", "-o", "json",
            ],
            "group.json",
        ),
        (&["pipeline", "plan", "deploy", "-o", "dot"], "group.dot"),
        (&["pipeline", "plan", "job-group"], "job-group.txt"),
        (&["pipeline", "plan", "job-cancel"], "job-cancel.txt"),
        (
            &["pipeline", "plan", "job-cancel", "-o", "json"],
            "job-cancel.json",
        ),
    ];
    for (args, file) in cases {
        let out = sw.sw(*args);
        out.assert_code(0);
        golden(file, &out.stdout);
    }
    assert!(!sw.home().join("state.db").exists());
}

#[test]
fn plan_prints_caches_artifacts_and_memoized_jobs() {
    let sw = Sw::fixture("storage");
    for (args, file) in [
        (["pipeline", "plan", "deps"], "storage-deps.txt"),
        (["pipeline", "plan", "artifacts"], "storage-artifacts.txt"),
        (["pipeline", "plan", "memo"], "storage-memo.txt"),
    ] {
        let out = sw.sw(args);
        out.assert_code(0);
        golden(file, &out.stdout);
    }
}

#[test]
fn lint_finds_gates_the_plan_skips_or_no_job_needs() {
    let sw = Sw::fixture("gates");
    let main = sw.root().join(".sparkwing/src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        text.replace(
            "fn main() {",
            "fn bad_gates() -> Pipeline {\n    Pipeline::new(\"BadGates\", |p: &mut Plan, _: &Args| {\n        \
             p.job(\"build\", |job| job.bash(\"true\"));\n        \
             p.gate(\"approve-prod\").needs([\"build\"]).skip(\"only on main\");\n        \
             p.job(\"prod\", |job| job.bash(\"true\")).needs([\"approve-prod\"]);\n        \
             p.gate(\"approve-docs\").needs([\"build\"]);\n        Ok(())\n    })\n}\n\nfn main() {",
        )
        .replace("        job_group(),\n", "        job_group(),\n        bad_gates(),\n"),
    )
    .unwrap();
    let yaml = sw.root().join(".sparkwing/sparkwing.yaml");
    let mut text = std::fs::read_to_string(&yaml).unwrap();
    text.push_str("  - name: bad-gates\n    entrypoint: BadGates\n");
    std::fs::write(&yaml, text).unwrap();

    let out = sw.sw(["pipeline", "lint", "-o", "json"]);
    out.assert_code(1);
    let lines = out.json_lines();
    let of = |name: &str| {
        lines
            .iter()
            .find(|l| l["pipeline"] == name)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .clone()
    };
    // The fixture's own gates each hold a job.
    for ok in ["ship", "timed"] {
        assert_eq!(of(ok)["status"], "ok", "{out}");
    }
    let bad = of("bad-gates");
    let kinds: Vec<&str> = bad["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["unreachable_gate", "unused_gate"], "{out}");
    assert!(
        bad["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("\"approve-prod\" is skipped by the plan (only on main)"),
        "{out}"
    );
    let pretty = sw.sw(["pipeline", "lint"]);
    pretty.assert_code(1);
    assert!(
        pretty.stdout.ends_with("6 pipelines checked, 2 findings\n"),
        "{pretty}"
    );
}
