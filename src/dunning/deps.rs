//! What dunning uses, as handles: cheap to clone, so a job kind or the Stripe apply path holds
//! them past one call.

use std::sync::Arc;

use crate::cache::Cache;
use crate::db::{SystemPool, TenantPool};
use crate::queue::JobQueue;
use crate::stripe_api::StripeApi;

use super::policy::Policy;

/// What dunning uses: the pools, the Stripe API it pays and cancels through, the plans and
/// grace it recomputes entitlements with, its policy, and where it queues emails and drops
/// cached entitlements after a commit.
#[derive(Clone)]
pub struct Deps {
    /// Tenant transactions.
    pub tenant_pool: TenantPool,
    /// The daily run's scan across tenants.
    pub system_pool: SystemPool,
    /// Invoice payments and cancellations.
    pub stripe: StripeApi,
    /// The plan catalogue.
    pub plans: Arc<crate::billing::plans::Plans>,
    /// How long a past_due subscription keeps its plan.
    pub past_due_grace: chrono::Duration,
    /// The dunning policy.
    pub policy: Arc<Policy>,
    /// Where follow-up jobs (emails, re-queued events) are queued.
    pub queue: JobQueue,
    /// Where entitlements are dropped after a commit.
    pub cache: Cache,
}

impl Deps {
    /// How subscription statuses turn into access: the past-due grace and the policy's pause.
    pub fn access_rules(&self) -> crate::billing::access::AccessRules {
        crate::billing::access::AccessRules { past_due_grace: self.past_due_grace, paused: self.policy.paused, processing: self.policy.processing }
    }
}
