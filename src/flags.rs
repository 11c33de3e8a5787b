//! Feature flags: product switches in the `feature_flags` table, each on for a share of tenants
//! (`rollout_percent`). A tenant's answer is a stable hash of (flag, tenant), so it does not
//! flicker between members or requests, and raising the share only adds tenants. The whole set
//! is cached (long TTL) and `ballast flags set` invalidates it after its commit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::{Cache, CacheError};
use crate::db::SystemPool;
use crate::newtypes::TenantId;
use crate::redis_keys::FEATURE_FLAGS;

/// A flag change that was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// The request is not valid; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

/// One flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Flag {
    /// `[a-z][a-z0-9_.-]*`, at most 63 characters.
    pub name: String,
    /// What it switches, for people.
    pub description: String,
    /// Off for everyone when false.
    pub enabled: bool,
    /// The share of tenants it is on for when enabled (0–100).
    pub rollout_percent: i16,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who made it.
    pub updated_by: String,
}

impl Flag {
    /// Whether the flag is on for `tenant`.
    pub fn is_on_for(&self, tenant: TenantId) -> bool {
        self.enabled && (self.rollout_percent >= 100 || i16::from(bucket(&self.name, tenant)) < self.rollout_percent)
    }
}

/// The tenant's bucket (0–99) for a flag: the first 8 bytes of SHA-256 of `flag:tenant`.
fn bucket(flag: &str, tenant: TenantId) -> u8 {
    let digest = Sha256::digest(format!("{flag}:{}", tenant.0).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below 100, so the conversion cannot fail.
    u8::try_from(u64::from_be_bytes(first) % 100).unwrap_or(0)
}

/// Every flag, by name, from PostgreSQL.
pub async fn list(pool: &sqlx::PgPool) -> Result<Vec<Flag>, sqlx::Error> {
    sqlx::query_as("SELECT name, description, enabled, rollout_percent, updated_at, updated_by FROM feature_flags ORDER BY name")
        .fetch_all(pool)
        .await
}

/// Every flag through the cache. The app role reads the table: it is global, not tenant data.
pub async fn cached(cache: &Cache, pool: &sqlx::PgPool) -> Result<Vec<Flag>, CacheError> {
    let pool = pool.clone();
    cache.get(&FEATURE_FLAGS, cache.keys().feature_flags(), move || async move { list(&pool).await }).await
}

/// What `ballast flags set` changes; `None` keeps the current value (or the default for a new
/// flag: off, 100 %, no description).
#[derive(Debug, Clone, Default)]
pub struct FlagChange {
    /// On or off.
    pub enabled: Option<bool>,
    /// Share of tenants, 0–100.
    pub rollout_percent: Option<u8>,
    /// What it switches.
    pub description: Option<String>,
}

/// Creates or changes a flag, audited, then invalidates the cached set so every member's next
/// read sees it.
pub async fn set(system: &SystemPool, cache: &Cache, name: &str, change: FlagChange, actor: &str) -> Result<Flag, FlagError> {
    let valid_name = name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if !valid_name {
        return Err(FlagError::Invalid(format!("flag name {name:?}: use a-z, 0-9, '_', '.', '-' (start with a letter, at most 63)")));
    }
    if change.rollout_percent.is_some_and(|p| p > 100) {
        return Err(FlagError::Invalid("--rollout is a percentage: 0 to 100".into()));
    }
    let mut tx = system.0.begin().await?;
    let flag: Flag = sqlx::query_as(
        "INSERT INTO feature_flags (name, description, enabled, rollout_percent, updated_by)
         VALUES ($1, COALESCE($2, ''), COALESCE($3, false), COALESCE($4, 100), $5)
         ON CONFLICT (name) DO UPDATE SET
             description = COALESCE($2, feature_flags.description),
             enabled = COALESCE($3, feature_flags.enabled),
             rollout_percent = COALESCE($4, feature_flags.rollout_percent),
             updated_at = now(), updated_by = $5
         RETURNING name, description, enabled, rollout_percent, updated_at, updated_by",
    )
    .bind(name)
    .bind(change.description.as_deref())
    .bind(change.enabled)
    .bind(change.rollout_percent.map(i16::from))
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    let params = serde_json::json!({"flag": name, "enabled": flag.enabled, "rollout_percent": flag.rollout_percent});
    crate::audit::record(&mut tx, None, actor, "flags.set", params, crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    if let Err(e) = cache.invalidate(&[cache.keys().feature_flags()]).await {
        tracing::warn!(message = "Flag cache invalidation failed; members see the change within the TTL.", error = %e);
    }
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(enabled: bool, rollout: i16) -> Flag {
        Flag { name: "new-editor".into(), description: String::new(), enabled, rollout_percent: rollout, updated_at: Utc::now(), updated_by: "t".into() }
    }

    #[test]
    fn rollout_is_stable_and_grows_monotonically() {
        let tenants: Vec<TenantId> = (0..1000).map(|_| TenantId(uuid::Uuid::new_v4())).collect();
        let on = |f: &Flag| tenants.iter().filter(|t| f.is_on_for(**t)).count();
        assert_eq!(on(&flag(true, 100)), 1000);
        assert_eq!(on(&flag(false, 100)), 0);
        assert_eq!(on(&flag(true, 0)), 0);
        let quarter = on(&flag(true, 25));
        assert!((150..350).contains(&quarter), "about a quarter: {quarter}");
        // Every tenant on at 25 % is still on at 50 %.
        for t in &tenants {
            if flag(true, 25).is_on_for(*t) {
                assert!(flag(true, 50).is_on_for(*t));
            }
        }
    }
}
