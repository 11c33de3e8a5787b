//! Bank debits (ACH, SEPA): a payment that is `processing` for days before it settles.
//! <https://docs.stripe.com/billing/subscriptions/overview>: a subscription can be
//! `incomplete` while its first payment is pending (the payment intent `processing`), and
//! Stripe's 23-hour window applies to a payment intent not confirmed in time — a processing one
//! has been. <https://docs.stripe.com/payments/payment-intents/verifying-status>:
//! `payment_intent.processing`, then `payment_intent.succeeded` or
//! `payment_intent.payment_failed`. <https://docs.stripe.com/payments/checkout/how-checkout-works>
//! (delayed notification methods): the session completes `unpaid`, then
//! `checkout.session.async_payment_succeeded` or `_failed`.
//!
//! The simulator's reading where the pages are silent: a failed debit leaves a new subscription
//! `incomplete`, its 23-hour window counted from the failure (time to pay another way).

use serde_json::{Value, json};

use super::handle::StripeSim;
use super::state::Sim;
use super::terms::{DAY, Debit, INCOMPLETE_WINDOW};

impl Sim {
    /// Starts the debit of `invoice` for its customer, who pays by bank debit settling after
    /// `days`: the payment intent is `processing`, the invoice stays open.
    pub(super) fn start_debit(&mut self, invoice: &str, days: i64) {
        let inv = &self.invoices[invoice];
        let customer = inv["customer"].clone();
        let amount = inv["amount_due"].clone();
        let intent = format!("pi_{}", &invoice[3..]);
        let pi = json!({"id": intent, "object": "payment_intent", "customer": customer, "amount": amount, "currency": "usd",
            "status": "processing", "payment_method_types": ["us_bank_account"], "created": self.clock, "livemode": false,
            "last_payment_error": null, "processing": {"type": "us_bank_account"}, "metadata": {}});
        self.intents.insert(intent, pi.clone());
        self.debits.insert(invoice.to_owned(), Debit::Settling { at: self.clock + days * DAY });
        self.emit("payment_intent.processing", pi);
    }

    /// The invoice's debit settles now: the payment intent's outcome, the invoice paid or
    /// failed as a card payment is, and the checkout that started it told.
    pub(super) fn settle_debit(&mut self, invoice: &str) {
        let customer = self.invoices[invoice]["customer"].as_str().unwrap_or_default().to_owned();
        let succeeds = self.bank_debits.get(&customer).is_none_or(|d| d.1);
        let intent = format!("pi_{}", &invoice[3..]);
        if let Some(pi) = self.intents.get_mut(&intent) {
            pi["status"] = json!(if succeeds { "succeeded" } else { "requires_payment_method" });
            pi["processing"] = Value::Null;
            if !succeeds {
                pi["last_payment_error"] = json!({"type": "card_error", "code": "payment_method_provider_decline", "decline_code": "insufficient_funds",
                    "payment_method": {"type": "us_bank_account"}});
            }
            let pi = pi.clone();
            self.emit(if succeeds { "payment_intent.succeeded" } else { "payment_intent.payment_failed" }, pi);
        }
        self.debits.insert(invoice.to_owned(), if succeeds { Debit::Paid } else { Debit::Failed { at: self.clock } });
        self.settling_outcome = Some(succeeds);
        self.pay(invoice);
        let sub = self.invoices[invoice]["parent"]["subscription_details"]["subscription"].as_str().unwrap_or_default().to_owned();
        if let Some(mut session) = self.debit_sessions.remove(&sub) {
            session["payment_status"] = json!(if succeeds { "paid" } else { "unpaid" });
            let kind = if succeeds { "checkout.session.async_payment_succeeded" } else { "checkout.session.async_payment_failed" };
            self.emit(kind, session);
        }
    }

    /// When an `incomplete` subscription whose first invoice is `first` expires: 23 hours after
    /// the invoice, or after its debit failed; never while the debit is in flight.
    pub(super) fn incomplete_expiry(&self, first: &Value) -> Option<i64> {
        match first["id"].as_str().and_then(|id| self.debits.get(id)) {
            Some(Debit::Settling { .. } | Debit::Paid) => None,
            Some(Debit::Failed { at }) => Some(at + INCOMPLETE_WINDOW),
            None => first["created"].as_i64().map(|c| c + INCOMPLETE_WINDOW),
        }
    }

    /// Debits in flight and when they settle.
    pub(super) fn debits_due(&self) -> impl Iterator<Item = (i64, String)> + '_ {
        self.debits.iter().filter_map(|(inv, d)| match d {
            Debit::Settling { at } => Some((*at, inv.clone())),
            _ => None,
        })
    }
}

impl StripeSim {
    /// The customer pays by bank debit from now on: each payment is `processing` for
    /// `settle_days`, then succeeds or fails (`None`: back to the card, if any).
    pub fn pay_by_bank_debit(&self, customer: &str, debit: Option<(i64, bool)>) {
        self.with(|s| match debit {
            Some(d) => {
                s.bank_debits.insert(customer.to_owned(), d);
            }
            None => {
                s.bank_debits.remove(customer);
            }
        })
    }
}
