//! Dunning: cases opened by failed invoice payments, advanced day by day by the policy, closed
//! by invoice.paid; and the reminder emails that billing effects ask for.
//!
//! Two entry points, both idempotent:
//! - [`consume_effects`] turns a tenant's unconsumed billing effects (written by the Stripe
//!   handlers) into case openings and closings and reminder emails, in one tenant transaction.
//!   The stripe.event job calls it after each commit, so the day-0 email and a recovery act at
//!   once; the daily run calls it too, for anything left behind.
//! - [`run`] advances every open case to `as_of`: each step due and not yet done is done once,
//!   keyed (case, stage) in dunning_actions, under the tenant's transaction lock, so two runs
//!   at once, or twice a day, do each action once. A step that calls Stripe (an invoice
//!   retry, the final cancel) is decided in the transaction, called after it commits with the
//!   step's idempotency key, and recorded in a second one (`steps`): no pooled connection or
//!   tenant lock is held while Stripe answers.

mod case;
mod disputes;
mod deps;
mod ending;
pub mod policy;
mod steps;

pub use case::{ActionReport, CaseStatus, DunningError, RunReport};
pub use deps::Deps;

use case::{AfterCommit, Case, remind};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

pub use policy::{Action, FinalAction, Policy, Step};

use crate::billing::effects::{self, Effect, EffectKind};
use ending::Subject;
use crate::billing::entitlements;
use crate::newtypes::{Money, TenantId};
use crate::email::{self, Template};



/// Turns `tenant`'s unconsumed billing effects into cases, closings and emails.
pub async fn consume_effects(state: &Deps, tenant: TenantId) -> Result<usize, DunningError> {
    let mut tx = state.tenant_pool.begin_serialised(tenant).await?;
    let effects = effects::unconsumed(&mut tx, &EffectKind::DUNNING).await?;
    let mut after = AfterCommit::default();
    for e in &effects {
        match e.kind() {
            Some(EffectKind::PaymentFailed) => open_case(state, &mut tx, tenant, e, &mut after).await?,
            Some(EffectKind::InvoicePaid) => {
                let ended = ending::close_ended(&mut tx, Subject::Invoice(&e.subject_id)).await?;
                after.entitlements_changed |= !ended.is_empty();
                let recovered = ended.iter().any(|(_, s)| *s == CaseStatus::Recovered);
                // Only a payment that ended a case is news to the customer.
                if recovered {
                    let key = format!("email.payment_recovered:{}", e.subject_id);
                    invoice_email(&mut tx, tenant, e, &key, Template::PaymentRecovered, &mut after).await?;
                }
            }
            Some(EffectKind::DisputeCreated) => after.dispute(disputes::opened(&mut tx, tenant, e, state.policy.disputes).await?),
            Some(EffectKind::DisputeClosed) => after.dispute(disputes::closed(&mut tx, tenant, e).await?),
            Some(EffectKind::InvoiceDueSoon) => {
                // Paid (or voided) since Stripe sent the reminder: nothing to remind of.
                let status: Option<String> = sqlx::query_scalar("SELECT status FROM invoices WHERE id = $1").bind(&e.subject_id).fetch_optional(&mut *tx).await?;
                if status.as_deref().is_none_or(|s| s == "open") {
                    invoice_email(&mut tx, tenant, e, &e.effect_key, Template::InvoiceDueSoon, &mut after).await?;
                }
            }
            Some(EffectKind::PaymentActionRequired) => {
                invoice_email(&mut tx, tenant, e, &e.effect_key, Template::PaymentActionRequired, &mut after).await?;
            }
            // Stripe gave up on the invoice, the subscription ended or was paused, the customer
            // was deleted: nothing left to retry, restrict or cancel for.
            Some(EffectKind::InvoiceClosed) => after.entitlements_changed |= !ending::close_ended(&mut tx, Subject::Invoice(&e.subject_id)).await?.is_empty(),
            Some(EffectKind::SubscriptionCanceled | EffectKind::SubscriptionPaused) => {
                after.entitlements_changed |= !ending::close_ended(&mut tx, Subject::Subscription(&e.subject_id)).await?.is_empty();
            }
            Some(EffectKind::CustomerDeleted) => after.entitlements_changed |= !ending::close_ended(&mut tx, Subject::Customer(&e.subject_id)).await?.is_empty(),
            Some(EffectKind::UpcomingRenewal) => {
                let renews = e.payload.get("renews_at").and_then(|v| v.as_i64()).and_then(|t| DateTime::from_timestamp(t, 0));
                let vars = serde_json::json!({
                    "amount": email::money(&Money::new(e.payload["amount_due"].as_i64().unwrap_or(0), e.payload["currency"].as_str().unwrap_or("usd"))),
                    "renews_on": renews.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
                });
                let customer = customer_of_subscription(&mut tx, &e.subject_id).await?.unwrap_or_else(|| e.subject_id.clone());
                remind(&mut tx, tenant, &customer, &e.effect_key, Template::UpcomingRenewal, vars, &mut after).await?;
            }
            Some(EffectKind::TrialWillEnd) => {
                let ends = e.payload.get("trial_end").and_then(|v| v.as_i64()).and_then(|t| DateTime::from_timestamp(t, 0));
                // Stripe advises checking that the subscription is still trialing: a customer who
                // subscribed early or cancelled since gets no "trial ending" email.
                // A trial set to cancel at its end (the portal's cancel in flexible mode sets
                // cancel_at = trial_end) will not convert: no "your card will be charged".
                let mirrored: Option<(String, bool, bool)> = sqlx::query_as(
                    "SELECT s.status, COALESCE(s.default_payment_method, c.default_payment_method) IS NOT NULL,
                            s.cancel_at_period_end OR (s.cancel_at IS NOT NULL AND s.cancel_at <= COALESCE(s.trial_end, s.cancel_at))
                     FROM subscriptions s LEFT JOIN customers c ON c.id = s.customer_id WHERE s.id = $1",
                )
                .bind(&e.subject_id)
                .fetch_optional(&mut *tx)
                .await?;
                let (status, has_pm, cancelling) = mirrored.unwrap_or_default();
                let status = if cancelling { "cancelling".to_owned() } else { status };
                let vars = serde_json::json!({
                    "ends_on": ends.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
                    "has_payment_method": has_pm,
                });
                let customer = if status == "trialing" { customer_of_subscription(&mut tx, &e.subject_id).await? } else { None };
                if let Some(customer) = customer {
                    remind(&mut tx, tenant, &customer, &e.effect_key, Template::TrialEnding, vars, &mut after).await?;
                }
            }
            _ => {}
        }
        effects::mark_consumed(&mut tx, e.id).await?;
    }
    if after.entitlements_changed {
        entitlements::recompute(&mut tx, tenant, &state.plans, &state.access_rules()).await?;
    }
    tx.commit().await?;
    let calls = std::mem::take(&mut after.calls);
    after.run(state, tenant).await?;
    for (case, call) in calls {
        let opened = case.opened_at;
        steps::settle(state, &case, call).await?;
        steps::advance_case(state, case, opened, false).await?;
    }
    Ok(effects.len())
}

/// Queues an email about invoice effect `e` to its customer: amount, invoice and, where Stripe
/// gave one, the hosted invoice page (where a payment is confirmed).
async fn invoice_email(tx: &mut PgConnection, tenant: TenantId, e: &Effect, key: &str, template: Template, after: &mut AfterCommit) -> Result<(), DunningError> {
    let mirrored: Option<String> = sqlx::query_scalar("SELECT customer_id FROM invoices WHERE id = $1").bind(&e.subject_id).fetch_optional(&mut *tx).await?;
    let Some(customer) = mirrored.or_else(|| e.payload["customer"].as_str().map(str::to_owned)) else { return Ok(()) };
    let vars = serde_json::json!({
        "amount": email::money(&Money::new(e.payload["amount_due"].as_i64().unwrap_or(0), e.payload["currency"].as_str().unwrap_or("usd"))),
        "invoice": e.subject_id,
        "url": e.payload["hosted_invoice_url"].as_str().unwrap_or_default(),
        "due_on": e.payload.get("due_date").and_then(|v| v.as_i64()).and_then(|t| DateTime::from_timestamp(t, 0)).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
    });
    remind(tx, tenant, &customer, key, template, vars, after).await?;
    Ok(())
}

async fn customer_of_subscription(tx: &mut PgConnection, sub: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT customer_id FROM subscriptions WHERE id = $1").bind(sub).fetch_optional(tx).await
}

async fn open_case(state: &Deps, tx: &mut PgConnection, tenant: TenantId, e: &Effect, after: &mut AfterCommit) -> Result<(), DunningError> {
    let mirrored: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT customer_id, subscription_id FROM invoices WHERE id = $1").bind(&e.subject_id).fetch_optional(&mut *tx).await?;
    let Some((customer, subscription)) = mirrored else {
        tracing::warn!(message = "Payment failure for an invoice the mirror does not hold; no dunning case.", invoice = %e.subject_id);
        return Ok(());
    };
    // A new subscription's first invoice: Stripe retries nothing and expires the subscription
    // after 23 hours (incomplete_expired). No case (its emails promise retries); the customer
    // is asked once to complete the payment, unless the invoice is settled or the
    // subscription expired by now. Decided by the invoice's billing reason, not by the
    // subscription's mirrored status, which may not have caught up with the failure yet. (A
    // sent invoice's subscription is active whatever its first invoice does: that one is
    // chased as any sent invoice is.)
    let first: Option<(Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT i.billing_reason, i.status, s.status FROM invoices i LEFT JOIN subscriptions s ON s.id = i.subscription_id
         WHERE i.id = $1 AND i.collection_method = 'charge_automatically'",
    )
    .bind(&e.subject_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((Some(reason), invoice_status, status)) = first
        && reason == "subscription_create"
    {
        if invoice_status == "open" && status.as_deref() != Some("incomplete_expired") {
            let key = format!("email.complete_payment:{}", e.subject_id);
            invoice_email(tx, tenant, e, &key, Template::CompletePayment, after).await?;
        }
        return Ok(());
    }
    let subscription = subscription.or_else(|| e.payload.get("subscription").and_then(|v| v.as_str()).map(str::to_owned));
    // Delivered out of order, the failure may come after what ended its case: no case then
    // (no day-0 email promising retries to a customer whose subscription is gone).
    if let Some(end) = ending::ended_by(&ending::standing(tx, &e.subject_id).await?) {
        tracing::info!(message = "Payment failure after its case's end; no dunning case.", invoice = %e.subject_id, ended = end.as_str());
        return Ok(());
    }
    let case: Option<Case> = sqlx::query_as(
        "INSERT INTO dunning_cases (tenant_id, invoice_id, customer_id, subscription_id, opened_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (invoice_id) DO NOTHING
         RETURNING id, tenant_id, invoice_id, customer_id, subscription_id, opened_at, hard_decline",
    )
    .bind(tenant.0)
    .bind(&e.subject_id)
    .bind(&customer)
    .bind(&subscription)
    .bind(e.stripe_created)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(case) = case {
        // The steps of the failure's own day (the day-0 email) happen now, not at the next run;
        // a step that calls Stripe waits for the commit (see `steps`).
        let (_, call) = steps::advance(state, tx, &case, case.opened_at, false, after).await?;
        after.calls.extend(call.map(|c| (case, c)));
    }
    Ok(())
}

/// Advances every open case (of one tenant, or all) to `as_of`.
pub async fn run(state: &Deps, as_of: DateTime<Utc>, tenant: Option<TenantId>, dry_run: bool) -> Result<RunReport, DunningError> {
    let mut report = RunReport { as_of: Some(as_of), executed: !dry_run, ..RunReport::default() };
    // System pool: the daily run looks across tenants for work, then acts in each tenant's own transaction.
    if !dry_run {
        for t in effects::tenants_pending(&state.system_pool, &EffectKind::DUNNING, tenant).await? {
            report.effects_consumed += consume_effects(state, t).await?;
        }
    }
    let cases: Vec<Case> = sqlx::query_as(
        "SELECT id, tenant_id, invoice_id, customer_id, subscription_id, opened_at, hard_decline FROM dunning_cases
         WHERE status = 'open' AND ($1::uuid IS NULL OR tenant_id = $1) ORDER BY opened_at",
    )
    .bind(tenant.map(|t| t.0))
    .fetch_all(&state.system_pool.0)
    .await?;
    report.cases = cases.len();
    for case in cases {
        report.actions.extend(steps::advance_case(state, case, as_of, dry_run).await?);
    }
    Ok(report)
}

