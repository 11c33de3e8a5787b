//! `cache.warm`'s families, in order: the plan catalogue, the feature flags, then every active
//! tenant's entitlements in batches of [`BATCH`], each batch three round trips (every free load
//! lock in one pipeline, one database read, every store in one pipeline). Stores go through
//! the cache's lock-checked script, so a warm that races an invalidation loses, as it must.

use std::collections::HashMap;

use serde::Serialize;

use crate::billing::plans::Plans;
use crate::cache::Cache;
use crate::cache::warm::{FillCount, WarmError};
use crate::db::SystemPool;
use crate::newtypes::TenantId;
use crate::redis_keys::{FEATURE_FLAGS, PLAN_CATALOGUE, TENANT_ENTITLEMENTS};
use crate::stripe_api::StripeApi;

/// Tenants per batch: one entitlement query and two pipelines each.
pub const BATCH: usize = 500;

/// What a warm did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WarmReport {
    /// The plan catalogue.
    pub catalogue: FillCount,
    /// The feature flags.
    pub flags: FillCount,
    /// Tenant entitlements.
    pub entitlements: FillCount,
    /// Active tenants seen.
    pub tenants: u64,
    /// Entitlement batches.
    pub batches: u64,
    /// Families that could not be loaded (their old values stay and are served); the warm
    /// goes on with the others.
    pub errors: Vec<String>,
}

impl WarmReport {
    /// A family's count, or its error noted (a Stripe outage must not stop the tenants' warm).
    pub(crate) fn settle(&mut self, filled: Result<FillCount, WarmError>) -> FillCount {
        filled.unwrap_or_else(|e| {
            tracing::warn!(message = "Cache warm could not load a family; its cached value stays.", error = %e);
            self.errors.push(e.to_string());
            FillCount::default()
        })
    }
}

/// What a warm reads from and fills (handles, cheap to clone).
#[derive(Debug, Clone)]
pub struct WarmSources {
    /// The cache to fill.
    pub cache: Cache,
    /// The plan catalogue.
    pub plans: std::sync::Arc<Plans>,
    /// Stripe, for the catalogue's prices.
    pub stripe: StripeApi,
    /// The app role's pool (feature flags are global, read as the app).
    pub app_pool: sqlx::PgPool,
    /// The system pool: warming is every tenant's, by design.
    pub system_pool: SystemPool,
}

/// One warm: catalogue, flags, then every tenant that is not closed, in batches of [`BATCH`].
/// A failed catalogue or flag load is reported in `errors`; a failed tenant batch stops the warm.
pub async fn run(from: &WarmSources) -> Result<WarmReport, WarmError> {
    let cache = &from.cache;
    let keys = cache.keys();
    let mut report = WarmReport::default();
    let (plans, stripe) = (from.plans.clone(), from.stripe.clone());
    let catalogue = cache
        .fill_batch(&PLAN_CATALOGUE, vec![((), keys.plan_catalogue())], |_| async move {
            crate::billing::public_plans::load(&plans, &stripe).await.map(|c| HashMap::from([((), c)]))
        })
        .await;
    report.catalogue = report.settle(catalogue);
    let pool = from.app_pool.clone();
    let flags = cache
        .fill_batch(&FEATURE_FLAGS, vec![((), keys.feature_flags())], |_| async move {
            crate::flags::list(&pool).await.map(|f| HashMap::from([((), f)]))
        })
        .await;
    report.flags = report.settle(flags);
    crate::fault::point("cache.warm.before_tenants");
    // Keyset pagination over tenants. System pool: warming is every tenant's, by design.
    let mut after = uuid::Uuid::nil();
    loop {
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM tenants WHERE status <> 'closed' AND id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(BATCH as i64)
                .fetch_all(&from.system_pool.0)
                .await?;
        let Some(last) = ids.last() else { break };
        after = *last;
        report.tenants += ids.len() as u64;
        report.batches += 1;
        let batch = ids.iter().map(|id| (TenantId(*id), keys.tenant_entitlements(TenantId(*id)))).collect();
        let system = from.system_pool.clone();
        let filled = cache
            .fill_batch(&TENANT_ENTITLEMENTS, batch, |tenants| async move {
                crate::billing::entitlements::load_many(&system, &tenants).await
            })
            .await?;
        report.entitlements.add(filled);
        if ids.len() < BATCH {
            break;
        }
    }
    Ok(report)
}

/// One tenant's entitlements only: what an app service asks for after a change of its own
/// (`cache.warm` through `POST /v1/jobs`, which always names the caller's tenant).
pub async fn run_tenant(from: &WarmSources, tenant: TenantId) -> Result<WarmReport, WarmError> {
    let cache = &from.cache;
    let system = from.system_pool.clone();
    let batch = vec![(tenant, cache.keys().tenant_entitlements(tenant))];
    let filled = cache
        .fill_batch(&TENANT_ENTITLEMENTS, batch, |tenants| async move { crate::billing::entitlements::load_many(&system, &tenants).await })
        .await?;
    let mut report = WarmReport { tenants: 1, batches: 1, ..WarmReport::default() };
    report.entitlements.add(filled);
    Ok(report)
}
