//! The `webhook_messages` table, and the intake of a message: written with one delivery per
//! subscribed endpoint before the answer (concurrent requests share the transaction, each
//! tenant's rows written bound to that tenant), then each delivery's job queued. A lost push (a crash, Redis down after the commit) is queued again by [`sweep`].

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::db::{DbError, SystemPool, TenantPool};
use crate::newtypes::{JobId, TenantId};

/// The job kind that makes one delivery.
pub const JOB_KIND: &str = "webhook.deliver";
/// The prefix of a delivery's job id (`whd_` and the delivery's id).
pub const JOB_ID_PREFIX: &str = "whd_";

/// What an app service sends: an event type and its data. Ballast wraps them in the payload
/// structure the Standard Webhooks specification recommends, `{type, timestamp, data}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The event type (`invoice.paid`); endpoints subscribe to types.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's data: any JSON object.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The event type is not one an endpoint could subscribe to.
    #[error("type: letters, digits, '.', '_' and '-', 1 to 100 characters (e.g. invoice.paid)")]
    BadType,
    /// PostgreSQL failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The shared commit this message was in failed (the text is the batch's error).
    #[error("{0}")]
    Batch(String),
}

impl From<sqlx::Error> for MessageError {
    fn from(e: sqlx::Error) -> Self {
        MessageError::Db(DbError::Sql(e))
    }
}

/// A message accepted, with its deliveries.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The message (its `webhook-id` is `msg_` and this, without hyphens).
    pub message_id: uuid::Uuid,
    /// One delivery per endpoint subscribed when it was accepted: (delivery, endpoint).
    pub deliveries: Vec<(uuid::Uuid, uuid::Uuid)>,
    /// The idempotency key had been used: this is the first request's message.
    pub duplicate: bool,
}

/// The `webhook-id` of a message: the same for every endpoint, retry and re-send, so a
/// receiver recognises a message it already processed.
pub fn webhook_id(message_id: uuid::Uuid) -> String {
    format!("msg_{}", message_id.simple())
}

/// The message a `webhook-id` (`msg_…`) names, when it is one.
pub fn message_of(id: &str) -> Option<uuid::Uuid> {
    id.strip_prefix("msg_").and_then(|rest| uuid::Uuid::try_parse(rest).ok())
}

/// The job id of a delivery: the same whoever pushes it (intake, sweep, re-send).
pub fn job_id(delivery_id: uuid::Uuid) -> JobId {
    JobId(format!("{JOB_ID_PREFIX}{}", delivery_id.simple()))
}

/// The delivery a job id names, when it is a delivery's.
pub fn delivery_of(job_id: &str) -> Option<uuid::Uuid> {
    job_id.strip_prefix(JOB_ID_PREFIX).and_then(|rest| uuid::Uuid::try_parse(rest).ok())
}

pub(super) fn well_formed_type(t: &str) -> bool {
    !t.is_empty() && t.len() <= 100 && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// One message to accept: its tenant, the message, the tenant's idempotency key, and now.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The tenant.
    pub tenant: TenantId,
    /// What the app sent.
    pub message: NewMessage,
    /// The tenant's idempotency key.
    pub idempotency_key: Option<String>,
    /// When it arrived (the body's `timestamp`).
    pub at: DateTime<Utc>,
}

impl Incoming {
    /// Checks the event type.
    pub fn check(&self) -> Result<(), MessageError> {
        if well_formed_type(&self.message.event_type) { Ok(()) } else { Err(MessageError::BadType) }
    }
}

/// Writes messages of many tenants in one transaction (group commit), each with one pending
/// delivery per enabled endpoint of its tenant subscribed to its type (or to `*`). Each
/// tenant's messages are written with the transaction bound to that tenant, so RLS still
/// checks every row. A repeated idempotency key (also within the batch) answers the first
/// message and its deliveries. Answers in the order given; each type must have been checked.
pub async fn accept_many(pool: &TenantPool, incoming: &[Incoming]) -> Result<Vec<Accepted>, MessageError> {
    let mut tenants: Vec<TenantId> = incoming.iter().map(|i| i.tenant).collect();
    tenants.sort_unstable_by_key(|t| t.0);
    tenants.dedup();
    let mut answers: Vec<Option<Accepted>> = vec![None; incoming.len()];
    let mut tx = pool.begin_shared().await?;
    for tenant in tenants {
        crate::db::switch_tenant(&mut tx, tenant).await?;
        let (places, part): (Vec<usize>, Vec<&Incoming>) = incoming.iter().enumerate().filter(|(_, i)| i.tenant == tenant).unzip();
        for (place, done) in places.into_iter().zip(accept_in(&mut tx, tenant, &part).await?) {
            answers[place] = Some(done);
        }
    }
    tx.commit().await?;
    answers.into_iter().map(|a| a.ok_or(MessageError::Db(DbError::Sql(sqlx::Error::RowNotFound)))).collect()
}

/// Messages a month's retirement keeps (moved to the DEFAULT partition; `{partition}` is the
/// detached month): those a delivery still names. The deliveries' month retired just before
/// (the same retention, earlier in `PARTITIONED`), so what is left naming a message this old
/// is a pending delivery the retirement kept, a re-send of an old message, or a delivery made
/// a moment after its message across a month's edge. Both reads are index range scans that
/// find only those: the pending deliveries' partial index, and each delivery month's
/// `message_id` index up to the month's highest id (not one probe per message).
pub const STILL_NAMED: &str = "id IN (SELECT message_id FROM webhook_deliveries WHERE status = 'pending') \
     OR id IN (SELECT message_id FROM webhook_deliveries WHERE message_id <= (SELECT id FROM {partition} ORDER BY id DESC LIMIT 1))";

/// Waits for the transaction locks of a tenant's (`$1`) idempotency keys (`$2`, NULLs skipped),
/// each once, in one order.
const MESSAGE_KEY_LOCKS: &str = "SELECT count(pg_advisory_xact_lock(h)) FROM \
     (SELECT DISTINCT hashtextextended('webhook_messages:' || $1::text || ':' || k, 0) AS h FROM unnest($2::text[]) AS k WHERE k IS NOT NULL ORDER BY h) AS keys";

/// One tenant's messages, in a transaction bound to it: three statements whatever their number
/// (four when some carry an idempotency key).
async fn accept_in(tx: &mut sqlx::PgConnection, tenant: TenantId, incoming: &[&Incoming]) -> Result<Vec<Accepted>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = incoming.iter().map(|_| uuid::Uuid::now_v7()).collect();
    let types: Vec<&str> = incoming.iter().map(|i| i.message.event_type.as_str()).collect();
    let bodies: Vec<String> = incoming
        .iter()
        .map(|i| serde_json::json!({"type": i.message.event_type, "timestamp": i.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "data": i.message.data}).to_string())
        .collect();
    let keys: Vec<Option<&str>> = incoming.iter().map(|i| i.idempotency_key.as_deref()).collect();
    let times: Vec<DateTime<Utc>> = incoming.iter().map(|i| i.at).collect();
    // A key already used (or used twice in this batch) inserts nothing: that item is a duplicate.
    // The keys' locks first, in a statement of their own (the insert's snapshot must be taken
    // after them): a month-partitioned table cannot keep `UNIQUE (tenant_id, idempotency_key)`
    // (0.11.0 drops it), so two writers of one key take turns here and the second sees the
    // first's row. In hash order, tenants in the order `accept_many` takes them: two batches
    // lock their shared keys in the same order. `ON CONFLICT DO NOTHING` still yields to the
    // unique index while a member before 0.10.0 writes without the lock.
    if keys.iter().any(Option::is_some) {
        sqlx::query(MESSAGE_KEY_LOCKS).bind(tenant.0).bind(&keys).execute(&mut *tx).await?;
    }
    let inserted: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO webhook_messages (id, tenant_id, event_type, body, idempotency_key, created_at) \
         SELECT u.id, $2, u.t, u.b, u.k, u.c FROM unnest($1::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) WITH ORDINALITY AS u(id, t, b, k, c, n) \
         WHERE u.k IS NULL \
            OR (NOT EXISTS (SELECT 1 FROM webhook_messages m WHERE m.tenant_id = $2 AND m.idempotency_key = u.k) \
                AND u.n = (SELECT min(v.n) FROM unnest($5::text[]) WITH ORDINALITY AS v(k, n) WHERE v.k = u.k)) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(tenant.0)
    .bind(&types)
    .bind(&bodies)
    .bind(&keys)
    .bind(&times)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: std::collections::HashSet<uuid::Uuid> = inserted.into_iter().collect();
    let fresh: Vec<(uuid::Uuid, &str)> = ids.iter().zip(&types).filter(|(id, _)| inserted.contains(id)).map(|(id, t)| (*id, *t)).collect();
    let mut message_of: Vec<uuid::Uuid> = ids.clone();
    let dup_keys: Vec<&str> = ids.iter().zip(&keys).filter(|(id, _)| !inserted.contains(id)).filter_map(|(_, k)| *k).collect();
    if !dup_keys.is_empty() {
        let found: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT id, idempotency_key FROM webhook_messages WHERE idempotency_key = ANY($1)").bind(&dup_keys).fetch_all(&mut *tx).await?;
        for (slot, (id, key)) in message_of.iter_mut().zip(ids.iter().zip(&keys)) {
            if !inserted.contains(id)
                && let Some((first, _)) = found.iter().find(|(_, k)| Some(k.as_str()) == *key)
            {
                *slot = *first;
            }
        }
    }
    let mut deliveries: Vec<(uuid::Uuid, uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id) \
         SELECT ballast_uuid_v7(), $1, m.id, e.id FROM unnest($2::uuid[], $3::text[]) AS m(id, t) \
         JOIN webhook_endpoints e ON e.deleted_at IS NULL AND e.disabled_at IS NULL AND e.event_types && ARRAY[m.t, '*'] \
         RETURNING id, message_id, endpoint_id",
    )
    .bind(tenant.0)
    .bind(fresh.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(fresh.iter().map(|(_, t)| *t).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let earlier: Vec<uuid::Uuid> = message_of.iter().zip(&ids).filter(|(m, id)| m != id).map(|(m, _)| *m).collect();
    if !earlier.is_empty() {
        let before: Vec<(uuid::Uuid, uuid::Uuid, uuid::Uuid)> =
            sqlx::query_as("SELECT id, message_id, endpoint_id FROM webhook_deliveries WHERE message_id = ANY($1)").bind(&earlier).fetch_all(&mut *tx).await?;
        deliveries.extend(before);
    }
    deliveries.sort_unstable();
    deliveries.dedup();
    Ok(message_of
        .iter()
        .zip(&ids)
        .map(|(message_id, id)| Accepted {
            message_id: *message_id,
            deliveries: deliveries.iter().filter(|(_, m, _)| m == message_id).map(|(d, _, e)| (*d, *e)).collect(),
            duplicate: message_id != id,
        })
        .collect())
}

/// Queues the job of each delivery (after its transaction committed), as one push: a message's
/// fan-out costs one Redis round trip, not one per endpoint.
pub async fn push(queue: &crate::queue::JobQueue, tenant: TenantId, deliveries: &[uuid::Uuid]) -> Result<(), crate::queue::QueueError> {
    queue.enqueue_batch(deliveries.iter().map(|id| delivery_job(tenant, *id, None)).collect()).await?;
    Ok(())
}

/// What the intake reads before it counts a message against the tenant's limits: whether its
/// idempotency key already names a message (a repeat is answered without counting), and the
/// bytes of the tenant's deliveries not yet delivered (a message counts once per endpoint).
/// One statement in one tenant transaction.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// The key was used: this request repeats an accepted message.
    pub repeat: bool,
    /// Bytes in flight for the tenant.
    pub bytes_in_flight: u64,
}

/// [`Admission`] for `tenant` and its idempotency key, if it sent one.
pub async fn admission(pool: &TenantPool, tenant: TenantId, key: Option<&str>) -> Result<Admission, DbError> {
    let mut tx = pool.begin(tenant).await?;
    let (repeat, bytes): (bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM webhook_messages WHERE $2::text IS NOT NULL AND idempotency_key = $2), \
                COALESCE((SELECT sum(octet_length(m.body)) FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id \
                          WHERE d.tenant_id = $1 AND d.status = 'pending'), 0)::bigint",
    )
    .bind(tenant.0)
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Admission { repeat, bytes_in_flight: u64::try_from(bytes).unwrap_or(0) })
}

/// The job of one delivery, due at `run_at` (now when `None`).
fn delivery_job(tenant: TenantId, delivery: uuid::Uuid, run_at: Option<DateTime<Utc>>) -> crate::queue::EnqueueRequest {
    let mut req = crate::queue::EnqueueRequest::typed(&DeliverArgs { delivery_id: delivery });
    req.tenant = Some(tenant);
    req.id = Some(job_id(delivery));
    req.run_at = run_at;
    req
}

/// The `webhook.deliver` job's arguments: the delivery to make.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverArgs {
    /// webhook_deliveries.id.
    pub delivery_id: uuid::Uuid,
}

impl crate::queue::job::JobArgs for DeliverArgs {
    const KIND: &'static str = JOB_KIND;
}

/// How long past its due time a pending delivery must be before the sweep pushes it again:
/// long enough that a job merely waiting in a backlog is not doubled.
pub const LOST_AFTER: chrono::Duration = chrono::Duration::minutes(15);

/// Queues again pending deliveries overdue by [`LOST_AFTER`] (their push was lost, or Redis lost
/// them), and moves their due time on so the next sweep leaves them alone. System pool: the
/// sweep spans tenants. Bounded per run.
pub async fn sweep(pool: &SystemPool, queue: &crate::queue::JobQueue) -> Result<usize, crate::queue::QueueError> {
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + $1 WHERE id IN ( \
           SELECT id FROM webhook_deliveries WHERE status = 'pending' AND COALESCE(next_attempt_at, created_at) < now() - $1 \
           ORDER BY created_at LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING id, tenant_id",
    )
    .bind(LOST_AFTER)
    .fetch_all(&pool.0)
    .await?;
    for (id, tenant) in &rows {
        push(queue, TenantId(*tenant), &[*id]).await?;
    }
    Ok(rows.len())
}

/// After Redis lost its data: queues every pending delivery again, each at its due time (a
/// retry keeps its backoff). System pool: spans tenants.
pub async fn requeue_after_data_loss(pool: &SystemPool, queue: &crate::queue::JobQueue) -> Result<usize, crate::queue::QueueError> {
    let mut after = uuid::Uuid::nil();
    let mut queued = 0;
    loop {
        let rows: Vec<(uuid::Uuid, uuid::Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT id, tenant_id, next_attempt_at FROM webhook_deliveries WHERE status = 'pending' AND id > $1 ORDER BY id LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&pool.0)
        .await?;
        for (id, tenant, due) in &rows {
            queue.enqueue(delivery_job(TenantId(*tenant), *id, *due)).await?;
            after = *id;
        }
        queued += rows.len();
        if rows.len() < 1000 {
            return Ok(queued);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_name_their_delivery_and_nothing_else() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(delivery_of(&job_id(id).0), Some(id));
        assert_eq!(delivery_of("email_0190"), None);
        assert_eq!(delivery_of("whd_nonsense"), None);
        assert!(webhook_id(id).starts_with("msg_") && !webhook_id(id).contains('-'));
        assert!(well_formed_type("invoice.paid") && !well_formed_type("") && !well_formed_type("a b"));
    }
}
