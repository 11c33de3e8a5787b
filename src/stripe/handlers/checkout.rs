//! checkout.session.completed: maps the tenant to its Stripe customer (the session was
//! started by the app with the tenant id as client_reference_id or metadata.tenant_id).

use crate::billing::effects::EffectKind;
use super::context::{Applied, EventCtx, HandlerError, shape};
use crate::stripe::event::{CheckoutSessionObject, object};

pub(super) async fn completed(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let session: CheckoutSessionObject = shape(object(&ctx.event.object))?;
    let mut applied = Applied::default();
    if let Some(customer) = &session.customer {
        ctx.ensure_customer(customer).await?;
        if ctx.map_customer(customer).await? {
            applied.mapped_customer = Some(customer.clone());
        }
    }
    let payload = serde_json::json!({"subscription": session.subscription, "customer": session.customer});
    ctx.effect(format!("checkout.completed:{}", session.id), EffectKind::CheckoutCompleted, &session.id, payload).await?;
    Ok(applied)
}
