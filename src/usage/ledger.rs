//! Writing the usage ledger (`usage_ledger`, with `usage_flushes`): rows whose ids derive from
//! (tenant, metric, minute, flush), so a flush repeated after a crash writes nothing twice.

use chrono::{DateTime, Utc};

/// Namespace of ledger ids (UUID v5).
const LEDGER_NS: uuid::Uuid = uuid::Uuid::from_u128(0x6a1f_3c2e_9b7d_4e11_8f0a_5d2c_7b3e_9a41);

/// One ledger row to write: a tenant's units of a metric in a minute.
pub struct LedgerRow {
    /// The tenant.
    pub tenant: uuid::Uuid,
    /// The metric.
    pub metric: String,
    /// The minute the units were used in.
    pub minute: DateTime<Utc>,
    /// The units.
    pub quantity: i64,
}

/// Records a flush and its ledger rows in the caller's transaction; returns the rows written.
/// A flush id seen before writes nothing (its rows are already there). The conflict is on
/// `(id, usage_minute)`, as unique as the id (which derives from the minute), because that is
/// the key the ledger keeps partitioned by month of `usage_minute` (0053): it works on the
/// table before and after the conversion (release 0.2.0 on).
pub async fn write_ledger(tx: &mut sqlx::PgConnection, flush_id: &str, window: i64, rows: &[LedgerRow]) -> Result<usize, sqlx::Error> {
    let first: Option<String> = sqlx::query_scalar(
        "INSERT INTO usage_flushes (flush_id, arrival_window, rows) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING flush_id",
    )
    .bind(flush_id)
    .bind(window)
    .bind(rows.len() as i32)
    .fetch_optional(&mut *tx)
    .await?;
    if first.is_none() {
        return Ok(0);
    }
    let ids: Vec<uuid::Uuid> =
        rows.iter().map(|r| uuid::Uuid::new_v5(&LEDGER_NS, format!("{}|{}|{}|{flush_id}", r.tenant, r.metric, r.minute.timestamp().div_euclid(60)).as_bytes())).collect();
    let tenants: Vec<uuid::Uuid> = rows.iter().map(|r| r.tenant).collect();
    let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
    let minutes: Vec<DateTime<Utc>> = rows.iter().map(|r| r.minute).collect();
    let quantities: Vec<i64> = rows.iter().map(|r| r.quantity).collect();
    let written = sqlx::query(
        "INSERT INTO usage_ledger (id, tenant_id, metric, usage_minute, flush_id, quantity)
         SELECT id, t, m, u, $6, q FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::bigint[]) AS r (id, t, m, u, q)
         ON CONFLICT (id, usage_minute) DO NOTHING",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&metrics)
    .bind(&minutes)
    .bind(&quantities)
    .bind(flush_id)
    .execute(&mut *tx)
    .await?;
    Ok(written.rows_affected() as usize)
}


/// A ledger row as an operator reads it: what was flushed, and whether Stripe has it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct LedgerEntry {
    /// The metric.
    pub metric: String,
    /// The minute the units were used in.
    pub usage_minute: DateTime<Utc>,
    /// Units.
    pub quantity: i64,
    /// pending (not reported yet), reported (Stripe has the meter event) or dead (refused).
    pub report_status: String,
    /// When Stripe answered: accepted it (reported) or refused it (dead).
    pub reported_at: Option<DateTime<Utc>>,
    /// Why Stripe refused it.
    pub report_error: Option<String>,
    /// The flush that wrote it.
    pub flush_id: String,
}

/// A tenant's ledger, newest minute first, `limit` rows, with how many rows it has in all.
pub async fn entries(pool: &crate::db::TenantPool, tenant: crate::newtypes::TenantId, limit: i64) -> Result<(Vec<LedgerEntry>, i64), crate::db::DbError> {
    let mut tx = pool.begin(tenant).await?;
    let rows: Vec<LedgerEntry> = sqlx::query_as(
        "SELECT metric, usage_minute, quantity, report_status, reported_at, report_error, flush_id FROM usage_ledger ORDER BY usage_minute DESC, metric LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_ledger").fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok((rows, total))
}

/// Ledger rows Stripe refused (dead) within `window` (the dead usage-report alert).
pub async fn dead_within(pool: &crate::db::SystemPool, window: std::time::Duration) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM usage_ledger WHERE report_status = 'dead' AND reported_at > now() - make_interval(secs => $1)")
        .bind(window.as_secs_f64())
        .fetch_one(&pool.0)
        .await
}
