//! A Stripe simulator: keeps customers, subscriptions, invoices and charges on a clock the
//! test advances (like a Stripe test clock), serves the API endpoints Ballast calls, and
//! emits the events Stripe emits for each step, signed exactly as Stripe signs them, for the
//! test to deliver in order, duplicated, shuffled or concurrently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ballast::stripe::signature;
use serde_json::{Value, json};

pub mod lifecycle;

pub const SECRET: &str = "whsec_test_simulator";
pub const API_KEY: &str = "sk_test_simulator";
const DAY: i64 = 86_400;
const PERIOD: i64 = 30 * DAY;

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
}

impl Sim {
    fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_sim{:06}{}", self.seq, &uuid::Uuid::new_v4().simple().to_string()[..8])
    }

    fn emit(&mut self, event_type: &str, object: Value) {
        let id = self.id("evt");
        self.events.push(json!({
            "id": id, "object": "event", "api_version": ballast::stripe::client::StripeApi::api_version(), "created": self.clock,
            "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null}, "type": event_type,
        }));
        let emitted = self.events.last().cloned().unwrap_or_default();
        self.log.push(emitted);
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

    /// Creates, finalizes and tries to pay an invoice for `amount`.
    fn bill(&mut self, sub_id: &str, amount: i64, reason: &str) -> String {
        let s = self.subs[sub_id].clone();
        let id = self.id("in");
        let inv = json!({
            "id": id, "object": "invoice", "customer": s.customer, "status": "draft", "amount_due": amount, "amount_paid": 0,
            "amount_remaining": amount, "currency": "usd", "attempt_count": 0, "attempted": false, "billing_reason": reason,
            "next_payment_attempt": null, "period_end": s.period_end, "created": self.clock, "livemode": false,
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": s.id, "metadata": {}}},
            "lines": {"object": "list", "has_more": false, "data": []},
        });
        self.invoices.insert(id.clone(), inv.clone());
        self.emit("invoice.created", inv);
        self.invoices.get_mut(&id).expect("invoice")["status"] = json!("open");
        let inv = self.invoices[&id].clone();
        self.emit("invoice.finalized", inv);
        self.pay(&id);
        id
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
            inv["next_payment_attempt"] = json!(self.clock + 3 * DAY);
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
        let sim = Arc::new(Mutex::new(Sim { clock: chrono::Utc::now().timestamp(), ..Sim::default() }));
        let app = Router::new()
            .route("/v1/customers/{id}", get(|s, p| fetch(s, p, "customers")))
            .route("/v1/subscriptions/{id}", get(|s, p| fetch(s, p, "subscriptions")).delete(cancel_now))
            .route("/v1/invoices/{id}/pay", axum::routing::post(pay_now))
            .route("/v1/billing/meter_events", axum::routing::post(meter_event))
            .route("/v1/invoices/{id}", get(|s, p| fetch(s, p, "invoices")))
            .route("/v1/charges/{id}", get(|s, p| fetch(s, p, "charges")))
            .route("/v1/prices/{id}", get(price))
            .route("/v1/events", get(list_events))
            .layer(axum::middleware::from_fn_with_state(sim.clone(), slow))
            .with_state(sim.clone());
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
                    s.zero_invoice(&sub_id);
                    if days <= 3 {
                        s.emit_sub("customer.subscription.trial_will_end", &sub_id);
                    }
                }
            }
            sub_id
        })
    }

    /// Moves the clock forward, running trials, renewals and cancellations that fall due.
    pub fn advance_days(&self, days: i64) {
        self.with(|s| {
            let before = s.clock;
            s.clock += days * DAY;
            let ids: Vec<String> = s.subs.keys().cloned().collect();
            for id in ids {
                let sub = s.subs[&id].clone();
                if let Some(at) = sub.cancel_at.filter(|at| *at <= s.clock && sub.status != "canceled") {
                    // Flexible mode: it ends at cancel_at, not at a period end.
                    let _ = at;
                    s.end_sub(&id, "cancellation_requested");
                    s.emit_sub("customer.subscription.deleted", &id);
                    continue;
                }
                match sub.status.as_str() {
                    "trialing" => {
                        let end = sub.trial_end.unwrap_or(before);
                        if end - 3 * DAY > before && end - 3 * DAY <= s.clock {
                            s.emit_sub("customer.subscription.trial_will_end", &id);
                        }
                        if end <= s.clock {
                            if s.cards.contains(&sub.customer) {
                                let x = s.subs.get_mut(&id).expect("sub");
                                x.status = "active".into();
                                x.period_end = end + PERIOD;
                                s.emit_sub("customer.subscription.updated", &id);
                                s.bill(&id, sub.price.2, "subscription_cycle");
                            } else {
                                s.subs.get_mut(&id).expect("sub").status = "paused".into();
                                s.emit_sub("customer.subscription.updated", &id);
                                s.emit_sub("customer.subscription.paused", &id);
                            }
                        }
                    }
                    "active" | "past_due" if sub.period_end <= s.clock => {
                        if sub.cancel_at_period_end {
                            s.end_sub(&id, "cancellation_requested");
                            s.emit_sub("customer.subscription.deleted", &id);
                        } else {
                            let x = s.subs.get_mut(&id).expect("sub");
                            if let Some(p) = x.pending_price.take() {
                                x.price = p;
                            }
                            x.period_end += PERIOD;
                            let amount = x.price.2;
                            s.emit_sub("customer.subscription.updated", &id);
                            s.bill(&id, amount, "subscription_cycle");
                        }
                    }
                    _ => {}
                }
            }
        })
    }

    pub fn set_declining(&self, customer: &str, declining: bool) {
        self.with(|s| if declining { s.declining.insert(customer.to_owned()) } else { s.declining.remove(customer) });
    }

    /// Retries an open invoice (Smart Retries, or Ballast's dunning later).
    pub fn retry_invoice(&self, invoice: &str) {
        self.with(|s| s.pay(invoice));
    }

    /// Changes the price now, invoicing the prorated difference.
    pub fn upgrade(&self, sub: &str, price: (&'static str, &'static str, i64)) {
        self.with(|s| {
            let x = s.subs.get_mut(sub).expect("sub");
            let diff = price.2 - x.price.2;
            x.price = price;
            s.emit_sub("customer.subscription.updated", sub);
            s.bill(sub, diff, "subscription_update");
        })
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

async fn fetch(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>, collection: &'static str) -> (StatusCode, Json<Value>) {
    let s = sim.lock().expect("simulator lock");
    let found = match collection {
        "customers" => s.customers.get(&id).cloned(),
        "subscriptions" => s.subs.get(&id).map(|x| s.sub_json(x)),
        "invoices" => s.invoices.get(&id).cloned(),
        _ => s.charges.get(&id).cloned(),
    };
    match found {
        Some(v) => (StatusCode::OK, Json(v)),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": format!("No such object: '{id}'")}})),
        ),
    }
}

/// `GET /v1/events`: newest first, `delivery_success`, `created[gte]`, `limit`, `starting_after`.
async fn list_events(
    State(sim): State<Arc<Mutex<Sim>>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let s = sim.lock().expect("simulator lock");
    let gte: i64 = q.get("created[gte]").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(10).clamp(1, 100);
    let only_undelivered = q.get("delivery_success").map(String::as_str) == Some("false");
    let matching: Vec<&Value> = s
        .log
        .iter()
        .rev()
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= gte)
        .filter(|e| !only_undelivered || !s.delivered.contains(e["id"].as_str().unwrap_or("")))
        .collect();
    let start = match q.get("starting_after") {
        Some(after) => matching.iter().position(|e| e["id"] == after.as_str()).map_or(matching.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<Value> = matching.iter().skip(start).take(limit).map(|e| (*e).clone()).collect();
    let has_more = start + page.len() < matching.len();
    (StatusCode::OK, Json(json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page})))
}

/// A price the simulator sells, in the fixture shape (../shared/stripe `price`).
async fn price(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().expect("simulator lock");
    s.price_reads += 1;
    if s.prices_down {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"type": "api_error", "message": "simulated outage"}})));
    }
    match [STARTER, PRO].into_iter().find(|p| p.0 == id) {
        Some((price, product, amount)) => (
            StatusCode::OK,
            Json(json!({
                "id": price, "object": "price", "active": true, "billing_scheme": "per_unit", "created": s.clock, "currency": "usd",
                "livemode": false, "lookup_key": null, "metadata": {}, "nickname": null, "product": product,
                "recurring": {"interval": "month", "interval_count": 1, "meter": null, "usage_type": "licensed", "trial_period_days": null},
                "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null, "type": "recurring",
                "unit_amount": amount, "unit_amount_decimal": amount.to_string(),
            })),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": format!("No such price: '{id}'")}})),
        ),
    }
}

/// Signs `body` as Stripe does, at `timestamp`, with `secret`.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", signature::sign(secret, timestamp, body))
}

fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `POST /v1/invoices/{id}/pay`: pays now, or answers 402 with the card's decline.
async fn pay_now(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>, headers: axum::http::HeaderMap) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().expect("simulator lock");
    let key = idempotency_key(&headers);
    if let Some(done) = key.as_ref().and_then(|k| s.idempotent.get(k)) {
        return (done.0, Json(done.1.clone()));
    }
    let Some(inv) = s.invoices.get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such invoice"}})));
    };
    let clock = s.clock;
    s.calls.push(("pay".into(), id.clone(), clock));
    let answer = if inv["status"] == "open" {
        s.pay(&id);
        let inv = s.invoices[&id].clone();
        if inv["status"] == "paid" {
            (StatusCode::OK, inv)
        } else {
            let customer = inv["customer"].as_str().unwrap_or("").to_owned();
            if s.needs_action.contains(&customer) {
                (StatusCode::PAYMENT_REQUIRED, json!({"error": {"type": "card_error", "code": "authentication_required",
                    "decline_code": "authentication_required", "message": "Your card was declined. This transaction requires authentication."}}))
            } else {
                let code = s.decline_codes.get(&customer).cloned().unwrap_or_else(|| "insufficient_funds".into());
                (StatusCode::PAYMENT_REQUIRED, json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": code, "message": "Your card was declined."}}))
            }
        }
    } else {
        (StatusCode::BAD_REQUEST, json!({"error": {"type": "invalid_request_error", "code": "invoice_not_open", "message": "Invoice is not open"}}))
    };
    if let Some(k) = key {
        s.idempotent.insert(k, answer.clone());
    }
    (answer.0, Json(answer.1))
}

/// `DELETE /v1/subscriptions/{id}`: cancels now.
async fn cancel_now(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>, headers: axum::http::HeaderMap) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().expect("simulator lock");
    let key = idempotency_key(&headers);
    if let Some(done) = key.as_ref().and_then(|k| s.idempotent.get(k)) {
        return (done.0, Json(done.1.clone()));
    }
    if !s.subs.contains_key(&id) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription"}})));
    }
    let clock = s.clock;
    s.calls.push(("cancel".into(), id.clone(), clock));
    s.end_sub(&id, "cancellation_requested");
    s.emit_sub("customer.subscription.deleted", &id);
    let answer = (StatusCode::OK, s.sub_json(&s.subs[&id].clone()));
    if let Some(k) = key {
        s.idempotent.insert(k, answer.clone());
    }
    (answer.0, Json(answer.1))
}

/// `POST /v1/billing/meter_events`: identifier unique (as Stripe enforces over 24 h), answers
/// repeated per idempotency key.
async fn meter_event(
    State(sim): State<Arc<Mutex<Sim>>>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().expect("simulator lock");
    let key = idempotency_key(&headers);
    if let Some(done) = key.as_ref().and_then(|k| s.idempotent.get(k)) {
        return (done.0, Json(done.1.clone()));
    }
    if s.meter_failures.0 > 0 {
        s.meter_failures.0 -= 1;
        let status = StatusCode::from_u16(s.meter_failures.1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, Json(json!({"error": {"type": "api_error", "code": "simulated", "message": format!("simulated {status}")}})));
    }
    let identifier = form.get("identifier").cloned().unwrap_or_default();
    let customer = form.get("payload[stripe_customer_id]").cloned().unwrap_or_default();
    let value: i64 = form.get("payload[value]").and_then(|v| v.parse().ok()).unwrap_or(0);
    let answer = if s.meter_events.contains_key(&identifier) {
        (StatusCode::BAD_REQUEST, json!({"error": {"type": "invalid_request_error", "code": "duplicate_meter_event",
            "message": format!("An event with identifier {identifier} already exists")}}))
    } else {
        let name = form.get("event_name").cloned().unwrap_or_default();
        s.meter_events.insert(identifier.clone(), (name.clone(), customer.clone(), value));
        (StatusCode::OK, json!({"object": "billing.meter_event", "event_name": name, "identifier": identifier,
            "payload": {"stripe_customer_id": customer, "value": value.to_string()}, "livemode": false, "created": s.clock,
            "timestamp": form.get("timestamp").and_then(|t| t.parse::<i64>().ok()).unwrap_or(s.clock)}))
    };
    if let Some(k) = key {
        s.idempotent.insert(k, answer.clone());
    }
    (answer.0, Json(answer.1))
}

/// Delays every API request by the simulator's latency; drops every n-th unanswered.
async fn slow(State(sim): State<Arc<Mutex<Sim>>>, request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let (latency, hang) = {
        let mut s = sim.lock().expect("simulator lock");
        s.requests += 1;
        (s.latency, s.hang_every > 0 && s.requests % s.hang_every == 0)
    };
    if hang {
        // Longer than any client waits; the client gives up and the request never runs.
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    next.run(request).await
}
