//! The simulator's clock, as a Stripe test clock runs it: advancing it performs, in time
//! order, everything that falls due on the way — trial warnings and trial ends, upcoming
//! renewal notices, renewals (a draft invoice finalized an hour later), Smart Retries and
//! flexible-mode cancels — each at its own moment. And the changes that depend on time:
//! price changes under each proration mode, and what a trial does without a card.

use serde_json::{Value, json};

pub use super::terms::{DRAFT_WINDOW, Proration, SmartRetries, TrialEnd};

use super::handle::StripeSim;
use super::state::Sim;
use super::terms::{DAY, PERIOD};

/// What falls due, and for which object.
#[derive(Debug, Clone)]
enum Due {
    CancelAt(String),
    TrialWarning(String),
    TrialEnd(String),
    Upcoming(String),
    Renewal(String),
    Finalize(String),
    Retry(String),
    /// An `incomplete` subscription's first invoice unpaid for 23 hours.
    ExpireIncomplete(String),
    /// A sent invoice unpaid at its due date.
    Overdue(String),
    /// A sent invoice's reminder, days before its due date.
    WillBeDue(String),
    /// An invoice's bank debit settles.
    DebitSettles(String),
}

impl Sim {
    /// The earliest thing due at or before `until`.
    fn next_due(&self, until: i64) -> Option<(i64, Due)> {
        let mut due: Vec<(i64, Due)> = Vec::new();
        for s in self.subs.values() {
            if s.status == "canceled" {
                continue;
            }
            if let Some(at) = s.cancel_at {
                due.push((at, Due::CancelAt(s.id.clone())));
            }
            match s.status.as_str() {
                "incomplete" => {
                    let first = self.invoices.values().find(|i| i["billing_reason"] == "subscription_create"
                        && i["parent"]["subscription_details"]["subscription"] == s.id.as_str());
                    if let Some(at) = first.and_then(|i| self.incomplete_expiry(i)) {
                        due.push((at, Due::ExpireIncomplete(s.id.clone())));
                    }
                }
                "trialing" => {
                    let end = s.trial_end.unwrap_or(self.clock);
                    if !s.trial_warned {
                        due.push((end - 3 * DAY, Due::TrialWarning(s.id.clone())));
                    }
                    // The trial's end creates an invoice charged automatically (unless it
                    // pauses or cancels for want of a card): announced like a renewal.
                    let invoices = self.cards.contains(&s.customer) || s.trial_end_behavior == TrialEnd::CreateInvoice;
                    let announce = end - self.upcoming_days * DAY;
                    // A trial shorter than the notice gets none.
                    if invoices && self.upcoming_days > 0 && s.upcoming_sent != Some(end) && announce >= self.clock {
                        due.push((announce, Due::Upcoming(s.id.clone())));
                    }
                    due.push((end, Due::TrialEnd(s.id.clone())));
                }
                "active" | "past_due" => {
                    let renews = !s.cancel_at_period_end && s.cancel_at.is_none_or(|at| at > s.period_end);
                    if renews && self.upcoming_days > 0 && s.upcoming_sent != Some(s.period_end) {
                        due.push((s.period_end - self.upcoming_days * DAY, Due::Upcoming(s.id.clone())));
                    }
                    due.push((s.period_end, Due::Renewal(s.id.clone())));
                }
                _ => {}
            }
        }
        due.extend(self.drafts.iter().map(|(id, at)| (*at, Due::Finalize(id.clone()))));
        due.extend(self.debits_due().map(|(at, id)| (at, Due::DebitSettles(id))));
        for inv in self.invoices.values().filter(|i| i["status"] == "open" && i["collection_method"] == "send_invoice") {
            let id = inv["id"].as_str().unwrap_or("").to_owned();
            let remind = inv["customer"].as_str().and_then(|c| self.due_reminders.get(c));
            if let (false, Some(days), Some(at)) = (self.reminded.contains(&id), remind, inv["due_date"].as_i64()) {
                // Not for an invoice sent inside the reminder's window.
                let at = at - days * DAY;
                if at >= inv["created"].as_i64().unwrap_or(i64::MAX) {
                    due.push((at, Due::WillBeDue(id.clone())));
                }
            }
            if let (false, Some(at)) = (self.overdue.contains(&id), inv["due_date"].as_i64()) {
                due.push((at, Due::Overdue(id)));
            }
        }
        for inv in self.invoices.values().filter(|i| i["status"] == "open") {
            let retries = inv["customer"].as_str().is_some_and(|c| self.smart_retries.contains_key(c));
            if let (true, Some(at)) = (retries, inv["next_payment_attempt"].as_i64()) {
                due.push((at, Due::Retry(inv["id"].as_str().unwrap_or("").to_owned())));
            }
        }
        // The first listed wins a tie: a cancel before a renewal at the same moment.
        due.into_iter().filter(|(at, _)| *at <= until).min_by_key(|(at, _)| *at)
    }

    /// Runs the clock to `until`, doing what falls due on the way at its own time.
    /// A price change now (the dashboard's, or `POST /v1/subscriptions/{id}`'s): the
    /// prorated difference in cents, pending, invoiced now or dropped as `proration` says.
    pub(super) fn reprice(&mut self, sub: &str, price: (&'static str, &'static str, i64), proration: Proration) -> i64 {
        let now = self.clock;
        let Some(x) = self.subs.get_mut(sub) else { return 0 };
        let remaining = (x.period_end - now).clamp(0, PERIOD);
        let prorated = ((price.2 - x.price.2) as f64 * remaining as f64 / PERIOD as f64).round() as i64;
        x.price = price;
        if proration == Proration::CreateProrations {
            x.pending_proration += prorated;
        }
        self.emit_sub("customer.subscription.updated", sub);
        if proration == Proration::AlwaysInvoice {
            self.bill(sub, prorated, "subscription_update");
        }
        prorated
    }

    pub(super) fn advance_to(&mut self, until: i64) {
        while let Some((at, due)) = self.next_due(until) {
            self.clock = self.clock.max(at);
            self.run(due);
        }
        self.clock = self.clock.max(until);
    }

    fn run(&mut self, due: Due) {
        match due {
            Due::CancelAt(id) => {
                // Flexible mode: it ends at cancel_at, not at a period end.
                self.end_sub(&id, "cancellation_requested");
                self.emit_sub("customer.subscription.deleted", &id);
            }
            Due::TrialWarning(id) => {
                self.subs.get_mut(&id).expect("sub").trial_warned = true;
                self.emit_sub("customer.subscription.trial_will_end", &id);
            }
            Due::TrialEnd(id) => self.end_trial(&id),
            Due::Upcoming(id) => self.upcoming(&id),
            Due::Renewal(id) => self.renew(&id),
            Due::Finalize(id) => self.finalize(&id),
            Due::Retry(id) => self.pay(&id),
            Due::ExpireIncomplete(id) => self.expire_incomplete(&id),
            Due::Overdue(id) => self.overdue(&id),
            Due::DebitSettles(id) => self.settle_debit(&id),
            Due::WillBeDue(id) => {
                self.reminded.insert(id.clone());
                let inv = self.invoices[&id].clone();
                self.emit("invoice.will_be_due", inv);
            }
        }
    }

    fn end_trial(&mut self, id: &str) {
        let sub = self.subs[id].clone();
        let end = sub.trial_end.unwrap_or(self.clock);
        let has_card = self.cards.contains(&sub.customer);
        match (has_card, sub.trial_end_behavior) {
            (false, TrialEnd::Pause) => {
                self.subs.get_mut(id).expect("sub").status = "paused".into();
                self.emit_sub("customer.subscription.updated", id);
                self.emit_sub("customer.subscription.paused", id);
            }
            (false, TrialEnd::Cancel) => {
                self.end_sub(id, "cancellation_requested");
                self.emit_sub("customer.subscription.deleted", id);
            }
            // With a card, or Stripe's default without one: active, and invoiced (a payment
            // with no card fails and the subscription goes past_due).
            _ => {
                let x = self.subs.get_mut(id).expect("sub");
                x.status = "active".into();
                x.period_end = end + PERIOD;
                self.emit_sub("customer.subscription.updated", id);
                self.bill(id, sub.recurring_amount(), "subscription_cycle");
            }
        }
    }

    /// `invoice.upcoming`: a preview of the renewal invoice, which has no id yet.
    fn upcoming(&mut self, id: &str) {
        let s = self.subs.get_mut(id).expect("sub");
        s.upcoming_sent = Some(s.period_end);
        let s = s.clone();
        let total = s.recurring_amount() - s.price.2 + s.pending_price.unwrap_or(s.price).2 + s.pending_proration;
        let balance = self.balances.get(&s.customer).copied().unwrap_or(0);
        let preview = json!({
            "object": "invoice", "customer": s.customer, "status": "draft", "amount_due": (total + balance).max(0), "amount_paid": 0,
            "total": total, "starting_balance": balance, "currency": "usd", "attempt_count": 0, "attempted": false,
            "billing_reason": "upcoming", "next_payment_attempt": s.period_end, "period_end": s.period_end, "created": self.clock,
            "livemode": false, "parent": {"type": "subscription_details", "subscription_details": {"subscription": s.id, "metadata": {}}},
            "lines": {"object": "list", "has_more": false, "data": []},
        });
        self.emit("invoice.upcoming", preview);
    }

    /// <https://docs.stripe.com/billing/subscriptions/overview#payment-window>: a first
    /// invoice unpaid 23 hours after the subscription was created expires it
    /// (`incomplete_expired`, terminal) and voids the invoice.
    fn expire_incomplete(&mut self, id: &str) {
        let open: Vec<String> = self.invoices.values()
            .filter(|i| i["status"] == "open" && i["parent"]["subscription_details"]["subscription"] == id)
            .filter_map(|i| i["id"].as_str().map(str::to_owned)).collect();
        for invoice in open {
            let inv = self.invoices.get_mut(&invoice).expect("invoice");
            inv["status"] = json!("void");
            inv["next_payment_attempt"] = Value::Null;
            let inv = inv.clone();
            self.emit("invoice.voided", inv);
        }
        self.subs.get_mut(id).expect("sub").status = "incomplete_expired".into();
        self.emit_sub("customer.subscription.updated", id);
    }

    /// <https://docs.stripe.com/billing/collection-method#send-invoice>: a sent invoice
    /// unpaid at its due date is overdue (`invoice.overdue`) and its subscription `past_due`.
    fn overdue(&mut self, invoice: &str) {
        self.overdue.insert(invoice.to_owned());
        let inv = self.invoices[invoice].clone();
        self.emit("invoice.overdue", inv.clone());
        let sub = inv["parent"]["subscription_details"]["subscription"].as_str().unwrap_or("").to_owned();
        if self.subs.get(&sub).is_some_and(|s| s.status == "active") {
            self.subs.get_mut(&sub).expect("sub").status = "past_due".into();
            self.emit_sub("customer.subscription.updated", &sub);
        }
    }

    fn renew(&mut self, id: &str) {
        let sub = self.subs[id].clone();
        if sub.cancel_at_period_end {
            self.end_sub(id, "cancellation_requested");
            self.emit_sub("customer.subscription.deleted", id);
            return;
        }
        let x = self.subs.get_mut(id).expect("sub");
        if let Some(p) = x.pending_price.take() {
            x.price = p;
        }
        x.period_end += PERIOD;
        let total = x.recurring_amount() + std::mem::take(&mut x.pending_proration);
        self.emit_sub("customer.subscription.updated", id);
        self.bill(id, total, "subscription_cycle");
    }
}

impl StripeSim {
    /// Moves the clock forward `days`, doing what falls due on the way in time order.
    pub fn advance_days(&self, days: i64) {
        self.with(|s| s.advance_to(s.clock + days * DAY))
    }

    /// Moves the clock forward `hours` (a renewal's draft is finalized an hour after it opens).
    pub fn advance_hours(&self, hours: i64) {
        self.with(|s| s.advance_to(s.clock + hours * 3600))
    }

    /// Sets the subscription's trial-end behaviour without a payment method.
    pub fn set_trial_end(&self, sub: &str, behavior: TrialEnd) {
        self.with(|s| {
            s.subs.get_mut(sub).expect("sub").trial_end_behavior = behavior;
            s.emit_sub("customer.subscription.updated", sub);
        })
    }

    /// Turns on Smart Retries for `customer`'s invoices.
    pub fn smart_retries(&self, customer: &str, retries: SmartRetries) {
        self.with(|s| s.smart_retries.insert(customer.to_owned(), retries));
    }

    /// Days before a renewal that `invoice.upcoming` is sent (0: never).
    pub fn set_upcoming_days(&self, days: i64) {
        self.with(|s| s.upcoming_days = days);
    }

    /// Changes the price now with `proration`: the unused part of the old price is credited
    /// and the rest of the period charged at the new one, pro rata by the second.
    pub fn change_price(&self, sub: &str, price: (&'static str, &'static str, i64), proration: Proration) -> i64 {
        self.with(|s| s.reprice(sub, price, proration))
    }

    /// The customer's balance in cents (negative: credit for the next invoice).
    pub fn balance(&self, customer: &str) -> i64 {
        self.with(|s| s.balances.get(customer).copied().unwrap_or(0))
    }

    /// `Stripe-Version` values seen on API calls that were not the pinned version.
    pub fn wrong_versions(&self) -> Vec<String> {
        self.with(|s| s.wrong_versions.clone())
    }
}
