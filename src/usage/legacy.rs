//! Windows of usage that builds before `usage_items` counted in Redis: a rolling upgrade can
//! leave some behind, and the flush drains them into the ledger exactly once, as those builds
//! did (claim the window's hash under a flush id, commit the ledger rows with the flush row,
//! then delete the claim). Nothing writes these keys any more; remove this module once no
//! deployment runs a build from before migration 0010.

use chrono::{DateTime, Utc};

use super::Deps;
use super::ledger::{LedgerRow, write_ledger};
use crate::fault;

static CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/claim.lua")));

/// What a drain moved.
#[derive(Debug, Default)]
pub(super) struct Drained {
    /// Windows moved into the ledger.
    pub windows: usize,
    /// Ledger rows written.
    pub ledger_rows: usize,
}

/// Why a drain stopped (the flush retries).
#[derive(Debug, thiserror::Error)]
pub(super) enum DrainError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

/// Claims every window left in Redis and moves each into the ledger.
pub(super) async fn drain(state: &Deps<'_>, now: DateTime<Utc>) -> Result<Drained, DrainError> {
    let mut report = Drained::default();
    if state.keys.is_cluster() {
        // No build from before usage_items ran on a cluster (cluster support came later), and
        // these keys were never tagged to share a slot.
        return Ok(report);
    }
    let mut conn = state.redis.clone();
    let windows: Vec<i64> = redis::cmd("ZRANGE").arg(state.keys.usage_windows()).arg(0).arg(999).query_async(&mut conn).await?;
    for window in windows {
        let flush_id = format!("{window}-{}", uuid::Uuid::now_v7().simple());
        let _: i64 = CLAIM
            .key(state.keys.usage_window(window))
            .key(state.keys.usage_claimed(&flush_id))
            .key(state.keys.usage_windows())
            .key(state.keys.usage_claims())
            .arg(window)
            .arg(&flush_id)
            .invoke_async(&mut conn)
            .await?;
    }
    // Every claim not yet finished: this run's, and any a crashed run left behind.
    let claims: Vec<String> = redis::cmd("SMEMBERS").arg(state.keys.usage_claims()).query_async(&mut conn).await?;
    for flush_id in claims {
        let key = state.keys.usage_claimed(&flush_id);
        let window: i64 = flush_id.split('-').next().and_then(|w| w.parse().ok()).unwrap_or_default();
        let counts: Vec<(String, i64)> = redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
        let rows: Vec<LedgerRow> = counts
            .iter()
            .filter(|(_, q)| *q > 0)
            .filter_map(|(field, quantity)| {
                let mut parts = field.splitn(3, '|');
                let (tenant, metric, minute) = (parts.next()?.parse().ok()?, parts.next()?, parts.next()?.parse::<i64>().ok()?);
                Some(LedgerRow { tenant, metric: metric.to_owned(), minute: DateTime::from_timestamp(minute * 60, 0).unwrap_or(now), quantity: *quantity })
            })
            .collect();
        let mut tx = state.system_pool.0.begin().await?;
        let written = write_ledger(&mut tx, &flush_id, window, &rows).await?;
        tx.commit().await?;
        fault::point("usage.flush.legacy_after_commit");
        report.ledger_rows += written;
        report.windows += usize::from(written > 0);
        let _: () = redis::pipe().del(&key).srem(state.keys.usage_claims(), &flush_id).query_async(&mut conn).await?;
    }
    Ok(report)
}
