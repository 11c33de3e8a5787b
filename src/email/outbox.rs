//! The email outbox (`email_outbox`) after a row is written: its states, the send's claim and
//! outcome, and the operators' list and re-drive. Nothing outside the email module writes
//! SQL against the table.

use serde::Serialize;
use sqlx::PgConnection;

use crate::db::SystemPool;
use crate::newtypes::TenantId;
use crate::queue::{EnqueueRequest, JobQueue, QueueError};

/// Where an outbox row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Written, not sent yet (or sending failed transiently).
    Pending,
    /// Accepted by the SMTP relay.
    Sent,
    /// Refused for good (5xx), or given up on.
    Dead,
}

impl OutboxStatus {
    /// Every status.
    pub const ALL: [OutboxStatus; 3] = [OutboxStatus::Pending, OutboxStatus::Sent, OutboxStatus::Dead];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Dead => "dead",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The rows a month's retirement keeps, as an SQL condition (the pending index's predicate):
/// emails not sent yet, moved to the outbox's DEFAULT partition before their month is dropped.
pub const STILL_TO_SEND: &str = "status = 'pending'";

/// Rows one [`prune`] deletes (the `email.prune` service calls it again while batches come
/// back full).
pub const PRUNE_BATCH: u64 = 5_000;

/// Deletes up to [`PRUNE_BATCH`] sent or dead emails written before `retention` ago where no
/// month's retirement takes them ([`crate::db::partitions::outside_months`]: the DEFAULT
/// partition and the heap from before the outbox was partitioned, or the whole outbox before
/// that); returns how many. Ids are UUIDv7s, so "written before" is a range of the key.
pub async fn prune(pool: &SystemPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = crate::db::partitions::cutoff(chrono::Utc::now(), retention);
    if cutoff <= chrono::DateTime::UNIX_EPOCH {
        return Ok(0);
    }
    let sent_before = "id < ballast_uuid_v7_floor($1) AND status <> 'pending'";
    crate::db::partitions::delete_outside_months(&pool.0, "email_outbox", sent_before, cutoff, PRUNE_BATCH).await
}

/// A row as the send job reads it.
#[derive(Debug, sqlx::FromRow)]
pub struct Message {
    /// The stored status (see [`OutboxStatus`]).
    pub status: String,
    /// Recipient.
    pub to_address: String,
    /// Rendered subject.
    pub subject: String,
    /// Rendered text part.
    pub body_text: String,
    /// Rendered HTML part.
    pub body_html: String,
    /// The Message-ID, stable per dedup key (a re-send is recognisably the same email).
    pub message_id: String,
    /// An app email's sender; `None` for Ballast's own (the billing sender).
    pub from_address: Option<String>,
}

impl Message {
    /// The row's status, if it is one Ballast writes.
    pub fn status(&self) -> Option<OutboxStatus> {
        OutboxStatus::parse(&self.status)
    }
}

/// What a send found when it claimed its row.
#[derive(Debug)]
pub enum Claim {
    /// Claimed until the lease ends: send it.
    Send(Message),
    /// Already sent or dead: nothing to do.
    Done(OutboxStatus),
    /// Another run claimed it and its lease runs until then.
    Busy(chrono::DateTime<chrono::Utc>),
    /// No such row.
    Missing,
}

/// Claims row `id` for one send by job `job` for `lease`, in the caller's tenant
/// transaction, which the caller commits before sending: no lock is held while the relay
/// answers. Another job finds the row busy until the lease ends; the same job run again (the
/// queue re-runs a job only once its previous run is dead) takes the claim over at once and
/// sends again, with the same Message-ID, so the recipient's client can tell it is one email.
pub async fn claim(tx: &mut PgConnection, id: uuid::Uuid, job: &str, lease: std::time::Duration) -> Result<Claim, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        message: Message,
        send_lease_until: Option<chrono::DateTime<chrono::Utc>>,
        send_claimed_by: Option<String>,
        now: chrono::DateTime<chrono::Utc>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT status, to_address, subject, body_text, body_html, message_id, from_address, send_lease_until, send_claimed_by, now() AS now
         FROM email_outbox WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(Claim::Missing) };
    match row.message.status() {
        Some(OutboxStatus::Pending) => {}
        Some(other) => return Ok(Claim::Done(other)),
        None => return Ok(Claim::Done(OutboxStatus::Dead)),
    }
    if let Some(until) = row.send_lease_until.filter(|u| *u > row.now)
        && row.send_claimed_by.as_deref() != Some(job)
    {
        return Ok(Claim::Busy(until));
    }
    sqlx::query("UPDATE email_outbox SET send_lease_until = now() + $2, send_claimed_by = $3 WHERE id = $1")
        .bind(id)
        .bind(lease)
        .bind(job)
        .execute(&mut *tx)
        .await?;
    Ok(Claim::Send(row.message))
}

/// Records one send attempt's outcome on row `id` and ends its claim.
pub async fn record_attempt(tx: &mut PgConnection, id: uuid::Uuid, status: OutboxStatus, error: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_outbox SET status = $2, attempts = attempts + 1, last_error = $3, send_lease_until = NULL, send_claimed_by = NULL,
             sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(error)
    .execute(tx)
    .await?;
    Ok(())
}

/// One row as operators see it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct OutboxRow {
    /// Row id.
    pub id: uuid::Uuid,
    /// Tenant.
    pub tenant_id: uuid::Uuid,
    /// Template name.
    pub template: String,
    /// Recipient.
    pub to_address: String,
    /// Status.
    pub status: String,
    /// Send attempts so far.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Written at.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Sent at.
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The newest rows, of one status or all. System pool: operators look across tenants.
pub async fn list(pool: &SystemPool, status: Option<OutboxStatus>, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, template, to_address, status, attempts, last_error, created_at, sent_at FROM email_outbox
         WHERE $1::text IS NULL OR status = $1 ORDER BY created_at DESC LIMIT $2",
    )
    .bind(status.map(OutboxStatus::as_str))
    .bind(limit)
    .fetch_all(&pool.0)
    .await
}

/// How many rows [`list`] chooses from (for "N more not shown").
pub async fn count(pool: &SystemPool, status: Option<OutboxStatus>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE $1::text IS NULL OR status = $1").bind(status.map(OutboxStatus::as_str)).fetch_one(&pool.0).await
}

/// Rows a re-drive would send again: pending ones, and dead ones with `include_dead`, oldest
/// first, as (row, tenant).
pub async fn redrivable(pool: &SystemPool, include_dead: bool) -> Result<Vec<(uuid::Uuid, TenantId)>, sqlx::Error> {
    let statuses: Vec<&str> = if include_dead { vec!["pending", "dead"] } else { vec!["pending"] };
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as("SELECT id, tenant_id FROM email_outbox WHERE status = ANY($1) ORDER BY created_at")
        .bind(&statuses)
        .fetch_all(&pool.0)
        .await?;
    Ok(rows.into_iter().map(|(id, t)| (id, TenantId(t))).collect())
}

/// Sends rows again: a dead row becomes pending, and each gets a fresh send job (without the
/// idempotency key: the first job for the row used it).
pub async fn redrive(pool: &SystemPool, queue: &JobQueue, rows: &[(uuid::Uuid, TenantId)]) -> Result<(), QueueError> {
    for (id, tenant) in rows {
        sqlx::query("UPDATE email_outbox SET status = 'pending' WHERE id = $1 AND status = 'dead'").bind(id).execute(&pool.0).await?;
        let mut req = EnqueueRequest::typed(&super::SendArgs { outbox_id: *id });
        req.tenant = Some(*tenant);
        queue.enqueue(req).await?;
    }
    Ok(())
}

/// Emails created within `window` that are dead (the dead-email alert).
pub async fn dead_within(pool: &SystemPool, window: std::time::Duration) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE status = $1 AND created_at > now() - make_interval(secs => $2)")
        .bind(OutboxStatus::Dead.as_str())
        .bind(window.as_secs_f64())
        .fetch_one(&pool.0)
        .await
}
