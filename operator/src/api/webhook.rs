//! GitHub-compatible push webhooks, the pure half: the signature check, payload parsing,
//! repository URL normalisation, branch globs, and the decision of what a delivery does. No IO:
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
use sparkwing_crds::pipeline_run::{GitSource, PipelineRun, Source, TriggerVia, TriggeredBy};

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
    #[error("malformed push payload: {0}")]
    Json(String),
    #[error("malformed push payload: {0}")]
    Invalid(String),
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
}

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
            serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
        if ev.git_ref.is_empty() {
            return Err(PayloadError::Invalid("`ref` is empty".into()));
        }
        let sha_ok = matches!(ev.after.len(), 40 | 64)
            && ev
                .after
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !sha_ok {
            return Err(PayloadError::Invalid(format!(
                "`after` {:?} is not a lowercase hex commit id",
                ev.after
            )));
        }
        if normalize_repo_url(&ev.repository.clone_url).is_none() {
            return Err(PayloadError::Invalid(format!(
                "`repository.clone_url` {:?} is not a repository URL",
                ev.repository.clone_url
            )));
        }
        Ok(ev)
    }

    /// Every URL of the repository, normalised ([`normalize_repo_url`]).
    pub fn repository_keys(&self) -> Vec<String> {
        let r = &self.repository;
        let mut keys: Vec<String> = [
            Some(&r.clone_url),
            r.html_url.as_ref(),
            r.ssh_url.as_ref(),
            r.git_url.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|u| normalize_repo_url(u))
        .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Who pushed (`unknown` when the payload has no sender).
    pub fn sender_login(&self) -> &str {
        self.sender.as_ref().map_or("unknown", |s| s.login.as_str())
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

/// What a delivery does.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// `ping`: answer `{"pong": true}`.
    Pong,
    /// Nothing to do (202 `{"ignored": reason}`).
    Ignore(String),
    /// Create these runs (at least one), for the push of `branch` at `sha`.
    Create {
        branch: String,
        sha: String,
        runs: Vec<PipelineRun>,
    },
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

/// Decide what a verified delivery does: `event` and `delivery` are its headers (a push needs a
/// delivery id), `body` the signed body, `pipelines` every `Pipeline` the API may start.
pub fn decide(
    event: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
    pipelines: &[Pipeline],
) -> Result<Decision, PayloadError> {
    let event = event
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or(PayloadError::MissingEvent)?;
    match event {
        "ping" => return Ok(Decision::Pong),
        "push" => {}
        other => return Ok(Decision::Ignore(format!("event {other:?} is not handled"))),
    }
    let delivery = check_delivery_id(delivery)?;
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
    let keys = push.repository_keys();
    let mut same_repo: Vec<&Pipeline> = pipelines
        .iter()
        .filter(|p| p.spec.problems().is_empty())
        .filter(|p| normalize_repo_url(&p.spec.repository).is_some_and(|k| keys.contains(&k)))
        .collect();
    if same_repo.is_empty() {
        return Ok(Decision::Ignore(format!(
            "no Pipeline for repository {}",
            push.repository.clone_url
        )));
    }
    same_repo.retain(|p| {
        p.spec
            .push_branches()
            .is_some_and(|globs| branches_match(globs, branch))
    });
    if same_repo.is_empty() {
        return Ok(Decision::Ignore(format!(
            "no Pipeline of repository {} has a push trigger matching branch {branch:?}",
            push.repository.clone_url
        )));
    }
    // Namespace then name: a stable order, so a redelivery answers the same list.
    same_repo.sort_by_key(|p| (p.namespace().unwrap_or_default(), p.name_any()));
    let runs = same_repo
        .into_iter()
        .map(|p| run_for(p, &push, branch, delivery))
        .collect();
    Ok(Decision::Create {
        branch: branch.to_string(),
        sha: push.after.clone(),
        runs,
    })
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

fn run_for(p: &Pipeline, push: &PushEvent, branch: &str, delivery: &str) -> PipelineRun {
    let ns = p.namespace().unwrap_or_default();
    let mut run = pipeline_run(
        p,
        run_name(&ns, &p.name_any(), delivery),
        branch,
        Source::Git(GitSource {
            url: push.repository.clone_url.clone(),
            revision: push.after.clone(),
        }),
        TriggeredBy {
            principal: format!("webhook:{}", push.sender_login()),
            host: None,
            via: TriggerVia::Webhook,
            delivery_id: Some(delivery.to_string()),
        },
    );
    run.annotations_mut().insert(
        PUSH_BRANCHES_ANNOTATION.to_string(),
        p.spec.push_branches().unwrap_or_default().join(","),
    );
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::PIPELINE_ANNOTATION;
    use sparkwing_crds::pipeline::PIPELINE_LABEL;
    use sparkwing_crds::pipeline::{PipelineSpec, PipelineTriggers, PushTrigger};
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
            decide(Some("ping"), Some("d"), b"{}", &[]),
            Ok(Decision::Pong)
        );
        assert_eq!(
            decide(Some("issues"), Some("d"), b"{}", &[]),
            Ok(Decision::Ignore("event \"issues\" is not handled".into()))
        );
        assert_eq!(
            decide(None, Some("d"), b"{}", &[]),
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
        )
        .unwrap();
        let Decision::Create { branch, sha, runs } = d else {
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
        )
        .unwrap();
        let Decision::Create { runs, .. } = d else {
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
        )
        .unwrap();
        let Decision::Create { runs, .. } = d else {
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
        let ignored = |body: Vec<u8>| match decide(Some("push"), Some("d"), &body, &pipelines) {
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
        );
        assert!(
            matches!(&no_repo, Ok(Decision::Ignore(r)) if r.contains("no Pipeline for repository")),
            "{no_repo:?}"
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let pipelines = [pipeline("ci", "app", "https://github.com/acme/app", None)];
        let err = |body: &[u8]| decide(Some("push"), Some("d"), body, &pipelines).unwrap_err();
        assert!(matches!(err(b"not json"), PayloadError::Json(_)));
        assert!(matches!(err(b"{}"), PayloadError::Json(_)));
        assert!(matches!(
            err(&push("refs/heads/main", "HEAD", false)),
            PayloadError::Invalid(m) if m.contains("`after`")
        ));
        let no_url = serde_json::to_vec(&serde_json::json!({
            "ref": "refs/heads/main", "after": SHA,
            "repository": {"clone_url": "nowhere"}
        }))
        .unwrap();
        assert!(matches!(err(&no_url), PayloadError::Invalid(m) if m.contains("clone_url")));
        assert_eq!(check_delivery_id(None), Err(PayloadError::MissingDelivery));
        assert_eq!(
            check_delivery_id(Some("a b")),
            Err(PayloadError::InvalidDelivery)
        );
        assert_eq!(check_delivery_id(Some(" 72d3162e ")), Ok("72d3162e"));
    }
}
