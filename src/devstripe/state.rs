//! The simulated account's state — customers, subscriptions, invoices, charges, disputes,
//! the clock — and the steps every scenario shares: emitting an event, billing, finalizing
//! and paying an invoice.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::terms::{DAY, DRAFT_WINDOW, SmartRetries, TrialEnd};

#[derive(Debug, Clone)]
pub(super) struct Sub {
    pub(super) id: String,
    pub(super) customer: String,
    pub(super) tenant: String,
    pub(super) price: (&'static str, &'static str, i64),
    pub(super) status: String,
    pub(super) period_end: i64,
    pub(super) trial_end: Option<i64>,
    pub(super) cancel_at_period_end: bool,
    /// Flexible billing mode's cancel time (`cancel_at_period_end` stays false).
    pub(super) cancel_at: Option<i64>,
    /// When it was canceled, and why (`cancellation_details.reason`).
    pub(super) canceled: Option<(i64, &'static str)>,
    /// A metered usage item listed before the plan's licensed item.
    pub(super) metered_first: bool,
    pub(super) pending_price: Option<(&'static str, &'static str, i64)>,
    /// What the trial's end does without a payment method
    /// (`trial_settings.end_behavior.missing_payment_method`).
    pub(super) trial_end_behavior: TrialEnd,
    /// `customer.subscription.trial_will_end` sent.
    pub(super) trial_warned: bool,
    /// The period end whose `invoice.upcoming` was sent.
    pub(super) upcoming_sent: Option<i64>,
    /// Proration items (`create_prorations`) waiting for the next renewal invoice, in cents.
    pub(super) pending_proration: i64,
    /// Add-on items beside the plan's (extra seats), each with its quantity; `listed_first`
    /// puts one before the plan's item (Stripe keeps no item order).
    pub(super) addons: Vec<AddonItem>,
    /// Why Stripe paused it (`status_details.paused.subscription.type`).
    pub(super) paused_by: Option<&'static str>,
    /// `pause_collection.behavior`, while collection is paused.
    pub(super) pause_collection: Option<&'static str>,
    /// `collection_method = send_invoice` with this many `days_until_due`; `None`: charged
    /// automatically.
    pub(super) send_invoice_days: Option<i64>,
}

/// An add-on item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct AddonItem {
    pub(super) price: String,
    pub(super) product: String,
    pub(super) unit_amount: i64,
    pub(super) quantity: i64,
    pub(super) listed_first: bool,
}

impl Sub {
    /// What a renewal charges: the plan's price and every add-on's, times its quantity.
    pub(super) fn recurring_amount(&self) -> i64 {
        self.price.2 + self.addons.iter().map(|a| a.unit_amount * a.quantity).sum::<i64>()
    }
}

#[derive(Default)]
pub(super) struct Sim {
    /// Every API answer waits this long (a slow Stripe).
    pub(super) latency: std::time::Duration,
    /// Every n-th API request is never answered (0: all are); it has no effect either.
    pub(super) hang_every: u64,
    /// API requests seen.
    pub(super) requests: u64,
    pub(super) clock: i64,
    pub(super) seq: u64,
    pub(super) customers: BTreeMap<String, Value>,
    pub(super) cards: BTreeSet<String>,
    /// Customers whose card is their own default (`invoice_settings.default_payment_method`),
    /// not the subscription's.
    pub(super) customer_cards: BTreeSet<String>,
    /// Customers whose bank asks for 3-D Secure on every payment (`requires_action`).
    pub(super) needs_action: BTreeSet<String>,
    pub(super) declining: BTreeSet<String>,
    pub(super) subs: BTreeMap<String, Sub>,
    pub(super) invoices: BTreeMap<String, Value>,
    pub(super) charges: BTreeMap<String, Value>,
    /// Disputes by id.
    pub(super) disputes: BTreeMap<String, Value>,
    pub(super) events: Vec<Value>,
    /// Decline code per declining customer (default insufficient_funds).
    pub(super) decline_codes: BTreeMap<String, String>,
    /// API calls that change state: (what, id, day of the clock), once per idempotency key.
    pub(super) calls: Vec<(String, String, i64)>,
    /// Idempotency key → the answer given.
    pub(super) idempotent: BTreeMap<String, (StatusCode, Value)>,
    /// Meter events accepted: identifier → (event name, customer, value).
    pub(super) meter_events: BTreeMap<String, (String, String, i64)>,
    /// The next meter-event requests answer this status without recording (count, status).
    pub(super) meter_failures: (u32, u16),
    /// Price reads answer 500 while set (an outage of the catalogue's source).
    pub(super) prices_down: bool,
    /// Every event ever emitted (what the List Events API serves), oldest first.
    pub(super) log: Vec<Value>,
    /// Events the test delivered to Ballast (`delivery_success=true` at Stripe).
    pub(super) delivered: BTreeSet<String>,
    /// Price reads answered.
    pub(super) price_reads: u64,
    /// Smart Retries per customer (the account's setting, held per customer so tests sharing
    /// one simulator do not interfere); none: Stripe does not retry, Ballast's dunning does.
    pub(super) smart_retries: BTreeMap<String, SmartRetries>,
    /// Draft invoices and when Stripe finalizes them (an hour after a renewal creates them).
    pub(super) drafts: BTreeMap<String, i64>,
    /// Customer balances in cents (negative: credit, applied to the next invoice).
    pub(super) balances: BTreeMap<String, i64>,
    /// Days before a renewal that `invoice.upcoming` is sent (the account's "upcoming renewal
    /// events" setting; 0: not sent).
    pub(super) upcoming_days: i64,
    /// `Stripe-Version` headers that were not the pinned version (or absent).
    pub(super) wrong_versions: Vec<String>,
    /// Sent invoices whose `invoice.overdue` was emitted.
    pub(super) overdue: BTreeSet<String>,
    /// Days before a sent invoice's due date that `invoice.will_be_due` is sent, per customer
    /// (the account's Automations reminder, held per customer like Smart Retries).
    pub(super) due_reminders: BTreeMap<String, i64>,
    /// Sent invoices whose `invoice.will_be_due` was emitted.
    pub(super) reminded: BTreeSet<String>,
    /// Customers who pay by bank debit: (days a debit takes to settle, whether it succeeds).
    pub(super) bank_debits: BTreeMap<String, (i64, bool)>,
    /// The payment intents of bank debits, by id.
    pub(super) intents: BTreeMap<String, Value>,
    /// Each debited invoice's debit.
    pub(super) debits: BTreeMap<String, super::terms::Debit>,
    /// Checkout sessions completed `unpaid`, waiting on their first debit, by subscription.
    pub(super) debit_sessions: BTreeMap<String, Value>,
    /// The outcome of the debit being settled, for the `pay` it runs (never kept).
    pub(super) settling_outcome: Option<bool>,
    /// Refunds by id.
    pub(super) refunds: BTreeMap<String, Value>,
    /// Customers whose subscriptions pause at the first failed renewal payment.
    pub(super) pause_first_failure: BTreeSet<String>,
}

impl Sim {
    pub(super) fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_sim{:06}{}", self.seq, &uuid::Uuid::new_v4().simple().to_string()[..8])
    }

    /// Records an event at the clock's second, then moves the clock on a second: the events of
    /// one step are spread over seconds as Stripe's are, so no ordering bug hides behind a tie.
    pub(super) fn emit(&mut self, event_type: &str, object: Value) {
        let id = self.id("evt");
        self.events.push(json!({
            "id": id, "object": "event", "api_version": crate::stripe_api::StripeApi::api_version(), "created": self.clock,
            "data": {"object": Self::rendered(object)}, "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null}, "type": event_type,
        }));
        let emitted = self.events.last().cloned().unwrap_or_default();
        self.log.push(emitted);
        self.clock += 1;
    }

    pub(super) fn sub_json(&self, s: &Sub) -> Value {
        json!({
            "id": s.id, "object": "subscription", "customer": s.customer, "status": s.status,
            "cancel_at_period_end": s.cancel_at_period_end, "cancel_at": s.cancel_at, "created": self.clock, "currency": "usd",
            "canceled_at": s.canceled.map(|c| c.0), "ended_at": s.canceled.map(|c| c.0),
            "cancellation_details": {"comment": null, "feedback": null, "reason": s.canceled.map(|c| c.1)},
            "billing_mode": {"type": if s.cancel_at.is_some() { "flexible" } else { "classic" }},
            "trial_end": s.trial_end,
            "collection_method": if s.send_invoice_days.is_some() { "send_invoice" } else { "charge_automatically" },
            "days_until_due": s.send_invoice_days,
            "status_details": s.paused_by.map(|why| json!({"paused": {"subscription": {"type": why}}})),
            "pause_collection": s.pause_collection.map(|b| json!({"behavior": b, "resumes_at": null})),
            "default_payment_method": if self.cards.contains(&s.customer) && !self.customer_cards.contains(&s.customer) { json!(format!("pm_{}", s.customer)) } else { Value::Null },
            "metadata": {"tenant_id": s.tenant}, "livemode": false,
            "items": {"object": "list", "has_more": false, "data": self.items_json(s)},
        })
    }

    pub(super) fn emit_sub(&mut self, event_type: &str, sub_id: &str) {
        let obj = self.sub_json(&self.subs[sub_id].clone());
        self.emit(event_type, obj);
    }

    /// Creates an invoice for `total` (the customer's balance applied) and finalizes it: at once
    /// for a new subscription or a change, an hour later for a renewal (Stripe's draft window,
    /// when the invoice can still be edited). A finalized invoice with nothing due is paid
    /// without a payment attempt; any other is charged.
    pub(super) fn bill(&mut self, sub_id: &str, total: i64, reason: &str) -> String {
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
            "collection_method": if s.send_invoice_days.is_some() { "send_invoice" } else { "charge_automatically" },
            "due_date": s.send_invoice_days.map(|d| self.clock + d * DAY),
            "hosted_invoice_url": format!("https://invoice.stripe.com/i/acct_sim/{id}"),
        });
        self.invoices.insert(id.clone(), inv.clone());
        self.emit("invoice.created", inv);
        if reason == "subscription_cycle" {
            self.drafts.insert(id.clone(), self.clock + DRAFT_WINDOW);
        } else {
            self.finalize(&id);
        }
        id
    }

    /// Finalizes a draft: open, the balance taken, then paid (nothing due) or charged.
    pub(super) fn finalize(&mut self, invoice: &str) {
        self.drafts.remove(invoice);
        let inv = self.invoices.get_mut(invoice).expect("invoice");
        inv["status"] = json!("open");
        let customer = inv["customer"].as_str().unwrap_or("").to_owned();
        let (ending, due) = (inv["ending_balance"].as_i64().unwrap_or(0), inv["amount_due"].as_i64().unwrap_or(0));
        let inv = inv.clone();
        self.balances.insert(customer, ending);
        let sent = inv["collection_method"] == "send_invoice";
        self.emit("invoice.finalized", inv.clone());
        if due > 0 && sent {
            // Emailed to the customer, who pays it by its due date; Stripe charges nothing.
            self.emit("invoice.sent", inv);
        } else if due > 0 {
            self.pay(invoice);
        } else {
            let inv = self.invoices.get_mut(invoice).expect("invoice");
            inv["status"] = json!("paid");
            let inv = inv.clone();
            self.emit("invoice.paid", inv);
        }
    }

    pub(super) fn pay(&mut self, invoice: &str) {
        let customer = self.invoices[invoice]["customer"].as_str().expect("customer").to_owned();
        // A bank debit is attempted now and settles days later (`bank_debit`), which pays or
        // fails the invoice through here again.
        let settled = self.settling_outcome.take();
        if let (None, Some((days, _))) = (settled, self.bank_debits.get(&customer).copied()) {
            if !matches!(self.debits.get(invoice), Some(super::terms::Debit::Settling { .. })) {
                self.start_debit(invoice, days);
            }
            return;
        }
        let sub_id = self.invoices[invoice]["parent"]["subscription_details"]["subscription"].as_str().expect("sub").to_owned();
        let inv = self.invoices.get_mut(invoice).expect("invoice");
        let attempts = inv["attempt_count"].as_i64().unwrap_or(0) + 1;
        inv["attempt_count"] = json!(attempts);
        inv["attempted"] = json!(true);
        let amount = inv["amount_due"].as_i64().unwrap_or(0);
        let needs_action = self.needs_action.contains(&customer);
        let declines = match settled {
            Some(succeeded) => !succeeded,
            None => !self.cards.contains(&customer) || self.declining.contains(&customer) || needs_action,
        };
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
            let first = self.invoices[invoice]["billing_reason"] == "subscription_create";
            let s = self.subs.get_mut(&sub_id).expect("sub");
            if first && s.status == "active" {
                // A new subscription whose first payment fails does not start: `incomplete`
                // until it is paid, `incomplete_expired` after 23 hours.
                s.status = "incomplete".into();
                self.emit_sub("customer.subscription.updated", &sub_id);
            } else if matches!(s.status.as_str(), "active" | "trialing") {
                s.status = "past_due".into();
                self.emit_sub("customer.subscription.updated", &sub_id);
            }
            let renewal = self.invoices[invoice]["billing_reason"] == "subscription_cycle";
            if attempts == 1 && renewal && self.pause_first_failure.contains(&customer) {
                self.pause_for_failure(invoice, &sub_id, "first_payment_failure");
            } else if let Some(r) = retry.filter(|_| next.is_none()) {
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
            if matches!(s.status.as_str(), "past_due" | "incomplete") {
                s.status = "active".into();
                self.emit_sub("customer.subscription.updated", &sub_id);
            }
        }
    }
}

/// The request's `Idempotency-Key`: a repeat of a keyed request gets the first answer.
pub(super) fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
}
