//! One delivery's run: read it (batched with other runs), sign, POST to the checked address,
//! record the attempt (batched: one commit for many runs), and decide what comes next — done on
//! a 2xx, another attempt after the kind's backoff, failed when attempts run out, skipped when
//! the endpoint is disabled or deleted. Nothing is held open while the endpoint answers: the
//! read has committed before the POST and the record starts after it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::client::{Answer, Sender};
use super::fairness::{Circuits, Gate, TenantSlots};
use super::deliveries::{self, Attempt, DeliveryStatus, Disabled, Loaded, Outcome};
use crate::job_catalogue::Backoff;
use super::messages::{self, Accepted, Incoming, MessageError};
use crate::db::{SystemPool, TenantPool};
use crate::db::batch::{BatchError, Batcher};
use crate::newtypes::TenantId;

/// Most runs one read or one record serves.
const BATCH: usize = 512;

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Delivered {
    /// A 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Not this time; the next attempt is due after `retry_in`.
    Retrying {
        /// Why.
        error: String,
        /// When.
        #[serde(skip)]
        retry_in: Duration,
    },
    /// The last attempt failed.
    Failed {
        /// Why.
        error: String,
    },
    /// Not now, and no attempt spent: the tenant's deliveries hold their share of this
    /// member's slots, or the endpoint's circuit is open.
    Waiting {
        /// Why.
        reason: String,
        /// When to look again.
        #[serde(skip)]
        retry_in: Duration,
    },
    /// Nothing sent: the endpoint is off, or the delivery already finished.
    Nothing {
        /// Why.
        reason: String,
    },
}

/// Why a run could not be made or recorded (retried by the job's own rules).
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The delivery belongs to another tenant than the job says, or does not exist.
    #[error("no delivery {0} of this tenant")]
    Missing(uuid::Uuid),
    /// PostgreSQL failed (read or record).
    #[error("postgres: {0}")]
    Db(String),
}

impl From<BatchError> for DeliverError {
    fn from(e: BatchError) -> Self {
        DeliverError::Db(e.0)
    }
}

/// Where attempts stop and how far apart they are: the kind's catalogue entry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub max_attempts: u32,
    /// Delay between them.
    pub backoff: Backoff,
}

/// Accepts messages and makes deliveries; one per fleet member, shared by its concurrent
/// requests and runs, whose writes it groups into shared commits.
#[derive(Clone)]
pub struct Outbound {
    accepts: Batcher<Incoming, Accepted>,
    sender: Sender,
    loads: Batcher<uuid::Uuid, Option<Loaded>>,
    records: Batcher<Outcome, ()>,
    policy: super::address::AddressPolicy,
    slots: TenantSlots,
    circuits: Circuits,
    keyring: crate::keyring::Keyring,
}

/// `d` spread by ±20 %, so waiting deliveries do not come back in step.
fn jittered(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbound")
    }
}

impl Outbound {
    /// Outbound webhooks on `tenants` (intake) and `pool` (deliveries) with the operator's
    /// settings; the tenant of an endpoint it disables is emailed through `queue`.
    pub fn new(
        tenants: TenantPool,
        pool: SystemPool,
        queue: crate::queue::JobQueue,
        settings: &crate::config::outbound::OutboundWebhooks,
        keyring: &crate::keyring::Keyring,
    ) -> Result<Self, super::client::ClientError> {
        let policy = super::address::AddressPolicy::new(settings.allow.clone());
        let sender = Sender::new(policy.clone(), settings.timeout)?;
        // Concurrent intake requests share a commit; each tenant's rows are written bound to it.
        let accepts = Batcher::new(BATCH, move |incoming: Vec<Incoming>| {
            let tenants = tenants.clone();
            async move { messages::accept_many(&tenants, &incoming).await.map_err(|e| BatchError(e.to_string())) }
        });
        let read_pool = pool.clone();
        // System pool: one read serves concurrent runs of many tenants; each run checks that
        // the row is its job's tenant's.
        let loads = Batcher::new(BATCH, move |ids: Vec<uuid::Uuid>| {
            let pool = read_pool.clone();
            async move {
                let rows = deliveries::load_many(&pool, &ids).await.map_err(|e| BatchError(e.to_string()))?;
                Ok(ids.iter().map(|id| rows.iter().find(|r| r.id == *id).cloned()).collect())
            }
        });
        let disable_after = settings.disable_after;
        // System pool: one commit records concurrent runs of many tenants.
        let records = Batcher::new(BATCH, move |outcomes: Vec<Outcome>| {
            let (pool, queue) = (pool.clone(), queue.clone());
            async move {
                let fail = |e: sqlx::Error| BatchError(e.to_string());
                let mut tx = pool.0.begin().await.map_err(fail)?;
                let disabled = deliveries::record_many(&mut tx, &outcomes, disable_after).await.map_err(fail)?;
                let mut emails = Vec::new();
                for endpoint in &disabled {
                    if let Some(id) = tell_disabled(&mut tx, endpoint).await.map_err(|e| BatchError(e.to_string()))? {
                        emails.push((TenantId(endpoint.tenant_id), id));
                    }
                }
                tx.commit().await.map_err(fail)?;
                for (tenant, id) in emails {
                    // Committed: a lost push is queued by the outbox sweep.
                    if let Err(e) = crate::email::push(&queue, tenant, &[id]).await {
                        tracing::warn!(message = "Endpoint-disabled email queued by the outbox sweep.", error = %e);
                    }
                }
                Ok(vec![(); outcomes.len()])
            }
        });
        Ok(Self { accepts, sender, loads, records, policy, slots: TenantSlots::default(), circuits: Circuits::default(), keyring: keyring.clone() })
    }

    /// Where webhooks may go: an endpoint's URL is checked against it when registered.
    pub fn address_policy(&self) -> &super::address::AddressPolicy {
        &self.policy
    }

    /// Writes a message and its deliveries (see [`messages::accept_many`]), sharing the commit with
    /// concurrent requests. The caller queues the deliveries' jobs after.
    pub async fn accept(&self, incoming: Incoming) -> Result<Accepted, MessageError> {
        incoming.check()?;
        self.accepts.call(incoming).await.map_err(|e| MessageError::Batch(e.0))
    }

    /// Makes one attempt of `delivery` for `tenant` and records it, unless the tenant's
    /// deliveries hold `max_slots` of this member's already or the endpoint's circuit is open.
    pub async fn deliver(&self, tenant: TenantId, delivery: uuid::Uuid, policy: &RetryPolicy, max_slots: u32) -> Result<Delivered, DeliverError> {
        let Some(_slot) = self.slots.take(tenant, max_slots) else {
            return Ok(Delivered::Waiting { reason: "the tenant's deliveries hold their share of the delivery slots".into(), retry_in: jittered(Duration::from_millis(500)) });
        };
        let Some(row) = self.loads.call(delivery).await?.filter(|r| r.tenant_id == tenant.0) else {
            return Err(DeliverError::Missing(delivery));
        };
        if row.status() != DeliveryStatus::Pending {
            return Ok(Delivered::Nothing { reason: format!("already {}", row.status().as_str()) });
        }
        let attempt = row.attempts + 1;
        let now = Utc::now();
        if row.deleted_at.is_some() || row.disabled_at.is_some() {
            let reason = if row.deleted_at.is_some() { "the endpoint was deleted" } else { "the endpoint is disabled" };
            self.record(&row, attempt - 1, None, DeliveryStatus::Skipped, None, Some(reason.into())).await?;
            return Ok(Delivered::Nothing { reason: reason.into() });
        }
        let gate = self.circuits.gate(row.endpoint_id, std::time::Instant::now());
        if let Gate::Open(wait) = gate {
            return Ok(Delivered::Waiting { reason: "the endpoint keeps timing out; its circuit is open".into(), retry_in: jittered(wait) });
        }
        let answer = self.attempt(&row, now).await;
        self.circuits.record(row.endpoint_id, answer.timed_out, std::time::Instant::now());
        let made = Attempt {
            at: now,
            duration_ms: i32::try_from(answer.took.as_millis()).unwrap_or(i32::MAX),
            status_code: answer.status.map(i32::from),
            response_body: answer.body.clone(),
            error: answer.error.clone(),
        };
        if answer.delivered() {
            self.record(&row, attempt, Some(made), DeliveryStatus::Delivered, None, None).await?;
            return Ok(Delivered::Delivered { status: answer.status.unwrap_or(200) });
        }
        let error = answer.error.unwrap_or_else(|| "no answer".into());
        if attempt as u32 >= policy.max_attempts {
            let shown = format!("attempts exhausted ({attempt}): {error}");
            self.record(&row, attempt, Some(made), DeliveryStatus::Failed, None, Some(shown.clone())).await?;
            return Ok(Delivered::Failed { error: shown });
        }
        let retry_in = policy.backoff.delay(attempt as u32 + 1);
        let next = now + chrono::Duration::from_std(retry_in).unwrap_or_default();
        self.record(&row, attempt, Some(made), DeliveryStatus::Pending, Some(next), Some(error.clone())).await?;
        Ok(Delivered::Retrying { error, retry_in })
    }

    async fn attempt(&self, row: &Loaded, now: DateTime<Utc>) -> Answer {
        let id = messages::webhook_id(row.message_id);
        let ts = now.timestamp();
        let secrets = match row.signing_secrets(&self.keyring, now) {
            Ok(s) => s,
            Err(e) => {
                // The fleet's fault, not the endpoint's: the operator reads why in the log.
                tracing::error!(message = "Webhook signing secret does not open; check BALLAST_SECRETS_KEYRING.", endpoint = %row.endpoint_id, error = %e);
                return Answer { status: None, body: None, error: Some("not signed: the fleet could not read this endpoint's signing secret; its operator has been told".into()), took: Duration::ZERO, timed_out: false };
            }
        };
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let signature = match super::signature::header(&secrets, &id, ts, row.body.as_bytes()) {
            Ok(s) => s,
            Err(e) => return Answer { status: None, body: None, error: Some(e.to_string()), took: Duration::ZERO, timed_out: false },
        };
        let headers = [("webhook-id", id), ("webhook-timestamp", ts.to_string()), ("webhook-signature", signature)];
        self.sender.post(&row.url, headers, row.body.clone(), deliveries::MAX_RESPONSE_BODY).await
    }

    /// The keys endpoint secrets are sealed with.
    pub fn keyring(&self) -> &crate::keyring::Keyring {
        &self.keyring
    }

    /// The slots each tenant's deliveries hold on this member.
    pub fn slots(&self) -> &TenantSlots {
        &self.slots
    }

    async fn record(&self, row: &Loaded, attempt: i32, made: Option<Attempt>, status: DeliveryStatus, next_attempt_at: Option<DateTime<Utc>>, error: Option<String>) -> Result<(), DeliverError> {
        let outcome = Outcome { delivery_id: row.id, tenant_id: row.tenant_id, endpoint_id: row.endpoint_id, attempt, made, status, next_attempt_at, error };
        Ok(self.records.call(outcome).await?)
    }
}

/// Writes the email telling a tenant its endpoint was disabled, in the transaction that
/// disabled it (so it is sent once); `None` when the tenant has no billing email.
async fn tell_disabled(tx: &mut sqlx::PgConnection, endpoint: &Disabled) -> Result<Option<uuid::Uuid>, crate::email::EmailError> {
    use crate::email::{NewEmail, Template};
    let owner: Option<(String, Option<String>)> = sqlx::query_as("SELECT name, billing_email FROM tenants WHERE id = $1").bind(endpoint.tenant_id).fetch_optional(&mut *tx).await?;
    let Some((name, Some(to))) = owner else {
        tracing::warn!(message = "Endpoint disabled; its tenant has no billing email to tell.", tenant.id = %endpoint.tenant_id, endpoint = %endpoint.endpoint_id);
        return Ok(None);
    };
    let vars = serde_json::json!({
        "name": name, "url": endpoint.url, "endpoint_id": endpoint.endpoint_id,
        "failing_since": endpoint.failing_since.format("%Y-%m-%d %H:%M UTC").to_string(),
    });
    let email = NewEmail { dedup_key: format!("webhook_disabled:{}:{}", endpoint.endpoint_id, endpoint.failing_since.timestamp()), template: Template::EndpointDisabled, to, vars };
    crate::email::queue(tx, TenantId(endpoint.tenant_id), &email).await
}
