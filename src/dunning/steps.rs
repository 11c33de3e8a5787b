//! A case's steps: decided in a tenant transaction, with Stripe called only after it commits.
//!
//! [`advance`] does the due steps that need no network call (emails, restriction, manual
//! review) in the caller's transaction and stops at the first that calls Stripe (an invoice
//! retry, the final cancel), returning it as a [`StripeCall`] without recording it. After the
//! commit [`settle`] calls Stripe with the step's idempotency key, then records the outcome in
//! a new transaction. A crash between the call and the record leaves the step unrecorded: the
//! next run decides it again and calls again with the same key, which Stripe answers with the
//! first call's result, so the step happens once. [`advance_case`] repeats this until the
//! case has nothing due.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::case::{ActionReport, AfterCommit, Case, CaseStatus, DunningError, HARD_DECLINES, Request, StripeCall, remind};
use super::deps::Deps;
use super::policy::{Action, FinalAction, Step};
use crate::billing::entitlements;
use crate::newtypes::{Money, TenantId};
use crate::email::{self, Template};
use crate::stripe_api::StripeApiError;

/// Advances one case to `as_of`: each round does what needs no network in one transaction
/// under the tenant's lock, then makes the one Stripe call it stopped at, outside it.
pub(super) async fn advance_case(state: &Deps, case: Case, as_of: DateTime<Utc>, dry_run: bool) -> Result<Vec<ActionReport>, DunningError> {
    let t = TenantId(case.tenant_id);
    let mut reports = Vec::new();
    // Each round records at least one step, so the policy's length bounds the rounds.
    for _ in 0..=state.policy.steps.len() {
        let mut tx = state.tenant_pool.begin_serialised(t).await?;
        // Under the tenant's lock: the case may have closed since the scan.
        let still_open: Option<bool> = sqlx::query_scalar("SELECT hard_decline FROM dunning_cases WHERE id = $1 AND status = 'open' FOR UPDATE")
            .bind(case.id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(hard_decline) = still_open else { break };
        // Its subscription, customer or invoice may have ended it since (events not consumed yet).
        if let Some(end) = super::ending::ended_by(&super::ending::standing(&mut tx, &case.invoice_id).await?) {
            if !dry_run {
                super::ending::close_ended(&mut tx, super::ending::Subject::Invoice(&case.invoice_id)).await?;
                entitlements::recompute(&mut tx, t, &state.plans, &state.access_rules()).await?;
                tx.commit().await?;
            }
            reports.push(ActionReport { tenant: t, invoice: case.invoice_id.clone(), stage: "end".into(), outcome: format!("closed: {}", end.as_str()) });
            break;
        }
        let case = Case { hard_decline, ..case.clone() };
        let mut after = AfterCommit::default();
        let (actions, call) = advance(state, &mut tx, &case, as_of, dry_run, &mut after).await?;
        reports.extend(actions);
        if dry_run {
            tx.rollback().await?;
            break;
        }
        if after.entitlements_changed {
            entitlements::recompute(&mut tx, t, &state.plans, &state.access_rules()).await?;
        }
        tx.commit().await?;
        crate::fault::point("dunning.run.after_commit");
        after.run(state, t).await?;
        let Some(call) = call else { break };
        reports.push(settle(state, &case, call).await?);
    }
    Ok(reports)
}

/// Does the case's due steps that are not done yet and need no network call, in the caller's
/// tenant transaction; returns them and the first step that calls Stripe, if one is due.
pub(super) async fn advance(
    state: &Deps,
    tx: &mut PgConnection,
    case: &Case,
    as_of: DateTime<Utc>,
    dry_run: bool,
    after: &mut AfterCommit,
) -> Result<(Vec<ActionReport>, Option<StripeCall>), DunningError> {
    let policy = &state.policy;
    let days = (as_of - case.opened_at).num_days().max(0);
    let done: Vec<String> = sqlx::query_scalar("SELECT stage FROM dunning_actions WHERE case_id = $1").bind(case.id).fetch_all(&mut *tx).await?;
    let due: Vec<&Step> = policy.steps.iter().filter(|s| i64::from(s.day) <= days && !done.contains(&s.stage())).collect();
    let last_retry = due.iter().rev().find(|s| s.action == Action::Retry).map(|s| s.day);
    let tenant = TenantId(case.tenant_id);
    let mut reports = action_reminders(state, tx, case, as_of, &done, dry_run, after).await?;
    for step in due {
        let stage = step.stage();
        let outcome = if dry_run {
            format!("would {stage}")
        } else {
            match step.action {
                Action::Email => {
                    let invoice: Option<(i64, String, bool, Option<String>)> = sqlx::query_as(
                        "SELECT amount_due, currency, collection_method = 'send_invoice', hosted_invoice_url FROM invoices WHERE id = $1",
                    )
                    .bind(&case.invoice_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let (minor, currency, sent, url) = invoice.unwrap_or_else(|| (0, "usd".into(), false, None));
                    let amount = Money::new(minor, &currency);
                    let days_left = policy.restrict_day().map(|d| i64::from(d) - i64::from(step.day)).unwrap_or(0).max(0);
                    // A sent invoice was never charged: its emails say it is overdue, not that a
                    // payment failed, and link to where it is paid.
                    let vars = serde_json::json!({"amount": email::money(&amount), "invoice": case.invoice_id, "days_left": days_left,
                        "sent_invoice": sent, "url": url.unwrap_or_default()});
                    let template = step.template.unwrap_or(Template::PaymentFailed);
                    let key = format!("dunning:{}:{stage}", case.id);
                    if remind(tx, tenant, &case.customer_id, &key, template, vars, after).await? { "email queued".into() } else { "skipped: no email address".into() }
                }
                Action::Retry if Some(step.day) != last_retry => "skipped: superseded by a later retry".into(),
                Action::Retry if case.hard_decline => "skipped: hard decline".into(),
                Action::Retry => match invoice_standing(tx, &case.invoice_id).await? {
                    Standing::Closed(status) => format!("skipped: Stripe holds the invoice as {status}"),
                    Standing::NeedsCustomer => "skipped: only the customer can confirm this payment (3-D Secure)".into(),
                    Standing::Sent => "skipped: a sent invoice is paid by the customer, never charged".into(),
                    // Stripe's own Smart Retries have the next try: a second charge attempt of
                    // ours would only add a decline to the card's record.
                    Standing::StripeRetries(at) => format!("skipped: Stripe retries it at {}", at.to_rfc3339()),
                    Standing::Open => {
                        // Stripe charges the subscription's default payment method, else the
                        // customer's (invoice_settings.default_payment_method).
                        let pm: Option<Option<String>> = sqlx::query_scalar(
                            "SELECT COALESCE((SELECT default_payment_method FROM subscriptions WHERE id = $1), default_payment_method)
                             FROM customers WHERE id = $2",
                        )
                        .bind(&case.subscription_id)
                        .bind(&case.customer_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if pm.flatten().is_none() {
                            "skipped: no payment method".into()
                        } else {
                            return Ok((reports, Some(StripeCall { stage, request: Request::Pay })));
                        }
                    }
                },
                Action::Restrict => {
                    sqlx::query("UPDATE dunning_cases SET restricted = true, updated_at = now() WHERE id = $1").bind(case.id).execute(&mut *tx).await?;
                    after.entitlements_changed = true;
                    "entitlements restricted".into()
                }
                Action::Final => match (policy.final_action, &case.subscription_id) {
                    (FinalAction::Cancel, Some(sub)) if subscription_canceled(tx, sub).await? => {
                        // Stripe canceled it already (its own retries ran out): nothing to call.
                        close_open_case(tx, case.id, CaseStatus::Canceled).await?;
                        format!("subscription {sub} already canceled by Stripe")
                    }
                    (FinalAction::Cancel, Some(sub)) => return Ok((reports, Some(StripeCall { stage, request: Request::Cancel(sub.clone()) }))),
                    _ => {
                        sqlx::query("UPDATE dunning_cases SET status = 'manual_review', updated_at = now() WHERE id = $1").bind(case.id).execute(&mut *tx).await?;
                        "marked for manual review".into()
                    }
                },
            }
        };
        if !dry_run {
            record_action(tx, case, &stage, &outcome).await?;
        }
        reports.push(ActionReport { tenant, invoice: case.invoice_id.clone(), stage, outcome });
    }
    Ok((reports, None))
}

/// The reminders of a payment only the customer can complete: one on each of the policy's
/// days after the invoice asked for action, each once (`action_reminder@{day}`).
async fn action_reminders(
    state: &Deps,
    tx: &mut PgConnection,
    case: &Case,
    as_of: DateTime<Utc>,
    done: &[String],
    dry_run: bool,
    after: &mut AfterCommit,
) -> Result<Vec<ActionReport>, DunningError> {
    let asked: Option<(Option<DateTime<Utc>>, Option<String>, i64, String)> =
        sqlx::query_as("SELECT action_required_at, hosted_invoice_url, amount_due, currency FROM invoices WHERE id = $1")
            .bind(&case.invoice_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((Some(asked_at), url, amount, currency)) = asked else { return Ok(Vec::new()) };
    let tenant = TenantId(case.tenant_id);
    let mut reports = Vec::new();
    for day in &state.policy.action_required.reminder_days {
        let stage = format!("action_reminder@{day}");
        if as_of < asked_at + chrono::Duration::days(i64::from(*day)) || done.contains(&stage) {
            continue;
        }
        let outcome = if dry_run {
            format!("would {stage}")
        } else {
            let vars = serde_json::json!({"amount": email::money(&Money::new(amount, &currency)), "invoice": case.invoice_id, "url": url.clone().unwrap_or_default()});
            let key = format!("dunning:{}:{stage}", case.id);
            let sent = remind(tx, tenant, &case.customer_id, &key, Template::PaymentActionRequired, vars, after).await?;
            let outcome = if sent { "reminder queued" } else { "skipped: no email address" };
            record_action(tx, case, &stage, outcome).await?;
            outcome.to_owned()
        };
        reports.push(ActionReport { tenant, invoice: case.invoice_id.clone(), stage, outcome });
    }
    Ok(reports)
}

/// Makes a step's Stripe call (no transaction open, no lock held), then records its outcome.
/// A transient failure (429, 5xx, unreachable) records nothing and is returned: the job
/// retries and the same key asks again.
pub(super) async fn settle(state: &Deps, case: &Case, call: StripeCall) -> Result<ActionReport, DunningError> {
    let key = call.key(case);
    let result = match &call.request {
        Request::Pay => state.stripe.pay_invoice(&case.invoice_id, &key).await,
        Request::Cancel(sub) => state.stripe.cancel_subscription(sub, &key).await,
    };
    crate::fault::point("dunning.step.after_stripe");
    let mut needs_customer = false;
    let (outcome, hard_decline, status) = match (&call.request, result) {
        (Request::Pay, Ok(inv)) => (format!("retried: invoice {}", inv.get("status").and_then(|s| s.as_str()).unwrap_or("unknown")), None, None),
        (Request::Pay, Err(StripeApiError::Refused { status, code, decline_code, .. })) => {
            // A payment that needs the customer (3-D Secure: `authentication_required`) cannot
            // succeed off-session: like a hard decline, it stops the retries; the customer was
            // sent the hosted invoice link to confirm it.
            needs_customer = REQUIRES_ACTION.contains(&code.as_str()) || decline_code.as_deref().is_some_and(|c| REQUIRES_ACTION.contains(&c));
            let hard = needs_customer || decline_code.as_deref().is_some_and(|c| HARD_DECLINES.contains(&c));
            let decline_code = decline_code.or_else(|| needs_customer.then(|| code.clone()));
            let outcome = format!("retried: refused ({status} {code} {})", decline_code.clone().unwrap_or_default());
            (outcome, hard.then_some(decline_code), None)
        }
        (Request::Cancel(sub), Ok(_)) => (format!("subscription {sub} canceled"), None, Some(CaseStatus::Canceled)),
        (Request::Cancel(_), Err(StripeApiError::Refused { message, .. })) => (format!("cancel refused ({message}); manual review"), None, Some(CaseStatus::ManualReview)),
        (_, Err(e)) => return Err(e.into()),
    };
    let mut tx = state.tenant_pool.begin_serialised(TenantId(case.tenant_id)).await?;
    if let Some(decline_code) = hard_decline {
        sqlx::query("UPDATE dunning_cases SET hard_decline = true, decline_code = $2, updated_at = now() WHERE id = $1")
            .bind(case.id)
            .bind(&decline_code)
            .execute(&mut *tx)
            .await?;
    }
    if needs_customer {
        // No more off-session retries of this invoice; the customer is reminded instead.
        sqlx::query("UPDATE invoices SET action_required_at = COALESCE(action_required_at, now()) WHERE id = $1")
            .bind(&case.invoice_id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(status) = status {
        close_open_case(&mut tx, case.id, status).await?;
    }
    record_action(&mut tx, case, &call.stage, &outcome).await?;
    tx.commit().await?;
    Ok(ActionReport { tenant: TenantId(case.tenant_id), invoice: case.invoice_id.clone(), stage: call.stage, outcome })
}

/// Ends case `id` as `status` if it is still open (one recovered while Stripe answered stays
/// recovered).
async fn close_open_case(tx: &mut PgConnection, id: uuid::Uuid, status: CaseStatus) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE dunning_cases SET status = $2, closed_at = now(), updated_at = now() WHERE id = $1 AND status = 'open'")
        .bind(id)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The answers to a pay call that mean only the customer can complete the payment: the
/// card's bank asks for 3-D Secure (`authentication_required`), or the invoice's payment
/// intent is `requires_action` (`invoice_payment_intent_requires_action`).
const REQUIRES_ACTION: &[&str] = &["authentication_required", "invoice_payment_intent_requires_action"];

/// Where a case's invoice stands for a retry of ours.
enum Standing {
    /// Only the customer can complete the payment (3-D Secure): no off-session retry.
    NeedsCustomer,
    /// Sent, not charged (`send_invoice`): the customer pays it; Ballast never charges it.
    Sent,
    /// Stripe no longer collects it (`void`, `uncollectible`, or `paid` by another route).
    Closed(String),
    /// Stripe has its own retry scheduled (`next_payment_attempt`).
    StripeRetries(DateTime<Utc>),
    /// Open, and nobody retries it but us.
    Open,
}

async fn invoice_standing(tx: &mut PgConnection, invoice: &str) -> Result<Standing, sqlx::Error> {
    let row: Option<(String, Option<DateTime<Utc>>, bool, bool)> = sqlx::query_as(
        "SELECT status, next_payment_attempt, action_required_at IS NOT NULL, collection_method = 'send_invoice' FROM invoices WHERE id = $1",
    )
    .bind(invoice)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match row {
        Some((status, _, _, _)) if matches!(status.as_str(), "void" | "uncollectible" | "paid") => Standing::Closed(status),
        Some((_, _, _, true)) => Standing::Sent,
        Some((_, _, true, _)) => Standing::NeedsCustomer,
        Some((_, Some(at), _, _)) => Standing::StripeRetries(at),
        _ => Standing::Open,
    })
}

/// Whether the mirrored subscription is canceled already.
async fn subscription_canceled(tx: &mut PgConnection, sub: &str) -> Result<bool, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1").bind(sub).fetch_optional(&mut *tx).await?;
    Ok(status.as_deref() == Some("canceled"))
}

/// Marks a step done (once: a second record of the same stage is ignored).
async fn record_action(tx: &mut PgConnection, case: &Case, stage: &str, outcome: &str) -> Result<(), sqlx::Error> {
    let action = stage.split('@').next().unwrap_or("");
    sqlx::query("INSERT INTO dunning_actions (tenant_id, case_id, stage, action, outcome) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (case_id, stage) DO NOTHING")
        .bind(case.tenant_id)
        .bind(case.id)
        .bind(stage)
        .bind(action)
        .bind(outcome)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
