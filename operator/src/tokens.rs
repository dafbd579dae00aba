//! The API's token table: minting, looking up, revoking and forgetting bearer tokens, on the
//! metadata store ([`Store`]). The API's authentication (`api/auth.rs`) and the pool controller
//! (`pool_token.rs`, which mints pool tokens) both use it; neither imports the other.
//!
//! A token is `swt_<64 hex>` (people and services) or `swr_<64 hex>` (a run's runner, a pool's
//! warm runners), 32 random bytes. Only its sha256 is stored (the metadata store's token table,
//! `docs/state.md`), with an id (12 hex, for list and revoke), the principal, scopes, creation
//! time, a revoked flag and, for a runner token, its run. Every request looks the hash up in the
//! store (no copy in the process), so a revocation applies to the next request on every replica.

use sparkwing_api::scopes::Scope;
use sparkwing_api::wire::TokenInfo;
use sparkwing_core::upload_manifest::sha256_hex;
use sparkwing_state::{RunKey, StateError, TokenRecord};

use crate::store::Store;

/// A time in Unix ms as RFC 3339.
pub fn rfc3339_of_ms(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// What the list endpoint shows of a record.
pub fn token_info(r: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: r.id.clone(),
        principal: r.principal.clone(),
        scopes: r.scopes.clone(),
        created: rfc3339_of_ms(r.created_ms),
        revoked: r.revoked,
    }
}

/// What a runner token carries besides its `run:` scope.
#[derive(Clone, Debug, Default)]
pub struct RunnerGrant {
    /// The id of the run's uploaded source, if its source is an upload.
    pub upload: Option<String>,
    /// A pool token's RunnerPool uid.
    pub pool_uid: Option<String>,
}

/// Why a token could not be made or kept.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no randomness: {0}")]
    Random(String),
}

fn random_hex(bytes: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

/// The token table, kept by the metadata store.
impl Store {
    /// Make a token; returns it (shown once) and its record.
    pub async fn create_token(
        &self,
        principal: &str,
        scopes: Vec<String>,
        runner: Option<RunnerGrant>,
    ) -> Result<(String, TokenRecord), TokenError> {
        let token = format!(
            "{}_{}",
            if runner.is_some() { "swr" } else { "swt" },
            random_hex(32)?
        );
        let run = scopes.iter().find_map(|s| match Scope::parse(s)? {
            Scope::Run { namespace, name } => Some(RunKey::new(namespace, name)),
            _ => None,
        });
        let rec = TokenRecord {
            id: random_hex(6)?,
            hash: sha256_hex(token.as_bytes()),
            principal: principal.to_string(),
            scopes,
            created_ms: now_ms(),
            expires_ms: None,
            revoked: false,
            run,
            upload: runner.as_ref().and_then(|r| r.upload.clone()),
            pool_uid: runner.and_then(|r| r.pool_uid),
        };
        self.meta.insert_token(&rec).await?;
        Ok((token, rec))
    }

    /// Register the bootstrap admin token (from a file) unless its hash is already known; a
    /// bootstrap token revoked through the API stays revoked.
    pub async fn ensure_bootstrap(&self, token: &str) -> Result<bool, TokenError> {
        let hash = sha256_hex(token.as_bytes());
        if self.meta.find_token_by_hash(&hash).await?.is_some() {
            return Ok(false);
        }
        let rec = TokenRecord {
            id: random_hex(6)?,
            hash,
            principal: "bootstrap-admin".into(),
            scopes: vec!["admin".into()],
            created_ms: now_ms(),
            expires_ms: None,
            revoked: false,
            run: None,
            upload: None,
            pool_uid: None,
        };
        self.meta.insert_token(&rec).await?;
        Ok(true)
    }

    /// The live record of `token`, if any.
    pub async fn lookup_token(&self, token: &str) -> Result<Option<TokenRecord>, StateError> {
        let hash = sha256_hex(token.as_bytes());
        Ok(self
            .meta
            .find_token_by_hash(&hash)
            .await?
            .filter(|t| !t.revoked))
    }

    /// The live record of `token` when it holds `scope`.
    pub async fn lookup_scoped(
        &self,
        token: &str,
        scope: &str,
    ) -> Result<Option<TokenRecord>, StateError> {
        Ok(self
            .lookup_token(token)
            .await?
            .filter(|r| r.scopes.iter().any(|s| s == scope)))
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StateError> {
        Ok(self
            .meta
            .list_tokens()
            .await?
            .iter()
            .map(token_info)
            .collect())
    }

    /// Revoke by id: people's and services' tokens are kept, marked revoked; runner and pool
    /// tokens are forgotten. `Ok(false)`: no such token.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StateError> {
        let Some(rec) = self
            .meta
            .list_tokens()
            .await?
            .into_iter()
            .find(|r| r.id == id)
        else {
            return Ok(false);
        };
        if server_minted(&rec) {
            self.meta.delete_token(id).await
        } else {
            // The dashboard sessions it opened end with it.
            self.meta.delete_token_sessions(id).await?;
            self.meta.revoke_token(id).await
        }
    }

    /// Forget the runner tokens of the run `ns/name` (it ended, or was never created).
    pub async fn forget_run_tokens(&self, ns: &str, name: &str) -> Result<u64, StateError> {
        self.meta.delete_run_tokens(&RunKey::new(ns, name)).await
    }

    /// Forget every server-minted token holding exactly `scope` (a pool's); how many.
    pub async fn forget_scope(&self, scope: &str) -> Result<usize, StateError> {
        let mut n = 0;
        for r in self.meta.list_tokens().await? {
            if server_minted(&r) && r.scopes.iter().any(|s| s == scope) {
                n += usize::from(self.meta.delete_token(&r.id).await?);
            }
        }
        Ok(n)
    }
}

/// A runner or pool token: minted by the server for a run or a pool, never by an admin.
pub fn server_minted(r: &TokenRecord) -> bool {
    !r.scopes.is_empty()
        && r.scopes
            .iter()
            .all(|s| s.starts_with("run:") || s.starts_with("pool:"))
}

/// The run a runner token is for: its `run:<ns>/<name>` scope.
pub fn token_run(r: &TokenRecord) -> Option<(String, String)> {
    r.scopes.iter().find_map(|s| match Scope::parse(s)? {
        Scope::Run { namespace, name } => Some((namespace, name)),
        _ => None,
    })
}
