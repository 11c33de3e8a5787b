//! Which tenant a Stripe event belongs to: the tenant mapped to its customer, or the tenant id
//! the app put in the object's metadata (checkout, customer, subscription) when that tenant
//! exists and is not mapped to another customer. System pool throughout: routing is what
//! finds the tenant.

use crate::stripe_api::{ObjectKind, StripeApi, StripeApiError};
use super::event::StripeEvent;
use super::objects::expandable_id;
use super::inbox;
use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// Routing could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// The Stripe API (a dispute's charge).
    #[error("stripe: {0}")]
    Stripe(#[from] StripeApiError),
}

/// Where an event belongs, as far as routing could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// The tenant it belongs to.
    Tenant(TenantId),
    /// Its customer, whose tenant is not known yet: the event waits for the mapping.
    Unmapped(String),
    /// No customer at all (a guest payment) and no tenant named: nothing will ever bind it.
    Nobody,
}

/// The tenant of `event`, whose known customer is `customer`.
pub async fn route(pool: &SystemPool, stripe: &StripeApi, event: &StripeEvent, customer: Option<&str>) -> Result<Routed, RoutingError> {
    let mut customer = customer.map(str::to_owned).or_else(|| event.customer_id().map(str::to_owned));
    // A dispute and a refund name their charge and an invoice payment its invoice, not the
    // customer: ask our mirror, then Stripe.
    let named_by = if event.event_type.starts_with("charge.dispute.") || event.event_type.starts_with("refund.") {
        Some(("charge", "SELECT customer_id FROM charges WHERE id = $1", ObjectKind::Charge))
    } else if event.event_type.starts_with("invoice_payment.") {
        Some(("invoice", "SELECT customer_id FROM invoices WHERE id = $1", ObjectKind::Invoice))
    } else {
        None
    };
    if customer.is_none()
        && let Some((field, mirrored, kind)) = named_by
        && let Some(id) = event.object.get(field).and_then(expandable_id)
    {
        let known: Option<String> = sqlx::query_scalar(mirrored).bind(id).fetch_optional(&pool.0).await?;
        customer = match known {
            Some(c) => Some(c),
            None => stripe.retrieve(kind, id).await?.get("customer").and_then(expandable_id).map(str::to_owned),
        };
        if let Some(c) = &customer {
            inbox::set_customer(pool, &event.id, c).await?;
        }
    }
    if let Some(c) = &customer
        && let Some(t) = mapped_tenant(pool, c).await?
    {
        return Ok(Routed::Tenant(t));
    }
    let unmatched = || customer.clone().map_or(Routed::Nobody, Routed::Unmapped);
    let claimed = event
        .object
        .pointer("/metadata/tenant_id")
        .and_then(|v| v.as_str())
        .or_else(|| event.object.get("client_reference_id").and_then(|v| v.as_str()))
        .and_then(|s| s.parse::<uuid::Uuid>().ok());
    let Some(claimed) = claimed else { return Ok(unmatched()) };
    // A claimed tenant counts only if it exists and is not mapped to another customer; a
    // customer's deletion counts whatever the tenant's customer is (it binds nothing, and its
    // tombstone lets the customer's own parked events route to the tenant as history).
    let deletion = super::handlers::deletes_customer(&event.event_type);
    let ok: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE id = $1 AND (stripe_customer_id IS NULL OR stripe_customer_id = $2 OR $3)")
            .bind(claimed)
            .bind(customer.as_deref())
            .bind(deletion)
            .fetch_optional(&pool.0)
            .await?;
    Ok(ok.map_or_else(unmatched, |t| Routed::Tenant(TenantId(t))))
}

/// The tenant mapped to a Stripe customer, if any: the tenant it is the current customer of,
/// or had been (a deleted customer's late events are its tenant's history), or the tenant
/// its deletion was routed to.
pub async fn mapped_tenant(pool: &SystemPool, customer: &str) -> Result<Option<TenantId>, sqlx::Error> {
    let id: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM tenants WHERE stripe_customer_id = $1
         UNION ALL SELECT tenant_id FROM tenant_customers WHERE customer_id = $1
         UNION ALL SELECT tenant_id FROM customers WHERE id = $1 AND deleted
         LIMIT 1",
    )
    .bind(customer)
    .fetch_optional(&pool.0)
    .await?;
    Ok(id.map(TenantId))
}
