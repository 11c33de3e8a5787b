//! The `webhook_deliveries` and `webhook_attempts` tables: where each message stands with each
//! endpoint, and every attempt with the endpoint's answer. The worker reads and records in
//! batches across tenants (system pool, see [`crate::db::batch`]); tenants read their own log
//! and re-send through the tenant pool (RLS).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{DbError, SystemPool, TenantPool};
use crate::newtypes::TenantId;

/// Longest part of an endpoint's answer kept in the log.
pub const MAX_RESPONSE_BODY: usize = 2048;

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx; attempts continue.
    Pending,
    /// An attempt got a 2xx.
    Delivered,
    /// Its attempts ran out (about three days); the tenant may re-send it.
    Failed,
    /// The endpoint was disabled or deleted before it got through.
    Skipped,
}

impl DeliveryStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    /// The status named `s`, if there is one (a query's `status`).
    pub fn from_name(s: &str) -> Option<Self> {
        [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Failed, DeliveryStatus::Skipped].into_iter().find(|v| v.as_str() == s)
    }

    /// A stored status (the table's CHECK allows only the four).
    fn parse(s: &str) -> Self {
        Self::from_name(s).unwrap_or(DeliveryStatus::Pending)
    }
}

/// What one delivery's run needs, read with others in one query.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Loaded {
    /// The delivery.
    pub id: uuid::Uuid,
    /// Its tenant.
    pub tenant_id: uuid::Uuid,
    /// Stored status text.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// The message.
    pub message_id: uuid::Uuid,
    /// The exact body to sign and send.
    pub body: String,
    /// The endpoint.
    pub endpoint_id: uuid::Uuid,
    /// Where to POST.
    pub url: String,
    /// The current signing secret, sealed (`crate::keyring`).
    pub secret: String,
    /// The previous one, signing until `previous_secret_until`.
    pub previous_secret: Option<String>,
    /// End of a rotation's overlap.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Set when the endpoint is disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Set when the endpoint is deleted.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Loaded {
    /// Where the delivery stands.
    pub fn status(&self) -> DeliveryStatus {
        DeliveryStatus::parse(&self.status)
    }

    /// The secrets that sign now, opened: the current one, and the previous one during an overlap.
    pub fn signing_secrets(&self, keyring: &crate::keyring::Keyring, now: DateTime<Utc>) -> Result<Vec<String>, crate::keyring::KeyringError> {
        let row = super::endpoints::sealed_row(self.endpoint_id);
        super::endpoints::signing_set(&self.secret, self.previous_secret.as_deref(), self.previous_secret_until, now)
            .into_iter()
            .map(|sealed| keyring.open(sealed, &row))
            .collect()
    }
}

/// Reads deliveries by id (those that exist), across tenants: the worker batches the reads of
/// its concurrent runs, whatever their tenant, and each run checks the tenant it expects.
pub async fn load_many(pool: &SystemPool, ids: &[uuid::Uuid]) -> Result<Vec<Loaded>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.tenant_id, d.status, d.attempts, m.id AS message_id, m.body, e.id AS endpoint_id, e.url, e.secret, \
                e.previous_secret, e.previous_secret_until, e.disabled_at, e.deleted_at \
         FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&pool.0)
    .await
}

/// One attempt's result, to record.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it started.
    pub at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// The endpoint's status code, if it answered.
    pub status_code: Option<i32>,
    /// The start of its answer's body.
    pub response_body: Option<String>,
    /// Why it failed, when it did (refused address, timeout, connection, non-2xx).
    pub error: Option<String>,
}

/// A delivery's new state after a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The delivery.
    pub delivery_id: uuid::Uuid,
    /// Its tenant.
    pub tenant_id: uuid::Uuid,
    /// Its endpoint.
    pub endpoint_id: uuid::Uuid,
    /// The attempt's number (1 for the first).
    pub attempt: i32,
    /// The attempt, when one was made (none for a skipped delivery).
    pub made: Option<Attempt>,
    /// Where the delivery goes.
    pub status: DeliveryStatus,
    /// When the next attempt runs (pending).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The error shown for the delivery.
    pub error: Option<String>,
}

/// An endpoint a batch disabled (failing for too long): its tenant is told once.
#[derive(Debug, Clone)]
pub struct Disabled {
    /// The endpoint.
    pub endpoint_id: uuid::Uuid,
    /// Its tenant.
    pub tenant_id: uuid::Uuid,
    /// Its URL.
    pub url: String,
    /// Since when it failed.
    pub failing_since: DateTime<Utc>,
}

/// Records many runs' outcomes in one transaction: attempts, delivery states, and each
/// endpoint's health — a success clears `failing_since`, a failure sets it if unset, and an
/// endpoint failing since before `disable_after` ago is disabled (returned, once).
pub async fn record_many(tx: &mut sqlx::PgConnection, outcomes: &[Outcome], disable_after: chrono::Duration) -> Result<Vec<Disabled>, sqlx::Error> {
    let made: Vec<(&Outcome, &Attempt)> = outcomes.iter().filter_map(|o| o.made.as_ref().map(|a| (o, a))).collect();
    if !made.is_empty() {
        sqlx::query(
            "INSERT INTO webhook_attempts (id, tenant_id, delivery_id, attempt, attempted_at, duration_ms, status_code, response_body, error) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::timestamptz[], $6::int[], $7::int[], $8::text[], $9::text[])",
        )
        .bind(made.iter().map(|_| uuid::Uuid::now_v7()).collect::<Vec<_>>())
        .bind(made.iter().map(|(o, _)| o.tenant_id).collect::<Vec<_>>())
        .bind(made.iter().map(|(o, _)| o.delivery_id).collect::<Vec<_>>())
        .bind(made.iter().map(|(o, _)| o.attempt).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.at).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.duration_ms).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.status_code).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.response_body.clone()).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.error.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE webhook_deliveries d SET status = u.status, attempts = GREATEST(d.attempts, u.attempt), last_error = u.error, \
         next_attempt_at = u.next_at, finished_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END \
         FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[]) AS u(id, status, attempt, error, next_at) \
         WHERE d.id = u.id AND d.status = 'pending'",
    )
    .bind(outcomes.iter().map(|o| o.delivery_id).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.attempt).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.error.clone()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.next_attempt_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let answered = |ok: bool| -> Vec<uuid::Uuid> {
        let mut ids: Vec<uuid::Uuid> = outcomes.iter().filter(|o| o.made.is_some() && (o.status == DeliveryStatus::Delivered) == ok).map(|o| o.endpoint_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let (healthy, failing) = (answered(true), answered(false));
    if !healthy.is_empty() {
        sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ANY($1) AND failing_since IS NOT NULL").bind(&healthy).execute(&mut *tx).await?;
    }
    if failing.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("UPDATE webhook_endpoints SET failing_since = now() WHERE id = ANY($1) AND failing_since IS NULL").bind(&failing).execute(&mut *tx).await?;
    let disabled: Vec<(uuid::Uuid, uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = 'every delivery failed since ' || to_char(failing_since, 'YYYY-MM-DD HH24:MI TZ') \
         WHERE id = ANY($1) AND disabled_at IS NULL AND deleted_at IS NULL AND failing_since < now() - $2 \
         RETURNING id, tenant_id, url, failing_since",
    )
    .bind(&failing)
    .bind(disable_after)
    .fetch_all(&mut *tx)
    .await?;
    Ok(disabled.into_iter().map(|(endpoint_id, tenant_id, url, failing_since)| Disabled { endpoint_id, tenant_id, url, failing_since }).collect())
}

/// One attempt, as the tenant reads it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AttemptLog {
    /// 1 for the first.
    pub attempt: i32,
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// The endpoint's status code.
    pub status_code: Option<i32>,
    /// The start of the endpoint's answer (at most 2 KiB).
    pub response_body: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    #[serde(skip)]
    delivery_id: uuid::Uuid,
}

/// A delivery with its attempts, as the tenant reads it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryLog {
    /// The delivery.
    pub id: uuid::Uuid,
    /// Its job (`GET /v1/jobs/{id}`).
    pub job_id: String,
    /// The message's `webhook-id`.
    pub webhook_id: String,
    /// The event type.
    pub event_type: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i32,
    /// The latest error.
    pub last_error: Option<String>,
    /// When the next attempt runs (pending).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it was delivered, failed or skipped.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its attempts, first to last.
    pub attempt_log: Vec<AttemptLog>,
}

type LogRow = (uuid::Uuid, uuid::Uuid, String, String, i32, Option<String>, Option<DateTime<Utc>>, DateTime<Utc>, Option<DateTime<Utc>>);

/// Which of an endpoint's deliveries [`list`] reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFilter {
    /// Only those in this status.
    pub status: Option<DeliveryStatus>,
    /// The page after this delivery.
    pub after: Option<uuid::Uuid>,
    /// Only this delivery (`ballast deliveries show`).
    pub only: Option<uuid::Uuid>,
}

/// The tenant and endpoint of delivery `id`, across tenants (the operator's `ballast
/// deliveries show|resend`). System pool.
pub async fn located(pool: &SystemPool, id: uuid::Uuid) -> Result<Option<(TenantId, uuid::Uuid)>, sqlx::Error> {
    let row: Option<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as("SELECT tenant_id, endpoint_id FROM webhook_deliveries WHERE id = $1").bind(id).fetch_optional(&pool.0).await?;
    Ok(row.map(|(t, e)| (TenantId(t), e)))
}

/// A page of an endpoint's deliveries, newest first (optionally only those in `status`), the
/// `limit` after delivery `after`, each with its attempts; `None` when the tenant has no such
/// endpoint.
pub async fn list(
    pool: &TenantPool,
    tenant: TenantId,
    endpoint: uuid::Uuid,
    filter: LogFilter,
    limit: i64,
) -> Result<Option<super::endpoints::Page<DeliveryLog>>, DbError> {
    let LogFilter { status, after, only } = filter;
    let mut tx = pool.begin(tenant).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1)").bind(endpoint).fetch_one(&mut *tx).await?;
    if !exists {
        return Ok(None);
    }
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT d.id, d.message_id, m.event_type, d.status, d.attempts, d.last_error, d.next_attempt_at, d.created_at, d.finished_at \
         FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id \
         WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2) \
           AND ($4::uuid IS NULL OR (d.created_at, d.id) < (SELECT created_at, id FROM webhook_deliveries WHERE id = $4)) \
           AND ($5::uuid IS NULL OR d.id = $5) \
         ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
    )
    .bind(endpoint)
    .bind(status.map(DeliveryStatus::as_str))
    .bind(limit + 1)
    .bind(after)
    .bind(only)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.0).collect();
    let attempts: Vec<AttemptLog> = sqlx::query_as(
        "SELECT attempt, attempted_at, duration_ms, status_code, response_body, error, delivery_id FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY attempt",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let page = super::endpoints::Page::of(rows, limit);
    Ok(Some(super::endpoints::Page {
        has_more: page.has_more,
        data: page
            .data
            .into_iter()
            .map(|r| DeliveryLog {
                id: r.0,
                job_id: super::messages::job_id(r.0).0,
                webhook_id: super::messages::webhook_id(r.1),
                event_type: r.2,
                status: DeliveryStatus::parse(&r.3),
                attempts: r.4,
                last_error: r.5,
                next_attempt_at: r.6,
                created_at: r.7,
                finished_at: r.8,
                attempt_log: attempts.iter().filter(|a| a.delivery_id == r.0).cloned().collect(),
            })
            .collect(),
    }))
}

/// Why a re-send was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    /// No delivery of that id to that endpoint of this tenant's.
    #[error("no such delivery")]
    NotFound,
    /// It is still being delivered.
    #[error("the delivery is still pending; it is re-sent by its own retries")]
    Pending,
    /// The endpoint is disabled or deleted.
    #[error("the endpoint is disabled or deleted; re-enable it first")]
    EndpointOff,
    /// PostgreSQL failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ResendError {
    fn from(e: sqlx::Error) -> Self {
        ResendError::Db(DbError::Sql(e))
    }
}

/// Sends a finished delivery's message to its endpoint again, as a new delivery (the same
/// `webhook-id`, so the receiver can tell). The caller pushes the returned delivery's job.
pub async fn resend(pool: &TenantPool, tenant: TenantId, endpoint: uuid::Uuid, delivery: uuid::Uuid) -> Result<uuid::Uuid, ResendError> {
    let mut tx = pool.begin(tenant).await?;
    let found: Option<(String, Option<DateTime<Utc>>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT d.status, e.disabled_at, e.deleted_at FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1 AND d.endpoint_id = $2",
    )
    .bind(delivery)
    .bind(endpoint)
    .fetch_optional(&mut *tx)
    .await?;
    match found {
        None => return Err(ResendError::NotFound),
        Some((status, ..)) if DeliveryStatus::parse(&status) == DeliveryStatus::Pending => return Err(ResendError::Pending),
        Some((_, disabled, deleted)) if disabled.is_some() || deleted.is_some() => return Err(ResendError::EndpointOff),
        Some(_) => {}
    }
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id) SELECT $1, tenant_id, message_id, endpoint_id FROM webhook_deliveries WHERE id = $2 RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(delivery)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Deliveries (and messages) one [`prune`] deletes.
pub const PRUNE_BATCH: u64 = 10_000;

/// Deliveries a month's retirement keeps (moved to the DEFAULT partition): ones still pending
/// (a month leaves at least a week past its last day, and retries end after about three, so
/// this is a guard, not a path).
pub const STILL_PENDING: &str = "status = 'pending'";

/// Attempts a month's retirement keeps: those of the deliveries [`STILL_PENDING`] kept (the
/// deliveries retire first, so those are in the DEFAULT partition by then).
pub const OF_STILL_PENDING: &str = "delivery_id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending')";

/// Deletes deliveries finished more than `retention` ago with their attempts, and messages left
/// with no delivery, up to [`PRUNE_BATCH`] of each per call (the `deliveries.prune` service calls
/// it again while batches come back full). System pool: retention spans tenants. Deliveries are
/// partitioned by month (0062) and leave with their month; this deletes only where no month
/// would in time: the DEFAULT partition (kept rows, ids no month holds) and the first
/// partition, the heap from before 0062, which holds every delivery up to two months past the
/// upgrade (or the whole table on a database 0062 has not reached yet).
pub async fn prune(pool: &SystemPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = crate::db::partitions::cutoff(Utc::now(), retention);
    let tables = crate::db::partitions::outside_months(&pool.0, "webhook_deliveries").await?;
    let mut tx = pool.0.begin().await?;
    let mut deleted = 0;
    for table in tables {
        // The batch is shared, so a full batch still means more may be due.
        let left = PRUNE_BATCH - deleted;
        if left == 0 {
            break;
        }
        let old: Vec<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM {table} WHERE finished_at < $1 LIMIT $2")))
            .bind(cutoff)
            .bind(left as i64)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_attempts WHERE delivery_id = ANY($1)").bind(&old).execute(&mut *tx).await?;
        deleted += sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE id = ANY($1)"))).bind(&old).execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    // Messages no delivery names any more, where no month retires them (since 0076 messages
    // are partitioned by month of their id, as deliveries are).
    crate::db::partitions::delete_outside_months(
        &pool.0,
        "webhook_messages",
        "created_at < $1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.message_id = candidate.id)",
        cutoff,
        PRUNE_BATCH,
    )
    .await?;
    Ok(deleted)
}

/// Deliveries that failed for good within `window` (the dead-delivery alert).
pub async fn failed_within(pool: &SystemPool, window: std::time::Duration) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = $1 AND finished_at > now() - make_interval(secs => $2)")
        .bind(DeliveryStatus::Failed.as_str())
        .bind(window.as_secs_f64())
        .fetch_one(&pool.0)
        .await
}
