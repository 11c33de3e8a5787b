//! customer.created / updated / deleted: the customer row (a deleted customer stays as a
//! tombstone, so a late customer.updated cannot bring it back).

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
        let deleted = c.deleted || deleted_event;
        sqlx::query(
            "INSERT INTO customers (id, tenant_id, email, name, deleted, stripe_updated_at, default_payment_method)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET email = COALESCE(EXCLUDED.email, customers.email),
                 name = COALESCE(EXCLUDED.name, customers.name), deleted = customers.deleted OR EXCLUDED.deleted,
                 default_payment_method = EXCLUDED.default_payment_method,
                 stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()",
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
    }
    let mut applied = Applied::default();
    if deleted_event {
        // Deletion is final whatever order it arrives in.
        sqlx::query("UPDATE customers SET deleted = true WHERE id = $1").bind(&id).execute(&mut *ctx.tx).await?;
        ctx.effect(format!("customer.deleted:{id}"), EffectKind::CustomerDeleted, &id, serde_json::json!({})).await?;
        // The tenant may check out again as a new customer: it binds once this one is gone.
        ctx.unbind_deleted_customer(&id).await?;
        applied.unbound_customer = Some(id);
    }
    // A customer naming its tenant is bound to it by `handlers::apply`.
    Ok(applied)
}
