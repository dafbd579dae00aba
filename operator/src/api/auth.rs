//! Bearer tokens and scopes.
//!
//! A token is `swt_<64 hex>` (people and services) or `swr_<64 hex>` (a run's runner), 32 random
//! bytes. Only its sha256 is stored (`tokens.json` in the data directory, rewritten atomically on
//! every change), with an id (12 hex, for list and revoke), the principal, scopes, creation time
//! and a revoked flag. Every request looks the hash up in memory, so a revocation applies to the
//! next request.
//!
//! Scopes: `runs:read` (list and read runs and logs), `runs:trigger` (upload sources, trigger and
//! cancel runs), `admin` (everything, plus tokens and GC), `run:<ns>/<name>`, held only by the
//! runner token minted for that run: read that run's upload, post its logs and job states, and
//! `pool:<ns>/<pool>`, held only by a RunnerPool's pool token: exchange it, for a warm pod of that
//! pool claimed by a run, for that run's runner token (`POST /api/v1/pools/{ns}/{pool}/claims`).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use super::manifest::sha256_hex;
use super::storage::{Storage, StorageError, TokenJournal, TokenOp};
use super::ApiState;

// Scopes are part of the API's contract: one definition, in `sparkwing-api`.
pub use sparkwing_api::scopes::{Scope, GRANTABLE_SCOPES};

/// A stored token (kept by the storage layer, which owns its records).
pub use super::storage::TokenRecord;

/// What the list endpoint shows of a token.
pub use sparkwing_api::wire::TokenInfo;

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        TokenInfo {
            id: r.id.clone(),
            principal: r.principal.clone(),
            scopes: r.scopes.clone(),
            created: r.created.clone(),
            revoked: r.revoked,
        }
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

/// The token table: in memory (looked up by hash, never locked during disk IO), persisted as
/// a snapshot and a journal of changes ([`TokenJournal`]). Writers are serialized by the
/// journal's lock and do disk IO: call them from blocking threads.
pub struct TokenStore {
    table: RwLock<Table>,
    journal: Mutex<TokenJournal>,
}

/// The records, by id in creation order, and an index by hash.
#[derive(Default)]
struct Table {
    records: Vec<TokenRecord>,
    by_hash: HashMap<String, usize>,
}

impl Table {
    fn new(records: Vec<TokenRecord>) -> Table {
        let mut t = Table {
            records,
            by_hash: HashMap::new(),
        };
        t.reindex();
        t
    }

    fn reindex(&mut self) {
        self.by_hash = self
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.hash.clone(), i))
            .collect();
    }

    fn apply(&mut self, ops: Vec<TokenOp>) {
        let removes = ops.iter().any(|o| matches!(o, TokenOp::Remove(_)));
        for op in ops {
            match op {
                TokenOp::Add(rec) if !self.by_hash.contains_key(&rec.hash) => {
                    self.by_hash.insert(rec.hash.clone(), self.records.len());
                    self.records.push(rec);
                }
                op => storage_tokens_apply(&mut self.records, op),
            }
        }
        if removes {
            self.reindex();
        }
    }
}

use super::storage::tokens_apply as storage_tokens_apply;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no randomness: {0}")]
    Random(String),
    #[error("token lock poisoned")]
    Poisoned,
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Storage(s) => ApiError::Storage(s),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn random_hex(bytes: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// The current time, RFC 3339.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl TokenStore {
    /// Load the table from the data directory (none yet: empty).
    pub fn open(storage: &Storage) -> Result<Self, TokenError> {
        let (records, journal) = storage.open_tokens()?;
        Ok(TokenStore {
            table: RwLock::new(Table::new(records)),
            journal: Mutex::new(journal),
        })
    }

    /// Write `ops` (computed from the table under the journal's lock, so no other writer
    /// interleaves), then apply them in memory; compact when the journal grew.
    fn write(
        &self,
        storage: &Storage,
        ops: impl FnOnce(&Table) -> Vec<TokenOp>,
    ) -> Result<usize, TokenError> {
        let mut journal = self.journal.lock().map_err(|_| TokenError::Poisoned)?;
        let ops = ops(&*self.table.read().map_err(|_| TokenError::Poisoned)?);
        let n = ops.len();
        if n == 0 {
            return Ok(0);
        }
        // People's and services' tokens change rarely (an admin's request): those changes go to
        // the snapshot at once, so `tokens.json` always names every one of them. Runner and
        // pool tokens (one per run) only append to the journal.
        let people = ops.iter().any(|op| match op {
            TokenOp::Add(r) => !server_minted(r),
            TokenOp::Revoke(_) => true,
            TokenOp::Remove(_) => false,
        });
        journal.append(&ops)?;
        let live = {
            let mut table = self.table.write().map_err(|_| TokenError::Poisoned)?;
            table.apply(ops);
            table.records.len()
        };
        if people || journal.wants_compaction(live) {
            let records = self
                .table
                .read()
                .map_err(|_| TokenError::Poisoned)?
                .records
                .clone();
            journal.compact(storage, &records)?;
        }
        Ok(n)
    }

    /// Make a token; returns it (shown once) and its record.
    pub fn create(
        &self,
        storage: &Storage,
        principal: &str,
        scopes: Vec<String>,
        runner: Option<RunnerGrant>,
    ) -> Result<(String, TokenRecord), TokenError> {
        let token = format!(
            "{}_{}",
            if runner.is_some() { "swr" } else { "swt" },
            random_hex(32)?
        );
        let rec = TokenRecord {
            id: random_hex(6)?,
            hash: sha256_hex(token.as_bytes()),
            principal: principal.to_string(),
            scopes,
            created: now_rfc3339(),
            revoked: false,
            upload: runner.as_ref().and_then(|r| r.upload.clone()),
            pool_uid: runner.and_then(|r| r.pool_uid),
        };
        let add = rec.clone();
        self.write(storage, |_| vec![TokenOp::Add(add)])?;
        Ok((token, rec))
    }

    /// Register the bootstrap admin token (from a file) unless its hash is already known; a
    /// bootstrap token revoked through the API stays revoked.
    pub fn ensure_bootstrap(&self, storage: &Storage, token: &str) -> Result<bool, TokenError> {
        let hash = sha256_hex(token.as_bytes());
        let rec = TokenRecord {
            id: random_hex(6)?,
            hash: hash.clone(),
            principal: "bootstrap-admin".into(),
            scopes: vec!["admin".into()],
            created: now_rfc3339(),
            revoked: false,
            upload: None,
            pool_uid: None,
        };
        let n = self.write(storage, |t| {
            if t.by_hash.contains_key(&hash) {
                Vec::new()
            } else {
                vec![TokenOp::Add(rec)]
            }
        })?;
        Ok(n > 0)
    }

    /// The live record of `token`, if any: a hash lookup in memory.
    pub fn lookup(&self, token: &str) -> Option<TokenRecord> {
        let hash = sha256_hex(token.as_bytes());
        let table = self.table.read().ok()?;
        table
            .by_hash
            .get(&hash)
            .map(|i| &table.records[*i])
            .filter(|t| !t.revoked)
            .cloned()
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let table = self.table.read().map_err(|_| TokenError::Poisoned)?;
        Ok(table.records.iter().map(TokenInfo::from).collect())
    }

    /// Hold the writers' lock, as a slow disk write would (tests: lookups must not wait on it).
    #[cfg(test)]
    pub(crate) fn hold_writes(&self) -> std::sync::MutexGuard<'_, TokenJournal> {
        self.journal.lock().unwrap()
    }

    /// Every record (tests, the runner token sweep).
    pub fn records(&self) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self
            .table
            .read()
            .map_err(|_| TokenError::Poisoned)?
            .records
            .clone())
    }

    /// Revoke by id. `Ok(false)`: no such token.
    pub fn revoke(&self, storage: &Storage, id: &str) -> Result<bool, TokenError> {
        let mut found = false;
        self.write(storage, |t| {
            match t.records.iter().find(|r| r.id == id) {
                Some(r) => {
                    found = true;
                    if r.revoked || server_minted(r) {
                        // Runner and pool tokens are forgotten rather than kept revoked.
                        if server_minted(r) {
                            return vec![TokenOp::Remove(id.to_string())];
                        }
                        return Vec::new();
                    }
                    vec![TokenOp::Revoke(id.to_string())]
                }
                None => Vec::new(),
            }
        })?;
        Ok(found)
    }

    /// The live record of `token` when it holds `scope`.
    pub fn lookup_scoped(&self, token: &str, scope: &str) -> Option<TokenRecord> {
        self.lookup(token)
            .filter(|r| r.scopes.iter().any(|s| s == scope))
    }

    /// Expire every token holding exactly `scope` (a run's runner tokens, a pool's): their
    /// records are removed, so the table does not grow with every run.
    pub fn revoke_scope(&self, storage: &Storage, scope: &str) -> Result<usize, TokenError> {
        self.remove_where(storage, |t| t.scopes.iter().any(|s| s == scope))
    }

    /// Remove the records of server-minted tokens (runner, pool) that `pred` picks.
    pub fn remove_where(
        &self,
        storage: &Storage,
        pred: impl Fn(&TokenRecord) -> bool,
    ) -> Result<usize, TokenError> {
        self.write(storage, |t| {
            t.records
                .iter()
                .filter(|r| server_minted(r) && pred(r))
                .map(|r| TokenOp::Remove(r.id.clone()))
                .collect()
        })
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

/// The token of an `Authorization` value `Bearer <token>`: the scheme is case-insensitive (RFC
/// 9110 §11.1), so `bearer` and `BEARER` are accepted too.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub token_id: String,
    pub scopes: Vec<Scope>,
    /// The upload a runner token may read.
    pub upload: Option<String>,
    /// The RunnerPool uid a pool token was minted for.
    pub pool_uid: Option<String>,
}

impl Principal {
    pub fn has(&self, scope: &Scope) -> bool {
        self.scopes.iter().any(|s| s == scope || *s == Scope::Admin)
    }

    /// 403 naming `scope` unless the caller has it (or admin).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(&scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope))
        }
    }

    /// Readers of runs, and the run's own runner.
    pub fn require_read_run(&self, ns: &str, name: &str) -> Result<(), ApiError> {
        if self.has(&Scope::run(ns, name)) {
            return Ok(());
        }
        self.require(Scope::RunsRead)
    }

    /// The run a runner token belongs to.
    pub fn runner_of(&self) -> Option<(&str, &str)> {
        self.scopes.iter().find_map(|s| match s {
            Scope::Run { namespace, name } => Some((namespace.as_str(), name.as_str())),
            _ => None,
        })
    }
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized)?;
        let rec = state.tokens.lookup(token).ok_or(ApiError::Unauthorized)?;
        Ok(Principal {
            name: rec.principal,
            token_id: rec.id,
            scopes: rec.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            upload: rec.upload,
            pool_uid: rec.pool_uid,
        })
    }
}
