//! Creating, listing and revoking keys (the `ballast keys` commands). System pool: keys are
//! managed by operators across tenants, and service-wide keys belong to no tenant. Every
//! change is written to the audit log in the same transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Scope;
use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The tenant does not exist.
    #[error("no tenant {0}")]
    NoTenant(TenantId),
    /// No such key.
    #[error("no API key {0}")]
    NoKey(uuid::Uuid),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    /// Id (for revoke).
    pub id: uuid::Uuid,
    /// Tenant, or none for a service-wide key.
    pub tenant_id: Option<uuid::Uuid>,
    /// A name for people.
    pub name: String,
    /// The public part of the key (`bk_{prefix}_…`).
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Revoked, if it is.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A created key: the only time the whole key exists outside the caller's hands.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    /// The stored record.
    pub info: KeyInfo,
    /// The key, to hand to the app service.
    pub key: String,
}

/// Creates a key.
pub async fn create(
    pool: &SystemPool,
    tenant: Option<TenantId>,
    scopes: &[Scope],
    name: &str,
    actor: &str,
) -> Result<CreatedKey, KeyStoreError> {
    let mut tx = pool.0.begin().await?;
    if let Some(t) = tenant {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1").bind(t.0).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Err(KeyStoreError::NoTenant(t));
        }
    }
    let (prefix, key) = super::generate();
    let scope_names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let info: KeyInfo = sqlx::query_as(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, tenant_id, name, prefix, scopes, created_at, revoked_at",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(tenant.map(|t| t.0))
    .bind(name)
    .bind(&prefix)
    .bind(super::hash(&key))
    .bind(&scope_names)
    .fetch_one(&mut *tx)
    .await?;
    crate::audit::record(&mut tx, tenant, actor, "keys.create", serde_json::json!({"key_id": info.id, "name": name, "scopes": scope_names}), crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok(CreatedKey { info, key })
}

/// Lists keys, newest first, optionally of one tenant.
pub async fn list(pool: &SystemPool, tenant: Option<TenantId>) -> Result<Vec<KeyInfo>, KeyStoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, name, prefix, scopes, created_at, revoked_at FROM api_keys
         WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY created_at DESC",
    )
    .bind(tenant.map(|t| t.0))
    .fetch_all(&pool.0)
    .await?)
}

/// Revokes a key; revoking a revoked key is a no-op that still succeeds.
pub async fn revoke(pool: &SystemPool, id: uuid::Uuid, actor: &str) -> Result<KeyInfo, KeyStoreError> {
    let mut tx = pool.0.begin().await?;
    let info: Option<KeyInfo> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
         RETURNING id, tenant_id, name, prefix, scopes, created_at, revoked_at",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let info = info.ok_or(KeyStoreError::NoKey(id))?;
    crate::audit::record(&mut tx, info.tenant_id.map(TenantId), actor, "keys.revoke", serde_json::json!({"key_id": id}), crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok(info)
}
