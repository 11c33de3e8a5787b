//! Overrides: an operator's exception to what billing grants one tenant — a feature granted or
//! revoked, a feature's limit, a usage metric's monthly limit — with a reason and an expiry (or
//! none). This module owns `entitlement_overrides`: setting one ends the live one it replaces,
//! and every set, revoke and expiry is audited with who and why. Entitlement reads layer the
//! live overrides over the billed grants (`entitlements::load`), each until its own end.

use chrono::{DateTime, Utc};

use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// What an override decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverrideKind {
    /// The feature is on, whatever the plan says.
    Grant,
    /// The feature is off, whatever the plan says.
    Revoke,
    /// The feature's numeric limit.
    FeatureLimit,
    /// A usage metric's monthly limit.
    UsageLimit,
}

impl OverrideKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideKind::Grant => "grant",
            OverrideKind::Revoke => "revoke",
            OverrideKind::FeatureLimit => "feature_limit",
            OverrideKind::UsageLimit => "usage_limit",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [OverrideKind::Grant, OverrideKind::Revoke, OverrideKind::FeatureLimit, OverrideKind::UsageLimit].into_iter().find(|k| k.as_str() == s)
    }

    /// The kinds one live override of this kind replaces: grant and revoke decide the same
    /// switch.
    fn replaces(self) -> &'static [&'static str] {
        match self {
            OverrideKind::Grant | OverrideKind::Revoke => &["grant", "revoke"],
            OverrideKind::FeatureLimit => &["feature_limit"],
            OverrideKind::UsageLimit => &["usage_limit"],
        }
    }
}

/// One override, as stored and listed.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Override {
    /// Id (for revoke).
    pub id: uuid::Uuid,
    /// The tenant.
    pub tenant_id: uuid::Uuid,
    /// `grant`, `revoke`, `feature_limit` or `usage_limit`.
    pub kind: String,
    /// The feature, or the usage metric.
    pub target: String,
    /// The limit it sets.
    pub value: Option<i64>,
    /// Why (from the operator).
    pub reason: String,
    /// When it ends by itself; none: until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was set.
    pub created_at: DateTime<Utc>,
    /// Who set it.
    pub created_by: String,
    /// When it ended: revoked, replaced or expired.
    pub ended_at: Option<DateTime<Utc>>,
    /// Who ended it (`expiry` when it ran out).
    pub ended_by: Option<String>,
}

impl Override {
    /// Its kind.
    pub fn kind(&self) -> Option<OverrideKind> {
        OverrideKind::parse(&self.kind)
    }
}

/// An override to set.
#[derive(Debug, Clone)]
pub struct NewOverride<'a> {
    /// What it decides.
    pub kind: OverrideKind,
    /// The feature or metric.
    pub target: &'a str,
    /// The limit (feature_limit, usage_limit).
    pub value: Option<i64>,
    /// Why.
    pub reason: &'a str,
    /// When it ends by itself.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why an override was refused. Messages are safe to show.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// The request does not hold together.
    #[error("{0}")]
    Invalid(String),
    /// No such tenant.
    #[error("no tenant {0}")]
    NoTenant(TenantId),
    /// No such live override of the tenant.
    #[error("no live override {0} of this tenant")]
    NoOverride(uuid::Uuid),
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

const COLUMNS: &str = "id, tenant_id, kind, target, value, reason, expires_at, created_at, created_by, ended_at, ended_by";

/// Checks an override against the catalogue (`features`, `metrics`) and the clock.
pub fn check(new: &NewOverride<'_>, features: &[&str], metrics: &[&str], now: DateTime<Utc>) -> Result<(), OverrideError> {
    let bad = |m: String| Err(OverrideError::Invalid(m));
    let known = if new.kind == OverrideKind::UsageLimit { metrics } else { features };
    if !known.contains(&new.target) {
        let what = if new.kind == OverrideKind::UsageLimit { "usage metric" } else { "feature" };
        return bad(format!("{:?} is no {what} of the plan catalogue (there are: {})", new.target, known.join(", ")));
    }
    match (new.kind, new.value) {
        (OverrideKind::FeatureLimit | OverrideKind::UsageLimit, None) => return bad(format!("a {} needs a value", new.kind.as_str())),
        (OverrideKind::Grant | OverrideKind::Revoke, Some(_)) => return bad(format!("a {} takes no value", new.kind.as_str())),
        (_, Some(v)) if v < 0 => return bad("a limit is 0 or more".into()),
        _ => {}
    }
    let reason = new.reason.trim();
    if reason.len() < 3 || reason.len() > 500 {
        return bad("a reason of 3 to 500 characters is required (it is kept with the override and in the audit log)".into());
    }
    if new.expires_at.is_some_and(|t| t <= now) {
        return bad("the expiry is in the past".into());
    }
    Ok(())
}

/// Sets an override for `tenant`, ending the live one it replaces; audited as `by`. The caller
/// invalidates the tenant's cached entitlements after.
pub async fn set(pool: &SystemPool, tenant: TenantId, new: &NewOverride<'_>, by: &str) -> Result<Override, OverrideError> {
    let mut tx = pool.0.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(tenant.0).fetch_one(&mut *tx).await?;
    if !exists {
        return Err(OverrideError::NoTenant(tenant));
    }
    let replaced: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE entitlement_overrides SET ended_at = now(), ended_by = $4 || ' (replaced)'
         WHERE tenant_id = $1 AND target = $2 AND kind = ANY ($3) AND ended_at IS NULL RETURNING id",
    )
    .bind(tenant.0)
    .bind(new.target)
    .bind(new.kind.replaces())
    .bind(by)
    .fetch_all(&mut *tx)
    .await?;
    let row: Override = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO entitlement_overrides (id, tenant_id, kind, target, value, reason, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    )))
    .bind(uuid::Uuid::new_v4())
    .bind(tenant.0)
    .bind(new.kind.as_str())
    .bind(new.target)
    .bind(new.value)
    .bind(new.reason.trim())
    .bind(new.expires_at)
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    let params = serde_json::json!({"override": row.id, "kind": row.kind, "target": row.target, "value": row.value,
                                    "reason": row.reason, "expires_at": row.expires_at, "replaced": replaced});
    crate::audit::record(&mut tx, Some(tenant), by, "overrides.set", params, crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok(row)
}

/// Ends a live override of `tenant` now; audited as `by`.
pub async fn revoke(pool: &SystemPool, tenant: TenantId, id: uuid::Uuid, by: &str) -> Result<Override, OverrideError> {
    let mut tx = pool.0.begin().await?;
    let row: Option<Override> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE entitlement_overrides SET ended_at = now(), ended_by = $3 WHERE id = $1 AND tenant_id = $2 AND ended_at IS NULL RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(tenant.0)
    .bind(by)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or(OverrideError::NoOverride(id))?;
    let params = serde_json::json!({"override": row.id, "kind": row.kind, "target": row.target});
    crate::audit::record(&mut tx, Some(tenant), by, "overrides.revoke", params, crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok(row)
}

/// A tenant's overrides, live ones first, then the newest ended; at most `limit`.
pub async fn list(pool: &SystemPool, tenant: TenantId, include_ended: bool, limit: i64) -> Result<Vec<Override>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM entitlement_overrides WHERE tenant_id = $1 AND ($2 OR ended_at IS NULL)
         ORDER BY ended_at IS NOT NULL, created_at DESC LIMIT $3"
    )))
    .bind(tenant.0)
    .bind(include_ended)
    .bind(limit)
    .fetch_all(&pool.0)
    .await
}

/// The tenant's live overrides, read in its own transaction (row-level security applies).
pub async fn live(tx: &mut sqlx::PgConnection) -> Result<Vec<Override>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM entitlement_overrides WHERE ended_at IS NULL AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at"
    )))
    .fetch_all(tx)
    .await
}

/// Many tenants' live overrides in one read (the warm job's page).
pub async fn live_many(pool: &SystemPool, tenants: &[uuid::Uuid]) -> Result<Vec<Override>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM entitlement_overrides
         WHERE tenant_id = ANY ($1) AND ended_at IS NULL AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at"
    )))
    .bind(tenants)
    .fetch_all(&pool.0)
    .await
}

/// Ends every override past its expiry (as `expiry`, audited); the tenants whose cached
/// entitlements to drop.
pub async fn expire_due(pool: &SystemPool) -> Result<Vec<(TenantId, Override)>, sqlx::Error> {
    let mut tx = pool.0.begin().await?;
    let ended: Vec<Override> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE entitlement_overrides SET ended_at = expires_at, ended_by = 'expiry'
         WHERE ended_at IS NULL AND expires_at <= now() RETURNING {COLUMNS}"
    )))
    .fetch_all(&mut *tx)
    .await?;
    for o in &ended {
        let params = serde_json::json!({"override": o.id, "kind": o.kind, "target": o.target, "expires_at": o.expires_at});
        crate::audit::record(&mut tx, Some(TenantId(o.tenant_id)), "expiry", "overrides.expire", params, crate::audit::Outcome::Ok).await?;
    }
    tx.commit().await?;
    Ok(ended.into_iter().map(|o| (TenantId(o.tenant_id), o)).collect())
}

/// The usage limits with the live usage-limit overrides applied: (metric, monthly limit).
pub fn usage_limits<'a>(overrides: &'a [Override]) -> impl Iterator<Item = (&'a str, i64)> + 'a {
    overrides.iter().filter(|o| o.kind() == Some(OverrideKind::UsageLimit)).filter_map(|o| Some((o.target.as_str(), o.value?)))
}
