//! customer.created / updated / deleted: the customer row (a deleted customer stays as a
//! tombstone, so a late customer.updated cannot bring it back). Accounts v2 used as customers
//! come as thin events (`account`) and are mirrored through the same two steps.

use crate::billing::effects::EffectKind;
use super::context::{Applied, EventCtx, HandlerError, Table, shape};
use crate::stripe_api::ObjectKind;
use crate::stripe::objects::{CustomerObject, object};

pub(super) async fn changed(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let id = ctx.object_id()?;
    let deleted_event = ctx.event.event_type == "customer.deleted";
    if let Some(state) = ctx.state_to_apply(Table::Customers, ObjectKind::Customer, &id).await? {
        let c: CustomerObject = shape(object(&state))?;
        // A re-fetched deleted customer answers {id, deleted: true}; the event says so by its type.
        mirror(ctx, &c, c.deleted || deleted_event).await?;
    }
    if deleted_event {
        return deleted(ctx, id).await;
    }
    // A customer naming its tenant is bound to it by `handlers::apply`.
    Ok(Applied::default())
}

/// Writes customer `c`'s row as of the event's time.
pub(super) async fn mirror(ctx: &mut EventCtx<'_>, c: &CustomerObject, deleted: bool) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO customers (id, tenant_id, email, name, deleted, stripe_updated_at, default_payment_method)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET email = COALESCE(EXCLUDED.email, customers.email),
             name = COALESCE(EXCLUDED.name, customers.name), deleted = customers.deleted OR EXCLUDED.deleted,
             default_payment_method = EXCLUDED.default_payment_method,
             stripe_updated_at = GREATEST(EXCLUDED.stripe_updated_at, customers.stripe_updated_at), updated_at = now()",
    )
    .bind(&c.id)
    .bind(ctx.tenant.0)
    .bind(&c.email)
    .bind(&c.name)
    .bind(deleted)
    .bind(ctx.created())
    .bind(c.invoice_settings.as_ref().and_then(|s| s.default_payment_method.as_deref()))
    .execute(&mut *ctx.tx)
    .await?;
    Ok(())
}

/// Customer `id` is gone at Stripe: final whatever order it arrives in; its dunning cases end,
/// and the tenant is free to bind the customer it checks out as next.
pub(super) async fn deleted(ctx: &mut EventCtx<'_>, id: String) -> Result<Applied, HandlerError> {
    sqlx::query("UPDATE customers SET deleted = true WHERE id = $1").bind(&id).execute(&mut *ctx.tx).await?;
    ctx.effect(format!("customer.deleted:{id}"), EffectKind::CustomerDeleted, &id, serde_json::json!({})).await?;
    let unbound = ctx.unbind_deleted_customer(&id).await?;
    // A later customer of the tenant whose events were applied while this one was still bound
    // could not bind then (routed while the tenant had no customer, applied after this one
    // bound): it binds now, and its parked events are released after the commit.
    let next = if unbound { next_customer(ctx, &id).await? } else { None };
    Ok(Applied { unbound_customer: Some(id), mapped_customer: next, ..Applied::default() })
}

/// Binds the tenant's most recent other live customer in the mirror (its events named the
/// tenant or were routed to it), if there is one and it was never unbound; its id when bound.
async fn next_customer(ctx: &mut EventCtx<'_>, gone: &str) -> Result<Option<String>, HandlerError> {
    let candidate: Option<String> = sqlx::query_scalar(
        "SELECT c.id FROM customers c WHERE c.tenant_id = $1 AND c.id <> $2 AND NOT c.deleted
           AND NOT EXISTS (SELECT 1 FROM tenant_customers tc WHERE tc.customer_id = c.id AND tc.unbound_at IS NOT NULL)
         ORDER BY c.stripe_updated_at DESC, c.id DESC LIMIT 1",
    )
    .bind(ctx.tenant.0)
    .bind(gone)
    .fetch_optional(&mut *ctx.tx)
    .await?;
    let Some(candidate) = candidate else { return Ok(None) };
    Ok(ctx.map_customer(&candidate).await?.then_some(candidate))
}
