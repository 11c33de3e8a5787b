//! `cache.warm`: fills the plan catalogue, the feature flags and every active tenant's
//! entitlements, in batches of three round trips each: every free load lock in one pipeline,
//! one database read for the batch, every store in one pipeline. Stores go through the same
//! lock-checked script as a single read, so a warm that races an invalidation loses, as it must.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use serde::Serialize;

use super::Cache;
use crate::billing::plans::Plans;
use crate::db::SystemPool;
use crate::domain::TenantId;
use crate::stripe::client::StripeApi;
use crate::keys::{FEATURE_FLAGS, KeySpec, PLAN_CATALOGUE, TENANT_ENTITLEMENTS};

/// Tenants per batch: one entitlement query and two pipelines each.
pub const BATCH: usize = 500;

/// A warm that stopped.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// A loader failed.
    #[error("loading {family}: {message}")]
    Load {
        /// The family.
        family: &'static str,
        /// The loader's error.
        message: String,
    },
}

/// What happened to the keys of one family.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct FillCount {
    /// Written.
    pub stored: u64,
    /// Skipped: another member was loading it (it writes the same answer).
    pub busy: u64,
    /// Loaded but not written: invalidated meanwhile (the next read loads afresh).
    pub lost: u64,
}

impl FillCount {
    fn add(&mut self, other: FillCount) {
        self.stored += other.stored;
        self.busy += other.busy;
        self.lost += other.lost;
    }
}

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
    fn settle(&mut self, filled: Result<FillCount, WarmError>) -> FillCount {
        filled.unwrap_or_else(|e| {
            tracing::warn!(message = "Cache warm could not load a family; its cached value stays.", error = %e);
            self.errors.push(e.to_string());
            FillCount::default()
        })
    }
}

impl Cache {
    /// Fills `keys` (id, cache key) of `family`: takes every free lock in one pipeline, loads
    /// the locked ids with one `load` call, stores them in one pipeline.
    pub async fn fill_batch<K, T, F, Fut, E>(&self, family: &KeySpec, keys: Vec<(K, String)>, load: F) -> Result<FillCount, WarmError>
    where
        K: Eq + Hash + Clone,
        T: Serialize,
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, E>>,
        E: std::fmt::Display,
    {
        if keys.is_empty() {
            return Ok(FillCount::default());
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = self.redis.clone();
        let mut locks = redis::pipe();
        for (_, key) in &keys {
            locks.cmd("SET").arg(self.keys.cache_lock(key)).arg(&token).arg("NX").arg("PX").arg(super::ms(Some(self.options.lock_ttl)));
        }
        let taken: Vec<Option<String>> = locks.query_async(&mut conn).await?;
        let asked = keys.len();
        let locked: Vec<(K, String)> = keys.into_iter().zip(taken).filter_map(|(k, t)| t.map(|_| k)).collect();
        let mut count = FillCount { busy: (asked - locked.len()) as u64, ..FillCount::default() };
        let values = match load(locked.iter().map(|(id, _)| id.clone()).collect()).await {
            Ok(v) => v,
            Err(e) => {
                let mut release = redis::pipe();
                release.load_script(&self.unlock).ignore();
                for (_, key) in &locked {
                    release.invoke_script(self.unlock.key(self.keys.cache_lock(key)).arg(&token)).ignore();
                }
                let _: Result<(), _> = release.query_async(&mut conn).await;
                return Err(WarmError::Load { family: family.name, message: e.to_string() });
            }
        };
        let mut stores = redis::pipe();
        stores.load_script(&self.store).ignore();
        let mut stored_keys = 0usize;
        for (id, key) in &locked {
            let Some((envelope, px)) = values.get(id).and_then(|v| self.envelope(family, v)) else { continue };
            stores.invoke_script(self.store.key(key).key(self.keys.cache_lock(key)).arg(&token).arg(envelope).arg(px));
            stored_keys += 1;
        }
        let written: Vec<i64> = if stored_keys == 0 { Vec::new() } else { stores.query_async(&mut conn).await? };
        count.stored = written.iter().filter(|w| **w == 1).count() as u64;
        count.lost = written.len() as u64 - count.stored;
        Ok(count)
    }
}

/// Where a warm reads what it stores.
#[derive(Debug, Clone, Copy)]
pub struct WarmSources<'a> {
    /// The cache to fill.
    pub cache: &'a Cache,
    /// The plan catalogue.
    pub plans: &'a std::sync::Arc<Plans>,
    /// Stripe, for the catalogue's prices.
    pub stripe: &'a StripeApi,
    /// The app role's pool (feature flags are global, read as the app).
    pub app_pool: &'a sqlx::PgPool,
    /// The system pool: warming is every tenant's, by design.
    pub system_pool: &'a SystemPool,
}

/// One warm: catalogue, flags, then every tenant that is not closed, in batches of [`BATCH`].
/// A failed catalogue or flag load is reported in `errors`; a failed tenant batch stops the warm.
pub async fn run(from: WarmSources<'_>) -> Result<WarmReport, WarmError> {
    let cache = from.cache;
    let keys = cache.keys();
    let mut report = WarmReport::default();
    let (plans, stripe) = (from.plans.clone(), from.stripe.clone());
    let catalogue = cache
        .fill_batch(&PLAN_CATALOGUE, vec![((), keys.plan_catalogue())], |_| async move {
            crate::billing::public_catalogue::load(&plans, &stripe).await.map(|c| HashMap::from([((), c)]))
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
