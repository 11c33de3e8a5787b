//! invoice_payment.paid: which payment paid which invoice. Since API 2025-03-31 a charge no
//! longer names its invoice; this is the link. Kept as a row, and applied to the charge if it
//! is mirrored already (the charge handler looks the row up when the charge comes later).

use super::context::{EventCtx, HandlerError, shape};
use crate::stripe::objects::{InvoicePaymentObject, object};

pub(super) async fn paid(ctx: &mut EventCtx<'_>) -> Result<(), HandlerError> {
    let p: InvoicePaymentObject = shape(object(&ctx.event.object))?;
    let invoice = p.invoice.clone().ok_or_else(|| HandlerError::Shape("invoice payment without an invoice".into()))?;
    let (intent, charge) = p.payment.map(|r| (r.payment_intent, r.charge)).unwrap_or_default();
    // The link never changes once made: only the status moves, and only forward in time.
    sqlx::query(
        "INSERT INTO invoice_payments (id, tenant_id, invoice_id, payment_intent, charge_id, status, stripe_updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()
         WHERE invoice_payments.stripe_updated_at < EXCLUDED.stripe_updated_at",
    )
    .bind(&p.id)
    .bind(ctx.tenant.0)
    .bind(&invoice)
    .bind(&intent)
    .bind(&charge)
    .bind(p.status.as_deref().unwrap_or("paid"))
    .bind(ctx.created())
    .execute(&mut *ctx.tx)
    .await?;
    sqlx::query("UPDATE charges SET invoice_id = $1, updated_at = now() WHERE invoice_id IS NULL AND (payment_intent = $2 OR id = $3)")
        .bind(&invoice)
        .bind(&intent)
        .bind(&charge)
        .execute(&mut *ctx.tx)
        .await?;
    Ok(())
}
