//! invoice.*: the invoice row, and the dunning and reminder side effects: a payment failure
//! (one per attempt), an action required, a recovery, Stripe giving up (voided, uncollectible),
//! an upcoming renewal.

use crate::billing::effects::EffectKind;
use super::context::{EventCtx, HandlerError, Table, customer_placeholder, newer_guard, shape, ts};
use crate::stripe_api::ObjectKind;
use crate::stripe::objects::{InvoiceObject, object};

/// The invoice's guarded upsert (the lock and the write in one), with its customer's
/// placeholder row in the same statement.
static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH placeholder AS (
             {placeholder}
         )
         INSERT INTO invoices (id, tenant_id, customer_id, subscription_id, status, amount_due, amount_paid, currency,
             attempt_count, next_payment_attempt, billing_reason, stripe_updated_at, collection_method, due_date, hosted_invoice_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (id) DO UPDATE SET subscription_id = EXCLUDED.subscription_id, status = EXCLUDED.status,
             amount_due = EXCLUDED.amount_due, amount_paid = EXCLUDED.amount_paid, currency = EXCLUDED.currency,
             attempt_count = EXCLUDED.attempt_count, next_payment_attempt = EXCLUDED.next_payment_attempt,
             billing_reason = EXCLUDED.billing_reason, stripe_updated_at = EXCLUDED.stripe_updated_at,
             collection_method = EXCLUDED.collection_method, due_date = EXCLUDED.due_date,
             hosted_invoice_url = COALESCE(EXCLUDED.hosted_invoice_url, invoices.hosted_invoice_url), updated_at = now()
         {guard}",
        placeholder = customer_placeholder("$3", "$2"),
        guard = newer_guard("invoices", "$16"),
    )
});

pub(super) async fn changed(ctx: &mut EventCtx<'_>) -> Result<(), HandlerError> {
    let id = ctx.object_id()?;
    let offered = ctx.offered_state(&id);
    {
        let inv: InvoiceObject = shape(object(&offered.state))?;
        let customer = inv.customer.clone().ok_or_else(|| HandlerError::Shape("invoice without a customer".into()))?;
        let wrote: Option<i32> = sqlx::query_scalar(UPSERT.as_str())
            .bind(&id)
            .bind(ctx.tenant.0)
            .bind(&customer)
            .bind(inv.subscription_id())
            .bind(inv.status.as_deref().unwrap_or("draft"))
            .bind(inv.amount_due)
            .bind(inv.amount_paid)
            .bind(&inv.currency)
            .bind(inv.attempt_count)
            .bind(inv.next_payment_attempt.and_then(ts))
            .bind(&inv.billing_reason)
            .bind(ctx.created())
            .bind(inv.collection_method.as_deref().unwrap_or("charge_automatically"))
            .bind(inv.due_date.and_then(ts))
            .bind(&inv.hosted_invoice_url)
            .bind(offered.tie_applies)
            .fetch_optional(&mut *ctx.tx)
            .await?;
        if wrote.is_none() {
            ctx.held_newer(Table::Invoices, ObjectKind::Invoice, &id, &offered).await?;
        }
    }
    let announced: InvoiceObject = shape(object(&ctx.event.object))?;
    let payload = serde_json::json!({
        "subscription": announced.subscription_id(), "attempt_count": announced.attempt_count,
        "amount_due": announced.amount_due, "currency": announced.currency, "customer": announced.customer,
        // Where the customer confirms a payment (3-D Secure) or pays by hand.
        "hosted_invoice_url": ctx.event.object.get("hosted_invoice_url"),
    });
    let attempt = announced.attempt_count;
    match ctx.event.event_type.as_str() {
        "invoice.payment_failed" => {
            ctx.effect(format!("dunning.payment_failed:{id}:{attempt}"), EffectKind::PaymentFailed, &id, payload).await?
        }
        "invoice.payment_action_required" => {
            // Only the customer can complete it: no off-session retry from now on, and one
            // action email per invoice (reminders follow on the policy's days).
            sqlx::query(
                "UPDATE invoices SET action_required_at = LEAST(COALESCE(action_required_at, $2), $2),
                     hosted_invoice_url = COALESCE($3, hosted_invoice_url) WHERE id = $1",
            )
            .bind(&id)
            .bind(ctx.created())
            .bind(ctx.event.object.get("hosted_invoice_url").and_then(|v| v.as_str()))
            .execute(&mut *ctx.tx)
            .await?;
            ctx.effect(format!("email.payment_action_required:{id}"), EffectKind::PaymentActionRequired, &id, payload).await?
        }
        // A sent invoice unpaid by its due date: dunning chases it by email (never by /pay).
        "invoice.overdue" => ctx.effect(format!("dunning.payment_failed:{id}:overdue"), EffectKind::PaymentFailed, &id, payload).await?,
        // Stripe's reminder ahead of a sent invoice's due date (the account's Automations
        // setting): one email per invoice, unless it is paid by the time dunning reads it.
        "invoice.will_be_due" => {
            let mut payload = payload;
            payload["due_date"] = ctx.event.object.get("due_date").cloned().unwrap_or_default();
            ctx.effect(format!("email.invoice_due_soon:{id}"), EffectKind::InvoiceDueSoon, &id, payload).await?
        }
        "invoice.paid" => ctx.effect(format!("dunning.invoice_paid:{id}"), EffectKind::InvoicePaid, &id, payload).await?,
        // Stripe gave up (its retries ran out, or someone voided the invoice).
        "invoice.voided" | "invoice.marked_uncollectible" => {
            ctx.effect(format!("dunning.invoice_closed:{id}"), EffectKind::InvoiceClosed, &id, payload).await?
        }
        _ => {}
    }
    Ok(())
}

/// invoice.upcoming has no invoice id (the invoice does not exist yet): nothing to mirror,
/// one renewal reminder per subscription and period.
pub(super) async fn upcoming(ctx: &mut EventCtx<'_>) -> Result<(), HandlerError> {
    let inv: InvoiceObject = shape(object(&ctx.event.object))?;
    let subject = inv.subscription_id().or(inv.customer.clone()).unwrap_or_default();
    let period = inv.next_payment_attempt.or(inv.period_end).unwrap_or(ctx.event.created);
    let payload = serde_json::json!({"amount_due": inv.amount_due, "currency": inv.currency, "renews_at": period});
    ctx.effect(format!("email.upcoming_renewal:{subject}:{period}"), EffectKind::UpcomingRenewal, &subject, payload).await
}
