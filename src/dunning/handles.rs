//! What dunning uses ([`Deps`], borrowed for a call), and the same as owned handles for what
//! holds them past one call (a job kind's dependencies, the Stripe apply path):
//! [`DunningHandles::deps`] lends them as [`Deps`].

use std::sync::Arc;

use crate::cache::Cache;
use crate::db::{SystemPool, TenantPool};
use crate::queue::JobQueue;
use crate::stripe_api::StripeApi;

use super::policy::Policy;

/// What dunning uses: the pools, the Stripe API it pays and cancels through, the plans and
/// grace it recomputes entitlements with, its policy, and where it queues emails and drops
/// cached entitlements after a commit.
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    /// Tenant transactions.
    pub tenant_pool: &'a TenantPool,
    /// The daily run's scan across tenants.
    pub system_pool: &'a SystemPool,
    /// Invoice payments and cancellations.
    pub stripe: &'a StripeApi,
    /// The plan catalogue.
    pub plans: &'a crate::billing::plans::Plans,
    /// How long a past_due subscription keeps its plan.
    pub past_due_grace: chrono::Duration,
    /// The dunning policy.
    pub policy: &'a Policy,
    /// Where emails are queued after the commit.
    pub queue: &'a JobQueue,
    /// Where entitlements are dropped after the commit.
    pub cache: &'a Cache,
}

/// [`Deps`] as owned handles (cheap clones).
#[derive(Clone)]
pub struct DunningHandles {
    /// Tenant transactions.
    pub tenant_pool: TenantPool,
    /// Cross-tenant scans.
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

impl DunningHandles {
    /// What dunning's functions take.
    pub fn deps(&self) -> Deps<'_> {
        Deps {
            tenant_pool: &self.tenant_pool,
            system_pool: &self.system_pool,
            stripe: &self.stripe,
            plans: &self.plans,
            past_due_grace: self.past_due_grace,
            policy: &self.policy,
            queue: &self.queue,
            cache: &self.cache,
        }
    }
}
