//! A small pipeline binary exercising the SDK; `tests/protocol.rs` drives it through the protocol.

use sparkwing::prelude::*;

fn hello() -> Pipeline {
    Pipeline::new("Hello", plan)
        .about("Say hello, then check the greeting")
        .arg(Arg::string("name").default("world").help("who to greet"))
        .arg(Arg::int("times").default(1).help("how often"))
        .arg(Arg::bool("loud").help("shout"))
        .arg(Arg::string("token").secret().help("a secret arg"))
        .arg(Arg::string("target").required())
        .secret("DEPLOY_TOKEN")
}

fn plan(p: &mut Plan, args: &Args) -> Result<()> {
    let name = args.string("name")?;
    let times = args.int("times")?;
    let loud = args.bool("loud")?;
    let _maybe: Option<String> = args.opt_string("token")?;
    p.job("greet", move |job: &mut Job| {
        for _ in 0..times {
            job.step("say", |job| job.bash(&format!("echo hello {name}")))?;
        }
        job.exec("echo", &["second", "line"])?;
        let out = job.bash_output("echo 1.2.3")?;
        job.output("version", out.trim());
        Ok(())
    })
    .retries(2)
    .backoff(Duration::from_millis(200))
    .timeout(Duration::from_secs(60))
    .env("GREETING", "hi")
    .workdir("sub/dir");
    p.job("check", |job| {
        let v = job.input("greet", "version")?;
        job.log(&format!("got {v}"));
        let _t = job.secret("DEPLOY_TOKEN")?;
        Ok(())
    })
    .needs(["greet"]);
    p.job("cleanup", |job| job.bash("rm -rf tmp")).finally();
    p.job("lint", |job| job.bash("false")).optional();
    p.job("deploy", |job| job.bash("true"))
        .skip_if(!loud, "only when --loud");
    p.job("partial", |job| {
        job.output("before", "set");
        job.step("fails", |job| job.exec("false", &[]))?;
        job.output("after", "never");
        Ok(())
    });
    p.job("panics", |_| panic!("job went wrong"));
    Ok(())
}

fn failing() -> Pipeline {
    Pipeline::new("Failing", |_: &mut Plan, _: &Args| {
        bail!("cannot plan: {}", "no reason")
    })
}

fn main() {
    sparkwing::main(vec![hello(), failing()]);
}
