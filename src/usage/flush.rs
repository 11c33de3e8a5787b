//! The usage flush: items stored by the intake move into the ledger exactly once, then ledger
//! rows are reported to Stripe.
//!
//! Exactly once, across crashes at any step: one transaction marks a batch of unflushed
//! `usage_items` with a fresh flush id, writes their sums per (tenant, metric, minute) as
//! ledger rows and records the flush; a crash before the commit leaves the items unflushed for
//! the next run, a crash after it leaves nothing to redo. Ledger ids are derived from (tenant,
//! metric, usage minute, flush), and each is sent as the meter event's identifier and
//! idempotency key, so a report repeated after a crash is the same event at Stripe. Stripe is
//! called after the commit, never inside a transaction. System pool: the flush spans every
//! tenant.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Deps;
use super::ledger::{LedgerRow, write_ledger};
use crate::fault;
use crate::stripe_api::StripeApiError;

/// Errors of the flush.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
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
    /// Batches of items moved into the ledger (one transaction each).
    pub batches: usize,
    /// Ledger rows written.
    pub ledger_rows: usize,
    /// Rows reported to Stripe.
    pub reported: usize,
    /// Rows Stripe refused for good (4xx), with the reason on the row.
    pub dead: usize,
    /// Rows held back, still pending, because their tenant has no Stripe customer yet: they
    /// are reported once one is bound (provisioning, a checkout or an event naming the tenant).
    pub held: usize,
    /// Flushed items past their two days, deleted.
    pub pruned: usize,
}

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

/// Items flushed per transaction.
const BATCH: i64 = 20_000;

/// How long flushed items are kept (for deduplication: the idempotency window is 24 hours).
const KEEP_FLUSHED: chrono::Duration = chrono::Duration::hours(48);

/// Flushes items received before the current minute began (`include_open`: every item),
/// then reports pending ledger rows and prunes items flushed more than two days ago.
pub async fn run(state: &Deps, now: DateTime<Utc>, include_open: bool) -> Result<FlushReport, FlushError> {
    let mut report = FlushReport::default();
    let cutoff = if include_open { now + chrono::Duration::days(1) } else { DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0).unwrap_or(now) };
    while flush_batch(state, cutoff, &mut report).await? {}
    report_pending(state, &mut report).await?;
    let pruned = sqlx::query(
        "DELETE FROM usage_items WHERE ctid IN (SELECT ctid FROM usage_items WHERE flush_id IS NOT NULL AND received_at < $1 LIMIT 50000)",
    )
    .bind(now - KEEP_FLUSHED)
    .execute(&state.system_pool.0)
    .await?;
    report.pruned = pruned.rows_affected() as usize;
    Ok(report)
}

/// Moves one batch of unflushed items into the ledger in one transaction; false when none.
async fn flush_batch(state: &Deps, cutoff: DateTime<Utc>, report: &mut FlushReport) -> Result<bool, FlushError> {
    let flush_id = format!("i-{}", uuid::Uuid::now_v7().simple());
    let mut tx = state.system_pool.0.begin().await?;
    // SKIP LOCKED: two flushes at once take different items instead of waiting.
    let sums: Vec<(uuid::Uuid, String, DateTime<Utc>, i64)> = sqlx::query_as(
        "WITH claimed AS (
             UPDATE usage_items SET flush_id = $1
             WHERE (tenant_id, idempotency_key) IN (
                 SELECT tenant_id, idempotency_key FROM usage_items
                 WHERE flush_id IS NULL AND received_at < $2 ORDER BY received_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING tenant_id, metric, usage_minute, quantity)
         SELECT tenant_id, metric, usage_minute, sum(quantity)::bigint FROM claimed GROUP BY 1, 2, 3",
    )
    .bind(&flush_id)
    .bind(cutoff)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if sums.is_empty() {
        tx.rollback().await?;
        return Ok(false);
    }
    fault::point("usage.flush.after_read");
    let rows: Vec<LedgerRow> = sums.into_iter().map(|(tenant, metric, minute, quantity)| LedgerRow { tenant, metric, minute, quantity }).collect();
    let written = write_ledger(&mut tx, &flush_id, cutoff.timestamp().div_euclid(60), &rows).await?;
    tx.commit().await?;
    fault::point("usage.flush.after_commit");
    report.ledger_rows += written;
    report.batches += 1;
    Ok(true)
}

#[derive(sqlx::FromRow)]
struct Pending {
    id: uuid::Uuid,
    metric: String,
    usage_minute: DateTime<Utc>,
    quantity: i64,
    customer: Option<String>,
}

async fn report_pending(state: &Deps, report: &mut FlushReport) -> Result<(), FlushError> {
    let rows: Vec<Pending> = sqlx::query_as(
        "SELECT l.id, l.metric, l.usage_minute, l.quantity, t.stripe_customer_id AS customer
         FROM usage_ledger l JOIN tenants t ON t.id = l.tenant_id
         WHERE l.report_status = 'pending' AND t.stripe_customer_id IS NOT NULL ORDER BY l.created_at LIMIT 5000",
    )
    .fetch_all(&state.system_pool.0)
    .await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM usage_ledger l JOIN tenants t ON t.id = l.tenant_id
         WHERE l.report_status = 'pending' AND t.stripe_customer_id IS NULL",
    )
    .fetch_one(&state.system_pool.0)
    .await?;
    report.held = usize::try_from(held).unwrap_or(usize::MAX);
    for row in rows {
        let event_name = state.plans.metrics.get(&row.metric).map(|m| m.stripe_event.clone());
        let outcome = match (&row.customer, event_name) {
            // Selected with a customer; a row whose tenant lost it meanwhile waits its turn.
            (None, _) => continue,
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
        // With the minute, a partitioned ledger looks in one month's partition, not every one.
        sqlx::query("UPDATE usage_ledger SET report_status = $2, report_error = $3, reported_at = now() WHERE id = $1 AND usage_minute = $4")
            .bind(row.id)
            .bind(status.as_str())
            .bind(error)
            .bind(row.usage_minute)
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
