//! A dunning case and what deciding its steps leaves to do: the case row, its status, the
//! errors and reports of a run, the Stripe call a step decided on, the reminder emails, and
//! what must happen after a transaction commits. Shared by the effects' consumer (mod.rs) and
//! the steps (steps.rs), which import it and not each other.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use super::disputes;
use super::deps::Deps;
use crate::billing::entitlements;
use crate::newtypes::TenantId;
use crate::email::{self, NewEmail, Template};
use crate::stripe_api::StripeApiError;

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
pub(super) const HARD_DECLINES: &[&str] = &[
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
pub(super) struct Case {
    pub(super) id: uuid::Uuid,
    pub(super) tenant_id: uuid::Uuid,
    pub(super) invoice_id: String,
    pub(super) customer_id: String,
    pub(super) subscription_id: Option<String>,
    pub(super) opened_at: DateTime<Utc>,
    pub(super) hard_decline: bool,
}


/// What a transaction decided that must happen after it commits.
#[derive(Default)]
pub(super) struct AfterCommit {
    pub(super) emails: Vec<uuid::Uuid>,
    /// Operator notices (disputes) to send.
    pub(super) notices: Vec<uuid::Uuid>,
    pub(super) entitlements_changed: bool,
    /// Stripe calls of cases opened in the transaction (the caller makes them).
    pub(super) calls: Vec<(Case, StripeCall)>,
}

impl AfterCommit {
    pub(super) fn dispute(&mut self, consumed: disputes::Consumed) {
        self.notices.extend(consumed.notice);
        self.entitlements_changed |= consumed.entitlements_changed;
    }

    pub(super) async fn run(self, state: &Deps, tenant: TenantId) -> Result<(), DunningError> {
        email::push(&state.queue, tenant, &self.emails).await?;
        for id in self.notices {
            // The row is durable: the SLO evaluation re-queues pending notices every minute.
            if let Err(e) = crate::slo::notify::push(&state.queue, id).await {
                tracing::warn!(message = "Operator notice recorded; its send not queued yet.", notice = %id, error = %e);
            }
        }
        if self.entitlements_changed {
            entitlements::invalidate(&state.cache, tenant).await;
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
    /// The subscription ended (canceled elsewhere, or expired incomplete).
    SubscriptionEnded,
    /// Stripe paused the subscription (its last retry failed with pausing configured).
    Paused,
    /// Stripe deleted the customer.
    CustomerDeleted,
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
            CaseStatus::SubscriptionEnded => "subscription_ended",
            CaseStatus::Paused => "paused",
            CaseStatus::CustomerDeleted => "customer_deleted",
        }
    }
}

/// A Stripe call a step decided on.
#[derive(Debug, Clone)]
pub(super) struct StripeCall {
    /// The step (`retry@3`, `final@21`).
    pub(super) stage: String,
    /// What to ask Stripe.
    pub(super) request: Request,
}

#[derive(Debug, Clone)]
pub(super) enum Request {
    /// Pay the case's invoice with the payment method on file.
    Pay,
    /// Cancel the subscription (the policy's final action).
    Cancel(String),
}

impl StripeCall {
    /// The idempotency key: the same step of the same case is the same request at Stripe.
    pub(super) fn key(&self, case: &Case) -> String {
        format!("dunning:{}:{}", case.id, self.stage)
    }
}

/// The customer's (email, name), when the mirror knows an email.
pub(super) async fn contact(tx: &mut PgConnection, customer: &str) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    let row: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT email, name FROM customers WHERE id = $1").bind(customer).fetch_optional(tx).await?;
    Ok(row.and_then(|(email, name)| email.filter(|e| !e.is_empty()).map(|e| (e, name))))
}

/// Queues a reminder email to `customer`; false when there is no address to send to.
pub(super) async fn remind(
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
