//! customer.subscription.*: the subscription row; trial-ending, pause and cancellation
//! side effects.

use crate::billing::effects::EffectKind;
use super::context::{EventCtx, HandlerError, Table, customer_placeholder, newer_guard, shape, ts};
use crate::stripe_api::ObjectKind;
use crate::stripe::objects::{SubscriptionObject, object};

/// The subscription's upsert, with its customer's placeholder row in the same statement.
static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH placeholder AS (
                 {placeholder}
             )
             INSERT INTO subscriptions (id, tenant_id, customer_id, status, plan_id, price_id, product_id, current_period_end,
                 cancel_at_period_end, trial_end, default_payment_method, past_due_since, stripe_updated_at, cancel_at, items,
                 paused_reason, pause_collection, mrr_minor, mrr_currency)
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, CASE WHEN $4 = 'past_due' THEN $11 END, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
                 price_id = EXCLUDED.price_id, product_id = EXCLUDED.product_id,
                 current_period_end = EXCLUDED.current_period_end, cancel_at_period_end = EXCLUDED.cancel_at_period_end,
                 trial_end = EXCLUDED.trial_end, default_payment_method = EXCLUDED.default_payment_method,
                 past_due_since = CASE WHEN EXCLUDED.status <> 'past_due' THEN NULL
                                       ELSE COALESCE(subscriptions.past_due_since, EXCLUDED.past_due_since) END,
                 stripe_updated_at = EXCLUDED.stripe_updated_at, cancel_at = EXCLUDED.cancel_at, items = EXCLUDED.items,
                 paused_reason = EXCLUDED.paused_reason, pause_collection = EXCLUDED.pause_collection,
                 mrr_minor = EXCLUDED.mrr_minor, mrr_currency = EXCLUDED.mrr_currency, updated_at = now()
             {guard}",
        placeholder = customer_placeholder("$3", "$2"),
        guard = newer_guard("subscriptions", "$18"),
    )
});

pub(super) async fn changed(ctx: &mut EventCtx<'_>) -> Result<(), HandlerError> {
    let id = ctx.object_id()?;
    let offered = ctx.offered_state(&id);
    {
        let s: SubscriptionObject = shape(object(&offered.state))?;
        let customer = s.customer.clone().ok_or_else(|| HandlerError::Shape("subscription without a customer".into()))?;
        let price = s.plan_price(ctx.plans);
        let items = s.mirrored_items();
        let mrr = crate::billing::revenue::monthly(&items);
        // The customer's placeholder row (as `ensure_customer` writes it) in the same statement:
        // one round trip fewer per event. The foreign key is checked at the statement's end,
        // after the placeholder is in.
        let wrote: Option<i32> = sqlx::query_scalar(UPSERT.as_str())
            .bind(&s.id)
            .bind(ctx.tenant.0)
            .bind(&customer)
            .bind(&s.status)
            .bind(price.map(|p| p.id.as_str()))
            .bind(price.and_then(|p| p.product.as_deref()))
            .bind(s.period_end().and_then(ts))
            .bind(s.cancel_at_period_end)
            .bind(s.trial_end.and_then(ts))
            .bind(&s.default_payment_method)
            .bind(ctx.created())
            .bind(s.cancel_at.and_then(ts))
            .bind(sqlx::types::Json(&items))
            .bind(s.paused_reason().filter(|_| s.status == "paused"))
            .bind(s.pause_collection_behavior())
            .bind(mrr.as_ref().map_or(0, |(_, m)| *m))
            .bind(mrr.as_ref().map(|(c, _)| c.as_str()))
            .bind(offered.tie_applies)
            .fetch_optional(&mut *ctx.tx)
            .await?;
        if wrote.is_none() {
            ctx.held_newer(Table::Subscriptions, ObjectKind::Subscription, &id, &offered).await?;
        }
    }
    // Effects come from the event's own payload: what it announced happened, whatever we hold now.
    let announced: SubscriptionObject = shape(object(&ctx.event.object))?;
    match ctx.event.event_type.as_str() {
        "customer.subscription.trial_will_end" => {
            let trial_end = announced.trial_end.unwrap_or_default();
            let payload = serde_json::json!({"trial_end": trial_end});
            ctx.effect(format!("email.trial_will_end:{id}:{trial_end}"), EffectKind::TrialWillEnd, &id, payload).await?;
        }
        "customer.subscription.deleted" => {
            ctx.effect(format!("subscription.canceled:{id}"), EffectKind::SubscriptionCanceled, &id, serde_json::json!({})).await?;
        }
        "customer.subscription.paused" | "customer.subscription.resumed" => {
            let kind = if ctx.event.event_type.ends_with(".paused") { EffectKind::SubscriptionPaused } else { EffectKind::SubscriptionResumed };
            let (name, event) = (kind.as_str(), &ctx.event.id);
            ctx.effect(format!("{name}:{id}:{event}"), kind, &id, serde_json::json!({})).await?;
        }
        _ => {}
    }
    Ok(())
}
