//! What a token may do (`docs/api.md`, "Auth"): `runs:read`, `runs:trigger`, `approvals:write`
//! (decide approval gates), `admin`, and the server-minted `run:<ns>/<name>` (one run's runner)
//! and `pool:<ns>/<pool>` (one RunnerPool's warm runners). On the wire a scope is its text (`Display` / [`Scope::parse`]).

use std::fmt;

/// A permission a token carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    RunsRead,
    RunsTrigger,
    /// Approve or reject the approval gates of runs.
    ApprovalsWrite,
    Admin,
    /// The runner of one run.
    Run {
        namespace: String,
        name: String,
    },
    /// The warm runners of one RunnerPool.
    Pool {
        namespace: String,
        name: String,
    },
}

/// Scopes an admin may grant (`run:` and `pool:` scopes are minted by the server only).
pub const GRANTABLE_SCOPES: &[&str] = &["runs:read", "runs:trigger", "approvals:write", "admin"];

impl Scope {
    pub fn run(namespace: &str, name: &str) -> Scope {
        Scope::Run {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn pool(namespace: &str, name: &str) -> Scope {
        Scope::Pool {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "runs:read" => Some(Scope::RunsRead),
            "runs:trigger" => Some(Scope::RunsTrigger),
            "approvals:write" => Some(Scope::ApprovalsWrite),
            "admin" => Some(Scope::Admin),
            _ => {
                let (make, rest): (fn(&str, &str) -> Scope, &str) =
                    if let Some(rest) = s.strip_prefix("run:") {
                        (Scope::run, rest)
                    } else {
                        (Scope::pool, s.strip_prefix("pool:")?)
                    };
                let (ns, name) = rest.split_once('/')?;
                (!ns.is_empty() && !name.is_empty()).then(|| make(ns, name))
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::RunsRead => f.write_str("runs:read"),
            Scope::RunsTrigger => f.write_str("runs:trigger"),
            Scope::ApprovalsWrite => f.write_str("approvals:write"),
            Scope::Admin => f.write_str("admin"),
            Scope::Run { namespace, name } => write!(f, "run:{namespace}/{name}"),
            Scope::Pool { namespace, name } => write!(f, "pool:{namespace}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_text() {
        for s in [
            "runs:read",
            "runs:trigger",
            "approvals:write",
            "admin",
            "run:ci/b-1",
            "pool:ci/warm",
        ] {
            assert_eq!(Scope::parse(s).map(|x| x.to_string()).as_deref(), Some(s));
        }
        for bad in [
            "",
            "run:",
            "run:ci",
            "run:/x",
            "pool:ci/",
            "runs:write",
            "approvals:read",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
    }
}
