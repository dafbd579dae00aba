//! Profiles: where remote state lives and how to reach it (`~/.config/sparkwing/profiles.yaml`).
//!
//! The file is found at `$SPARKWING_PROFILES`, else `$XDG_CONFIG_HOME/sparkwing/profiles.yaml`,
//! else `~/.config/sparkwing/profiles.yaml`. It is written with mode 0600 because it may hold
//! tokens; nothing here ever prints a token.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const ENV_PROFILES: &str = "SPARKWING_PROFILES";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profile {name:?} not found in {path} (profiles: {known}); add it with `sparkwing profile set {name} --controller URL --token-env VAR`")]
    NotFound {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error("no profile given and no default in {path}; pass --profile NAME or set `default:` (sparkwing profile set NAME --default)")]
    NoDefault { path: PathBuf },
    #[error("profile {0:?}: give either a token or token_env, not both")]
    TwoTokens(String),
    #[error("profile {name:?}: {field} must be an http:// or https:// URL, got {value:?}")]
    BadUrl {
        name: String,
        field: &'static str,
        value: String,
    },
    #[error("profile name {0:?} is invalid: use letters, digits, '-' and '_'")]
    BadName(String),
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfilesFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One profile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The cluster API's URL; needed to trigger remote runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// A bearer token, stored in this file (0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The environment variable holding the bearer token (preferred over `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Where logs are followed from (defaults to the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Also record runs in the local store (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_local: Option<bool>,
}

/// How a profile's token is configured, for display (never the token itself).
pub fn token_source(p: &Profile) -> String {
    match (&p.token, &p.token_env) {
        (Some(_), _) => "stored in the profiles file".to_string(),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => format!("from ${var} (set)"),
            _ => format!("from ${var} (NOT set)"),
        },
        (None, None) => "none".to_string(),
    }
}

impl Profile {
    pub fn mirror_local(&self) -> bool {
        self.mirror_local.unwrap_or(true)
    }
}

/// Where the profiles file is.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os(ENV_PROFILES).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".config")
        });
    config.join("sparkwing").join("profiles.yaml")
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check(file: &ProfilesFile) -> Result<(), ProfileError> {
    for (name, p) in &file.profiles {
        if !valid_name(name) {
            return Err(ProfileError::BadName(name.clone()));
        }
        if p.token.is_some() && p.token_env.is_some() {
            return Err(ProfileError::TwoTokens(name.clone()));
        }
        for (field, value) in [("controller", &p.controller), ("logs", &p.logs)] {
            if let Some(v) = value {
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err(ProfileError::BadUrl {
                        name: name.clone(),
                        field,
                        value: v.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Parse profiles text; errors carry file, line and column.
pub fn parse(path: &Path, text: &str) -> Result<ProfilesFile, ProfileError> {
    if text.trim().is_empty() {
        return Ok(ProfilesFile::default());
    }
    let file: ProfilesFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let msg = e.to_string();
        let message = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        ProfileError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })?;
    check(&file)?;
    Ok(file)
}

/// Load the file; a missing file is an empty set of profiles.
pub fn load(path: &Path) -> Result<ProfilesFile, ProfileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProfilesFile::default()),
        Err(source) => Err(ProfileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write the file with mode 0600 (atomically: a temp file renamed over it).
pub fn save(path: &Path, file: &ProfilesFile) -> Result<(), ProfileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    check(file)?;
    let werr = |source| ProfileError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    let text = serde_yaml_ng::to_string(file).map_err(|e| werr(std::io::Error::other(e)))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    f.write_all(
        b"# Sparkwing profiles (mode 0600: may hold tokens). `sparkwing profile --help`.\n",
    )
    .and_then(|_| f.write_all(text.as_bytes()))
    .map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

/// The profile to use: `name`, else the file's default.
pub fn select<'a>(
    path: &Path,
    file: &'a ProfilesFile,
    name: Option<&str>,
) -> Result<(String, &'a Profile), ProfileError> {
    let name = match name.map(str::to_string).or_else(|| file.default.clone()) {
        Some(n) => n,
        None => {
            return Err(ProfileError::NoDefault {
                path: path.to_path_buf(),
            })
        }
    };
    match file.profiles.get(&name) {
        Some(p) => Ok((name, p)),
        None => Err(ProfileError::NotFound {
            known: if file.profiles.is_empty() {
                "none".into()
            } else {
                file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            },
            name,
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys_with_location() {
        let text = "default: prod\nprofiles:\n  prod:\n    controller: https://ci.example.test\n    token_env: PROD_TOKEN\n    namespace: ci\n    mirror_local: false\n";
        let f = parse(Path::new("p.yaml"), text).unwrap();
        let (name, p) = select(Path::new("p.yaml"), &f, None).unwrap();
        assert_eq!(name, "prod");
        assert!(!p.mirror_local());
        let bad = "profiles:\n  prod:\n    controler: https://x\n";
        let e = parse(Path::new("p.yaml"), bad).unwrap_err().to_string();
        assert!(e.starts_with("p.yaml:3:"), "{e}");
        assert!(e.contains("controler"), "{e}");
    }

    #[test]
    fn validates_tokens_urls_and_names() {
        let two = "profiles:\n  a:\n    token: x\n    token_env: Y\n";
        assert!(matches!(
            parse(Path::new("p"), two),
            Err(ProfileError::TwoTokens(_))
        ));
        let url = "profiles:\n  a:\n    controller: ftp://x\n";
        assert!(matches!(
            parse(Path::new("p"), url),
            Err(ProfileError::BadUrl { .. })
        ));
        let name = "profiles:\n  'a b':\n    pool: x\n";
        assert!(matches!(
            parse(Path::new("p"), name),
            Err(ProfileError::BadName(_))
        ));
    }

    #[test]
    fn saves_with_mode_0600_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/profiles.yaml");
        let mut f = ProfilesFile::default();
        f.profiles.insert(
            "prod".into(),
            Profile {
                controller: Some("https://ci.example.test".into()),
                token: Some("s3cret-token".into()),
                ..Default::default()
            },
        );
        save(&path, &f).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), f);
        assert!(matches!(
            select(&path, &f, Some("dev")),
            Err(ProfileError::NotFound { .. })
        ));
        assert!(matches!(
            select(&path, &f, None),
            Err(ProfileError::NoDefault { .. })
        ));
    }

    #[test]
    fn token_source_never_shows_the_token() {
        let p = Profile {
            token: Some("s3cret-token".into()),
            ..Default::default()
        };
        assert!(!token_source(&p).contains("s3cret"));
    }
}
