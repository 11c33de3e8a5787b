//! Entitlements: what a tenant may do, recomputed from its mirrored subscriptions and the
//! plan catalogue inside the transaction that changed them.
//!
//! Access per subscription status: trialing and active → the plan; past_due → the plan
//! during the grace period; incomplete, incomplete_expired, unpaid → none; canceled → none,
//! except that cancel_at_period_end keeps the plan until the period ends; paused → restricted.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;

use std::collections::HashMap;

use super::plans::{Grant, Plans};
use crate::cache::{Cache, CacheError};
use crate::db::{DbError, SystemPool, TenantPool};
use crate::newtypes::TenantId;
use crate::redis_keys::TENANT_ENTITLEMENTS;

/// What one subscription grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The plan's features, until a time or open-ended.
    Plan {
        /// Plan id in the catalogue.
        plan_id: String,
        /// When access ends by itself (grace period, cancel at period end).
        until: Option<DateTime<Utc>>,
    },
    /// The restricted set.
    Restricted,
    /// Nothing.
    None,
}

impl Access {
    fn rank(&self) -> u8 {
        match self {
            Access::Plan { until: None, .. } => 3,
            Access::Plan { .. } => 2,
            Access::Restricted => 1,
            Access::None => 0,
        }
    }
}

/// The mirrored facts of one subscription that access depends on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionFacts {
    /// Stripe status.
    pub status: String,
    /// First item's price.
    pub price_id: Option<String>,
    /// First item's product.
    pub product_id: Option<String>,
    /// Cancels at period end (classic billing mode).
    pub cancel_at_period_end: bool,
    /// Cancels at this time (flexible billing mode; also set by `cancel_at`).
    #[sqlx(default)]
    pub cancel_at: Option<DateTime<Utc>>,
    /// End of the current period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// When it became past_due.
    pub past_due_since: Option<DateTime<Utc>>,
    /// Stripe's time of the state we hold.
    pub stripe_updated_at: DateTime<Utc>,
    /// The tenant has an open dunning case past its restriction day, or an open dispute the
    /// dispute policy restricts for.
    #[sqlx(default)]
    pub restricted: bool,
}

/// What `sub` grants at `as_of` (Stripe's clock, so the answer does not depend on when or in
/// which order events were processed).
pub fn access(sub: &SubscriptionFacts, plans: &Plans, grace: Duration, as_of: DateTime<Utc>) -> Access {
    let Some((plan_id, _)) = plans.plan_for(sub.price_id.as_deref(), sub.product_id.as_deref()) else {
        return Access::None;
    };
    let plan = |until| Access::Plan { plan_id: plan_id.to_owned(), until };
    match sub.status.as_str() {
        "trialing" | "active" => plan(ends(sub)),
        "past_due" => {
            let until = sub.past_due_since.unwrap_or(as_of) + grace;
            if as_of < until { plan(Some(until)) } else { Access::None }
        }
        "canceled" => match ends(sub) {
            Some(end) if end > as_of => plan(Some(end)),
            _ => Access::None,
        },
        "paused" => Access::Restricted,
        _ => Access::None,
    }
}

/// When a cancelling subscription's access ends: the period end for a classic cancel,
/// `cancel_at` for a flexible one, the earlier when both are set; `None` when not cancelling.
fn ends(sub: &SubscriptionFacts) -> Option<DateTime<Utc>> {
    let at_period_end = if sub.cancel_at_period_end { sub.current_period_end } else { None };
    [at_period_end, sub.cancel_at].into_iter().flatten().min()
}

/// Recomputes and stores `tenant`'s entitlements in `tx`; returns the access granted.
pub async fn recompute(tx: &mut PgConnection, tenant: TenantId, plans: &Plans, grace: Duration) -> Result<Access, sqlx::Error> {
    let subs: Vec<SubscriptionFacts> = sqlx::query_as(
        "SELECT status, price_id, product_id, cancel_at_period_end, cancel_at, current_period_end, past_due_since, stripe_updated_at,
                EXISTS (SELECT 1 FROM dunning_cases d WHERE d.tenant_id = $1 AND d.status = 'open' AND d.restricted)
                OR EXISTS (SELECT 1 FROM disputes p WHERE p.tenant_id = $1 AND p.restricts
                           AND p.status NOT IN ('won', 'lost', 'warning_closed', 'prevented')) AS restricted
         FROM subscriptions WHERE tenant_id = $1",
    )
    .bind(tenant.0)
    .fetch_all(&mut *tx)
    .await?;
    let as_of = subs.iter().map(|s| s.stripe_updated_at).max().unwrap_or_else(Utc::now);
    let mut best = subs.iter().map(|s| access(s, plans, grace, as_of)).max_by_key(Access::rank).unwrap_or(Access::None);
    // Dunning restricts whatever the plan would grant, until the invoice is paid; so does a
    // dispute the policy restricts for, until it closes.
    if subs.iter().any(|s| s.restricted) && best.rank() > Access::Restricted.rank() {
        best = Access::Restricted;
    }
    let (source, plan_id, until, grants) = match &best {
        Access::Plan { plan_id, until } => ("plan", Some(plan_id.as_str()), *until, plans.plans.get(plan_id).map(|p| &p.features)),
        Access::Restricted => ("restricted", None, None, Some(&plans.restricted.features)),
        Access::None => ("none", None, None, None),
    };
    let mut features = Vec::with_capacity(plans.features.len());
    let mut enabled = Vec::with_capacity(plans.features.len());
    let mut limits = Vec::with_capacity(plans.features.len());
    for feature in plans.features.keys() {
        let (on, limit) = match grants.and_then(|g| g.get(feature)) {
            Some(Grant::Switch(on)) => (*on, None),
            Some(Grant::Limit(n)) => (true, Some(*n)),
            None => (false, None),
        };
        features.push(feature.as_str());
        enabled.push(on);
        limits.push(limit);
    }
    let status = if best == Access::Restricted { "restricted" } else { "active" };
    // One statement (one round trip): upsert every catalogued feature, drop features the
    // catalogue no longer has, set the tenant's status.
    sqlx::query(
        "WITH upserted AS (
             INSERT INTO entitlements (tenant_id, feature, enabled, limit_value, source, plan_id, expires_at, updated_at)
             SELECT $1, f.feature, f.enabled, f.limit_value, $5, $6, $7, now()
             FROM UNNEST($2::text[], $3::bool[], $4::bigint[]) AS f (feature, enabled, limit_value)
             ON CONFLICT (tenant_id, feature) DO UPDATE SET enabled = EXCLUDED.enabled, limit_value = EXCLUDED.limit_value,
                 source = EXCLUDED.source, plan_id = EXCLUDED.plan_id, expires_at = EXCLUDED.expires_at, updated_at = now()
             -- An unchanged grant is not rewritten: most events leave access as it was, and a
             -- row version per feature per event was most of the apply's writes.
             WHERE (entitlements.enabled, entitlements.limit_value, entitlements.source, entitlements.plan_id, entitlements.expires_at)
                   IS DISTINCT FROM (EXCLUDED.enabled, EXCLUDED.limit_value, EXCLUDED.source, EXCLUDED.plan_id, EXCLUDED.expires_at)
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
    .bind(until)
    .bind(status)
    .execute(&mut *tx)
    .await?;
    Ok(best)
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
    /// `plan`, `restricted` or `none`.
    pub source: String,
    /// The granting plan.
    pub plan_id: Option<String>,
    /// When the grant ends by itself (grace period, cancel at period end).
    pub expires_at: Option<DateTime<Utc>>,
}

impl Entitlement {
    /// Whether the feature is usable at `now`: a grant past its end is off even before the
    /// next recompute writes so.
    pub fn enabled_at(&self, now: DateTime<Utc>) -> bool {
        self.enabled && self.expires_at.is_none_or(|end| end > now)
    }
}

const ENTITLEMENT_COLUMNS: &str = "feature, enabled, limit_value, source, plan_id, expires_at";

/// A tenant's entitlements from PostgreSQL, inside its own transaction (row-level security
/// has the last word on whose rows these are).
pub async fn load(pool: &TenantPool, tenant: TenantId) -> Result<Vec<Entitlement>, DbError> {
    let mut tx = pool.begin(tenant).await?;
    let rows: Vec<Entitlement> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {ENTITLEMENT_COLUMNS} FROM entitlements ORDER BY feature")))
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> Plans {
        Plans::parse("[features]\na = \"A\"\n[restricted]\nname = \"R\"\n[plans.p]\nname = \"P\"\nprices = [\"price_p\"]\nfeatures = { a = true }\n")
            .expect("plans")
    }

    fn sub(status: &str, cancel: bool, end_in_days: i64, past_due_days_ago: Option<i64>) -> SubscriptionFacts {
        let now = Utc::now();
        SubscriptionFacts {
            status: status.into(),
            price_id: Some("price_p".into()),
            product_id: None,
            cancel_at_period_end: cancel,
            cancel_at: None,
            current_period_end: Some(now + Duration::days(end_in_days)),
            past_due_since: past_due_days_ago.map(|d| now - Duration::days(d)),
            stripe_updated_at: now,
            restricted: false,
        }
    }

    #[test]
    fn a_flexible_cancel_ends_access_at_cancel_at_though_cancel_at_period_end_is_false() {
        let (p, g, now) = (plans(), Duration::days(14), Utc::now());
        let mut flexible = sub("active", false, 30, None);
        flexible.cancel_at = Some(now + Duration::days(10));
        assert_eq!(access(&flexible, &p, g, now), Access::Plan { plan_id: "p".into(), until: flexible.cancel_at });
        // Both set: the earlier wins.
        let mut both = sub("active", true, 5, None);
        both.cancel_at = Some(now + Duration::days(10));
        assert_eq!(access(&both, &p, g, now), Access::Plan { plan_id: "p".into(), until: both.current_period_end });
        // Canceled before cancel_at came (Stripe cancels at it): access until then, not after.
        flexible.status = "canceled".into();
        assert!(matches!(access(&flexible, &p, g, now), Access::Plan { .. }));
        flexible.cancel_at = Some(now - Duration::seconds(1));
        assert_eq!(access(&flexible, &p, g, now), Access::None);
    }

    #[test]
    fn access_follows_the_status_table() {
        let (p, g, now) = (plans(), Duration::days(14), Utc::now());
        let plan = |a: &Access| matches!(a, Access::Plan { .. });
        assert!(plan(&access(&sub("trialing", false, 5, None), &p, g, now)));
        assert_eq!(access(&sub("active", false, 5, None), &p, g, now), Access::Plan { plan_id: "p".into(), until: None });
        assert!(plan(&access(&sub("past_due", false, 5, Some(3)), &p, g, now)));
        assert_eq!(access(&sub("past_due", false, 5, Some(15)), &p, g, now), Access::None);
        for s in ["incomplete", "incomplete_expired", "unpaid"] {
            assert_eq!(access(&sub(s, false, 5, None), &p, g, now), Access::None, "{s}");
        }
        assert!(plan(&access(&sub("canceled", true, 5, None), &p, g, now)));
        assert_eq!(access(&sub("canceled", true, -1, None), &p, g, now), Access::None);
        assert_eq!(access(&sub("canceled", false, 5, None), &p, g, now), Access::None);
        assert_eq!(access(&sub("paused", false, 5, None), &p, g, now), Access::Restricted);
        let mut unknown = sub("active", false, 5, None);
        unknown.price_id = Some("price_other".into());
        assert_eq!(access(&unknown, &p, g, now), Access::None);
    }

    /// The instant a period (or a grace) ends is past it: Stripe ends a cancelled
    /// subscription at `current_period_end`, so at that second access has ended, and a second
    /// before it has not.
    #[test]
    fn access_ends_at_the_exact_end_of_the_period_and_of_the_grace() {
        let (p, g, now) = (plans(), Duration::days(14), Utc::now());
        let mut canceled = sub("canceled", true, 0, None);
        canceled.current_period_end = Some(now);
        assert_eq!(access(&canceled, &p, g, now), Access::None, "at the period's end");
        assert_eq!(access(&canceled, &p, g, now - Duration::seconds(1)), Access::Plan { plan_id: "p".into(), until: Some(now) }, "a second before it");
        let mut flexible = sub("canceled", false, 30, None);
        flexible.cancel_at = Some(now);
        assert_eq!(access(&flexible, &p, g, now), Access::None, "at cancel_at");
        let mut past_due = sub("past_due", false, 5, None);
        past_due.past_due_since = Some(now - g);
        assert_eq!(access(&past_due, &p, g, now), Access::None, "at the grace's end");
        assert_eq!(access(&past_due, &p, g, now - Duration::seconds(1)), Access::Plan { plan_id: "p".into(), until: Some(now) }, "a second before it");
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
        "SELECT DISTINCT ON (tenant_id) tenant_id, id, status, price_id, current_period_end, cancel_at_period_end, cancel_at, trial_end
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
