//! charge.dispute.*: the dispute row (status only moves forward by event time: created,
//! funds withdrawn, updated, funds reinstated, closed as won, lost or warning_closed) and one
//! effect when it opens and one when it closes.

use crate::billing::effects::EffectKind;
use super::context::{EventCtx, HandlerError, shape};
use crate::stripe::objects::{DisputeObject, object};

pub(super) async fn changed(ctx: &mut EventCtx<'_>) -> Result<(), HandlerError> {
    let d: DisputeObject = shape(object(&ctx.event.object))?;
    let charge = d.charge.clone().ok_or_else(|| HandlerError::Shape("dispute without a charge".into()))?;
    // Disputes are not re-fetched: created and closed are never in the same second, and a
    // closed dispute does not reopen, so the later event wins and ties keep the closed state.
    sqlx::query(
        "INSERT INTO disputes (id, tenant_id, charge_id, status, amount, currency, reason, stripe_updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason,
             stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()
         WHERE disputes.stripe_updated_at < EXCLUDED.stripe_updated_at",
    )
    .bind(&d.id)
    .bind(ctx.tenant.0)
    .bind(&charge)
    .bind(&d.status)
    .bind(d.amount)
    .bind(&d.currency)
    .bind(&d.reason)
    .bind(ctx.created())
    .execute(&mut *ctx.tx)
    .await?;
    sqlx::query("UPDATE charges SET disputed = true WHERE id = $1").bind(&charge).execute(&mut *ctx.tx).await?;
    let kind = match ctx.event.event_type.as_str() {
        "charge.dispute.closed" => EffectKind::DisputeClosed,
        "charge.dispute.created" => EffectKind::DisputeCreated,
        _ => return Ok(()),
    };
    let (name, dispute) = (kind.as_str(), &d.id);
    ctx.effect(format!("{name}:{dispute}"), kind, &d.id, serde_json::json!({"charge": charge, "status": d.status})).await
}
