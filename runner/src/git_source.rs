//! A run's `git {url, revision}` source on the runner: check out exactly that revision into the
//! work directory with the `git` binary.
//!
//! ```text
//! git init <dest>
//! git fetch --depth 1 <url> <sha>            # servers that serve any commit by id
//!   or, refused: git fetch <url> +refs/heads/*:refs/remotes/origin/* +refs/tags/*:refs/tags/*
//! git checkout --detach <sha>
//! git rev-parse HEAD                        # must be <sha>
//! ```
//!
//! A revision that is not a full commit id (a branch or tag name) is fetched with `--depth 1` and
//! checked out at `FETCH_HEAD`; pin a commit for a reproducible run (webhook runs always do).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum GitSourceError {
    #[error("`git` is not installed on this runner ({0}); a git source needs it on PATH")]
    GitMissing(std::io::Error),
    #[error("git {step} failed (exit {code}): {stderr}")]
    Command {
        step: String,
        code: String,
        stderr: String,
    },
    #[error("commit {sha} is not in {url} (fetched every branch and tag): was it force-pushed away, or is the URL another repository?")]
    CommitNotFound { sha: String, url: String },
    #[error("checked out {got}, not the requested {want}")]
    Mismatch { want: String, got: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What was checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The commit HEAD is at.
    pub commit: String,
    /// `true` when the server refused fetching the commit by id and every branch and tag was
    /// fetched instead.
    pub full_fetch: bool,
}

/// A full commit id (SHA-1 or SHA-256, lowercase or not).
pub fn is_commit_id(rev: &str) -> bool {
    matches!(rev.len(), 40 | 64) && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `url` without a password or token (`https://user:secret@host/x` -> `https://user:***@host/x`),
/// for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

fn git(dir: &Path, step: &str, args: &[&str]) -> Result<String, GitSourceError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "advice.detachedHead=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                GitSourceError::GitMissing(e)
            } else {
                GitSourceError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                }
            }
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        Err(GitSourceError::Command {
            step: step.to_string(),
            code: out
                .status
                .code()
                .map_or_else(|| "signal".to_string(), |c| c.to_string()),
            stderr: if stderr.is_empty() {
                "(no output)".to_string()
            } else {
                stderr.to_string()
            },
        })
    }
}

/// Check out `revision` of `url` into `dest` (created; it must not hold another checkout).
pub fn checkout(url: &str, revision: &str, dest: &Path) -> Result<Checkout, GitSourceError> {
    std::fs::create_dir_all(dest).map_err(|source| GitSourceError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    let shown = redact_url(url);
    git(dest, "init", &["init", "-q"])?;
    if !is_commit_id(revision) {
        git(
            dest,
            &format!("fetch {shown} {revision}"),
            &["fetch", "-q", "--depth", "1", "--", url, revision],
        )?;
        git(
            dest,
            "checkout FETCH_HEAD",
            &["checkout", "-q", "--detach", "FETCH_HEAD"],
        )?;
        let commit = git(dest, "rev-parse HEAD", &["rev-parse", "HEAD"])?;
        return Ok(Checkout {
            commit,
            full_fetch: false,
        });
    }
    let sha = revision.to_ascii_lowercase();
    let full_fetch = match git(
        dest,
        &format!("fetch {shown} {sha}"),
        &["fetch", "-q", "--depth", "1", "--", url, &sha],
    ) {
        Ok(_) => false,
        Err(GitSourceError::GitMissing(e)) => return Err(GitSourceError::GitMissing(e)),
        // Servers without uploadpack.allowAnySHA1InWant (or reachable-SHA) refuse a commit
        // that is not a branch or tag tip: fetch them all and look for it.
        Err(by_id) => {
            git(
                dest,
                &format!(
                    "fetch {shown} (all branches and tags, after fetching by id failed: {by_id})"
                ),
                &[
                    "fetch",
                    "-q",
                    "--",
                    url,
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            )?;
            let object = format!("{sha}^{{commit}}");
            if git(dest, "cat-file", &["cat-file", "-e", &object]).is_err() {
                return Err(GitSourceError::CommitNotFound { sha, url: shown });
            }
            true
        }
    };
    git(
        dest,
        &format!("checkout {sha}"),
        &["checkout", "-q", "--detach", &sha],
    )?;
    let head = git(dest, "rev-parse HEAD", &["rev-parse", "HEAD"])?;
    if head != sha {
        return Err(GitSourceError::Mismatch {
            want: sha,
            got: head,
        });
    }
    Ok(Checkout {
        commit: head,
        full_fetch,
    })
}

/// The project root inside a checkout: `path` (a Pipeline's `spec.path`, from the run's
/// `sparkwing.dev/path` annotation) below `checkout`, refused when it leaves it.
pub fn project_root(checkout: &Path, path: Option<&str>) -> Result<PathBuf, String> {
    let Some(path) = path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) else {
        return Ok(checkout.to_path_buf());
    };
    if path.split('/').any(|c| c == "..") {
        return Err(format!(
            "the project path {path:?} leaves the repository (contains '..')"
        ));
    }
    Ok(checkout.join(path))
}

/// The warning when a Pipeline's push branches (`pipeline_globs`, from the run's
/// `sparkwing.dev/push-branches` annotation) differ from the committed `sparkwing.yaml`'s
/// `on.push.branches` of the pipeline (`committed`); `None` when they agree (as sets).
pub fn branch_drift(pipeline_globs: &str, committed: Option<&[String]>) -> Option<String> {
    let mut cr: Vec<&str> = pipeline_globs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    cr.sort_unstable();
    cr.dedup();
    let mut yaml: Vec<&str> = committed
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    yaml.sort_unstable();
    yaml.dedup();
    (cr != yaml).then(|| {
        format!(
            "the Pipeline's push branches [{}] differ from on.push.branches [{}] in the committed sparkwing.yaml; the Pipeline decides when runs start: change the Pipeline's spec.triggers.push.branches or on.push.branches in .sparkwing/sparkwing.yaml so they match",
            cr.join(", "),
            yaml.join(", ")
        )
    })
}

/// The annotation of a webhook run naming the directory of `.sparkwing/` in the repository.
pub const PATH_ANNOTATION: &str = "sparkwing.dev/path";
/// The annotation of a webhook run holding its Pipeline's push branch globs.
pub const PUSH_BRANCHES_ANNOTATION: &str = "sparkwing.dev/push-branches";

/// The runner's git source: a fresh checkout of `revision` of `url` in `dest`, and the project
/// root in it (`metadata`: the run's, for the `sparkwing.dev/path` annotation). The error is
/// the message the run fails with.
pub fn fetch_for_run(
    url: &str,
    revision: &str,
    dest: &Path,
    metadata: &serde_json::Value,
) -> Result<PathBuf, String> {
    let shown = redact_url(url);
    let fail = |e: &dyn std::fmt::Display| {
        format!("fetching the source (git {shown} at {revision}) failed: {e}")
    };
    if std::fs::symlink_metadata(dest).is_ok() {
        std::fs::remove_dir_all(dest).map_err(|e| fail(&format!("{}: {e}", dest.display())))?;
    }
    let started = std::time::Instant::now();
    let c = checkout(url, revision, dest).map_err(|e| fail(&e))?;
    tracing::info!(
        "runner: git {shown} at {revision}: checked out commit {} ({}) in {:.1}s",
        c.commit,
        if c.full_fetch {
            "the server refused it by id: fetched every branch and tag"
        } else {
            "fetched by id"
        },
        started.elapsed().as_secs_f64()
    );
    project_root(dest, metadata["annotations"][PATH_ANNOTATION].as_str()).map_err(|e| fail(&e))
}

/// A webhook run's comparison of its Pipeline's push branches with the committed
/// `sparkwing.yaml`'s `on.push.branches`, as the runner reports it to the API
/// (`PUT /api/v1/runs/{ns}/{name}/branch-check`; the Pipeline's `BranchesInSync` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchCheck {
    InSync,
    /// The message naming both lists and how to fix it.
    Drifted(String),
}

impl BranchCheck {
    /// The API's body: `{"inSync": true}` or `{"inSync": false, "message": ...}`.
    pub fn body(&self) -> sparkwing_api::wire::BranchCheck {
        match self {
            BranchCheck::InSync => sparkwing_api::wire::BranchCheck {
                in_sync: true,
                message: None,
            },
            BranchCheck::Drifted(m) => sparkwing_api::wire::BranchCheck {
                in_sync: false,
                message: Some(m.clone()),
            },
        }
    }
}

/// Compare the run's Pipeline push branches (its `sparkwing.dev/push-branches` annotation) with
/// the committed `sparkwing.yaml`'s, printing a warning when they differ. `None` for runs without
/// the annotation (not started by a webhook): nothing to compare.
pub fn warn_branch_drift(
    metadata: &serde_json::Value,
    pipeline: &sparkwing_engine::project::PipelineConfig,
) -> Option<BranchCheck> {
    let globs = metadata["annotations"][PUSH_BRANCHES_ANNOTATION].as_str()?;
    let committed = pipeline
        .on
        .as_ref()
        .and_then(|on| on.push.as_ref())
        .map(|p| p.branches.as_slice());
    Some(match branch_drift(globs, committed) {
        Some(w) => {
            tracing::warn!("pipeline {}: {w}", pipeline.name);
            BranchCheck::Drifted(w)
        }
        None => BranchCheck::InSync,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids_and_redaction() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"F".repeat(64)));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id(&"g".repeat(40)));
        assert_eq!(
            redact_url("https://bot:s3cret@example.com/acme/app.git"),
            "https://bot:***@example.com/acme/app.git"
        );
        assert_eq!(
            redact_url("https://tok@example.com/a"),
            "https://***@example.com/a"
        );
        assert_eq!(redact_url("git@example.com:a/b"), "git@example.com:a/b");
        assert_eq!(redact_url("file:///srv/a.git"), "file:///srv/a.git");
    }

    #[test]
    fn project_roots() {
        let c = Path::new("/w/run");
        assert_eq!(project_root(c, None).unwrap(), c);
        assert_eq!(project_root(c, Some("")).unwrap(), c);
        assert_eq!(
            project_root(c, Some("services/api/")).unwrap(),
            c.join("services/api")
        );
        assert!(project_root(c, Some("../x")).is_err());
    }

    #[test]
    fn drift_is_a_set_difference() {
        let yaml = vec!["main".to_string(), "release/*".to_string()];
        assert_eq!(branch_drift("release/*,main", Some(&yaml)), None);
        let w = branch_drift("main", Some(&yaml)).unwrap();
        assert!(
            w.contains("[main]") && w.contains("[main, release/*]"),
            "{w}"
        );
        assert!(branch_drift("main", None).is_some());
        assert_eq!(branch_drift("", None), None);
    }

    #[test]
    fn branch_check_bodies() {
        assert_eq!(
            serde_json::to_value(BranchCheck::InSync.body()).unwrap(),
            serde_json::json!({"inSync": true})
        );
        let w = branch_drift("main", Some(&["dev".to_string()])).unwrap();
        assert!(
            w.contains("spec.triggers.push.branches") && w.contains("so they match"),
            "{w}"
        );
        assert_eq!(
            serde_json::to_value(BranchCheck::Drifted(w.clone()).body()).unwrap(),
            serde_json::json!({"inSync": false, "message": w})
        );
    }
}
