//! Event handlers, one file per event family. Each applies one event inside the caller's
//! tenant transaction: it locks the object's row, decides whether the payload is newer than
//! what the mirror holds (Stripe neither orders nor deduplicates deliveries), applies it or
//! the re-fetched object, and writes side-effect rows keyed so that each exists once.
//!
//! Newer is judged by the event's `created` against the `stripe_updated_at` we hold: older →
//! the mirror is left alone (a replay never rolls state back); same second → the payload
//! cannot tell, so the object is re-fetched from the Stripe API; newer → applied. Side
//! effects are written for every delivery of an event, older or not, under keys derived from
//! what they are about, so the set of effects does not depend on delivery order.


mod charge;
mod context;
mod checkout;
mod customer;
mod dispute;
mod invoice;
mod invoice_payment;
mod subscription;

pub use context::{Applied, EventCtx, HandlerError, ts};

/// Every event type Ballast acts on. Others are stored, marked ignored and acknowledged.
pub const HANDLED: &[&str] = &[
    "checkout.session.completed",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.updated",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.upcoming",
    "invoice_payment.paid",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
];

/// Whether Ballast acts on `event_type`.
pub fn handles(event_type: &str) -> bool {
    HANDLED.contains(&event_type)
}

/// Applies `ctx.event` (a handled type) to the mirror. An event whose object names this
/// tenant (`metadata.tenant_id`, a checkout's `client_reference_id`) binds its customer to the
/// tenant when the tenant has none yet, whatever the event type.
pub async fn apply(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let mut applied = apply_by_type(ctx).await?;
    if applied.mapped_customer.is_none()
        && let Some(customer) = customer_it_binds(ctx.event, ctx.tenant).map(str::to_owned)
    {
        ctx.ensure_customer(&customer).await?;
        if ctx.map_customer(&customer).await? {
            applied.mapped_customer = Some(customer);
        }
    }
    Ok(applied)
}

/// The customer that applying `event` binds to `tenant` (when the tenant has none yet): the
/// event's customer when its object names the tenant, a deletion aside. No other event binds
/// one, so no other needs the release of events parked for its customer.
pub fn customer_it_binds(event: &crate::stripe::event::StripeEvent, tenant: crate::domain::TenantId) -> Option<&str> {
    if event.event_type == "customer.deleted" || !names_tenant(&event.object, tenant) {
        return None;
    }
    event.customer_id()
}

/// Whether the object says it belongs to `tenant`.
fn names_tenant(object: &serde_json::Value, tenant: crate::domain::TenantId) -> bool {
    let named = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).and_then(|s| s.parse::<uuid::Uuid>().ok()) == Some(tenant.0);
    named(object.pointer("/metadata/tenant_id")) || named(object.get("client_reference_id"))
}

async fn apply_by_type(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let t = ctx.event.event_type.clone();
    match t.as_str() {
        "checkout.session.completed" => checkout::completed(ctx).await,
        "customer.created" | "customer.updated" | "customer.deleted" => customer::changed(ctx).await,
        s if s.starts_with("customer.subscription.") => subscription::changed(ctx).await.map(|()| Applied::default()),
        "invoice.upcoming" => invoice::upcoming(ctx).await.map(|()| Applied::default()),
        "invoice_payment.paid" => invoice_payment::paid(ctx).await.map(|()| Applied::default()),
        s if s.starts_with("invoice.") => invoice::changed(ctx).await.map(|()| Applied::default()),
        "charge.refunded" => charge::refunded(ctx).await.map(|()| Applied::default()),
        s if s.starts_with("charge.dispute.") => dispute::changed(ctx).await.map(|()| Applied::default()),
        other => Err(HandlerError::Shape(format!("no handler for {other}"))),
    }
}
