//! The durable webhook inbox (stripe_events): the Stripe event id is the idempotency key.
//! Intake inserts and queues; the scheduler's sweep queues again what is still unprocessed (Redis was
//! down) and parked events whose customer is now mapped. All of it runs on the system pool:
//! an event's tenant is not known until it is routed.

pub mod batch;
mod claim;
pub mod grouped;
mod status;
pub mod view;

pub use claim::{Claim, claim, claim_statement};
pub use status::{InboxStatus, Inserted};

use chrono::Utc;

use super::event::StripeEvent;
use crate::db::SystemPool;
use crate::newtypes::{EventId, JobId, TenantId};
use crate::queue::{EnqueueRequest, JobQueue, QueueError};

/// The job kind that handles one inbox row.
pub const JOB_KIND: &str = "stripe.event";

/// How long the enqueue of an inbox row is deduplicated in Redis.
pub const INBOX_ENQUEUE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Stores the raw event once.
pub async fn insert(pool: &SystemPool, event: &StripeEvent, raw: &serde_json::Value) -> Result<Inserted, sqlx::Error> {
    let mut done = batch::insert_many(pool, &[batch::Row::of(event, raw.clone())]).await?;
    done.pop().map(|s| s.inserted).ok_or(sqlx::Error::RowNotFound)
}

/// Queues the job for one event (idempotent per event id while Redis keeps the key) and
/// marks the row queued.
pub async fn enqueue(pool: &SystemPool, queue: &JobQueue, event_id: &EventId) -> Result<(), QueueError> {
    enqueue_all(pool, queue, std::slice::from_ref(event_id)).await
}

/// Queues the jobs of `ids` one by one, then marks the rows queued in one statement.
async fn enqueue_all(pool: &SystemPool, queue: &JobQueue, ids: &[EventId]) -> Result<(), QueueError> {
    for id in ids {
        push(queue, id, None, None, None).await?;
    }
    mark_queued(pool, ids).await?;
    Ok(())
}

/// The `stripe.event` job's arguments: the inbox row to apply.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyEvent {
    /// `evt_…`.
    pub event_id: EventId,
    /// The row's tenant when the intake knew it (its customer was mapped): the job then reads
    /// the row in the tenant's transaction, with no routing read first. Jobs queued without
    /// it (the sweep, a release, jobs from before it existed) route on the system pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The event's Stripe creation time (unix s), the inbox's partition key: the claim then
    /// reaches the row's month alone. Sent only once every live member reads it (0.12.0 and
    /// later; the release before refuses an argument it does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

/// The first release whose `stripe.event` jobs read [`ApplyEvent::created`].
pub const JOBS_CARRY_CREATED_SINCE: semver::Version = semver::Version::new(0, 12, 0);

impl crate::queue::job::JobArgs for ApplyEvent {
    const KIND: &'static str = JOB_KIND;
}

/// The `stripe.refetch` job's arguments: an event that tied with the mirror, and the object
/// to read from Stripe before it is applied.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefetchEvent {
    /// `evt_…`.
    pub event_id: EventId,
    /// What to read.
    pub kind: crate::stripe_api::ObjectKind,
    /// Its id.
    pub object_id: String,
}

impl crate::queue::job::JobArgs for RefetchEvent {
    const KIND: &'static str = "stripe.refetch";
}

/// Hands an event to `stripe.refetch` (its own queue and concurrency, so a slow Stripe
/// occupies those slots, not the ones that apply other events); once per event and object.
pub async fn push_refetch(queue: &JobQueue, args: &RefetchEvent) -> Result<(), QueueError> {
    let mut req = EnqueueRequest::typed(args);
    req.idempotency_key = Some(format!("stripe.refetch:{}:{}", args.event_id, args.object_id));
    req.idempotency_ttl = Some(INBOX_ENQUEUE_TTL);
    queue.enqueue(req).await?;
    Ok(())
}

/// Queues the job for one event (with its tenant and its creation time, when known and
/// readable by every member); idempotent per event id while Redis keeps the key.
pub async fn push(queue: &JobQueue, event_id: &EventId, tenant: Option<TenantId>, created: Option<i64>, traceparent: Option<String>) -> Result<(), QueueError> {
    let mut req = EnqueueRequest::typed(&ApplyEvent { event_id: event_id.clone(), tenant, created });
    req.id = Some(JobId(format!("stripe.event:{event_id}")));
    req.idempotency_key = Some(format!("stripe.event:{event_id}"));
    // Ten minutes covers every re-push (the sweep's at 30 s; after a Redis data loss the keys
    // are gone anyway); a later second push costs a no-op run. Seven days of one key per
    // webhook was Redis's largest growth in the soak (80 events/s → 48,000 keys in 10 minutes).
    req.idempotency_ttl = Some(INBOX_ENQUEUE_TTL);
    req.traceparent = traceparent;
    queue.enqueue(req).await?;
    Ok(())
}

/// Records that the rows' jobs are queued, so the sweep leaves them alone. A no-op for a row
/// the job has already processed. Rows a running job holds are skipped, not waited for: many
/// rows locked by one statement, in no order, while the job's transaction holds its row and its
/// tenant's lock, deadlocked in the Redis-restart drill; a skipped row stays `received` and is
/// at most pushed again, a no-op.
pub async fn mark_queued(pool: &SystemPool, ids: &[EventId]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE stripe_events SET status = 'queued', queued_at = now()
         WHERE id IN (SELECT id FROM stripe_events WHERE id = ANY($1) AND status = 'received' FOR UPDATE SKIP LOCKED)",
    )
        .bind(ids.iter().map(|i| i.0.as_str()).collect::<Vec<_>>())
        .execute(&pool.0)
        .await?;
    Ok(())
}

/// Queues parked events of `customer` again now that its tenant is known. The enqueue has no
/// idempotency key: the event's first run used it, and the handler is idempotent.
pub async fn release_unmatched(pool: &SystemPool, queue: &JobQueue, customer: &str) -> Result<usize, QueueError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE stripe_events SET status = 'queued', queued_at = now()
         WHERE status = 'unmatched' AND customer_id = $1 RETURNING id",
    )
    .bind(customer)
    .fetch_all(&pool.0)
    .await?;
    push_released(queue, &ids).await
}

/// Queues the released events' jobs (their rows say `queued` already).
async fn push_released(queue: &JobQueue, ids: &[String]) -> Result<usize, QueueError> {
    for id in ids {
        let req = EnqueueRequest::new(JOB_KIND, serde_json::json!({"event_id": id}));
        queue.enqueue(req).await?;
    }
    Ok(ids.len())
}

/// Queues the parked events whose object names `tenant` (`metadata.tenant_id`, a checkout's
/// `client_reference_id`): after the tenant's customer was deleted, a new customer's checkout
/// parked while the old one was bound can bind now.
pub async fn release_naming_tenant(pool: &SystemPool, queue: &JobQueue, tenant: TenantId) -> Result<usize, QueueError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE stripe_events SET status = 'queued', queued_at = now()
         WHERE status = 'unmatched'
           AND (payload #>> '{data,object,metadata,tenant_id}' = $1 OR payload #>> '{data,object,client_reference_id}' = $1)
         RETURNING id",
    )
    .bind(tenant.0.to_string())
    .fetch_all(&pool.0)
    .await?;
    push_released(queue, &ids).await
}

/// Queues again every event the inbox holds as received or queued but not processed, after
/// Redis lost its data (a restart without persistence, a failover to an empty replica): the
/// jobs and their idempotency keys went with it, so each is pushed once more. Where Redis did
/// keep a job, its idempotency key makes the push a no-op; the handler is idempotent anyway.
pub async fn requeue_after_data_loss(pool: &SystemPool, queue: &JobQueue) -> Result<usize, QueueError> {
    let mut after = String::new();
    let mut pushed = 0;
    loop {
        let ids: Vec<EventId> = sqlx::query_scalar(
            "SELECT id FROM stripe_events WHERE status IN ('received', 'queued') AND id > $1 ORDER BY id LIMIT 1000",
        )
        .bind(&after)
        .fetch_all(&pool.0)
        .await?;
        let Some(last) = ids.last() else { return Ok(pushed) };
        after = last.0.clone();
        enqueue_all(pool, queue, &ids).await?;
        pushed += ids.len();
    }
}

/// Rows one [`prune`] deletes (the `inbox.prune` service calls it again while batches come
/// back full).
pub const PRUNE_BATCH: u64 = 5_000;

/// The rows of the inbox still to be handled, as an SQL condition: a retired month's rows that
/// match it are moved to the inbox's DEFAULT partition before the month is dropped. Spelt as
/// the predicates of the waiting and parked partial indexes (0057), so that read is two index
/// scans of the few rows kept, not a scan of the whole month (a gigabyte at a large SaaS's
/// volume). Every status that is not done ([`InboxStatus::is_done`]); `failed`, which the
/// CHECK allows, is never written.
pub const STILL_TO_HANDLE: &str = "(status IN ('received', 'queued') OR status = 'unmatched')";

/// Deletes up to [`PRUNE_BATCH`] processed or ignored rows received before `retention` ago;
/// returns how many. Rows still to be handled are never touched, and Stripe stops retrying an
/// event after 3 days, so a retention of weeks keeps every id that could still arrive twice.
/// The inbox is partitioned by month (0057): whole months leave by partition, and this deletes
/// only where nothing else would in time: the DEFAULT partition (the rows a retirement kept,
/// and events older than every month), and the first partition, the heap from before 0057,
/// which holds every event up to two months past the upgrade and would otherwise keep the
/// first of them three months.
pub async fn prune(pool: &SystemPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = crate::db::partitions::cutoff(Utc::now(), retention);
    let settled_before = "status IN ('processed', 'ignored') AND received_at < $1";
    crate::db::partitions::delete_outside_months(&pool.0, "stripe_events", settled_before, cutoff, PRUNE_BATCH).await
}

/// What one sweep did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SweepReport {
    /// Rows still `received` past the age (never queued if Redis was down at intake), pushed
    /// again and marked queued.
    pub requeued: usize,
    /// Parked rows whose customer is now mapped, queued now.
    pub released: usize,
}

/// Queues rows received more than `older_than` ago and still `received` (the push is a no-op
/// while the intake's job waits in Redis), and parked rows whose
/// customer has a tenant now. Bounded per run so a large backlog drains over several sweeps.
pub async fn sweep(pool: &SystemPool, queue: &JobQueue, older_than: chrono::Duration) -> Result<SweepReport, QueueError> {
    let cutoff = Utc::now() - older_than;
    let stale: Vec<EventId> = sqlx::query_scalar(
        "SELECT id FROM stripe_events WHERE status = 'received' AND received_at < $1 ORDER BY received_at LIMIT 1000",
    )
    .bind(cutoff)
    .fetch_all(&pool.0)
    .await?;
    enqueue_all(pool, queue, &stale).await?;
    let mut report = SweepReport { requeued: stale.len(), ..SweepReport::default() };
    let customers: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT e.customer_id FROM stripe_events e JOIN tenants t ON t.stripe_customer_id = e.customer_id
         WHERE e.status = 'unmatched' LIMIT 1000",
    )
    .fetch_all(&pool.0)
    .await?;
    for customer in &customers {
        report.released += release_unmatched(pool, queue, customer).await?;
    }
    // Parked rows naming a tenant that has no customer now (its last one was deleted).
    let unbound: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT t.id FROM stripe_events e JOIN tenants t
             ON t.id::text = COALESCE(e.payload #>> '{data,object,metadata,tenant_id}', e.payload #>> '{data,object,client_reference_id}')
         WHERE e.status = 'unmatched' AND t.stripe_customer_id IS NULL LIMIT 1000",
    )
    .fetch_all(&pool.0)
    .await?;
    for tenant in unbound {
        report.released += release_naming_tenant(pool, queue, TenantId(tenant)).await?;
    }
    Ok(report)
}

/// An inbox row as the `stripe.event` job reads it.
#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    /// The event as Stripe sent it.
    pub payload: serde_json::Value,
    status: String,
    /// The tenant, once routed.
    pub tenant_id: Option<uuid::Uuid>,
    /// The Stripe customer the event concerns, when known.
    pub customer_id: Option<String>,
    /// The tenant mapped to `customer_id`, read in the same round trip (the common route).
    pub mapped_tenant: Option<uuid::Uuid>,
}

impl Row {
    /// The row's status (an unknown spelling reads as received: the event is applied).
    pub fn status(&self) -> InboxStatus {
        InboxStatus::parse(&self.status).unwrap_or(InboxStatus::Received)
    }
}

/// Reads row `id` with its customer's tenant. System pool: its tenant is not known yet.
pub async fn load(pool: &SystemPool, id: &EventId) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.payload, e.status, e.tenant_id, e.customer_id,
                (SELECT t.id FROM tenants t WHERE t.stripe_customer_id = e.customer_id) AS mapped_tenant
         FROM stripe_events e WHERE e.id = $1",
    )
    .bind(id)
    .fetch_optional(&pool.0)
    .await
}

/// Counts a failed attempt and keeps its error for operators (top failure reasons).
pub async fn record_failure(pool: &SystemPool, id: &EventId, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE stripe_events SET attempts = attempts + 1, last_error = $2 WHERE id = $1")
        .bind(id)
        .bind(crate::newtypes::truncated(error, 2048).as_ref())
        .execute(&pool.0)
        .await?;
    Ok(())
}

/// Parks row `id` as unmatched (unless it was processed meanwhile), keeping its customer.
pub async fn park_unmatched(pool: &SystemPool, id: &EventId, customer: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE stripe_events SET status = 'unmatched', customer_id = COALESCE(customer_id, $2) WHERE id = $1 AND status <> 'processed'")
        .bind(id)
        .bind(customer)
        .execute(&pool.0)
        .await?;
    Ok(())
}

/// Marks row `id` ignored: an event about nobody's tenant (a guest payment's charge has no
/// customer), so it is neither applied nor parked waiting for a customer that will never come.
pub async fn mark_ignored(pool: &SystemPool, id: &EventId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE stripe_events SET status = 'ignored', processed_at = now() WHERE id = $1 AND status <> 'processed'").bind(id).execute(&pool.0).await?;
    Ok(())
}

/// Records the tenant row `id` was routed to. System pool: without a tenant the tenant role
/// cannot see the row.
pub async fn set_tenant(pool: &SystemPool, id: &EventId, tenant: TenantId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE stripe_events SET tenant_id = $2 WHERE id = $1 AND tenant_id IS NULL").bind(id).bind(tenant.0).execute(&pool.0).await?;
    Ok(())
}

/// Records the customer found for row `id` (a dispute names its charge, not the customer).
pub async fn set_customer(pool: &SystemPool, id: &EventId, customer: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE stripe_events SET customer_id = $2 WHERE id = $1").bind(id).bind(customer).execute(&pool.0).await?;
    Ok(())
}

/// The most common errors of events not yet applied (their rows keep the last error while
/// their jobs retry), as (error, events), most common first.
pub async fn failure_reasons(pool: &SystemPool, limit: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT last_error, count(*) FROM stripe_events
         WHERE last_error IS NOT NULL AND status NOT IN ('processed', 'ignored')
         GROUP BY last_error ORDER BY count(*) DESC, last_error LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&pool.0)
    .await
}

/// Rows that should have been applied by now: received before `received_before` and never
/// queued, or queued before `queued_before`; oldest first.
pub async fn stuck(pool: &SystemPool, received_before: chrono::DateTime<Utc>, queued_before: chrono::DateTime<Utc>) -> Result<Vec<EventId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM stripe_events
         WHERE (status = 'received' AND received_at < $1) OR (status = 'queued' AND received_at < $2)
         ORDER BY received_at",
    )
    .bind(received_before)
    .bind(queued_before)
    .fetch_all(&pool.0)
    .await
}

/// Open dead letters of the `stripe.event` job whose event has type `event_type` (or any, for
/// `all`) and belongs to `tenant` (or any), oldest first. (The dead letters are the queue's;
/// the filter is the inbox's, hence the join here.)
pub async fn dead_letters(pool: &SystemPool, event_type: &str, tenant: Option<uuid::Uuid>) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT d.id FROM job_dead_letters d LEFT JOIN stripe_events e ON e.id = d.envelope->'payload'->>'event_id'
         WHERE d.kind = $1 AND d.retried_at IS NULL AND d.discarded_at IS NULL AND ($2 = 'all' OR e.type = $2)
           AND ($3::uuid IS NULL OR d.tenant_id = $3 OR e.tenant_id = $3)
         ORDER BY d.failed_at",
    )
    .bind(JOB_KIND)
    .bind(event_type)
    .bind(tenant)
    .fetch_all(&pool.0)
    .await
}

/// Which of `ids` the inbox holds.
pub async fn held(pool: &SystemPool, ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM stripe_events WHERE id = ANY ($1)").bind(ids).fetch_all(&pool.0).await
}

/// How long the oldest event received and not yet processed has waited, in seconds (the
/// inbox alert); none when every event is processed.
pub async fn oldest_unprocessed_secs(pool: &SystemPool) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM now() - min(received_at))::float8 FROM stripe_events WHERE status IN ('received', 'queued')").fetch_one(&pool.0).await
}
