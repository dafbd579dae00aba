//! `noop`: one job running `true`.

use sparkwing::prelude::*;

pub fn pipeline() -> Pipeline {
    Pipeline::new("Noop", plan).about("One job that runs `true`")
}

fn plan(p: &mut Plan, _args: &Args) -> Result<()> {
    p.job("noop", |job| job.exec("true", &[]));
    Ok(())
}
