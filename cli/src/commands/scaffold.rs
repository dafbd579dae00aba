//! `sparkwing pipeline new --name X`: a pipeline that runs as it is.

use super::{start_dir, CliError, CmdResult};
use crate::cli::NewArgs;
use crate::compile::sdk_source::SDK_VERSION;
use crate::exit::ExitCode;
use crate::project::{self, valid_pipeline_name, CONFIG_FILE, PROJECT_DIR};
use std::path::Path;

/// The line in `src/main.rs` above which new pipelines are registered.
pub const REGISTRY_MARKER: &str = "// sparkwing:pipelines";

const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "main",
];

fn module_name(name: &str) -> String {
    let m = name.replace('-', "_");
    if m.starts_with(|c: char| c.is_ascii_digit()) || RUST_KEYWORDS.contains(&m.as_str()) {
        format!("pipeline_{m}")
    } else {
        m
    }
}

fn entrypoint_name(name: &str) -> String {
    name.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn cargo_toml() -> String {
    format!(
        "[package]\nname = \"sparkwing-pipelines\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\n# Built against the SDK of the sparkwing that runs it (sparkwing points cargo at its own copy).\n\
         sparkwing = \"{SDK_VERSION}\"\n\n\
         # The pipeline crate stands alone, even inside a Rust workspace.\n[workspace]\n"
    )
}

fn main_rs() -> String {
    format!(
        "//! This repository's pipelines. `sparkwing run NAME` builds and runs them.\n\n\
         fn main() {{\n    sparkwing::main(vec![\n        {REGISTRY_MARKER} (`sparkwing pipeline new` adds entries above this line)\n    ]);\n}}\n"
    )
}

fn pipeline_rs(name: &str, entrypoint: &str) -> String {
    format!(
        r#"//! The `{name}` pipeline.

use sparkwing::prelude::*;

pub fn pipeline() -> Pipeline {{
    Pipeline::new("{entrypoint}", plan)
        .about("Describe what {name} does")
        .arg(Arg::string("greeting").default("hello").help("what to say"))
}}

fn plan(p: &mut Plan, args: &Args) -> Result<()> {{
    let greeting = args.string("greeting")?;
    p.job("hello", move |job| {{
        job.bash(&format!("echo '{{greeting}} from {name}'"))?;
        job.output("greeted", "yes");
        Ok(())
    }});
    p.job("check", |job| {{
        let greeted = job.input("hello", "greeted")?;
        job.log(&format!("hello job greeted: {{greeted}}"));
        Ok(())
    }})
    .needs(["hello"]);
    Ok(())
}}
"#
    )
}

fn yaml_entry(name: &str, entrypoint: &str) -> String {
    format!("  - name: {name}\n    entrypoint: {entrypoint}\n    description: Describe what {name} does\n")
}

fn err(msg: String) -> CliError {
    CliError::new(ExitCode::Project, msg)
}

fn write_new(path: &Path, text: &str) -> Result<(), CliError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| err(format!("create {}: {e}", d.display())))?;
    }
    std::fs::write(path, text).map_err(|e| err(format!("write {}: {e}", path.display())))
}

pub fn new_pipeline(args: NewArgs) -> CmdResult {
    let name = args.name.trim();
    if !valid_pipeline_name(name) {
        return Err(CliError::new(
            ExitCode::Usage,
            format!("pipeline name {name:?} is invalid: use lowercase letters, digits and '-' (e.g. build-and-test)"),
        ));
    }
    let start = start_dir(args.dir.as_deref());
    // With -C the project is DIR itself; otherwise the nearest one up, or a new one here.
    let root = match (&args.dir, project::find_root(&start)) {
        (None, Ok(root)) => root,
        _ => std::path::absolute(&start).unwrap_or(start),
    };
    let dir = root.join(PROJECT_DIR);
    let module = module_name(name);
    let entrypoint = entrypoint_name(name);
    let module_path = dir.join("src").join(format!("{module}.rs"));

    if !dir.join(CONFIG_FILE).exists() {
        // A new project.
        write_new(&dir.join("Cargo.toml"), &cargo_toml())?;
        write_new(&dir.join(".gitignore"), "target/\n")?;
        write_new(&dir.join("src/main.rs"), &main_rs())?;
        write_new(&dir.join(CONFIG_FILE), "pipelines:\n")?;
    }
    let project = project::load(&root)?;
    if project.pipeline(name).is_some() {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "pipeline {name:?} already exists in {}; pick another name",
                project.config_path().display()
            ),
        ));
    }
    if module_path.exists() {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "{} already exists; pick another name or remove it",
                module_path.display()
            ),
        ));
    }
    let main_path = dir.join("src/main.rs");
    let main = std::fs::read_to_string(&main_path)
        .map_err(|e| err(format!("read {}: {e}", main_path.display())))?;
    let Some(marker_at) = main.find(REGISTRY_MARKER) else {
        return Err(err(format!(
            "{} has no `{REGISTRY_MARKER}` line, so the new pipeline cannot be registered automatically; add `mod {module};` and `{module}::pipeline(),` to the list passed to sparkwing::main yourself, or add the marker line",
            main_path.display()
        )));
    };
    let config_path = project.config_path();
    let config_text = std::fs::read_to_string(&config_path)
        .map_err(|e| err(format!("read {}: {e}", config_path.display())))?;
    let mut new_config = config_text.clone();
    if !new_config.is_empty() && !new_config.ends_with('\n') {
        new_config.push('\n');
    }
    new_config.push_str(&yaml_entry(name, &entrypoint));
    let parsed = project::parse_config(&config_path, &new_config).ok();
    if parsed.is_none_or(|c| c.pipelines.iter().all(|p| p.name != name)) {
        return Err(err(format!(
            "cannot append the pipeline to {} automatically (its layout is unusual); add this entry under `pipelines:` yourself:\n{}",
            config_path.display(),
            yaml_entry(name, &entrypoint)
        )));
    }
    // Register: `mod x;` at the top (after other mods), `x::pipeline(),` above the marker.
    let line_start = main[..marker_at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let indent: String = main[line_start..marker_at]
        .chars()
        .take_while(|c| c.is_whitespace())
        .collect();
    let mut new_main = String::with_capacity(main.len() + 64);
    new_main.push_str(&main[..line_start]);
    new_main.push_str(&format!("{indent}{module}::pipeline(),\n"));
    new_main.push_str(&main[line_start..]);
    let mod_line = format!("mod {module};\n");
    let insert_at = new_main
        .match_indices("\nmod ")
        .last()
        .and_then(|(i, _)| new_main[i + 1..].find('\n').map(|j| i + 1 + j + 1))
        .or_else(|| new_main.find("\nfn main").map(|i| i + 1))
        .unwrap_or(0);
    new_main.insert_str(insert_at, &mod_line);

    write_new(&module_path, &pipeline_rs(name, &entrypoint))?;
    write_new(&main_path, &new_main)?;
    write_new(&config_path, &new_config)?;
    println!(
        "created pipeline {name:?} (entrypoint {entrypoint}) in {}",
        dir.display()
    );
    println!("  {}", module_path.display());
    println!("run it with: sparkwing run {name}");
    Ok(ExitCode::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(module_name("build-and-test"), "build_and_test");
        assert_eq!(module_name("type"), "pipeline_type");
        assert_eq!(module_name("3d"), "pipeline_3d");
        assert_eq!(entrypoint_name("build-and-test"), "BuildAndTest");
    }
}
