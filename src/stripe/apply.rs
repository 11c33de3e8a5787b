//! Applying one inbox row to the billing mirror: what the `stripe.event` and `stripe.refetch`
//! jobs call.
//!
//! The intake usually knows the event's tenant and the job carries it; otherwise routing runs
//! on the system pool first (the tenant is what it finds out). Either way the apply is one
//! tenant transaction whose first statement claims the row (marked processed, committed with
//! the apply) and takes the tenant's lock, then locks the object, applies, recomputes
//! entitlements and writes side effects. After the commit, one step ([`after_commit`]) drops
//! the tenant's cached entitlements, consumes dunning effects and releases events parked for a
//! customer these events bound; a job that finds its row already processed runs the same step
//! again (a run that died between its commit and that step left it undone).

use tracing::Instrument;

use crate::billing::entitlements;
use crate::newtypes::{EventId, TenantId};
use crate::stripe::event::StripeEvent;
use crate::stripe::handlers::{self, EventCtx, HandlerError};
use crate::stripe::inbox::{self, Claim, InboxStatus};
use crate::stripe::routing::{self, Routed};

/// What the apply uses: a tenant's billing (its mirror, dunning, the cache), the metrics, the
/// group size and this member's record of the events its groups applied.
#[derive(Clone)]
pub struct ApplyDeps {
    /// The mirror, dunning, the queue and the cache.
    pub billing: crate::dunning::Deps,
    /// The webhook lag metric.
    pub metrics: crate::metrics::Metrics,
    /// How many of a tenant's waiting events one transaction applies (with its own).
    pub apply_batch: u32,
    /// Events this process applied in another event's group.
    pub applied_in_groups: std::sync::Arc<inbox::grouped::AppliedInGroups>,
}

/// Why an event was not applied now.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Transient (PostgreSQL, Stripe, a race with a re-route): try again later.
    #[error("{0}")]
    Retry(String),
    /// It will never apply as it is (a malformed payload, a shape Ballast refuses).
    #[error("{0}")]
    Refused(String),
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        ApplyError::Retry(format!("postgres: {e}"))
    }
}

impl From<crate::db::DbError> for ApplyError {
    fn from(e: crate::db::DbError) -> Self {
        ApplyError::Retry(e.to_string())
    }
}

impl From<HandlerError> for ApplyError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::Shape(msg) => ApplyError::Refused(msg),
            other => ApplyError::Retry(other.to_string()),
        }
    }
}

/// What applying an inbox row did.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum ApplyReport {
    /// Applied to the tenant's mirror.
    Applied {
        /// The event.
        event: EventId,
        /// Its type.
        #[serde(rename = "type")]
        event_type: String,
        /// The tenant it was routed to.
        tenant: TenantId,
        /// The tenant's access afterwards.
        access: String,
        /// The tenant's other waiting events applied in the same transaction.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        with: Vec<EventId>,
    },
    /// Nothing applied: already done, already processed, or parked unmatched.
    Skipped {
        /// The event.
        event: EventId,
        /// Why.
        outcome: &'static str,
    },
}

/// The outcome of a job whose event this process applied in another event's group.
pub const APPLIED_IN_A_GROUP: &str = "applied with another event of its tenant";

/// Applies inbox row `event_id`, of `tenant` when the intake knew it (the tenant's other
/// waiting events then join the transaction), created at `created` (unix s) by Stripe when the
/// job says (the claim then reads the row's month alone). A failure is kept on the row for
/// operators.
pub async fn apply(deps: &ApplyDeps, event_id: &EventId, tenant: Option<TenantId>, created: Option<i64>) -> Result<ApplyReport, ApplyError> {
    if deps.applied_in_groups.contains(event_id) {
        return Ok(ApplyReport::Skipped { event: event_id.clone(), outcome: APPLIED_IN_A_GROUP });
    }
    let result = match tenant {
        Some(tenant) => {
            let created = created.and_then(|at| chrono::DateTime::from_timestamp(at, 0));
            apply_for_tenant(deps, event_id, tenant, Attempt { join_waiting: true, created, ..Attempt::default() }).await
        }
        None => apply_routed(deps, event_id, None).await,
    };
    record_failure(deps, event_id, &result).await;
    result
}

/// Applies an event that tied with the mirror with `object`, Stripe's current state of it
/// (read by `stripe.refetch` with no transaction open).
pub async fn apply_fetched(deps: &ApplyDeps, event_id: &EventId, object_id: String, object: serde_json::Value) -> Result<ApplyReport, ApplyError> {
    let result = apply_routed(deps, event_id, Some((object_id, object))).await;
    record_failure(deps, event_id, &result).await;
    result
}

/// Keeps a failure on the inbox row (top failure reasons for operators); best effort.
async fn record_failure(deps: &ApplyDeps, event_id: &EventId, result: &Result<ApplyReport, ApplyError>) {
    if let Err(e) = result {
        let _ = inbox::record_failure(&deps.billing.system_pool, event_id, &e.to_string()).await;
    }
}

/// How a tenant transaction for an event was reached.
#[derive(Default)]
struct Attempt {
    /// The tenant's other waiting events join the transaction (see [`apply_waiting`]).
    join_waiting: bool,
    /// Stripe's current object, read by `stripe.refetch` for an event that tied with the mirror.
    fetched: Option<(String, serde_json::Value)>,
    /// The routing path bound the row to this tenant just before.
    routed: bool,
    /// The event's Stripe creation time, when the job carried it: the row's month.
    created: Option<chrono::DateTime<chrono::Utc>>,
}

/// Applies inbox row `event_id` whose tenant is not known yet (the intake could not tell, or
/// the tenant no longer sees it): routed on the system pool, then applied as the tenant's.
async fn apply_routed(deps: &ApplyDeps, event_id: &EventId, fetched: Option<(String, serde_json::Value)>) -> Result<ApplyReport, ApplyError> {
    let system = &deps.billing.system_pool;
    let Some(row) = inbox::load(system, event_id).await? else { return Err(ApplyError::Refused(format!("no inbox row for {event_id}"))) };
    if row.status().is_done() {
        if let (Some(tenant), InboxStatus::Processed) = (row.tenant_id.or(row.mapped_tenant), row.status()) {
            let event = StripeEvent::from_value(&row.payload, 0).ok();
            let tenant = TenantId(tenant);
            after_commit(deps, tenant, &AfterCommit::again(event.as_ref(), tenant)).await?;
        }
        return Ok(ApplyReport::Skipped { event: event_id.clone(), outcome: "already done" });
    }
    let event = StripeEvent::from_value(&row.payload, 0).map_err(|e| ApplyError::Refused(e.to_string()))?;
    let tenant = match row.tenant_id.or(row.mapped_tenant) {
        Some(t) => TenantId(t),
        None => match routing::route(system, &deps.billing.stripe, &event, row.customer_id.as_deref()).await.map_err(|e| ApplyError::Retry(e.to_string()))? {
            Routed::Tenant(t) => t,
            // A guest payment (no customer) naming no tenant: parked, it would wait forever.
            Routed::Nobody => {
                inbox::mark_ignored(system, &event.id).await?;
                return Ok(ApplyReport::Skipped { event: event.id, outcome: "ignored: no customer and no tenant" });
            }
            Routed::Unmapped(customer) => {
                inbox::park_unmatched(system, &event.id, Some(&customer)).await?;
                tracing::info!(message = "Stripe event parked: no tenant for its customer yet.", event_id = %event.id, customer = %customer);
                // The mapping may have committed (and released its parked events) between our
                // routing and the park, or the tenant's deleted customer been unbound (and the
                // events naming the tenant released): route again, so this event is not left
                // waiting for a sweep.
                let now = routing::route(system, &deps.billing.stripe, &event, Some(&customer)).await.map_err(|e| ApplyError::Retry(e.to_string()))?;
                if matches!(now, Routed::Tenant(_)) {
                    inbox::release_unmatched(system, &deps.billing.queue, &customer).await.map_err(|e| ApplyError::Retry(e.to_string()))?;
                }
                return Ok(ApplyReport::Skipped { event: event.id, outcome: "unmatched" });
            }
        },
    };
    if row.tenant_id.is_none() {
        inbox::set_tenant(system, &event.id, tenant).await?;
    }
    apply_for_tenant(deps, &event.id, tenant, Attempt { fetched, routed: true, ..Attempt::default() }).await
}

/// Applies inbox row `event_id` of `tenant` in one tenant transaction: the row is read, locked
/// and claimed (with the tenant's lock) in one statement, the event applied, entitlements
/// recomputed, committed. A row already done ends the job; a row the tenant cannot see (routed
/// elsewhere since) takes the routing path.
async fn apply_for_tenant(deps: &ApplyDeps, event_id: &EventId, tenant: TenantId, attempt: Attempt) -> Result<ApplyReport, ApplyError> {
    // The job span learns its tenant here (a routed webhook's tenant is known only now).
    tracing::Span::current().record("tenant.id", tenant.to_string());
    // Not serialised yet: the claim takes the tenant's lock once the row is locked.
    // A claim named by its month runs on the generic plan (see `begin_planned_once`).
    let mut tx = match attempt.created {
        Some(_) => deps.billing.tenant_pool.begin_planned_once(tenant).await,
        None => deps.billing.tenant_pool.begin(tenant).await,
    }
    .map_err(HandlerError::from)?;
    let join = if attempt.join_waiting { deps.apply_batch.saturating_sub(1) } else { 0 };
    let (payload, waiting) = match inbox::claim(&mut tx, event_id, attempt.created, join).await? {
        Some(Claim::Claimed { own, waiting }) => (own, waiting),
        Some(Claim::Done(before, payload)) => {
            drop(tx);
            if before == InboxStatus::Processed {
                let event = StripeEvent::from_value(&payload, 0).ok();
                after_commit(deps, tenant, &AfterCommit::again(event.as_ref(), tenant)).await?;
            }
            return Ok(ApplyReport::Skipped { event: event_id.clone(), outcome: "already done" });
        }
        // Routed to this tenant a moment ago: not seeing it is a race with a re-route, retried
        // rather than applied outside the tenant's lock.
        None if attempt.routed => return Err(ApplyError::Retry(format!("inbox row {event_id} not visible to its tenant {tenant} after routing"))),
        None => {
            drop(tx);
            return Box::pin(apply_routed(deps, event_id, None)).await;
        }
    };
    let event = StripeEvent::from_value(&payload, 0).map_err(|e| ApplyError::Refused(e.to_string()))?;
    if !waiting.is_empty() {
        return apply_waiting(deps, tx, tenant, event, waiting).await;
    }
    let refetched = attempt.fetched.is_some();
    let applied = apply_claimed(deps, tx, tenant, std::slice::from_ref(&event), attempt.fetched).instrument(db_span(tenant)).await;
    // A same-second tie needs Stripe's current object: the transaction is abandoned and the
    // event handed to `stripe.refetch`, which reads the object with no connection held, in
    // slots of its own (a slow Stripe then holds up only the events that need it), and
    // applies the event with it. A second tie after the fetch is left to that job's retry.
    let applied = match applied {
        Err(HandlerError::NeedsFetch(kind, object_id)) if !refetched => {
            let args = inbox::RefetchEvent { event_id: event.id.clone(), kind, object_id };
            inbox::push_refetch(&deps.billing.queue, &args).await.map_err(|e| ApplyError::Retry(e.to_string()))?;
            return Ok(ApplyReport::Skipped { event: event.id, outcome: "re-fetching from Stripe" });
        }
        other => other?,
    };
    after_commit(deps, tenant, &applied.steps).await?;
    Ok(ApplyReport::Applied { event: event.id, event_type: event.event_type, tenant, access: format!("{:?}", applied.access), with: Vec::new() })
}

/// Applies `event` with the tenant's other waiting events (`waiting`, claimed in `tx`), oldest
/// first, in one transaction: one entitlements recompute and one commit for a backlog (a burst,
/// a tenant's renewals) instead of one each, and their own jobs then find them done. The mirror
/// converges whatever the order, as it does across transactions. Any failure (a tie that needs
/// Stripe's object, a malformed payload, a refusal) rolls the whole group back, and `event` is
/// applied alone: the others are waiting again for their own jobs.
async fn apply_waiting(deps: &ApplyDeps, tx: Tx, tenant: TenantId, event: StripeEvent, waiting: Vec<serde_json::Value>) -> Result<ApplyReport, ApplyError> {
    let (own, event_type) = (event.id.clone(), event.event_type.clone());
    let parsed: Result<Vec<StripeEvent>, _> = waiting.iter().map(|p| StripeEvent::from_value(p, 0)).collect();
    let mut events = match parsed {
        Ok(events) => events,
        Err(e) => {
            drop(tx);
            return apply_alone(deps, &own, tenant, &e.to_string()).await;
        }
    };
    events.push(event);
    // Oldest first: what the mirror keeps of a change's first moment (`past_due_since`) is
    // decided by the order a transaction applies its events in.
    events.sort_by(|a, b| (a.created, &a.id.0).cmp(&(b.created, &b.id.0)));
    let applied = match apply_claimed(deps, tx, tenant, &events, None).instrument(db_span(tenant)).await {
        Ok(applied) => applied,
        Err(e) => return apply_alone(deps, &own, tenant, &e.to_string()).await,
    };
    after_commit(deps, tenant, &applied.steps).await?;
    let with: Vec<_> = events.into_iter().map(|e| e.id).filter(|id| *id != own).collect();
    // Committed and followed up: their own jobs need not look at PostgreSQL.
    deps.applied_in_groups.record(&with);
    Ok(ApplyReport::Applied { event: own, event_type, tenant, access: format!("{:?}", applied.access), with })
}

/// After a group rolled back: this job's event alone, in a fresh transaction (the others wait
/// for their own jobs).
async fn apply_alone(deps: &ApplyDeps, event_id: &EventId, tenant: TenantId, why: &str) -> Result<ApplyReport, ApplyError> {
    tracing::info!(message = "A tenant's grouped events rolled back; applying this one alone.", event_id = %event_id, error = %why);
    Box::pin(apply_for_tenant(deps, event_id, tenant, Attempt::default())).await
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

/// What follows a committed apply, done again (idempotent) when a job finds its row already
/// processed.
#[derive(Debug, Default)]
struct AfterCommit {
    /// Stripe's creation times of the events applied: the webhook lag metric (first time only).
    created: Vec<i64>,
    /// Whether the events wrote effects dunning consumes.
    dunning_effects: bool,
    /// Customers the events bound to the tenant: events parked for them are released.
    bound_customers: Vec<String>,
    /// Customers Stripe deleted: their own parked events are released (they route to the
    /// tenant as history), and so are parked events naming the tenant (a new customer binds).
    deleted_customers: Vec<String>,
    /// Done again: a customer is released only while it still maps to this tenant.
    again: bool,
}

impl AfterCommit {
    /// The step for an event already applied (by a run that may have died before its step):
    /// no lag (it was counted), no dunning (the daily run consumes what is left), and the
    /// release of the customer it binds, if the tenant is still the one that customer maps to.
    fn again(event: Option<&StripeEvent>, tenant: TenantId) -> Self {
        let bound = event.and_then(|e| handlers::customer_it_binds(e, tenant)).map(str::to_owned);
        let deleted = event.filter(|e| handlers::deletes_customer(&e.event_type)).and_then(|e| e.customer_id()).map(str::to_owned);
        Self { bound_customers: bound.into_iter().collect(), deleted_customers: deleted.into_iter().collect(), again: true, ..Self::default() }
    }
}

/// The one step after a commit: the lag metric, the tenant's cached entitlements dropped,
/// dunning's effects consumed, and events parked for a bound customer released.
async fn after_commit(deps: &ApplyDeps, tenant: TenantId, step: &AfterCommit) -> Result<(), ApplyError> {
    // Stripe's event time to processed: the webhook lag operators watch.
    for at in &step.created {
        deps.metrics.webhook_lag(*at);
    }
    entitlements::invalidate(&deps.billing.cache, tenant).await;
    // Dunning and reminder emails from the effects these events wrote: now, so the day-0 email
    // and a recovery do not wait for the daily run (which consumes whatever this misses).
    if step.dunning_effects
        && let Err(e) = crate::dunning::consume_effects(&deps.billing, tenant).await
    {
        tracing::warn!(message = "Billing effects not consumed yet; the dunning run will.", tenant = %tenant, error = %e);
    }
    let system = &deps.billing.system_pool;
    for customer in &step.bound_customers {
        // Done again: the customer may have been bound to another tenant since.
        if step.again && routing::mapped_tenant(system, customer).await? != Some(tenant) {
            continue;
        }
        inbox::release_unmatched(system, &deps.billing.queue, customer).await.map_err(|e| ApplyError::Retry(e.to_string()))?;
    }
    for customer in &step.deleted_customers {
        inbox::release_unmatched(system, &deps.billing.queue, customer).await.map_err(|e| ApplyError::Retry(e.to_string()))?;
        inbox::release_naming_tenant(system, &deps.billing.queue, tenant).await.map_err(|e| ApplyError::Retry(e.to_string()))?;
    }
    Ok(())
}

/// What a committed apply tells the step after it.
struct Applied {
    steps: AfterCommit,
    /// The tenant's access afterwards.
    access: crate::billing::access::Access,
}

/// A tenant transaction.
type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The rest of the transaction once its rows are claimed: apply `events` in order, recompute
/// entitlements once, commit. `fetched` is Stripe's object for a tie (single events only).
async fn apply_claimed(deps: &ApplyDeps, mut tx: Tx, tenant: TenantId, events: &[StripeEvent], mut fetched: Option<(String, serde_json::Value)>) -> Result<Applied, HandlerError> {
    let mut steps = AfterCommit { created: events.iter().map(|e| e.created).collect(), ..AfterCommit::default() };
    for event in events {
        let mut ectx = EventCtx { tx: &mut tx, tenant, event, fetched: fetched.take(), wrote_dunning_effect: false, plans: &deps.billing.plans };
        let one = handlers::apply(&mut ectx).await?;
        steps.dunning_effects |= ectx.wrote_dunning_effect;
        steps.bound_customers.extend(one.mapped_customer);
        steps.deleted_customers.extend(one.unbound_customer);
    }
    let access = entitlements::recompute(&mut tx, tenant, &deps.billing.plans, &deps.billing.access_rules()).await?;
    tx.commit().await?;
    crate::fault::point("stripe.event.after_commit");
    Ok(Applied { steps, access })
}
