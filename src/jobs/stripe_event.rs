//! `stripe.event`: applies one inbox row to the billing mirror.
//!
//! Routing runs on the system pool (the tenant is what it finds out); the apply runs in one
//! tenant transaction that serialises the tenant's events, locks the object, applies,
//! recomputes entitlements, writes side effects and marks the event processed. After commit
//! the tenant's entitlement cache key is invalidated, and events parked for a customer whose
//! mapping this event established are queued again.

use serde::Deserialize;
use tracing::Instrument;

use super::kind::{Job, JobContext, JobError, JobReport};
use crate::state::AppState;
use crate::billing::entitlements;
use crate::domain::TenantId;
use crate::stripe::client::ObjectKind;
use crate::stripe::event::{StripeEvent, expandable_id};
use crate::stripe::handlers::{self, EventCtx, HandlerError};
use crate::stripe::inbox;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeEventJob;

/// Arguments: the inbox row to apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeEventArgs {
    /// `evt_…`.
    pub event_id: String,
}

impl From<HandlerError> for JobError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::Shape(msg) => JobError::Cancel(msg),
            other => JobError::Retry(other.to_string()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct InboxRow {
    payload: serde_json::Value,
    status: String,
    tenant_id: Option<uuid::Uuid>,
    customer_id: Option<String>,
    /// The tenant mapped to `customer_id`, read in the same round trip (the common route).
    mapped_tenant: Option<uuid::Uuid>,
}

impl Job for StripeEventJob {
    const KIND: &'static str = inbox::JOB_KIND;
    type Args = StripeEventArgs;

    async fn run(&self, args: StripeEventArgs, ctx: JobContext) -> Result<JobReport, JobError> {
        let result = apply_event(&args, &ctx).await;
        if let Err(e) = &result {
            // Kept on the inbox row for operators (top failure reasons); best effort.
            let _ = sqlx::query("UPDATE stripe_events SET attempts = attempts + 1, last_error = $2 WHERE id = $1")
                .bind(&args.event_id)
                .bind(e.to_string())
                .execute(&ctx.state.system_pool.0)
                .await;
        }
        result
    }
}

async fn apply_event(args: &StripeEventArgs, ctx: &JobContext) -> Result<JobReport, JobError> {
    let state = &ctx.state;
    let system = &state.system_pool.0;
    // System pool: the event's tenant is not known until it is routed.
    let row: Option<InboxRow> =
        sqlx::query_as(
            "SELECT e.payload, e.status, e.tenant_id, e.customer_id,
                    (SELECT t.id FROM tenants t WHERE t.stripe_customer_id = e.customer_id) AS mapped_tenant
             FROM stripe_events e WHERE e.id = $1",
        )
            .bind(&args.event_id)
            .fetch_optional(system)
            .await?;
    let Some(row) = row else { return Err(JobError::Cancel(format!("no inbox row for {}", args.event_id))) };
    if matches!(row.status.as_str(), "processed" | "ignored") {
        if let (Some(tenant), "processed") = (row.tenant_id.or(row.mapped_tenant), row.status.as_str()) {
            finish_applied(state, TenantId(tenant), row.customer_id.as_deref()).await?;
        }
        return Ok(serde_json::json!({"event": args.event_id, "outcome": "already done"}));
    }
    let event = StripeEvent::from_value(&row.payload, 0).map_err(|e| JobError::Cancel(e.to_string()))?;
    let tenant = match row.tenant_id.or(row.mapped_tenant) {
        Some(t) => TenantId(t),
        None => match route(state, &event, row.customer_id.as_deref()).await? {
            Some(t) => t,
            None => {
                sqlx::query("UPDATE stripe_events SET status = 'unmatched', customer_id = COALESCE(customer_id, $2) WHERE id = $1 AND status <> 'processed'")
                    .bind(&event.id)
                    .bind(event.customer_id())
                    .execute(system)
                    .await?;
                tracing::info!(message = "Stripe event parked: no tenant for its customer yet.", event_id = %event.id, customer = ?row.customer_id);
                // The mapping may have committed (and released its parked events) between our
                // routing and the park: look again, so this event is not left waiting for a sweep.
                if let Some(customer) = row.customer_id.as_deref().or(event.customer_id())
                    && mapped_tenant(system, customer).await?.is_some()
                {
                    inbox::release_unmatched(&state.system_pool, &state.queue, customer)
                        .await
                        .map_err(|e| JobError::Retry(e.to_string()))?;
                }
                return Ok(serde_json::json!({"event": event.id, "outcome": "unmatched"}));
            }
        },
    };
    // The job span learns its tenant here (a webhook's tenant is known only once routed).
    tracing::Span::current().record("tenant.id", tenant.to_string());
    if row.tenant_id.is_none() {
        // System pool: the row has no tenant yet, so the tenant role could not see it.
        sqlx::query("UPDATE stripe_events SET tenant_id = $2 WHERE id = $1 AND tenant_id IS NULL")
            .bind(&event.id)
            .bind(tenant.0)
            .execute(system)
            .await?;
    }

    // One tenant's events apply one at a time, so entitlements see every committed change.
    let db_span = tracing::info_span!(
        "db transaction",
        otel.name = "BEGIN apply stripe event",
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = "apply stripe event",
        tenant.id = %tenant,
    );
    let applied = async {
        let mut tx = state.tenant_pool.begin_serialised(tenant).await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = $1 FOR UPDATE")
            .bind(&event.id)
            .fetch_optional(&mut *tx)
            .await?;
        if status.as_deref() == Some("processed") {
            return Ok::<_, JobError>(None);
        }
        let mut ectx = EventCtx { tx: &mut tx, tenant, event: &event, stripe: &state.stripe, wrote_dunning_effect: false };
        let applied = handlers::apply(&mut ectx).await?;
        let dunning_effects = ectx.wrote_dunning_effect;
        let access = entitlements::recompute(&mut tx, tenant, &state.plans, state.settings.past_due_grace).await?;
        sqlx::query(
            "UPDATE stripe_events SET status = 'processed', processed_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1",
        )
        .bind(&event.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        crate::fault::point("stripe.event.after_commit");
        Ok(Some((applied, dunning_effects, access)))
    }
    .instrument(db_span)
    .await?;
    let Some((applied, dunning_effects, access)) = applied else {
        finish_applied(state, tenant, event.customer_id()).await?;
        return Ok(serde_json::json!({"event": event.id, "outcome": "already processed"}));
    };
    // Stripe's event time to processed: the webhook lag operators watch.
    state.metrics.webhook_lag(event.created);

    entitlements::invalidate(&state.cache, tenant).await;
    // Dunning and reminder emails from the effects this event wrote: now, so the day-0 email
    // and a recovery do not wait for the daily run (which consumes whatever this misses).
    if dunning_effects
        && let Err(e) = crate::dunning::consume_effects(&state.dunning_deps(), tenant).await
    {
        tracing::warn!(message = "Billing effects not consumed yet; the dunning run will.", tenant = %tenant, error = %e);
    }
    if let Some(customer) = applied.mapped_customer {
        inbox::release_unmatched(&state.system_pool, &state.queue, &customer).await.map_err(|e| JobError::Retry(e.to_string()))?;
    }
    Ok(serde_json::json!({"event": event.id, "type": event.event_type, "tenant": tenant, "access": format!("{access:?}")}))
}

/// The after-commit steps of an event already applied, done again: a run that died between its
/// commit and them (kill -9, a deploy) left them undone, and they are idempotent. Without this,
/// events parked while this one mapped the customer would wait for the scheduler's sweep.
async fn finish_applied(state: &AppState, tenant: TenantId, customer: Option<&str>) -> Result<(), JobError> {
    entitlements::invalidate(&state.cache, tenant).await;
    if let Some(customer) = customer
        && mapped_tenant(&state.system_pool.0, customer).await? == Some(tenant)
    {
        inbox::release_unmatched(&state.system_pool, &state.queue, customer).await.map_err(|e| JobError::Retry(e.to_string()))?;
    }
    Ok(())
}

/// Finds the tenant of an event: by the customer's mapping, or by the tenant id the app put
/// in metadata (checkout, customer, subscription). System pool: routing precedes the tenant.
async fn route(state: &AppState, event: &StripeEvent, customer: Option<&str>) -> Result<Option<TenantId>, JobError> {
    let system = &state.system_pool.0;
    let mut customer = customer.map(str::to_owned).or_else(|| event.customer_id().map(str::to_owned));
    if customer.is_none() && event.event_type.starts_with("charge.dispute.") {
        // A dispute names its charge, not the customer: ask our mirror, then Stripe.
        if let Some(charge) = event.object.get("charge").and_then(expandable_id) {
            let known: Option<String> = sqlx::query_scalar("SELECT customer_id FROM charges WHERE id = $1")
                .bind(charge)
                .fetch_optional(system)
                .await?;
            customer = match known {
                Some(c) => Some(c),
                None => {
                    let fetched = state.stripe.retrieve(ObjectKind::Charge, charge).await.map_err(|e| JobError::Retry(e.to_string()))?;
                    fetched.get("customer").and_then(expandable_id).map(str::to_owned)
                }
            };
            if let Some(c) = &customer {
                sqlx::query("UPDATE stripe_events SET customer_id = $2 WHERE id = $1").bind(&event.id).bind(c).execute(system).await?;
            }
        }
    }
    if let Some(c) = &customer
        && let Some(t) = mapped_tenant(system, c).await?
    {
        return Ok(Some(t));
    }
    let claimed = event
        .object
        .pointer("/metadata/tenant_id")
        .and_then(|v| v.as_str())
        .or_else(|| event.object.get("client_reference_id").and_then(|v| v.as_str()))
        .and_then(|s| s.parse::<uuid::Uuid>().ok());
    let Some(claimed) = claimed else { return Ok(None) };
    // A claimed tenant counts only if it exists and is not mapped to another customer.
    let ok: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM tenants WHERE id = $1 AND (stripe_customer_id IS NULL OR stripe_customer_id = $2)",
    )
    .bind(claimed)
    .bind(customer.as_deref())
    .fetch_optional(system)
    .await?;
    Ok(ok.map(TenantId))
}

/// The tenant mapped to a Stripe customer, if any. System pool: routing precedes the tenant.
async fn mapped_tenant(system: &sqlx::PgPool, customer: &str) -> Result<Option<TenantId>, sqlx::Error> {
    let id: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE stripe_customer_id = $1").bind(customer).fetch_optional(system).await?;
    Ok(id.map(TenantId))
}
