//! Git branch and commit of a working tree, read from `.git` directly: spawning `git` twice would
//! cost more than the rest of a warm `sparkwing run`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitInfo {
    pub branch: Option<String>,
    pub commit: Option<String>,
}

/// Find the git directory for `start` (walking up), following `.git` files of worktrees.
fn git_dir(start: &Path) -> Option<PathBuf> {
    let mut cur = Some(start);
    while let Some(dir) = cur {
        let dot = dir.join(".git");
        if dot.is_dir() {
            return Some(dot);
        }
        if dot.is_file() {
            let text = std::fs::read_to_string(&dot).ok()?;
            let target = text.trim().strip_prefix("gitdir:")?.trim();
            let p = Path::new(target);
            return Some(if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            });
        }
        cur = dir.parent();
    }
    None
}

fn common_dir(git_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(t) => {
            let p = Path::new(t.trim());
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                git_dir.join(p)
            }
        }
        Err(_) => git_dir.to_path_buf(),
    }
}

fn resolve_ref(git_dir: &Path, name: &str) -> Option<String> {
    let common = common_dir(git_dir);
    for base in [git_dir, common.as_path()] {
        if let Ok(t) = std::fs::read_to_string(base.join(name)) {
            let t = t.trim();
            if let Some(next) = t.strip_prefix("ref:") {
                return resolve_ref(git_dir, next.trim());
            }
            return Some(t.to_string());
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|l| {
        let (sha, r) = l.split_once(' ')?;
        (r == name).then(|| sha.to_string())
    })
}

pub fn read(start: &Path) -> GitInfo {
    let Some(dir) = git_dir(start) else {
        return GitInfo::default();
    };
    let Ok(head) = std::fs::read_to_string(dir.join("HEAD")) else {
        return GitInfo::default();
    };
    let head = head.trim();
    match head.strip_prefix("ref:") {
        Some(r) => {
            let r = r.trim();
            GitInfo {
                branch: Some(r.strip_prefix("refs/heads/").unwrap_or(r).to_string()),
                commit: resolve_ref(&dir, r),
            }
        }
        None => GitInfo {
            branch: None,
            commit: Some(head.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn reads_branch_and_commit_like_git_does() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        git(&["init", "-q", "-b", "feature/x"]);
        assert_eq!(read(dir.path()).commit, None);
        git(&["commit", "-q", "--allow-empty", "-m", "one"]);
        let sha = git(&["rev-parse", "HEAD"]);
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let info = read(&sub);
        assert_eq!(info.branch.as_deref(), Some("feature/x"));
        assert_eq!(info.commit.as_deref(), Some(sha.as_str()));
        git(&["pack-refs", "--all"]);
        assert_eq!(read(dir.path()).commit.as_deref(), Some(sha.as_str()));
    }
}
