//! Finding a project's `.sparkwing/` directory and reading its `sparkwing.yaml` strictly.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PROJECT_DIR: &str = ".sparkwing";
pub const CONFIG_FILE: &str = "sparkwing.yaml";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("no {PROJECT_DIR}/ directory found in {start} or any parent directory; run `sparkwing pipeline new --name NAME` to create one, or pass -C DIR")]
    NotFound { start: PathBuf },
    #[error("{dir} has no {file}; a Sparkwing project needs {file} (create one with `sparkwing pipeline new --name NAME`)")]
    Missing { dir: PathBuf, file: &'static str },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A located project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The repository root: the directory that holds `.sparkwing/`.
    pub root: PathBuf,
    /// `<root>/.sparkwing`.
    pub dir: PathBuf,
    pub config: Config,
}

impl Project {
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    pub fn pipeline(&self, name: &str) -> Option<&PipelineConfig> {
        self.config.pipelines.iter().find(|p| p.name == name)
    }
}

/// `sparkwing.yaml`. Unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub pipelines: Vec<PipelineConfig>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    pub entrypoint: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub on: Option<Triggers>,
    /// Arg defaults for this pipeline; they override the defaults declared in code.
    #[serde(default)]
    pub args: BTreeMap<String, ScalarText>,
    /// The runner pool to use on a cluster.
    #[serde(default)]
    pub runner: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    #[serde(default)]
    pub push: Option<PushTrigger>,
    /// Recorded like `push`; on the cluster the Pipeline's `spec.triggers.pullRequest` counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PushTrigger>,
}

/// The branches (for a pull request: its base branches) and changed paths a trigger matches.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushTrigger {
    #[serde(default)]
    pub branches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(
        default,
        rename = "paths-ignore",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub paths_ignore: Vec<String>,
}

/// A YAML scalar (string, number or bool) kept as text; args parse it by their declared kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ScalarText(pub String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        let text = match Scalar::deserialize(d)
            .map_err(|_| serde::de::Error::custom("arg values must be a string, number or bool"))?
        {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        };
        Ok(ScalarText(text))
    }
}

impl PipelineConfig {
    pub fn arg_defaults(&self) -> BTreeMap<String, String> {
        self.args
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    }
}

/// Walk up from `start` to the first directory containing `.sparkwing/`.
pub fn find_root(start: &Path) -> Result<PathBuf, ProjectError> {
    let start = std::path::absolute(start).unwrap_or_else(|_| start.to_path_buf());
    let mut cur: Option<&Path> = Some(&start);
    while let Some(dir) = cur {
        if dir.join(PROJECT_DIR).is_dir() {
            return Ok(dir.to_path_buf());
        }
        cur = dir.parent();
    }
    Err(ProjectError::NotFound { start })
}

/// Locate and load the project around `start`.
pub fn discover(start: &Path) -> Result<Project, ProjectError> {
    let root = find_root(start)?;
    load(&root)
}

pub fn load(root: &Path) -> Result<Project, ProjectError> {
    let dir = root.join(PROJECT_DIR);
    for file in [CONFIG_FILE, "Cargo.toml"] {
        if !dir.join(file).is_file() {
            return Err(ProjectError::Missing {
                dir: dir.clone(),
                file,
            });
        }
    }
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| ProjectError::Read {
        path: path.clone(),
        source,
    })?;
    let config = parse_config(&path, &text)?;
    Ok(Project {
        root: root.to_path_buf(),
        dir,
        config,
    })
}

/// Parse `sparkwing.yaml` text; errors carry the file, line and column.
pub fn parse_config(path: &Path, text: &str) -> Result<Config, ProjectError> {
    let config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            ProjectError::Config {
                path: path.to_path_buf(),
                line,
                column,
                message: clean_yaml_message(&e.to_string()),
            }
        })?
    };
    let mut seen = std::collections::HashSet::new();
    for p in &config.pipelines {
        if p.name.trim().is_empty() || p.entrypoint.trim().is_empty() {
            return Err(ProjectError::Invalid {
                path: path.to_path_buf(),
                message: "every pipeline needs a non-empty `name` and `entrypoint`".into(),
            });
        }
        if !valid_pipeline_name(&p.name) {
            return Err(ProjectError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "pipeline name {:?} is invalid: use lowercase letters, digits and '-'",
                    p.name
                ),
            });
        }
        if !seen.insert(p.name.as_str()) {
            return Err(ProjectError::Invalid {
                path: path.to_path_buf(),
                message: format!("pipeline {:?} is declared twice", p.name),
            });
        }
    }
    Ok(config)
}

pub fn valid_pipeline_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

/// serde_yaml_ng appends " at line L column C" to messages; we print the location up front instead.
fn clean_yaml_message(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let text = "pipelines:\n  - name: build-test-deploy\n    entrypoint: BuildTestDeploy\n    description: Build\n    on:\n      push:\n        branches: [main]\n    args:\n      times: 3\n      loud: true\n    runner: default\n";
        let c = parse_config(Path::new("s.yaml"), text).unwrap();
        let p = &c.pipelines[0];
        assert_eq!(p.entrypoint, "BuildTestDeploy");
        assert_eq!(p.arg_defaults()["times"], "3");
        assert_eq!(p.arg_defaults()["loud"], "true");
        assert_eq!(
            p.on.as_ref().unwrap().push.as_ref().unwrap().branches,
            ["main"]
        );
    }

    #[test]
    fn pull_request_and_path_triggers_are_read() {
        let text = "pipelines:\n  - name: ci\n    entrypoint: Ci\n    on:\n      push:\n        branches: [main]\n        paths: [\"src/**\"]\n        paths-ignore: [\"**/*.md\"]\n      pull_request:\n        branches: [main]\n";
        let c = parse_config(Path::new("s.yaml"), text).unwrap();
        let on = c.pipelines[0].on.as_ref().unwrap();
        let push = on.push.as_ref().unwrap();
        assert_eq!(
            (push.paths.as_slice(), push.paths_ignore.as_slice()),
            (&["src/**".to_string()][..], &["**/*.md".to_string()][..])
        );
        assert_eq!(on.pull_request.as_ref().unwrap().branches, ["main"]);
        let bad = "pipelines:\n  - name: ci\n    entrypoint: Ci\n    on:\n      pull_request:\n        branch: [main]\n";
        assert!(parse_config(Path::new("s.yaml"), bad).is_err());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "pipelines:\n  - name: hello\n    entrypoint: Hello\n    entrypiont: Oops\n";
        let e = parse_config(Path::new("/p/.sparkwing/sparkwing.yaml"), text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/p/.sparkwing/sparkwing.yaml:4:"), "{msg}");
        assert!(msg.contains("entrypiont"), "{msg}");
    }

    #[test]
    fn malformed_yaml_and_duplicates() {
        let e = parse_config(Path::new("s.yaml"), "pipelines: [\n").unwrap_err();
        assert!(matches!(e, ProjectError::Config { .. }), "{e}");
        let text = "pipelines:\n  - {name: a, entrypoint: A}\n  - {name: a, entrypoint: B}\n";
        let e = parse_config(Path::new("s.yaml"), text).unwrap_err();
        assert!(e.to_string().contains("declared twice"), "{e}");
        let text = "pipelines:\n  - {name: Bad_Name, entrypoint: A}\n";
        assert!(parse_config(Path::new("s.yaml"), text).is_err());
    }
}
