//! Entitlements: what a tenant may do, recomputed from its mirrored subscriptions and the
//! plan catalogue inside the transaction that changed them. Each subscription's part is
//! decided in [`super::access`]; [`super::grants`] combines them, feature by feature, each
//! until its own end.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use std::collections::HashMap;

use super::access::{Access, AccessRules, SubscriptionFacts, contribution};
use super::grants::{self, Tier};
use super::overrides::{Override, OverrideKind};
use super::plans::Plans;
use crate::cache::{Cache, CacheError};
use crate::db::{DbError, SystemPool, TenantPool};
use crate::newtypes::TenantId;
use crate::redis_keys::TENANT_ENTITLEMENTS;

/// Recomputes and stores `tenant`'s entitlements in `tx`; returns the access of the leading
/// plan (or the restricted set, or none).
pub async fn recompute(tx: &mut PgConnection, tenant: TenantId, plans: &Plans, rules: &AccessRules) -> Result<Access, sqlx::Error> {
    // Dunning restricts what the failing subscription grants (a case names its subscription;
    // a case without one restricts them all), until the invoice is paid; a dispute the policy
    // restricts for restricts the tenant, until it closes.
    // The tenant's stored grants and status come back with its subscriptions (computed once
    // per statement), so an apply that leaves access as it was (most do) writes nothing and
    // saves the write's round trip. A tenant with no subscription reads none of them: written.
    let mut rows: Vec<FactsRow> = sqlx::query_as(
        "SELECT s.id, s.status, s.price_id, s.product_id, s.items, s.cancel_at_period_end, s.cancel_at, s.current_period_end,
                s.past_due_since, s.stripe_updated_at,
                EXISTS (SELECT 1 FROM dunning_cases d WHERE d.tenant_id = $1 AND d.status = 'open' AND d.restricted
                        AND (d.subscription_id IS NULL OR d.subscription_id = s.id))
                OR EXISTS (SELECT 1 FROM disputes p WHERE p.tenant_id = $1 AND p.restricts
                           AND p.status NOT IN ('won', 'lost', 'warning_closed', 'prevented')) AS restricted,
                s.status = 'incomplete' AND EXISTS (SELECT 1 FROM payment_intents i WHERE i.customer_id = s.customer_id
                                                    AND i.status = 'processing') AS payment_processing,
                (SELECT COALESCE(jsonb_agg(jsonb_build_array(e.feature, e.enabled, e.limit_value, e.source, e.plan_id, e.expires_at, e.later)), '[]')
                 FROM entitlements e WHERE e.tenant_id = $1) AS stored_grants,
                (SELECT t.status FROM tenants t WHERE t.id = $1) AS tenant_status
         FROM subscriptions s WHERE s.tenant_id = $1 ORDER BY s.id",
    )
    .bind(tenant.0)
    .fetch_all(&mut *tx)
    .await?;
    let stored = rows.first_mut().map(|r| (std::mem::take(&mut r.stored_grants.0), r.tenant_status.take()));
    let subs: Vec<SubscriptionFacts> = rows.into_iter().map(|r| r.facts).collect();
    let as_of = subs.iter().map(|s| s.stripe_updated_at).max().unwrap_or_else(Utc::now);
    let parts: Vec<_> = subs.iter().filter_map(|s| contribution(s, plans, rules, as_of)).collect();
    // A restricted contribution names no plan, so the leading plan is a granting one's.
    let granting = parts.iter().any(|c| !c.restricted);
    let (source, best) = match (grants::leading_plan(&parts), granting, parts.is_empty()) {
        (Some(c), _, _) => ("plan", Access::Plan { plan_id: c.plan.as_ref().map(|(id, _)| id.clone()).unwrap_or_default(), until: c.until }),
        (None, true, _) => ("plan", Access::None),
        (None, false, false) => ("restricted", Access::Restricted),
        (None, false, true) => ("none", Access::None),
    };
    let plan_id = match &best {
        Access::Plan { plan_id, .. } => Some(plan_id.as_str()),
        _ => None,
    };
    let schedule = grants::schedule(&parts, plans.features.keys());
    // Each catalogued feature's grant now, in the stored form.
    let granted: Vec<StoredGrant> = schedule
        .iter()
        .map(|(feature, tiers)| {
            let now = tiers.first().copied().unwrap_or(Tier { enabled: false, limit: None, until: None });
            let later = tiers.get(1..).unwrap_or_default().to_vec();
            (feature.clone(), now.enabled, now.limit, source.to_owned(), plan_id.map(str::to_owned), now.until, later)
        })
        .collect();
    let status = if source == "restricted" { "restricted" } else { "active" };
    if let Some((mut stored, tenant_status)) = stored {
        stored.sort_by(|a, b| a.0.cmp(&b.0));
        let status_unchanged = tenant_status.as_deref().is_none_or(|t| t == "closed" || t == status);
        if status_unchanged && stored == granted {
            return Ok(best);
        }
    }
    let features: Vec<&str> = granted.iter().map(|g| g.0.as_str()).collect();
    let enabled: Vec<bool> = granted.iter().map(|g| g.1).collect();
    let limits: Vec<Option<i64>> = granted.iter().map(|g| g.2).collect();
    let ends: Vec<Option<DateTime<Utc>>> = granted.iter().map(|g| g.5).collect();
    let later: Vec<serde_json::Value> = granted.iter().map(|g| serde_json::to_value(&g.6).unwrap_or_default()).collect();
    // One statement (one round trip): upsert every catalogued feature, drop features the
    // catalogue no longer has, set the tenant's status.
    sqlx::query(
        "WITH upserted AS (
             INSERT INTO entitlements (tenant_id, feature, enabled, limit_value, source, plan_id, expires_at, later, updated_at)
             SELECT $1, f.feature, f.enabled, f.limit_value, $5, $6, f.expires_at, f.later, now()
             FROM UNNEST($2::text[], $3::bool[], $4::bigint[], $7::timestamptz[], $9::jsonb[]) AS f (feature, enabled, limit_value, expires_at, later)
             ON CONFLICT (tenant_id, feature) DO UPDATE SET enabled = EXCLUDED.enabled, limit_value = EXCLUDED.limit_value,
                 source = EXCLUDED.source, plan_id = EXCLUDED.plan_id, expires_at = EXCLUDED.expires_at, later = EXCLUDED.later,
                 updated_at = now()
             -- An unchanged grant is not rewritten: most events leave access as it was, and a
             -- row version per feature per event was most of the apply's writes.
             WHERE (entitlements.enabled, entitlements.limit_value, entitlements.source, entitlements.plan_id, entitlements.expires_at, entitlements.later)
                   IS DISTINCT FROM (EXCLUDED.enabled, EXCLUDED.limit_value, EXCLUDED.source, EXCLUDED.plan_id, EXCLUDED.expires_at, EXCLUDED.later)
         ), dropped AS (
             DELETE FROM entitlements WHERE tenant_id = $1 AND NOT (feature = ANY ($2::text[]))
         )
         UPDATE tenants SET status = $8 WHERE id = $1 AND status NOT IN ('closed', $8)",
    )
    .bind(tenant.0)
    .bind(&features)
    .bind(&enabled)
    .bind(&limits)
    .bind(source)
    .bind(plan_id)
    .bind(&ends)
    .bind(status)
    .bind(&later)
    .execute(&mut *tx)
    .await?;
    Ok(best)
}

/// A stored grant as the recompute's read returns it: feature, enabled, limit, source, plan,
/// end, what follows.
type StoredGrant = (String, bool, Option<i64>, String, Option<String>, Option<DateTime<Utc>>, Vec<Tier>);

/// A subscription's facts, with the tenant's stored grants and status beside them.
#[derive(sqlx::FromRow)]
struct FactsRow {
    #[sqlx(flatten)]
    facts: SubscriptionFacts,
    stored_grants: sqlx::types::Json<Vec<StoredGrant>>,
    tenant_status: Option<String>,
}

/// Layers the live `overrides` over the billed `rows` (every catalogued `feature` gets a row
/// when an override names it). An override with an expiry gives way to the billed grant at its
/// end on every read, before the sweep ends it.
fn apply_overrides(rows: &mut Vec<Entitlement>, overrides: &[Override]) {
    for o in overrides {
        let Some(kind) = o.kind() else { continue };
        if kind == OverrideKind::UsageLimit {
            continue;
        }
        let at = match rows.iter().position(|r| r.feature == o.target) {
            Some(i) => i,
            None => {
                rows.push(Entitlement {
                    feature: o.target.clone(),
                    enabled: false,
                    limit: None,
                    source: "none".into(),
                    plan_id: None,
                    expires_at: None,
                    later: Vec::new(),
                    billed_source: None,
                });
                rows.len() - 1
            }
        };
        let row = &mut rows[at];
        // What billing grants, each value until its end: what follows the override.
        let billed: Vec<Tier> = std::iter::once(Tier { enabled: row.enabled, limit: row.limit, until: row.expires_at }).chain(row.later.iter().copied()).collect();
        let (enabled, limit) = match kind {
            OverrideKind::Grant => (true, row.limit),
            OverrideKind::Revoke => (false, row.limit),
            OverrideKind::FeatureLimit => (row.enabled, o.value),
            OverrideKind::UsageLimit => continue,
        };
        row.enabled = enabled;
        row.limit = limit;
        if row.source != "override" {
            row.billed_source = Some(std::mem::replace(&mut row.source, "override".into()));
        }
        row.later = match o.expires_at {
            Some(_) => billed.into_iter().filter(|t| t.until.is_none_or(|u| o.expires_at.is_none_or(|e| u > e))).collect(),
            None => Vec::new(),
        };
        row.expires_at = o.expires_at;
    }
    rows.sort_by(|a, b| a.feature.cmp(&b.feature));
}

/// One feature of a tenant, as stored, cached and served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Entitlement {
    /// Feature id from the catalogue.
    pub feature: String,
    /// Whether the tenant may use it (as stored; see [`Entitlement::enabled_at`]).
    pub enabled: bool,
    /// Its limit, for counted features.
    #[sqlx(rename = "limit_value")]
    pub limit: Option<i64>,
    /// `plan`, `restricted`, `none`, or `override` (an operator's, until `expires_at`; what
    /// billing grants follows in `later`).
    pub source: String,
    /// The granting plan.
    pub plan_id: Option<String>,
    /// When the grant ends by itself (grace period, cancel at period end, an override's expiry).
    pub expires_at: Option<DateTime<Utc>>,
    /// What follows, each value until its end: another subscription's grant that outlasts
    /// this one (a lower plan after a higher one ends). Past the last, the feature is off.
    #[sqlx(json)]
    #[serde(default)]
    pub later: Vec<Tier>,
    /// Under an override: the source of what billing grants, which `later` holds.
    #[sqlx(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_source: Option<String>,
}

impl Entitlement {
    /// On or off at `now`, and the limit then: a grant past its end gives way to what follows
    /// it, or to off, even before the next recompute writes so.
    pub fn value_at(&self, now: DateTime<Utc>) -> (bool, Option<i64>) {
        let first = Tier { enabled: self.enabled, limit: self.limit, until: self.expires_at };
        // Read on every entitlement answer: no allocation.
        grants::at(std::iter::once(&first).chain(&self.later), now)
    }

    /// Where the value at `now` comes from: an override gives way to billing at its end.
    pub fn source_at(&self, now: DateTime<Utc>) -> &str {
        match (&self.billed_source, self.expires_at) {
            (Some(billed), Some(end)) if self.source == "override" && end <= now => billed,
            _ => &self.source,
        }
    }

    /// Whether the feature is usable at `now` ([`Entitlement::value_at`]).
    pub fn enabled_at(&self, now: DateTime<Utc>) -> bool {
        self.value_at(now).0
    }
}

const ENTITLEMENT_COLUMNS: &str = "feature, enabled, limit_value, source, plan_id, expires_at, later";

/// The entitlement read (the tenant's rows through row-level security, inside its transaction):
/// what `tests/api/query_plans.rs` holds to an index-bound plan.
pub fn read_statement() -> String {
    format!("SELECT {ENTITLEMENT_COLUMNS} FROM entitlements ORDER BY feature")
}

/// A tenant's entitlements from PostgreSQL, inside its own transaction (row-level security
/// has the last word on whose rows these are): what billing grants, with the operators' live
/// overrides layered over it.
pub async fn load(pool: &TenantPool, tenant: TenantId) -> Result<Vec<Entitlement>, DbError> {
    let mut tx = pool.begin(tenant).await?;
    let mut rows: Vec<Entitlement> = sqlx::query_as(sqlx::AssertSqlSafe(read_statement())).fetch_all(&mut *tx).await?;
    let overrides = super::overrides::live(&mut tx).await?;
    tx.commit().await?;
    apply_overrides(&mut rows, &overrides);
    Ok(rows)
}

/// Many tenants' entitlements in one query, for the warm job. System pool: the job fills every
/// active tenant's cache entry, so it reads across tenants by design.
pub async fn load_many(system: &SystemPool, tenants: &[TenantId]) -> Result<HashMap<TenantId, Vec<Entitlement>>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        tenant_id: uuid::Uuid,
        #[sqlx(flatten)]
        entitlement: Entitlement,
    }
    let ids: Vec<uuid::Uuid> = tenants.iter().map(|t| t.0).collect();
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT tenant_id, {ENTITLEMENT_COLUMNS} FROM entitlements WHERE tenant_id = ANY ($1) ORDER BY tenant_id, feature"
    )))
    .bind(&ids)
    .fetch_all(&system.0)
    .await?;
    // A tenant with no rows (no subscription yet) is cached as empty, like a single read.
    let mut out: HashMap<TenantId, Vec<Entitlement>> = tenants.iter().map(|t| (*t, Vec::new())).collect();
    for row in rows {
        out.entry(TenantId(row.tenant_id)).or_default().push(row.entitlement);
    }
    let overrides = super::overrides::live_many(system, &ids).await?;
    for (tenant, rows) in &mut out {
        let own: Vec<Override> = overrides.iter().filter(|o| o.tenant_id == tenant.0).cloned().collect();
        if !own.is_empty() {
            apply_overrides(rows, &own);
        }
    }
    Ok(out)
}

/// A tenant's entitlements through the cache (short TTL; invalidated after every change).
pub async fn cached(cache: &Cache, pool: &TenantPool, tenant: TenantId) -> Result<Vec<Entitlement>, CacheError> {
    let pool = pool.clone();
    cache.get(&TENANT_ENTITLEMENTS, cache.keys().tenant_entitlements(tenant), move || async move { load(&pool, tenant).await }).await
}

/// Drops the tenant's cached entitlements (and any load in flight); call after the commit that
/// changed them, so the next read sees the change. A failure is logged: the key's TTL bounds
/// the staleness, and the change itself is committed.
pub async fn invalidate(cache: &Cache, tenant: TenantId) {
    if let Err(e) = cache.invalidate(&[cache.keys().tenant_entitlements(tenant)]).await {
        tracing::warn!(message = "Entitlement cache invalidation failed.", tenant = %tenant, error = %e);
    }
}

/// The subscription that speaks for a tenant: a live one (active, trialing, past due) before a
/// paused one before an ended one, the latest on Stripe's clock first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SubscriptionSummary {
    /// `sub_…`
    pub id: String,
    /// Stripe's status.
    pub status: String,
    /// The plan's price.
    pub price_id: Option<String>,
    /// End of the current period (the earliest item's).
    pub current_period_end: Option<DateTime<Utc>>,
    /// A classic cancel at the period end.
    pub cancel_at_period_end: bool,
    /// A flexible cancel's time.
    pub cancel_at: Option<DateTime<Utc>>,
    /// When the trial ends.
    pub trial_end: Option<DateTime<Utc>>,
    /// Why Stripe paused it (`final_payment_failure`, …), while paused.
    pub paused_reason: Option<String>,
    /// `pause_collection.behavior` while its collection is paused (access unchanged).
    pub pause_collection: Option<String>,
}

/// The tenant's subscription, as [`SubscriptionSummary`] orders them. System pool: an
/// operator's and a provisioning service's read, by tenant id.
pub async fn current_subscription(system: &SystemPool, tenant: TenantId) -> Result<Option<SubscriptionSummary>, sqlx::Error> {
    Ok(current_subscriptions(system, &[tenant]).await?.remove(&tenant))
}

/// Each tenant's subscription, as [`SubscriptionSummary`] orders them, in one statement (a
/// page of tenants is one read, not one per tenant); tenants without one are absent. System
/// pool, as [`current_subscription`].
pub async fn current_subscriptions(system: &SystemPool, tenants: &[TenantId]) -> Result<HashMap<TenantId, SubscriptionSummary>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        tenant_id: uuid::Uuid,
        #[sqlx(flatten)]
        summary: SubscriptionSummary,
    }
    let ids: Vec<uuid::Uuid> = tenants.iter().map(|t| t.0).collect();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT DISTINCT ON (tenant_id) tenant_id, id, status, price_id, current_period_end, cancel_at_period_end, cancel_at, trial_end,
                paused_reason, pause_collection
         FROM subscriptions
         WHERE tenant_id = ANY ($1)
         ORDER BY tenant_id,
                  CASE WHEN status IN ('active', 'trialing', 'past_due') THEN 0 WHEN status = 'paused' THEN 1 ELSE 2 END,
                  stripe_updated_at DESC, id",
    )
    .bind(&ids)
    .fetch_all(&system.0)
    .await?;
    Ok(rows.into_iter().map(|r| (TenantId(r.tenant_id), r.summary)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(kind: &str, target: &str, value: Option<i64>, expires_at: Option<DateTime<Utc>>) -> Override {
        let now = Utc::now();
        Override {
            id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            kind: kind.into(),
            target: target.into(),
            value,
            reason: "test".into(),
            expires_at,
            created_at: now,
            created_by: "t".into(),
            ended_at: None,
            ended_by: None,
        }
    }

    #[test]
    fn an_override_holds_until_its_expiry_then_billing_speaks_again() {
        let now = Utc::now();
        let end = now + chrono::Duration::days(14);
        let plan = |feature: &str, enabled: bool, limit| Entitlement {
            feature: feature.into(),
            enabled,
            limit,
            source: "plan".into(),
            plan_id: Some("starter".into()),
            expires_at: None,
            later: Vec::new(),
            billed_source: None,
        };
        let mut rows = vec![plan("sso", false, None), plan("projects", true, Some(3))];
        apply_overrides(&mut rows, &[grant("grant", "sso", None, Some(end)), grant("feature_limit", "projects", Some(50), None), grant("revoke", "seats", None, None)]);
        let by = |f: &str| rows.iter().find(|r| r.feature == f).expect("row");
        let sso = by("sso");
        assert_eq!((sso.value_at(now), sso.source_at(now)), ((true, None), "override"));
        let after = end + chrono::Duration::seconds(1);
        assert_eq!((sso.value_at(after), sso.source_at(after)), ((false, None), "plan"), "the plan's answer follows the expiry");
        assert_eq!(by("projects").value_at(after), (true, Some(50)), "no expiry: it stays");
        // A feature billing grants nothing for gets a row of its own.
        assert_eq!((by("seats").value_at(now), by("seats").source.as_str()), ((false, None), "override"));
    }
}
