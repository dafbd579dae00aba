//! bench/cargo_cache: `cargo build` of the small crate `crate/` (made by the script), its
//! `target/` kept in a dependency cache keyed by the crate's lock file and `key.txt`.

use sparkwing::prelude::*;

fn main() {
    sparkwing::main(vec![Pipeline::new("CargoCached", |p: &mut Plan, _: &Args| {
        p.job("build", |job| job.bash("cd crate && cargo build --offline --quiet"))
            .cache(
                "target",
                ["crate/target"],
                CacheKey::files(["crate/Cargo.lock", "key.txt"]),
            );
        Ok(())
    })]);
}
