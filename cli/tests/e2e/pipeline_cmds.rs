//! `pipeline list|describe|new`, `completion`, `version`.

use crate::common::*;
use serde_json::json;

#[test]
fn pipeline_list_and_describe() {
    let sw = Sw::hello();
    let out = sw.sw(["pipeline", "list", "-o", "json"]);
    out.assert_code(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), out.stdout.lines().count());
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hello", "fail-demo"]);
    assert_eq!(lines[0]["entrypoint"], "Hello");
    assert_eq!(lines[0]["on"]["push"]["branches"], json!(["main"]));
    let pretty = sw.sw(["pipeline", "list"]);
    pretty.assert_code(0);
    assert!(pretty.stdout.contains("fail-demo"), "{pretty}");

    let out = sw.sw(["pipeline", "describe", "--name", "hello", "-o", "json"]);
    out.assert_code(0);
    let d = out.stdout_json();
    assert_eq!(d["name"], "hello");
    assert_eq!(d["entrypoint"], "Hello");
    assert_eq!(d["registered"], true);
    assert_eq!(d["secrets"], json!(["HELLO_TOKEN"]));
    assert_eq!(d["config_args"], json!({"times": "2"}));
    let args = d["args"].as_array().unwrap();
    let names: Vec<&str> = args.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["name", "times", "deploy"]);
    assert_eq!(args[0]["kind"], "string");
    assert_eq!(args[0]["default"], "world");
    assert_eq!(args[0]["help"], "who to greet");
    assert_eq!(args[1]["kind"], "int");

    let pretty = sw.sw(["pipeline", "describe", "--name", "hello"]);
    pretty.assert_code(0);
    assert!(
        pretty.stdout.contains("--name string = \"world\""),
        "{pretty}"
    );
}

#[test]
fn pipeline_new_scaffolds_runnable_pipelines() {
    let sw = Sw::empty();
    let out = sw.sw(["pipeline", "new", "--name", "my-pipe"]);
    out.assert_code(0);
    let dir = sw.root().join(".sparkwing");
    for f in [
        "Cargo.toml",
        ".gitignore",
        "sparkwing.yaml",
        "src/main.rs",
        "src/my_pipe.rs",
    ] {
        assert!(dir.join(f).is_file(), "{f} not created: {out}");
    }
    let run = sw.sw(["run", "my-pipe"]);
    run.assert_code(0);
    let id = run.run_id();
    assert_eq!(sw.log_lines(&id, "hello"), ["hello from my-pipe"]);
    assert_eq!(sw.log_lines(&id, "check"), ["hello job greeted: yes"]);

    let again = sw.sw(["pipeline", "new", "--name", "my-pipe"]);
    again.assert_code(2);
    assert!(again.stderr.contains("already exists"), "{again}");

    let bad = sw.sw(["pipeline", "new", "--name", "Bad_Name"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("is invalid"), "{bad}");

    let other = sw.sw(["pipeline", "new", "--name", "other"]);
    other.assert_code(0);
    let list = sw.sw(["pipeline", "list", "-o", "json"]);
    let names: Vec<String> = list
        .json_lines()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["my-pipe", "other"]);
    let run = sw.sw(["run", "other", "--greeting", "hi"]);
    run.assert_code(0);
    assert_eq!(sw.log_lines(&run.run_id(), "hello"), ["hi from other"]);
    sw.sw(["run", "my-pipe"]).assert_code(0);
}

#[test]
fn completion_and_version() {
    let sw = Sw::empty();
    let out = sw.sw(["completion", "bash"]);
    out.assert_code(0);
    assert!(out.stdout.contains("_sparkwing()"), "{out}");
    assert!(out.stdout.contains("complete -F _sparkwing"), "{out}");

    let out = sw.sw(["version"]);
    out.assert_code(0);
    assert!(out.stdout.starts_with("sparkwing 0.1.0"), "{out}");
    let out = sw.sw(["version", "-o", "json"]);
    out.assert_code(0);
    let v = out.stdout_json();
    assert_eq!(v["version"], "0.1.0");
    assert_eq!(v["protocol"], 1);

    let out = sw.sw(["frobnicate"]);
    out.assert_code(2);
}
