//! Fixture of the executor conformance suite: every pipeline is serial, so the order of its run
//! and job transitions is the same on every executor (process, Docker, later Kubernetes).

use sparkwing::prelude::*;

fn success() -> Pipeline {
    Pipeline::new("Success", |p: &mut Plan, _: &Args| {
        p.job("first", |job| job.bash("echo 'first ran'"));
        p.job("second", |job| job.bash("echo 'second ran'"))
            .needs(["first"]);
        Ok(())
    })
}

fn fail_upstream() -> Pipeline {
    Pipeline::new("FailUpstream", |p: &mut Plan, _: &Args| {
        p.job("build", |job| job.bash("echo 'build broke' >&2; exit 3"));
        p.job("package", |job| job.bash("echo 'package ran'"))
            .needs(["build"]);
        p.job("report", |job| job.bash("echo 'report ran'"))
            .finally();
        Ok(())
    })
}

fn retry() -> Pipeline {
    Pipeline::new("Retry", |p: &mut Plan, _: &Args| {
        // The marker lives in the workspace, which every executor mounts at the same path.
        p.job("flaky", |job| {
            job.bash(
                "m=\"$SPARKWING_WORKSPACE/flaky-marker\"; if [ -e \"$m\" ]; then echo 'passed'; else touch \"$m\"; echo 'failing once'; exit 1; fi",
            )
        })
        .retries(1)
        .backoff(Duration::from_millis(20));
        Ok(())
    })
}

fn timeout() -> Pipeline {
    Pipeline::new("Timeout", |p: &mut Plan, _: &Args| {
        p.job("slow", |job| job.bash("echo 'slow started'; sleep 30"))
            .timeout(Duration::from_millis(500));
        Ok(())
    })
}

fn cancel_finally() -> Pipeline {
    Pipeline::new("CancelFinally", |p: &mut Plan, _: &Args| {
        p.job("long", |job| job.bash("echo 'started'; sleep 30 & wait"));
        p.job("fin", |job| {
            job.bash("echo 'finally ran'; touch \"$SPARKWING_WORKSPACE/finally-ran\"")
        })
        .finally();
        Ok(())
    })
}

fn main() {
    sparkwing::main(vec![
        success(),
        fail_upstream(),
        retry(),
        timeout(),
        cancel_finally(),
    ]);
}
