//! `/api/v1/admin/tokens` and `/api/v1/whoami`.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/admin/tokens`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub principal: String,
    pub scopes: Vec<String>,
}

/// What the API shows of a token: never its secret or hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub principal: String,
    pub scopes: Vec<String>,
    /// RFC 3339.
    pub created: String,
    pub revoked: bool,
}

/// A new token: its secret, shown once, and its record.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// `GET /api/v1/admin/tokens`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// `GET /api/v1/whoami`: who the token is (`token` is its id, not its secret).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WhoAmI {
    pub principal: String,
    pub token: String,
    pub scopes: Vec<String>,
}
