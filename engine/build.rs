//! Embeds the SDK's source (`../sdk`) into the `sparkwing` binary, so a user's pipeline always
//! builds against the SDK of the engine that runs it, without the SDK being published anywhere.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, base, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p.strip_prefix(base).expect("under base").to_path_buf());
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let sdk = manifest.join("../sdk");
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    let src = sdk.join("src");
    println!("cargo:rerun-if-changed={}", src.display());
    let mut files = Vec::new();
    collect(&src, &sdk, &mut files);
    let mut code = String::from("/// SDK source files: (path relative to the crate root, contents).\npub const SDK_FILES: &[(&str, &str)] = &[\n");
    for f in &files {
        let abs = sdk.join(f);
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(
            code,
            "    ({:?}, include_str!({:?})),",
            f.to_string_lossy(),
            abs.to_string_lossy()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("sdk_files.rs");
    std::fs::write(out, code).expect("write sdk_files.rs");
}
