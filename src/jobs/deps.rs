//! What each job kind is given: the handles it uses and no more. A kind names one of these
//! structs as its `Deps` (see [`super::Job`]), or a domain's own (`usage::Deps`,
//! `dunning::Deps`, `slo::Deps`, `billing::warm::WarmSources`, `stripe::apply::ApplyDeps`); the member's state hands each kind its struct
//! ([`Provides`], implemented where members are assembled, `src/state.rs`), so no job sees
//! the whole application state. Every struct is cheap to clone: pools, connections and shared
//! configuration are handles or `Arc`s.

use std::sync::Arc;

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
    /// The app sender's address (`BALLAST_APP_EMAIL_FROM`).
    pub app_email_from: String,
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
    /// The tenant's message window and the bounds on what its messages cost (limits.toml).
    pub limiter: crate::ratelimit::Limiter,
}

/// The admin jobs over the Stripe inbox and the mirror (`billing.drift`, `billing.reconcile`,
/// `stripe.backlog`): cross-tenant reads, Stripe, and the queue for what they re-inject.
#[derive(Clone)]
pub struct Mirror {
    /// The inbox and the mirror, across tenants.
    pub system_pool: SystemPool,
    /// Where the reports' listings may be read instead, while it keeps up.
    pub replica: Option<crate::db::replica::Replica>,
    /// Stripe's current objects.
    pub stripe: StripeApi,
    /// Where re-injected events are queued.
    pub queue: JobQueue,
    /// The plan catalogue: which item of a subscription is its plan.
    pub plans: Arc<crate::billing::plans::Plans>,
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
    pub fn slo(&self) -> crate::slo::Deps {
        crate::slo::Deps { system_pool: self.system_pool.clone(), slos: self.slos.clone(), queue: self.queue.clone(), settings: self.settings.clone() }
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
