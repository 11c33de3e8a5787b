//! charge.refunded: the charge row with its refunded amount and its invoice (named by the
//! charge before API 2025-03-31, since then found through the invoice payments); one refund
//! effect per amount.

use crate::billing::effects::EffectKind;
use super::context::{EventCtx, HandlerError, Table, shape};
use crate::stripe_api::ObjectKind;
use crate::stripe::objects::{ChargeObject, object};

pub(super) async fn refunded(ctx: &mut EventCtx<'_>) -> Result<(), HandlerError> {
    let id = ctx.object_id()?;
    if let Some(state) = ctx.state_to_apply(Table::Charges, ObjectKind::Charge, &id).await? {
        let c: ChargeObject = shape(object(&state))?;
        let customer = c.customer.clone().ok_or_else(|| HandlerError::Shape("charge without a customer".into()))?;
        ctx.ensure_customer(&customer).await?;
        sqlx::query(
            "INSERT INTO charges (id, tenant_id, customer_id, invoice_id, currency, amount, amount_refunded, refunded, disputed, stripe_updated_at, payment_intent)
             VALUES ($1, $2, $3, COALESCE($4, (SELECT invoice_id FROM invoice_payments WHERE payment_intent = $11 OR charge_id = $1 LIMIT 1)),
                     $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (id) DO UPDATE SET amount_refunded = EXCLUDED.amount_refunded, refunded = EXCLUDED.refunded,
                 invoice_id = COALESCE(charges.invoice_id, EXCLUDED.invoice_id), payment_intent = EXCLUDED.payment_intent,
                 disputed = charges.disputed OR EXCLUDED.disputed, stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()",
        )
        .bind(&c.id)
        .bind(ctx.tenant.0)
        .bind(&customer)
        .bind(&c.invoice)
        .bind(&c.currency)
        .bind(c.amount)
        .bind(c.amount_refunded)
        .bind(c.refunded)
        .bind(c.disputed)
        .bind(ctx.created())
        .bind(&c.payment_intent)
        .execute(&mut *ctx.tx)
        .await?;
    }
    let announced: ChargeObject = shape(object(&ctx.event.object))?;
    let payload = serde_json::json!({"amount_refunded": announced.amount_refunded, "refunded": announced.refunded, "currency": announced.currency});
    ctx.effect(format!("refund.recorded:{id}:{}", announced.amount_refunded), EffectKind::RefundRecorded, &id, payload).await
}
