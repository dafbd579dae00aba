//! Many runs at once on one home: every run recorded, every log line kept, in order.

use crate::common::*;

const RUNS: usize = 20;
const LINES: usize = 200;

#[test]
fn twenty_concurrent_runs_lose_no_line() {
    let sw = Sw::fixture("rich");
    // Build (or find) the binary first, so the runs below race on running, not on compiling.
    sw.sw(["run", "args"]).assert_code(0);
    let running: Vec<Running> = (0..RUNS).map(|_| sw.spawn(["run", "lines"])).collect();
    let outs: Vec<Out> = running.into_iter().map(Running::finish).collect();
    let mut ids = Vec::new();
    for out in &outs {
        out.assert_code(0);
        ids.push(out.run_id());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), RUNS, "run ids must be unique");

    let listed: Vec<_> = sw
        .runs_list()
        .into_iter()
        .filter(|r| r["pipeline"] == "lines")
        .collect();
    assert_eq!(listed.len(), RUNS);
    assert!(
        listed.iter().all(|r| r["status"] == "success"),
        "{listed:?}"
    );

    for (out, id) in outs.iter().zip(outs.iter().map(Out::run_id)) {
        // `c` writes on stderr: a job's two streams are one pipe, its lines recorded as stdout.
        for (job, stream) in [("a", "stdout"), ("b", "stdout"), ("c", "stdout")] {
            let recs = sw.log_records(&id, job);
            assert_eq!(recs.len(), LINES, "run {id} job {job}");
            for (i, r) in recs.iter().enumerate() {
                assert_eq!(r["seq"], (i + 1) as u64, "run {id} job {job}: {r}");
                assert_eq!(r["line"], format!("{job} line {}", i + 1), "run {id}: {r}");
                assert_eq!(r["stream"], stream);
            }
            // What was printed matches what was stored.
            let printed = out
                .json_lines()
                .iter()
                .filter(|l| l["job"] == job && l.get("line").is_some())
                .count();
            assert_eq!(printed, LINES, "run {id} job {job} printed lines");
        }
    }
}
