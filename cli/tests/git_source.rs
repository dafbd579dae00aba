//! `sparkwing runner --run` with a `git {url, revision}` source: the real binary checks out that
//! exact commit of a local bare repository (a `file://` URL), builds and runs it, and reports to
//! the real API.

mod common;
mod runner_support;

use std::path::Path;
use std::process::Command;

use common::Sw;
use runner_support::Api;
use serde_json::json;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository holding the project of `sw` in two commits: the first as it is, the second
/// adding `SECOND`. Returns (file URL, first sha, second sha).
fn two_commit_repo(sw: &Sw, bare: &Path) -> (String, String, String) {
    let work = sw.root();
    git(work, &["init", "-q"]);
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", "first"]);
    let first = git(work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("SECOND"), "second\n").unwrap();
    git(work, &["add", "SECOND"]);
    git(work, &["commit", "-q", "-m", "second"]);
    let second = git(work, &["rev-parse", "HEAD"]);
    git(
        Path::new("/"),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    (format!("file://{}", bare.display()), first, second)
}

fn runner(sw: &Sw, api: &Api, name: &str, token: &str) -> Command {
    let mut c = sw.cmd(["runner", "--run", &format!("ci/{name}"), "--attempt", "1"]);
    c.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", token)
        .env("SPARKWING_RUN", name)
        .env("SPARKWING_NAMESPACE", "ci")
        .env("SPARKWING_ATTEMPT", "1")
        .env("SPARKWING_SKIP_BOX_SLOTS", "1")
        .env("HOME", sw.home());
    c
}

#[test]
fn runner_checks_out_the_exact_commit_of_a_git_source() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let repos = tempfile::tempdir().unwrap();
    let (url, first, second) = two_commit_repo(&sw, &repos.path().join("app.git"));

    // The older commit (not a branch tip): exactly it, without the second commit's file.
    let (name, token) = api.trigger_lines(json!({"git": {"url": url, "revision": first}}));
    let out = sw.run_cmd(runner(&sw, &api, &name, &token));
    out.assert_code(0);
    assert!(
        out.stderr.contains(&format!("checked out commit {first}")),
        "{out}"
    );
    assert_eq!(api.texts("ci", &name, "count").len(), 4, "{out}");
    let checkout = sw.home().join("work").join(format!("ci-{name}"));
    assert!(checkout.join(".sparkwing/sparkwing.yaml").is_file());
    assert!(!checkout.join("SECOND").exists());
    assert_eq!(git(&checkout, &["rev-parse", "HEAD"]), first);

    // The tip, by commit id; then by branch name.
    for rev in [second.as_str(), "main"] {
        let (name, token) = api.trigger_lines(json!({"git": {"url": url, "revision": rev}}));
        let out = sw.run_cmd(runner(&sw, &api, &name, &token));
        out.assert_code(0);
        assert!(
            out.stderr.contains(&format!("checked out commit {second}")),
            "{out}"
        );
        let checkout = sw.home().join("work").join(format!("ci-{name}"));
        assert!(checkout.join("SECOND").is_file());
    }
}

#[test]
fn a_missing_commit_or_repository_fails_the_source_job_clearly() {
    let api = Api::start();
    let sw = Sw::fixture("remote");
    let repos = tempfile::tempdir().unwrap();
    let (url, _, _) = two_commit_repo(&sw, &repos.path().join("app.git"));

    let absent = "0123456789abcdef0123456789abcdef01234567";
    let (name, token) = api.trigger_lines(json!({"git": {"url": url, "revision": absent}}));
    let out = sw.run_cmd(runner(&sw, &api, &name, &token));
    out.assert_code(1);
    assert!(
        out.stderr
            .contains(&format!("commit {absent} is not in {url}")),
        "{out}"
    );
    assert_eq!(api.run("ci", &name)["jobs"]["source"]["state"], "failed");

    let nowhere = format!("file://{}/nowhere.git", repos.path().display());
    let (name, token) = api.trigger_lines(json!({"git": {"url": nowhere, "revision": "main"}}));
    let out = sw.run_cmd(runner(&sw, &api, &name, &token));
    out.assert_code(1);
    assert!(
        out.stderr.contains("fetching the source (git file://") && out.stderr.contains("git fetch"),
        "{out}"
    );
    let lines = api.texts("ci", &name, "source");
    assert!(lines.iter().any(|l| l.contains("nowhere.git")), "{lines:?}");
}
