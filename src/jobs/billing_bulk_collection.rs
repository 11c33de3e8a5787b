//! `billing.bulk_collection` (admin job, runbook billing-bulk-collection): pauses or resumes
//! payment collection for a cohort of subscriptions (by plan, price or tenants) at Stripe —
//! a goodwill pause during an outage, a migration, a disputed period. The subscriptions stay
//! as they are; only invoices are held (`behavior`). Dry run unless `--execute`; resumes a
//! stopped run; audits each tenant's change.

use serde::{Deserialize, Serialize};

use super::billing_bulk::{BulkKind, TenantList, cohort};
use super::kind::JobError;
use crate::billing::bulk::Cohort;
use crate::billing::bulk_run::Change;
use crate::stripe_api::PauseBehavior;

/// The job's kind ([`super::billing_bulk::Bulk`] runs it).
#[derive(Debug, Clone, Copy, Default)]
pub struct BillingBulkCollection;

/// Pause or resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CollectionAction {
    /// Stop collecting payment.
    #[default]
    Pause,
    /// Collect again.
    Resume,
}

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingBulkCollectionParams {
    /// `pause` (default) or `resume`.
    #[serde(default)]
    #[schema(inline)]
    pub action: CollectionAction,
    /// While paused: `keep_as_draft` (default), `mark_uncollectible` or `void`.
    #[serde(default)]
    #[schema(inline)]
    pub behavior: Option<PauseBehavior>,
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

impl BulkKind for BillingBulkCollection {
    const KIND: &'static str = "billing.bulk_collection";
    type Params = BillingBulkCollectionParams;

    fn asked(p: &BillingBulkCollectionParams) -> Result<(Cohort, Change, Option<i64>), JobError> {
        let change = match p.action {
            CollectionAction::Pause => Change::PauseCollection { behavior: p.behavior.unwrap_or(PauseBehavior::KeepAsDraft) },
            CollectionAction::Resume if p.behavior.is_some() => return Err(JobError::Cancel("behavior= is for action=pause only".into())),
            CollectionAction::Resume => Change::ResumeCollection,
        };
        Ok((cohort(&p.plan, &p.price, &p.tenants), change, p.limit))
    }
}
