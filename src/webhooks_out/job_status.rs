//! Where a delivery or a message stands as a job: what `GET /v1/jobs/{id}` and `ballast jobs
//! show` read for `whd_…` and `msg_…` ids (the statuses themselves are `webhook_deliveries`',
//! read here; `deliveries` owns the table's writes and its log).

use chrono::{DateTime, Utc};

use super::deliveries::DeliveryStatus;
use crate::db::{DbError, SystemPool, TenantPool};
use crate::newtypes::TenantId;

/// A delivery's job as `GET /v1/jobs/{id}` shows it: pending with no attempt is queued, with
/// attempts retrying; delivered is done; failed and skipped are dead with the reason.
pub async fn job_status(pool: &TenantPool, tenant: TenantId, delivery: uuid::Uuid) -> Result<Option<crate::queue::status::JobStatus>, DbError> {
    use crate::queue::status::{JobState, JobStatus};
    let mut tx = pool.begin(tenant).await?;
    let row: Option<(String, i32, Option<String>, Option<DateTime<Utc>>, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT status, attempts, last_error, next_attempt_at, created_at, finished_at, \
                (SELECT max(attempted_at) FROM webhook_attempts a WHERE a.delivery_id = d.id) FROM webhook_deliveries d WHERE id = $1",
    )
    .bind(delivery)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|(status, attempts, last_error, next_attempt_at, created_at, finished_at, started_at)| {
        let state = match DeliveryStatus::from_name(&status).unwrap_or(DeliveryStatus::Pending) {
            DeliveryStatus::Pending if attempts == 0 => JobState::Queued,
            DeliveryStatus::Pending => JobState::Retrying,
            DeliveryStatus::Delivered => JobState::Done,
            DeliveryStatus::Failed | DeliveryStatus::Skipped => JobState::Dead,
        };
        let next_attempt_at = if state == JobState::Retrying { next_attempt_at } else { None };
        JobStatus { id: super::messages::job_id(delivery).0, kind: super::messages::JOB_KIND.into(), state, attempts, last_error, next_attempt_at, created_at, started_at, finished_at, jobs: Vec::new(), history: Vec::new() }
    }))
}

/// A message's status as `GET /v1/jobs/msg_…` shows it: its deliveries' statuses under
/// `jobs`, summed up — done when every one is delivered, dead when none is left pending and
/// one failed or was skipped, retrying while a failed one tries again, queued before that.
/// `None` when the tenant has no such message.
pub async fn message_status(pool: &TenantPool, tenant: TenantId, message: uuid::Uuid) -> Result<Option<crate::queue::status::JobStatus>, DbError> {
    use crate::queue::status::{JobState, JobStatus};
    let mut tx = pool.begin(tenant).await?;
    let created: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT created_at FROM webhook_messages WHERE id = $1").bind(message).fetch_optional(&mut *tx).await?;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM webhook_deliveries WHERE message_id = $1 ORDER BY created_at, id").bind(message).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let Some(created_at) = created else { return Ok(None) };
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.extend(job_status(pool, tenant, id).await?);
    }
    let any = |s: JobState| jobs.iter().any(|j| j.state == s);
    let state = if jobs.iter().all(|j| j.state == JobState::Done) {
        JobState::Done
    } else if any(JobState::Retrying) {
        JobState::Retrying
    } else if any(JobState::Queued) || any(JobState::Running) {
        JobState::Queued
    } else {
        JobState::Dead
    };
    let finished = matches!(state, JobState::Done | JobState::Dead);
    Ok(Some(JobStatus {
        id: super::messages::webhook_id(message),
        kind: super::messages::JOB_KIND.into(),
        state,
        attempts: jobs.iter().map(|j| j.attempts).sum(),
        last_error: jobs.iter().find_map(|j| j.last_error.clone()),
        next_attempt_at: jobs.iter().filter_map(|j| j.next_attempt_at).min(),
        created_at,
        started_at: jobs.iter().filter_map(|j| j.started_at).min(),
        finished_at: if finished { jobs.iter().filter_map(|j| j.finished_at).max().or(Some(created_at)) } else { None },
        jobs,
        history: Vec::new(),
    }))
}

/// The tenant of a delivery's or a message's job id (`whd_…`, `msg_…`), across tenants: the
/// operator's `ballast jobs show`. System pool.
pub async fn owner(pool: &SystemPool, job_id: &str) -> Result<Option<TenantId>, sqlx::Error> {
    let tenant: Option<uuid::Uuid> = if let Some(delivery) = super::messages::delivery_of(job_id) {
        sqlx::query_scalar("SELECT tenant_id FROM webhook_deliveries WHERE id = $1").bind(delivery).fetch_optional(&pool.0).await?
    } else if let Some(message) = super::messages::message_of(job_id) {
        sqlx::query_scalar("SELECT tenant_id FROM webhook_messages WHERE id = $1").bind(message).fetch_optional(&pool.0).await?
    } else {
        None
    };
    Ok(tenant.map(TenantId))
}
