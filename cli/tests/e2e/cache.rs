//! The binary cache: an unchanged tree runs without cargo; an edit recompiles; a revert hits again.

use crate::common::*;

fn started(out: &Out) -> (String, String) {
    let e = &out.events("run_started")[0];
    (
        e["binary"].as_str().unwrap().to_string(),
        e["binary_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn unchanged_tree_is_cached_edits_recompile_and_reverts_hit_again() {
    let sw = Sw::fixture("small");
    let first = sw.sw(["run", "real"]);
    first.assert_code(0);
    // Another test (or an earlier suite run) may have built this tree already.
    let (source, key) = started(&first);
    assert!(matches!(source.as_str(), "compiled" | "cached"), "{first}");

    // Unchanged: cached, and cargo is not even looked for.
    let mut no_cargo = sw.cmd(["run", "real"]);
    no_cargo.env("CARGO", "/nonexistent/cargo");
    let second = sw.run_cmd(no_cargo);
    second.assert_code(0);
    assert_eq!(started(&second), ("cached".to_string(), key.clone()));

    // An edit no earlier run has seen: compiled, under another key.
    let main = sw.root().join(".sparkwing/src/main.rs");
    let original = std::fs::read_to_string(&main).unwrap();
    let nonce = format!(
        "\n// edited by the cache test: {} {}\n",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    std::fs::write(&main, format!("{original}{nonce}")).unwrap();
    // Without cargo the edited tree cannot be built: proof the cached runs did not use it.
    let mut no_cargo = sw.cmd(["run", "real"]);
    no_cargo.env("CARGO", "/nonexistent/cargo");
    let out = sw.run_cmd(no_cargo);
    out.assert_code(10);
    assert!(out.stderr.contains("cargo is not on PATH"), "{out}");
    let third = sw.sw(["run", "real"]);
    third.assert_code(0);
    let (source, edited_key) = started(&third);
    assert_eq!(source, "compiled", "{third}");
    assert_ne!(edited_key, key);
    assert_eq!(
        sw.log_lines(&third.run_id(), "only"),
        ["small pipeline ran"]
    );

    // Reverted: the first binary again, without cargo.
    std::fs::write(&main, original).unwrap();
    let mut no_cargo = sw.cmd(["run", "real"]);
    no_cargo.env("CARGO", "/nonexistent/cargo");
    let fourth = sw.run_cmd(no_cargo);
    fourth.assert_code(0);
    assert_eq!(started(&fourth), ("cached".to_string(), key));
}
