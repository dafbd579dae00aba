//! `Dag`: `root` -> `fan-001`..`fan-NNN` -> `join`, every job running the same command.

use sparkwing::prelude::*;

pub fn pipeline() -> Pipeline {
    Pipeline::new("Dag", plan)
        .about("1 root, N fan-out jobs, 1 fan-in")
        .arg(Arg::string("cmd").default("sleep").help("`sleep` (sleep 0.05) or `true`"))
        .arg(Arg::int("fanout").default(98).help("how many fan-out jobs"))
        .arg(Arg::bool("single").help("only the root job"))
}

fn body(cmd: &str) -> impl Fn(&mut Job) -> Result<()> + Send + Sync + 'static {
    let sleep = cmd == "sleep";
    move |job| {
        if sleep {
            job.exec("sleep", &["0.05"])
        } else {
            job.exec("true", &[])
        }
    }
}

fn plan(p: &mut Plan, args: &Args) -> Result<()> {
    let cmd = args.string("cmd")?;
    if cmd != "sleep" && cmd != "true" {
        bail!("--cmd must be `sleep` or `true`, got {cmd:?}");
    }
    p.job("root", body(&cmd));
    if args.bool("single")? {
        return Ok(());
    }
    let fanout = args.int("fanout")?;
    let ids: Vec<String> = (1..=fanout).map(|i| format!("fan-{i:03}")).collect();
    for id in &ids {
        p.job(id.as_str(), body(&cmd)).needs(["root"]);
    }
    p.job("join", body(&cmd)).needs(ids);
    Ok(())
}
