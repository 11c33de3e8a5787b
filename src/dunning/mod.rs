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

mod disputes;
mod handles;
pub mod policy;
mod steps;

pub use handles::{Deps, DunningHandles};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

pub use policy::{Action, FinalAction, Policy, Step};

use crate::billing::effects::{self, Effect, EffectKind};
use crate::billing::entitlements;
use crate::domain::{Money, TenantId};
use crate::email::{self, NewEmail, Template};
use crate::stripe::client::StripeApiError;

/// Errors of a dunning run.
#[derive(Debug, thiserror::Error)]
pub enum DunningError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// The tenant transaction could not start.
    #[error(transparent)]
    Tx(#[from] crate::db::DbError),
    /// An email could not be written.
    #[error(transparent)]
    Email(#[from] email::EmailError),
    /// Stripe could not be reached (retry later; nothing was recorded for the step).
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    /// A queue push failed after commit (the outbox sweep re-pushes).
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}

/// Decline codes that retrying the same card cannot fix (Stripe's "hard declines").
const HARD_DECLINES: &[&str] = &[
    "card_not_supported", "currency_not_supported", "do_not_try_again", "fraudulent", "incorrect_number", "invalid_account",
    "lost_card", "merchant_blacklist", "pickup_card", "restricted_card", "revocation_of_all_authorizations",
    "revocation_of_authorization", "security_violation", "stolen_card", "stop_payment_order", "transaction_not_allowed",
];

/// One action taken (or, in a dry run, that would be).
#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    /// Tenant.
    pub tenant: TenantId,
    /// The case's invoice.
    pub invoice: String,
    /// Stage (`retry@3`).
    pub stage: String,
    /// What happened.
    pub outcome: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// The day it acted as of.
    pub as_of: Option<DateTime<Utc>>,
    /// Acted; false for a dry run, which wrote and called nothing.
    pub executed: bool,
    /// Billing effects consumed.
    pub effects_consumed: usize,
    /// Open cases looked at.
    pub cases: usize,
    /// Actions.
    pub actions: Vec<ActionReport>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Case {
    id: uuid::Uuid,
    tenant_id: uuid::Uuid,
    invoice_id: String,
    customer_id: String,
    subscription_id: Option<String>,
    opened_at: DateTime<Utc>,
    hard_decline: bool,
}

/// What a transaction decided that must happen after it commits.
#[derive(Default)]
struct AfterCommit {
    emails: Vec<uuid::Uuid>,
    /// Operator notices (disputes) to send.
    notices: Vec<uuid::Uuid>,
    entitlements_changed: bool,
    /// Stripe calls of cases opened in the transaction (the caller makes them).
    calls: Vec<(Case, steps::StripeCall)>,
}

impl AfterCommit {
    fn dispute(&mut self, consumed: disputes::Consumed) {
        self.notices.extend(consumed.notice);
        self.entitlements_changed |= consumed.entitlements_changed;
    }

    async fn run(self, state: &Deps<'_>, tenant: TenantId) -> Result<(), DunningError> {
        email::push(state.queue, tenant, &self.emails).await?;
        for id in self.notices {
            // The row is durable: the SLO evaluation re-queues pending notices every minute.
            if let Err(e) = crate::slo::notify::push(state.queue, id).await {
                tracing::warn!(message = "Operator notice recorded; its send not queued yet.", notice = %id, error = %e);
            }
        }
        if self.entitlements_changed {
            entitlements::invalidate(state.cache, tenant).await;
        }
        Ok(())
    }
}


/// Where a dunning case is (`dunning_cases.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseStatus {
    /// Steps are still due.
    Open,
    /// The invoice was paid.
    Recovered,
    /// The final step canceled the subscription.
    Canceled,
    /// A person must look (a cancel refused, or no final action).
    ManualReview,
    /// Stripe gave up: the invoice was voided or marked uncollectible.
    WrittenOff,
}

impl CaseStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::Recovered => "recovered",
            CaseStatus::Canceled => "canceled",
            CaseStatus::ManualReview => "manual_review",
            CaseStatus::WrittenOff => "written_off",
        }
    }
}

/// Closes the open (or in review) case of `invoice` as `status`, lifting its restriction;
/// whether one was closed.
async fn close_cases(tx: &mut sqlx::PgConnection, invoice: &str, status: CaseStatus) -> Result<bool, sqlx::Error> {
    let closed = sqlx::query(
        "UPDATE dunning_cases SET status = $2, restricted = false, closed_at = now(), updated_at = now()
         WHERE invoice_id = $1 AND status IN ('open', 'manual_review')",
    )
    .bind(invoice)
    .bind(status.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(closed > 0)
}

/// Turns `tenant`'s unconsumed billing effects into cases, closings and emails.
pub async fn consume_effects(state: &Deps<'_>, tenant: TenantId) -> Result<usize, DunningError> {
    let mut tx = state.tenant_pool.begin_serialised(tenant).await?;
    let effects = effects::unconsumed(&mut tx, &EffectKind::DUNNING).await?;
    let mut after = AfterCommit::default();
    for e in &effects {
        match e.kind() {
            Some(EffectKind::PaymentFailed) => open_case(state, &mut tx, tenant, e, &mut after).await?,
            Some(EffectKind::InvoicePaid) => {
                let recovered = close_cases(&mut tx, &e.subject_id, CaseStatus::Recovered).await?;
                after.entitlements_changed |= recovered;
                // Only a payment that ended a case is news to the customer.
                if recovered {
                    let key = format!("email.payment_recovered:{}", e.subject_id);
                    invoice_email(&mut tx, tenant, e, &key, Template::PaymentRecovered, &mut after).await?;
                }
            }
            Some(EffectKind::DisputeCreated) => after.dispute(disputes::opened(&mut tx, tenant, e, state.policy.disputes).await?),
            Some(EffectKind::DisputeClosed) => after.dispute(disputes::closed(&mut tx, tenant, e).await?),
            Some(EffectKind::PaymentActionRequired) => {
                invoice_email(&mut tx, tenant, e, &e.effect_key, Template::PaymentActionRequired, &mut after).await?;
            }
            // Stripe gave up on the invoice: nothing left to retry or restrict for.
            Some(EffectKind::InvoiceClosed) => after.entitlements_changed |= close_cases(&mut tx, &e.subject_id, CaseStatus::WrittenOff).await?,
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
                let mirrored: Option<(String, bool)> = sqlx::query_as(
                    "SELECT s.status, COALESCE(s.default_payment_method, c.default_payment_method) IS NOT NULL
                     FROM subscriptions s LEFT JOIN customers c ON c.id = s.customer_id WHERE s.id = $1",
                )
                .bind(&e.subject_id)
                .fetch_optional(&mut *tx)
                .await?;
                let (status, has_pm) = mirrored.unwrap_or_default();
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
        entitlements::recompute(&mut tx, tenant, state.plans, state.past_due_grace).await?;
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
    });
    remind(tx, tenant, &customer, key, template, vars, after).await?;
    Ok(())
}

async fn customer_of_subscription(tx: &mut PgConnection, sub: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT customer_id FROM subscriptions WHERE id = $1").bind(sub).fetch_optional(tx).await
}

/// The customer's (email, name), when the mirror knows an email.
async fn contact(tx: &mut PgConnection, customer: &str) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    let row: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT email, name FROM customers WHERE id = $1").bind(customer).fetch_optional(tx).await?;
    Ok(row.and_then(|(email, name)| email.filter(|e| !e.is_empty()).map(|e| (e, name))))
}

/// Queues a reminder email to `customer`; false when there is no address to send to.
async fn remind(
    tx: &mut PgConnection,
    tenant: TenantId,
    customer: &str,
    dedup_key: &str,
    template: Template,
    mut vars: serde_json::Value,
    after: &mut AfterCommit,
) -> Result<bool, DunningError> {
    let Some((to, name)) = contact(tx, customer).await? else { return Ok(false) };
    vars["name"] = serde_json::json!(name);
    let new = NewEmail { dedup_key: dedup_key.to_owned(), template, to, vars };
    if let Some(id) = email::queue(tx, tenant, &new).await? {
        after.emails.push(id);
    }
    Ok(true)
}

async fn open_case(state: &Deps<'_>, tx: &mut PgConnection, tenant: TenantId, e: &Effect, after: &mut AfterCommit) -> Result<(), DunningError> {
    let mirrored: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT customer_id, subscription_id FROM invoices WHERE id = $1").bind(&e.subject_id).fetch_optional(&mut *tx).await?;
    let Some((customer, subscription)) = mirrored else {
        tracing::warn!(message = "Payment failure for an invoice the mirror does not hold; no dunning case.", invoice = %e.subject_id);
        return Ok(());
    };
    let subscription = subscription.or_else(|| e.payload.get("subscription").and_then(|v| v.as_str()).map(str::to_owned));
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
pub async fn run(state: &Deps<'_>, as_of: DateTime<Utc>, tenant: Option<TenantId>, dry_run: bool) -> Result<RunReport, DunningError> {
    let mut report = RunReport { as_of: Some(as_of), executed: !dry_run, ..RunReport::default() };
    // System pool: the daily run looks across tenants for work, then acts in each tenant's own transaction.
    if !dry_run {
        for t in effects::tenants_pending(state.system_pool, &EffectKind::DUNNING, tenant).await? {
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

