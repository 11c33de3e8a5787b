//! The plan catalogue (policy/plans.toml): which Stripe prices and products belong to which
//! plan or add-on, and what each grants — a feature switched on, or on with a limit (a plan),
//! or an amount added to a limit per unit of quantity (an add-on). A subscription's plan is
//! the item whose price is a plan's, wherever Stripe lists it; Stripe keeps no item order.

use std::collections::BTreeMap;
use crate::assets::ConfigFile;

use serde::Deserialize;

/// A catalogue that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct PlansError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// What a plan grants for one feature: `true`/`false`, or a limit (enabled, bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Grant {
    /// On or off.
    Switch(bool),
    /// On, up to this many.
    Limit(i64),
}

/// One plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Shown to people.
    pub name: String,
    /// Its place among plans, higher is better: when several subscriptions grant plans, the
    /// tenant's plan (its usage limits, the plan it is shown on) is the highest ranked.
    #[serde(default)]
    pub rank: i32,
    /// Stripe price ids of this plan.
    #[serde(default)]
    pub prices: Vec<String>,
    /// Stripe product ids of this plan (any price of theirs).
    #[serde(default)]
    pub products: Vec<String>,
    /// Feature → grant.
    #[serde(default)]
    pub features: BTreeMap<String, Grant>,
    /// Metered usage: metric → its limit per calendar month.
    #[serde(default)]
    pub usage: BTreeMap<String, UsageLimit>,
}

/// An add-on: a price sold beside a plan (extra seats, a support package). Each unit of the
/// item's quantity adds its limits to the plan's; a switch turns a feature on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addon {
    /// Shown to people.
    pub name: String,
    /// Stripe price ids of this add-on.
    #[serde(default)]
    pub prices: Vec<String>,
    /// Stripe product ids of this add-on (any price of theirs).
    #[serde(default)]
    pub products: Vec<String>,
    /// Feature → a switch, or the amount one unit adds to the feature's limit.
    #[serde(default)]
    pub features: BTreeMap<String, Grant>,
}

/// What a subscription item's price is to Ballast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceRole<'a> {
    /// A plan's price.
    Plan(&'a str),
    /// An add-on's price.
    Addon(&'a str),
    /// Not in the catalogue: ignored for access (never takes access away), counted and logged.
    Unknown,
}

/// A metric's limit in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageLimit {
    /// Units per calendar month (UTC).
    pub limit: i64,
    /// Past the limit, usage is billed as overage instead of refused.
    #[serde(default)]
    pub overage: bool,
}

/// A metered metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// What is counted.
    pub description: String,
    /// The `event_name` of the Stripe billing meter it is reported to.
    pub stripe_event: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    features: BTreeMap<String, String>,
    #[serde(default)]
    metrics: BTreeMap<String, Metric>,
    plans: BTreeMap<String, Plan>,
    #[serde(default)]
    addons: BTreeMap<String, Addon>,
    restricted: Plan,
}

/// The validated catalogue.
#[derive(Debug, Clone)]
pub struct Plans {
    /// Every feature the product knows, with its meaning.
    pub features: BTreeMap<String, String>,
    /// Every metered metric.
    pub metrics: BTreeMap<String, Metric>,
    /// Plans by id.
    pub plans: BTreeMap<String, Plan>,
    /// Add-ons by id.
    pub addons: BTreeMap<String, Addon>,
    /// What a restricted (paused, dunning-restricted) tenant keeps.
    pub restricted: Plan,
}

impl Plans {
    /// Reads and validates the file: every granted feature is declared, and a price or
    /// product belongs to one plan only.
    pub fn load(file: &ConfigFile) -> Result<Self, PlansError> {
        let err = |problem: String| PlansError { path: file.shown(), problem };
        let text = file.read().map_err(|e| err(format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(err)
    }

    /// Parses and validates catalogue text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PlansFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
        let restricted = "restricted".to_owned();
        for (id, plan) in file.plans.iter().chain([(&restricted, &file.restricted)]) {
            if let Some(f) = plan.features.keys().find(|f| !file.features.contains_key(*f)) {
                return Err(format!("plan {id:?} grants undeclared feature {f:?} (add it under [features])"));
            }
            if let Some(m) = plan.usage.keys().find(|m| !file.metrics.contains_key(*m)) {
                return Err(format!("plan {id:?} meters undeclared metric {m:?} (add it under [metrics])"));
            }
            if let Some((m, _)) = plan.usage.iter().find(|(_, l)| l.limit <= 0) {
                return Err(format!("plan {id:?}: the limit of {m:?} must be positive"));
            }
            for stripe_id in plan.prices.iter().chain(&plan.products) {
                if let Some(other) = owners.insert(stripe_id, id) {
                    return Err(format!("{stripe_id:?} belongs to both {other:?} and {id:?}"));
                }
            }
        }
        for (id, addon) in &file.addons {
            if let Some(f) = addon.features.keys().find(|f| !file.features.contains_key(*f)) {
                return Err(format!("add-on {id:?} grants undeclared feature {f:?} (add it under [features])"));
            }
            if let Some((f, _)) = addon.features.iter().find(|(_, g)| matches!(g, Grant::Limit(n) if *n <= 0) || matches!(g, Grant::Switch(false))) {
                return Err(format!("add-on {id:?}: {f:?} must add a positive amount or switch the feature on"));
            }
            if addon.prices.is_empty() && addon.products.is_empty() {
                return Err(format!("add-on {id:?} names no price or product"));
            }
            for stripe_id in addon.prices.iter().chain(&addon.products) {
                if let Some(other) = owners.insert(stripe_id, id) {
                    return Err(format!("{stripe_id:?} belongs to both {other:?} and {id:?}"));
                }
            }
        }
        Ok(Self { features: file.features, metrics: file.metrics, plans: file.plans, addons: file.addons, restricted: file.restricted })
    }

    /// What a subscription item's price (or its product) is: a plan's, an add-on's, or unknown.
    pub fn role_of(&self, price: Option<&str>, product: Option<&str>) -> PriceRole<'_> {
        if let Some((id, _)) = self.plan_for(price, product) {
            return PriceRole::Plan(id);
        }
        match seller(&self.addons, |a| a.prices.as_slice(), |a| a.products.as_slice(), price, product) {
            Some((id, _)) => PriceRole::Addon(id),
            None => PriceRole::Unknown,
        }
    }

    /// The plan a price (or its product) belongs to.
    pub fn plan_for(&self, price: Option<&str>, product: Option<&str>) -> Option<(&str, &Plan)> {
        seller(&self.plans, |p| p.prices.as_slice(), |p| p.products.as_slice(), price, product)
    }
}

/// The entry of `catalogue` that sells `price`, else the one that sells its `product` (a price
/// names the more specific entry).
fn seller<'a, T>(
    catalogue: &'a BTreeMap<String, T>,
    prices: impl Fn(&T) -> &[String],
    products: impl Fn(&T) -> &[String],
    price: Option<&str>,
    product: Option<&str>,
) -> Option<(&'a str, &'a T)> {
    let find = |wanted: Option<&str>, ids: &dyn Fn(&T) -> &[String]| wanted.and_then(|w| catalogue.iter().find(|(_, e)| ids(e).iter().any(|x| x == w)));
    find(price, &prices).or_else(|| find(product, &products)).map(|(id, entry)| (id.as_str(), entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogue_is_valid() {
        let plans = Plans::load(&crate::assets::PLANS).expect("valid");
        assert!(!plans.plans.is_empty());
    }

    #[test]
    fn a_price_is_a_plan_an_addon_or_unknown() {
        let plans = Plans::parse(concat!(
            "[features]\na = \"A\"\nseats = \"S\"\n[restricted]\nname = \"R\"\n",
            "[plans.p]\nname = \"P\"\nprices = [\"price_p\"]\nfeatures = { a = true, seats = 3 }\n",
            "[addons.more_seats]\nname = \"Seats\"\nproducts = [\"prod_seats\"]\nfeatures = { seats = 5 }\n",
        ))
        .expect("plans");
        assert_eq!(plans.role_of(Some("price_p"), None), PriceRole::Plan("p"));
        assert_eq!(plans.role_of(Some("price_seats_yearly"), Some("prod_seats")), PriceRole::Addon("more_seats"));
        assert_eq!(plans.role_of(Some("price_new"), Some("prod_new")), PriceRole::Unknown);
        let base = "[features]\nseats = \"S\"\n[restricted]\nname = \"R\"\n[plans.p]\nname = \"P\"\nprices = [\"price_p\"]\n";
        let err = Plans::parse(&format!("{base}[addons.x]\nname = \"X\"\nprices = [\"price_p\"]\nfeatures = {{ seats = 1 }}\n")).unwrap_err();
        assert!(err.contains("belongs to both"), "{err}");
        let err = Plans::parse(&format!("{base}[addons.x]\nname = \"X\"\nprices = [\"price_x\"]\nfeatures = {{ seats = 0 }}\n")).unwrap_err();
        assert!(err.contains("positive amount"), "{err}");
    }

    #[test]
    fn undeclared_features_and_shared_prices_are_refused() {
        let base = "[features]\na = \"A\"\n[restricted]\nname = \"R\"\n";
        let err = Plans::parse(&format!("{base}[plans.x]\nname = \"X\"\nfeatures = {{ b = true }}\n")).unwrap_err();
        assert!(err.contains("undeclared feature \"b\""), "{err}");
        let err = Plans::parse(&format!("{base}[plans.x]\nname = \"X\"\nprices = [\"p\"]\n[plans.y]\nname = \"Y\"\nprices = [\"p\"]\n")).unwrap_err();
        assert!(err.contains("belongs to both"), "{err}");
    }
}
