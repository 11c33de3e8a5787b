//! The plan catalogue (policy/plans.toml): which Stripe prices and products belong to which
//! plan, and what each plan grants — a feature switched on, or on with a limit.

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
        for (id, plan) in file.plans.iter().chain([(&"restricted".to_owned(), &file.restricted)]) {
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
        Ok(Self { features: file.features, metrics: file.metrics, plans: file.plans, restricted: file.restricted })
    }

    /// The plan a price (or its product) belongs to.
    pub fn plan_for(&self, price: Option<&str>, product: Option<&str>) -> Option<(&str, &Plan)> {
        let by_price = price.and_then(|p| self.plans.iter().find(|(_, plan)| plan.prices.iter().any(|x| x == p)));
        let found = by_price.or_else(|| product.and_then(|p| self.plans.iter().find(|(_, plan)| plan.products.iter().any(|x| x == p))));
        found.map(|(id, plan)| (id.as_str(), plan))
    }
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
    fn undeclared_features_and_shared_prices_are_refused() {
        let base = "[features]\na = \"A\"\n[restricted]\nname = \"R\"\n";
        let err = Plans::parse(&format!("{base}[plans.x]\nname = \"X\"\nfeatures = {{ b = true }}\n")).unwrap_err();
        assert!(err.contains("undeclared feature \"b\""), "{err}");
        let err = Plans::parse(&format!("{base}[plans.x]\nname = \"X\"\nprices = [\"p\"]\n[plans.y]\nname = \"Y\"\nprices = [\"p\"]\n")).unwrap_err();
        assert!(err.contains("belongs to both"), "{err}");
    }
}
