//! refund.created / updated / failed: the refund row, a part of a charge given back. Stripe's
//! latest state wins; at the same second a settled status (succeeded, failed, canceled) beats
//! `pending` and `requires_action`, so the mirror converges in any order.

use super::context::{EventCtx, HandlerError};

/// What a refund event carries that the mirror keeps.
#[derive(Debug, serde::Deserialize)]
struct RefundObject {
    id: String,
    #[serde(default)]
    charge: Option<serde_json::Value>,
    amount: i64,
    currency: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
}

pub(super) async fn changed(ctx: &mut EventCtx<'_>) -> Result<(), HandlerError> {
    let r: RefundObject = serde_json::from_value(ctx.event.object.clone()).map_err(|e| HandlerError::Shape(format!("unexpected refund shape: {e}")))?;
    let charge = r.charge.as_ref().and_then(crate::stripe::objects::expandable_id);
    sqlx::query(
        "INSERT INTO refunds (id, tenant_id, charge_id, amount, currency, status, reason, failure_reason, stripe_updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO UPDATE SET charge_id = COALESCE(EXCLUDED.charge_id, refunds.charge_id), amount = EXCLUDED.amount,
             status = EXCLUDED.status, reason = EXCLUDED.reason, failure_reason = EXCLUDED.failure_reason,
             stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()
         WHERE (EXCLUDED.stripe_updated_at, EXCLUDED.status NOT IN ('pending', 'requires_action'))
               >= (refunds.stripe_updated_at, refunds.status NOT IN ('pending', 'requires_action'))",
    )
    .bind(&r.id)
    .bind(ctx.tenant.0)
    .bind(charge)
    .bind(r.amount)
    .bind(&r.currency)
    .bind(&r.status)
    .bind(&r.reason)
    .bind(&r.failure_reason)
    .bind(ctx.created())
    .execute(&mut *ctx.tx)
    .await?;
    Ok(())
}
