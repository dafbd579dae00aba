//! Fixture for box-slot tests: a run that holds its slot until told to finish.

use sparkwing::prelude::*;

fn plan(p: &mut Plan, args: &Args) -> Result<()> {
    let release = args.string("release")?;
    p.job("hold", move |job| {
        job.log("holding");
        job.bash(&format!("while [ ! -e '{release}' ]; do sleep 0.01; done"))
    });
    Ok(())
}

fn main() {
    sparkwing::main(vec![Pipeline::new("Hold", plan)
        .arg(Arg::string("release").required().help("file whose existence ends the job"))]);
}
