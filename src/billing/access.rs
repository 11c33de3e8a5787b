//! What one mirrored subscription grants: its status read against the access table, its plan
//! found among its items by price (wherever Stripe lists it), its add-ons counted by quantity.
//!
//! Access per subscription status: trialing and active → the plan; past_due → the plan
//! during the grace period; incomplete, incomplete_expired, unpaid → none; canceled → none,
//! except that cancel_at_period_end keeps the plan until the period ends; paused → restricted;
//! incomplete while its customer's bank debit is processing → the plan. The last two are the
//! policy's (`[paused]`, `[processing]` in policy/dunning.toml). A subscription restricted by
//! dunning grants the restricted set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::grants::Contribution;
use super::plans::{Grant, PriceRole, Plans};

/// What one subscription grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The plan's features, until a time or open-ended.
    Plan {
        /// Plan id in the catalogue.
        plan_id: String,
        /// When access ends by itself (grace period, cancel at period end).
        until: Option<DateTime<Utc>>,
    },
    /// The restricted set.
    Restricted,
    /// Nothing.
    None,
}

/// What a subscription held in a state the policy decides grants: paused by Stripe
/// (`[paused] access`, default restricted) or waiting on a payment that is processing
/// (`[processing] access`, default the plan), in policy/dunning.toml.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldAccess {
    /// The restricted set of plans.toml (read-only).
    #[default]
    Restricted,
    /// Nothing.
    None,
    /// The plan, as if it were active.
    Plan,
}

/// The rules that turn a subscription's status into access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRules {
    /// How long a past_due subscription keeps its plan.
    pub past_due_grace: Duration,
    /// What a paused subscription grants.
    pub paused: HeldAccess,
    /// What an `incomplete` subscription grants while its first payment is processing.
    pub processing: HeldAccess,
}

/// One item of a subscription as the mirror keeps it (`subscriptions.items`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// `price_…`
    pub price: String,
    /// The price's product.
    pub product: Option<String>,
    /// Units (seats, packages); 1 when Stripe gives none.
    pub quantity: i64,
    /// A metered price bills usage; it never names the plan or an add-on.
    pub metered: bool,
    /// The price per unit, minor units (absent: tiered, or mirrored before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_amount: Option<i64>,
    /// Its currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Its billing interval (`month`, `year`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Intervals per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_count: Option<i64>,
}

/// The mirrored facts of one subscription that access depends on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionFacts {
    /// `sub_…`
    #[sqlx(default)]
    pub id: String,
    /// Stripe status.
    pub status: String,
    /// The plan's price (as the handler found it among the items).
    pub price_id: Option<String>,
    /// The plan's product.
    pub product_id: Option<String>,
    /// Every item (empty for a row mirrored before items were kept).
    #[sqlx(default)]
    pub items: sqlx::types::Json<Vec<Item>>,
    /// Cancels at period end (classic billing mode).
    pub cancel_at_period_end: bool,
    /// Cancels at this time (flexible billing mode; also set by `cancel_at`).
    #[sqlx(default)]
    pub cancel_at: Option<DateTime<Utc>>,
    /// End of the current period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// When it became past_due.
    pub past_due_since: Option<DateTime<Utc>>,
    /// Stripe's time of the state we hold.
    pub stripe_updated_at: DateTime<Utc>,
    /// Restricted: an open dunning case of this subscription (or of no subscription) past its
    /// restriction day, or an open dispute of the tenant the dispute policy restricts for.
    #[sqlx(default)]
    pub restricted: bool,
    /// `incomplete`, and a payment of its customer is `processing` (a bank debit settles in
    /// days; Stripe leaves the subscription incomplete until it does).
    #[sqlx(default)]
    pub payment_processing: bool,
}

/// How a subscription stands by its status alone.
enum Standing {
    Grants { until: Option<DateTime<Utc>> },
    Restricted,
    Nothing,
}

fn standing(sub: &SubscriptionFacts, rules: &AccessRules, as_of: DateTime<Utc>) -> Standing {
    match sub.status.as_str() {
        "trialing" | "active" => Standing::Grants { until: ends(sub) },
        "past_due" => {
            let until = sub.past_due_since.unwrap_or(as_of) + rules.past_due_grace;
            if as_of < until { Standing::Grants { until: Some(until) } } else { Standing::Nothing }
        }
        "canceled" => match ends(sub) {
            Some(end) if end > as_of => Standing::Grants { until: Some(end) },
            _ => Standing::Nothing,
        },
        "paused" => held(rules.paused, sub),
        "incomplete" if sub.payment_processing => held(rules.processing, sub),
        _ => Standing::Nothing,
    }
}

fn held(access: HeldAccess, sub: &SubscriptionFacts) -> Standing {
    match access {
        HeldAccess::Restricted => Standing::Restricted,
        HeldAccess::None => Standing::Nothing,
        HeldAccess::Plan => Standing::Grants { until: ends(sub) },
    }
}

/// The subscription's plan: the first item whose price (or product) is a plan's, else the
/// plan of the price the row names (rows mirrored before items were kept).
fn plan_of<'p>(sub: &SubscriptionFacts, plans: &'p Plans) -> Option<(&'p str, &'p super::plans::Plan)> {
    sub.items
        .iter()
        .filter(|i| !i.metered)
        .find_map(|i| plans.plan_for(Some(&i.price), i.product.as_deref()))
        .or_else(|| plans.plan_for(sub.price_id.as_deref(), sub.product_id.as_deref()))
}

/// What `sub` grants at `as_of` (Stripe's clock, so the answer does not depend on when or in
/// which order events were processed), before dunning.
pub fn access(sub: &SubscriptionFacts, plans: &Plans, rules: &AccessRules, as_of: DateTime<Utc>) -> Access {
    let Some((plan_id, _)) = plan_of(sub, plans) else {
        return Access::None;
    };
    match standing(sub, rules, as_of) {
        Standing::Grants { until } => Access::Plan { plan_id: plan_id.to_owned(), until },
        Standing::Restricted => Access::Restricted,
        Standing::Nothing => Access::None,
    }
}

/// What `sub` contributes to its tenant's entitlements at `as_of`: its plan and add-ons until
/// its end, the restricted set (paused, or restricted by dunning), or nothing.
pub fn contribution(sub: &SubscriptionFacts, plans: &Plans, rules: &AccessRules, as_of: DateTime<Utc>) -> Option<Contribution> {
    let restricted = || Contribution {
        plan: None,
        restricted: true,
        grants: plans.restricted.features.clone(),
        adds: BTreeMap::new(),
        switches: BTreeSet::new(),
        until: None,
    };
    let until = match standing(sub, rules, as_of) {
        Standing::Nothing => return None,
        Standing::Restricted => return Some(restricted()),
        Standing::Grants { until } => until,
    };
    let plan = plan_of(sub, plans);
    let (mut adds, mut switches) = (BTreeMap::new(), BTreeSet::new());
    for item in sub.items.iter().filter(|i| !i.metered) {
        match plans.role_of(Some(&item.price), item.product.as_deref()) {
            PriceRole::Addon(id) => {
                for (feature, grant) in plans.addons.get(id).map(|a| &a.features).into_iter().flatten() {
                    match grant {
                        Grant::Limit(n) => *adds.entry(feature.clone()).or_insert(0) += n.saturating_mul(item.quantity.max(0)),
                        Grant::Switch(_) => {
                            switches.insert(feature.clone());
                        }
                    }
                }
            }
            PriceRole::Unknown => unknown_price(&item.price, &sub.id),
            PriceRole::Plan(_) => {}
        }
    }
    if plan.is_none() && adds.is_empty() && switches.is_empty() {
        return None;
    }
    if sub.restricted {
        return Some(restricted());
    }
    Some(Contribution {
        plan: plan.map(|(id, p)| (id.to_owned(), p.rank)),
        restricted: false,
        grants: plan.map(|(_, p)| p.features.clone()).unwrap_or_default(),
        adds,
        switches,
        until,
    })
}

/// When a cancelling subscription's access ends: the period end for a classic cancel,
/// `cancel_at` for a flexible one, the earlier when both are set; `None` when not cancelling.
fn ends(sub: &SubscriptionFacts) -> Option<DateTime<Utc>> {
    let at_period_end = if sub.cancel_at_period_end { sub.current_period_end } else { None };
    [at_period_end, sub.cancel_at].into_iter().flatten().min()
}

/// Items whose price is in no plan or add-on of the catalogue, seen by recomputes
/// (`ballast_unknown_price_items_total`).
pub static UNKNOWN_PRICE_ITEMS: AtomicU64 = AtomicU64::new(0);

/// An item whose price the catalogue does not know: counted, and logged once per price and
/// process. It grants nothing and takes nothing away (the plan is found among the others).
fn unknown_price(price: &str, subscription: &str) {
    static LOGGED: LazyLock<Mutex<BTreeSet<String>>> = LazyLock::new(Mutex::default);
    UNKNOWN_PRICE_ITEMS.fetch_add(1, Ordering::Relaxed);
    let first = LOGGED.lock().map(|mut seen| seen.len() < 1000 && seen.insert(price.to_owned())).unwrap_or(false);
    if first {
        tracing::warn!(message = "A subscription item's price is in no plan or add-on of plans.toml; it grants nothing.", price, subscription);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> Plans {
        Plans::parse(concat!(
            "[features]\na = \"A\"\nseats = \"S\"\n[restricted]\nname = \"R\"\n",
            "[plans.p]\nname = \"P\"\nprices = [\"price_p\"]\nfeatures = { a = true, seats = 3 }\n",
            "[addons.seats]\nname = \"Seats\"\nprices = [\"price_seats\"]\nfeatures = { seats = 5 }\n",
        ))
        .expect("plans")
    }

    fn rules() -> AccessRules {
        AccessRules { past_due_grace: Duration::days(14), paused: HeldAccess::Restricted, processing: HeldAccess::Plan }
    }

    fn item(price: &str, quantity: i64, metered: bool) -> Item {
        Item { price: price.into(), product: None, quantity, metered, unit_amount: None, currency: None, interval: None, interval_count: None }
    }

    #[test]
    fn a_paused_subscription_grants_what_the_policy_says() {
        let (p, now) = (plans(), Utc::now());
        let paused = sub("paused", false, 30, None);
        for (policy, want) in [
            (HeldAccess::Restricted, Access::Restricted),
            (HeldAccess::None, Access::None),
            (HeldAccess::Plan, Access::Plan { plan_id: "p".into(), until: None }),
        ] {
            let rules = AccessRules { paused: policy, ..rules() };
            assert_eq!(access(&paused, &p, &rules, now), want, "{policy:?}");
        }
    }

    #[test]
    fn the_plan_is_the_item_whose_price_is_a_plan_wherever_it_is_listed() {
        let (p, g, now) = (plans(), &rules(), Utc::now());
        let mut s = sub("active", false, 30, None);
        // What a mirror that took the first licensed item would hold: the add-on's price.
        s.price_id = Some("price_seats".into());
        s.items = sqlx::types::Json(vec![item("price_unknown", 1, false), item("price_seats", 2, false), item("price_metered", 1, true), item("price_p", 1, false)]);
        assert_eq!(access(&s, &p, g, now), Access::Plan { plan_id: "p".into(), until: None });
        let c = contribution(&s, &p, g, now).expect("grants");
        assert_eq!(c.adds.get("seats"), Some(&10), "5 seats per unit, 2 units");
        assert_eq!(c.plan, Some(("p".into(), 0)));
        // An unknown price alone grants nothing; dunning's restriction replaces the plan.
        s.items = sqlx::types::Json(vec![item("price_unknown", 1, false)]);
        s.price_id = None;
        assert_eq!(contribution(&s, &p, g, now), None);
        s.items = sqlx::types::Json(vec![item("price_p", 1, false)]);
        s.restricted = true;
        assert!(contribution(&s, &p, g, now).is_some_and(|c| c.restricted && c.plan.is_none()));
    }

    fn sub(status: &str, cancel: bool, end_in_days: i64, past_due_days_ago: Option<i64>) -> SubscriptionFacts {
        let now = Utc::now();
        SubscriptionFacts {
            id: "sub_1".into(),
            items: Default::default(),
            status: status.into(),
            price_id: Some("price_p".into()),
            product_id: None,
            cancel_at_period_end: cancel,
            cancel_at: None,
            current_period_end: Some(now + Duration::days(end_in_days)),
            past_due_since: past_due_days_ago.map(|d| now - Duration::days(d)),
            stripe_updated_at: now,
            restricted: false,
            payment_processing: false,
        }
    }

    #[test]
    fn a_flexible_cancel_ends_access_at_cancel_at_though_cancel_at_period_end_is_false() {
        let (p, g, now) = (plans(), &rules(), Utc::now());
        let mut flexible = sub("active", false, 30, None);
        flexible.cancel_at = Some(now + Duration::days(10));
        assert_eq!(access(&flexible, &p, g, now), Access::Plan { plan_id: "p".into(), until: flexible.cancel_at });
        // Both set: the earlier wins.
        let mut both = sub("active", true, 5, None);
        both.cancel_at = Some(now + Duration::days(10));
        assert_eq!(access(&both, &p, g, now), Access::Plan { plan_id: "p".into(), until: both.current_period_end });
        // Canceled before cancel_at came (Stripe cancels at it): access until then, not after.
        flexible.status = "canceled".into();
        assert!(matches!(access(&flexible, &p, g, now), Access::Plan { .. }));
        flexible.cancel_at = Some(now - Duration::seconds(1));
        assert_eq!(access(&flexible, &p, g, now), Access::None);
    }

    #[test]
    fn access_follows_the_status_table() {
        let (p, g, now) = (plans(), &rules(), Utc::now());
        let plan = |a: &Access| matches!(a, Access::Plan { .. });
        assert!(plan(&access(&sub("trialing", false, 5, None), &p, g, now)));
        assert_eq!(access(&sub("active", false, 5, None), &p, g, now), Access::Plan { plan_id: "p".into(), until: None });
        assert!(plan(&access(&sub("past_due", false, 5, Some(3)), &p, g, now)));
        assert_eq!(access(&sub("past_due", false, 5, Some(15)), &p, g, now), Access::None);
        for s in ["incomplete", "incomplete_expired", "unpaid"] {
            assert_eq!(access(&sub(s, false, 5, None), &p, g, now), Access::None, "{s}");
        }
        assert!(plan(&access(&sub("canceled", true, 5, None), &p, g, now)));
        assert_eq!(access(&sub("canceled", true, -1, None), &p, g, now), Access::None);
        assert_eq!(access(&sub("canceled", false, 5, None), &p, g, now), Access::None);
        assert_eq!(access(&sub("paused", false, 5, None), &p, g, now), Access::Restricted);
        // A first payment by bank debit, still processing: the plan, as the policy says.
        let mut processing = sub("incomplete", false, 5, None);
        processing.payment_processing = true;
        assert_eq!(access(&processing, &p, g, now), Access::Plan { plan_id: "p".into(), until: None });
        let held = AccessRules { processing: HeldAccess::None, ..*g };
        assert_eq!(access(&processing, &p, &held, now), Access::None);
        let mut unknown = sub("active", false, 5, None);
        unknown.price_id = Some("price_other".into());
        assert_eq!(access(&unknown, &p, g, now), Access::None);
    }

    /// The instant a period (or a grace) ends is past it: Stripe ends a cancelled
    /// subscription at `current_period_end`, so at that second access has ended, and a second
    /// before it has not.
    #[test]
    fn access_ends_at_the_exact_end_of_the_period_and_of_the_grace() {
        let (p, g, now) = (plans(), &rules(), Utc::now());
        let mut canceled = sub("canceled", true, 0, None);
        canceled.current_period_end = Some(now);
        assert_eq!(access(&canceled, &p, g, now), Access::None, "at the period's end");
        assert_eq!(access(&canceled, &p, g, now - Duration::seconds(1)), Access::Plan { plan_id: "p".into(), until: Some(now) }, "a second before it");
        let mut flexible = sub("canceled", false, 30, None);
        flexible.cancel_at = Some(now);
        assert_eq!(access(&flexible, &p, g, now), Access::None, "at cancel_at");
        let mut past_due = sub("past_due", false, 5, None);
        past_due.past_due_since = Some(now - g.past_due_grace);
        assert_eq!(access(&past_due, &p, g, now), Access::None, "at the grace's end");
        assert_eq!(access(&past_due, &p, g, now - Duration::seconds(1)), Access::Plan { plan_id: "p".into(), until: Some(now) }, "a second before it");
    }
}

