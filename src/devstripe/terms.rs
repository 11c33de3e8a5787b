//! The simulator's constants, and the account settings and outcomes a caller chooses: the
//! prices it sells, Smart Retries, what a trial's end does without a card, proration modes,
//! how Stripe gives up on an invoice, how a dispute ends.

pub const SECRET: &str = "whsec_test_simulator";
pub const API_KEY: &str = "sk_test_simulator";
pub const DAY: i64 = 86_400;
pub const PERIOD: i64 = 30 * DAY;

/// Prices the simulator sells: (price, product, amount in cents). They match policy/plans.toml.
pub const STARTER: (&str, &str, i64) = ("price_starter_monthly", "prod_starter", 2000);
pub const PRO: (&str, &str, i64) = ("price_pro_monthly", "prod_pro", 5000);
/// Starter billed yearly (ten months' price), and Pro billed in euros.
pub const STARTER_YEARLY: (&str, &str, i64) = ("price_starter_yearly", "prod_starter", 20000);
pub const PRO_EUR: (&str, &str, i64) = ("price_pro_monthly_eur", "prod_pro", 4500);

/// A price's currency and billing interval: the yearly and euro prices above say so in their
/// names; every other price the simulator sells is monthly, in US dollars.
pub(super) fn terms_of(price: &str) -> (&'static str, &'static str) {
    let currency = if price.ends_with("_eur") { "eur" } else { "usd" };
    let interval = if price.contains("_yearly") { "year" } else { "month" };
    (currency, interval)
}

/// Add-ons of policy/plans.toml: five extra seats per unit, and single sign-on.
pub const EXTRA_SEATS: (&str, &str, i64) = ("price_seats_monthly", "prod_extra_seats", 500);
pub const SSO_ADDON: (&str, &str, i64) = ("price_sso_monthly", "prod_sso", 1500);

/// How long a new subscription's first invoice may stay unpaid before the subscription expires
/// (`incomplete_expired`): 23 hours.
pub(super) const INCOMPLETE_WINDOW: i64 = 23 * 3600;

/// How long a renewal's invoice stays a draft before Stripe finalizes it (one hour).
pub const DRAFT_WINDOW: i64 = 3600;

/// `trial_settings.end_behavior.missing_payment_method`: what the trial's end does when the
/// customer has no payment method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TrialEnd {
    /// Stripe's default: the subscription goes active and invoices; the payment fails and it
    /// goes `past_due`.
    CreateInvoice,
    /// The subscription is `paused` until a payment method arrives.
    Pause,
    /// The subscription is canceled.
    Cancel,
}

/// The account's Smart Retries: retry a failed invoice `days` after each failed attempt, and
/// when the last retry fails, give up as `then` says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SmartRetries {
    /// Days from each failed attempt to the next (Stripe's custom schedule: up to 4 retries).
    pub days: Vec<i64>,
    pub then: GiveUp,
}

impl SmartRetries {
    /// Days until the next try after attempt number `attempts` (1 = the first) failed, or none
    /// when the schedule is spent.
    pub fn after_attempt(&self, attempts: i64) -> Option<i64> {
        usize::try_from(attempts - 1).ok().and_then(|i| self.days.get(i)).copied()
    }
}

/// `proration_behavior` on a price change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proration {
    /// Stripe's default: proration items wait for the next renewal invoice.
    CreateProrations,
    /// An invoice for the prorated difference now (a credit to the balance on a downgrade).
    AlwaysInvoice,
    /// No proration: the new price from the next renewal.
    None,
}

/// What Stripe does with a subscription when its retries run out (Billing settings,
/// "Manage failed payments").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GiveUp {
    /// Cancel the subscription; the invoice is marked uncollectible.
    Cancel,
    /// Leave the subscription `unpaid`; the invoice is marked uncollectible.
    Unpaid,
    /// Leave it `past_due`; the invoice is voided.
    StayPastDueVoid,
    /// Pause it (flexible billing mode, API 2026-09-30): `status = paused` with
    /// `status_details.paused.subscription.type = final_payment_failure`; the invoice stays
    /// open and collectible.
    Pause,
}

/// How a dispute ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeOutcome {
    /// The evidence convinced the bank: funds reinstated.
    Won,
    /// The cardholder keeps the money.
    Lost,
    /// An inquiry (`warning_needs_response`): no funds move, and it closes as `warning_closed`
    /// without becoming a chargeback.
    InquiryClosed,
}

/// Where an invoice's bank debit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Debit {
    /// In flight; settles at this time.
    Settling { at: i64 },
    /// Failed at this time.
    Failed { at: i64 },
    /// Settled and paid.
    Paid,
}
