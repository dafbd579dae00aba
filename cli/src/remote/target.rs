//! A profile resolved to API clients: `--profile P`, else `$SPARKWING_PROFILE`, else the profiles
//! file's `default:`; the token from the profile's `token_env` variable or its stored `token`.

use crate::profiles::{self, Profile, ProfileError};
use sparkwing_api::{ApiClient, RemoteError};

/// The environment variable naming the profile when `--profile` is not given.
pub const ENV_PROFILE: &str = "SPARKWING_PROFILE";

/// Why a profile cannot be used to reach an API.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("profile {name:?} has no controller (the API URL) in {path}; add one with `sparkwing profile set {name} --controller URL`")]
    NoController { name: String, path: String },
    #[error("profile {name:?} takes its token from ${var}, which is not set; export {var}=<token> (a token from `sparkwing token create`)")]
    TokenEnvUnset { name: String, var: String },
    #[error("profile {name:?} has no token; set one with `sparkwing profile set {name} --token-env VAR` or `--token-stdin`")]
    NoToken { name: String },
    #[error("profile {name:?}: {source}")]
    Client { name: String, source: RemoteError },
}

/// A usable profile: its name, settings, and clients for the controller and for logs.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub profile: Profile,
    /// The controller's API.
    pub client: ApiClient,
    /// Where logs are read and followed (the profile's `logs:` URL, else the controller).
    pub logs: ApiClient,
}

/// The profile's name from `--profile`, else `$SPARKWING_PROFILE` (None: the file's default).
pub fn profile_name(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string).or_else(|| {
        std::env::var(ENV_PROFILE)
            .ok()
            .filter(|v| !v.trim().is_empty())
    })
}

/// Resolve a profile (see the module doc) to clients.
pub fn resolve(flag: Option<&str>) -> Result<Target, TargetError> {
    let path = profiles::path();
    let file = profiles::load(&path)?;
    let wanted = profile_name(flag);
    let (name, profile) = profiles::select(&path, &file, wanted.as_deref())?;
    let Some(controller) = profile.controller.clone() else {
        return Err(TargetError::NoController {
            name,
            path: path.display().to_string(),
        });
    };
    let token = match (&profile.token, &profile.token_env) {
        (Some(t), _) => t.clone(),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => v,
            _ => {
                return Err(TargetError::TokenEnvUnset {
                    name,
                    var: var.clone(),
                })
            }
        },
        (None, None) => return Err(TargetError::NoToken { name }),
    };
    let client = |url: &str| {
        ApiClient::new(url, &token).map_err(|source| TargetError::Client {
            name: name.clone(),
            source,
        })
    };
    let api = client(&controller)?;
    let logs = match &profile.logs {
        Some(u) => client(u)?,
        None => api.clone(),
    };
    Ok(Target {
        name: name.clone(),
        profile: profile.clone(),
        client: api,
        logs,
    })
}
