//! The pool credential of warm runners: a Secret `<pool>-pool-token` (key `token`, owned by the
//! RunnerPool) holding a token whose single scope is `pool:<ns>/<pool>`, minted into the
//! API's token table (its metadata store). Warm pods read it as `SPARKWING_POOL_TOKEN` and, once claimed, trade it
//! at the API for the run's runner token (`POST /api/v1/pools/{ns}/{pool}/claims`): warm runners
//! need no Kubernetes RBAC.
//!
//! Observe (the Secret, the token's record) → decide ([`decide`], pure) → apply (mint, write).
//! The pool controller does this before it creates warm pods, so their `secretKeyRef` resolves.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use sparkwing_api::scopes::Scope;
use sparkwing_crds::RunnerPool;

use crate::error::{is_already_exists, is_conflict, Error, Result};
use crate::labels::{MANAGED_BY, MANAGED_BY_VALUE, POOL};
use crate::runner_job::{controller_ref, pool_token_secret, RUNNER_TOKEN_KEY};
use crate::status::FIELD_MANAGER;
use crate::tokens::RunnerGrant;

/// Where pool tokens are minted: the API's token table.
#[derive(Clone)]
pub struct PoolTokens {
    pub store: crate::store::Store,
}

/// What to do about a pool's Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolTokenAction {
    /// The Secret holds a live token of the pool's scope.
    Keep,
    /// No Secret: mint a token and create it.
    Create,
    /// A Secret whose token is missing, revoked or of another scope (the API's data directory
    /// was reset, say): revoke the pool's old tokens, mint one and replace the Secret's data.
    Replace,
}

/// The decision (pure): `secret_exists`, and whether the token it holds is live with the pool's
/// scope.
pub fn decide(secret_exists: bool, token_live: bool) -> PoolTokenAction {
    match (secret_exists, token_live) {
        (false, _) => PoolTokenAction::Create,
        (true, true) => PoolTokenAction::Keep,
        (true, false) => PoolTokenAction::Replace,
    }
}

/// The token a Secret holds under `token`.
pub fn secret_token(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(RUNNER_TOKEN_KEY))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(RUNNER_TOKEN_KEY).cloned())
        })
        .filter(|t| !t.is_empty())
}

/// The Secret of `pool` holding `token` (pure).
pub fn build_secret(pool: &RunnerPool, token: &str) -> Result<Secret> {
    let name = pool.name_any();
    let namespace = pool.namespace().ok_or(Error::MissingObjectKey {
        kind: "RunnerPool",
        field: "metadata.namespace",
    })?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(pool_token_secret(&name)),
            namespace: Some(namespace),
            owner_references: controller_ref(pool).map(|r| vec![r]),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
                (POOL.to_string(), crate::labels::label_value(&name)),
            ])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            RUNNER_TOKEN_KEY.to_string(),
            token.to_string(),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    })
}

/// Make sure `pool`'s Secret holds a live pool token. Returns what was done.
pub async fn ensure(
    client: &kube::Client,
    pool: &RunnerPool,
    minter: &PoolTokens,
) -> Result<PoolTokenAction> {
    let name = pool.name_any();
    let namespace = pool.namespace().ok_or(Error::MissingObjectKey {
        kind: "RunnerPool",
        field: "metadata.namespace",
    })?;
    let scope = Scope::pool(&namespace, &name).to_string();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret_name = pool_token_secret(&name);
    let existing = secrets.get_opt(&secret_name).await?;
    let uid = pool.uid().ok_or(Error::MissingObjectKey {
        kind: "RunnerPool",
        field: "metadata.uid",
    })?;
    // Live, of this pool's scope, and minted for this pool (not a deleted one of the same name).
    let live = match existing.as_ref().and_then(secret_token) {
        None => false,
        Some(t) => minter
            .store
            .lookup_scoped(&t, &scope)
            .await
            .map_err(|e| Error::PoolToken {
                pool: format!("{namespace}/{name}"),
                message: e.to_string(),
            })?
            .is_some_and(|r| r.pool_uid.as_deref() == Some(uid.as_str())),
    };
    let action = decide(existing.is_some(), live);
    if action == PoolTokenAction::Keep {
        return Ok(action);
    }
    let grant = RunnerGrant {
        upload: None,
        pool_uid: Some(uid),
    };
    let pool_error = |message: String| Error::PoolToken {
        pool: format!("{namespace}/{name}"),
        message,
    };
    // One live token per pool: older ones (in a Secret that lost them) are forgotten.
    minter
        .store
        .forget_scope(&scope)
        .await
        .map_err(|e| pool_error(e.to_string()))?;
    let (token, _) = minter
        .store
        .create_token(&scope, vec![scope.clone()], Some(grant))
        .await
        .map_err(|e| pool_error(e.to_string()))?;
    let mut secret = build_secret(pool, &token)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match (action, existing) {
        (PoolTokenAction::Replace, Some(old)) => {
            secret.metadata.resource_version = old.metadata.resource_version.clone();
            secret.metadata.uid = old.metadata.uid.clone();
            match secrets.replace(&secret_name, &params, &secret).await {
                Ok(_) => {}
                // Changed meanwhile: the next reconcile looks again.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        _ => match secrets.create(&params, &secret).await {
            Ok(_) => {}
            Err(e) if is_already_exists(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        },
    }
    tracing::info!(pool = %format!("{namespace}/{name}"), ?action, "pool token written");
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert_eq!(decide(false, false), PoolTokenAction::Create);
        assert_eq!(decide(true, true), PoolTokenAction::Keep);
        assert_eq!(decide(true, false), PoolTokenAction::Replace);
    }

    #[test]
    fn the_secret_is_owned_by_the_pool_and_holds_the_token() {
        let pool = RunnerPool::test("fast");
        let s = build_secret(&pool, "swr_abc").unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("fast-pool-token"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("default"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("RunnerPool", Some(true))
        );
        assert_eq!(secret_token(&s).as_deref(), Some("swr_abc"));
        let mut read = s.clone();
        read.string_data = None;
        read.data = Some(BTreeMap::from([(
            "token".to_string(),
            k8s_openapi::ByteString(b"swr_def\n".to_vec()),
        )]));
        assert_eq!(secret_token(&read).as_deref(), Some("swr_def"));
    }
}
