//! The simulator held to Stripe's documentation: for each scenario the billing tests use, the
//! events it emits, in their order and with the fields Stripe documents. Every billing test
//! rests on the simulator; these make sure it does what Stripe does, not what Ballast expects.
//! Each test names the page it follows.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::stripe_sim::lifecycle::{DisputeOutcome, GiveUp};
use crate::support::stripe_sim::schedule::{Proration, SmartRetries, TrialEnd};
use crate::support::stripe_sim::{DAY, EXTRA_SEATS, PERIOD, PRO, SSO_ADDON, STARTER, StripeSim};

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap_or("")).collect()
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).map(|e| &e["data"]["object"]).collect()
}

/// When each event of type `t` was created.
fn event_time(events: &[Value], t: &str) -> Vec<i64> {
    events.iter().filter(|e| e["type"] == t).map(|e| e["created"].as_i64().unwrap_or(0)).collect()
}

fn one<'a>(events: &'a [Value], t: &str) -> &'a Value {
    let found = of_type(events, t);
    assert_eq!(found.len(), 1, "one {t} in {:?}", types(events));
    found[0]
}

/// A paying subscriber (events taken), and its subscription.
async fn subscriber(sim: &StripeSim) -> (String, String) {
    let c = sim.customer(Uuid::new_v4(), true);
    let s = sim.checkout(Uuid::new_v4(), &c, STARTER, None);
    sim.take_events();
    (c, s)
}

/// <https://docs.stripe.com/billing/subscriptions/webhooks> ("Subscription events"): a new
/// subscription's first invoice (`subscription_create`) is finalized and paid at once; every
/// event's `created` moves forward, one step after another.
#[tokio::test]
async fn a_new_subscription_is_invoiced_and_paid_at_once_in_order() {
    let sim = StripeSim::start().await;
    let c = sim.customer(Uuid::new_v4(), true);
    sim.checkout(Uuid::new_v4(), &c, STARTER, None);
    let events = sim.take_events();
    assert_eq!(types(&events), [
        "customer.created", "checkout.session.completed", "customer.subscription.created", "invoice.created",
        "invoice.finalized", "invoice_payment.paid", "invoice.paid",
    ]);
    assert_eq!(one(&events, "invoice.created")["status"], "draft");
    assert_eq!(one(&events, "invoice.paid")["billing_reason"], "subscription_create");
    let times: Vec<i64> = events.iter().map(|e| e["created"].as_i64().unwrap_or(0)).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "a step's events are spread over seconds: {times:?}");
    assert!(events.iter().all(|e| e["api_version"] == ballast::stripe_api::StripeApi::api_version()));
}

/// <https://docs.stripe.com/billing/subscriptions/trials>: a trial opens with a $0 invoice,
/// paid without a payment attempt; `trial_will_end` comes three days before the end, or at
/// once for a trial of three days or less. The trial's end creates an invoice charged
/// automatically, so `invoice.upcoming` announces it as it does a renewal
/// (<https://docs.stripe.com/api/events/types#event_types-invoice.upcoming>: "X number of
/// days before a subscription is scheduled to create an invoice that is automatically
/// charged", 7 by default).
#[tokio::test]
async fn trials_open_with_a_zero_invoice_and_are_warned_three_days_before_they_end() {
    let sim = StripeSim::start().await;
    let c = sim.customer(Uuid::new_v4(), true);
    let sub = sim.checkout(Uuid::new_v4(), &c, STARTER, Some(14));
    let events = sim.take_events();
    let paid = one(&events, "invoice.paid");
    assert_eq!((&paid["amount_due"], &paid["attempt_count"], &paid["billing_reason"]), (&json!(0), &json!(0), &json!("subscription_create")));
    let trial_end = one(&events, "customer.subscription.created")["trial_end"].clone();
    assert!(of_type(&events, "customer.subscription.trial_will_end").is_empty());
    sim.advance_days(10);
    let events = sim.take_events();
    assert_eq!(types(&events), ["invoice.upcoming"], "a week before the end: the invoice announced; four days before: no warning yet");
    assert_eq!(one(&events, "invoice.upcoming")["next_payment_attempt"], trial_end);
    sim.advance_days(1);
    let events = sim.take_events();
    assert_eq!(types(&events), ["customer.subscription.trial_will_end"]);
    assert_eq!(one(&events, "customer.subscription.trial_will_end")["id"], sub.as_str());
    sim.advance_days(4);
    let events = sim.take_events();
    assert_eq!(one(&events, "customer.subscription.updated")["status"], "active");
    assert_eq!(one(&events, "invoice.paid")["billing_reason"], "subscription_cycle");

    let sim = StripeSim::start().await;
    let c = sim.customer(Uuid::new_v4(), true);
    sim.checkout(Uuid::new_v4(), &c, STARTER, Some(2));
    assert_eq!(of_type(&sim.take_events(), "customer.subscription.trial_will_end").len(), 1, "a 2-day trial is warned at once");
    sim.advance_days(3);
    assert!(of_type(&sim.take_events(), "customer.subscription.trial_will_end").is_empty(), "and only once");
}

/// <https://docs.stripe.com/billing/subscriptions/trials#create-free-trials-without-payment>:
/// `trial_settings.end_behavior.missing_payment_method` is `create_invoice` unless set — the
/// subscription invoices, the payment fails and it goes `past_due` — or `pause`, or `cancel`.
#[tokio::test]
async fn a_trial_ending_without_a_card_invoices_pauses_or_cancels_as_set() {
    let mut outcomes = Vec::new();
    for behavior in [None, Some(TrialEnd::Pause), Some(TrialEnd::Cancel)] {
        let sim = StripeSim::start().await;
        let c = sim.customer(Uuid::new_v4(), false);
        let s = sim.checkout(Uuid::new_v4(), &c, STARTER, Some(7));
        if let Some(b) = behavior {
            sim.set_trial_end(&s, b);
        }
        sim.take_events();
        sim.advance_days(8);
        let events = sim.take_events();
        outcomes.push((types(&events).into_iter().filter(|t| t.starts_with("customer.subscription")).map(str::to_owned).collect::<Vec<_>>(),
            sim.truth(&c)["subscriptions"][&s][0].clone()));
    }
    assert_eq!(outcomes[0].1, "past_due", "{outcomes:?}");
    let warned = "customer.subscription.trial_will_end".to_owned();
    assert_eq!(outcomes[1], (vec![warned.clone(), "customer.subscription.updated".into(), "customer.subscription.paused".into()], json!("paused")));
    assert_eq!(outcomes[2], (vec![warned, "customer.subscription.deleted".into()], json!("canceled")));
}

/// <https://docs.stripe.com/billing/subscriptions/overview#subscription-renewal>: `invoice.upcoming`
/// (no invoice id) the configured days before; at the period end a draft `subscription_cycle`
/// invoice, finalized and charged about an hour later.
#[tokio::test]
async fn a_renewal_is_announced_then_drafted_and_finalized_an_hour_later() {
    let sim = StripeSim::start().await;
    let (_c, s) = subscriber(&sim).await;
    sim.advance_days(23);
    let events = sim.take_events();
    assert_eq!(types(&events), ["invoice.upcoming"]);
    let upcoming = one(&events, "invoice.upcoming");
    assert!(upcoming.get("id").is_none(), "an upcoming invoice has no id");
    assert_eq!(upcoming["amount_due"], STARTER.2);
    sim.advance_days(7);
    let events = sim.take_events();
    assert_eq!(types(&events), ["customer.subscription.updated", "invoice.created"], "a draft, not yet charged");
    assert_eq!(one(&events, "invoice.created")["status"], "draft");
    let drafted = events[1]["created"].as_i64().unwrap_or(0);
    sim.advance_hours(1);
    let events = sim.take_events();
    assert_eq!(types(&events), ["invoice.finalized", "invoice_payment.paid", "invoice.paid"]);
    assert!(events[0]["created"].as_i64().unwrap_or(0) - drafted >= 3600, "finalized an hour after the draft");
    assert_eq!(one(&events, "invoice.paid")["parent"]["subscription_details"]["subscription"], s.as_str());
}

/// <https://docs.stripe.com/billing/revenue-recovery/smart-retries>: each failed attempt sets
/// `next_payment_attempt` by the schedule and counts `attempt_count`; after the last, Stripe
/// applies the account's setting (cancel the subscription or mark it unpaid, the invoice
/// uncollectible; or leave it past_due with the invoice voided).
#[tokio::test]
async fn smart_retries_follow_the_schedule_and_end_as_the_account_says() {
    for (then, sub_status, invoice_status, last) in [
        (GiveUp::Cancel, "canceled", "uncollectible", "customer.subscription.deleted"),
        (GiveUp::Unpaid, "unpaid", "uncollectible", "customer.subscription.updated"),
        (GiveUp::StayPastDueVoid, "past_due", "void", "invoice.voided"),
    ] {
        let sim = StripeSim::start().await;
        let c = sim.customer(Uuid::new_v4(), true);
        sim.smart_retries(&c, SmartRetries { days: vec![3, 5, 7], then });
        let s = sim.checkout(Uuid::new_v4(), &c, STARTER, None);
        sim.set_declining(&c, true);
        sim.take_events();
        sim.advance_days(30);
        sim.advance_hours(1);
        let events = sim.take_events();
        let failed = one(&events, "invoice.payment_failed");
        let first = event_time(&events, "invoice.payment_failed")[0];
        assert_eq!(failed["next_payment_attempt"].as_i64().map(|t| (t - first + 60) / DAY), Some(3));
        sim.advance_days(16);
        let events = sim.take_events();
        let failures = of_type(&events, "invoice.payment_failed");
        let attempts: Vec<&Value> = failures.iter().map(|f| &f["attempt_count"]).collect();
        assert_eq!(attempts, [&json!(2), &json!(3), &json!(4)], "{then:?}");
        let gaps: Vec<i64> = event_time(&events, "invoice.payment_failed").iter().map(|t| (t - first + 60) / DAY).collect();
        assert_eq!(gaps, [3, 8, 15], "retries 3, 5 and 7 days after each failure");
        assert!(failures[2]["next_payment_attempt"].is_null(), "the last try schedules none");
        assert_eq!(types(&events).last().copied(), Some(last), "{then:?}");
        let truth = sim.truth(&c);
        assert_eq!(truth["subscriptions"][&s][0], sub_status);
        assert!(truth["invoices"].as_object().expect("invoices").values().any(|i| i[0] == invoice_status), "{truth}");
    }
}

/// <https://docs.stripe.com/billing/subscriptions/prorations>: `create_prorations` (the
/// default) adds the prorated difference to the next invoice; `always_invoice` invoices it now
/// (a downgrade's credit goes to the customer's balance and pays down the next invoice);
/// `none` changes the price from the next period.
#[tokio::test]
async fn price_changes_prorate_as_the_mode_says() {
    let expected = |days_left: i64, from: i64, to: i64| ((to - from) as f64 * (days_left * DAY) as f64 / PERIOD as f64).round() as i64;
    let renewal = |sim: &StripeSim| {
        sim.advance_days(21);
        let events = sim.take_events();
        one(&events, "invoice.paid")["amount_paid"].as_i64().unwrap_or(-1)
    };

    let sim = StripeSim::start().await;
    let (_c, s) = subscriber(&sim).await;
    sim.advance_days(10);
    let prorated = sim.change_price(&s, PRO, Proration::CreateProrations);
    assert!((prorated - expected(20, STARTER.2, PRO.2)).abs() <= 1, "{prorated}");
    assert_eq!(types(&sim.take_events()), ["customer.subscription.updated"], "nothing invoiced now");
    assert_eq!(renewal(&sim), PRO.2 + prorated, "the proration rides on the renewal");

    let sim = StripeSim::start().await;
    let (_c, s) = subscriber(&sim).await;
    sim.advance_days(10);
    let prorated = sim.change_price(&s, PRO, Proration::AlwaysInvoice);
    let events = sim.take_events();
    let paid = one(&events, "invoice.paid");
    assert_eq!((&paid["billing_reason"], &paid["amount_paid"]), (&json!("subscription_update"), &json!(prorated)));

    let sim = StripeSim::start().await;
    let (c, s) = subscriber(&sim).await;
    sim.advance_days(10);
    let credit = sim.change_price(&s, PRO, Proration::None);
    assert_eq!(types(&sim.take_events()), ["customer.subscription.updated"]);
    assert!(credit > 0 && sim.balance(&c) == 0);
    assert_eq!(renewal(&sim), PRO.2, "no proration: the new price from the renewal");

    let sim = StripeSim::start().await;
    let c = sim.customer(Uuid::new_v4(), true);
    let s = sim.checkout(Uuid::new_v4(), &c, PRO, None);
    sim.advance_days(10);
    sim.take_events();
    let credit = sim.change_price(&s, STARTER, Proration::AlwaysInvoice);
    let events = sim.take_events();
    assert_eq!(one(&events, "invoice.paid")["amount_due"], 0, "a downgrade invoices nothing");
    assert_eq!(sim.balance(&c), credit, "its credit waits on the balance");
    assert_eq!(renewal(&sim), STARTER.2 + credit, "and pays down the renewal");
}

/// <https://docs.stripe.com/billing/subscriptions/cancel>: in flexible billing mode a cancel
/// sets `cancel_at` with `cancel_at_period_end` false; at that time the subscription ends with
/// `canceled_at`, `ended_at` and `cancellation_details`. A classic cancel at period end ends
/// it at the period's end.
#[tokio::test]
async fn cancels_end_the_subscription_when_and_as_stripe_records() {
    let sim = StripeSim::start().await;
    let (_c, s) = subscriber(&sim).await;
    let at = sim.now() + 10 * DAY;
    sim.cancel_at(&s, at);
    let events = sim.take_events();
    let updated = one(&events, "customer.subscription.updated");
    assert_eq!((&updated["cancel_at"], &updated["cancel_at_period_end"], &updated["billing_mode"]["type"]), (&json!(at), &json!(false), &json!("flexible")));
    sim.advance_days(11);
    let events = sim.take_events();
    assert_eq!(types(&events), ["customer.subscription.deleted"], "no renewal notice for a cancelling subscription");
    let deleted = one(&events, "customer.subscription.deleted");
    assert_eq!((&deleted["canceled_at"], &deleted["ended_at"]), (&json!(at), &json!(at)));
    assert_eq!(deleted["cancellation_details"]["reason"], "cancellation_requested");

    let (_c, s) = subscriber(&sim).await;
    sim.cancel(&s, true);
    assert_eq!(one(&sim.take_events(), "customer.subscription.updated")["cancel_at_period_end"], true);
    sim.advance_days(31);
    assert_eq!(types(&sim.take_events()), ["customer.subscription.deleted"]);
}

/// <https://docs.stripe.com/billing/subscriptions/overview#requires-action>: a payment that
/// needs 3-D Secure sends `invoice.payment_action_required` (with the hosted invoice page),
/// and paying off-session is refused with `authentication_required`.
#[tokio::test]
async fn a_payment_needing_3d_secure_asks_for_action_and_refuses_off_session_payment() {
    let sim = StripeSim::start().await;
    let (c, _s) = subscriber(&sim).await;
    sim.require_action(&c, true);
    sim.advance_days(30);
    sim.advance_hours(1);
    let events = sim.take_events();
    let action = one(&events, "invoice.payment_action_required");
    assert!(action["hosted_invoice_url"].as_str().is_some_and(|u| u.starts_with("https://invoice.stripe.com/")));
    let invoice = action["id"].as_str().expect("id");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let pay = |version: Option<&str>| {
        let mut request = http.post(format!("{}v1/invoices/{invoice}/pay", sim.base_url)).bearer_auth("sk_test_simulator");
        if let Some(v) = version {
            request = request.header("Stripe-Version", v);
        }
        request.send()
    };
    let answer = pay(Some(ballast::stripe_api::StripeApi::api_version())).await.expect("pay");
    assert_eq!(answer.status(), 402);
    let body: Value = answer.json().await.expect("json");
    // https://docs.stripe.com/error-codes#invoice-payment-intent-requires-action
    assert_eq!(body["error"]["code"], "invoice_payment_intent_requires_action");
    let unversioned = pay(None).await.expect("pay");
    assert_eq!(unversioned.status(), 400, "the simulator speaks only the pinned version");
    assert_eq!(sim.wrong_versions(), ["(none)"]);
}

/// <https://docs.stripe.com/disputes/how-disputes-work>: a chargeback withdraws the funds,
/// reinstates them if won, and closes `won` or `lost`; an inquiry moves no funds and closes
/// `warning_closed`.
#[tokio::test]
async fn disputes_and_inquiries_move_through_stripes_statuses() {
    let mut seen = Vec::new();
    for outcome in [DisputeOutcome::Lost, DisputeOutcome::Won, DisputeOutcome::InquiryClosed] {
        let sim = StripeSim::start().await;
        let (c, _s) = subscriber(&sim).await;
        let charge = sim.charges_of(&c).pop().expect("charge");
        sim.dispute(&charge, outcome);
        let events = sim.take_events();
        seen.push(events.iter().map(|e| format!("{}:{}", e["type"].as_str().unwrap_or(""), e["data"]["object"]["status"].as_str().unwrap_or(""))).collect::<Vec<_>>());
    }
    assert_eq!(seen[0], ["charge.dispute.created:needs_response", "charge.dispute.funds_withdrawn:needs_response", "charge.dispute.updated:under_review", "charge.dispute.closed:lost"]);
    assert_eq!(seen[1], ["charge.dispute.created:needs_response", "charge.dispute.funds_withdrawn:needs_response", "charge.dispute.updated:under_review",
        "charge.dispute.funds_reinstated:under_review", "charge.dispute.closed:won"]);
    assert_eq!(seen[2], ["charge.dispute.created:warning_needs_response", "charge.dispute.updated:warning_under_review", "charge.dispute.closed:warning_closed"]);
}

/// <https://docs.stripe.com/refunds>: each refund sends `charge.refunded` with the running
/// `amount_refunded`; `refunded` turns true only when the whole charge is refunded. A deleted
/// customer's subscriptions end first, then the customer.
#[tokio::test]
async fn partial_refunds_add_up_and_a_deleted_customer_ends_its_subscriptions_first() {
    let sim = StripeSim::start().await;
    let (c, _s) = subscriber(&sim).await;
    let charge = sim.charges_of(&c).pop().expect("charge");
    sim.refund(&charge, 500);
    sim.refund(&charge, 1500);
    let events = sim.take_events();
    let refunds: Vec<(Value, Value)> = of_type(&events, "charge.refunded").iter().map(|o| (o["amount_refunded"].clone(), o["refunded"].clone())).collect();
    assert_eq!(refunds, [(json!(500), json!(false)), (json!(2000), json!(true))]);
    // https://docs.stripe.com/api/refunds/object: each refund is an object of its own with its
    // amount, charge and status (refund.created).
    let objects: Vec<(Value, Value, Value)> = of_type(&events, "refund.created").iter().map(|r| (r["amount"].clone(), r["charge"].clone(), r["status"].clone())).collect();
    assert_eq!(objects, [(json!(500), json!(charge), json!("succeeded")), (json!(1500), json!(charge), json!("succeeded"))]);
    sim.delete_customer(&c);
    assert_eq!(types(&sim.take_events()), ["customer.subscription.deleted", "customer.deleted"]);
}

/// <https://docs.stripe.com/billing/subscriptions/multiple-products>: a subscription holds one
/// item per price, each with its quantity, in no guaranteed order; the renewal invoice charges
/// every item (`proration_behavior=none`: an item added mid-period bills from the renewal). A
/// customer may hold several subscriptions at once.
#[tokio::test]
async fn items_carry_their_price_and_quantity_in_any_order_and_a_customer_holds_several_subscriptions() {
    let sim = StripeSim::start().await;
    let (c, s) = subscriber(&sim).await;
    sim.add_addon(&s, EXTRA_SEATS, 2, true);
    sim.add_addon(&s, SSO_ADDON, 1, false);
    let events = sim.take_events();
    let updated = of_type(&events, "customer.subscription.updated").pop().expect("updated").clone();
    let items: Vec<(&str, i64)> = updated["items"]["data"].as_array().expect("items").iter()
        .map(|i| (i["price"]["id"].as_str().unwrap_or(""), i["quantity"].as_i64().unwrap_or(0))).collect();
    assert_eq!(items, [(EXTRA_SEATS.0, 2), (STARTER.0, 1), (SSO_ADDON.0, 1)], "the add-on listed before the plan's item");
    sim.advance_days(31);
    let paid = of_type(&sim.take_events(), "invoice.paid").into_iter().map(|i| i["amount_paid"].as_i64().unwrap_or(0)).collect::<Vec<_>>();
    assert_eq!(paid, [STARTER.2 + 2 * EXTRA_SEATS.2 + SSO_ADDON.2]);
    let second = sim.checkout(Uuid::new_v4(), &c, PRO, None);
    assert_eq!(sim.subscriptions_of(&c), [s, second]);
}

/// <https://docs.stripe.com/billing/revenue-recovery/smart-retries/pause-on-payment-failure>
/// and <https://docs.stripe.com/changelog/endive/2026-09-30/pause-on-payment-failure>: with
/// pausing configured, the final failed retry pauses the subscription (`status = paused`,
/// `status_details.paused.subscription.type = final_payment_failure`,
/// `customer.subscription.paused`); the invoice that triggered it remains collectible. A
/// paused subscription creates no invoices until it resumes
/// (<https://docs.stripe.com/billing/subscriptions/pause>). Pausing collection
/// (`pause_collection`) leaves the status as it is.
#[tokio::test]
async fn a_final_payment_failure_pauses_the_subscription_and_keeps_its_invoice_collectible() {
    let sim = StripeSim::start().await;
    let c = sim.customer(Uuid::new_v4(), true);
    sim.smart_retries(&c, SmartRetries { days: vec![3, 5, 7], then: GiveUp::Pause });
    let s = sim.checkout(Uuid::new_v4(), &c, STARTER, None);
    sim.set_declining(&c, true);
    sim.advance_days(46);
    let events = sim.take_events();
    assert_eq!(types(&events).last().copied(), Some("customer.subscription.paused"));
    let paused = one(&events, "customer.subscription.paused");
    assert_eq!((paused["status"].as_str(), paused["status_details"]["paused"]["subscription"]["type"].as_str()), (Some("paused"), Some("final_payment_failure")));
    assert_eq!(sim.open_invoices_of(&c).len(), 1, "the invoice stays collectible");
    sim.advance_days(60);
    assert!(of_type(&sim.take_events(), "invoice.created").is_empty(), "no invoices while paused");
    sim.resume(&s);
    assert_eq!(one(&sim.take_events(), "customer.subscription.resumed")["status"], "active");
    sim.pause_collection(&s, Some("keep_as_draft"));
    let updated = one(&sim.take_events(), "customer.subscription.updated").clone();
    assert_eq!((updated["status"].as_str(), updated["pause_collection"]["behavior"].as_str()), (Some("active"), Some("keep_as_draft")));
}

/// <https://docs.stripe.com/billing/subscriptions/overview#payment-window>: a subscription
/// whose first payment fails is `incomplete` (no Smart Retries of it); unpaid 23 hours after
/// creation it becomes `incomplete_expired`, a terminal status, and its open invoice is voided.
#[tokio::test]
async fn a_failed_first_payment_leaves_the_subscription_incomplete_until_it_expires_after_23_hours() {
    let sim = StripeSim::start().await;
    let c = sim.customer(Uuid::new_v4(), true);
    sim.set_declining(&c, true);
    let s = sim.checkout(Uuid::new_v4(), &c, STARTER, None);
    let events = sim.take_events();
    assert_eq!(one(&events, "customer.subscription.updated")["status"], "incomplete");
    assert!(one(&events, "invoice.payment_failed")["next_payment_attempt"].is_null());
    sim.advance_hours(22);
    assert!(sim.take_events().is_empty(), "still incomplete within the window");
    sim.advance_hours(2);
    let events = sim.take_events();
    assert_eq!(types(&events), ["invoice.voided", "customer.subscription.updated"]);
    assert_eq!(sim.truth(&c)["subscriptions"][&s][0], "incomplete_expired");
}

/// <https://docs.stripe.com/billing/collection-method#send-invoice>: with
/// `collection_method = send_invoice` the invoice is finalized and sent (`invoice.sent`), due
/// `days_until_due` later, never charged; unpaid at its due date it is overdue
/// (`invoice.overdue`) and the subscription `past_due`
/// (<https://docs.stripe.com/api/events/types#event_types-invoice.overdue>). With the
/// Automations reminder set, `invoice.will_be_due` comes that many days before the due date
/// (<https://docs.stripe.com/api/events/types#event_types-invoice.will_be_due>).
#[tokio::test]
async fn a_sent_invoice_is_due_days_later_never_charged_and_overdue_after() {
    let sim = StripeSim::start().await;
    let (c, s) = subscriber(&sim).await;
    sim.send_invoices(&s, 14);
    sim.remind_before_due(&c, 3);
    sim.advance_days(30);
    sim.advance_hours(1);
    let events = sim.take_events();
    let sent = one(&events, "invoice.sent");
    assert_eq!(sent["collection_method"], "send_invoice");
    assert_eq!((sent["due_date"].as_i64().unwrap_or(0) - sent["created"].as_i64().unwrap_or(0) + 3600) / DAY, 14);
    assert!(of_type(&events, "invoice.payment_failed").is_empty() && sim.charges_of(&c).len() == 1, "nothing charged but the first invoice");
    sim.advance_days(14);
    let events = sim.take_events();
    assert_eq!(types(&events), ["invoice.will_be_due", "invoice.overdue", "customer.subscription.updated"]);
    let reminder = &events[0];
    assert_eq!(reminder["data"]["object"]["due_date"].as_i64().unwrap_or(0) - reminder["created"].as_i64().unwrap_or(0), 3 * DAY);
    assert_eq!(one(&events, "customer.subscription.updated")["status"], "past_due");
}

/// <https://docs.stripe.com/billing/revenue-recovery/smart-retries/pause-on-payment-failure>:
/// "after the first renewal payment failure" pauses at once (`first_payment_failure`), with no
/// retry scheduled; <https://docs.stripe.com/api/events/types#event_types-refund.failed>: a
/// refund can fail after it was created (`status = failed`, `failure_reason`).
#[tokio::test]
async fn a_first_renewal_failure_can_pause_and_a_refund_can_fail() {
    let sim = StripeSim::start().await;
    let c = sim.customer(Uuid::new_v4(), true);
    sim.pause_on_first_failure(&c);
    sim.checkout(Uuid::new_v4(), &c, STARTER, None);
    let charge = sim.charges_of(&c).pop().expect("charge");
    sim.take_events();
    sim.set_declining(&c, true);
    sim.advance_days(30);
    sim.advance_hours(1);
    let events = sim.take_events();
    let paused = one(&events, "customer.subscription.paused");
    assert_eq!(paused["status_details"]["paused"]["subscription"]["type"], "first_payment_failure");
    assert_eq!(of_type(&events, "invoice.payment_failed").len(), 1, "no retry");
    sim.refund(&charge, 700);
    let refund = sim.refunds_of(&charge).pop().expect("refund");
    sim.fail_refund(&refund);
    let failed = one(&sim.take_events(), "refund.failed").clone();
    assert_eq!((failed["status"].as_str(), failed["failure_reason"].as_str(), failed["amount"].as_i64()), (Some("failed"), Some("expired_or_canceled_card"), Some(700)));
}

/// <https://docs.stripe.com/billing/subscriptions/overview> (a subscription is `incomplete`
/// while its first payment is pending, the payment intent `processing`),
/// <https://docs.stripe.com/payments/payment-intents/verifying-status> and
/// <https://docs.stripe.com/payments/checkout/how-checkout-works> (a delayed payment method
/// completes the session `unpaid`, then `async_payment_succeeded` or `_failed`). The 23-hour
/// window is for a payment intent not confirmed; a processing one has been, so nothing expires
/// while it settles. A renewal's debit leaves the subscription `active` while it processes.
#[tokio::test]
async fn a_bank_debit_processes_for_days_then_settles_or_fails() {
    let sim = StripeSim::start().await;
    let c = sim.customer(Uuid::new_v4(), true);
    sim.pay_by_bank_debit(&c, Some((4, true)));
    let s = sim.checkout(Uuid::new_v4(), &c, STARTER, None);
    let events = sim.take_events();
    assert_eq!(types(&events), [
        "customer.created", "checkout.session.completed", "customer.subscription.created", "invoice.created",
        "invoice.finalized", "payment_intent.processing",
    ]);
    assert_eq!(one(&events, "checkout.session.completed")["payment_status"], "unpaid");
    assert_eq!(one(&events, "customer.subscription.created")["status"], "incomplete");
    assert_eq!(one(&events, "payment_intent.processing")["customer"], c.as_str());
    sim.advance_days(3);
    assert!(sim.take_events().is_empty(), "nothing expires or settles while the debit processes");
    sim.advance_days(1);
    let events = sim.take_events();
    assert_eq!(types(&events), [
        "payment_intent.succeeded", "invoice_payment.paid", "invoice.paid", "customer.subscription.updated",
        "checkout.session.async_payment_succeeded",
    ]);
    assert_eq!(one(&events, "customer.subscription.updated")["status"], "active");
    assert_eq!(sim.truth(&c)["subscriptions"][&s][0], "active");
    // The renewal: processing while the subscription stays active.
    sim.advance_days(27);
    sim.advance_hours(1);
    let events = sim.take_events();
    assert!(of_type(&events, "customer.subscription.updated").iter().all(|s| s["status"] == "active"), "{:?}", types(&events));
    assert_eq!(of_type(&events, "payment_intent.processing").len(), 1);

    let c = sim.customer(Uuid::new_v4(), true);
    sim.pay_by_bank_debit(&c, Some((4, false)));
    let s = sim.checkout(Uuid::new_v4(), &c, STARTER, None);
    sim.take_events();
    sim.advance_days(4);
    // (The first customer's renewal debit settles meanwhile.)
    let events: Vec<Value> = sim.take_events().into_iter().filter(|e| e["data"]["object"]["customer"] == c.as_str()).collect();
    assert_eq!(types(&events), ["payment_intent.payment_failed", "invoice.payment_failed", "checkout.session.async_payment_failed"]);
    assert_eq!(one(&events, "payment_intent.payment_failed")["status"], "requires_payment_method");
    assert_eq!(sim.truth(&c)["subscriptions"][&s][0], "incomplete");
    sim.advance_days(1);
    assert_eq!(sim.truth(&c)["subscriptions"][&s][0], "incomplete_expired", "23 hours after the failure");
}

/// <https://docs.stripe.com/connect/use-accounts-as-customers>: an Account v2 stands where a
/// customer would, and objects name it as `customer_account`;
/// <https://docs.stripe.com/api/v2/core/accounts/event-types>: its changes come as thin events
/// (<https://docs.stripe.com/api/v2/core/events/object>: `related_object`, an RFC 3339
/// `created`, no data), the account read from `GET /v2/core/accounts/{id}`.
#[tokio::test]
async fn an_account_as_customer_is_named_as_customer_account_and_changes_by_thin_events() {
    let sim = StripeSim::start().await;
    let a = sim.account_customer(Uuid::new_v4(), true);
    let s = sim.checkout(Uuid::new_v4(), &a, STARTER, None);
    let events = sim.take_events();
    assert_eq!(&types(&events)[..2], ["v2.core.account.created", "v2.core.account[configuration.customer].updated"]);
    let thin = &events[0];
    assert_eq!((thin["object"].as_str(), thin.get("data")), (Some("v2.core.event"), None));
    assert_eq!(thin["related_object"], json!({"id": a, "type": "v2.core.account", "url": format!("/v2/core/accounts/{a}")}));
    assert!(thin["created"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{thin}");
    let sub = one(&events, "customer.subscription.created");
    assert_eq!((sub["customer"].clone(), sub["customer_account"].as_str()), (Value::Null, Some(a.as_str())));
    assert_eq!(one(&events, "invoice.paid")["customer_account"], a.as_str());
    sim.update_account_email(&a, "new@example.com");
    assert_eq!(types(&sim.take_events()), ["v2.core.account.updated"]);
    let key = secrecy::SecretString::from(ballast::devstripe::API_KEY);
    let api = ballast::stripe_api::StripeApi::new(Some(&key), &sim.base_url, std::time::Duration::from_secs(10)).expect("client");
    let got = api.retrieve(ballast::stripe_api::ObjectKind::Account, &a).await.expect("the account");
    assert_eq!((got["object"].as_str(), got["contact_email"].as_str(), got["closed"].as_bool()), (Some("v2.core.account"), Some("new@example.com"), Some(false)));
    sim.close_account(&a);
    assert_eq!(types(&sim.take_events()), ["customer.subscription.deleted", "v2.core.account.closed"]);
    assert_eq!(sim.truth(&a)["subscriptions"][&s][0], "canceled");
}
