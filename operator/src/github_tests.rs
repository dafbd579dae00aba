//! The GitHub client against a loopback HTTP server started by each test: every request's
//! method, path, headers and JSON body are checked as GitHub documents them
//! (docs.github.com/rest/commits/statuses, /rest/apps/apps), and the server answers from a
//! script.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use kube::ResourceExt;
use serde_json::{json, Value};
use sparkwing_core::reconcile::status::{ConditionStatus, RunPhase, RunStatus};
use sparkwing_crds::pipeline::Pipeline;
use sparkwing_crds::PipelineRun;

use crate::controller::commit_status::{recorded, refusal, to_post};
use crate::controller::pipeline::commit_status_condition;
use crate::github::*;
use crate::labels::{COMMIT_ANNOTATION, GITHUB_REPOSITORY_ANNOTATION, PIPELINE_ANNOTATION};

const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
const TEST_KEY: &str = include_str!("../tests/fixtures/github-app-test-key.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../tests/fixtures/github-app-test-key.pub.pem");

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Script {
    answers: VecDeque<(u16, Value)>,
    seen: Vec<Seen>,
}

struct GitHub {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl GitHub {
    /// A server answering `answers` in order (then 500s).
    async fn start(answers: Vec<(u16, Value)>) -> GitHub {
        let script = Arc::new(Mutex::new(Script {
            answers: answers.into(),
            seen: Vec::new(),
        }));
        let s = script.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move {
                    let mut s = s.lock().unwrap();
                    s.seen.push(Seen {
                        method,
                        path: uri.path().to_string(),
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    let (code, answer) = s
                        .answers
                        .pop_front()
                        .unwrap_or((500, json!({"message": "unscripted"})));
                    (StatusCode::from_u16(code).unwrap(), axum::Json(answer)).into_response()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        GitHub { addr, script }
    }

    fn client(&self) -> GitHubClient {
        GitHubClient::new(
            &format!("http://{}/api/v3/", self.addr),
            Backoff {
                attempts: 3,
                first: Duration::from_millis(10),
            },
        )
        .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }
}

fn header<'a>(s: &'a Seen, name: &str) -> &'a str {
    s.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {s:?}"))
        .to_str()
        .unwrap()
}

/// The headers GitHub asks every REST request to carry.
fn assert_github_headers(s: &Seen, authorization: &str) {
    assert_eq!(header(s, "authorization"), authorization);
    assert_eq!(header(s, "accept"), "application/vnd.github+json");
    assert_eq!(header(s, "x-github-api-version"), "2022-11-28");
    assert!(header(s, "user-agent").starts_with("sparkwing-operator/"));
}

fn created() -> (u16, Value) {
    (
        201,
        json!({"id": 1, "state": "pending", "context": "sparkwing/app"}),
    )
}

fn token() -> Credentials {
    Credentials::Token("ghp_test".into())
}

/// A run started by a push of `acme/app` at [`SHA`], in `phase`.
fn run(phase: RunPhase, failed_job: Option<&str>) -> PipelineRun {
    let mut r = PipelineRun::test("app-3f9a2c1b");
    r.metadata.namespace = Some("ci".into());
    r.metadata.annotations = Some(BTreeMap::from([
        (PIPELINE_ANNOTATION.to_string(), "app".to_string()),
        (
            GITHUB_REPOSITORY_ANNOTATION.to_string(),
            "acme/app".to_string(),
        ),
        (COMMIT_ANNOTATION.to_string(), SHA.to_string()),
    ]));
    let mut status = RunStatus {
        phase,
        ..RunStatus::default()
    };
    if let Some(job) = failed_job {
        status.jobs = vec![sparkwing_core::reconcile::status::JobStatus {
            name: job.into(),
            state: "failed".into(),
            ..Default::default()
        }];
    }
    r.status = Some(status);
    r
}

async fn post(gh: &GitHub, creds: &Credentials, run: &PipelineRun) -> Result<(), GitHubError> {
    let p = to_post(run, Some("https://sparkwing.example.com")).unwrap();
    gh.client()
        .post_status(creds, &p.repository, &p.sha, &p.status)
        .await
}

#[tokio::test]
async fn statuses_for_success_failure_and_cancel_are_posted_as_github_documents() {
    let gh = GitHub::start(vec![created(), created(), created(), created()]).await;
    post(&gh, &token(), &run(RunPhase::Running, None))
        .await
        .unwrap();
    post(&gh, &token(), &run(RunPhase::Succeeded, None))
        .await
        .unwrap();
    post(&gh, &token(), &run(RunPhase::Failed, Some("test")))
        .await
        .unwrap();
    post(&gh, &token(), &run(RunPhase::Cancelled, None))
        .await
        .unwrap();
    let seen = gh.seen();
    assert_eq!(seen.len(), 4);
    let link = "https://sparkwing.example.com/runs/ci/app-3f9a2c1b";
    let want = [
        json!({"state": "pending", "target_url": link, "description": "running", "context": "sparkwing/app"}),
        json!({"state": "success", "target_url": link, "description": "succeeded", "context": "sparkwing/app"}),
        json!({"state": "failure", "target_url": link, "description": "job test failed", "context": "sparkwing/app"}),
        json!({"state": "error", "target_url": link, "description": "cancelled", "context": "sparkwing/app"}),
    ];
    for (s, body) in seen.iter().zip(want) {
        assert_eq!(s.method, Method::POST);
        // Under the configured base (a GitHub Enterprise Server's /api/v3).
        assert_eq!(s.path, format!("/api/v3/repos/acme/app/statuses/{SHA}"));
        assert_github_headers(s, "Bearer ghp_test");
        assert_eq!(header(s, "content-type"), "application/json");
        assert_eq!(s.body, body);
    }
}

#[tokio::test]
async fn a_502_is_retried_and_a_lasting_one_is_retryable() {
    let gh = GitHub::start(vec![(502, json!({"message": "Bad Gateway"})), created()]).await;
    post(&gh, &token(), &run(RunPhase::Succeeded, None))
        .await
        .unwrap();
    let seen = gh.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body);

    // Three 502s: the client gives up, and says a later try may work (the controller backs off).
    let gh = GitHub::start(vec![(502, json!({})), (502, json!({})), (502, json!({}))]).await;
    let err = post(&gh, &token(), &run(RunPhase::Succeeded, None))
        .await
        .unwrap_err();
    assert!(err.retryable(), "{err}");
    assert_eq!(gh.seen().len(), 3);

    // Nobody listening: retryable too.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let client = GitHubClient::new(
        &format!("http://{addr}"),
        Backoff {
            attempts: 2,
            first: Duration::from_millis(10),
        },
    )
    .unwrap();
    let p = to_post(&run(RunPhase::Succeeded, None), None).unwrap();
    let err = client
        .post_status(&token(), &p.repository, &p.sha, &p.status)
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn a_401_is_not_retried_and_shows_as_the_pipelines_condition() {
    let gh = GitHub::start(vec![(
        401,
        json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
    )])
    .await;
    let mut r = run(RunPhase::Running, None);
    let err = post(&gh, &token(), &r).await.unwrap_err();
    assert_eq!(
        err,
        GitHubError::Unauthorized {
            status: 401,
            message: "Bad credentials".into()
        }
    );
    assert!(!err.retryable());
    assert_eq!(gh.seen().len(), 1);
    // What the controller records on the run, and the Pipeline's condition from it.
    for (k, v) in recorded(StatusState::Pending, Some(refusal(&err))) {
        match v {
            Some(v) => r.annotations_mut().insert(k, v),
            None => r.annotations_mut().remove(&k),
        };
    }
    assert_eq!(
        to_post(&r, None),
        None,
        "a refused state is not posted again"
    );
    let mut p = Pipeline::new("app", Default::default());
    p.metadata.namespace = Some("ci".into());
    let c = commit_status_condition(&p, &[r.clone()], 1).unwrap();
    assert_eq!(
        (c.type_.as_str(), c.status, c.reason.as_str()),
        ("CommitStatus", ConditionStatus::False, "Unauthorized")
    );
    assert_eq!(
        c.message,
        format!(
            "run {}: GitHub refused the credentials (401): Bad credentials",
            r.name_any()
        )
    );
    // A 403 that is a rate limit is not a refusal.
    let gh = GitHub::start(vec![
        (
            403,
            json!({"message": "API rate limit exceeded for installation"}),
        ),
        created(),
    ])
    .await;
    post(&gh, &token(), &run(RunPhase::Running, None))
        .await
        .unwrap();
    assert_eq!(gh.seen().len(), 2);
}

#[tokio::test]
async fn a_github_app_exchanges_its_jwt_for_an_installation_token() {
    let gh = GitHub::start(vec![
        (
            201,
            json!({"token": "ghs_installation", "expires_at": "2026-12-04T00:00:00Z"}),
        ),
        created(),
        (200, json!({"id": 4242, "app_id": 99})),
        (
            201,
            json!({"token": "ghs_looked_up", "expires_at": "2026-12-04T00:00:00Z"}),
        ),
        created(),
    ])
    .await;
    let app = |installation_id| Credentials::App {
        app_id: "99".into(),
        private_key: TEST_KEY.into(),
        installation_id,
    };
    post(&gh, &app(Some(1234)), &run(RunPhase::Running, None))
        .await
        .unwrap();
    // Without an installation id, the repository's installation is looked up first.
    post(&gh, &app(None), &run(RunPhase::Running, None))
        .await
        .unwrap();
    let seen = gh.seen();
    assert_eq!(seen.len(), 5);
    let exchange = &seen[0];
    assert_eq!(exchange.method, Method::POST);
    assert_eq!(
        exchange.path,
        "/api/v3/app/installations/1234/access_tokens"
    );
    let auth = header(exchange, "authorization");
    let jwt = auth.strip_prefix("Bearer ").unwrap();
    assert_github_headers(exchange, auth);
    // RS256, issued by the App, valid for at most ten minutes.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&["99"]);
    let claims = jsonwebtoken::decode::<Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(exp - iat <= 600 && exp > iat, "{claims}");
    assert_eq!(
        seen[1].path,
        format!("/api/v3/repos/acme/app/statuses/{SHA}")
    );
    assert_github_headers(&seen[1], "Bearer ghs_installation");

    assert_eq!(seen[2].method, Method::GET);
    assert_eq!(seen[2].path, "/api/v3/repos/acme/app/installation");
    assert!(header(&seen[2], "authorization").starts_with("Bearer ey"));
    assert_eq!(seen[3].path, "/api/v3/app/installations/4242/access_tokens");
    assert_github_headers(&seen[4], "Bearer ghs_looked_up");
}

#[test]
fn credentials_come_from_the_secret_keys() {
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(
        Credentials::from_secret(&data(&[("token", "ghp_x\n")])),
        Ok(Credentials::Token("ghp_x".into()))
    );
    assert_eq!(
        Credentials::from_secret(&data(&[
            ("appId", "99"),
            ("privateKey", "PEM"),
            ("installationId", "7")
        ])),
        Ok(Credentials::App {
            app_id: "99".into(),
            private_key: "PEM".into(),
            installation_id: Some(7)
        })
    );
    assert_eq!(
        Credentials::from_secret(&data(&[("appId", "99")])),
        Err(CredentialsError::Missing)
    );
    assert_eq!(
        Credentials::from_secret(&data(&[
            ("appId", "99"),
            ("privateKey", "PEM"),
            ("installationId", "x")
        ])),
        Err(CredentialsError::InstallationId("x".into()))
    );
    // Never printed.
    assert_eq!(
        format!("{:?}", Credentials::Token("ghp_x".into())),
        "Token(***)"
    );
}

#[test]
fn the_pipeline_condition_follows_the_newest_run_that_posted() {
    let mut p = Pipeline::new("app", Default::default());
    p.metadata.namespace = Some("ci".into());
    let at = |s| {
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(s).unwrap(),
        ))
    };
    let mut older = run(RunPhase::Succeeded, None);
    older.metadata.name = Some("app-1".into());
    older.metadata.creation_timestamp = at(100);
    older
        .annotations_mut()
        .insert("sparkwing.dev/commit-status".into(), "success".into());
    let mut newer = run(RunPhase::Running, None);
    newer.metadata.name = Some("app-2".into());
    newer.metadata.creation_timestamp = at(200);
    newer
        .annotations_mut()
        .insert("sparkwing.dev/commit-status".into(), "pending".into());
    newer.annotations_mut().insert(
        "sparkwing.dev/commit-status-error".into(),
        "NoCredentials: Secret ci/github (spec.github.secretRef) not found".into(),
    );
    let c = commit_status_condition(&p, &[older.clone(), newer], 5).unwrap();
    assert_eq!(
        (c.status, c.reason.as_str(), c.message.as_str()),
        (
            ConditionStatus::False,
            "NoCredentials",
            "run app-2: Secret ci/github (spec.github.secretRef) not found"
        )
    );
    let c = commit_status_condition(&p, &[older], 5).unwrap();
    assert_eq!(
        (c.status, c.reason.as_str(), c.message.as_str()),
        (ConditionStatus::True, "Posted", "run app-1: posted success")
    );
    // No run posted: no condition (left as it is).
    assert_eq!(
        commit_status_condition(&p, &[run(RunPhase::Running, None)], 5),
        None
    );
}

#[tokio::test]
async fn an_installation_token_is_reused_until_it_nears_expiry_and_dropped_when_refused() {
    let later = k8s_openapi::jiff::Timestamp::now().as_second() + 3600;
    let expires = k8s_openapi::jiff::Timestamp::from_second(later)
        .unwrap()
        .to_string();
    let soon = k8s_openapi::jiff::Timestamp::from_second(later - 3600 + 60)
        .unwrap()
        .to_string();
    let gh = GitHub::start(vec![
        (201, json!({"token": "ghs_one", "expires_at": expires})),
        created(),
        created(),
        // GitHub refuses the cached token (revoked): it is forgotten...
        (401, json!({"message": "Bad credentials"})),
        // ...and the next post mints another, which expires within the refresh margin...
        (201, json!({"token": "ghs_two", "expires_at": soon})),
        created(),
        // ...so the one after mints again.
        (201, json!({"token": "ghs_three", "expires_at": expires})),
        created(),
    ])
    .await;
    let app = Credentials::App {
        app_id: "99".into(),
        private_key: TEST_KEY.into(),
        installation_id: Some(1234),
    };
    let client = gh.client();
    let status = |client: &GitHubClient| {
        let client = client.clone();
        let app = app.clone();
        async move {
            client
                .post_status(
                    &app,
                    "acme/app",
                    SHA,
                    &CommitStatus {
                        state: StatusState::Pending,
                        target_url: None,
                        description: Some("running".into()),
                        context: "sparkwing/app".into(),
                    },
                )
                .await
        }
    };
    status(&client).await.unwrap();
    status(&client).await.unwrap();
    let refused = status(&client).await.unwrap_err();
    assert!(
        matches!(refused, GitHubError::Unauthorized { status: 401, .. }),
        "{refused}"
    );
    status(&client).await.unwrap();
    status(&client).await.unwrap();
    let seen: Vec<(String, String)> = gh
        .seen()
        .iter()
        .map(|s| (s.path.clone(), header(s, "authorization").to_string()))
        .collect();
    let exchange = "/api/v3/app/installations/1234/access_tokens";
    let statuses = format!("/api/v3/repos/acme/app/statuses/{SHA}");
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [exchange, &statuses, &statuses, &statuses, exchange, &statuses, exchange, &statuses]
    );
    let tokens: Vec<&str> = seen
        .iter()
        .filter(|(p, _)| *p == statuses)
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(
        tokens,
        [
            "Bearer ghs_one",
            "Bearer ghs_one",
            "Bearer ghs_one",
            "Bearer ghs_two",
            "Bearer ghs_three"
        ]
    );
}
