//! Where a job runs on a cluster (`docs/authoring.md#placement`): a RunnerPool by name, cpu and
//! memory as Kubernetes quantities, node selector labels; their plan-time checks, and the note a
//! run prints when its runner cannot place jobs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job's placement as the plan declares it (`"placement"` of a job, `docs/protocol.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSpec {
    /// The RunnerPool whose warm runner takes the job; `None`: a fresh runner pod.
    #[serde(default)]
    pub pool: Option<String>,
    /// The pod's cpu, a Kubernetes quantity (`500m`, `4`); requests and limits alike.
    #[serde(default)]
    pub cpu: Option<String>,
    /// The pod's memory, a Kubernetes quantity (`512Mi`, `8Gi`); requests and limits alike.
    #[serde(default)]
    pub memory: Option<String>,
    /// Labels the pod's node must carry.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

impl PlacementSpec {
    /// The placement in one line, as `pipeline plan` shows it:
    /// `pool gpu, cpu 4, memory 8Gi, node disk=ssd`; `own pod` when nothing is set.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.pool {
            parts.push(format!("pool {p}"));
        }
        if let Some(c) = &self.cpu {
            parts.push(format!("cpu {c}"));
        }
        if let Some(m) = &self.memory {
            parts.push(format!("memory {m}"));
        }
        if !self.node_selector.is_empty() {
            let labels: Vec<String> = self
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.push(format!("node {}", labels.join(",")));
        }
        if parts.is_empty() {
            "own pod".into()
        } else {
            parts.join(", ")
        }
    }
}

/// What is wrong with a placement; shown after `job "x" placement: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("pool {0:?} is not a RunnerPool name: use 1 to 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (e.g. \"gpu\")")]
    Pool(String),
    #[error("{what} {value:?} is not a Kubernetes quantity: {problem} (e.g. {example})")]
    Quantity {
        what: &'static str,
        value: String,
        problem: &'static str,
        example: &'static str,
    },
    #[error("node selector key {0:?} is not a Kubernetes label key: use an optional DNS prefix and '/', then 1 to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit (e.g. \"disk\" or \"example.com/disk\")")]
    LabelKey(String),
    #[error("node selector value {value:?} of {key:?} is not a Kubernetes label value: use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit (e.g. \"ssd\")")]
    LabelValue { key: String, value: String },
}

/// Checks a placement: a valid pool name, positive cpu and memory quantities, label keys and
/// values Kubernetes accepts.
pub fn validate(p: &PlacementSpec) -> Result<(), PlacementError> {
    if let Some(pool) = &p.pool {
        if !dns_subdomain(pool) {
            return Err(PlacementError::Pool(pool.clone()));
        }
    }
    if let Some(cpu) = &p.cpu {
        quantity(cpu).map_err(|problem| PlacementError::Quantity {
            what: "cpu",
            value: cpu.clone(),
            problem,
            example: "\"500m\" or \"4\"",
        })?;
    }
    if let Some(memory) = &p.memory {
        quantity(memory).map_err(|problem| PlacementError::Quantity {
            what: "memory",
            value: memory.clone(),
            problem,
            example: "\"512Mi\" or \"8Gi\"",
        })?;
    }
    for (key, value) in &p.node_selector {
        if !label_key(key) {
            return Err(PlacementError::LabelKey(key.clone()));
        }
        if !(value.is_empty() || label_name(value)) {
            return Err(PlacementError::LabelValue {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// A Kubernetes quantity greater than zero: digits with an optional fraction, then an optional
/// suffix (`Ki`..`Ei`, `n`, `u`, `m`, `k`, `M`..`E`, or an exponent `e3`/`E-2`).
fn quantity(q: &str) -> Result<(), &'static str> {
    if q.starts_with('-') {
        return Err("it must not be negative");
    }
    let q = q.strip_prefix('+').unwrap_or(q);
    let end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(end);
    let mut halves = number.splitn(2, '.');
    let whole = halves.next().unwrap_or("");
    let fraction = halves.next();
    let well_formed = (!whole.is_empty() || fraction.is_some_and(|f| !f.is_empty()))
        && fraction.is_none_or(|f| !f.contains('.'));
    if !well_formed {
        return Err("it must start with a number");
    }
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || exponent(suffix);
    if !suffix_ok {
        return Err("its unit must be one of Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent such as e3");
    }
    if !number.chars().any(|c| c.is_ascii_digit() && c != '0') {
        return Err("it must be greater than zero");
    }
    Ok(())
}

/// `e3`, `E-2`, `e+6`.
fn exponent(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(['e', 'E']) else {
        return false;
    };
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
fn label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => dns_subdomain(prefix) && label_name(name),
        None => label_name(key),
    }
}

/// A label's name (or value): 1 to 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn label_name(s: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && ends(s.chars().next())
        && ends(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A DNS-1123 subdomain (a Kubernetes object name): 1 to 253 of `[a-z0-9.-]`, alphanumeric at
/// both ends.
fn dns_subdomain(s: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    s.len() <= 253
        && ends(s.chars().next())
        && ends(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
}

/// Where a run that runs its placed jobs itself executes: which note it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsHere {
    /// `sparkwing run` on this machine (the process or Docker runner).
    Locally,
    /// A runner (`sparkwing runner`) that cannot start job pods: started outside a cluster's pod
    /// (no `POD_NAME`).
    InRunnerPod,
}

/// The one-line note of a run that runs every job itself, placed or not: which jobs' placement
/// it ignores. `None` when no job has one.
pub fn ignored_note<'a>(
    placed: impl IntoIterator<Item = &'a str>,
    here: RunsHere,
) -> Option<String> {
    let jobs: Vec<&str> = placed.into_iter().collect();
    if jobs.is_empty() {
        return None;
    }
    let why = match here {
        RunsHere::Locally => {
            "this run executes every job on this machine (placement applies on a cluster)"
        }
        RunsHere::InRunnerPod => {
            "this runner is not in a cluster's pod (POD_NAME is not set), so it executes every job itself"
        }
    };
    Some(format!(
        "note: placement ignored for job{} {}: {why}",
        if jobs.len() == 1 { "" } else { "s" },
        jobs.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut PlacementSpec)) -> PlacementSpec {
        let mut p = PlacementSpec::default();
        f(&mut p);
        p
    }

    #[test]
    fn quantities_kubernetes_takes_pass() {
        for q in [
            "1", "4", "500m", "0.5", ".5", "1.", "8Gi", "512Mi", "1e3", "2E-2", "1k", "+2", "100u",
        ] {
            assert_eq!(quantity(q), Ok(()), "{q}");
        }
    }

    #[test]
    fn bad_quantities_say_what_is_wrong() {
        assert_eq!(quantity("-1"), Err("it must not be negative"));
        assert_eq!(quantity("0"), Err("it must be greater than zero"));
        assert_eq!(quantity("0.0Gi"), Err("it must be greater than zero"));
        for q in ["", "Gi", "abc", ".", "1.2.3"] {
            assert_eq!(quantity(q), Err("it must start with a number"), "{q}");
        }
        for q in ["8GB", "8 Gi", "4cores", "1e", "1e1.5", "2mi"] {
            assert!(
                quantity(q).is_err_and(|e| e.starts_with("its unit must be")),
                "{q}"
            );
        }
    }

    #[test]
    fn labels_and_pools_follow_kubernetes_names() {
        for k in [
            "disk",
            "example.com/disk",
            "a",
            "node-role.kubernetes.io/ci",
            "A_b.c",
        ] {
            assert!(label_key(k), "{k}");
        }
        for k in [
            "",
            "-disk",
            "disk-",
            "Example.com/disk",
            "a/b/c",
            "/disk",
            "dis k",
        ] {
            assert!(!label_key(k), "{k}");
        }
        assert!(!label_key(&"x".repeat(64)));
        assert!(dns_subdomain("gpu") && dns_subdomain("ci.pool-2"));
        assert!(!dns_subdomain("GPU") && !dns_subdomain("gpu_pool") && !dns_subdomain(""));
    }

    #[test]
    fn validate_names_the_fault_with_a_fix() {
        assert_eq!(validate(&PlacementSpec::default()), Ok(()));
        let good = with(|p| {
            p.pool = Some("gpu".into());
            p.cpu = Some("4".into());
            p.memory = Some("8Gi".into());
            p.node_selector.insert("disk".into(), "ssd".into());
            p.node_selector.insert("zone".into(), String::new());
        });
        assert_eq!(validate(&good), Ok(()));

        let e = validate(&with(|p| p.memory = Some("8GB".into()))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "memory \"8GB\" is not a Kubernetes quantity: its unit must be one of Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent such as e3 (e.g. \"512Mi\" or \"8Gi\")"
        );
        let e = validate(&with(|p| p.cpu = Some("-2".into()))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cpu \"-2\" is not a Kubernetes quantity: it must not be negative"),
            "{e}"
        );
        let e = validate(&with(|p| {
            p.node_selector.insert("bad key".into(), "x".into());
        }))
        .unwrap_err();
        assert_eq!(e, PlacementError::LabelKey("bad key".into()));
        assert!(e.to_string().contains("e.g. \"disk\""), "{e}");
        let e = validate(&with(|p| {
            p.node_selector.insert("disk".into(), "fast ssd".into());
        }))
        .unwrap_err();
        assert!(matches!(e, PlacementError::LabelValue { .. }), "{e}");
        let e = validate(&with(|p| p.pool = Some("GPU".into()))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("pool \"GPU\" is not a RunnerPool name"),
            "{e}"
        );
    }

    #[test]
    fn summary_and_the_ignored_note() {
        assert_eq!(PlacementSpec::default().summary(), "own pod");
        let p = with(|p| {
            p.pool = Some("gpu".into());
            p.cpu = Some("4".into());
            p.memory = Some("8Gi".into());
            p.node_selector.insert("disk".into(), "ssd".into());
            p.node_selector.insert("arch".into(), "arm64".into());
        });
        assert_eq!(
            p.summary(),
            "pool gpu, cpu 4, memory 8Gi, node arch=arm64,disk=ssd"
        );
        assert_eq!(ignored_note([], RunsHere::Locally), None);
        assert_eq!(
            ignored_note(["gpu-test"], RunsHere::Locally).as_deref(),
            Some("note: placement ignored for job gpu-test: this run executes every job on this machine (placement applies on a cluster)")
        );
        assert_eq!(
            ignored_note(["a", "b"], RunsHere::InRunnerPod).as_deref(),
            Some("note: placement ignored for jobs a, b: this runner is not in a cluster's pod (POD_NAME is not set), so it executes every job itself")
        );
    }

    #[test]
    fn older_plans_and_partial_objects_parse() {
        let p: PlacementSpec = serde_json::from_str(r#"{"cpu":"2"}"#).unwrap();
        assert_eq!(p.cpu.as_deref(), Some("2"));
        assert!(p.pool.is_none() && p.node_selector.is_empty());
    }
}
