//! A Stripe simulator: keeps customers, subscriptions, invoices and charges on a clock the
//! test advances (like a Stripe test clock), serves the API endpoints Ballast calls, and
//! emits the events Stripe emits for each step, signed exactly as Stripe signs them, for the
//! test to deliver in order, duplicated, shuffled or concurrently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::{Value, json};

pub mod lifecycle;
pub mod schedule;
mod server;

pub use server::signature_header;

pub const SECRET: &str = "whsec_test_simulator";
pub const API_KEY: &str = "sk_test_simulator";
pub(crate) const DAY: i64 = 86_400;
pub(crate) const PERIOD: i64 = 30 * DAY;

/// Prices the simulator sells: (price, product, amount in cents). They match deploy/plans.toml.
pub const STARTER: (&str, &str, i64) = ("price_starter_monthly", "prod_starter", 2000);
pub const PRO: (&str, &str, i64) = ("price_pro_monthly", "prod_pro", 5000);

#[derive(Debug, Clone)]
struct Sub {
    id: String,
    customer: String,
    tenant: String,
    price: (&'static str, &'static str, i64),
    status: String,
    period_end: i64,
    trial_end: Option<i64>,
    cancel_at_period_end: bool,
    /// Flexible billing mode's cancel time (`cancel_at_period_end` stays false).
    cancel_at: Option<i64>,
    /// When it was canceled, and why (`cancellation_details.reason`).
    canceled: Option<(i64, &'static str)>,
    /// A metered usage item listed before the plan's licensed item.
    metered_first: bool,
    pending_price: Option<(&'static str, &'static str, i64)>,
    /// What the trial's end does without a payment method
    /// (`trial_settings.end_behavior.missing_payment_method`).
    trial_end_behavior: schedule::TrialEnd,
    /// `customer.subscription.trial_will_end` sent.
    trial_warned: bool,
    /// The period end whose `invoice.upcoming` was sent.
    upcoming_sent: Option<i64>,
    /// Proration items (`create_prorations`) waiting for the next renewal invoice, in cents.
    pending_proration: i64,
}

#[derive(Default)]
struct Sim {
    /// Every API answer waits this long (a slow Stripe).
    latency: std::time::Duration,
    /// Every n-th API request is never answered (0: all are); it has no effect either.
    hang_every: u64,
    /// API requests seen.
    requests: u64,
    clock: i64,
    seq: u64,
    customers: BTreeMap<String, Value>,
    cards: BTreeSet<String>,
    /// Customers whose card is their own default (`invoice_settings.default_payment_method`),
    /// not the subscription's.
    customer_cards: BTreeSet<String>,
    /// Customers whose bank asks for 3-D Secure on every payment (`requires_action`).
    needs_action: BTreeSet<String>,
    declining: BTreeSet<String>,
    subs: BTreeMap<String, Sub>,
    invoices: BTreeMap<String, Value>,
    charges: BTreeMap<String, Value>,
    /// Disputes by id.
    disputes: BTreeMap<String, Value>,
    events: Vec<Value>,
    /// Decline code per declining customer (default insufficient_funds).
    decline_codes: BTreeMap<String, String>,
    /// API calls that change state: (what, id, day of the clock), once per idempotency key.
    calls: Vec<(String, String, i64)>,
    /// Idempotency key → the answer given.
    idempotent: BTreeMap<String, (StatusCode, Value)>,
    /// Meter events accepted: identifier → (event name, customer, value).
    meter_events: BTreeMap<String, (String, String, i64)>,
    /// The next meter-event requests answer this status without recording (count, status).
    meter_failures: (u32, u16),
    /// Price reads answer 500 while set (an outage of the catalogue's source).
    prices_down: bool,
    /// Every event ever emitted (what the List Events API serves), oldest first.
    log: Vec<Value>,
    /// Events the test delivered to Ballast (`delivery_success=true` at Stripe).
    delivered: BTreeSet<String>,
    /// Price reads answered.
    price_reads: u64,
    /// Smart Retries per customer (the account's setting, held per customer so tests sharing
    /// one simulator do not interfere); none: Stripe does not retry, Ballast's dunning does.
    smart_retries: BTreeMap<String, schedule::SmartRetries>,
    /// Draft invoices and when Stripe finalizes them (an hour after a renewal creates them).
    drafts: BTreeMap<String, i64>,
    /// Customer balances in cents (negative: credit, applied to the next invoice).
    balances: BTreeMap<String, i64>,
    /// Days before a renewal that `invoice.upcoming` is sent (the account's "upcoming renewal
    /// events" setting; 0: not sent).
    upcoming_days: i64,
    /// `Stripe-Version` headers that were not the pinned version (or absent).
    wrong_versions: Vec<String>,
}

impl Sim {
    fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_sim{:06}{}", self.seq, &uuid::Uuid::new_v4().simple().to_string()[..8])
    }

    /// Records an event at the clock's second, then moves the clock on a second: the events of
    /// one step are spread over seconds as Stripe's are, so no ordering bug hides behind a tie.
    fn emit(&mut self, event_type: &str, object: Value) {
        let id = self.id("evt");
        self.events.push(json!({
            "id": id, "object": "event", "api_version": ballast::stripe::client::StripeApi::api_version(), "created": self.clock,
            "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null}, "type": event_type,
        }));
        let emitted = self.events.last().cloned().unwrap_or_default();
        self.log.push(emitted);
        self.clock += 1;
    }

    fn sub_json(&self, s: &Sub) -> Value {
        json!({
            "id": s.id, "object": "subscription", "customer": s.customer, "status": s.status,
            "cancel_at_period_end": s.cancel_at_period_end, "cancel_at": s.cancel_at, "created": self.clock, "currency": "usd",
            "canceled_at": s.canceled.map(|c| c.0), "ended_at": s.canceled.map(|c| c.0),
            "cancellation_details": {"comment": null, "feedback": null, "reason": s.canceled.map(|c| c.1)},
            "billing_mode": {"type": if s.cancel_at.is_some() { "flexible" } else { "classic" }},
            "trial_end": s.trial_end,
            "default_payment_method": if self.cards.contains(&s.customer) && !self.customer_cards.contains(&s.customer) { json!(format!("pm_{}", s.customer)) } else { Value::Null },
            "metadata": {"tenant_id": s.tenant}, "livemode": false,
            "items": {"object": "list", "has_more": false, "data": self.items_json(s)},
        })
    }

    fn emit_sub(&mut self, event_type: &str, sub_id: &str) {
        let obj = self.sub_json(&self.subs[sub_id].clone());
        self.emit(event_type, obj);
    }

    /// Creates an invoice for `total` (the customer's balance applied) and finalizes it: at once
    /// for a new subscription or a change, an hour later for a renewal (Stripe's draft window,
    /// when the invoice can still be edited). A finalized invoice with nothing due is paid
    /// without a payment attempt; any other is charged.
    fn bill(&mut self, sub_id: &str, total: i64, reason: &str) -> String {
        let s = self.subs[sub_id].clone();
        let id = self.id("in");
        let balance = self.balances.get(&s.customer).copied().unwrap_or(0);
        let due = (total + balance).max(0);
        let inv = json!({
            "id": id, "object": "invoice", "customer": s.customer, "status": "draft", "amount_due": due, "amount_paid": 0,
            "amount_remaining": due, "total": total, "starting_balance": balance, "ending_balance": (total + balance).min(0),
            "currency": "usd", "attempt_count": 0, "attempted": false, "billing_reason": reason, "auto_advance": true,
            "next_payment_attempt": null, "period_end": s.period_end, "created": self.clock, "livemode": false,
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": s.id, "metadata": {}}},
            "lines": {"object": "list", "has_more": false, "data": []},
        });
        self.invoices.insert(id.clone(), inv.clone());
        self.emit("invoice.created", inv);
        if reason == "subscription_cycle" {
            self.drafts.insert(id.clone(), self.clock + schedule::DRAFT_WINDOW);
        } else {
            self.finalize(&id);
        }
        id
    }

    /// Finalizes a draft: open, the balance taken, then paid (nothing due) or charged.
    fn finalize(&mut self, invoice: &str) {
        self.drafts.remove(invoice);
        let inv = self.invoices.get_mut(invoice).expect("invoice");
        inv["status"] = json!("open");
        let customer = inv["customer"].as_str().unwrap_or("").to_owned();
        let (ending, due) = (inv["ending_balance"].as_i64().unwrap_or(0), inv["amount_due"].as_i64().unwrap_or(0));
        let inv = inv.clone();
        self.balances.insert(customer, ending);
        self.emit("invoice.finalized", inv);
        if due > 0 {
            self.pay(invoice);
        } else {
            let inv = self.invoices.get_mut(invoice).expect("invoice");
            inv["status"] = json!("paid");
            let inv = inv.clone();
            self.emit("invoice.paid", inv);
        }
    }

    fn pay(&mut self, invoice: &str) {
        let customer = self.invoices[invoice]["customer"].as_str().expect("customer").to_owned();
        let sub_id = self.invoices[invoice]["parent"]["subscription_details"]["subscription"].as_str().expect("sub").to_owned();
        let inv = self.invoices.get_mut(invoice).expect("invoice");
        let attempts = inv["attempt_count"].as_i64().unwrap_or(0) + 1;
        inv["attempt_count"] = json!(attempts);
        inv["attempted"] = json!(true);
        let amount = inv["amount_due"].as_i64().unwrap_or(0);
        let needs_action = self.needs_action.contains(&customer);
        let declines = !self.cards.contains(&customer) || self.declining.contains(&customer) || needs_action;
        let charge = if declines { String::new() } else { format!("ch_{}", &invoice[3..]) };
        if declines {
            // The next Smart Retry, if the account retries and has tries left.
            let retry = self.smart_retries.get(&customer).cloned();
            let next = retry.as_ref().and_then(|r| r.after_attempt(attempts)).map(|days| self.clock + days * DAY);
            inv["next_payment_attempt"] = json!(next);
            inv["hosted_invoice_url"] = json!(format!("https://invoice.stripe.com/i/acct_sim/{invoice}"));
            let inv = inv.clone();
            if needs_action {
                // The payment intent is `requires_action`: only the customer can confirm it.
                self.emit("invoice.payment_action_required", inv.clone());
            }
            self.emit("invoice.payment_failed", inv);
            let s = self.subs.get_mut(&sub_id).expect("sub");
            if matches!(s.status.as_str(), "active" | "trialing") {
                s.status = "past_due".into();
                self.emit_sub("customer.subscription.updated", &sub_id);
            }
            if let Some(r) = retry.filter(|_| next.is_none()) {
                // The last try failed: Stripe applies the account's setting.
                self.give_up_on(invoice, r.then);
            }
        } else {
            inv["status"] = json!("paid");
            inv["amount_paid"] = json!(amount);
            inv["amount_remaining"] = json!(0);
            inv["next_payment_attempt"] = Value::Null;
            let inv = inv.clone();
            // Since API 2025-03-31 the charge names its payment intent, not the invoice; the
            // invoice payment links the two.
            let intent = format!("pi_{}", &invoice[3..]);
            self.charges.insert(charge.clone(), json!({
                "id": charge, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": 0,
                "currency": "usd", "customer": customer, "payment_intent": intent, "paid": true, "refunded": false,
                "disputed": false, "status": "succeeded", "created": self.clock, "livemode": false,
                "refunds": {"object": "list", "data": [], "has_more": false},
            }));
            let payment = json!({"id": format!("inpay_{}", &invoice[3..]), "object": "invoice_payment", "invoice": invoice,
                "amount_paid": amount, "amount_requested": amount, "currency": "usd", "is_default": true, "livemode": false,
                "created": self.clock, "status": "paid", "payment": {"type": "payment_intent", "payment_intent": intent},
                "status_transitions": {"canceled_at": null, "paid_at": self.clock}});
            self.emit("invoice_payment.paid", payment);
            self.emit("invoice.paid", inv);
            let s = self.subs.get_mut(&sub_id).expect("sub");
            if s.status == "past_due" {
                s.status = "active".into();
                self.emit_sub("customer.subscription.updated", &sub_id);
            }
        }
    }
}

/// A running simulator.
#[derive(Clone)]
pub struct StripeSim {
    sim: Arc<Mutex<Sim>>,
    pub base_url: String,
}

impl StripeSim {
    pub async fn start() -> StripeSim {
        let sim = Arc::new(Mutex::new(Sim { clock: chrono::Utc::now().timestamp(), upcoming_days: 7, ..Sim::default() }));
        let app = server::router(sim.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind simulator");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("simulator serves") });
        StripeSim { sim, base_url: format!("http://{addr}/") }
    }

    /// A slow Stripe: each answer waits `latency`, and every `hang_every`-th request (0: none)
    /// is never answered and does nothing.
    pub fn set_slow(&self, latency: std::time::Duration, hang_every: u64) {
        self.with(|s| {
            s.latency = latency;
            s.hang_every = hang_every;
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sim) -> T) -> T {
        f(&mut self.sim.lock().expect("simulator lock"))
    }

    /// A customer for `tenant` (as the app creates it at checkout), with a working card or none.
    pub fn customer(&self, tenant: uuid::Uuid, with_card: bool) -> String {
        self.with(|s| {
            let id = s.id("cus");
            let c = json!({"id": id, "object": "customer", "email": format!("{id}@example.com"), "name": "Customer",
                "metadata": {"tenant_id": tenant.to_string()}, "created": s.clock, "livemode": false, "delinquent": false});
            s.customers.insert(id.clone(), c.clone());
            if with_card {
                s.cards.insert(id.clone());
            }
            s.emit("customer.created", c);
            id
        })
    }

    /// Checkout of a subscription to `price`, with an optional trial.
    pub fn checkout(&self, tenant: uuid::Uuid, customer: &str, price: (&'static str, &'static str, i64), trial_days: Option<i64>) -> String {
        self.with(|s| {
            let sub_id = s.id("sub");
            let session = s.id("cs");
            let trial_end = trial_days.map(|d| s.clock + d * DAY);
            let sub = Sub {
                id: sub_id.clone(),
                customer: customer.to_owned(),
                tenant: tenant.to_string(),
                price,
                status: if trial_end.is_some() { "trialing".into() } else { "active".into() },
                period_end: trial_end.unwrap_or(s.clock + PERIOD),
                trial_end,
                cancel_at_period_end: false,
                cancel_at: None,
                canceled: None,
                metered_first: false,
                pending_price: None,
                trial_end_behavior: schedule::TrialEnd::CreateInvoice,
                // A trial of 3 days or less is warned at once (below).
                trial_warned: trial_days.is_some_and(|d| d <= 3),
                upcoming_sent: None,
                pending_proration: 0,
            };
            s.subs.insert(sub_id.clone(), sub);
            s.emit("checkout.session.completed", json!({"id": session, "object": "checkout.session", "mode": "subscription",
                "customer": customer, "client_reference_id": tenant.to_string(), "metadata": {"tenant_id": tenant.to_string()},
                "subscription": sub_id, "status": "complete", "payment_status": "paid"}));
            s.emit_sub("customer.subscription.created", &sub_id);
            match trial_days {
                None => {
                    s.bill(&sub_id, price.2, "subscription_create");
                }
                Some(days) => {
                    // A trial starts with a $0 invoice, paid with no payment attempt; a trial of
                    // 3 days or less gets its trial_will_end at once.
                    s.bill(&sub_id, 0, "subscription_create");
                    if days <= 3 {
                        s.emit_sub("customer.subscription.trial_will_end", &sub_id);
                    }
                }
            }
            sub_id
        })
    }

    pub fn set_declining(&self, customer: &str, declining: bool) {
        self.with(|s| if declining { s.declining.insert(customer.to_owned()) } else { s.declining.remove(customer) });
    }

    /// Retries an open invoice (Smart Retries, or Ballast's dunning later).
    pub fn retry_invoice(&self, invoice: &str) {
        self.with(|s| s.pay(invoice));
    }

    /// Changes the price when the period ends.
    pub fn downgrade_at_period_end(&self, sub: &str, price: (&'static str, &'static str, i64)) {
        self.with(|s| s.subs.get_mut(sub).expect("sub").pending_price = Some(price));
    }

    pub fn cancel(&self, sub: &str, at_period_end: bool) {
        self.with(|s| {
            let now = s.clock;
            let x = s.subs.get_mut(sub).expect("sub");
            if at_period_end {
                x.cancel_at_period_end = true;
                s.emit_sub("customer.subscription.updated", sub);
            } else {
                x.canceled = Some((now, "cancellation_requested"));
                x.status = "canceled".into();
                s.emit_sub("customer.subscription.deleted", sub);
            }
        })
    }

    pub fn refund(&self, charge: &str, amount: i64) {
        self.with(|s| {
            let c = s.charges.get_mut(charge).expect("charge");
            let refunded = c["amount_refunded"].as_i64().unwrap_or(0) + amount;
            c["amount_refunded"] = json!(refunded);
            c["refunded"] = json!(refunded >= c["amount"].as_i64().unwrap_or(0));
            let c = c.clone();
            s.emit("charge.refunded", c);
        })
    }

    /// Deletes a customer: Stripe cancels its subscriptions, then deletes it.
    pub fn delete_customer(&self, customer: &str) {
        self.with(|s| {
            let ids: Vec<String> = s.subs.values().filter(|x| x.customer == customer && x.status != "canceled").map(|x| x.id.clone()).collect();
            for id in ids {
                s.end_sub(&id, "cancellation_requested");
                s.emit_sub("customer.subscription.deleted", &id);
            }
            let c = s.customers[customer].clone();
            s.customers.insert(customer.to_owned(), json!({"id": customer, "object": "customer", "deleted": true}));
            s.emit("customer.deleted", c);
        })
    }

    /// The simulator's clock (unix seconds).
    pub fn now(&self) -> i64 {
        self.with(|s| s.clock)
    }

    /// Payments declined for `customer` carry this decline code.
    pub fn set_decline_code(&self, customer: &str, code: &str) {
        self.with(|s| s.decline_codes.insert(customer.to_owned(), code.to_owned()));
    }

    /// State-changing API calls Ballast made: (what, object id, clock in unix s).
    pub fn api_calls(&self) -> Vec<(String, String, i64)> {
        self.with(|s| s.calls.clone())
    }

    /// Meter events Stripe holds: identifier → (event name, customer, value).
    pub fn meter_events(&self) -> BTreeMap<String, (String, String, i64)> {
        self.with(|s| s.meter_events.clone())
    }

    /// The next `n` meter-event requests fail with `status` (429, 500, 400, …).
    pub fn fail_meter_events(&self, n: u32, status: u16) {
        self.with(|s| s.meter_failures = (n, status));
    }

    /// Records `events` as delivered (Stripe's `delivery_success`).
    pub fn mark_delivered(&self, events: &[Value]) {
        self.with(|s| s.delivered.extend(events.iter().filter_map(|e| e["id"].as_str().map(str::to_owned))));
    }

    /// Price reads fail with 500 while `down`.
    pub fn set_prices_down(&self, down: bool) {
        self.with(|s| s.prices_down = down);
    }

    /// Price reads answered so far (successful or not).
    pub fn price_reads(&self) -> u64 {
        self.with(|s| s.price_reads)
    }

    /// The events emitted since the last call.
    pub fn take_events(&self) -> Vec<Value> {
        self.with(|s| std::mem::take(&mut s.events))
    }

    pub fn charges_of(&self, customer: &str) -> Vec<String> {
        self.with(|s| s.charges.values().filter(|c| c["customer"] == customer).map(|c| c["id"].as_str().unwrap_or("").to_owned()).collect())
    }

    pub fn open_invoices_of(&self, customer: &str) -> Vec<String> {
        self.with(|s| {
            s.invoices.values().filter(|i| i["customer"] == customer && i["status"] == "open").map(|i| i["id"].as_str().unwrap_or("").to_owned()).collect()
        })
    }

    /// Stripe's truth for one customer, in the shape [`crate::billing::mirror_of`] reads.
    pub fn truth(&self, customer: &str) -> Value {
        self.with(|s| {
            let subs: BTreeMap<String, Value> = s
                .subs
                .values()
                .filter(|x| x.customer == customer)
                .map(|x| (x.id.clone(), json!([x.status, x.price.0, x.cancel_at_period_end, x.period_end, x.cancel_at])))
                .collect();
            let invoices: BTreeMap<String, Value> = s
                .invoices
                .values()
                .filter(|i| i["customer"] == customer)
                .map(|i| (i["id"].as_str().unwrap_or("").to_owned(), json!([i["status"], i["amount_paid"], i["attempt_count"]])))
                .collect();
            let deleted = s.customers.get(customer).is_some_and(|c| c["deleted"] == true);
            let disputes: BTreeMap<String, Value> = s
                .disputes
                .values()
                .filter(|d| s.charges.get(d["charge"].as_str().unwrap_or("")).is_some_and(|c| c["customer"] == customer))
                .map(|d| (d["id"].as_str().unwrap_or("").to_owned(), d["status"].clone()))
                .collect();
            json!({"customer_deleted": deleted, "subscriptions": subs, "invoices": invoices, "disputes": disputes})
        })
    }
}

