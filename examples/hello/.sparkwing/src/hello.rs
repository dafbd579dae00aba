//! `hello`: a small DAG with args, outputs, a secret and a finally job.

use sparkwing::prelude::*;

pub fn pipeline() -> Pipeline {
    Pipeline::new("Hello", plan)
        .about("Greet, build an artifact, check it, clean up")
        .arg(Arg::string("name").default("world").help("who to greet"))
        .arg(Arg::int("times").default(1).help("how many greetings"))
        .arg(Arg::bool("deploy").help("also run the deploy job"))
        .secret("HELLO_TOKEN")
}

fn plan(p: &mut Plan, args: &Args) -> Result<()> {
    let name = args.string("name")?;
    let times = args.int("times")?;
    let deploy = args.bool("deploy")?;

    p.job("greet", move |job| {
        for i in 1..=times {
            job.bash(&format!("echo 'hello, {name}! ({i})'"))?;
        }
        Ok(())
    });
    p.job("lint", |job| {
        job.step("format", |job| job.bash("echo 'formatting looks fine'"))
    })
    .optional();
    p.job("build", |job| {
        job.step("compile", |job| {
            job.bash("mkdir -p target/hello && echo 'artifact v1.2.3' > target/hello/artifact.txt")
        })?;
        let version = job.bash_output("cut -d' ' -f2 target/hello/artifact.txt")?;
        job.output("version", &version);
        Ok(())
    })
    .retries(1)
    .timeout(Duration::from_secs(60));
    p.job("test", |job| {
        let version = job.input("build", "version")?;
        job.log(&format!("testing artifact {version}"));
        job.exec("grep", &["-q", &version, "target/hello/artifact.txt"])
    })
    .needs(["build", "greet"]);
    p.job("deploy", |job| {
        // A secret read from the environment is masked in every log line.
        let token = job.secret("HELLO_TOKEN").unwrap_or_else(|_| "not-set".to_string());
        job.log(&format!("deploying with token {token}"));
        Ok(())
    })
    .needs(["test"])
    .skip_if(!deploy, "pass --deploy to deploy");
    p.job("cleanup", |job| job.bash("rm -rf target/hello")).finally();
    Ok(())
}
