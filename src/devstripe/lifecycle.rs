//! What the simulator does that Stripe does when things go wrong or change shape: flexible
//! cancels (`cancel_at`), Smart Retries running out and Stripe giving up (the subscription
//! canceled or `unpaid`, the invoice `uncollectible` or `void`), disputes and inquiries, 3-D Secure, a card held on
//! the customer rather than the subscription, and a metered item listed before the plan.

use serde_json::{Value, json};

pub use super::terms::{DisputeOutcome, GiveUp};

use super::handle::StripeSim;
use super::state::{Sim, Sub};
use super::terms::PERIOD;

impl Sim {
    /// One step of a dispute, a few seconds after the last (Stripe's steps are not
    /// simultaneous, and the mirror orders them by time).
    fn dispute_step(&mut self, id: &str, event: &str, status: &str) {
        self.clock += 5;
        let d = self.disputes.get_mut(id).expect("dispute");
        d["status"] = json!(status);
        let d = d.clone();
        self.emit(event, d);
    }

    /// What Stripe does when retries run out on `invoice` (Billing settings, "Manage failed
    /// payments"): the invoice marked uncollectible or voided, the subscription canceled,
    /// `unpaid`, or left `past_due`.
    pub(super) fn give_up_on(&mut self, invoice: &str, how: GiveUp) {
        let sub = self.invoices[invoice]["parent"]["subscription_details"]["subscription"].as_str().expect("sub").to_owned();
        let inv = self.invoices.get_mut(invoice).expect("invoice");
        inv["next_payment_attempt"] = Value::Null;
        if how == GiveUp::Pause {
            self.pause_for_failure(invoice, &sub, "final_payment_failure");
            return;
        }
        let (status, event) = if how == GiveUp::StayPastDueVoid { ("void", "invoice.voided") } else { ("uncollectible", "invoice.marked_uncollectible") };
        inv["status"] = json!(status);
        let inv = inv.clone();
        self.emit("invoice.updated", inv.clone());
        self.emit(event, inv);
        match how {
            GiveUp::Cancel => {
                self.end_sub(&sub, "payment_failed");
                self.emit_sub("customer.subscription.deleted", &sub);
            }
            GiveUp::Unpaid => {
                self.subs.get_mut(&sub).expect("sub").status = "unpaid".into();
                self.emit_sub("customer.subscription.updated", &sub);
            }
            GiveUp::StayPastDueVoid | GiveUp::Pause => {}
        }
    }

    /// Pauses `sub` after its invoice's payment failed (`first_payment_failure` or
    /// `final_payment_failure`): no more tries; the invoice remains collectible.
    pub(super) fn pause_for_failure(&mut self, invoice: &str, sub: &str, why: &'static str) {
        let inv = self.invoices.get_mut(invoice).expect("invoice");
        inv["next_payment_attempt"] = Value::Null;
        let inv = inv.clone();
        self.emit("invoice.updated", inv);
        let s = self.subs.get_mut(sub).expect("sub");
        s.status = "paused".into();
        s.paused_by = Some(why);
        self.emit_sub("customer.subscription.updated", sub);
        self.emit_sub("customer.subscription.paused", sub);
    }

    /// Ends a subscription now, as Stripe records it (`canceled_at`, `ended_at`, the reason).
    pub(super) fn end_sub(&mut self, id: &str, reason: &'static str) {
        let now = self.clock;
        let s = self.subs.get_mut(id).expect("sub");
        s.status = "canceled".into();
        s.canceled = Some((now, reason));
    }

    /// The items: the plan's licensed price, after a metered usage price when asked.
    pub(super) fn items_json(&self, s: &Sub) -> Value {
        let item = |suffix: &str, price: Value| {
            json!({"id": format!("si_{}{suffix}", s.id), "object": "subscription_item", "quantity": 1, "subscription": s.id,
                   "current_period_start": s.period_end - PERIOD, "current_period_end": s.period_end, "price": price})
        };
        let licensed = |price: &str, product: &str, amount: i64| {
            let (currency, interval) = super::terms::terms_of(price);
            json!({"id": price, "object": "price", "product": product, "unit_amount": amount, "currency": currency,
                "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed"}})
        };
        let plan = item("", licensed(s.price.0, s.price.1, s.price.2));
        let addon = |a: &super::state::AddonItem| {
            let mut it = item(&format!("_{}", a.product), licensed(&a.price, &a.product, a.unit_amount));
            it["quantity"] = json!(a.quantity);
            it
        };
        let mut items: Vec<Value> = s.addons.iter().filter(|a| a.listed_first).map(addon).collect();
        if s.metered_first {
            items.push(item("_usage", json!({"id": "price_api_calls_metered", "object": "price", "product": "prod_api_calls",
                "unit_amount": 1, "currency": "usd", "recurring": {"interval": "month", "interval_count": 1, "usage_type": "metered", "meter": "mtr_api_calls"}})));
        }
        items.push(plan);
        items.extend(s.addons.iter().filter(|a| !a.listed_first).map(addon));
        Value::Array(items)
    }
}

impl StripeSim {
    /// The customer as Stripe holds it now.
    pub fn customer_json(&self, customer: &str) -> Option<Value> {
        self.with(|s| s.customers.get(customer).cloned())
    }

    /// A flexible-mode cancel (the customer portal's, since 2025-09-30): `cancel_at` set to
    /// `at`, `cancel_at_period_end` false; the subscription ends when the clock reaches it.
    pub fn cancel_at(&self, sub: &str, at: i64) {
        self.with(|s| {
            let x = s.subs.get_mut(sub).expect("sub");
            x.cancel_at = Some(at);
            x.cancel_at_period_end = false;
            s.emit_sub("customer.subscription.updated", sub);
        })
    }

    /// Smart Retries ran out on `invoice`: Stripe applies the account's setting.
    pub fn give_up(&self, invoice: &str, how: GiveUp) {
        self.with(|s| s.give_up_on(invoice, how))
    }

    /// A cardholder disputes `charge`; Stripe withdraws the funds, the merchant answers, and the
    /// bank decides. The clock moves a few seconds per step. Returns the dispute id.
    pub fn dispute(&self, charge: &str, outcome: DisputeOutcome) -> String {
        self.with(|s| {
            let id = s.id("dp");
            let inquiry = outcome == DisputeOutcome::InquiryClosed;
            let amount = s.charges[charge]["amount"].clone();
            s.charges.get_mut(charge).expect("charge")["disputed"] = json!(true);
            s.disputes.insert(id.clone(), json!({"id": id, "object": "dispute", "charge": charge, "amount": amount, "currency": "usd",
                "status": "warning_needs_response", "reason": "fraudulent", "created": s.clock, "livemode": false, "is_charge_refundable": inquiry,
                "evidence_details": {"due_by": s.clock + 7 * 86_400, "has_evidence": false, "past_due": false, "submission_count": 0}}));
            match outcome {
                DisputeOutcome::InquiryClosed => {
                    // An inquiry: the bank asks, the merchant answers, no funds move.
                    s.dispute_step(&id, "charge.dispute.created", "warning_needs_response");
                    s.dispute_step(&id, "charge.dispute.updated", "warning_under_review");
                    s.dispute_step(&id, "charge.dispute.closed", "warning_closed");
                }
                DisputeOutcome::Won | DisputeOutcome::Lost => {
                    s.dispute_step(&id, "charge.dispute.created", "needs_response");
                    s.dispute_step(&id, "charge.dispute.funds_withdrawn", "needs_response");
                    s.dispute_step(&id, "charge.dispute.updated", "under_review");
                    if outcome == DisputeOutcome::Won {
                        s.dispute_step(&id, "charge.dispute.funds_reinstated", "under_review");
                    }
                    s.dispute_step(&id, "charge.dispute.closed", if outcome == DisputeOutcome::Won { "won" } else { "lost" });
                }
            }
            id
        })
    }

    /// The customer's bank asks for 3-D Secure on every payment from now on.
    pub fn require_action(&self, customer: &str, required: bool) {
        self.with(|s| if required { s.needs_action.insert(customer.to_owned()) } else { s.needs_action.remove(customer) });
    }

    /// The card is the customer's default (`invoice_settings.default_payment_method`), and
    /// subscriptions name none: Stripe charges the customer's.
    pub fn card_on_customer(&self, customer: &str) {
        self.with(|s| {
            s.cards.insert(customer.to_owned());
            s.customer_cards.insert(customer.to_owned());
            let c = s.customers.get_mut(customer).expect("customer");
            c["invoice_settings"] = json!({"default_payment_method": format!("pm_{customer}"), "custom_fields": null, "footer": null});
            let c = c.clone();
            s.emit("customer.updated", c);
        })
    }

    /// Resumes a paused subscription (the customer added a card, or paid): active again, a new
    /// period from now, as `POST /v1/subscriptions/{id}/resume` with
    /// `billing_cycle_anchor=now` does.
    pub fn resume(&self, sub: &str) {
        self.with(|s| {
            let now = s.clock;
            let x = s.subs.get_mut(sub).expect("sub");
            x.status = "active".into();
            x.paused_by = None;
            x.period_end = now + super::terms::PERIOD;
            s.emit_sub("customer.subscription.resumed", sub);
        })
    }

    /// The account pauses a subscription after its first failed renewal payment (flexible
    /// billing mode): for this customer's subscriptions.
    pub fn pause_on_first_failure(&self, customer: &str) {
        self.with(|s| s.pause_first_failure.insert(customer.to_owned()));
    }

    /// A refund fails after it was created (the card was closed, say): `status = failed` with
    /// its `failure_reason`, announced by `refund.failed`.
    pub fn fail_refund(&self, refund: &str) {
        self.with(|s| {
            let r = s.refunds.get_mut(refund).expect("refund");
            r["status"] = json!("failed");
            r["failure_reason"] = json!("expired_or_canceled_card");
            let r = r.clone();
            s.emit("refund.failed", r);
        })
    }

    /// The charge's refunds, oldest first.
    pub fn refunds_of(&self, charge: &str) -> Vec<String> {
        self.with(|s| s.refunds.values().filter(|r| r["charge"] == charge).filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
    }

    /// Switches the subscription to invoices sent rather than charged
    /// (`collection_method = send_invoice`), due `days_until_due` after they are sent.
    pub fn send_invoices(&self, sub: &str, days_until_due: i64) {
        self.with(|s| {
            s.subs.get_mut(sub).expect("sub").send_invoice_days = Some(days_until_due);
            s.emit_sub("customer.subscription.updated", sub);
        })
    }

    /// Sends `invoice.will_be_due` `days` before each of the customer's sent invoices falls due
    /// (the account's Automations reminder).
    pub fn remind_before_due(&self, customer: &str, days: i64) {
        self.with(|s| {
            s.due_reminders.insert(customer.to_owned(), days);
        })
    }

    /// Pauses collection (`pause_collection.behavior`: keep_as_draft, mark_uncollectible or
    /// void), or resumes it with `None`: the status and the access stay as they are.
    pub fn pause_collection(&self, sub: &str, behavior: Option<&'static str>) {
        self.with(|s| {
            s.subs.get_mut(sub).expect("sub").pause_collection = behavior;
            s.emit_sub("customer.subscription.updated", sub);
        })
    }

    /// Adds an add-on item (`price`: price, product, unit amount) with `quantity`, before the
    /// plan's item or after it: Stripe keeps no item order. As with `proration_behavior=none`,
    /// the add-on is billed from the next renewal.
    pub fn add_addon(&self, sub: &str, price: (&'static str, &'static str, i64), quantity: i64, listed_first: bool) {
        self.with(|s| {
            let item = super::state::AddonItem { price: price.0.into(), product: price.1.into(), unit_amount: price.2, quantity, listed_first };
            s.subs.get_mut(sub).expect("sub").addons.push(item);
            s.emit_sub("customer.subscription.updated", sub);
        })
    }

    /// Adds a metered usage item, listed before the plan's item (Stripe keeps no order).
    pub fn add_metered_item(&self, sub: &str) {
        self.with(|s| {
            s.subs.get_mut(sub).expect("sub").metered_first = true;
            s.emit_sub("customer.subscription.updated", sub);
        })
    }
}
