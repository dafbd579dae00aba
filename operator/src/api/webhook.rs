//! GitHub-compatible push and pull request webhooks, the pure half: the signature check, payload
//! parsing, repository URL normalisation, branch and path globs, and the decision of what a
//! delivery does. No IO:
//! `handlers/webhooks.rs` reads the request, lists the `Pipeline`s, and applies the [`Decision`].
//!
//! A delivery is checked in this order: the secret is configured, the body is within its limit,
//! its `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body under the secret (compared in
//! constant time) — only then is the body parsed.

use hmac::{Hmac, Mac};
use kube::ResourceExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sparkwing_crds::pipeline::{Pipeline, PUSH_BRANCHES_ANNOTATION};
use sparkwing_crds::pipeline_run::{
    GitSource, PipelineRun, Source, TriggerVia, TriggeredBy, TriggeringPullRequest,
};

use crate::labels::{
    BASE_BRANCH_ANNOTATION, COMMIT_ANNOTATION, FORK_ANNOTATION, GITHUB_REPOSITORY_ANNOTATION,
    PATHS_UNCHECKED_ANNOTATION, PIPELINE_ANNOTATION, PULL_REQUEST_ANNOTATION,
};
use crate::runs::from_pipeline::pipeline_run;

/// The signature header (`sha256=<64 hex>`).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The event header (`push`, `ping`, ...).
pub const EVENT_HEADER: &str = "x-github-event";
/// The delivery id header (a UUID, kept across redeliveries).
pub const DELIVERY_HEADER: &str = "x-github-delivery";
type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    mac(key, msg).finalize().into_bytes().into()
}

fn mac(key: &[u8], msg: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this never fails.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(msg);
    m
}

/// `sha256=<hex>`: the header value a sender computes for `body`.
pub fn signature_header(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
}

/// Why a delivery's signature is refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header: expected sha256=<64 hex digits>")]
    Malformed,
    #[error("signature mismatch: X-Hub-Signature-256 is not the HMAC-SHA256 of the body under the configured secret")]
    Mismatch,
}

/// Check `header` (the value of `X-Hub-Signature-256`) against the HMAC-SHA256 of `body`.
pub fn verify_signature(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    // verify_slice compares in constant time.
    mac(secret, body)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// Why a (correctly signed) payload is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("missing X-GitHub-Event header")]
    MissingEvent,
    #[error("missing X-GitHub-Delivery header")]
    MissingDelivery,
    #[error("invalid X-GitHub-Delivery header: at most 128 printable ASCII characters")]
    InvalidDelivery,
    /// The event (`push`, `pull_request`) and what is wrong.
    #[error("malformed {0} payload: {1}")]
    Json(&'static str, String),
    #[error("malformed {0} payload: {1}")]
    Invalid(&'static str, String),
}

/// The fields of a push event Sparkwing reads.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub after: String,
    #[serde(default)]
    pub deleted: bool,
    pub repository: Repository,
    #[serde(default)]
    pub sender: Option<Sender>,
    /// The pushed commits (GitHub lists at most 20), each with the files it changed.
    #[serde(default)]
    pub commits: Vec<Commit>,
}

/// A commit of a push event: the files it added, removed and modified.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Commit {
    #[serde(default)]
    pub added: Vec<String>,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub modified: Vec<String>,
}

/// The most commits GitHub lists in a push event: a push with as many may have more, whose files
/// are unknown.
pub const PUSH_COMMITS_LISTED: usize = 20;

/// The repository of a push event.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub clone_url: String,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub ssh_url: Option<String>,
    #[serde(default)]
    pub git_url: Option<String>,
    #[serde(default)]
    pub full_name: Option<String>,
}

/// The account that pushed.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub login: String,
}

impl PushEvent {
    /// Parse and check a push payload.
    pub fn parse(body: &[u8]) -> Result<PushEvent, PayloadError> {
        let ev: PushEvent =
            serde_json::from_slice(body).map_err(|e| PayloadError::Json("push", e.to_string()))?;
        if ev.git_ref.is_empty() {
            return Err(PayloadError::Invalid("push", "`ref` is empty".into()));
        }
        if !is_commit_id(&ev.after) {
            return Err(PayloadError::Invalid(
                "push",
                format!("`after` {:?} is not a lowercase hex commit id", ev.after),
            ));
        }
        if normalize_repo_url(&ev.repository.clone_url).is_none() {
            return Err(PayloadError::Invalid(
                "push",
                format!(
                    "`repository.clone_url` {:?} is not a repository URL",
                    ev.repository.clone_url
                ),
            ));
        }
        Ok(ev)
    }

    /// Every URL of the repository, normalised ([`normalize_repo_url`]).
    pub fn repository_keys(&self) -> Vec<String> {
        self.repository.keys()
    }

    /// Who pushed (`unknown` when the payload has no sender).
    pub fn sender_login(&self) -> &str {
        self.sender.as_ref().map_or("unknown", |s| s.login.as_str())
    }

    /// The files the push changed, sorted, without duplicates; `None` when the payload may not
    /// list them all (no commits, or as many as GitHub lists at most).
    pub fn changed_files(&self) -> Option<Vec<String>> {
        if self.commits.is_empty() || self.commits.len() >= PUSH_COMMITS_LISTED {
            return None;
        }
        let mut files: Vec<String> = self
            .commits
            .iter()
            .flat_map(|c| c.added.iter().chain(&c.removed).chain(&c.modified))
            .cloned()
            .collect();
        files.sort();
        files.dedup();
        Some(files)
    }
}

/// The fields of a `pull_request` event Sparkwing reads.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    pub action: String,
    pub number: u64,
    pub pull_request: PullRequest,
    #[serde(default)]
    pub sender: Option<Sender>,
}

/// The pull request of a `pull_request` event.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub head: PullRequestRef,
    pub base: BaseRef,
}

/// The head of a pull request: its branch and commit, in its repository (`null` when that
/// repository, a fork, was deleted).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PullRequestRef {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    #[serde(default)]
    pub repo: Option<Repository>,
}

/// The base of a pull request: the branch it merges into, in the repository the webhook is on.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BaseRef {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub repo: Repository,
}

fn is_commit_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PullRequestEvent {
    /// Parse and check a `pull_request` payload.
    pub fn parse(body: &[u8]) -> Result<PullRequestEvent, PayloadError> {
        let ev: PullRequestEvent = serde_json::from_slice(body)
            .map_err(|e| PayloadError::Json("pull_request", e.to_string()))?;
        let pr = &ev.pull_request;
        if !is_commit_id(&pr.head.sha) {
            return Err(PayloadError::Invalid(
                "pull_request",
                format!(
                    "`pull_request.head.sha` {:?} is not a lowercase hex commit id",
                    pr.head.sha
                ),
            ));
        }
        let urls = std::iter::once(&pr.base.repo).chain(pr.head.repo.as_ref());
        for repo in urls {
            if normalize_repo_url(&repo.clone_url).is_none() {
                return Err(PayloadError::Invalid(
                    "pull_request",
                    format!("`clone_url` {:?} is not a repository URL", repo.clone_url),
                ));
            }
        }
        Ok(ev)
    }

    /// Every URL of the base repository (the one the webhook is on), normalised.
    pub fn repository_keys(&self) -> Vec<String> {
        self.pull_request.base.repo.keys()
    }

    /// Whether the head is in another repository than the base (a fork).
    pub fn is_fork(&self) -> bool {
        let base = &self.pull_request.base.repo;
        match &self.pull_request.head.repo {
            None => true,
            Some(head) => match (&head.full_name, &base.full_name) {
                (Some(h), Some(b)) => !h.eq_ignore_ascii_case(b),
                _ => normalize_repo_url(&head.clone_url) != normalize_repo_url(&base.clone_url),
            },
        }
    }

    /// Who sent the event (`unknown` when the payload has no sender).
    pub fn sender_login(&self) -> &str {
        self.sender.as_ref().map_or("unknown", |s| s.login.as_str())
    }
}

impl Repository {
    /// Every URL of the repository, normalised ([`normalize_repo_url`]).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = [
            Some(&self.clone_url),
            self.html_url.as_ref(),
            self.ssh_url.as_ref(),
            self.git_url.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|u| normalize_repo_url(u))
        .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A repository URL reduced to `host/path`, lowercase, for comparing: the scheme, user info,
/// port, a trailing `/` and a `.git` suffix are dropped; scp-like `git@host:owner/repo` is read
/// as `host/owner/repo`. `None` for something that is not a URL of a repository (no host, or no
/// path).
pub fn normalize_repo_url(url: &str) -> Option<String> {
    let url = url.trim();
    let (authority, path) = if let Some((_, rest)) = url.split_once("://") {
        match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        }
    } else if let Some((a, p)) = url.split_once(':') {
        // scp-like: [user@]host:path (not a Windows or local path).
        if a.contains('/') {
            return None;
        }
        (a, p)
    } else {
        return None;
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = host.split(':').next().unwrap_or(host);
    let mut path = path.trim_matches('/');
    if let Some(p) = path.strip_suffix(".git") {
        path = p.trim_end_matches('/');
    }
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(format!("{host}/{path}").to_ascii_lowercase())
}

/// Whether `branch` matches the glob `pattern`: `*` matches any characters but `/`, `**` as a whole
/// path component any characters including `/` (`a/**/b` also matches `a/b`), `?` one character
/// but `/`; every other character matches itself. A pattern that cannot be a glob matches nothing.
pub fn glob_match(pattern: &str, branch: &str) -> bool {
    branch_glob(pattern).is_some_and(|g| g.is_match(branch))
}

/// The matcher of a branch glob: only `*` and `?` are special (globset's `[...]`, `{a,b}` and `\`
/// are escaped, so a branch name with them matches itself).
fn branch_glob(pattern: &str) -> Option<globset::GlobMatcher> {
    let mut glob = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '*' | '?' => glob.push(c),
            c => glob.push_str(&globset::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    globset::GlobBuilder::new(&glob)
        .literal_separator(true)
        // A backslash is a plain character of a branch name, not an escape.
        .backslash_escape(false)
        .build()
        .ok()
        .map(|g| g.compile_matcher())
}

/// Whether a push to `branch` starts `pipeline`: it has a push trigger and one of its globs
/// matches (no globs: every branch).
pub fn branches_match(globs: &[String], branch: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| glob_match(g, branch))
}

/// Whether a path filter lets a delivery through, or why not. `files` are the changed files
/// (`None`: unknown, which lets it through); `paths` and `ignore` are globs ([`path_glob`]). A
/// file counts when it matches a `paths` glob (or `paths` is empty) and no `ignore` glob; the
/// delivery passes when one file counts.
pub fn paths_match(paths: &[String], ignore: &[String], files: Option<&[String]>) -> PathCheck {
    if paths.is_empty() && ignore.is_empty() {
        return PathCheck::Pass;
    }
    let Some(files) = files else {
        return PathCheck::Unknown;
    };
    let (Some(wanted), Some(ignored)) = (glob_set(paths), glob_set(ignore)) else {
        return PathCheck::Skip("a path glob is invalid".to_string());
    };
    let counts =
        |f: &String| (paths.is_empty() || wanted.is_match(f)) && !ignored.is_match(f.as_str());
    if files.iter().any(counts) {
        return PathCheck::Pass;
    }
    let reason = if files.is_empty() {
        "no changed files".to_string()
    } else if paths.is_empty() {
        format!("every changed file matches pathsIgnore {ignore:?}")
    } else if ignore.is_empty() {
        format!("no changed file matches paths {paths:?}")
    } else {
        format!("no changed file matches paths {paths:?} outside pathsIgnore {ignore:?}")
    };
    PathCheck::Skip(reason)
}

/// What a path filter says of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathCheck {
    /// No filter, or a changed file counts.
    Pass,
    /// A filter, but the changed files are unknown: the delivery passes, marked unchecked.
    Unknown,
    /// No changed file counts: why.
    Skip(String),
}

/// Path globs: `*` and `?` stay within a `/`-separated segment, `**` crosses them, `[...]` and
/// `{a,b}` are classes and alternatives (globset's syntax).
fn glob_set(globs: &[String]) -> Option<globset::GlobSet> {
    let mut set = globset::GlobSetBuilder::new();
    for g in globs {
        set.add(
            globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .ok()?,
        );
    }
    set.build().ok()
}

/// What a delivery does.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// `ping`: answer `{"pong": true}`.
    Pong,
    /// Nothing to do (202 `{"ignored": reason}`).
    Ignore(String),
    /// Create these runs (at least one).
    Create(Create),
}

/// The runs a delivery creates, and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    /// What the delivery is, whatever its id: the repository (as `host/path`), the ref and the
    /// commit (of a pull request: its number, action and head commit), all from the signed body.
    /// A copy of a signed body re-posted under a new delivery id has the same key.
    pub key: String,
    /// The pushed branch, or the pull request's base branch.
    pub branch: String,
    /// The pushed commit, or the pull request's head commit.
    pub sha: String,
    /// The pull request's number.
    pub pull_request: Option<u64>,
    pub runs: Vec<PipelineRun>,
    /// Pipelines of the repository whose trigger matched but whose path filter did not, and why.
    pub skipped: Vec<Skipped>,
}

/// A Pipeline a delivery does not start, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub namespace: String,
    pub pipeline: String,
    pub reason: String,
}

/// A checked delivery id (`X-GitHub-Delivery`).
pub fn check_delivery_id(id: Option<&str>) -> Result<&str, PayloadError> {
    let id = id.map(str::trim).ok_or(PayloadError::MissingDelivery)?;
    if id.is_empty() {
        return Err(PayloadError::MissingDelivery);
    }
    if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PayloadError::InvalidDelivery);
    }
    Ok(id)
}

/// The event a delivery is, from its `X-GitHub-Event` header.
pub fn event_of(event: Option<&str>) -> Result<&str, PayloadError> {
    event
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or(PayloadError::MissingEvent)
}

/// Decide what a verified delivery does: `event` and `delivery` are its headers (a push or pull
/// request needs a delivery id), `body` the signed body, `pipelines` every `Pipeline` the API
/// may start, `pr_files` a pull request's changed files when the caller could list them.
pub fn decide(
    event: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
    pipelines: &[Pipeline],
    pr_files: Option<&[String]>,
) -> Result<Decision, PayloadError> {
    match event_of(event)? {
        "ping" => Ok(Decision::Pong),
        "push" => decide_push(check_delivery_id(delivery)?, body, pipelines),
        "pull_request" => {
            decide_pull_request(check_delivery_id(delivery)?, body, pipelines, pr_files)
        }
        other => Ok(Decision::Ignore(format!("event {other:?} is not handled"))),
    }
}

/// The usable Pipelines of the repository named by `keys` (normalised URLs).
fn of_repository<'a>(pipelines: &'a [Pipeline], keys: &[String]) -> Vec<&'a Pipeline> {
    let mut same: Vec<&Pipeline> = pipelines
        .iter()
        .filter(|p| p.spec.problems().is_empty())
        .filter(|p| normalize_repo_url(&p.spec.repository).is_some_and(|k| keys.contains(&k)))
        .collect();
    // Namespace then name: a stable order, so a redelivery answers the same list.
    same.sort_by_key(|p| (p.namespace().unwrap_or_default(), p.name_any()));
    same
}

fn skipped(p: &Pipeline, reason: String) -> Skipped {
    Skipped {
        namespace: p.namespace().unwrap_or_default(),
        pipeline: p.name_any(),
        reason,
    }
}

/// Every skipped Pipeline's reason, for an ignored delivery.
fn skipped_reasons(skipped: &[Skipped]) -> String {
    skipped
        .iter()
        .map(|s| format!("{}/{}: {}", s.namespace, s.pipeline, s.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

fn decide_push(
    delivery: &str,
    body: &[u8],
    pipelines: &[Pipeline],
) -> Result<Decision, PayloadError> {
    let push = PushEvent::parse(body)?;
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        let reason = if push.git_ref.starts_with("refs/tags/") {
            format!("tag push {:?}", push.git_ref)
        } else {
            format!("ref {:?} is not a branch", push.git_ref)
        };
        return Ok(Decision::Ignore(reason));
    };
    if push.deleted || push.after.bytes().all(|b| b == b'0') {
        return Ok(Decision::Ignore(format!("branch {branch:?} was deleted")));
    }
    let same_repo = of_repository(pipelines, &push.repository_keys());
    if same_repo.is_empty() {
        return Ok(Decision::Ignore(format!(
            "no Pipeline for repository {}",
            push.repository.clone_url
        )));
    }
    let on_branch: Vec<&Pipeline> = same_repo
        .into_iter()
        .filter(|p| {
            p.spec
                .push_branches()
                .is_some_and(|globs| branches_match(globs, branch))
        })
        .collect();
    if on_branch.is_empty() {
        return Ok(Decision::Ignore(format!(
            "no Pipeline of repository {} has a push trigger matching branch {branch:?}",
            push.repository.clone_url
        )));
    }
    let files = push.changed_files();
    let mut runs = Vec::new();
    let mut skips = Vec::new();
    for p in on_branch {
        let trigger = p.spec.triggers.push.as_ref().expect("filtered on push");
        match paths_match(&trigger.paths, &trigger.paths_ignore, files.as_deref()) {
            PathCheck::Skip(reason) => skips.push(skipped(p, reason)),
            check => {
                let mut run = run_for_push(p, &push, branch, delivery);
                if check == PathCheck::Unknown {
                    mark_paths_unchecked(&mut run);
                }
                runs.push(run);
            }
        }
    }
    if runs.is_empty() {
        return Ok(Decision::Ignore(format!(
            "no Pipeline of repository {} matches the changed files of the push to {branch:?}: {}",
            push.repository.clone_url,
            skipped_reasons(&skips)
        )));
    }
    let repo = normalize_repo_url(&push.repository.clone_url)
        .unwrap_or_else(|| push.repository.clone_url.clone());
    Ok(Decision::Create(Create {
        key: format!("{repo}\n{}\n{}", push.git_ref, push.after),
        branch: branch.to_string(),
        sha: push.after.clone(),
        pull_request: None,
        runs,
        skipped: skips,
    }))
}

fn mark_paths_unchecked(run: &mut PipelineRun) {
    run.annotations_mut()
        .insert(PATHS_UNCHECKED_ANNOTATION.to_string(), "true".to_string());
}

/// The pull request actions that start runs: a new head commit to test.
pub const PULL_REQUEST_ACTIONS: [&str; 3] = ["opened", "synchronize", "reopened"];

fn decide_pull_request(
    delivery: &str,
    body: &[u8],
    pipelines: &[Pipeline],
    pr_files: Option<&[String]>,
) -> Result<Decision, PayloadError> {
    let ev = PullRequestEvent::parse(body)?;
    let pr = &ev.pull_request;
    if !PULL_REQUEST_ACTIONS.contains(&ev.action.as_str()) {
        return Ok(Decision::Ignore(format!(
            "pull request #{} action {:?} starts no run (only opened, synchronize, reopened)",
            ev.number, ev.action
        )));
    }
    let Some(head_repo) = pr.head.repo.as_ref() else {
        return Ok(Decision::Ignore(format!(
            "pull request #{}: its head repository was deleted",
            ev.number
        )));
    };
    let base = pr.base.git_ref.as_str();
    let same_repo = of_repository(pipelines, &ev.repository_keys());
    if same_repo.is_empty() {
        return Ok(Decision::Ignore(format!(
            "no Pipeline for repository {}",
            pr.base.repo.clone_url
        )));
    }
    let on_base: Vec<&Pipeline> = same_repo
        .into_iter()
        .filter(|p| {
            p.spec
                .triggers
                .pull_request
                .as_ref()
                .is_some_and(|t| branches_match(&t.branches, base))
        })
        .collect();
    if on_base.is_empty() {
        return Ok(Decision::Ignore(format!(
            "no Pipeline of repository {} has a pull request trigger matching base branch {base:?}",
            pr.base.repo.clone_url
        )));
    }
    let fork = ev.is_fork();
    let mut runs = Vec::new();
    let mut skips = Vec::new();
    for p in on_base {
        let trigger = p.spec.triggers.pull_request.as_ref().expect("filtered");
        match paths_match(&trigger.paths, &trigger.paths_ignore, pr_files) {
            PathCheck::Skip(reason) => skips.push(skipped(p, reason)),
            check => {
                let mut run = run_for_pull_request(p, &ev, head_repo, delivery);
                if fork && !trigger.allow_forks {
                    // Untrusted code: it would read the Secrets, or leave something behind in a
                    // warm runner that a later run inherits.
                    run.spec.secrets.clear();
                    run.spec.runner_pool = None;
                }
                if check == PathCheck::Unknown {
                    mark_paths_unchecked(&mut run);
                }
                runs.push(run);
            }
        }
    }
    if runs.is_empty() {
        return Ok(Decision::Ignore(format!(
            "no Pipeline of repository {} matches the changed files of pull request #{}: {}",
            pr.base.repo.clone_url,
            ev.number,
            skipped_reasons(&skips)
        )));
    }
    let repo = normalize_repo_url(&pr.base.repo.clone_url)
        .unwrap_or_else(|| pr.base.repo.clone_url.clone());
    Ok(Decision::Create(Create {
        key: format!("{repo}\npull/{}\n{}\n{}", ev.number, ev.action, pr.head.sha),
        branch: base.to_string(),
        sha: pr.head.sha.clone(),
        pull_request: Some(ev.number),
        runs,
        skipped: skips,
    }))
}

/// What a pull request delivery needs its changed files for: the base repository's `owner/name`,
/// the number, and the Pipelines that would start but filter paths, in [`decide`]'s order. `None`
/// when no Pipeline needs them (or the body is not a pull request that starts runs).
pub fn files_wanted<'a>(
    body: &[u8],
    pipelines: &'a [Pipeline],
) -> Option<(String, u64, Vec<&'a Pipeline>)> {
    let ev = PullRequestEvent::parse(body).ok()?;
    if !PULL_REQUEST_ACTIONS.contains(&ev.action.as_str()) {
        return None;
    }
    let base = &ev.pull_request.base;
    let repo = base.repo.full_name.clone()?;
    let wanting: Vec<&Pipeline> = of_repository(pipelines, &ev.repository_keys())
        .into_iter()
        .filter(|p| {
            p.spec.triggers.pull_request.as_ref().is_some_and(|t| {
                branches_match(&t.branches, &base.git_ref)
                    && !(t.paths.is_empty() && t.paths_ignore.is_empty())
            })
        })
        .collect();
    (!wanting.is_empty()).then_some((repo, ev.number, wanting))
}

/// The name of the run a delivery creates for a Pipeline: `<pipeline>-<8 hex>`, the hex a hash of
/// the delivery id and the Pipeline, so creating it twice is refused as already existing.
pub fn run_name(pipeline_ns: &str, pipeline_name: &str, delivery: &str) -> String {
    let h = Sha256::digest(format!("{delivery}\n{pipeline_ns}\n{pipeline_name}"));
    format!(
        "{}-{}",
        crate::runs::backend::run_name_slug(pipeline_name),
        hex::encode(&h[..4])
    )
}

fn webhook_trigger(sender: &str, delivery: &str) -> TriggeredBy {
    TriggeredBy {
        principal: format!("webhook:{sender}"),
        host: None,
        via: TriggerVia::Webhook,
        delivery_id: Some(delivery.to_string()),
        pull_request: None,
    }
}

/// Where a run's commit status goes: the repository's `owner/name` and the commit.
fn annotate_commit(run: &mut PipelineRun, full_name: Option<&str>, sha: &str) {
    let a = run.annotations_mut();
    a.insert(COMMIT_ANNOTATION.to_string(), sha.to_string());
    if let Some(full_name) = full_name.filter(|n| !n.is_empty()) {
        a.insert(
            GITHUB_REPOSITORY_ANNOTATION.to_string(),
            full_name.to_string(),
        );
    }
}

fn run_for_push(p: &Pipeline, push: &PushEvent, branch: &str, delivery: &str) -> PipelineRun {
    let ns = p.namespace().unwrap_or_default();
    let mut run = pipeline_run(
        p,
        run_name(&ns, &p.name_any(), delivery),
        branch,
        Source::Git(GitSource {
            url: push.repository.clone_url.clone(),
            revision: push.after.clone(),
        }),
        webhook_trigger(push.sender_login(), delivery),
    );
    run.annotations_mut().insert(
        PUSH_BRANCHES_ANNOTATION.to_string(),
        p.spec.push_branches().unwrap_or_default().join(","),
    );
    annotate_commit(&mut run, push.repository.full_name.as_deref(), &push.after);
    run
}

fn run_for_pull_request(
    p: &Pipeline,
    ev: &PullRequestEvent,
    head_repo: &Repository,
    delivery: &str,
) -> PipelineRun {
    let ns = p.namespace().unwrap_or_default();
    let pr = &ev.pull_request;
    let mut run = pipeline_run(
        p,
        run_name(&ns, &p.name_any(), delivery),
        &pr.head.git_ref,
        // The head commit, from the repository it was pushed to (a fork's, for a fork).
        Source::Git(GitSource {
            url: head_repo.clone_url.clone(),
            revision: pr.head.sha.clone(),
        }),
        TriggeredBy {
            pull_request: Some(TriggeringPullRequest {
                number: ev.number,
                base: pr.base.git_ref.clone(),
                head: pr.head.git_ref.clone(),
                fork: ev.is_fork(),
            }),
            ..webhook_trigger(ev.sender_login(), delivery)
        },
    );
    annotate_commit(&mut run, pr.base.repo.full_name.as_deref(), &pr.head.sha);
    let a = run.annotations_mut();
    a.insert(PULL_REQUEST_ANNOTATION.to_string(), ev.number.to_string());
    a.insert(BASE_BRANCH_ANNOTATION.to_string(), pr.base.git_ref.clone());
    if ev.is_fork() {
        a.insert(FORK_ANNOTATION.to_string(), "true".to_string());
    }
    run
}

/// The runs a new run of a pull request supersedes: its Pipeline's other runs of the same pull
/// request that have not ended and are not being cancelled, when the Pipeline cancels in
/// progress. `runs` are the runs of the new run's namespace.
pub fn superseded<'a, R: std::borrow::Borrow<PipelineRun>>(
    new: &PipelineRun,
    pipeline: &Pipeline,
    runs: &'a [R],
) -> Vec<&'a PipelineRun> {
    let cancels = pipeline
        .spec
        .triggers
        .pull_request
        .as_ref()
        .is_some_and(|t| t.cancel_in_progress);
    let key = |r: &PipelineRun| {
        let a = r.annotations();
        (
            r.namespace(),
            a.get(PIPELINE_ANNOTATION).cloned(),
            a.get(PULL_REQUEST_ANNOTATION).cloned(),
        )
    };
    let want = key(new);
    if !cancels || want.2.is_none() {
        return Vec::new();
    }
    runs.iter()
        .map(|r| r.borrow())
        .filter(|r| r.name_any() != new.name_any())
        .filter(|r| key(r) == want)
        .filter(|r| r.spec.cancel.is_none() && !crate::runs::backend::is_terminal(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_crds::pipeline::PIPELINE_LABEL;
    use sparkwing_crds::pipeline::{
        PipelineSpec, PipelineTriggers, PullRequestTrigger, PushTrigger,
    };
    use sparkwing_crds::pipeline_run::DEFAULT_MAX_ATTEMPTS;
    use std::collections::BTreeMap;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn pipeline(ns: &str, name: &str, repo: &str, branches: Option<&[&str]>) -> Pipeline {
        let mut p = Pipeline::new(
            name,
            PipelineSpec {
                repository: repo.into(),
                pipeline: "build".into(),
                path: None,
                triggers: PipelineTriggers {
                    push: branches.map(|b| PushTrigger {
                        branches: b.iter().map(|s| s.to_string()).collect(),
                        ..PushTrigger::default()
                    }),
                    ..PipelineTriggers::default()
                },
                runner_pool: Some("warm".into()),
                ..PipelineSpec::default()
            },
        );
        p.metadata.namespace = Some(ns.into());
        p
    }

    fn push(git_ref: &str, after: &str, deleted: bool) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "ref": git_ref,
            "before": "0000000000000000000000000000000000000000",
            "after": after,
            "deleted": deleted,
            "repository": {
                "full_name": "acme/app",
                "clone_url": "https://github.com/acme/app.git",
                "html_url": "https://github.com/acme/app",
                "ssh_url": "git@github.com:acme/app.git",
                "git_url": "git://github.com/acme/app.git"
            },
            "sender": {"login": "octocat"},
            "head_commit": {"id": after, "message": "x"}
        }))
        .unwrap()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let good = signature_header(b"s3cret", body);
        assert_eq!(verify_signature(b"s3cret", Some(&good), body), Ok(()));
        assert_eq!(
            verify_signature(b"other", Some(&good), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", Some(&good), b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", None, body),
            Err(SignatureError::Missing)
        );
        for bad in ["sha1=abc", "sha256=zz", "sha256=abcd", &good[7..]] {
            assert_eq!(
                verify_signature(b"s3cret", Some(bad), body),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn repository_urls_normalise() {
        for u in [
            "https://github.com/acme/app.git",
            "https://github.com/acme/app",
            "https://github.com/acme/app/",
            "http://user:token@GitHub.com:443/acme/app.git/",
            "git@github.com:acme/app.git",
            "ssh://git@github.com:22/acme/app.git",
            "git://github.com/acme/App.git",
        ] {
            assert_eq!(
                normalize_repo_url(u).as_deref(),
                Some("github.com/acme/app"),
                "{u}"
            );
        }
        assert_eq!(
            normalize_repo_url("git://127.0.0.1:9418/repos/app.git").as_deref(),
            Some("127.0.0.1/repos/app")
        );
        for bad in [
            "",
            "app",
            "/srv/git/app",
            "https://github.com",
            "https://host/",
        ] {
            assert_eq!(normalize_repo_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn branch_globs() {
        let cases = [
            ("main", "main", true),
            ("main", "mainline", false),
            ("release/*", "release/1.2", true),
            ("release/*", "release/1.2/hotfix", false),
            ("release/**", "release/1.2/hotfix", true),
            ("**", "any/thing", true),
            ("*", "feature/x", false),
            ("*", "main", true),
            ("feature/**/wip", "feature/wip", true),
            ("feature/**/wip", "feature/a/b/wip", true),
            ("v?", "v1", true),
            ("v?", "v10", false),
            ("v?", "v/", false),
            ("*-stable", "1.0-stable", true),
            // Only * and ? are special: brackets, braces and backslashes match themselves.
            ("fix[1]", "fix[1]", true),
            ("fix[1]", "fix1", false),
            ("{a,b}", "a", false),
            ("{a,b}", "{a,b}", true),
            ("a\\b", "a\\b", true),
            ("v**", "v1", true),
            ("v**", "v1/2", false),
        ];
        for (glob, branch, want) in cases {
            assert_eq!(glob_match(glob, branch), want, "{glob} ~ {branch}");
        }
        assert!(branches_match(&[], "anything"));
    }

    #[test]
    fn ping_and_other_events() {
        assert_eq!(
            decide(Some("ping"), Some("d"), b"{}", &[], None),
            Ok(Decision::Pong)
        );
        assert_eq!(
            decide(Some("issues"), Some("d"), b"{}", &[], None),
            Ok(Decision::Ignore("event \"issues\" is not handled".into()))
        );
        assert_eq!(
            decide(None, Some("d"), b"{}", &[], None),
            Err(PayloadError::MissingEvent)
        );
    }

    #[test]
    fn a_push_creates_one_run_per_matching_pipeline() {
        let pipelines = [
            pipeline(
                "ci",
                "app-build",
                "git@github.com:acme/app",
                Some(&["main"]),
            ),
            pipeline(
                "ci",
                "app-release",
                "https://github.com/acme/app",
                Some(&["release/*"]),
            ),
            pipeline(
                "ci",
                "other",
                "https://github.com/acme/other",
                Some(&["main"]),
            ),
            pipeline(
                "team",
                "app-any",
                "https://github.com/acme/app.git",
                Some(&[]),
            ),
            pipeline("ci", "app-manual", "https://github.com/acme/app.git", None),
        ];
        let d = decide(
            Some("push"),
            Some("d-1"),
            &push("refs/heads/main", SHA, false),
            &pipelines,
            None,
        )
        .unwrap();
        let Decision::Create(Create {
            branch, sha, runs, ..
        }) = d
        else {
            panic!("{d:?}")
        };
        assert_eq!((branch.as_str(), sha.as_str()), ("main", SHA));
        let names: Vec<(String, String)> = runs
            .iter()
            .map(|r| {
                (
                    r.namespace().unwrap(),
                    r.annotations()[PIPELINE_ANNOTATION].clone(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("ci".to_string(), "app-build".to_string()),
                ("team".to_string(), "app-any".to_string())
            ]
        );
        let r = &runs[0];
        assert_eq!(r.labels()[PIPELINE_LABEL], "app-build");
        assert_eq!(r.spec.pipeline, "build");
        assert_eq!(r.spec.runner_pool.as_deref(), Some("warm"));
        assert_eq!(
            r.spec.source,
            Source::Git(GitSource {
                url: "https://github.com/acme/app.git".into(),
                revision: SHA.into()
            })
        );
        let by = r.spec.triggered_by.as_ref().unwrap();
        assert_eq!(by.principal, "webhook:octocat");
        assert_eq!(by.via, TriggerVia::Webhook);
        assert_eq!(by.delivery_id.as_deref(), Some("d-1"));
        assert_eq!(r.annotations()[PUSH_BRANCHES_ANNOTATION], "main");
        assert_eq!(r.intent().invalid, None);
        // The name is a function of the delivery and the Pipeline.
        assert_eq!(r.name_any(), run_name("ci", "app-build", "d-1"));
        assert_ne!(
            run_name("ci", "app-build", "d-1"),
            run_name("ci", "app-build", "d-2")
        );
        assert!(r.name_any().starts_with("app-build-"));

        let d = decide(
            Some("push"),
            Some("d-2"),
            &push("refs/heads/release/2.0", SHA, false),
            &pipelines,
            None,
        )
        .unwrap();
        let Decision::Create(Create { runs, .. }) = d else {
            panic!("{d:?}")
        };
        assert_eq!(runs.len(), 2); // app-release and app-any
    }

    #[test]
    fn runs_carry_the_pipelines_run_settings_and_secrets() {
        let mut p = pipeline(
            "ci",
            "app",
            "https://github.com/acme/app.git",
            Some(&["main"]),
        );
        p.spec.secrets = vec!["deploy-key".into(), "db".into()];
        p.spec.timeout = Some("45m".into());
        p.spec.ttl_seconds_after_finished = Some(3600);
        p.spec.max_attempts = Some(1);
        p.spec.args = BTreeMap::from([("target".to_string(), "release".to_string())]);
        let plain = pipeline(
            "ci",
            "plain",
            "https://github.com/acme/app.git",
            Some(&["main"]),
        );
        // A Pipeline with an invalid setting starts nothing (its Ready condition says why).
        let mut bad = pipeline(
            "ci",
            "bad",
            "https://github.com/acme/app.git",
            Some(&["main"]),
        );
        bad.spec.timeout = Some("30".into());
        let d = decide(
            Some("push"),
            Some("d-7"),
            &push("refs/heads/main", SHA, false),
            &[p, plain, bad],
            None,
        )
        .unwrap();
        let Decision::Create(Create { runs, .. }) = d else {
            panic!("{d:?}")
        };
        assert_eq!(runs.len(), 2);
        let spec = &runs[0].spec;
        assert_eq!(spec.secrets, ["deploy-key", "db"]);
        assert_eq!(spec.timeout.as_deref(), Some("45m"));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        assert_eq!(spec.max_attempts, 1);
        assert_eq!(spec.args["target"], "release");
        assert_eq!(runs[0].intent().invalid, None);
        // Unset settings leave the PipelineRun's defaults, and no secrets field at all.
        let plain = &runs[1];
        assert_eq!(plain.annotations()[PIPELINE_ANNOTATION], "plain");
        assert_eq!(
            (
                plain.spec.timeout.as_deref(),
                plain.spec.ttl_seconds_after_finished,
                plain.spec.max_attempts,
                plain.spec.args.len()
            ),
            (None, None, DEFAULT_MAX_ATTEMPTS, 0)
        );
        assert!(serde_json::to_value(&plain.spec)
            .unwrap()
            .get("secrets")
            .is_none());
    }

    #[test]
    fn pushes_that_start_nothing_are_ignored_with_a_reason() {
        let pipelines = [pipeline(
            "ci",
            "app",
            "https://github.com/acme/app",
            Some(&["main"]),
        )];
        let ignored = |body: Vec<u8>| match decide(Some("push"), Some("d"), &body, &pipelines, None)
        {
            Ok(Decision::Ignore(r)) => r,
            other => panic!("{other:?}"),
        };
        assert!(ignored(push("refs/tags/v1.0", SHA, false)).contains("tag push"));
        assert!(ignored(push("refs/heads/main", &"0".repeat(40), true)).contains("deleted"));
        assert!(ignored(push("refs/heads/main", SHA, true)).contains("deleted"));
        assert!(ignored(push("refs/heads/dev", SHA, false)).contains("matching branch \"dev\""));
        assert!(ignored(push("refs/pull/1/head", SHA, false)).contains("not a branch"));
        let no_repo = decide(
            Some("push"),
            Some("d"),
            &push("refs/heads/main", SHA, false),
            &[pipeline(
                "ci",
                "x",
                "https://github.com/acme/other",
                Some(&["main"]),
            )],
            None,
        );
        assert!(
            matches!(&no_repo, Ok(Decision::Ignore(r)) if r.contains("no Pipeline for repository")),
            "{no_repo:?}"
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let pipelines = [pipeline("ci", "app", "https://github.com/acme/app", None)];
        let err =
            |body: &[u8]| decide(Some("push"), Some("d"), body, &pipelines, None).unwrap_err();
        assert!(matches!(err(b"not json"), PayloadError::Json(..)));
        assert!(matches!(err(b"{}"), PayloadError::Json(..)));
        assert!(matches!(
            err(&push("refs/heads/main", "HEAD", false)),
            PayloadError::Invalid(_, m) if m.contains("`after`")
        ));
        let no_url = serde_json::to_vec(&serde_json::json!({
            "ref": "refs/heads/main", "after": SHA,
            "repository": {"clone_url": "nowhere"}
        }))
        .unwrap();
        assert!(matches!(err(&no_url), PayloadError::Invalid(_, m) if m.contains("clone_url")));
        assert_eq!(check_delivery_id(None), Err(PayloadError::MissingDelivery));
        assert_eq!(
            check_delivery_id(Some("a b")),
            Err(PayloadError::InvalidDelivery)
        );
        assert_eq!(check_delivery_id(Some(" 72d3162e ")), Ok("72d3162e"));
    }

    const HEAD: &str = "fedcba9876543210fedcba9876543210fedcba98";

    /// A push with commits that changed `files` (one commit each).
    fn push_with_files(files: &[&str]) -> Vec<u8> {
        let mut v: serde_json::Value =
            serde_json::from_slice(&push("refs/heads/main", SHA, false)).unwrap();
        v["commits"] = files
            .iter()
            .map(|f| serde_json::json!({"id": SHA, "added": [], "removed": [], "modified": [f]}))
            .collect();
        serde_json::to_vec(&v).unwrap()
    }

    /// A `pull_request` event as GitHub sends it (the fields Sparkwing reads, and some it does
    /// not); `head_repo` is the head's `full_name` (a fork when not `acme/app`).
    pub(super) fn pull_request(action: &str, number: u64, base: &str, head_repo: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "action": action,
            "number": number,
            "pull_request": {
                "url": format!("https://api.github.com/repos/acme/app/pulls/{number}"),
                "number": number,
                "state": if action == "closed" { "closed" } else { "open" },
                "title": "Fix the thing",
                "user": {"login": "contributor"},
                "head": {
                    "label": "contributor:fix",
                    "ref": "fix",
                    "sha": HEAD,
                    "repo": {
                        "full_name": head_repo,
                        "clone_url": format!("https://github.com/{head_repo}.git"),
                        "html_url": format!("https://github.com/{head_repo}")
                    }
                },
                "base": {
                    "label": format!("acme:{base}"),
                    "ref": base,
                    "sha": SHA,
                    "repo": {
                        "full_name": "acme/app",
                        "clone_url": "https://github.com/acme/app.git",
                        "html_url": "https://github.com/acme/app",
                        "ssh_url": "git@github.com:acme/app.git"
                    }
                }
            },
            "repository": {"full_name": "acme/app", "clone_url": "https://github.com/acme/app.git"},
            "sender": {"login": "contributor"}
        }))
        .unwrap()
    }

    fn pr_pipeline(name: &str, trigger: PullRequestTrigger) -> Pipeline {
        let mut p = pipeline("ci", name, "https://github.com/acme/app", None);
        p.spec.triggers.pull_request = Some(trigger);
        p.spec.secrets = vec!["deploy-key".into()];
        p
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn path_filters_count_files_outside_ignore() {
        let files = strings(&["docs/guide.md", "README.md"]);
        let check = |paths: &[&str], ignore: &[&str], files: Option<&[String]>| {
            paths_match(&strings(paths), &strings(ignore), files)
        };
        assert_eq!(check(&[], &[], None), PathCheck::Pass);
        assert_eq!(check(&["src/**"], &[], None), PathCheck::Unknown);
        assert_eq!(check(&["docs/**"], &[], Some(&files)), PathCheck::Pass);
        assert_eq!(check(&["*.md"], &[], Some(&files)), PathCheck::Pass);
        // `*` stays within a segment.
        assert_eq!(
            check(&["*.md"], &[], Some(&strings(&["docs/guide.md"]))),
            PathCheck::Skip("no changed file matches paths [\"*.md\"]".into())
        );
        assert_eq!(
            check(&[], &["docs/**", "*.md"], Some(&files)),
            PathCheck::Skip(
                "every changed file matches pathsIgnore [\"docs/**\", \"*.md\"]".into()
            )
        );
        assert_eq!(check(&[], &["docs/**"], Some(&files)), PathCheck::Pass);
        assert_eq!(
            check(&["docs/**"], &["docs/*.md"], Some(&files)),
            PathCheck::Skip(
                "no changed file matches paths [\"docs/**\"] outside pathsIgnore [\"docs/*.md\"]"
                    .into()
            )
        );
        assert_eq!(
            check(&["src/**"], &[], Some(&[])),
            PathCheck::Skip("no changed files".into())
        );
    }

    #[test]
    fn push_path_filters_start_or_skip_with_a_reason() {
        let mut docs = pipeline("ci", "docs", "https://github.com/acme/app", Some(&["main"]));
        docs.spec.triggers.push.as_mut().unwrap().paths = strings(&["docs/**"]);
        let mut code = pipeline("ci", "code", "https://github.com/acme/app", Some(&["main"]));
        code.spec.triggers.push.as_mut().unwrap().paths_ignore = strings(&["docs/**", "**/*.md"]);
        let pipelines = [docs, code];
        let d = decide(
            Some("push"),
            Some("d"),
            &push_with_files(&["src/main.rs"]),
            &pipelines,
            None,
        )
        .unwrap();
        let Decision::Create(c) = d else {
            panic!("{d:?}")
        };
        assert_eq!(c.runs.len(), 1);
        assert_eq!(c.runs[0].annotations()[PIPELINE_ANNOTATION], "code");
        assert_eq!(
            c.skipped,
            [Skipped {
                namespace: "ci".into(),
                pipeline: "docs".into(),
                reason: "no changed file matches paths [\"docs/**\"]".into()
            }]
        );
        assert!(!c.runs[0]
            .annotations()
            .contains_key(PATHS_UNCHECKED_ANNOTATION));
        // Only ignored files: nothing starts, and the reason names every Pipeline.
        let d = decide(
            Some("push"),
            Some("d"),
            &push_with_files(&["README.md"]),
            &pipelines,
            None,
        )
        .unwrap();
        let Decision::Ignore(reason) = d else {
            panic!("{d:?}")
        };
        assert!(
            reason.contains("matches the changed files of the push to \"main\""),
            "{reason}"
        );
        assert!(
            reason.contains("ci/docs: no changed file matches paths"),
            "{reason}"
        );
        assert!(
            reason.contains("ci/code: every changed file matches pathsIgnore"),
            "{reason}"
        );
        // A push whose files are unknown (no commits listed, or GitHub's 20) starts them, marked.
        let many: Vec<String> = (0..20).map(|i| format!("docs/{i}.md")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for body in [push("refs/heads/main", SHA, false), push_with_files(&many)] {
            let d = decide(Some("push"), Some("d"), &body, &pipelines, None).unwrap();
            let Decision::Create(c) = d else {
                panic!("{d:?}")
            };
            assert_eq!(c.runs.len(), 2);
            assert!(c
                .runs
                .iter()
                .all(|r| r.annotations()[PATHS_UNCHECKED_ANNOTATION] == "true"));
        }
    }

    #[test]
    fn a_pull_request_runs_its_head_and_records_it() {
        let p = pr_pipeline(
            "app-pr",
            PullRequestTrigger {
                branches: strings(&["main"]),
                ..PullRequestTrigger::default()
            },
        );
        let push_only = pipeline("ci", "app-push", "https://github.com/acme/app", Some(&[]));
        let pipelines = [p, push_only];
        for action in PULL_REQUEST_ACTIONS {
            let d = decide(
                Some("pull_request"),
                Some("d-pr"),
                &pull_request(action, 42, "main", "acme/app"),
                &pipelines,
                None,
            )
            .unwrap();
            let Decision::Create(c) = d else {
                panic!("{action}: {d:?}")
            };
            assert_eq!(c.pull_request, Some(42));
            assert_eq!((c.branch.as_str(), c.sha.as_str()), ("main", HEAD));
            assert_eq!(c.runs.len(), 1);
            let r = &c.runs[0];
            let a = r.annotations();
            assert_eq!(a[PIPELINE_ANNOTATION], "app-pr");
            assert_eq!(a[PULL_REQUEST_ANNOTATION], "42");
            assert_eq!(a[BASE_BRANCH_ANNOTATION], "main");
            assert_eq!(a[crate::labels::BRANCH_ANNOTATION], "fix");
            assert_eq!(a[COMMIT_ANNOTATION], HEAD);
            assert_eq!(a[GITHUB_REPOSITORY_ANNOTATION], "acme/app");
            assert!(!a.contains_key(FORK_ANNOTATION));
            // Not a push: the runner compares no push branches.
            assert!(!a.contains_key(PUSH_BRANCHES_ANNOTATION));
            assert_eq!(
                r.spec.source,
                Source::Git(GitSource {
                    url: "https://github.com/acme/app.git".into(),
                    revision: HEAD.into()
                })
            );
            assert_eq!(r.spec.secrets, ["deploy-key"]);
            assert_eq!(r.spec.runner_pool.as_deref(), Some("warm"));
            let by = r.spec.triggered_by.as_ref().unwrap();
            assert_eq!(
                (by.principal.as_str(), by.via),
                ("webhook:contributor", TriggerVia::Webhook)
            );
            assert_eq!(
                by.pull_request,
                Some(TriggeringPullRequest {
                    number: 42,
                    base: "main".into(),
                    head: "fix".into(),
                    fork: false,
                })
            );
            // The replay key differs per action and head commit.
            assert!(
                c.key.ends_with(&format!("pull/42\n{action}\n{HEAD}")),
                "{}",
                c.key
            );
        }
        let ignored = |body: Vec<u8>| match decide(
            Some("pull_request"),
            Some("d"),
            &body,
            &pipelines,
            None,
        ) {
            Ok(Decision::Ignore(r)) => r,
            other => panic!("{other:?}"),
        };
        for action in ["closed", "edited", "labeled", "assigned"] {
            let r = ignored(pull_request(action, 42, "main", "acme/app"));
            assert_eq!(
                r,
                format!("pull request #42 action {action:?} starts no run (only opened, synchronize, reopened)")
            );
        }
        assert_eq!(
            ignored(pull_request("opened", 42, "develop", "acme/app")),
            "no Pipeline of repository https://github.com/acme/app.git has a pull request trigger matching base branch \"develop\""
        );
        let mut gone: serde_json::Value =
            serde_json::from_slice(&pull_request("opened", 7, "main", "fork/app")).unwrap();
        gone["pull_request"]["head"]["repo"] = serde_json::Value::Null;
        assert!(ignored(serde_json::to_vec(&gone).unwrap()).contains("head repository was deleted"));
        let mut bad: serde_json::Value =
            serde_json::from_slice(&pull_request("opened", 7, "main", "acme/app")).unwrap();
        bad["pull_request"]["head"]["sha"] = "HEAD".into();
        assert!(matches!(
            decide(Some("pull_request"), Some("d"), &serde_json::to_vec(&bad).unwrap(), &pipelines, None),
            Err(PayloadError::Invalid("pull_request", m)) if m.contains("head.sha")
        ));
    }

    #[test]
    fn fork_pull_requests_get_no_secrets_nor_warm_runners_unless_allowed() {
        let strict = pr_pipeline("strict", PullRequestTrigger::default());
        let open = pr_pipeline(
            "open",
            PullRequestTrigger {
                allow_forks: true,
                ..PullRequestTrigger::default()
            },
        );
        let d = decide(
            Some("pull_request"),
            Some("d"),
            &pull_request("opened", 9, "main", "mallory/app"),
            &[strict, open],
            None,
        )
        .unwrap();
        let Decision::Create(c) = d else {
            panic!("{d:?}")
        };
        let (open, strict) = (&c.runs[0], &c.runs[1]);
        assert_eq!(open.annotations()[PIPELINE_ANNOTATION], "open");
        for r in [open, strict] {
            assert_eq!(r.annotations()[FORK_ANNOTATION], "true");
            let pr = r.spec.triggered_by.as_ref().unwrap().pull_request.as_ref();
            assert!(pr.is_some_and(|pr| pr.fork && pr.number == 9), "{pr:?}");
            // The fork's commit, from the fork; its status goes to the base repository.
            assert_eq!(
                r.spec.source,
                Source::Git(GitSource {
                    url: "https://github.com/mallory/app.git".into(),
                    revision: HEAD.into()
                })
            );
            assert_eq!(r.annotations()[GITHUB_REPOSITORY_ANNOTATION], "acme/app");
        }
        assert!(strict.spec.secrets.is_empty());
        assert_eq!(strict.spec.runner_pool, None);
        assert_eq!(open.spec.secrets, ["deploy-key"]);
        assert_eq!(open.spec.runner_pool.as_deref(), Some("warm"));
    }

    #[test]
    fn pull_request_path_filters_use_the_listed_files_or_run_unchecked() {
        let p = pr_pipeline(
            "api",
            PullRequestTrigger {
                paths: strings(&["api/**"]),
                ..PullRequestTrigger::default()
            },
        );
        let body = pull_request("synchronize", 3, "main", "acme/app");
        let pipelines = [p];
        let d = decide(Some("pull_request"), Some("d"), &body, &pipelines, None).unwrap();
        let Decision::Create(c) = d else {
            panic!("{d:?}")
        };
        assert_eq!(c.runs[0].annotations()[PATHS_UNCHECKED_ANNOTATION], "true");
        let files = strings(&["web/index.html"]);
        let d = decide(
            Some("pull_request"),
            Some("d"),
            &body,
            &pipelines,
            Some(&files),
        )
        .unwrap();
        assert_eq!(
            d,
            Decision::Ignore(
                "no Pipeline of repository https://github.com/acme/app.git matches the changed files of pull request #3: ci/api: no changed file matches paths [\"api/**\"]".into()
            )
        );
        let files = strings(&["api/lib.rs"]);
        let d = decide(
            Some("pull_request"),
            Some("d"),
            &body,
            &pipelines,
            Some(&files),
        )
        .unwrap();
        let Decision::Create(c) = d else {
            panic!("{d:?}")
        };
        assert!(!c.runs[0]
            .annotations()
            .contains_key(PATHS_UNCHECKED_ANNOTATION));
    }

    #[test]
    fn a_newer_run_of_a_pull_request_supersedes_the_older_running_ones() {
        let trigger = |cancel| PullRequestTrigger {
            cancel_in_progress: cancel,
            ..PullRequestTrigger::default()
        };
        let p = pr_pipeline("app-pr", trigger(true));
        let run_of = |delivery: &str, number: u64| {
            let Decision::Create(c) = decide(
                Some("pull_request"),
                Some(delivery),
                &pull_request("synchronize", number, "main", "acme/app"),
                std::slice::from_ref(&p),
                None,
            )
            .unwrap() else {
                panic!()
            };
            c.runs.into_iter().next().unwrap()
        };
        let phase = |mut r: PipelineRun, phase| {
            r.status = Some(sparkwing_core::reconcile::status::RunStatus {
                phase,
                ..Default::default()
            });
            r
        };
        use sparkwing_core::reconcile::status::RunPhase;
        let running = phase(run_of("d-1", 5), RunPhase::Running);
        let pending = run_of("d-2", 5);
        let done = phase(run_of("d-3", 5), RunPhase::Succeeded);
        let mut cancelling = phase(run_of("d-4", 5), RunPhase::Running);
        cancelling.spec.cancel = Some(sparkwing_crds::pipeline_run::CancelMode::Cancelled);
        let other_pr = phase(run_of("d-5", 6), RunPhase::Running);
        let mut other_pipeline = phase(run_of("d-6", 5), RunPhase::Running);
        other_pipeline
            .annotations_mut()
            .insert(PIPELINE_ANNOTATION.into(), "other".into());
        let new = run_of("d-7", 5);
        let all = [
            running.clone(),
            pending.clone(),
            done,
            cancelling,
            other_pr,
            other_pipeline,
            new.clone(),
        ];
        let names: Vec<String> = superseded(&new, &p, &all)
            .iter()
            .map(|r| r.name_any())
            .collect();
        assert_eq!(names, [running.name_any(), pending.name_any()]);
        let keep = pr_pipeline("app-pr", trigger(false));
        assert!(superseded(&new, &keep, &all).is_empty());
    }
}
