//! Dead letters: runs that exhausted their attempts or can never succeed, kept in
//! PostgreSQL with the error, listable and retryable from the CLI.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{JobEnvelope, JobQueue, QueueError};
use crate::db::SystemPool;
use crate::domain::JobId;

/// One dead-lettered job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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
    pub envelope: serde_json::Value,
    /// Attempts spent.
    pub attempts: i32,
    /// Why it died.
    pub error: String,
    /// When it died.
    pub failed_at: DateTime<Utc>,
}

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
    .bind(error)
    .execute(&pool.0)
    .await?;
    Ok(id)
}

/// Open (not yet retried) dead letters, newest first. System pool: an operator's view across tenants.
pub async fn list(pool: &SystemPool, kind: Option<&str>, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_id, kind, tenant_id, envelope, attempts, error, failed_at
         FROM job_dead_letters
         WHERE retried_at IS NULL AND ($1::text IS NULL OR kind = $1)
         ORDER BY failed_at DESC, id DESC LIMIT $2",
    )
    .bind(kind)
    .bind(limit)
    .fetch_all(&pool.0)
    .await
}

/// Queues a dead letter's job again with a fresh attempt count, and marks it retried in the
/// same transaction: if the enqueue fails the dead letter stays open. System pool: operator action.
pub async fn retry(pool: &SystemPool, queue: &JobQueue, id: Uuid) -> Result<JobId, QueueError> {
    let mut tx = pool.0.begin().await?;
    let row: Option<DeadLetter> = sqlx::query_as(
        "SELECT id, job_id, kind, tenant_id, envelope, attempts, error, failed_at
         FROM job_dead_letters WHERE id = $1 AND retried_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| QueueError::NoDeadLetter(id.to_string()))?;
    let mut envelope: JobEnvelope = serde_json::from_value(row.envelope.clone())
        .map_err(|e| QueueError::NoDeadLetter(format!("{id} (its envelope is malformed and cannot be re-run: {e})")))?;
    envelope.attempt = 1;
    envelope.enqueued_at_us = super::envelope::now_us();
    queue.push(&envelope, None, None).await?;
    sqlx::query("UPDATE job_dead_letters SET retried_at = now() WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(envelope.id)
}
