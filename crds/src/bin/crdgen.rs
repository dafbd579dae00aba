//! Writes the CRD YAML generated from `sparkwing-crds`' types.
//!
//! ```text
//! crdgen                          print every CRD to stdout, `---`-separated
//! crdgen --out crds/yaml          write crds/yaml/<plural>.<group>.yaml
//! crdgen --out crds/yaml --check  exit 1 naming each stale or missing file; write nothing
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: crdgen [--out DIR [--check]]";

fn main() -> ExitCode {
    let mut out: Option<PathBuf> = None;
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => match args.next() {
                Some(dir) => out = Some(PathBuf::from(dir)),
                None => return usage_error("--out needs a directory"),
            },
            "--check" => check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let files = match sparkwing_crds::generate() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match (out, check) {
        (None, true) => usage_error("--check needs --out DIR"),
        (None, false) => {
            let docs: Vec<&str> = files.iter().map(|f| f.content.as_str()).collect();
            print!("{}", docs.join("---\n"));
            ExitCode::SUCCESS
        }
        (Some(dir), true) => check_dir(&dir, &files),
        (Some(dir), false) => write_dir(&dir, &files),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("crdgen: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn write_dir(dir: &Path, files: &[sparkwing_crds::GeneratedFile]) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("crdgen: creating {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for f in files {
        let path = dir.join(&f.name);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == f.content) {
            continue;
        }
        if let Err(e) = std::fs::write(&path, &f.content) {
            eprintln!("crdgen: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("crdgen: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn check_dir(dir: &Path, files: &[sparkwing_crds::GeneratedFile]) -> ExitCode {
    let mut stale = 0;
    for f in files {
        let path = dir.join(&f.name);
        match std::fs::read_to_string(&path) {
            Ok(old) if old == f.content => {}
            Ok(_) => {
                eprintln!(
                    "crdgen: {} is stale: it differs from what crds/src generates; run `make crds`",
                    path.display()
                );
                stale += 1;
            }
            Err(e) => {
                eprintln!(
                    "crdgen: {} is missing ({e}); run `make crds`",
                    path.display()
                );
                stale += 1;
            }
        }
    }
    if stale > 0 {
        ExitCode::FAILURE
    } else {
        eprintln!(
            "crdgen: {} CRD files in {} are up to date",
            files.len(),
            dir.display()
        );
        ExitCode::SUCCESS
    }
}
