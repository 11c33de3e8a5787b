//! What the Stripe of today sends that Ballast once mis-read: flexible-mode cancels
//! (`cancel_at`), a metered item listed before the plan, the customer's own default card,
//! Stripe giving up on an invoice after its retries, 3-D Secure, and a trial-ending notice for
//! a subscription that is no longer trialing. Each test fails without its fix.

use uuid::Uuid;

use crate::dunning::{app_with, case_status, declined_renewal, deliver_new, next_day, pay_days};
use crate::support::TestApp;
use crate::support::smtp::SmtpServer;
use crate::support::stripe_sim::lifecycle::GiveUp;
use crate::support::stripe_sim::schedule::SmartRetries;
use crate::support::stripe_sim::{PRO, STARTER, StripeSim};

const DAY: i64 = 86_400;

async fn plan_of(app: &TestApp, tenant: Uuid) -> (Option<String>, Option<chrono::DateTime<chrono::Utc>>) {
    sqlx::query_as("SELECT plan_id, expires_at FROM entitlements WHERE tenant_id = $1 AND feature = 'api_access'")
        .bind(tenant)
        .fetch_optional(&app.state.system_pool.0)
        .await
        .expect("entitlement")
        .unwrap_or_default()
}

/// Runs the clock through the renewal (its invoice a draft for an hour, then finalized and
/// charged) and delivers what Stripe sent; returns when the charge failed and the invoice it
/// left open.
async fn failed_renewal(app: &TestApp, sim: &StripeSim, customer: &str) -> (i64, String) {
    sim.advance_days(30);
    sim.advance_hours(1);
    let failed_at = sim.now();
    deliver_new(app, sim).await;
    (failed_at, sim.open_invoices_of(customer).pop().expect("the renewal left open"))
}

#[tokio::test]
async fn a_flexible_cancel_from_the_portal_ends_access_at_cancel_at() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("flexible").await;
    let customer = sim.customer(tenant, true);
    let sub = sim.checkout(tenant, &customer, STARTER, None);
    deliver_new(&app, &sim).await;
    assert_eq!(plan_of(&app, tenant).await, (Some("starter".into()), None), "paid, not cancelling");
    // The portal in flexible mode: cancel_at in 10 days, cancel_at_period_end false.
    let at = sim.now() + 10 * DAY;
    sim.cancel_at(&sub, at);
    deliver_new(&app, &sim).await;
    let (plan, expires) = plan_of(&app, tenant).await;
    assert_eq!(plan.as_deref(), Some("starter"));
    assert_eq!(expires.map(|e| e.timestamp()), Some(at), "access expires when the subscription will cancel");
    let mirrored: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT cancel_at FROM subscriptions WHERE id = $1").bind(&sub).fetch_one(&app.state.system_pool.0).await.expect("sub");
    assert_eq!(mirrored.map(|m| m.timestamp()), Some(at));
    sim.advance_days(11);
    deliver_new(&app, &sim).await;
    assert_eq!(plan_of(&app, tenant).await.0, None, "ended at cancel_at");
}

#[tokio::test]
async fn a_metered_item_listed_first_does_not_hide_the_plan() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("metered").await;
    let customer = sim.customer(tenant, true);
    let sub = sim.checkout(tenant, &customer, PRO, None);
    sim.add_metered_item(&sub);
    deliver_new(&app, &sim).await;
    assert_eq!(plan_of(&app, tenant).await.0.as_deref(), Some("pro"));
    let price: Option<String> =
        sqlx::query_scalar("SELECT price_id FROM subscriptions WHERE id = $1").bind(&sub).fetch_one(&app.state.system_pool.0).await.expect("sub");
    assert_eq!(price.as_deref(), Some(PRO.0), "the licensed item's price is the plan's");
}

#[tokio::test]
async fn dunning_retries_with_the_customers_own_default_card() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let tenant = app.tenant("customer-card").await;
    let customer = sim.customer(tenant, false);
    sim.card_on_customer(&customer);
    sim.checkout(tenant, &customer, STARTER, None);
    deliver_new(&app, &sim).await;
    sim.set_declining(&customer, true);
    sim.advance_days(30);
    // The renewal invoice is a draft for an hour, then finalized and charged.
    sim.advance_hours(1);
    let failed_at = sim.now();
    deliver_new(&app, &sim).await;
    let invoice = sim.open_invoices_of(&customer).pop().expect("the declined renewal");
    next_day(&app, &sim).await;
    assert_eq!(pay_days(&sim, &invoice, failed_at), [1], "the day-1 retry reached Stripe (the card is the customer's)");
}

#[tokio::test]
async fn when_stripe_gives_up_the_case_is_written_off_and_dunning_stops_calling_stripe() {
    for how in [GiveUp::Cancel, GiveUp::Unpaid, GiveUp::StayPastDueVoid] {
        let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
        let app = app_with(&sim, &smtp).await;
        let (_tenant, _customer, invoice, failed_at) = declined_renewal(&app, &sim).await;
        next_day(&app, &sim).await;
        assert_eq!(pay_days(&sim, &invoice, failed_at), [1]);
        // Stripe's own retries run out: the invoice uncollectible or void, the subscription
        // canceled, unpaid or left past_due as the account is set.
        sim.give_up(&invoice, how);
        deliver_new(&app, &sim).await;
        ballast::dunning::run(&app.state.dunning_deps(), chrono::DateTime::from_timestamp(sim.now(), 0).expect("t"), None, false)
            .await
            .expect("dunning");
        assert_eq!(case_status(&app, &invoice).await, ("written_off".into(), false), "{how:?}");
        for _ in 2..=22 {
            next_day(&app, &sim).await;
        }
        assert_eq!(pay_days(&sim, &invoice, failed_at), [1], "{how:?}: no retry of an invoice Stripe gave up on");
        assert!(sim.api_calls().iter().all(|(what, _, _)| what != "cancel"), "{how:?}: no cancel of what Stripe ended");
    }
}

#[tokio::test]
async fn with_stripes_smart_retries_on_dunning_leaves_the_retries_to_stripe_and_ends_when_stripe_gives_up() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    sim.set_upcoming_days(0);
    let tenant = app.tenant("smart").await;
    let customer = sim.customer(tenant, true);
    sim.smart_retries(&customer, SmartRetries { days: vec![3, 5, 7], then: GiveUp::Cancel });
    let sub = sim.checkout(tenant, &customer, STARTER, None);
    deliver_new(&app, &sim).await;
    sim.set_declining(&customer, true);
    let (failed_at, invoice) = failed_renewal(&app, &sim, &customer).await;
    for _ in 1..=22 {
        next_day(&app, &sim).await;
    }
    // Stripe tried on days 0, 3, 8 and 15 and then canceled; Ballast never charged the card.
    assert_eq!(sim.truth(&customer)["invoices"][&invoice], serde_json::json!(["uncollectible", 0, 4]));
    assert_eq!(pay_days(&sim, &invoice, failed_at), Vec::<i64>::new(), "no retry of ours while Stripe has one scheduled");
    let outcomes: Vec<String> = sqlx::query_scalar("SELECT outcome FROM dunning_actions a JOIN dunning_cases c ON c.id = a.case_id WHERE c.invoice_id = $1 AND a.action = 'retry'")
        .bind(&invoice)
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("outcomes");
    assert!(!outcomes.is_empty() && outcomes.iter().all(|o| o.starts_with("skipped: Stripe retries it at")), "{outcomes:?}");
    assert_eq!(case_status(&app, &invoice).await.0, "written_off");
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1").bind(&sub).fetch_one(&app.state.system_pool.0).await.expect("s");
    assert_eq!(status, "canceled");
    assert!(sim.api_calls().iter().all(|(what, _, _)| what != "cancel"), "Stripe canceled it; dunning called nothing");
}

#[tokio::test]
async fn a_case_ends_at_once_with_its_subscription_canceled_in_the_dashboard() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let (_tenant, _customer, invoice, _failed_at) = declined_renewal(&app, &sim).await;
    let sub: String = sqlx::query_scalar("SELECT subscription_id FROM invoices WHERE id = $1").bind(&invoice).fetch_one(&app.state.system_pool.0).await.expect("sub");
    // Someone canceled it in the Dashboard meanwhile; the invoice stays open.
    sim.cancel(&sub, false);
    deliver_new(&app, &sim).await;
    // The case ends with its subscription, at once: no more emails, retries or final step.
    assert_eq!(case_status(&app, &invoice).await.0, "subscription_ended");
    for _ in 1..=22 {
        next_day(&app, &sim).await;
    }
    assert_eq!(case_status(&app, &invoice).await.0, "subscription_ended");
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1").bind(&sub).fetch_one(&app.state.system_pool.0).await.expect("s");
    assert!(sim.api_calls().iter().all(|(what, _, _)| what != "cancel"), "nothing to cancel at Stripe: {:?} {status}", sim.api_calls());
}

#[tokio::test]
async fn a_payment_that_needs_3d_secure_is_not_retried_off_session() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let tenant = app.tenant("sca").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    deliver_new(&app, &sim).await;
    sim.require_action(&customer, true);
    let (failed_at, invoice) = failed_renewal(&app, &sim, &customer).await;
    for _ in 1..=8 {
        next_day(&app, &sim).await;
    }
    // invoice.payment_action_required came with the failure: only the customer can pay it.
    assert_eq!(pay_days(&sim, &invoice, failed_at), Vec::<i64>::new(), "no off-session retry at all");
    let pool = &app.state.system_pool.0;
    let stages: Vec<String> = sqlx::query_scalar("SELECT a.stage FROM dunning_actions a JOIN dunning_cases c ON c.id = a.case_id WHERE c.invoice_id = $1 ORDER BY a.performed_at")
        .bind(&invoice).fetch_all(pool).await.expect("actions");
    assert!(stages.contains(&"action_reminder@3".to_owned()) && stages.contains(&"action_reminder@7".to_owned()), "{stages:?}");
    let action_emails: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE tenant_id = $1 AND template = 'payment_action_required'")
        .bind(tenant).fetch_one(pool).await.expect("emails");
    assert_eq!(action_emails, 3, "one per invoice, then a reminder on days 3 and 7");
}

#[tokio::test]
async fn a_retry_answered_with_requires_action_stops_the_retries_of_that_invoice() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let tenant = app.tenant("sca-on-retry").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    deliver_new(&app, &sim).await;
    sim.set_declining(&customer, true);
    let (failed_at, invoice) = failed_renewal(&app, &sim, &customer).await;
    // The bank now asks for 3-D Secure: day 1's retry is answered
    // invoice_payment_intent_requires_action, and no retry follows it.
    sim.set_declining(&customer, false);
    sim.require_action(&customer, true);
    for _ in 1..=8 {
        next_day(&app, &sim).await;
    }
    assert_eq!(pay_days(&sim, &invoice, failed_at), [1]);
    let asked: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar("SELECT action_required_at FROM invoices WHERE id = $1")
        .bind(&invoice).fetch_one(&app.state.system_pool.0).await.expect("invoice");
    assert!(asked.is_some());
}

#[tokio::test]
async fn no_trial_ending_email_for_a_subscription_no_longer_trialing() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let tenant = app.tenant("trial").await;
    let customer = sim.customer(tenant, true);
    let sub = sim.checkout(tenant, &customer, STARTER, Some(14));
    deliver_new(&app, &sim).await;
    sim.advance_days(11);
    let notice = sim.take_events();
    assert!(notice.iter().any(|e| e["type"] == "customer.subscription.trial_will_end"), "Stripe sends it 3 days before");
    // The customer cancels before the notice is delivered (Stripe does not order deliveries).
    sim.cancel(&sub, false);
    deliver_new(&app, &sim).await;
    for e in &notice {
        assert_eq!(app.deliver(e).await, 200);
    }
    app.drain().await;
    ballast::dunning::run(&app.state.dunning_deps(), chrono::DateTime::from_timestamp(sim.now(), 0).expect("t"), None, false).await.expect("dunning");
    app.drain().await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE template = 'trial_ending'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("outbox");
    assert_eq!(queued, 0, "Stripe advises checking the status first");
    // (The renewal's invoice.upcoming, a week before the trial's end, mailed its own notice.)
    assert!(!smtp.messages().iter().any(|m| m.data.contains("Your trial ends")));
}

/// Since API 2025-03-31 a charge names no invoice: the link comes from `invoice_payment.paid`,
/// whichever of the two events is delivered first.
#[tokio::test]
async fn a_refunded_charge_is_linked_to_its_invoice_through_the_invoice_payment_in_either_order() {
    for payment_first in [true, false] {
        let sim = StripeSim::start().await;
        let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
        let tenant = app.tenant("refund").await;
        let customer = sim.customer(tenant, true);
        sim.checkout(tenant, &customer, STARTER, None);
        let mut events = sim.take_events();
        let (payments, others): (Vec<_>, Vec<_>) = events.drain(..).partition(|e| e["type"] == "invoice_payment.paid");
        for e in &others {
            assert_eq!(app.deliver(e).await, 200);
        }
        app.drain().await;
        let charge = sim.charges_of(&customer).pop().expect("the first payment's charge");
        sim.refund(&charge, 500);
        let refund = sim.take_events();
        let (first, second) = if payment_first { (&payments, &refund) } else { (&refund, &payments) };
        for e in first.iter().chain(second.iter()) {
            assert_eq!(app.deliver(e).await, 200);
            app.drain().await;
        }
        let invoice = payments[0]["data"]["object"]["invoice"].as_str().expect("invoice").to_owned();
        let linked: Option<String> =
            sqlx::query_scalar("SELECT invoice_id FROM charges WHERE id = $1").bind(&charge).fetch_one(&app.state.system_pool.0).await.expect("charge");
        assert_eq!(linked, Some(invoice), "payment delivered first: {payment_first}");
    }
}

/// The simulator against Stripe's documentation: a trial opens with a $0 invoice
/// (`billing_reason = subscription_create`, never attempted), and a trial of 3 days or less
/// gets `customer.subscription.trial_will_end` at once rather than 3 days before its end.
#[tokio::test]
async fn the_simulator_opens_trials_as_stripe_does() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("short-trial").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, Some(2));
    let events = sim.take_events();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(types.contains(&"customer.subscription.trial_will_end"), "{types:?}");
    let paid = events.iter().find(|e| e["type"] == "invoice.paid").expect("the trial's invoice");
    let inv = &paid["data"]["object"];
    assert_eq!((inv["amount_due"].as_i64(), inv["attempt_count"].as_i64(), inv["billing_reason"].as_str()), (Some(0), Some(0), Some("subscription_create")));
    for e in &events {
        assert_eq!(app.deliver(e).await, 200);
    }
    app.drain().await;
    assert_eq!(plan_of(&app, tenant).await.0.as_deref(), Some("starter"), "trialing grants the plan");
    let invoices: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices WHERE customer_id = $1 AND amount_due = 0 AND status = 'paid'")
        .bind(&customer)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("invoices");
    assert_eq!(invoices, 1);
}

#[tokio::test]
async fn a_sent_invoice_is_chased_by_email_and_never_charged() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let tenant = app.tenant("sent").await;
    let customer = sim.customer(tenant, true);
    let sub = sim.checkout(tenant, &customer, STARTER, None);
    sim.send_invoices(&sub, 14);
    sim.remind_before_due(&customer, 3);
    deliver_new(&app, &sim).await;
    sim.advance_days(30);
    sim.advance_hours(1);
    deliver_new(&app, &sim).await;
    let invoice = sim.open_invoices_of(&customer).pop().expect("the renewal, sent");
    let sent_at = sim.now();
    for _ in 1..=24 {
        next_day(&app, &sim).await;
    }
    // Overdue on day 14 opened the case; its retry days found an invoice the customer pays.
    assert_eq!(pay_days(&sim, &invoice, sent_at), Vec::<i64>::new(), "a sent invoice is never paid through the API");
    let pool = &app.state.system_pool.0;
    let outcomes: Vec<String> = sqlx::query_scalar("SELECT a.outcome FROM dunning_actions a JOIN dunning_cases c ON c.id = a.case_id WHERE c.invoice_id = $1")
        .bind(&invoice).fetch_all(pool).await.expect("actions");
    assert!(outcomes.iter().any(|o| o.contains("sent invoice")), "{outcomes:?}");
    let subject: String = sqlx::query_scalar("SELECT subject FROM email_outbox WHERE tenant_id = $1 AND template = 'payment_failed'")
        .bind(tenant).fetch_one(pool).await.expect("day-0 email");
    assert!(subject.contains("overdue") && !subject.contains("did not go through"), "{subject}");
    // Three days before the due date, one reminder naming it (invoice.will_be_due).
    let due: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT due_date FROM invoices WHERE id = $1").bind(&invoice).fetch_one(pool).await.expect("due date");
    let due_on = due.format("%Y-%m-%d").to_string();
    let reminders: Vec<String> = sqlx::query_scalar("SELECT subject FROM email_outbox WHERE tenant_id = $1 AND template = 'invoice_due_soon'")
        .bind(tenant).fetch_all(pool).await.expect("reminders");
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert!(reminders[0].contains(&due_on) && reminders[0].contains(&invoice), "{reminders:?}");
}
