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


mod account;
mod charge;
mod context;
mod checkout;
mod customer;
mod dispute;
mod invoice;
mod invoice_payment;
mod payment_intent;
mod refund;
mod subscription;

pub use context::{Applied, EventCtx, HandlerError, ts};

/// Which handler applies an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Account,
    Refund,
    PaymentIntent,
    Checkout,
    Customer,
    Subscription,
    InvoiceUpcoming,
    Invoice,
    InvoicePayment,
    ChargeRefunded,
    Dispute,
}

/// Every event type Ballast acts on, with its handler: the one table of the routing. Others
/// are stored, marked ignored and acknowledged.
const HANDLERS: &[(&str, Family)] = &[
    ("checkout.session.completed", Family::Checkout),
    ("checkout.session.async_payment_succeeded", Family::Checkout),
    ("checkout.session.async_payment_failed", Family::Checkout),
    ("customer.created", Family::Customer),
    ("customer.updated", Family::Customer),
    ("customer.deleted", Family::Customer),
    (account::TYPES[0], Family::Account),
    (account::TYPES[1], Family::Account),
    (account::TYPES[2], Family::Account),
    (account::TYPES[3], Family::Account),
    ("customer.subscription.created", Family::Subscription),
    ("customer.subscription.updated", Family::Subscription),
    ("customer.subscription.deleted", Family::Subscription),
    ("customer.subscription.trial_will_end", Family::Subscription),
    ("customer.subscription.paused", Family::Subscription),
    ("customer.subscription.resumed", Family::Subscription),
    ("invoice.created", Family::Invoice),
    ("invoice.finalized", Family::Invoice),
    ("invoice.overdue", Family::Invoice),
    ("invoice.will_be_due", Family::Invoice),
    ("invoice.paid", Family::Invoice),
    ("invoice.updated", Family::Invoice),
    ("invoice.voided", Family::Invoice),
    ("invoice.marked_uncollectible", Family::Invoice),
    ("invoice.payment_failed", Family::Invoice),
    ("invoice.payment_action_required", Family::Invoice),
    ("invoice.upcoming", Family::InvoiceUpcoming),
    ("invoice_payment.paid", Family::InvoicePayment),
    ("payment_intent.processing", Family::PaymentIntent),
    ("payment_intent.succeeded", Family::PaymentIntent),
    ("payment_intent.payment_failed", Family::PaymentIntent),
    ("payment_intent.canceled", Family::PaymentIntent),
    ("charge.refunded", Family::ChargeRefunded),
    ("refund.created", Family::Refund),
    ("refund.updated", Family::Refund),
    ("refund.failed", Family::Refund),
    ("charge.dispute.created", Family::Dispute),
    ("charge.dispute.updated", Family::Dispute),
    ("charge.dispute.funds_withdrawn", Family::Dispute),
    ("charge.dispute.funds_reinstated", Family::Dispute),
    ("charge.dispute.closed", Family::Dispute),
];

/// The handler of `event_type`, if Ballast acts on it.
fn family(event_type: &str) -> Option<Family> {
    HANDLERS.iter().find(|(t, _)| *t == event_type).map(|(_, f)| *f)
}

/// Every event type Ballast acts on.
pub fn handled() -> impl Iterator<Item = &'static str> {
    HANDLERS.iter().map(|(t, _)| *t)
}

/// Whether Ballast acts on `event_type`.
pub fn handles(event_type: &str) -> bool {
    family(event_type).is_some()
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
pub fn customer_it_binds(event: &crate::stripe::event::StripeEvent, tenant: crate::newtypes::TenantId) -> Option<&str> {
    if deletes_customer(&event.event_type) || !names_tenant(&event.object, tenant) {
        return None;
    }
    event.customer_id()
}

/// Whether an event of this type says its customer is gone (a customer deleted, an account
/// used as one closed).
pub fn deletes_customer(event_type: &str) -> bool {
    event_type == "customer.deleted" || event_type == "v2.core.account.closed"
}

/// Whether the object says it belongs to `tenant`.
fn names_tenant(object: &serde_json::Value, tenant: crate::newtypes::TenantId) -> bool {
    let named = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).and_then(|s| s.parse::<uuid::Uuid>().ok()) == Some(tenant.0);
    named(object.pointer("/metadata/tenant_id")) || named(object.get("client_reference_id"))
}

async fn apply_by_type(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let Some(family) = family(&ctx.event.event_type) else {
        return Err(HandlerError::Shape(format!("no handler for {}", ctx.event.event_type)));
    };
    match family {
        Family::Checkout => checkout::completed(ctx).await,
        Family::Customer => customer::changed(ctx).await,
        Family::Account => account::changed(ctx).await,
        Family::Subscription => subscription::changed(ctx).await.map(|()| Applied::default()),
        Family::InvoiceUpcoming => invoice::upcoming(ctx).await.map(|()| Applied::default()),
        Family::InvoicePayment => invoice_payment::paid(ctx).await.map(|()| Applied::default()),
        Family::Invoice => invoice::changed(ctx).await.map(|()| Applied::default()),
        Family::ChargeRefunded => charge::refunded(ctx).await.map(|()| Applied::default()),
        Family::Refund => refund::changed(ctx).await.map(|()| Applied::default()),
        Family::PaymentIntent => payment_intent::changed(ctx).await.map(|()| Applied::default()),
        Family::Dispute => dispute::changed(ctx).await.map(|()| Applied::default()),
    }
}
