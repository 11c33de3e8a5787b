//! `billing.bulk_cancel` (admin job, runbook billing-bulk-cancel): sets a cohort of
//! subscriptions (by plan, price or tenants) to cancel at the end of their period at Stripe —
//! a sunset plan, a wind-down — or, with `undo=true`, takes that back. Nothing ends now: access
//! lasts to the period's end, when Stripe's `customer.subscription.deleted` arrives. Dry run
//! unless `--execute`; resumes a stopped run; audits each tenant's change.

use serde::{Deserialize, Serialize};

use super::billing_bulk::{BulkKind, TenantList, cohort};
use super::kind::JobError;
use crate::billing::bulk::Cohort;
use crate::billing::bulk_run::Change;

/// The job's kind ([`super::billing_bulk::Bulk`] runs it).
#[derive(Debug, Clone, Copy, Default)]
pub struct BillingBulkCancel;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingBulkCancelParams {
    /// Take a cancel at period end back instead.
    #[serde(default)]
    pub undo: bool,
    /// Subscriptions on this plan.
    #[serde(default)]
    pub plan: Option<String>,
    /// Subscriptions with this price on an item.
    #[serde(default)]
    pub price: Option<String>,
    /// These tenants (ids or external ids, comma-separated).
    #[serde(default)]
    #[schema(value_type = String)]
    pub tenants: TenantList,
    /// At most this many subscriptions (default 10,000).
    #[serde(default)]
    pub limit: Option<i64>,
}

impl BulkKind for BillingBulkCancel {
    const KIND: &'static str = "billing.bulk_cancel";
    type Params = BillingBulkCancelParams;

    fn asked(p: &BillingBulkCancelParams) -> Result<(Cohort, Change, Option<i64>), JobError> {
        let change = if p.undo { Change::KeepAfterPeriodEnd } else { Change::CancelAtPeriodEnd };
        Ok((cohort(&p.plan, &p.price, &p.tenants), change, p.limit))
    }
}
