//! Which Secrets a run may use (pure). A run names Kubernetes Secrets in `spec.secrets`; its
//! runner gets each as environment (`envFrom`). Only the Pipeline the run was created for grants
//! them (its `spec.secrets`), and each must exist before a runner starts: a run that asks for
//! more, or for a Secret that is missing, fails at once instead of starting a runner that cannot
//! read it (or a pod the kubelet cannot start).
//!
//! The operator observes [`SecretAccess`] (the run's Pipeline and which granted Secrets exist);
//! [`check_secrets`] decides.

/// Reason of a run asking for a Secret its Pipeline does not grant.
pub const SECRET_NOT_ALLOWED: &str = "SecretNotAllowed";
/// Reason of a run asking for a granted Secret that does not exist.
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";

/// What the operator read of the Secrets a run asks for, before its first runner starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretAccess {
    /// The run's namespace (Secrets and the Pipeline live there).
    pub namespace: String,
    /// The Pipeline the run names (its `sparkwing.dev/pipeline` annotation); `None`: the run was
    /// not created for a Pipeline.
    pub pipeline: Option<String>,
    /// That Pipeline's `spec.secrets`; `None`: the Pipeline does not exist.
    pub granted: Option<Vec<String>>,
    /// The requested Secrets found in the namespace (only granted ones need looking up).
    pub existing: Vec<String>,
}

/// Why a run may not start with the Secrets it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRefusal {
    /// [`SECRET_NOT_ALLOWED`] or [`SECRET_NOT_FOUND`].
    pub reason: &'static str,
    pub message: String,
}

/// Decide whether a run asking for `requested` may start. `access` is `None` when nothing was
/// observed: a run asking for Secrets is then refused (never started unchecked). Secrets that are
/// not granted are reported before missing ones (whether a Secret exists is not revealed to a
/// run that may not use it).
pub fn check_secrets(requested: &[String], access: Option<&SecretAccess>) -> Option<SecretRefusal> {
    if requested.is_empty() {
        return None;
    }
    let Some(access) = access else {
        return Some(SecretRefusal {
            reason: SECRET_NOT_ALLOWED,
            message: format!(
                "secrets {} were not checked against a Pipeline; the run does not start",
                quoted(requested)
            ),
        });
    };
    let granted: &[String] = access.granted.as_deref().unwrap_or_default();
    let not_granted: Vec<String> = dedup(requested)
        .into_iter()
        .filter(|s| !granted.contains(s))
        .collect();
    if !not_granted.is_empty() {
        let names = quoted(&not_granted);
        let message = match (&access.pipeline, &access.granted) {
            (None, _) => format!(
                "secret {names} is not allowed: the run was not created for a Pipeline, and only a \
                 Pipeline grants Secrets to its runs; add it to a Pipeline's spec.secrets and let \
                 that Pipeline start the run"
            ),
            (Some(p), None) => format!(
                "secret {names} is not allowed: Pipeline {p} (the run's sparkwing.dev/pipeline \
                 annotation) does not exist in namespace {}; create it with {names} in its \
                 spec.secrets",
                access.namespace
            ),
            (Some(p), Some(_)) => format!(
                "secret {names} is not allowed: Pipeline {p} does not grant it; add it to \
                 Pipeline {p}'s spec.secrets"
            ),
        };
        return Some(SecretRefusal {
            reason: SECRET_NOT_ALLOWED,
            message,
        });
    }
    let missing: Vec<String> = dedup(requested)
        .into_iter()
        .filter(|s| !access.existing.contains(s))
        .collect();
    if !missing.is_empty() {
        let ns = &access.namespace;
        let how = missing
            .iter()
            .map(|s| format!("kubectl -n {ns} create secret generic {s} --from-literal=KEY=VALUE"))
            .collect::<Vec<_>>()
            .join("; ");
        return Some(SecretRefusal {
            reason: SECRET_NOT_FOUND,
            message: format!(
                "secret {} not found in namespace {ns}; create it: {how}",
                quoted(&missing)
            ),
        });
    }
    None
}

fn dedup(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Problems of secret names a schema cannot express (each must be a Secret name: a DNS subdomain
/// of lowercase letters, digits, `-` and `.`, at most 253 characters). `field` names the list in
/// messages (`spec.secrets`).
pub fn secret_name_problems(field: &str, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !is_secret_name(n))
        .map(|n| {
            format!(
                "{field}: {n:?} is not a Secret name (lowercase letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 253 characters)"
            )
        })
        .collect()
}

fn is_secret_name(n: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = n.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
}
