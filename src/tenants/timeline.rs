//! One tenant's history for support and on-call, newest first: the Stripe events applied to it
//! (type, object, the effects they decided), dunning cases and each step taken, emails (template
//! and status), usage flushed per metric per day, and every audited action that touched it —
//! API keys created and revoked, overrides, support sessions, runbook and bulk runs, tenant
//! changes — with who did it. A read model over the tables their owners write; paged by a
//! cursor on (time, kind, key), never OFFSET.

use chrono::{DateTime, Utc};

use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// One entry.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Entry {
    /// When it happened (an event: when it was applied; usage: the day).
    pub at: DateTime<Utc>,
    /// `stripe_event`, `dunning`, `email`, `usage` or `action` (an audited change).
    pub kind: String,
    /// What it was, for people.
    pub summary: String,
    /// Who did it: an operator, `local:<user>`, a service, `stripe`, `dunning`, `expiry`.
    pub actor: Option<String>,
    /// The particulars (an action's parameters, an event's status and effects).
    pub detail: serde_json::Value,
    /// Unique within its kind (for the cursor).
    pub key: String,
}

/// One page, and where the next starts.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = TimelinePage)]
pub struct Page {
    /// The entries, newest first.
    pub entries: Vec<Entry>,
    /// The next page's cursor; none on the last.
    pub next_cursor: Option<String>,
}

/// Why the timeline could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// The cursor is not one this timeline gave out.
    #[error("the cursor is not one this timeline gave out")]
    BadCursor,
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

/// One page of a tenant's timeline ($1 tenant, $2 since, $3–$5 the cursor, $6 the limit).
pub const QUERY: &str = "
SELECT at, kind, summary, actor, detail, key FROM (
    SELECT coalesce(e.processed_at, e.received_at) AS at, 'stripe_event' AS kind, e.id AS key,
           e.type || coalesce(' ' || e.object_id, '') || CASE WHEN e.status = 'processed' THEN '' ELSE ' (' || e.status || ')' END AS summary,
           'stripe' AS actor,
           jsonb_build_object('status', e.status, 'error', e.last_error,
                              'effects', (SELECT coalesce(jsonb_agg(b.kind ORDER BY b.created_at), '[]') FROM billing_effects b
                                          WHERE b.tenant_id = $1 AND b.event_id = e.id)) AS detail
    FROM stripe_events e WHERE e.tenant_id = $1
    UNION ALL
    SELECT c.opened_at, 'dunning', c.id::text || ':opened', 'dunning case opened for invoice ' || c.invoice_id, 'dunning',
           jsonb_build_object('status', c.status, 'restricted', c.restricted, 'decline_code', c.decline_code)
    FROM dunning_cases c WHERE c.tenant_id = $1
    UNION ALL
    SELECT a.performed_at, 'dunning', a.case_id::text || ':' || a.stage, a.action || ' (' || a.stage || '): ' || a.outcome, 'dunning', a.detail
    FROM dunning_actions a WHERE a.tenant_id = $1
    UNION ALL
    SELECT m.created_at, 'email', m.id::text, m.template || ' email to ' || m.to_address || ': ' || m.status, NULL,
           jsonb_build_object('status', m.status, 'template', m.template)
    FROM email_outbox m WHERE m.tenant_id = $1
    UNION ALL
    SELECT u.day, 'usage', u.metric || ':' || u.day::date::text, u.quantity::text || ' ' || u.metric || ' flushed', NULL,
           jsonb_build_object('metric', u.metric, 'quantity', u.quantity, 'reported', u.reported, 'dead', u.dead)
    FROM (SELECT date_trunc('day', l.usage_minute) AS day, l.metric, sum(l.quantity)::bigint AS quantity,
                 sum(l.quantity) FILTER (WHERE l.report_status = 'reported')::bigint AS reported,
                 sum(l.quantity) FILTER (WHERE l.report_status = 'dead')::bigint AS dead
          FROM usage_ledger l WHERE l.tenant_id = $1 GROUP BY 1, 2) u
    UNION ALL
    SELECT g.at, 'action', g.id::text, g.action || CASE WHEN g.outcome = 'ok' THEN '' ELSE ' (' || g.outcome || ')' END, g.actor, g.params
    FROM audit_log g WHERE g.tenant_id = $1
) entries
WHERE ($2::timestamptz IS NULL OR at >= $2)
  AND ($3::timestamptz IS NULL OR (at, kind, key) < ($3, $4, $5))
ORDER BY at DESC, kind DESC, key DESC
LIMIT $6";

fn encode(e: &Entry) -> String {
    super::cursor::encode(&(e.at, &e.kind, &e.key))
}

fn decode(cursor: &str) -> Result<(DateTime<Utc>, String, String), TimelineError> {
    super::cursor::decode(cursor).ok_or(TimelineError::BadCursor)
}

/// One page of `tenant`'s timeline: at most `limit` entries since `since`, after `cursor`.
pub async fn page(pool: &SystemPool, tenant: TenantId, since: Option<DateTime<Utc>>, cursor: Option<&str>, limit: i64) -> Result<Page, TimelineError> {
    let after = cursor.map(decode).transpose()?;
    let limit = limit.clamp(1, 500);
    let (at, kind, key) = match after {
        Some((a, k, y)) => (Some(a), Some(k), Some(y)),
        None => (None, None, None),
    };
    let mut tx = pool.begin_planned_per_call().await?;
    let mut entries: Vec<Entry> = sqlx::query_as(QUERY)
        .persistent(false)
        .bind(tenant.0)
        .bind(since)
        .bind(at)
        .bind(kind)
        .bind(key)
        .bind(limit + 1)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let more = entries.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { entries.last().map(encode) } else { None };
    Ok(Page { entries, next_cursor })
}
