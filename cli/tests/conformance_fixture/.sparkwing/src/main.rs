//! Fixture of the executor conformance suite: every pipeline but `fan-out` is serial, so the
//! order of its run and job transitions is the same on every executor (process, Docker,
//! Kubernetes); `fan-out`'s expanded jobs run at once, and the suite compares each job's own
//! transitions in order.

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

fn cache() -> Pipeline {
    Pipeline::new("Cache", |p: &mut Plan, _: &Args| {
        // `deps/` is what a dependency cache holds: filled by the first run, restored by the next
        // (the suite removes it from the project between runs, as a fresh checkout would).
        p.job("deps", |job| {
            job.bash(
                "if [ -f deps/fetched ]; then echo \"deps restored: $(cat deps/fetched)\"; else mkdir -p deps; cat deps.lock > deps/fetched; echo 'deps fetched'; fi",
            )
        })
        .cache("deps", ["deps"], CacheKey::files(["deps.lock"]));
        Ok(())
    })
}

fn artifact() -> Pipeline {
    Pipeline::new("Artifact", |p: &mut Plan, _: &Args| {
        p.job("make", |job| {
            job.bash("mkdir -p out && echo 'report body' > out/report.txt")
        })
        .publish("report", "out/report.txt");
        // Its working directory is `consumer/`: the file there comes from the artifact, not from
        // what `make` left in the workspace.
        p.job("check", |job| {
            job.bash("test \"$(cat out/report.txt)\" = 'report body' && echo 'report checked'")
        })
        .needs(["make"])
        .workdir("consumer")
        .consume("make", "report");
        Ok(())
    })
}

fn memo() -> Pipeline {
    Pipeline::new("Memo", |p: &mut Plan, _: &Args| {
        p.job("compute", |job| {
            job.bash("echo 'computing'; mkdir -p memo-out && echo 42 > memo-out/value")?;
            job.output("value", "42");
            Ok(())
        })
        .memoize(Memo::ttl(Duration::from_secs(3600)).files(["memo-input.txt"]))
        .publish("value", "memo-out/value");
        // In `consumer/`, the file comes from the artifact (the earlier run's, when `compute` is
        // cached; the suite removes `consumer/memo-out` between runs).
        p.job("use", |job| {
            let value = job.input("compute", "value")?;
            job.bash(&format!(
                "echo \"value {value}, file $(cat memo-out/value)\""
            ))
        })
        .needs(["compute"])
        .workdir("consumer")
        .consume("compute", "value");
        Ok(())
    })
}

fn fan_out() -> Pipeline {
    Pipeline::new("FanOut", |p: &mut Plan, _: &Args| {
        p.job("shards", |job| {
            job.output_list("list", ["a", "b", "c", "d"]);
            Ok(())
        });
        p.fan_out("test", "shards", "list", |job| {
            let item = job.item().unwrap_or_default().to_string();
            job.bash(&format!("echo 'testing {item}'"))?;
            job.output("result", format!("{item}-ok"));
            Ok(())
        });
        p.matrix("pkg", ["x", "y"], |job| {
            let item = job.item().unwrap_or_default().to_string();
            job.bash(&format!("echo 'packaging {item}'"))?;
            job.output("result", format!("{item}-packed"));
            Ok(())
        });
        p.job("sum", |job| {
            let tests = job.inputs("test", "result")?.join(",");
            let pkgs = job.inputs("pkg", "result")?.join(",");
            job.bash(&format!("echo 'tests {tests}; packages {pkgs}'"))
        })
        .needs(["test", "pkg"]);
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
        cache(),
        artifact(),
        memo(),
        fan_out(),
    ]);
}
