//! API keys for app services: what a key looks like, how a presented key is checked, and the
//! scopes it can carry. Keys are stored only as SHA-256 hashes (a key is 190 random bits, so a
//! fast hash is enough; nothing to brute-force) and compared in constant time.
//!
//! A key reads `bk_{prefix}_{secret}`: the prefix finds the row (it is stored in clear and
//! shown by `ballast keys list`), the whole key is what is hashed.

pub mod console_sessions;
pub mod operators;
pub mod store;
pub mod support;
pub mod token;

use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// What a key may do. Each route that takes a key names the one scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Scope {
    /// `usage:write`: report usage (and read it).
    UsageWrite,
    /// `usage:read`: read the current period's usage.
    UsageRead,
    /// `jobs:write`: queue jobs.
    JobsWrite,
    /// `entitlements:read`: read what a tenant may do.
    EntitlementsRead,
    /// `slo:write`: report SLI counts.
    SloWrite,
    /// `webhooks:write`: register, list, rotate and delete outbound webhook endpoints.
    WebhooksWrite,
    /// `tenants:read`: read tenants (service-wide keys only).
    TenantsRead,
    /// `tenants:write`: provision and change tenants (service-wide keys only; reads too).
    TenantsWrite,
}

impl Scope {
    /// Every scope, in the order `--help` lists them.
    pub const ALL: [Scope; 8] = [
        Scope::UsageWrite,
        Scope::UsageRead,
        Scope::JobsWrite,
        Scope::EntitlementsRead,
        Scope::SloWrite,
        Scope::WebhooksWrite,
        Scope::TenantsRead,
        Scope::TenantsWrite,
    ];

    /// The scope's name, as keys and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::UsageWrite => "usage:write",
            Scope::UsageRead => "usage:read",
            Scope::JobsWrite => "jobs:write",
            Scope::EntitlementsRead => "entitlements:read",
            Scope::SloWrite => "slo:write",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::TenantsRead => "tenants:read",
            Scope::TenantsWrite => "tenants:write",
        }
    }

    /// Whether a key holding this scope may use a route that needs `needed` (a write scope
    /// includes its read).
    pub fn grants(self, needed: Scope) -> bool {
        self == needed
            || (self == Scope::TenantsWrite && needed == Scope::TenantsRead)
            || (self == Scope::UsageWrite && needed == Scope::UsageRead)
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a comma-separated scope list; the error names the bad entry and the valid ones.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let scope = Scope::parse(part).ok_or_else(|| {
            let valid: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown scope {part:?} (valid: {})", valid.join(", "))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("at least one scope is required".into());
    }
    Ok(scopes)
}

/// What a support session may do: the tenant's read routes only.
pub const SUPPORT_SCOPES: [Scope; 2] = [Scope::EntitlementsRead, Scope::UsageRead];

/// Who a request authenticated as.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's id.
    pub key_id: uuid::Uuid,
    /// The key's tenant; `None` for a service-wide key (which names the tenant per request).
    pub tenant: Option<TenantId>,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// The key's tenant is closed: the key authenticates (so a ban still applies first) but
    /// is refused 403 at every route.
    pub tenant_closed: bool,
    /// An operator's support session rather than the tenant's key: read scopes only, every
    /// use audited with the operator's name.
    pub support: Option<support::Session>,
}

/// Why a presented key was refused. Messages are safe to return.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing API key: send Authorization: Bearer bk_…")]
    Missing,
    /// The key is not one of ours (unknown, wrong secret, revoked or malformed: one answer).
    #[error("unknown or revoked API key")]
    Unknown,
    /// A valid credential of another kind (an API key on the admin API): not a guess.
    #[error("the admin API takes an operator token (bo_…); API keys do not reach it")]
    WrongKind,
    /// The key store could not be read.
    #[error("the key store is unavailable")]
    Unavailable(#[from] sqlx::Error),
}

/// A new key: (prefix, the whole key). The whole key is shown once and never stored.
pub fn generate() -> (String, String) {
    token::generate("bk")
}

/// The stored form of a key.
pub fn hash(key: &str) -> Vec<u8> {
    token::hash(key)
}

/// The prefix of a well-formed key.
fn prefix_of(key: &str) -> Option<&str> {
    token::prefix_of("bk", key)
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: uuid::Uuid,
    tenant_id: Option<uuid::Uuid>,
    key_hash: Vec<u8>,
    scopes: Vec<String>,
    tenant_closed: bool,
}

/// The key in an `Authorization` header value, if the header is a bearer token.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks a presented key. System pool: the key decides the tenant, so it is read first.
pub async fn authenticate(pool: &SystemPool, presented: Option<&str>) -> Result<Principal, AuthError> {
    let key = presented.ok_or(AuthError::Missing)?;
    if key.starts_with("bs_") {
        let (session, tenant_closed) = support::authenticate(pool, key).await?.ok_or(AuthError::Unknown)?;
        return Ok(Principal { key_id: session.id, tenant: Some(TenantId(session.tenant_id)), scopes: SUPPORT_SCOPES.to_vec(), tenant_closed, support: Some(session) });
    }
    let prefix = prefix_of(key).ok_or(AuthError::Unknown)?;
    let row: Option<KeyRow> =
        sqlx::query_as(
            "SELECT k.id, k.tenant_id, k.key_hash, k.scopes, coalesce(t.status = 'closed', false) AS tenant_closed
             FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id WHERE k.prefix = $1 AND k.revoked_at IS NULL",
        )
            .bind(prefix)
            .fetch_optional(&pool.0)
            .await?;
    let Some(row) = row else { return Err(AuthError::Unknown) };
    if !token::matches(key, &row.key_hash) {
        return Err(AuthError::Unknown);
    }
    Ok(Principal {
        key_id: row.id,
        tenant: row.tenant_id.map(TenantId),
        scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        tenant_closed: row.tenant_closed,
        support: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_differently() {
        let (prefix, key) = generate();
        assert_eq!(prefix_of(&key), Some(prefix.as_str()));
        let (_, other) = generate();
        assert_ne!(hash(&key), hash(&other));
        assert_eq!(prefix_of("bk_short_x"), None);
        assert_eq!(prefix_of(&key.replace("bk_", "xx_")), None);
    }

    #[test]
    fn scopes_parse_with_a_clear_error() {
        assert_eq!(parse_scopes("usage:write, jobs:write").expect("ok"), vec![Scope::UsageWrite, Scope::JobsWrite]);
        let e = parse_scopes("usage:write,admin").expect_err("bad");
        assert!(e.contains("\"admin\"") && e.contains("entitlements:read"), "{e}");
        assert!(parse_scopes("").is_err());
    }

    #[test]
    fn bearer_takes_the_token() {
        assert_eq!(bearer(Some("Bearer bk_x")), Some("bk_x"));
        assert_eq!(bearer(Some("bearer  bk_x ")), Some("bk_x"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
