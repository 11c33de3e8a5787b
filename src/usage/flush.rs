//! The usage flush: closed arrival windows move from Redis into the ledger exactly once, then
//! ledger rows are reported to Stripe.
//!
//! Exactly once, across crashes at any step: a window is first claimed (its hash moved aside in
//! Redis under a fresh flush id, atomically), then the claim's ledger rows and its
//! `usage_flushes` row commit together, and only then is the claimed hash deleted. A crash
//! before the commit leaves the claim in Redis (finished next run); a crash after it finds the
//! flush row and only deletes the claim. Ledger ids are derived from (tenant, metric, usage minute, window), and each is
//! sent as the meter event's identifier and idempotency key, so a report repeated after a crash
//! is the same event at Stripe. System pool: the flush spans every tenant.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Deps;
use crate::fault;
use crate::stripe::client::StripeApiError;

/// Errors of the flush.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// Stripe could not take the reports now (429, 5xx, unreachable): retry later.
    #[error("Stripe: {0}")]
    Stripe(String),
}

/// What one flush did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlushReport {
    /// Windows (claims) moved into the ledger.
    pub windows: usize,
    /// Ledger rows written.
    pub ledger_rows: usize,
    /// Rows reported to Stripe.
    pub reported: usize,
    /// Rows Stripe refused for good (4xx), with the reason on the row.
    pub dead: usize,
}

/// Namespace of ledger ids (UUID v5).
const LEDGER_NS: uuid::Uuid = uuid::Uuid::from_u128(0x6a1f_3c2e_9b7d_4e11_8f0a_5d2c_7b3e_9a41);

static CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/claim.lua")));

/// Where a ledger row's report to Stripe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportStatus {
    /// Not reported yet (the next flush reports it).
    Pending,
    /// Stripe accepted the meter event.
    Reported,
    /// Stripe refused it for good (or it cannot be sent): kept for operators, never billed.
    Dead,
}

impl ReportStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Pending => "pending",
            ReportStatus::Reported => "reported",
            ReportStatus::Dead => "dead",
        }
    }
}

/// Flushes windows that closed before `now` (the current and previous minute stay open for
/// requests still in flight; `include_open` flushes them too, which is safe because a claimed
/// window's late writes start a fresh one), then reports pending ledger rows.
pub async fn run(state: &Deps<'_>, now: DateTime<Utc>, include_open: bool) -> Result<FlushReport, FlushError> {
    let mut report = FlushReport::default();
    let closed_before = if include_open { i64::MAX } else { now.timestamp().div_euclid(60) - 1 };
    let mut conn = state.redis.clone();
    let windows: Vec<i64> = redis::cmd("ZRANGEBYSCORE")
        .arg(state.keys.usage_windows())
        .arg("-inf")
        .arg(format!("({closed_before}"))
        .arg("LIMIT")
        .arg(0)
        .arg(1000)
        .query_async(&mut conn)
        .await?;
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
        flush_claim(state, &mut conn, &flush_id, now, &mut report).await?;
    }
    report_pending(state, &mut report).await?;
    Ok(report)
}

/// Moves one claimed window into the ledger, exactly once.
async fn flush_claim(
    state: &Deps<'_>,
    conn: &mut redis::aio::ConnectionManager,
    flush_id: &str,
    now: DateTime<Utc>,
    report: &mut FlushReport,
) -> Result<(), FlushError> {
    let key = state.keys.usage_claimed(flush_id);
    let window: i64 = flush_id.split('-').next().and_then(|w| w.parse().ok()).unwrap_or_default();
    let counts: Vec<(String, i64)> = redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
    fault::point("usage.flush.after_read");
    let mut rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (field, qty) in counts.iter().filter(|(_, q)| *q > 0) {
        let mut parts = field.splitn(3, '|');
        let (Some(tenant), Some(metric), Some(minute)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(tenant), Ok(minute)) = (tenant.parse::<uuid::Uuid>(), minute.parse::<i64>()) else { continue };
        rows.0.push(uuid::Uuid::new_v5(&LEDGER_NS, format!("{tenant}|{metric}|{minute}|{flush_id}").as_bytes()));
        rows.1.push(tenant);
        rows.2.push(metric.to_owned());
        rows.3.push(DateTime::from_timestamp(minute * 60, 0).unwrap_or(now));
        rows.4.push(*qty);
    }
    let mut tx = state.system_pool.0.begin().await?;
    let first: Option<String> = sqlx::query_scalar(
        "INSERT INTO usage_flushes (flush_id, arrival_window, rows) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING flush_id",
    )
    .bind(flush_id)
    .bind(window)
    .bind(rows.0.len() as i32)
    .fetch_optional(&mut *tx)
    .await?;
    if first.is_some() {
        let written = sqlx::query(
            "INSERT INTO usage_ledger (id, tenant_id, metric, usage_minute, flush_id, quantity)
             SELECT id, t, m, u, $6, q FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::bigint[]) AS r (id, t, m, u, q)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&rows.0)
        .bind(&rows.1)
        .bind(&rows.2)
        .bind(&rows.3)
        .bind(&rows.4)
        .bind(flush_id)
        .execute(&mut *tx)
        .await?;
        report.ledger_rows += written.rows_affected() as usize;
        report.windows += 1;
    }
    tx.commit().await?;
    fault::point("usage.flush.after_commit");
    let _: () = redis::pipe().del(&key).srem(state.keys.usage_claims(), flush_id).query_async(conn).await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Pending {
    id: uuid::Uuid,
    metric: String,
    usage_minute: DateTime<Utc>,
    quantity: i64,
    customer: Option<String>,
}

async fn report_pending(state: &Deps<'_>, report: &mut FlushReport) -> Result<(), FlushError> {
    let rows: Vec<Pending> = sqlx::query_as(
        "SELECT l.id, l.metric, l.usage_minute, l.quantity, t.stripe_customer_id AS customer
         FROM usage_ledger l JOIN tenants t ON t.id = l.tenant_id
         WHERE l.report_status = 'pending' ORDER BY l.created_at LIMIT 5000",
    )
    .fetch_all(&state.system_pool.0)
    .await?;
    for row in rows {
        let event_name = state.plans.metrics.get(&row.metric).map(|m| m.stripe_event.clone());
        let outcome = match (&row.customer, event_name) {
            (None, _) => Err("the tenant has no Stripe customer".to_owned()),
            (_, None) => Err(format!("metric {:?} is not in the plan catalogue", row.metric)),
            (Some(customer), Some(event)) => {
                let id = row.id.to_string();
                match state.stripe.meter_event(&event, customer, row.quantity, row.usage_minute.timestamp(), &id).await {
                    Ok(_) => Ok(()),
                    Err(StripeApiError::Refused { status, code, message, .. }) => Err(format!("{status} {code}: {message}")),
                    Err(e) => return Err(FlushError::Stripe(e.to_string())),
                }
            }
        };
        fault::point("usage.flush.after_report");
        let (status, error) = match &outcome {
            Ok(()) => (ReportStatus::Reported, None),
            Err(reason) => (ReportStatus::Dead, Some(reason.as_str())),
        };
        sqlx::query("UPDATE usage_ledger SET report_status = $2, report_error = $3, reported_at = CASE WHEN $2 = 'reported' THEN now() END WHERE id = $1")
            .bind(row.id)
            .bind(status.as_str())
            .bind(error)
            .execute(&state.system_pool.0)
            .await?;
        match outcome {
            Ok(()) => report.reported += 1,
            Err(reason) => {
                report.dead += 1;
                tracing::error!(message = "Usage row refused by Stripe; dead-lettered on the ledger.", ledger_id = %row.id, reason = %reason);
            }
        }
    }
    Ok(())
}
