//! `fail-demo`: what a failure does to the rest of the run.

use sparkwing::prelude::*;

pub fn pipeline() -> Pipeline {
    Pipeline::new("FailDemo", plan).about("A failing job, its cancelled dependent, an independent branch")
}

fn plan(p: &mut Plan, _args: &Args) -> Result<()> {
    p.job("compile", |job| job.bash("echo 'compiling...'; echo 'error: expected `;`' >&2; exit 3"));
    p.job("package", |job| job.bash("echo never runs")).needs(["compile"]);
    p.job("docs", |job| job.bash("echo 'docs built'"));
    p.job("flaky-lint", |job| job.bash("exit 1")).optional();
    p.job("report", |job| job.bash("echo 'reporting whatever happened'")).finally();
    Ok(())
}
