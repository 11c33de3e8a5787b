//! When each tenant last called the API, and which features it checks: the guard marks a
//! tenant seen and the entitlement check counts its feature, in memory (no write per request);
//! the api role writes both every few seconds, one statement each, and once more when it
//! stops. This module owns `tenant_activity` and `feature_checks`. A crash loses at most the
//! seconds since the last write: these are support figures, not a bill.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// How often the api role writes what it saw.
pub const WRITE_EVERY: Duration = Duration::from_secs(10);

/// Feature checks counted since the last write: (tenant, feature, day) → checks.
type Checks = HashMap<(TenantId, String, chrono::NaiveDate), i64>;

/// The tenants seen and the features checked since the last write.
#[derive(Debug, Default)]
pub struct Recorder {
    seen: Mutex<HashMap<TenantId, DateTime<Utc>>>,
    checks: Mutex<Checks>,
}

impl Recorder {
    /// Marks `tenant` seen now.
    pub fn seen(&self, tenant: TenantId) {
        if let Ok(mut s) = self.seen.lock() {
            s.insert(tenant, Utc::now());
        }
    }

    /// Counts one check of `feature` by `tenant` today.
    pub fn checked(&self, tenant: TenantId, feature: &str) {
        if let Ok(mut c) = self.checks.lock() {
            *c.entry((tenant, feature.to_owned(), Utc::now().date_naive())).or_insert(0) += 1;
        }
    }

    /// Adds the feature checks counted since the last write (kept for the next try if it
    /// fails); the number of rows written.
    pub async fn write_checks(&self, pool: &SystemPool) -> Result<usize, sqlx::Error> {
        let batch = match self.checks.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tenants = Vec::with_capacity(batch.len());
        let mut features = Vec::with_capacity(batch.len());
        let mut days = Vec::with_capacity(batch.len());
        let mut counts = Vec::with_capacity(batch.len());
        for ((t, f, d), n) in &batch {
            tenants.push(t.0);
            features.push(f.clone());
            days.push(*d);
            counts.push(*n);
        }
        let written = sqlx::query(
            "INSERT INTO feature_checks (tenant_id, feature, day, checks) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::date[], $4::bigint[])
             ON CONFLICT (tenant_id, day, feature) DO UPDATE SET checks = feature_checks.checks + EXCLUDED.checks",
        )
        .bind(&tenants)
        .bind(&features)
        .bind(&days)
        .bind(&counts)
        .execute(&pool.0)
        .await;
        if let Err(e) = written {
            if let Ok(mut c) = self.checks.lock() {
                for (k, n) in batch {
                    *c.entry(k).or_insert(0) += n;
                }
            }
            return Err(e);
        }
        Ok(batch.len())
    }

    /// Writes what was seen since the last write (kept for the next try if it fails); the
    /// number of tenants written.
    pub async fn write(&self, pool: &SystemPool) -> Result<usize, sqlx::Error> {
        let batch = match self.seen.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let (ids, at): (Vec<uuid::Uuid>, Vec<DateTime<Utc>>) = batch.iter().map(|(t, at)| (t.0, *at)).unzip();
        let written = sqlx::query(
            "INSERT INTO tenant_activity (tenant_id, last_seen_at) SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[])
             ON CONFLICT (tenant_id) DO UPDATE SET last_seen_at = GREATEST(tenant_activity.last_seen_at, EXCLUDED.last_seen_at)",
        )
        .bind(&ids)
        .bind(&at)
        .execute(&pool.0)
        .await;
        if let Err(e) = written {
            // Back for the next try, unless newer sightings replaced them meanwhile.
            if let Ok(mut s) = self.seen.lock() {
                for (t, when) in batch {
                    s.entry(t).or_insert(when);
                }
            }
            return Err(e);
        }
        Ok(ids.len())
    }

    /// Writes every [`WRITE_EVERY`] until `stop`, then once more.
    pub async fn run(self: std::sync::Arc<Self>, pool: SystemPool, stop: tokio_util::sync::CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(WRITE_EVERY) => false,
                () = stop.cancelled() => true,
            };
            if let Err(e) = self.write(&pool).await {
                tracing::debug!(message = "Tenant activity not written; kept for the next try.", error = %e);
            }
            if let Err(e) = self.write_checks(&pool).await {
                tracing::debug!(message = "Feature checks not written; kept for the next try.", error = %e);
            }
            if stopping {
                return;
            }
        }
    }
}
