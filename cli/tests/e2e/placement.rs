//! Placement (`docs/authoring.md#placement`): shown by `pipeline plan`, checked at plan time,
//! and ignored by a local run with one note naming the placed jobs.

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
fn placement_is_shown_checked_and_ignored_locally_with_a_note() {
    let sw = Sw::fixture("placement");
    for (args, file) in [
        (&["pipeline", "plan", "placed"][..], "placement.txt"),
        (
            &["pipeline", "plan", "placed", "-o", "json"],
            "placement.json",
        ),
        (
            &["pipeline", "plan", "placed", "-o", "dot"],
            "placement.dot",
        ),
    ] {
        let out = sw.sw(args);
        out.assert_code(0);
        golden(file, &out.stdout);
    }

    // A bad quantity or label key is a plan error naming the job, the value and a fix.
    let out = sw.sw(["pipeline", "plan", "bad-quantity"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains(
            "invalid plan: job \"train\" placement: memory \"8GB\" is not a Kubernetes quantity: its unit must be one of Ki, Mi, Gi,"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("(e.g. \"512Mi\" or \"8Gi\")"), "{out}");
    let out = sw.sw(["run", "bad-label"]);
    out.assert_code(1);
    let (_, st) = sw.status(&out.run_id());
    let err = st["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with(
            "invalid plan: job \"train\" placement: node selector key \"disk type\" is not a Kubernetes label key"
        ),
        "{err}"
    );

    // A local run runs every job here; one note names the placed jobs.
    let out = sw.sw(["run", "placed"]);
    out.assert_code(0);
    let notes: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("placement"))
        .collect();
    assert_eq!(
        notes,
        ["note: placement ignored for jobs build, lint: this run executes every job on this machine (placement applies on a cluster)"],
        "{out}"
    );
    let id = out.run_id();
    assert!(
        sw.log_lines(&id, "report")
            .iter()
            .any(|l| l == "report of build 1.2.3"),
        "{:?}",
        sw.log_lines(&id, "report")
    );
}
