//! payment_intent.processing / succeeded / payment_failed / canceled: the payment intent row.
//! A bank debit stays `processing` for days; while it does, a new subscription is `incomplete`
//! and grants what `[processing] access` in policy/dunning.toml says (billing::access). Stripe's
//! latest state wins; at the same second a settled status beats `processing`, since a payment
//! leaves `processing` only by settling, so the mirror converges in any order.

use super::context::{EventCtx, HandlerError};

/// What a payment intent event carries that the mirror keeps.
#[derive(Debug, serde::Deserialize)]
struct PaymentIntentObject {
    id: String,
    #[serde(default)]
    customer: Option<serde_json::Value>,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    currency: Option<String>,
    status: String,
    #[serde(default)]
    last_payment_error: Option<PaymentError>,
}

#[derive(Debug, serde::Deserialize)]
struct PaymentError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
}

pub(super) async fn changed(ctx: &mut EventCtx<'_>) -> Result<(), HandlerError> {
    let pi: PaymentIntentObject =
        serde_json::from_value(ctx.event.object.clone()).map_err(|e| HandlerError::Shape(format!("unexpected payment intent shape: {e}")))?;
    let customer = pi.customer.as_ref().and_then(crate::stripe::objects::expandable_id);
    if let Some(customer) = customer {
        ctx.ensure_customer(customer).await?;
    }
    let error = pi.last_payment_error.as_ref().and_then(|e| e.decline_code.as_deref().or(e.code.as_deref()));
    sqlx::query(
        "INSERT INTO payment_intents (id, tenant_id, customer_id, amount, currency, status, last_error_code, stripe_updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET customer_id = COALESCE(EXCLUDED.customer_id, payment_intents.customer_id),
             amount = EXCLUDED.amount, currency = EXCLUDED.currency, status = EXCLUDED.status,
             last_error_code = EXCLUDED.last_error_code, stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()
         WHERE (EXCLUDED.stripe_updated_at, EXCLUDED.status <> 'processing')
               >= (payment_intents.stripe_updated_at, payment_intents.status <> 'processing')",
    )
    .bind(&pi.id)
    .bind(ctx.tenant.0)
    .bind(customer)
    .bind(pi.amount)
    .bind(pi.currency.as_deref().unwrap_or("usd"))
    .bind(&pi.status)
    .bind(error)
    .bind(ctx.created())
    .execute(&mut *ctx.tx)
    .await?;
    Ok(())
}
