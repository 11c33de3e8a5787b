//! The inbox as operators read it (`ballast stripe-events list | show`): what happened to each
//! event — its status (an event whose job was dead-lettered reads `failed`, with the error),
//! its attempts, and the billing effects it wrote — without SQL.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::JOB_KIND;
use crate::db::SystemPool;

/// One event as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventView {
    /// Stripe's event id.
    pub id: String,
    /// Its type.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub event_type: String,
    /// received, queued, retrying, processed, ignored, unmatched (parked until its customer
    /// has a tenant) or failed (its job was dead-lettered).
    pub status: String,
    /// The tenant, once routed.
    pub tenant_id: Option<uuid::Uuid>,
    /// The Stripe customer it concerns.
    pub customer_id: Option<String>,
    /// The object it carries.
    pub object_id: Option<String>,
    /// Attempts that failed so far.
    pub attempts: i32,
    /// The last error: the dead letter's for a failed event, else the last failed attempt's.
    pub last_error: Option<String>,
    /// The dead letter to retry or discard (`ballast jobs retry ID`), for a failed event.
    pub dead_letter: Option<uuid::Uuid>,
    /// When Ballast received it.
    pub received_at: DateTime<Utc>,
    /// When it was applied.
    pub processed_at: Option<DateTime<Utc>>,
}

/// A billing effect an event wrote (what later workers — email, dunning — act on).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EffectView {
    /// The effect's kind.
    pub kind: String,
    /// The object it is about.
    pub subject_id: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When a worker consumed it.
    pub consumed_at: Option<DateTime<Utc>>,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this status (as [`EventView::status`] spells it).
    pub status: Option<String>,
    /// Only this type.
    pub event_type: Option<String>,
    /// Only this tenant's.
    pub tenant: Option<uuid::Uuid>,
}

/// The statuses [`list`] filters by.
pub const STATUSES: [&str; 7] = ["received", "queued", "retrying", "processed", "ignored", "unmatched", "failed"];

// The one status model of an inbox event, which every view reads (`stripe-events list|show`,
// the backlog runbook's counts): applied or ignored is final; a dead letter not retried makes
// it failed (an open one names the dead letter to retry; a discarded one says so in the
// error); a queued event with a failed attempt is being retried; otherwise the stored status.
const SELECT: &str = "SELECT e.id, e.type, e.tenant_id, e.customer_id, e.object_id, e.attempts, e.received_at, e.processed_at, \
    CASE WHEN d.discarded_at IS NULL THEN d.id END AS dead_letter, \
    CASE WHEN d.discarded_at IS NOT NULL THEN d.error || ' (discarded)' ELSE COALESCE(d.error, e.last_error) END AS last_error, \
    CASE WHEN e.status IN ('processed', 'ignored') THEN e.status WHEN d.id IS NOT NULL THEN 'failed' \
         WHEN e.status = 'queued' AND e.attempts > 0 THEN 'retrying' ELSE e.status END AS status \
    FROM stripe_events e LEFT JOIN LATERAL ( \
      SELECT id, error, discarded_at FROM job_dead_letters x WHERE x.kind = $1 AND x.envelope->'payload'->>'event_id' = e.id \
        AND x.retried_at IS NULL ORDER BY x.failed_at DESC LIMIT 1) d ON true";

/// Events, newest first, at most `limit`.
pub async fn list(pool: &SystemPool, filter: &Filter, limit: i64) -> Result<Vec<EventView>, sqlx::Error> {
    let sql = format!(
        "SELECT * FROM ({SELECT} WHERE ($2::text IS NULL OR e.type = $2) AND ($3::uuid IS NULL OR e.tenant_id = $3)) v \
         WHERE ($4::text IS NULL OR v.status = $4) ORDER BY v.received_at DESC LIMIT $5"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(JOB_KIND)
        .bind(&filter.event_type)
        .bind(filter.tenant)
        .bind(&filter.status)
        .bind(limit)
        .fetch_all(&pool.0)
        .await
}

/// How many events [`list`] chooses from (for "N more not shown").
pub async fn count(pool: &SystemPool, filter: &Filter) -> Result<i64, sqlx::Error> {
    let sql = format!(
        "SELECT count(*) FROM ({SELECT} WHERE ($2::text IS NULL OR e.type = $2) AND ($3::uuid IS NULL OR e.tenant_id = $3)) v \
         WHERE ($4::text IS NULL OR v.status = $4)"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(JOB_KIND).bind(&filter.event_type).bind(filter.tenant).bind(&filter.status).fetch_one(&pool.0).await
}

/// Events per shown status, with the oldest received: the same status [`list`] filters by.
pub async fn counts_by_status(pool: &SystemPool) -> Result<Vec<(String, i64, Option<DateTime<Utc>>)>, sqlx::Error> {
    let sql = format!("SELECT v.status, count(*), min(v.received_at) FROM ({SELECT}) v GROUP BY v.status ORDER BY v.status");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(JOB_KIND).fetch_all(&pool.0).await
}

/// One event, with the effects it wrote.
pub async fn show(pool: &SystemPool, id: &str) -> Result<Option<(EventView, Vec<EffectView>)>, sqlx::Error> {
    let sql = format!("{SELECT} WHERE e.id = $2");
    let Some(event) = sqlx::query_as::<_, EventView>(sqlx::AssertSqlSafe(sql)).bind(JOB_KIND).bind(id).fetch_optional(&pool.0).await? else {
        return Ok(None);
    };
    let effects = sqlx::query_as("SELECT kind, subject_id, created_at, consumed_at FROM billing_effects WHERE event_id = $1 ORDER BY created_at")
        .bind(id)
        .fetch_all(&pool.0)
        .await?;
    Ok(Some((event, effects)))
}
