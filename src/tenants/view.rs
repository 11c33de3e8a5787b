//! What the provisioning API and `ballast tenants show` answer for a tenant: its record, the
//! plan it is on, the subscription that speaks for it and its entitlements.

use super::{Tenant, TenantError};
use crate::billing::entitlements::{self, Entitlement, SubscriptionSummary};
use crate::db::SystemPool;

/// A tenant with its billing standing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantView {
    /// Always `"tenant"`.
    pub object: &'static str,
    /// The record.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// The plan its entitlements come from, if any.
    pub plan: Option<String>,
    /// Its subscription, if it has one.
    pub subscription: Option<SubscriptionSummary>,
    /// What it may do, feature by feature.
    pub entitlements: Vec<Entitlement>,
}

/// `tenant` with its plan, subscription and entitlements.
pub async fn view(system: &SystemPool, tenant: Tenant) -> Result<TenantView, TenantError> {
    let subscription = entitlements::current_subscription(system, tenant.id).await?;
    let entitlements = entitlements::load_many(system, &[tenant.id]).await?.remove(&tenant.id).unwrap_or_default();
    let plan = entitlements.iter().find(|e| e.source == "plan").and_then(|e| e.plan_id.clone());
    Ok(TenantView { object: "tenant", tenant, plan, subscription, entitlements })
}
