//! Dead letters: runs that exhausted their attempts or can never succeed, kept in
//! PostgreSQL with the error, listable and retryable from the CLI.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{JobEnvelope, JobQueue, QueueError};
use crate::db::SystemPool;
use crate::newtypes::JobId;

/// One dead-lettered job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The dead letter's id (what `ballast jobs retry` takes).
    pub id: Uuid,
    /// The job's id.
    pub job_id: String,
    /// The job kind ("?" when the envelope itself was unreadable).
    pub kind: String,
    /// The tenant, when the job named an existing one.
    pub tenant_id: Option<Uuid>,
    /// The run as it was queued (or the raw bytes' JSON when malformed).
    #[schema(value_type = Object)]
    pub envelope: serde_json::Value,
    /// Attempts spent.
    pub attempts: i32,
    /// Why it died.
    pub error: String,
    /// When it died.
    pub failed_at: DateTime<Utc>,
}

pub use super::attempts::MAX_ERROR_TEXT;

/// Records a dead letter. System pool: a dead letter may belong to any tenant or to none,
/// and the worker that writes it holds no tenant context.
pub async fn record(
    pool: &SystemPool,
    job_id: &str,
    kind: &str,
    tenant: Option<Uuid>,
    envelope: &serde_json::Value,
    attempts: u32,
    error: &str,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    // The tenant is kept only if it exists, so a job naming a deleted tenant still dies cleanly.
    sqlx::query(
        "INSERT INTO job_dead_letters (id, job_id, kind, tenant_id, envelope, attempts, error)
         VALUES ($1, $2, $3, (SELECT id FROM tenants WHERE id = $4), $5, $6, $7)",
    )
    .bind(id)
    .bind(job_id)
    .bind(kind)
    .bind(tenant)
    .bind(envelope)
    .bind(attempts as i32)
    .bind(crate::newtypes::truncated(error, MAX_ERROR_TEXT).as_ref())
    .execute(&pool.0)
    .await?;
    Ok(id)
}

/// The most common errors of open dead letters of `kind`, as (error, letters), most common
/// first.
pub async fn error_counts(pool: &SystemPool, kind: &str, limit: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT error, count(*) FROM job_dead_letters WHERE kind = $1 AND retried_at IS NULL AND discarded_at IS NULL
         GROUP BY error ORDER BY count(*) DESC, error LIMIT $2",
    )
    .bind(kind)
    .bind(limit)
    .fetch_all(&pool.0)
    .await
}

/// Open (neither retried nor discarded) dead letters, newest first. System pool: an operator's
/// view across tenants.
pub async fn list(pool: &SystemPool, kind: Option<&str>, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    matching(pool, kind, None, limit).await
}

/// How many open dead letters [`matching`] chooses from (for "N more not shown").
pub async fn count_matching(pool: &SystemPool, kind: Option<&str>, error_contains: Option<&str>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM job_dead_letters WHERE retried_at IS NULL AND discarded_at IS NULL AND ($1::text IS NULL OR kind = $1)
           AND ($2::text IS NULL OR strpos(error, $2) > 0)",
    )
    .bind(kind)
    .bind(error_contains)
    .fetch_one(&pool.0)
    .await
}

/// Open dead letters of `kind` whose error contains `error_contains`, newest first.
pub async fn matching(pool: &SystemPool, kind: Option<&str>, error_contains: Option<&str>, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_id, kind, tenant_id, envelope, attempts, error, failed_at
         FROM job_dead_letters
         WHERE retried_at IS NULL AND discarded_at IS NULL AND ($1::text IS NULL OR kind = $1)
           AND ($2::text IS NULL OR strpos(error, $2) > 0)
         ORDER BY failed_at DESC, id DESC LIMIT $3",
    )
    .bind(kind)
    .bind(error_contains)
    .bind(limit)
    .fetch_all(&pool.0)
    .await
}

/// The dead letter with this id, or the latest one of the job with this id.
pub async fn find(pool: &SystemPool, id_or_job: &str) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_id, kind, tenant_id, envelope, attempts, error, failed_at FROM job_dead_letters
         WHERE id::text = $1 OR job_id = $1 ORDER BY failed_at DESC LIMIT 1",
    )
    .bind(id_or_job)
    .fetch_optional(&pool.0)
    .await
}

/// Takes open dead letters out of the open list for good (kept for the record). Returns how
/// many were open.
pub async fn discard(pool: &SystemPool, ids: &[Uuid], actor: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE job_dead_letters SET discarded_at = now(), discarded_by = $2
         WHERE id = ANY ($1) AND retried_at IS NULL AND discarded_at IS NULL",
    )
    .bind(ids)
    .bind(actor)
    .execute(&pool.0)
    .await?;
    Ok(done.rows_affected())
}

/// Open dead letters per kind.
pub async fn open_counts(pool: &SystemPool) -> Result<std::collections::BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, count(*) FROM job_dead_letters WHERE retried_at IS NULL AND discarded_at IS NULL GROUP BY kind")
            .fetch_all(&pool.0)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Queues a dead letter's job again with a fresh attempt count, and marks it retried in the
/// same transaction: if the enqueue fails the dead letter stays open. System pool: operator action.
pub async fn retry(pool: &SystemPool, queue: &JobQueue, id: Uuid) -> Result<JobId, QueueError> {
    let mut tx = pool.0.begin().await?;
    let row: Option<DeadLetter> = sqlx::query_as(
        "SELECT id, job_id, kind, tenant_id, envelope, attempts, error, failed_at
         FROM job_dead_letters WHERE id = $1 AND retried_at IS NULL AND discarded_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| QueueError::NoDeadLetter(id.to_string()))?;
    let mut envelope: JobEnvelope = serde_json::from_value(row.envelope.clone())
        .map_err(|e| QueueError::NoDeadLetter(format!("{id} (its envelope is malformed and cannot be re-run: {e})")))?;
    envelope.attempt = 1;
    envelope.last_error = None;
    envelope.enqueued_at_us = super::envelope::now_us();
    queue.push(&envelope, None, None).await?;
    sqlx::query("UPDATE job_dead_letters SET retried_at = now() WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(envelope.id)
}

/// Queues every dead letter of `ids` again ([`retry`] each) and writes one audit row for the
/// whole act (`jobs.retry`, with `filter`: the search that chose them): what the CLI, the
/// admin API and the console do.
pub async fn retry_audited(pool: &SystemPool, queue: &JobQueue, ids: &[Uuid], actor: &str, filter: serde_json::Value, progress: &super::job::Progress) -> Result<Vec<JobId>, QueueError> {
    let mut jobs = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        jobs.push(retry(pool, queue, *id).await?);
        progress.report("retry dead letters", i as u64 + 1, Some(ids.len() as u64));
    }
    let mut conn = pool.0.acquire().await?;
    let params = serde_json::json!({"dead_letters": ids, "filter": filter, "job_ids": jobs});
    crate::audit::record(&mut conn, None, actor, "jobs.retry", params, crate::audit::Outcome::Ok).await?;
    Ok(jobs)
}

/// Discards every open dead letter of `ids` ([`discard`]) with one audit row (`jobs.discard`).
pub async fn discard_audited(pool: &SystemPool, ids: &[Uuid], actor: &str, filter: serde_json::Value) -> Result<u64, sqlx::Error> {
    let n = discard(pool, ids, actor).await?;
    let mut conn = pool.0.acquire().await?;
    let params = serde_json::json!({"dead_letters": ids, "filter": filter, "discarded": n});
    crate::audit::record(&mut conn, None, actor, "jobs.discard", params, crate::audit::Outcome::Ok).await?;
    Ok(n)
}

/// Dead letters not retried that failed within `window` (the dead-letter alert).
pub async fn new_within(pool: &SystemPool, window: std::time::Duration) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM job_dead_letters WHERE retried_at IS NULL AND failed_at > now() - make_interval(secs => $1)")
        .bind(window.as_secs_f64())
        .fetch_one(&pool.0)
        .await
}
