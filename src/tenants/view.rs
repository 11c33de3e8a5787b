//! What the provisioning API and `ballast tenants show` answer for a tenant: its record, the
//! plan it is on, the subscription that speaks for it and its entitlements.

use super::{Tenant, TenantError};
use crate::billing::entitlements::{self, Entitlement, SubscriptionSummary};
use crate::db::SystemPool;

/// A tenant with its billing standing.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
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
    /// Its Stripe customers: the current one first, then those Stripe deleted, latest first.
    pub customers: Vec<super::CustomerBinding>,
}

/// `tenant` with its plan, subscription and entitlements.
pub async fn view(system: &SystemPool, tenant: Tenant) -> Result<TenantView, TenantError> {
    view_many(system, vec![tenant]).await?.pop().ok_or(TenantError::NotFound)
}

/// [`view`] of each of `tenants`, in their order: three reads for the page, whatever its length.
pub async fn view_many(system: &SystemPool, tenants: Vec<Tenant>) -> Result<Vec<TenantView>, TenantError> {
    let ids: Vec<_> = tenants.iter().map(|t| t.id).collect();
    let mut subscriptions = entitlements::current_subscriptions(system, &ids).await?;
    let mut granted = entitlements::load_many(system, &ids).await?;
    let mut customers = super::customers_of(system, &ids).await?;
    Ok(tenants
        .into_iter()
        .map(|tenant| {
            let subscription = subscriptions.remove(&tenant.id);
            let entitlements = granted.remove(&tenant.id).unwrap_or_default();
            let plan = entitlements.iter().find(|e| e.source == "plan").and_then(|e| e.plan_id.clone());
            let customers = customers.remove(&tenant.id).unwrap_or_default();
            TenantView { object: "tenant", tenant, plan, subscription, entitlements, customers }
        })
        .collect())
}
