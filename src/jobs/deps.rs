//! What each job kind is given: the handles it uses and no more. A kind names one of these
//! structs as its `Deps` (see [`super::Job`]); the member's state hands each kind its struct
//! ([`Provides`], implemented where members are assembled, `src/state.rs`), so no job sees
//! the whole application state. Every struct is cheap to clone: pools, connections and shared
//! configuration are handles or `Arc`s.

use std::sync::Arc;

use crate::billing::plans::Plans;
use crate::cache::Cache;
use crate::config::Settings;
use crate::db::{SystemPool, TenantPool};
use crate::redis_keys::RedisKeys;
use crate::queue::JobQueue;
use crate::redis_conn::RedisConn;
use crate::stripe_api::StripeApi;

/// A member's state as a source of a job kind's dependencies `D`.
pub trait Provides<D> {
    /// `D`, built from the state's handles.
    fn provide(&self) -> D;
}

/// A kind that uses nothing (`noop`).
impl<S> Provides<()> for S {
    fn provide(&self) {}
}

/// Usage intake's counters and the flush's ledger and meter events (`usage.flush`).
#[derive(Clone)]
pub struct Usage {
    /// Tenant transactions.
    pub tenant_pool: TenantPool,
    /// The ledger, written across tenants.
    pub system_pool: SystemPool,
    /// The limit counters.
    pub redis: RedisConn,
    /// Their key names.
    pub keys: RedisKeys,
    /// Metered limits and meter event names.
    pub plans: Arc<Plans>,
    /// Meter events.
    pub stripe: StripeApi,
}

impl Usage {
    /// What usage's functions take.
    pub fn usage(&self) -> crate::usage::Deps<'_> {
        crate::usage::Deps { tenant_pool: &self.tenant_pool, system_pool: &self.system_pool, redis: &self.redis, keys: &self.keys, plans: &self.plans, stripe: &self.stripe }
    }
}

/// The cache and what warming fills it from (`cache.warm`, `cache.reshape`).
#[derive(Clone)]
pub struct CacheFill {
    /// The cache.
    pub cache: Cache,
    /// Redis, for the reshape's scan of old shapes.
    pub redis: RedisConn,
    /// The plan catalogue.
    pub plans: Arc<Plans>,
    /// Stripe, for the catalogue's prices.
    pub stripe: StripeApi,
    /// The app role's pool (feature flags).
    pub tenant_pool: TenantPool,
    /// Every tenant's entitlements.
    pub system_pool: SystemPool,
}

impl CacheFill {
    /// What a warm reads from and fills.
    pub fn warm_sources(&self) -> crate::billing::warm::WarmSources<'_> {
        crate::billing::warm::WarmSources { cache: &self.cache, plans: &self.plans, stripe: &self.stripe, app_pool: self.tenant_pool.raw(), system_pool: &self.system_pool }
    }
}

/// SLO evaluation and notification (`slo.evaluate`, `slo.notify`).
#[derive(Clone)]
pub struct Slo {
    /// Minutes, alerts and notifications.
    pub system_pool: SystemPool,
    /// The SLO definitions.
    pub slos: Arc<crate::slo::Slos>,
    /// Where notifications are queued.
    pub queue: JobQueue,
    /// The notification target's settings.
    pub settings: Arc<Settings>,
}

impl Slo {
    /// What the SLO functions take.
    pub fn slo(&self) -> crate::slo::Deps<'_> {
        crate::slo::Deps { system_pool: &self.system_pool, slos: &self.slos, queue: &self.queue, settings: &self.settings }
    }
}

/// Sending one email of the outbox (`email.send`) and accepting app email at intake.
#[derive(Clone)]
pub struct Email {
    /// The outbox, in the tenant's transaction.
    pub tenant_pool: TenantPool,
    /// Where sends are queued.
    pub queue: JobQueue,
    /// The SMTP sender.
    pub mailer: crate::email::smtp::Mailer,
    /// The templates app services send.
    pub templates: Arc<crate::email::compose::AppTemplates>,
    /// Per-tenant sending limits.
    pub limiter: crate::ratelimit::Limiter,
}

/// Outbound webhook deliveries (`webhook.deliver`) and their intake.
#[derive(Clone)]
pub struct Outbound {
    /// Where deliveries are queued, and the kind's retry policy.
    pub queue: JobQueue,
    /// Deliveries and messages, in the tenant's transaction.
    pub tenant_pool: TenantPool,
    /// Accepts messages and makes deliveries.
    pub webhooks_out: crate::webhooks_out::deliver::Outbound,
}

/// The admin jobs over the Stripe inbox and the mirror (`billing.drift`, `billing.reconcile`,
/// `webhooks.backlog`): cross-tenant reads, Stripe, and the queue for what they re-inject.
#[derive(Clone)]
pub struct Mirror {
    /// The inbox and the mirror, across tenants.
    pub system_pool: SystemPool,
    /// Stripe's current objects.
    pub stripe: StripeApi,
    /// Where re-injected events are queued.
    pub queue: JobQueue,
}

/// The fleet as the diagnostic admin jobs see it (`site.down`, `site.slow`,
/// `scheduler.inspect`, `db.sessions`): they check every dependency, so they hold each.
#[derive(Clone)]
pub struct Fleet {
    /// Timeouts, pool sizes and endpoints to check.
    pub settings: Arc<Settings>,
    /// The app role's pool.
    pub tenant_pool: TenantPool,
    /// The system role's pool.
    pub system_pool: SystemPool,
    /// Redis.
    pub redis: RedisConn,
    /// Redis key names.
    pub keys: RedisKeys,
    /// The queues.
    pub queue: JobQueue,
    /// The Stripe API.
    pub stripe: StripeApi,
    /// The SMTP relay.
    pub mailer: crate::email::smtp::Mailer,
    /// The SLO definitions.
    pub slos: Arc<crate::slo::Slos>,
}

impl Fleet {
    /// What the SLO functions take.
    pub fn slo(&self) -> crate::slo::Deps<'_> {
        crate::slo::Deps { system_pool: &self.system_pool, slos: &self.slos, queue: &self.queue, settings: &self.settings }
    }
}

/// The system pool and the settings: an admin run's record and audit row, and the capacity
/// test's stored baseline (`loadtest.run`).
#[derive(Clone)]
pub struct Records {
    /// The audit log, admin runs and load-test runs.
    pub system_pool: SystemPool,
    /// Retention of admin runs; the load test's target.
    pub settings: Arc<Settings>,
}
