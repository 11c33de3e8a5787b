//! Job search for operators (the console's jobs page): tracked jobs in any state
//! (`job_status`) and open dead letters (`job_dead_letters`, those a status row does not
//! already show), by kind, state, tenant, error text and time, newest first, a page at a time by a
//! keyset cursor (time, id) — never OFFSET, never a scan of Redis. A read model: it writes
//! nothing and reads the two tables' rows as their owners store them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::SystemPool;

/// What to look for; each field given narrows the search.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobSearch {
    /// The job kind.
    pub kind: Option<String>,
    /// `queued`, `running`, `retrying`, `done` or `dead`.
    pub state: Option<String>,
    /// The tenant.
    pub tenant: Option<uuid::Uuid>,
    /// Text the last error contains.
    pub error: Option<String>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
}

/// One job found.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FoundJob {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Where it is.
    pub state: String,
    /// Its tenant.
    pub tenant_id: Option<uuid::Uuid>,
    /// Attempts made.
    pub attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was queued (or, for a dead letter, when it died).
    pub at: DateTime<Utc>,
}

/// A page.
#[derive(Debug, Clone, Serialize)]
pub struct FoundPage {
    /// Newest first.
    pub jobs: Vec<FoundJob>,
    /// The next page's cursor.
    pub next_cursor: Option<String>,
}

/// A search that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The cursor is not one this search gave out.
    #[error("the cursor is not one this search gave out")]
    BadCursor,
    /// The state is not one of the five.
    #[error("state is queued, running, retrying, done or dead")]
    BadState,
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

const STATES: [&str; 5] = ["queued", "running", "retrying", "done", "dead"];

/// A page of jobs matching `q`, at most `limit` (1 to 200), after `cursor`.
pub async fn search(pool: &SystemPool, q: &JobSearch, cursor: Option<&str>, limit: i64) -> Result<FoundPage, SearchError> {
    if q.state.as_deref().is_some_and(|s| !STATES.contains(&s)) {
        return Err(SearchError::BadState);
    }
    let after: Option<(DateTime<Utc>, String)> = match cursor {
        Some(c) => Some(crate::tenants::cursor::decode(c).ok_or(SearchError::BadCursor)?),
        None => None,
    };
    let limit = limit.clamp(1, 200);
    // Each side is bounded and ordered by its own index; the merge takes the newest.
    let mut tx = pool.begin_planned_per_call().await?;
    let rows: Vec<FoundJob> = sqlx::query_as(
        "(SELECT s.id, s.kind, s.state, s.tenant_id, s.attempts, s.last_error, s.created_at AS at FROM job_status s
          WHERE ($1::text IS NULL OR s.kind = $1) AND ($2::text IS NULL OR s.state = $2) AND ($3::uuid IS NULL OR s.tenant_id = $3)
            AND ($4::text IS NULL OR s.last_error ILIKE '%' || $4 || '%') AND ($5::timestamptz IS NULL OR s.created_at >= $5)
            AND ($6::timestamptz IS NULL OR s.created_at < $6) AND ($7::timestamptz IS NULL OR (s.created_at, s.id) < ($7, $8))
          ORDER BY s.created_at DESC, s.id DESC LIMIT $9)
         UNION ALL
         (SELECT d.job_id, d.kind, 'dead', d.tenant_id, d.attempts, d.error, d.failed_at FROM job_dead_letters d
          WHERE ($2::text IS NULL OR $2 = 'dead') AND ($1::text IS NULL OR d.kind = $1) AND ($3::uuid IS NULL OR d.tenant_id = $3)
            AND ($4::text IS NULL OR d.error ILIKE '%' || $4 || '%') AND ($5::timestamptz IS NULL OR d.failed_at >= $5)
            AND ($6::timestamptz IS NULL OR d.failed_at < $6) AND ($7::timestamptz IS NULL OR (d.failed_at, d.job_id) < ($7, $8))
            AND d.retried_at IS NULL AND d.discarded_at IS NULL AND NOT EXISTS (SELECT 1 FROM job_status s WHERE s.id = d.job_id)
          ORDER BY d.failed_at DESC, d.job_id DESC LIMIT $9)
         ORDER BY at DESC, id DESC LIMIT $9",
    )
    .bind(&q.kind)
    .bind(&q.state)
    .bind(q.tenant)
    .bind(&q.error)
    .bind(q.from)
    .bind(q.to)
    .bind(after.as_ref().map(|a| a.0))
    .bind(after.as_ref().map(|a| a.1.clone()))
    .bind(limit + 1)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let more = rows.len() as i64 > limit;
    let jobs: Vec<FoundJob> = rows.into_iter().take(limit as usize).collect();
    let next_cursor = if more { jobs.last().map(|j| crate::tenants::cursor::encode(&(j.at, j.id.clone()))) } else { None };
    Ok(FoundPage { jobs, next_cursor })
}
