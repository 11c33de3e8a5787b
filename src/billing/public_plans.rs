//! The public plan catalogue: what each plan grants (policy/plans.toml) with Stripe's current
//! price of each plan, as sign-up and pricing pages show it. Served from the cache (long TTL):
//! Stripe is read once per refresh across the fleet, and an outage serves the last answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plans::{Grant, Plans, UsageLimit};
use crate::cache::{Cache, CacheError};
use crate::redis_keys::PLAN_CATALOGUE;
use crate::stripe_api::{ObjectKind, StripeApi, StripeApiError};

/// The catalogue as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PublicCatalogue {
    /// Feature → meaning.
    pub features: BTreeMap<String, String>,
    /// Metered metric → what is counted.
    pub metrics: BTreeMap<String, String>,
    /// Every plan, by id.
    pub plans: Vec<PublicPlan>,
}

/// One plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PublicPlan {
    /// Plan id.
    pub id: String,
    /// Shown to people.
    pub name: String,
    /// Feature → grant.
    pub features: BTreeMap<String, Grant>,
    /// Metric → monthly limit.
    pub usage: BTreeMap<String, UsageLimit>,
    /// Its Stripe prices.
    pub prices: Vec<PublicPrice>,
}

/// One Stripe price, as Stripe holds it now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PublicPrice {
    /// `price_…`
    pub id: String,
    /// Amount in the currency's smallest unit; `None` when Stripe is not configured.
    pub unit_amount: Option<i64>,
    /// ISO currency, lower case.
    pub currency: Option<String>,
    /// `month`, `year`, … for recurring prices.
    pub interval: Option<String>,
    /// Whether new subscriptions can use it.
    pub active: Option<bool>,
    /// Where the amount comes from: `stripe` (the price as Stripe holds it, cached) or
    /// `unavailable`. Amounts live at Stripe only; policy/plans.toml names prices, not amounts.
    #[serde(default)]
    pub amount_source: String,
    /// Why `unit_amount` is null, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_missing: Option<String>,
}

/// Builds the catalogue, reading every plan price from Stripe. Without a Stripe key the prices
/// carry their ids only; a Stripe failure fails the load (the cache then serves the old one).
pub async fn load(plans: &Plans, stripe: &StripeApi) -> Result<PublicCatalogue, StripeApiError> {
    let mut out = Vec::with_capacity(plans.plans.len());
    for (id, plan) in &plans.plans {
        let mut prices = Vec::with_capacity(plan.prices.len());
        for price_id in &plan.prices {
            let price = match stripe.retrieve(ObjectKind::Price, price_id).await {
                Ok(p) => PublicPrice {
                    id: price_id.clone(),
                    unit_amount: p["unit_amount"].as_i64(),
                    currency: p["currency"].as_str().map(str::to_owned),
                    interval: p["recurring"]["interval"].as_str().map(str::to_owned),
                    active: p["active"].as_bool(),
                    amount_source: "stripe".into(),
                    amount_missing: p["unit_amount"].as_i64().is_none().then(|| {
                        format!("Stripe's price has no unit amount (billing scheme {}): its tiers are at Stripe", p["billing_scheme"].as_str().unwrap_or("unknown"))
                    }),
                },
                Err(StripeApiError::NotConfigured) => PublicPrice {
                    id: price_id.clone(),
                    unit_amount: None,
                    currency: None,
                    interval: None,
                    active: None,
                    amount_source: "unavailable".into(),
                    amount_missing: Some("no STRIPE_SECRET_KEY is set: amounts are read from Stripe, and this fleet cannot reach it".into()),
                },
                Err(e) => return Err(e),
            };
            prices.push(price);
        }
        out.push(PublicPlan {
            id: id.clone(),
            name: plan.name.clone(),
            features: plan.features.clone(),
            usage: plan.usage.clone(),
            prices,
        });
    }
    Ok(PublicCatalogue {
        features: plans.features.clone(),
        metrics: plans.metrics.iter().map(|(k, m)| (k.clone(), m.description.clone())).collect(),
        plans: out,
    })
}

/// The catalogue through the cache.
pub async fn cached(cache: &Cache, plans: &std::sync::Arc<Plans>, stripe: &StripeApi) -> Result<PublicCatalogue, CacheError> {
    let (plans, stripe) = (plans.clone(), stripe.clone());
    cache.get(&PLAN_CATALOGUE, cache.keys().plan_catalogue(), move || async move { load(&plans, &stripe).await }).await
}
