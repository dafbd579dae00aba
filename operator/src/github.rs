//! GitHub's REST API, the part the operator uses: commit statuses
//! (`POST /repos/{owner}/{repo}/statuses/{sha}`) with a token, or with a GitHub App's
//! installation token (a JWT signed RS256 by the App's key, exchanged at
//! `POST /app/installations/{id}/access_tokens`). Transient failures (5xx, 429, network) are
//! retried with exponential backoff; a 401/403 is [`GitHubError::Unauthorized`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// GitHub.com's API (GitHub Enterprise Server: `https://<host>/api/v3`).
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The REST API version every request asks for (`X-GitHub-Api-Version`).
pub const API_VERSION: &str = "2022-11-28";
/// The media type every request accepts.
pub const ACCEPT: &str = "application/vnd.github+json";
/// GitHub requires a User-Agent.
pub const USER_AGENT: &str = concat!("sparkwing-operator/", env!("CARGO_PKG_VERSION"));
/// GitHub cuts a status description at 140 characters.
pub const DESCRIPTION_MAX: usize = 140;

/// A commit status's state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

/// The body of `POST /repos/{owner}/{repo}/statuses/{sha}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CommitStatus {
    pub state: StatusState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub context: String,
}

/// How the operator authenticates to GitHub, from the keys of the Pipeline's Secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A personal access or fine-grained token (key `token`).
    Token(String),
    /// A GitHub App (keys `appId`, `privateKey` as PEM, optional `installationId`; without it
    /// the installation on the repository is looked up).
    App {
        app_id: String,
        private_key: String,
        installation_id: Option<u64>,
    },
}

impl std::fmt::Debug for Credentials {
    // Never print a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::App {
                app_id,
                installation_id,
                ..
            } => write!(
                f,
                "App {{ app_id: {app_id}, installation_id: {installation_id:?} }}"
            ),
        }
    }
}

/// The credentials of the Secret `pipeline` names (`spec.github.secretRef`, in `ns`): `None`
/// when it names none; `Some(Err(..))` says what is missing (`NoCredentials: ...`).
pub async fn pipeline_credentials(
    client: &kube::Client,
    ns: &str,
    pipeline: &sparkwing_crds::pipeline::Pipeline,
) -> Result<Option<Result<Credentials, String>>, kube::Error> {
    let Some(secret) = pipeline.spec.github_secret() else {
        return Ok(None);
    };
    let found = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get_opt(secret)
        .await?;
    let Some(found) = found else {
        return Ok(Some(Err(format!(
            "NoCredentials: Secret {ns}/{secret} (spec.github.secretRef) not found"
        ))));
    };
    let data: BTreeMap<String, Vec<u8>> = found
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    Ok(Some(Credentials::from_secret(&data).map_err(|e| {
        format!("NoCredentials: Secret {ns}/{secret}: {e}")
    })))
}

/// Why a Secret's keys are no credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("the Secret has neither a `token` key nor `appId` and `privateKey`")]
    Missing,
    #[error("the Secret's `{0}` is not UTF-8 text")]
    NotText(&'static str),
    #[error("the Secret's `installationId` {0:?} is not a number")]
    InstallationId(String),
}

impl Credentials {
    /// Read a Secret's data: `token`, else `appId` + `privateKey` (+ `installationId`).
    pub fn from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<Credentials, CredentialsError> {
        let text = |key: &'static str| -> Result<Option<String>, CredentialsError> {
            data.get(key)
                .map(|v| {
                    String::from_utf8(v.clone())
                        .map(|s| s.trim().to_string())
                        .map_err(|_| CredentialsError::NotText(key))
                })
                .transpose()
                .map(|v| v.filter(|s| !s.is_empty()))
        };
        if let Some(token) = text("token")? {
            return Ok(Credentials::Token(token));
        }
        match (text("appId")?, text("privateKey")?) {
            (Some(app_id), Some(private_key)) => {
                let installation_id = text("installationId")?
                    .map(|s| s.parse().map_err(|_| CredentialsError::InstallationId(s)))
                    .transpose()?;
                Ok(Credentials::App {
                    app_id,
                    private_key,
                    installation_id,
                })
            }
            _ => Err(CredentialsError::Missing),
        }
    }
}

/// What a GitHub call fails with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// 401 or 403: the credentials are wrong or lack the permission (`statuses: write`).
    #[error("GitHub refused the credentials ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// Another 4xx: the request is wrong (an unknown repository or commit: 404, 422).
    #[error("GitHub rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// 5xx, 429 or no answer, still so after the retries.
    #[error("GitHub is unavailable: {0}")]
    Unavailable(String),
    /// The App's private key cannot sign.
    #[error("the GitHub App's private key: {0}")]
    Key(String),
}

impl GitHubError {
    /// Whether a later try may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, GitHubError::Unavailable(_))
    }
}

/// Retries of transient failures: `attempts` tries in all, waiting `first`, then twice as long
/// each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub attempts: u32,
    pub first: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 4,
            first: Duration::from_millis(500),
        }
    }
}

/// A GitHub REST client. Clones share its cache of App installation tokens.
#[derive(Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    api_url: String,
    backoff: Backoff,
    tokens: Arc<Mutex<TokenCache>>,
}

/// An installation token is used until this long before it expires, then minted again.
const TOKEN_REFRESH_MARGIN_S: i64 = 5 * 60;

/// App installation tokens, reused until shortly before they expire: a token lasts an hour,
/// while every commit status and pull request listing needs one.
#[derive(Default)]
struct TokenCache {
    /// (App id, repository) → its installation, once looked up.
    installations: HashMap<(String, String), u64>,
    /// (App id, installation) → token and its expiry (Unix seconds).
    tokens: HashMap<(String, u64), (String, i64)>,
}

#[derive(Serialize)]
struct AppClaims<'a> {
    iat: i64,
    exp: i64,
    iss: &'a str,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    /// RFC 3339; without it the token is not reused.
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

/// The JWT a GitHub App authenticates with: RS256, issued a minute in the past (clock drift),
/// valid for nine minutes (GitHub allows ten).
pub fn app_jwt(app_id: &str, private_key_pem: &str, now_s: i64) -> Result<String, GitHubError> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
        .map_err(|e| GitHubError::Key(e.to_string()))?;
    let claims = AppClaims {
        iat: now_s - 60,
        exp: now_s + 9 * 60,
        iss: app_id,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|e| GitHubError::Key(e.to_string()))
}

impl GitHubClient {
    /// A client of the API at `api_url` (no trailing slash needed).
    pub fn new(api_url: &str, backoff: Backoff) -> Result<GitHubClient, GitHubError> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| GitHubError::Unavailable(format!("building the HTTP client: {e}")))?;
        Ok(GitHubClient {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
            backoff,
            tokens: Arc::default(),
        })
    }

    /// Post `status` on commit `sha` of `repo` (`owner/name`).
    pub async fn post_status(
        &self,
        credentials: &Credentials,
        repo: &str,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), GitHubError> {
        let token = self.token(credentials, repo).await?;
        let body = serde_json::to_vec(status).expect("a commit status serialises");
        let posted = self
            .send(
                reqwest::Method::POST,
                &format!("/repos/{repo}/statuses/{sha}"),
                &format!("Bearer {token}"),
                Some(body),
            )
            .await
            .map(drop);
        self.refused(credentials, posted)
    }

    /// The files a pull request changes (`GET /repos/{repo}/pulls/{number}/files`, 100 a page;
    /// GitHub lists at most 3000).
    pub async fn pull_request_files(
        &self,
        credentials: &Credentials,
        repo: &str,
        number: u64,
    ) -> Result<Vec<String>, GitHubError> {
        #[derive(Deserialize)]
        struct File {
            filename: String,
        }
        let token = format!("Bearer {}", self.token(credentials, repo).await?);
        let mut files = Vec::new();
        for page in 1..=30 {
            let page = self
                .send(
                    reqwest::Method::GET,
                    &format!("/repos/{repo}/pulls/{number}/files?per_page=100&page={page}"),
                    &token,
                    None,
                )
                .await;
            let body = self.refused(credentials, page)?;
            let listed: Vec<File> = parse(&body)?;
            let last = listed.len() < 100;
            files.extend(listed.into_iter().map(|f| f.filename));
            if last {
                break;
            }
        }
        Ok(files)
    }

    /// The token of `credentials` for `repo`: the token itself, or an App installation's.
    async fn token(&self, credentials: &Credentials, repo: &str) -> Result<String, GitHubError> {
        let (app_id, key, installation) = match credentials {
            Credentials::Token(t) => return Ok(t.clone()),
            Credentials::App {
                app_id,
                private_key,
                installation_id,
            } => (app_id, private_key, *installation_id),
        };
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let known = installation.or_else(|| {
            self.cache()
                .installations
                .get(&(app_id.clone(), repo.to_string()))
                .copied()
        });
        if let Some(id) = known {
            if let Some((token, expires)) = self.cache().tokens.get(&(app_id.clone(), id)) {
                if now < expires - TOKEN_REFRESH_MARGIN_S {
                    return Ok(token.clone());
                }
            }
        }
        let jwt = format!("Bearer {}", app_jwt(app_id, key, now)?);
        let installation = match known {
            Some(id) => id,
            None => {
                let body = self
                    .send(
                        reqwest::Method::GET,
                        &format!("/repos/{repo}/installation"),
                        &jwt,
                        None,
                    )
                    .await?;
                let id = parse::<Installation>(&body)?.id;
                self.cache()
                    .installations
                    .insert((app_id.clone(), repo.to_string()), id);
                id
            }
        };
        let body = self
            .send(
                reqwest::Method::POST,
                &format!("/app/installations/{installation}/access_tokens"),
                &jwt,
                None,
            )
            .await?;
        let minted = parse::<AccessToken>(&body)?;
        let expires = minted
            .expires_at
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        if let Some(expires) = expires {
            self.cache().tokens.insert(
                (app_id.clone(), installation),
                (minted.token.clone(), expires.as_second()),
            );
        }
        Ok(minted.token)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        // A panic while holding the lock leaves a consistent map: take it anyway.
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget `credentials`' cached tokens after GitHub refused one (revoked, or the App's
    /// permissions changed): the next call mints a new one.
    fn forget(&self, credentials: &Credentials) {
        if let Credentials::App { app_id, .. } = credentials {
            self.cache().tokens.retain(|(app, _), _| app != app_id);
        }
    }

    /// `result`, forgetting the credentials' tokens when GitHub refused them.
    fn refused<T>(
        &self,
        credentials: &Credentials,
        result: Result<T, GitHubError>,
    ) -> Result<T, GitHubError> {
        if let Err(GitHubError::Unauthorized { .. }) = &result {
            self.forget(credentials);
        }
        result
    }

    /// One request, retried with backoff while GitHub is unavailable; the answer's body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, GitHubError> {
        let url = format!("{}{path}", self.api_url);
        let mut wait = self.backoff.first;
        let mut attempt = 1;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::AUTHORIZATION, authorization)
                .header(reqwest::header::ACCEPT, ACCEPT)
                .header("X-GitHub-Api-Version", API_VERSION);
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let result = match req.send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let bytes = res.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    classify(status, bytes)
                }
                Err(e) => Err(GitHubError::Unavailable(format!("{method} {path}: {e}"))),
            };
            match result {
                Err(e) if e.retryable() && attempt < self.backoff.attempts => {
                    tracing::debug!(%path, attempt, error = %e, "GitHub call failed; retrying");
                    // Backoff between tries of one call, not synchronisation.
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GitHubError> {
    serde_json::from_slice(body).map_err(|e| GitHubError::Rejected {
        status: 200,
        message: format!("unexpected answer: {e}"),
    })
}

/// GitHub's error message (`{"message": ...}`), else the body as text.
fn message_of(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    serde_json::from_slice::<Message>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(200).collect())
}

fn classify(status: u16, body: Vec<u8>) -> Result<Vec<u8>, GitHubError> {
    match status {
        200..=299 => Ok(body),
        // A rate limit is a 403 (or 429) too, but passes.
        403 if message_of(&body)
            .to_ascii_lowercase()
            .contains("rate limit") =>
        {
            Err(GitHubError::Unavailable(format!(
                "{status}: {}",
                message_of(&body)
            )))
        }
        401 | 403 => Err(GitHubError::Unauthorized {
            status,
            message: message_of(&body),
        }),
        429 | 500..=599 => Err(GitHubError::Unavailable(format!(
            "{status}: {}",
            message_of(&body)
        ))),
        _ => Err(GitHubError::Rejected {
            status,
            message: message_of(&body),
        }),
    }
}

/// `text` cut to GitHub's 140 characters (at a character boundary, with `…` when cut).
pub fn description(text: &str) -> String {
    if text.chars().count() <= DESCRIPTION_MAX {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(DESCRIPTION_MAX - 1).collect();
    cut.push('…');
    cut
}
