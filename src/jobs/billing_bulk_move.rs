//! `billing.bulk_move` (admin job, runbook billing-bulk-move): moves a cohort of subscriptions
//! (by plan, price or tenants) to another price at Stripe with the chosen proration. A dry run
//! lists each tenant with its price and MRR before and after; `--execute` acts, resumes a
//! stopped run of the same move, and audits each tenant's change.

use serde::{Deserialize, Serialize};

use super::billing_bulk::{BulkKind, TenantList, cohort};
use super::kind::JobError;
use crate::billing::bulk::Cohort;
use crate::billing::bulk_run::Change;
use crate::stripe_api::ProrationBehavior;

/// The job's kind ([`super::billing_bulk::Bulk`] runs it).
#[derive(Debug, Clone, Copy, Default)]
pub struct BillingBulkMove;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingBulkMoveParams {
    /// Subscriptions on this plan (policy/plans.toml: `starter`).
    #[serde(default)]
    pub plan: Option<String>,
    /// Subscriptions with this price on an item.
    #[serde(default)]
    pub price: Option<String>,
    /// These tenants (ids or external ids, comma-separated).
    #[serde(default)]
    #[schema(value_type = String)]
    pub tenants: TenantList,
    /// The price to move to: a plan's price.
    #[serde(default)]
    pub to_price: Option<String>,
    /// `create_prorations` (default: billed on the next invoice), `always_invoice` (now) or `none`.
    #[serde(default)]
    #[schema(inline)]
    pub proration: Option<ProrationBehavior>,
    /// At most this many subscriptions (default 10,000).
    #[serde(default)]
    pub limit: Option<i64>,
}

impl BulkKind for BillingBulkMove {
    const KIND: &'static str = "billing.bulk_move";
    type Params = BillingBulkMoveParams;

    fn asked(p: &BillingBulkMoveParams) -> Result<(Cohort, Change, Option<i64>), JobError> {
        let to_price = p.to_price.clone().ok_or_else(|| JobError::Cancel("to_price=… is required: the price to move the cohort to".into()))?;
        let change = Change::MovePrice { to_price, proration: p.proration.unwrap_or(ProrationBehavior::CreateProrations) };
        Ok((cohort(&p.plan, &p.price, &p.tenants), change, p.limit))
    }
}
