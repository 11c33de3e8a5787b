//! The webhook intake's inbox writes, grouped across concurrent requests (see
//! [`crate::db::batch`]): the events of every request waiting are inserted in one statement
//! and one commit, and each request still answers only once its own row is durable. A batch
//! that PostgreSQL refuses (not an outage) is retried row by row, so one bad event is refused
//! alone and never holds back the others.

use super::status::{InboxStatus, Inserted};
use crate::db::SystemPool;
use crate::db::batch::Batcher;
use crate::newtypes::{EventId, TenantId};
use crate::stripe::event::StripeEvent;

/// Most events one statement writes.
const BATCH: usize = 256;

/// An inbox row to write: what [`super::insert`] stores of an event.
#[derive(Debug, Clone)]
pub struct Row {
    id: EventId,
    event_type: String,
    livemode: bool,
    api_version: Option<String>,
    created: i64,
    payload: serde_json::Value,
    customer: Option<String>,
    object: Option<String>,
    handled: bool,
}

impl Row {
    /// The row of `event`, whose whole body is `raw`.
    pub fn of(event: &StripeEvent, raw: serde_json::Value) -> Self {
        Self {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            livemode: event.livemode,
            api_version: event.api_version.clone(),
            created: event.created,
            payload: raw,
            customer: event.customer_id().map(str::to_owned),
            object: event.object_id().map(str::to_owned),
            handled: crate::stripe::handlers::handles(&event.event_type),
        }
    }
}

/// Why a row was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotStored {
    /// PostgreSQL is unavailable (Stripe retries on the 503).
    #[error("{0}")]
    Unavailable(String),
    /// PostgreSQL refused this row.
    #[error("{0}")]
    Refused(String),
}

/// What storing a row did, and the tenant its customer is mapped to (when it is), so the job
/// can go straight to the tenant's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// What the insert did.
    pub inserted: Inserted,
    /// The row's tenant, when a new row's customer was already mapped.
    pub tenant: Option<TenantId>,
}

/// Inserts rows; returns what each became, in order. A repeated id (also within the batch) is
/// a duplicate of the first. The conflict names no key: it holds on today's `(id)` and on the
/// `(id, stripe_created)` a table partitioned by `stripe_created` keeps (an event's id fixes its
/// created time), so releases from 0.2.0 on store on either shape (0057 converts the table).
pub async fn insert_many(pool: &SystemPool, rows: &[Row]) -> Result<Vec<Stored>, sqlx::Error> {
    let status = |r: &Row| if r.handled { InboxStatus::Received } else { InboxStatus::Ignored }.as_str();
    let stored: Vec<(String, Option<uuid::Uuid>)> = sqlx::query_as(
        // The tenant is filled in here when the customer is already mapped (the common case).
        "INSERT INTO stripe_events (id, type, livemode, api_version, stripe_created, payload, status, customer_id, object_id, processed_at, tenant_id)
         SELECT u.id, u.type, u.livemode, u.api_version, to_timestamp(u.created), u.payload, u.status, u.customer, u.object,
                CASE WHEN u.status = 'ignored' THEN now() END, (SELECT t.id FROM tenants t WHERE t.stripe_customer_id = u.customer)
         FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::float8[], $6::jsonb[], $7::text[], $8::text[], $9::text[])
              AS u(id, type, livemode, api_version, created, payload, status, customer, object)
         ON CONFLICT DO NOTHING RETURNING id, tenant_id",
    )
    .bind(rows.iter().map(|r| r.id.0.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.livemode).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.api_version.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created as f64).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| &r.payload).collect::<Vec<_>>())
    .bind(rows.iter().map(status).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.customer.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.object.as_deref()).collect::<Vec<_>>())
    .fetch_all(&pool.0)
    .await?;
    let stored: std::collections::HashMap<&str, Option<TenantId>> = stored.iter().map(|(id, t)| (id.as_str(), t.map(TenantId))).collect();
    let mut first = std::collections::HashSet::new();
    Ok(rows
        .iter()
        .map(|r| {
            let new = stored.get(r.id.0.as_str()).filter(|_| first.insert(r.id.0.as_str()));
            let inserted = match (new.is_some(), r.handled) {
                (false, _) => Inserted::Duplicate,
                (true, true) => Inserted::New,
                (true, false) => Inserted::Ignored,
            };
            Stored { inserted, tenant: new.copied().flatten() }
        })
        .collect())
}

/// The intake's grouped inbox writes; one per fleet member.
#[derive(Clone, Debug)]
pub struct InboxWriter {
    inserts: Batcher<Row, Result<Stored, NotStored>>,
}

impl InboxWriter {
    /// Writes through the system pool (the inbox is written before its tenant is known).
    pub fn new(pool: SystemPool) -> Self {
        let inserts = Batcher::new(BATCH, move |rows: Vec<Row>| {
            let pool = pool.clone();
            async move {
                let failed = match insert_many(&pool, &rows).await {
                    Ok(done) => return Ok(done.into_iter().map(Ok).collect()),
                    Err(e) => e,
                };
                if crate::db::is_unavailable(&failed) {
                    return Ok(vec![Err(NotStored::Unavailable(failed.to_string())); rows.len()]);
                }
                // Refused as a batch: each row alone, so only the bad one is refused.
                let mut answers = Vec::with_capacity(rows.len());
                for row in &rows {
                    answers.push(match insert_many(&pool, std::slice::from_ref(row)).await {
                        Ok(mut one) => one.pop().ok_or_else(|| NotStored::Refused("no answer".into())),
                        Err(e) if crate::db::is_unavailable(&e) => Err(NotStored::Unavailable(e.to_string())),
                        Err(e) => Err(NotStored::Refused(e.to_string())),
                    });
                }
                Ok(answers)
            }
        });
        Self { inserts }
    }

    /// Stores one event's row (with the rows of concurrent requests).
    pub async fn insert(&self, row: Row) -> Result<Stored, NotStored> {
        self.inserts.call(row).await.map_err(|e| NotStored::Unavailable(e.0))?
    }
}
