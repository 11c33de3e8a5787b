//! When each tenant last called the API: the guard marks a tenant seen in memory (no write per
//! request), and the api role writes what it saw every few seconds in one statement, and once
//! more when it stops. This module owns `tenant_activity`. A crash loses at most the seconds
//! since the last write: last activity is a support figure, not a bill.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// How often the api role writes what it saw.
pub const WRITE_EVERY: Duration = Duration::from_secs(10);

/// The tenants seen since the last write, with when.
#[derive(Debug, Default)]
pub struct Recorder {
    seen: Mutex<HashMap<TenantId, DateTime<Utc>>>,
}

impl Recorder {
    /// Marks `tenant` seen now.
    pub fn seen(&self, tenant: TenantId) {
        if let Ok(mut s) = self.seen.lock() {
            s.insert(tenant, Utc::now());
        }
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
            if stopping {
                return;
            }
        }
    }
}
