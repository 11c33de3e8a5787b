//! The simulator's handle: starting it, and what a caller does to the account — customers,
//! checkouts, declines, cancels, refunds — and reads back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::server;
use super::state::{Sim, Sub};
use super::terms::{DAY, PERIOD, TrialEnd};

/// A running simulator.
#[derive(Clone)]
pub struct StripeSim {
    sim: Arc<Mutex<Sim>>,
    pub base_url: String,
}

impl StripeSim {
    /// A simulator on a free loopback port, for a test.
    pub async fn start() -> StripeSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind simulator");
        let addr = listener.local_addr().expect("addr");
        let sim = Self::unstarted(addr);
        sim.spawn(listener, axum::Router::new());
        sim
    }

    /// A fresh account whose API will answer at `addr`.
    pub(super) fn unstarted(addr: std::net::SocketAddr) -> StripeSim {
        let sim = Arc::new(Mutex::new(Sim { clock: chrono::Utc::now().timestamp(), upcoming_days: 7, ..Sim::default() }));
        StripeSim { sim, base_url: format!("http://{addr}/") }
    }

    /// Serves the API (and `extra` routes, outside the version gate) on `listener`.
    pub(super) fn spawn(&self, listener: tokio::net::TcpListener, extra: axum::Router) {
        let app = server::router(self.sim.clone()).merge(extra);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(message = "Stripe simulator stopped serving.", error = %e);
            }
        });
    }

    /// The tenant a customer was created for (`metadata.tenant_id`), if it exists.
    pub fn tenant_of(&self, customer: &str) -> Option<uuid::Uuid> {
        self.with(|s| {
            let c = s.customers.get(customer).filter(|c| c["deleted"] != true)?;
            c["metadata"]["tenant_id"].as_str().and_then(|t| t.parse().ok())
        })
    }

    /// A slow Stripe: each answer waits `latency`, and every `hang_every`-th request (0: none)
    /// is never answered and does nothing.
    pub fn set_slow(&self, latency: std::time::Duration, hang_every: u64) {
        self.with(|s| {
            s.latency = latency;
            s.hang_every = hang_every;
        })
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Sim) -> T) -> T {
        f(&mut self.sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
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
        self.checkout_discounted(tenant, customer, price, trial_days, 0)
    }

    /// Checkout with a coupon taking `percent_off` (100: free): the invoice's total is the
    /// price less the discount, and an invoice of $0 is paid with no payment attempt
    /// (<https://docs.stripe.com/billing/subscriptions/coupons>).
    pub fn checkout_discounted(&self, tenant: uuid::Uuid, customer: &str, price: (&'static str, &'static str, i64), trial_days: Option<i64>, percent_off: i64) -> String {
        self.with(|s| {
            let sub_id = s.id("sub");
            let session = s.id("cs");
            let trial_end = trial_days.map(|d| s.clock + d * DAY);
            // Paid by bank debit, the first payment is pending: the subscription starts
            // `incomplete` and the session completes `unpaid`.
            let debit = trial_days.is_none() && s.bank_debits.contains_key(customer);
            let sub = Sub {
                id: sub_id.clone(),
                customer: customer.to_owned(),
                tenant: tenant.to_string(),
                price,
                status: if trial_end.is_some() { "trialing".into() } else if debit { "incomplete".into() } else { "active".into() },
                period_end: trial_end.unwrap_or(s.clock + PERIOD),
                trial_end,
                cancel_at_period_end: false,
                cancel_at: None,
                canceled: None,
                metered_first: false,
                pending_price: None,
                trial_end_behavior: TrialEnd::CreateInvoice,
                // A trial of 3 days or less is warned at once (below).
                trial_warned: trial_days.is_some_and(|d| d <= 3),
                upcoming_sent: None,
                pending_proration: 0,
                addons: Vec::new(),
                paused_by: None,
                pause_collection: None,
                send_invoice_days: None,
            };
            s.subs.insert(sub_id.clone(), sub);
            let session = json!({"id": session, "object": "checkout.session", "mode": "subscription",
                "customer": customer, "client_reference_id": tenant.to_string(), "metadata": {"tenant_id": tenant.to_string()},
                "subscription": sub_id, "status": "complete", "payment_status": if debit { "unpaid" } else { "paid" },
                "payment_method_types": if debit { json!(["us_bank_account"]) } else { json!(["card"]) }});
            if debit {
                s.debit_sessions.insert(sub_id.clone(), session.clone());
            }
            s.emit("checkout.session.completed", session);
            s.emit_sub("customer.subscription.created", &sub_id);
            match trial_days {
                None => {
                    s.bill(&sub_id, price.2 * (100 - percent_off.clamp(0, 100)) / 100, "subscription_create");
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

    /// Refunds `amount` of a charge: the refund (`refund.created`, succeeded at once as a card
    /// refund usually is), then the charge with its refunded total (`charge.refunded`).
    pub fn refund(&self, charge: &str, amount: i64) {
        self.with(|s| {
            let id = s.id("re");
            let currency = s.charges[charge]["currency"].clone();
            let refund = json!({"id": id, "object": "refund", "amount": amount, "charge": charge, "currency": currency,
                "status": "succeeded", "reason": "requested_by_customer", "created": s.clock,
                "payment_intent": s.charges[charge]["payment_intent"].clone()});
            s.refunds.insert(id, refund.clone());
            s.emit("refund.created", refund);
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

    /// How many events have been emitted so far.
    pub fn event_log_len(&self) -> usize {
        self.with(|s| s.log.len())
    }

    /// The ids of the events emitted after the first `from`.
    pub fn event_ids_since(&self, from: usize) -> Vec<String> {
        self.with(|s| s.log.iter().skip(from).filter_map(|e| e["id"].as_str().map(str::to_owned)).collect())
    }

    /// Those of `ids` not delivered yet.
    pub fn undelivered(&self, ids: &[String]) -> Vec<String> {
        self.with(|s| ids.iter().filter(|id| !s.delivered.contains(*id)).cloned().collect())
    }

    /// The events emitted since the last call.
    pub fn take_events(&self) -> Vec<Value> {
        self.with(|s| std::mem::take(&mut s.events))
    }

    pub fn charges_of(&self, customer: &str) -> Vec<String> {
        self.with(|s| s.charges.values().filter(|c| c["customer"] == customer).map(|c| c["id"].as_str().unwrap_or("").to_owned()).collect())
    }

    /// The customer's subscriptions, oldest first.
    pub fn subscriptions_of(&self, customer: &str) -> Vec<String> {
        self.with(|s| s.subs.values().filter(|x| x.customer == customer).map(|x| x.id.clone()).collect())
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
            let refunds: BTreeMap<String, Value> = s
                .refunds
                .values()
                .filter(|r| s.charges.get(r["charge"].as_str().unwrap_or("")).is_some_and(|c| c["customer"] == customer))
                .map(|r| (r["id"].as_str().unwrap_or("").to_owned(), json!([r["status"], r["amount"]])))
                .collect();
            let intents: BTreeMap<String, Value> = s
                .intents
                .values()
                .filter(|i| i["customer"] == customer)
                .map(|i| (i["id"].as_str().unwrap_or("").to_owned(), i["status"].clone()))
                .collect();
            json!({"customer_deleted": deleted, "subscriptions": subs, "invoices": invoices, "disputes": disputes, "refunds": refunds,
                "payment_intents": intents})
        })
    }
}

