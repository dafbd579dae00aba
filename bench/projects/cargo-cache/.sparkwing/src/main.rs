//! bench/cargo_cache: `cargo build` of the small crate `crate/`, its `target/` kept in a
//! dependency cache keyed by the crate's lock file and `key.txt`; and the same build without
//! sparkwing's cache, timed by the job itself (the baseline of the test bed's bench,
//! `e2e/examples/bench_cargo_cache.rs`).

use sparkwing::prelude::*;

/// From an empty `target/`, then again with it in place; prints `baseline cold_ms=N noop_ms=N`.
const BASELINE: &str = "cd crate && rm -rf target \
    && s=$(date +%s%N) && cargo build --offline --quiet \
    && m=$(date +%s%N) && cargo build --offline --quiet \
    && e=$(date +%s%N) \
    && echo \"baseline cold_ms=$(( (m - s) / 1000000 )) noop_ms=$(( (e - m) / 1000000 ))\"";

fn main() {
    sparkwing::main(vec![
        Pipeline::new("CargoCached", |p: &mut Plan, _: &Args| {
            p.job("build", |job| job.bash("cd crate && cargo build --offline"))
                .cache(
                    "target",
                    ["crate/target"],
                    CacheKey::files(["crate/Cargo.lock", "key.txt"]),
                );
            Ok(())
        }),
        Pipeline::new("CargoBaseline", |p: &mut Plan, _: &Args| {
            p.job("baseline", |job| job.bash(BASELINE));
            Ok(())
        }),
    ]);
}
