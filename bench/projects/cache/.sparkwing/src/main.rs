//! bench/cache_throughput: one job whose dependency cache covers `tree/` (made by the script).

use sparkwing::prelude::*;

fn main() {
    sparkwing::main(vec![Pipeline::new("Cached", |p: &mut Plan, _: &Args| {
        p.job("build", |job| job.exec("true", &[]))
            .cache("tree", ["tree"], CacheKey::files(["key.txt"]));
        Ok(())
    })]);
}
