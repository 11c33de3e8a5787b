//! The parts of Stripe's objects that Ballast mirrors, parsed leniently: the inbox must accept
//! whatever fields an API version adds or drops, so only what the mirror needs is read, and
//! everything else stays in the stored raw payload. An object that names its customer as an
//! Account (`customer_account`) is read as naming it as a customer.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer};

/// The id of a field that is either an id or an expanded object.
pub fn expandable_id(v: &serde_json::Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("id").and_then(|i| i.as_str()))
}

fn de_expandable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.as_ref().and_then(expandable_id).map(str::to_owned))
}

fn de_null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads a typed view of an event's object.
pub fn object<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    serde_json::from_value(with_customer_account(value.clone())).map_err(|e| format!("unexpected object shape: {e}"))
}

/// An object that names its customer as an Account (`customer_account`, Accounts v2) and not
/// as a `customer`: the account is its customer for the mirror and for routing, so either may
/// be the one present.
pub(super) fn with_customer_account(mut object: serde_json::Value) -> serde_json::Value {
    let named = object.get("customer").is_some_and(|c| !c.is_null());
    if !named && let Some(account) = object.get("customer_account").and_then(expandable_id).map(str::to_owned) {
        object["customer"] = serde_json::Value::String(account);
    }
    object
}

/// The parts of a customer that the mirror keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerObject {
    /// `cus_…`.
    pub id: String,
    /// Billing email.
    #[serde(default)]
    pub email: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// `tenant_id` set at checkout maps the customer to a tenant.
    #[serde(default, deserialize_with = "de_null_default")]
    pub metadata: HashMap<String, String>,
    /// True on a deleted customer.
    #[serde(default)]
    pub deleted: bool,
    /// Invoice settings: the customer's default payment method, which Stripe charges when the
    /// subscription names none.
    #[serde(default)]
    pub invoice_settings: Option<InvoiceSettingsObject>,
}

/// A customer's invoice settings.
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceSettingsObject {
    /// `pm_…`, if set.
    #[serde(default, deserialize_with = "de_expandable")]
    pub default_payment_method: Option<String>,
}

/// A subscription item's price.
#[derive(Debug, Clone, Deserialize)]
pub struct PriceObject {
    /// `price_…`.
    pub id: String,
    /// The product the price belongs to.
    #[serde(default, deserialize_with = "de_expandable")]
    pub product: Option<String>,
    /// How a recurring price bills (`usage_type`: `licensed` or `metered`).
    #[serde(default)]
    pub recurring: Option<RecurringObject>,
    /// The price per unit in the currency's minor unit; absent for tiered prices.
    #[serde(default)]
    pub unit_amount: Option<i64>,
    /// ISO 4217, lowercase.
    #[serde(default)]
    pub currency: Option<String>,
}

/// A recurring price's billing terms.
#[derive(Debug, Clone, Deserialize)]
pub struct RecurringObject {
    /// `licensed` (a quantity, the plan) or `metered` (usage reported to a meter).
    #[serde(default)]
    pub usage_type: Option<String>,
    /// `day`, `week`, `month` or `year`.
    #[serde(default)]
    pub interval: Option<String>,
    /// How many intervals one period is (every 3 months: 3).
    #[serde(default)]
    pub interval_count: Option<i64>,
}

impl PriceObject {
    /// A metered price bills usage; it never names the plan.
    pub fn is_metered(&self) -> bool {
        self.recurring.as_ref().and_then(|r| r.usage_type.as_deref()) == Some("metered")
    }
}

/// One subscription item.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItemObject {
    /// The price.
    pub price: PriceObject,
    /// Units of the price (seats); Stripe omits it for metered prices.
    #[serde(default)]
    pub quantity: Option<i64>,
    /// Since API 2025-03-31 the period lives on items.
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

/// A Stripe list.
#[derive(Debug, Clone, Deserialize)]
pub struct ListObject<T> {
    /// The entries.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

/// The parts of a subscription that the mirror keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionObject {
    /// `sub_…`.
    pub id: String,
    /// The customer.
    #[serde(deserialize_with = "de_expandable")]
    pub customer: Option<String>,
    /// `trialing`, `active`, `past_due`, …
    pub status: String,
    /// The items (one price each).
    pub items: ListObject<SubscriptionItemObject>,
    /// Before API 2025-03-31 the period lived on the subscription.
    #[serde(default)]
    pub current_period_end: Option<i64>,
    /// Cancels when the period ends (classic billing mode).
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// When it is set to cancel: in flexible billing mode (the API default since 2025-09-30) a
    /// cancellation from the customer portal sets this with `cancel_at_period_end = false`.
    #[serde(default)]
    pub cancel_at: Option<i64>,
    /// End of the trial.
    #[serde(default)]
    pub trial_end: Option<i64>,
    /// The default payment method, if any.
    #[serde(default, deserialize_with = "de_expandable")]
    pub default_payment_method: Option<String>,
    /// Metadata (may carry `tenant_id`).
    #[serde(default, deserialize_with = "de_null_default")]
    pub metadata: HashMap<String, String>,
    /// Why it is paused (API 2026-09-30: `paused.subscription.type`).
    #[serde(default)]
    pub status_details: Option<serde_json::Value>,
    /// A paused collection: `{behavior, resumes_at}`.
    #[serde(default)]
    pub pause_collection: Option<serde_json::Value>,
}

impl SubscriptionObject {
    /// Why Stripe paused it (`status_details.paused.subscription.type`), when it says.
    pub fn paused_reason(&self) -> Option<&str> {
        self.status_details.as_ref().and_then(|d| d.pointer("/paused/subscription/type")).and_then(|v| v.as_str())
    }

    /// `pause_collection.behavior`, while collection is paused.
    pub fn pause_collection_behavior(&self) -> Option<&str> {
        self.pause_collection.as_ref().and_then(|p| p.get("behavior")).and_then(|v| v.as_str())
    }

    /// The price that names the plan: the first licensed item's (a metered item, which may be
    /// listed first, bills usage on top of a plan), else the first item's.
    pub fn price(&self) -> Option<&PriceObject> {
        self.items.data.iter().map(|i| &i.price).find(|p| !p.is_metered()).or_else(|| self.items.data.first().map(|i| &i.price))
    }

    /// The price of the item that is the subscription's plan in `plans`, wherever Stripe lists
    /// it (an add-on may come first); the first licensed item's when none is a plan's.
    pub fn plan_price(&self, plans: &crate::billing::plans::Plans) -> Option<&PriceObject> {
        let prices = || self.items.data.iter().map(|i| &i.price).filter(|p| !p.is_metered());
        prices().find(|p| plans.plan_for(Some(&p.id), p.product.as_deref()).is_some()).or_else(|| self.price())
    }

    /// Every item as the mirror keeps it.
    pub fn mirrored_items(&self) -> Vec<crate::billing::access::Item> {
        self.items
            .data
            .iter()
            .map(|i| crate::billing::access::Item {
                price: i.price.id.clone(),
                product: i.price.product.clone(),
                quantity: i.quantity.unwrap_or(1),
                metered: i.price.is_metered(),
                unit_amount: i.price.unit_amount,
                currency: i.price.currency.clone(),
                interval: i.price.recurring.as_ref().and_then(|r| r.interval.clone()),
                interval_count: i.price.recurring.as_ref().and_then(|r| r.interval_count),
            })
            .collect()
    }

    /// End of the current period, wherever the API version puts it. With items of mixed
    /// intervals, access is paid up to the earliest item's period end.
    pub fn period_end(&self) -> Option<i64> {
        self.current_period_end.or_else(|| self.items.data.iter().filter_map(|i| i.current_period_end).min())
    }

    /// When access ends if nothing changes: the period end for a classic cancel, `cancel_at`
    /// for a flexible one (the earlier when both are set).
    pub fn cancels_at(&self) -> Option<i64> {
        let at_period_end = if self.cancel_at_period_end { self.period_end() } else { None };
        [at_period_end, self.cancel_at].into_iter().flatten().min()
    }
}

/// The parts of an invoice that the mirror keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceObject {
    /// `in_…`; absent on `invoice.upcoming`.
    #[serde(default)]
    pub id: Option<String>,
    /// The customer.
    #[serde(deserialize_with = "de_expandable")]
    pub customer: Option<String>,
    /// Before API 2025-03-31.
    #[serde(default, deserialize_with = "de_expandable")]
    pub subscription: Option<String>,
    /// Since API 2025-03-31: `parent.subscription_details.subscription`.
    #[serde(default)]
    pub parent: Option<serde_json::Value>,
    /// `draft`, `open`, `paid`, `uncollectible`, `void`.
    #[serde(default)]
    pub status: Option<String>,
    /// Minor units.
    #[serde(default)]
    pub amount_due: i64,
    /// Minor units.
    #[serde(default)]
    pub amount_paid: i64,
    /// ISO currency.
    #[serde(default)]
    pub currency: String,
    /// Payment attempts so far.
    #[serde(default)]
    pub attempt_count: i32,
    /// Stripe's next automatic attempt.
    #[serde(default)]
    pub next_payment_attempt: Option<i64>,
    /// Why the invoice exists (`subscription_cycle`, `subscription_update`, …).
    #[serde(default)]
    pub billing_reason: Option<String>,
    /// End of the invoiced period.
    #[serde(default)]
    pub period_end: Option<i64>,
    /// `charge_automatically` or `send_invoice` (the customer pays it by the due date).
    #[serde(default)]
    pub collection_method: Option<String>,
    /// When a sent invoice is due.
    #[serde(default)]
    pub due_date: Option<i64>,
    /// Where the customer pays or confirms it.
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
}

impl InvoiceObject {
    /// The subscription, wherever the API version puts it.
    pub fn subscription_id(&self) -> Option<String> {
        self.subscription.clone().or_else(|| {
            let p = self.parent.as_ref()?.pointer("/subscription_details/subscription")?;
            expandable_id(p).map(str::to_owned)
        })
    }
}

/// The parts of a charge that the mirror keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct ChargeObject {
    /// `ch_…`.
    pub id: String,
    /// The customer.
    #[serde(default, deserialize_with = "de_expandable")]
    pub customer: Option<String>,
    /// The invoice it paid: only before API 2025-03-31 (since then see [`InvoicePaymentObject`]).
    #[serde(default, deserialize_with = "de_expandable")]
    pub invoice: Option<String>,
    /// The payment intent it belongs to (what an invoice payment names).
    #[serde(default, deserialize_with = "de_expandable")]
    pub payment_intent: Option<String>,
    /// Minor units.
    pub amount: i64,
    /// Minor units.
    #[serde(default)]
    pub amount_refunded: i64,
    /// Fully refunded.
    #[serde(default)]
    pub refunded: bool,
    /// Disputed.
    #[serde(default)]
    pub disputed: bool,
    /// ISO currency.
    pub currency: String,
}

/// An invoice payment (`invoice_payment.paid`): which payment paid which invoice.
#[derive(Debug, Clone, Deserialize)]
pub struct InvoicePaymentObject {
    /// `inpay_…`.
    pub id: String,
    /// The invoice paid.
    #[serde(deserialize_with = "de_expandable")]
    pub invoice: Option<String>,
    /// `paid`, `open`, `canceled`.
    #[serde(default)]
    pub status: Option<String>,
    /// The payment: a payment intent or a charge.
    #[serde(default)]
    pub payment: Option<PaymentReference>,
}

/// What paid an invoice.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentReference {
    /// The payment intent, when `type` is `payment_intent`.
    #[serde(default, deserialize_with = "de_expandable")]
    pub payment_intent: Option<String>,
    /// The charge, when `type` is `charge`.
    #[serde(default, deserialize_with = "de_expandable")]
    pub charge: Option<String>,
}

/// The parts of a dispute that the mirror keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct DisputeObject {
    /// `dp_…`.
    pub id: String,
    /// The disputed charge.
    #[serde(deserialize_with = "de_expandable")]
    pub charge: Option<String>,
    /// Minor units.
    pub amount: i64,
    /// ISO currency.
    pub currency: String,
    /// `needs_response`, `won`, `lost`, …
    pub status: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The parts of a Checkout session that establish the tenant mapping.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSessionObject {
    /// `cs_…`.
    pub id: String,
    /// The customer created or used.
    #[serde(default, deserialize_with = "de_expandable")]
    pub customer: Option<String>,
    /// Set by the app to the tenant id when it starts checkout.
    #[serde(default)]
    pub client_reference_id: Option<String>,
    /// Metadata (may carry `tenant_id`).
    #[serde(default, deserialize_with = "de_null_default")]
    pub metadata: HashMap<String, String>,
    /// The subscription created, in subscription mode.
    #[serde(default, deserialize_with = "de_expandable")]
    pub subscription: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::event::StripeEvent;
    #[test]
    fn a_customer_account_routes_and_mirrors_like_a_customer() {
        let event = |object: serde_json::Value| {
            StripeEvent::from_value(&serde_json::json!({"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": object}}), 1).expect("event")
        };
        let only_account = event(serde_json::json!({"id": "in_1", "customer": null, "customer_account": "acct_1"}));
        assert_eq!(only_account.customer_id(), Some("acct_1"));
        let both = event(serde_json::json!({"id": "in_1", "customer": "cus_1", "customer_account": "acct_1"}));
        assert_eq!(both.customer_id(), Some("cus_1"), "the customer when both are present");
        let sub: SubscriptionObject = object(&serde_json::json!({"id": "sub_1", "customer_account": "acct_1", "status": "active", "items": {"data": []}})).expect("parses");
        assert_eq!(sub.customer.as_deref(), Some("acct_1"));
    }

    #[test]
    fn reads_both_period_layouts_and_expanded_ids() {
        let new_layout = serde_json::json!({"id": "sub_1", "customer": {"id": "cus_1"}, "status": "active",
            "items": {"data": [{"price": {"id": "price_1", "product": "prod_1"}, "current_period_end": 200}]}});
        let s: SubscriptionObject = object(&new_layout).expect("parses");
        assert_eq!((s.customer.as_deref(), s.period_end()), (Some("cus_1"), Some(200)));
        let inv: InvoiceObject = object(&serde_json::json!({"customer": "cus_1", "currency": "usd",
            "parent": {"subscription_details": {"subscription": "sub_9"}}})).expect("parses");
        assert_eq!((inv.id.clone(), inv.subscription_id()), (None, Some("sub_9".to_owned())));
    }

    #[test]
    fn mixed_items_the_plan_is_the_licensed_item_and_access_ends_at_the_earliest_period() {
        // A metered item listed first, then the monthly plan, then a yearly add-on.
        let sub = serde_json::json!({"id": "sub_1", "customer": "cus_1", "status": "active", "items": {"data": [
            {"price": {"id": "price_meter", "product": "prod_api", "recurring": {"interval": "month", "usage_type": "metered"}}, "current_period_end": 300},
            {"price": {"id": "price_pro", "product": "prod_pro", "recurring": {"interval": "month", "usage_type": "licensed"}}, "current_period_end": 300},
            {"price": {"id": "price_addon", "product": "prod_addon", "recurring": {"interval": "year", "usage_type": "licensed"}}, "current_period_end": 9000}]}});
        let s: SubscriptionObject = object(&sub).expect("parses");
        assert_eq!(s.price().map(|p| p.id.as_str()), Some("price_pro"));
        assert_eq!(s.period_end(), Some(300));
        assert_eq!(s.cancels_at(), None);
    }

    #[test]
    fn a_flexible_cancel_is_read_from_cancel_at() {
        let sub = serde_json::json!({"id": "sub_1", "customer": "cus_1", "status": "active", "cancel_at_period_end": false, "cancel_at": 250,
            "items": {"data": [{"price": {"id": "price_pro"}, "current_period_end": 300}]}});
        let s: SubscriptionObject = object(&sub).expect("parses");
        assert_eq!((s.cancel_at, s.cancels_at()), (Some(250), Some(250)));
    }
}
