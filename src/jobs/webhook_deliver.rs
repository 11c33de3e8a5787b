//! `webhook.deliver`: one attempt of one outbound webhook delivery (see
//! [`crate::webhooks_out::deliver`]). App services queue a message through `POST /v1/jobs`;
//! its intake writes the message and one delivery per subscribed endpoint before the answer,
//! then queues one job per delivery. A failed attempt is retried after the catalogue's backoff
//! (about three days in all); when attempts run out the delivery is marked failed in the
//! tenant's log, not dead-lettered: a customer's broken endpoint is the tenant's to see and
//! re-send, not on-call's.

use super::intake::{Accepted, DeliveryJob, Intake, IntakeError, IntakeRequest};
use super::kind::{Job, JobContext, JobError};
use super::deps::Outbound;
use crate::webhooks_out::deliver::{DeliverError, Delivered, RetryPolicy};
use crate::webhooks_out::messages::{self, DeliverArgs, MessageError, NewMessage};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookDeliverJob;

impl Job for WebhookDeliverJob {
    const KIND: &'static str = messages::JOB_KIND;
    type Args = DeliverArgs;
    type Report = Delivered;
    type Deps = Outbound;

    async fn run(&self, args: DeliverArgs, ctx: JobContext<Outbound>) -> Result<Delivered, JobError> {
        let tenant = ctx.tenant.ok_or_else(|| JobError::Cancel("webhook.deliver needs the tenant of its delivery".into()))?;
        let policy = ctx.state.queue.catalogue().get(messages::JOB_KIND).map(|p| RetryPolicy { max_attempts: p.max_attempts, backoff: p.backoff.clone() });
        let policy = policy.ok_or_else(|| JobError::Cancel("webhook.deliver has no catalogue entry".into()))?;
        let max_slots = ctx.state.limiter.policies.tenant_webhooks.max_delivery_slots;
        match ctx.state.webhooks_out.deliver(tenant, args.delivery_id, &policy, max_slots).await {
            // The delivery log says when; the queue runs it then.
            Ok(Delivered::Retrying { error, retry_in }) => Err(JobError::RetryIn(error, retry_in)),
            // No slot or an open circuit: back in the queue without spending an attempt.
            Ok(Delivered::Waiting { retry_in, .. }) => Err(JobError::Snooze(retry_in)),
            Ok(done) => Ok(done),
            Err(e @ DeliverError::Missing(_)) => Err(JobError::Cancel(e.to_string())),
            Err(e @ DeliverError::Db(_)) => Err(JobError::Retry(e.to_string())),
        }
    }
}

impl Intake for WebhookDeliverJob {
    /// `{type, data}`: written as a message with one delivery per endpoint subscribed to the
    /// type, then one job per delivery. The answer lists the jobs (`GET /v1/jobs/{id}`).
    async fn accept(&self, state: Outbound, req: IntakeRequest) -> Result<Accepted, IntakeError> {
        let new: NewMessage = serde_json::from_value(req.payload).map_err(|error| IntakeError::Payload { kind: messages::JOB_KIND, expected: "{type, data}", error })?;
        let incoming = messages::Incoming { tenant: req.tenant, message: new, idempotency_key: req.idempotency_key, at: chrono::Utc::now() };
        let bad_type = |e: MessageError| IntakeError::Invalid { code: "invalid_payload", message: e.to_string(), field: Some(("field", "type".into())) };
        incoming.check().map_err(bad_type)?;
        // Checked, and not a repeat: only now does it count against the tenant's limits.
        let seen = messages::admission(&state.tenant_pool, req.tenant, incoming.idempotency_key.as_deref()).await.map_err(|e| IntakeError::Unavailable(e.to_string()))?;
        if !seen.repeat {
            admit(&state, req.tenant, seen.bytes_in_flight).await?;
        }
        let accepted = match state.webhooks_out.accept(incoming).await {
            Ok(a) => a,
            Err(e @ MessageError::BadType) => return Err(bad_type(e)),
            Err(e @ (MessageError::Db(_) | MessageError::Batch(_))) => return Err(IntakeError::Unavailable(e.to_string())),
        };
        if !accepted.duplicate {
            let ids: Vec<uuid::Uuid> = accepted.deliveries.iter().map(|(d, _)| *d).collect();
            // Committed: a lost push is queued by the delivery sweep, under the same job id.
            if let Err(e) = messages::push(&state.queue, req.tenant, &ids).await {
                tracing::warn!(message = "Webhook accepted; its delivery jobs are queued by the sweep.", error = %e);
            }
        }
        let jobs = accepted.deliveries.iter().map(|(d, e)| DeliveryJob { id: messages::job_id(*d).0, delivery_id: *d, endpoint_id: *e }).collect();
        Ok(Accepted { jobs: Some(jobs), ..Accepted::job(messages::webhook_id(accepted.message_id), messages::JOB_KIND, accepted.duplicate) })
    }

    fn status(&self, state: Outbound, tenant: crate::newtypes::TenantId, id: &str) -> Option<impl Future<Output = Result<Option<crate::queue::status::JobStatus>, crate::db::DbError>> + Send> {
        // The answer to POST /v1/jobs names the message (`msg_…`) and each delivery (`whd_…`):
        // both resolve.
        let (delivery, message) = (messages::delivery_of(id), messages::message_of(id));
        if delivery.is_none() && message.is_none() {
            return None;
        }
        Some(async move {
            match (delivery, message) {
                (Some(d), _) => crate::webhooks_out::job_status::job_status(&state.tenant_pool, tenant, d).await,
                (None, Some(m)) => crate::webhooks_out::job_status::message_status(&state.tenant_pool, tenant, m).await,
                (None, None) => Ok(None),
            }
        })
    }
}

/// Whether the tenant may send one more message now: its undelivered bytes (`in_flight`) under
/// the bound, and its message window not full. Redis failing to count fails open, as the write
/// limit does.
async fn admit(state: &Outbound, tenant: crate::newtypes::TenantId, in_flight: u64) -> Result<(), IntakeError> {
    use crate::ratelimit::{Limit, PolicyName, Request, Subject, Verdict};
    let bound = &state.limiter.policies.tenant_webhooks;
    if in_flight >= bound.max_bytes_in_flight {
        return Err(IntakeError::Busy {
            code: "too_much_in_flight",
            message: format!(
                "this tenant's undelivered webhooks hold {in_flight} bytes, its bound is {}: retry when its receivers have caught up",
                bound.max_bytes_in_flight
            ),
            retry_after_secs: 60,
        });
    }
    let limit = Limit { policy: PolicyName::TenantWebhooks, subject: Subject::Tenant(tenant), window: state.limiter.policies.tenant_webhooks_for(tenant) };
    match state.limiter.decide(&Request { limits: vec![limit], ..Default::default() }).await {
        Ok(Verdict::Admit(_)) => Ok(()),
        Ok(refused) => Err(IntakeError::Limited(refused)),
        Err(e) => {
            tracing::warn!(message = "Webhook message limit not checked.", error = %e);
            Ok(())
        }
    }
}
