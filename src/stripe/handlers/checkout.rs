//! checkout.session.completed: the completed-checkout effect (the customer is bound to the
//! tenant the session names by `handlers::apply`, as for every event that names one).

use crate::billing::effects::EffectKind;
use super::context::{Applied, EventCtx, HandlerError, shape};
use crate::stripe::objects::{CheckoutSessionObject, object};

pub(super) async fn completed(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let session: CheckoutSessionObject = shape(object(&ctx.event.object))?;
    // The binding of the customer to the tenant the session names is done for every event
    // type alike (`handlers::apply`).
    let payload = serde_json::json!({"subscription": session.subscription, "customer": session.customer});
    ctx.effect(format!("checkout.completed:{}", session.id), EffectKind::CheckoutCompleted, &session.id, payload).await?;
    Ok(Applied::default())
}
