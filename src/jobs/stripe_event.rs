//! `stripe.event`: applies one inbox row to the billing mirror.
//!
//! The intake usually knows the event's tenant and the job carries it; otherwise routing runs
//! on the system pool first (the tenant is what it finds out). Either way the apply is one
//! tenant transaction whose first statement claims the row (marked processed, committed with
//! the apply) and takes the tenant's lock, then locks the object, applies, recomputes
//! entitlements and writes side effects. After commit the tenant's entitlement cache key is
//! invalidated, and events parked for a customer whose mapping this event established are
//! queued again.

use tracing::Instrument;

use super::kind::{Job, JobContext, JobError};
use crate::state::AppState;
use crate::billing::entitlements;
use crate::domain::TenantId;
use crate::stripe::event::StripeEvent;
use crate::stripe::handlers::{self, EventCtx, HandlerError};
use crate::stripe::inbox::{self, Claim, InboxStatus};
use crate::stripe::routing::{self, Routed};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeEventJob;

impl From<HandlerError> for JobError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::Shape(msg) => JobError::Cancel(msg),
            other => JobError::Retry(other.to_string()),
        }
    }
}

/// What applying an inbox row did.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum StripeEventReport {
    /// Applied to the tenant's mirror.
    Applied {
        /// The event.
        event: crate::domain::EventId,
        /// Its type.
        #[serde(rename = "type")]
        event_type: String,
        /// The tenant it was routed to.
        tenant: TenantId,
        /// The tenant's access afterwards.
        access: String,
        /// The tenant's other waiting events applied in the same transaction.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        with: Vec<crate::domain::EventId>,
    },
    /// Nothing applied: already done, already processed, or parked unmatched.
    Skipped {
        /// The event.
        event: crate::domain::EventId,
        /// Why.
        outcome: &'static str,
    },
}

impl Job for StripeEventJob {
    const KIND: &'static str = <inbox::ApplyEvent as crate::queue::job::JobArgs>::KIND;
    type Args = inbox::ApplyEvent;

    type Report = StripeEventReport;

    async fn run(&self, args: inbox::ApplyEvent, ctx: JobContext) -> Result<StripeEventReport, JobError> {
        if ctx.state.applied_in_groups.contains(&args.event_id) {
            return Ok(StripeEventReport::Skipped { event: args.event_id, outcome: APPLIED_IN_A_GROUP });
        }
        let result = match args.tenant {
            Some(tenant) => apply_for_tenant(&args.event_id, tenant, &ctx, Attempt { join_waiting: true, ..Attempt::default() }).await,
            None => apply_event(&args.event_id, None, &ctx).await,
        };
        if let Err(e) = &result {
            // Kept on the inbox row for operators (top failure reasons); best effort.
            let _ = inbox::record_failure(&ctx.state.system_pool, &args.event_id, &e.to_string()).await;
        }
        result
    }
}

/// The outcome of a job whose event this process applied in another event's group.
pub const APPLIED_IN_A_GROUP: &str = "applied with another event of its tenant";

/// How a tenant transaction for an event was reached.
#[derive(Default)]
struct Attempt {
    /// The tenant's other waiting events join the transaction (see [`apply_waiting`]).
    join_waiting: bool,
    /// Stripe's current object, read by `stripe.refetch` for an event that tied with the mirror.
    fetched: Option<(String, serde_json::Value)>,
    /// The routing path bound the row to this tenant just before.
    routed: bool,
}

/// Applies inbox row `event_id` whose tenant is not known yet (the intake could not tell, or
/// the tenant no longer sees it): routed on the system pool, then applied as the tenant's.
/// `fetched` is the object `stripe.refetch` read for it when the event tied with the mirror.
pub(super) async fn apply_event(event_id: &crate::domain::EventId, fetched: Option<(String, serde_json::Value)>, ctx: &JobContext) -> Result<StripeEventReport, JobError> {
    let state = &ctx.state;
    let system = &state.system_pool;
    let row = inbox::load(system, event_id).await?;
    let Some(row) = row else { return Err(JobError::Cancel(format!("no inbox row for {event_id}"))) };
    if row.status().is_done() {
        if let (Some(tenant), InboxStatus::Processed) = (row.tenant_id.or(row.mapped_tenant), row.status()) {
            let event = StripeEvent::from_value(&row.payload, 0).ok();
            finish_applied(state, TenantId(tenant), event.as_ref().and_then(|e| handlers::customer_it_binds(e, TenantId(tenant)))).await?;
        }
        return Ok(StripeEventReport::Skipped { event: event_id.clone(), outcome: "already done" });
    }
    let event = StripeEvent::from_value(&row.payload, 0).map_err(|e| JobError::Cancel(e.to_string()))?;
    let tenant = match row.tenant_id.or(row.mapped_tenant) {
        Some(t) => TenantId(t),
        None => match routing::route(system, &state.stripe, &event, row.customer_id.as_deref()).await.map_err(|e| JobError::Retry(e.to_string()))? {
            Routed::Tenant(t) => t,
            // A guest payment (no customer) naming no tenant: parked, it would wait forever.
            Routed::Nobody => {
                inbox::mark_ignored(system, &event.id).await?;
                return Ok(StripeEventReport::Skipped { event: event.id, outcome: "ignored: no customer and no tenant" });
            }
            Routed::Unmapped(customer) => {
                inbox::park_unmatched(system, &event.id, Some(&customer)).await?;
                tracing::info!(message = "Stripe event parked: no tenant for its customer yet.", event_id = %event.id, customer = %customer);
                // The mapping may have committed (and released its parked events) between our
                // routing and the park: look again, so this event is not left waiting for a sweep.
                if routing::mapped_tenant(system, &customer).await?.is_some() {
                    inbox::release_unmatched(&state.system_pool, &state.queue, &customer)
                        .await
                        .map_err(|e| JobError::Retry(e.to_string()))?;
                }
                return Ok(StripeEventReport::Skipped { event: event.id, outcome: "unmatched" });
            }
        },
    };
    if row.tenant_id.is_none() {
        inbox::set_tenant(system, &event.id, tenant).await?;
    }
    apply_for_tenant(&event.id, tenant, ctx, Attempt { fetched, routed: true, ..Attempt::default() }).await
}

/// Applies inbox row `event_id` of `tenant` in one tenant transaction: the row is read, locked
/// and claimed (with the tenant's lock) in one statement, the event applied, entitlements
/// recomputed, committed. A row already done ends the job; a row the tenant cannot see (routed
/// elsewhere since) takes the routing path.
async fn apply_for_tenant(event_id: &crate::domain::EventId, tenant: TenantId, ctx: &JobContext, attempt: Attempt) -> Result<StripeEventReport, JobError> {
    let state = &ctx.state;
    // The job span learns its tenant here (a routed webhook's tenant is known only now).
    tracing::Span::current().record("tenant.id", tenant.to_string());
    // Not serialised yet: the claim takes the tenant's lock once the row is locked.
    let mut tx = state.tenant_pool.begin(tenant).await.map_err(HandlerError::from)?;
    let join = if attempt.join_waiting { state.settings.webhook_apply_batch.saturating_sub(1) } else { 0 };
    let (payload, waiting) = match inbox::claim(&mut tx, event_id, join).await? {
        Some(Claim::Claimed { own, waiting }) => (own, waiting),
        Some(Claim::Done(before, payload)) => {
            drop(tx);
            if before == InboxStatus::Processed {
                let event = StripeEvent::from_value(&payload, 0).ok();
                finish_applied(state, tenant, event.as_ref().and_then(|e| handlers::customer_it_binds(e, tenant))).await?;
            }
            return Ok(StripeEventReport::Skipped { event: event_id.clone(), outcome: "already done" });
        }
        // Routed to this tenant a moment ago: not seeing it is a race with a re-route, retried
        // rather than applied outside the tenant's lock.
        None if attempt.routed => return Err(JobError::Retry(format!("inbox row {event_id} not visible to its tenant {tenant} after routing"))),
        None => {
            drop(tx);
            return Box::pin(apply_event(event_id, None, ctx)).await;
        }
    };
    let event = StripeEvent::from_value(&payload, 0).map_err(|e| JobError::Cancel(e.to_string()))?;
    if !waiting.is_empty() {
        return apply_waiting(tx, state, tenant, event, waiting, ctx).await;
    }
    let refetched = attempt.fetched.is_some();
    let applied = apply_claimed(tx, state, tenant, std::slice::from_ref(&event), attempt.fetched).instrument(db_span(tenant)).await;
    after_apply(state, tenant, event, applied, refetched).await
}

/// Applies `event` with the tenant's other waiting events (`waiting`, claimed in `tx`), oldest
/// first, in one transaction: one entitlements recompute and one commit for a backlog (a burst,
/// a tenant's renewals) instead of one each, and their own jobs then find them done. The mirror
/// converges whatever the order, as it does across transactions. Any failure (a tie that needs
/// Stripe's object, a malformed payload, a refusal) rolls the whole group back, and `event` is
/// applied alone: the others are waiting again for their own jobs.
async fn apply_waiting(tx: Tx, state: &AppState, tenant: TenantId, event: StripeEvent, waiting: Vec<serde_json::Value>, ctx: &JobContext) -> Result<StripeEventReport, JobError> {
    let (own, event_type) = (event.id.clone(), event.event_type.clone());
    let parsed: Result<Vec<StripeEvent>, _> = waiting.iter().map(|p| StripeEvent::from_value(p, 0)).collect();
    let mut events = match parsed {
        Ok(events) => events,
        Err(e) => {
            drop(tx);
            return apply_alone(&own, tenant, ctx, &e.to_string()).await;
        }
    };
    events.push(event);
    events.sort_by(|a, b| (a.created, &a.id.0).cmp(&(b.created, &b.id.0)));
    let applied = match apply_claimed(tx, state, tenant, &events, None).instrument(db_span(tenant)).await {
        Ok(applied) => applied,
        Err(e) => return apply_alone(&own, tenant, ctx, &e.to_string()).await,
    };
    let created: Vec<i64> = events.iter().map(|e| e.created).collect();
    after_commit(state, tenant, &created, &applied).await?;
    let with: Vec<_> = events.into_iter().map(|e| e.id).filter(|id| *id != own).collect();
    // Committed and followed up: their own jobs need not look at PostgreSQL.
    state.applied_in_groups.record(&with);
    Ok(StripeEventReport::Applied { event: own, event_type, tenant, access: format!("{:?}", applied.access), with })
}

/// After a group rolled back: this job's event alone, in a fresh transaction (the others wait
/// for their own jobs).
async fn apply_alone(event_id: &crate::domain::EventId, tenant: TenantId, ctx: &JobContext, why: &str) -> Result<StripeEventReport, JobError> {
    tracing::info!(message = "A tenant's grouped events rolled back; applying this one alone.", event_id = %event_id, error = %why);
    Box::pin(apply_for_tenant(event_id, tenant, ctx, Attempt::default())).await
}

/// One tenant's events apply one at a time, so entitlements see every committed change.
fn db_span(tenant: TenantId) -> tracing::Span {
    tracing::info_span!(
        "db transaction",
        otel.name = "BEGIN apply stripe event",
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = "apply stripe event",
        tenant.id = %tenant,
    )
}

/// What follows a tenant transaction: a tie handed to `stripe.refetch`, or the after-commit
/// steps of an applied event.
async fn after_apply(state: &AppState, tenant: TenantId, event: StripeEvent, applied: Result<Applied, HandlerError>, refetched: bool) -> Result<StripeEventReport, JobError> {
    // A same-second tie needs Stripe's current object: the transaction is abandoned and the
    // event handed to `stripe.refetch`, which reads the object with no connection held, in
    // slots of its own (a slow Stripe then holds up only the events that need it), and
    // applies the event with it. A second tie after the fetch is left to that job's retry.
    let applied = match applied {
        Err(HandlerError::NeedsFetch(kind, object_id)) if !refetched => {
            let args = inbox::RefetchEvent { event_id: event.id.clone(), kind, object_id };
            inbox::push_refetch(&state.queue, &args).await.map_err(|e| JobError::Retry(e.to_string()))?;
            return Ok(StripeEventReport::Skipped { event: event.id, outcome: "re-fetching from Stripe" });
        }
        other => other?,
    };
    after_commit(state, tenant, &[event.created], &applied).await?;
    Ok(StripeEventReport::Applied { event: event.id, event_type: event.event_type, tenant, access: format!("{:?}", applied.access), with: Vec::new() })
}

/// The steps after the commit of events created at `created`: the lag metric, the entitlement
/// cache, dunning and the release of events parked for a customer these events mapped.
async fn after_commit(state: &AppState, tenant: TenantId, created: &[i64], applied: &Applied) -> Result<(), JobError> {
    // Stripe's event time to processed: the webhook lag operators watch.
    for at in created {
        state.metrics.webhook_lag(*at);
    }
    entitlements::invalidate(&state.cache, tenant).await;
    // Dunning and reminder emails from the effects these events wrote: now, so the day-0 email
    // and a recovery do not wait for the daily run (which consumes whatever this misses).
    if applied.dunning_effects
        && let Err(e) = crate::dunning::consume_effects(&state.dunning_deps(), tenant).await
    {
        tracing::warn!(message = "Billing effects not consumed yet; the dunning run will.", tenant = %tenant, error = %e);
    }
    for customer in &applied.mapped_customers {
        inbox::release_unmatched(&state.system_pool, &state.queue, customer).await.map_err(|e| JobError::Retry(e.to_string()))?;
    }
    Ok(())
}

/// What a committed apply tells the steps after it.
struct Applied {
    /// Customers these events mapped to the tenant (events parked for them are released).
    mapped_customers: Vec<String>,
    /// Whether they wrote effects dunning consumes.
    dunning_effects: bool,
    /// The tenant's access afterwards.
    access: entitlements::Access,
}

/// A tenant transaction.
type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The rest of the transaction once its rows are claimed: apply `events` in order, recompute
/// entitlements once, commit. `fetched` is Stripe's object for a tie (single events only).
async fn apply_claimed(mut tx: Tx, state: &AppState, tenant: TenantId, events: &[StripeEvent], mut fetched: Option<(String, serde_json::Value)>) -> Result<Applied, HandlerError> {
    let (mut mapped_customers, mut dunning_effects) = (Vec::new(), false);
    for event in events {
        let mut ectx = EventCtx { tx: &mut tx, tenant, event, fetched: fetched.take(), wrote_dunning_effect: false };
        let one = handlers::apply(&mut ectx).await?;
        dunning_effects |= ectx.wrote_dunning_effect;
        mapped_customers.extend(one.mapped_customer);
    }
    let access = entitlements::recompute(&mut tx, tenant, &state.plans, state.settings.past_due_grace).await?;
    tx.commit().await?;
    crate::fault::point("stripe.event.after_commit");
    Ok(Applied { mapped_customers, dunning_effects, access })
}

/// The after-commit steps of an event already applied, done again: a run that died between its
/// commit and them (kill -9, a deploy) left them undone, and they are idempotent. Without this,
/// events parked while this one mapped the customer would wait for the scheduler's sweep.
/// `customer` is the one the event binds, if any (most bind none: no PostgreSQL round trip).
async fn finish_applied(state: &AppState, tenant: TenantId, customer: Option<&str>) -> Result<(), JobError> {
    entitlements::invalidate(&state.cache, tenant).await;
    if let Some(customer) = customer
        && routing::mapped_tenant(&state.system_pool, customer).await? == Some(tenant)
    {
        inbox::release_unmatched(&state.system_pool, &state.queue, customer).await.map_err(|e| JobError::Retry(e.to_string()))?;
    }
    Ok(())
}
