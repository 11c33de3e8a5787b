//! checkout.session.completed: the completed-checkout effect (the customer is bound to the
//! tenant the session names by `handlers::apply`, as for every event that names one).
//! checkout.session.async_payment_succeeded / _failed: a bank debit's outcome days later; the
//! subscription's own events carry what changes (incomplete → active, or the failed first
//! invoice), so these only bind, should the completed event still be on its way.

use crate::billing::effects::EffectKind;
use super::context::{Applied, EventCtx, HandlerError, shape};
use crate::stripe::objects::{CheckoutSessionObject, object};

pub(super) async fn completed(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let session: CheckoutSessionObject = shape(object(&ctx.event.object))?;
    if ctx.event.event_type != "checkout.session.completed" {
        return Ok(Applied::default());
    }
    // The binding of the customer to the tenant the session names is done for every event
    // type alike (`handlers::apply`).
    let payload = serde_json::json!({"subscription": session.subscription, "customer": session.customer});
    ctx.effect(format!("checkout.completed:{}", session.id), EffectKind::CheckoutCompleted, &session.id, payload).await?;
    Ok(Applied::default())
}
