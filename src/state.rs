//! The application state: every shared dependency, built once from the settings and cheap to
//! clone. Only the edges, where members are assembled — the API, the CLI, the benchmarks,
//! `app.rs` — hold it. Each job kind gets the struct of handles it declares ([`Provides`]
//! below), the scheduler its own, and the other lower modules the parts they use (the
//! `*_deps` helpers).

use std::sync::Arc;

use crate::redis_conn::RedisConn;
use secrecy::ExposeSecret;

use crate::job_catalogue::{JobCatalogue, JobCatalogueError};
use crate::config::Settings;
use crate::db::{self, DbError, SystemPool, TenantPool};
use crate::redis_keys::RedisKeys;
use crate::jobs::deps::{self, Provides};
use crate::queue::JobQueue;

/// Errors while building or starting a fleet member.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL settings.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The Redis URL.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    /// The job catalogue.
    #[error(transparent)]
    JobCatalogue(#[from] JobCatalogueError),
    /// The listen address.
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    /// The plan catalogue.
    #[error(transparent)]
    Plans(#[from] crate::billing::plans::PlansError),
    /// The Stripe client.
    #[error(transparent)]
    Stripe(#[from] crate::stripe_api::StripeApiError),
    /// An unknown role name.
    #[error("unknown role {0:?}: use api, worker, scheduler")]
    UnknownRole(String),
    /// The rate-limit policy file.
    #[error("BALLAST_LIMITS_FILE: {0}")]
    Limits(#[from] crate::ratelimit::policy::PolicyError),
    /// The dunning policy file.
    #[error("BALLAST_DUNNING_FILE: {0}")]
    Dunning(#[from] crate::dunning::policy::PolicyError),
    /// The SMTP settings.
    #[error("BALLAST_SMTP_*: {0}")]
    Smtp(String),
    /// The SLO definitions.
    #[error("BALLAST_SLO_FILE: {0}")]
    Slos(#[from] crate::slo::SloFileError),
    /// The SLO notification settings.
    #[error("{0}")]
    SloNotify(String),
    /// The fleet's health alerts.
    #[error("BALLAST_ALERTS_FILE: {0}")]
    Alerts(#[from] crate::health::RulesError),
    /// A metric defined wrongly.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The outbound webhook client.
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks_out::client::ClientError),
}

/// Shared dependencies behind one reference count: the API's middleware layers, its handlers
/// and every job take a copy, and a field-by-field copy (two dozen handles, each its own count
/// or more) was a sixth of the member's CPU per webhook event. Fields read through `Deref`; a
/// benchmark or test adjusting a field before sharing writes through `DerefMut` (a copy of
/// the fields only if the state is already shared).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

/// What [`AppState`] shares.
#[derive(Clone)]
pub struct Shared {
    /// Settings the member started with.
    pub settings: Arc<Settings>,
    /// App-role pool (row-level security applies).
    pub tenant_pool: TenantPool,
    /// System-role pool (BYPASSRLS), for the named cross-tenant jobs.
    pub system_pool: SystemPool,
    /// Multiplexed Redis (or Redis Cluster) connection that reconnects by itself.
    pub redis: RedisConn,
    /// Redis client, for dedicated connections (pub/sub).
    pub redis_client: redis::Client,
    /// The key registry.
    pub keys: RedisKeys,
    /// The job queue.
    pub queue: JobQueue,
    /// The Stripe API.
    pub stripe: crate::stripe_api::StripeApi,
    /// The plan catalogue.
    pub plans: Arc<crate::billing::plans::Plans>,
    /// The intake's rate limiter (and the clock its decisions use).
    pub limiter: crate::ratelimit::Limiter,
    /// The dunning policy.
    pub dunning: Arc<crate::dunning::Policy>,
    /// The SMTP sender.
    pub mailer: crate::email::smtp::Mailer,
    /// The templates app services send (`email.send` at intake).
    pub email_templates: Arc<crate::email::compose::AppTemplates>,
    /// The stale-while-revalidate reader of cached values.
    pub cache: crate::cache::Cache,
    /// The SLO definitions.
    pub slos: Arc<crate::slo::Slos>,
    /// The fleet's health alerts (deploy/alerts.toml).
    pub health_rules: Arc<crate::health::Rules>,
    /// This member's per-minute counts of the intake's SLIs.
    pub slo_recorder: Arc<crate::slo::record::Recorder>,
    /// The tenants the API served since the last write of their last activity.
    pub tenant_activity: Arc<crate::tenants::activity::Recorder>,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
    /// The webhook intake's inbox writes, grouped across concurrent requests.
    pub inbox: crate::stripe::inbox::batch::InboxWriter,
    /// Events this process applied in another event's group (their own jobs end at once).
    pub applied_in_groups: Arc<crate::stripe::inbox::grouped::AppliedInGroups>,
    /// Outbound webhooks: accepts messages and makes deliveries (writes grouped into shared commits).
    pub webhooks_out: crate::webhooks_out::deliver::Outbound,
    /// The streaming replica for reads that can lag, when one is set.
    pub replica: Option<crate::db::replica::Replica>,
    /// The releases the fleet's live members run (read by this member's roster task).
    pub fleet_releases: crate::health::roster::FleetReleases,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("namespace", &self.keys.namespace()).finish_non_exhaustive()
    }
}

impl AppState {
    /// Connects (lazily: a member starts while PostgreSQL or Redis is down, and /readyz says so)
    /// and loads the catalogue. Handlers are checked against it where jobs run (the worker role).
    pub fn build(settings: Settings) -> Result<Self, StartError> {
        let catalogue = JobCatalogue::load(&settings.jobs_dir)?;
        let (tenant_pool, system_pool) = db::pools(&settings)?;
        let replica = match &settings.replica.url {
            Some(url) => Some(crate::db::replica::Replica::new(url.expose_secret(), settings.replica.max_lag, settings.db_pool_size.min(8))?),
            None => None,
        };
        let (redis, redis_client) = RedisConn::open(settings.redis_url.expose_secret(), settings.redis_cluster)?;
        let keys = RedisKeys::new(&settings.redis_namespace, settings.redis_cluster);
        let queue = JobQueue::new(keys.clone(), redis.clone(), Arc::new(catalogue), settings.worker_heartbeat);
        let plans = Arc::new(crate::billing::plans::Plans::load(&settings.plans_file)?);
        crate::stripe_api::StripeApi::check_version(&settings.stripe_api_version)?;
        let metrics = crate::metrics::Metrics::new()?;
        let tally = crate::stripe_api::CallTally { redis: redis.clone(), keys: keys.clone(), counter: metrics.stripe_calls() };
        let stripe = crate::stripe_api::StripeApi::new(settings.stripe_secret_key.as_ref(), &settings.stripe_api_base, settings.stripe_timeout)?.with_tally(tally);
        let policies = crate::ratelimit::Policies::load(&settings.limits_file)?;
        let limiter = crate::ratelimit::Limiter::new(keys.clone(), redis.clone(), crate::clock::Clock::System, policies);
        let dunning = Arc::new(crate::dunning::Policy::load(&settings.dunning_file)?);
        let mailer = crate::email::smtp::Mailer::from_settings(&settings).map_err(|e| StartError::Smtp(e.to_string()))?;
        let cache = crate::cache::Cache::new(redis.clone(), keys.clone(), crate::clock::Clock::System, Default::default());
        let slos = Arc::new(crate::slo::Slos::load(&settings.slo_file)?);
        let health_rules = Arc::new(crate::health::Rules::load(&settings.alerts_file)?);
        if slos.notify.format == crate::slo::NotifyFormat::Pagerduty
            && settings.slo_webhook_url.is_some()
            && settings.slo_pagerduty_routing_key.is_none()
        {
            return Err(StartError::SloNotify(
                "BALLAST_SLO_PAGERDUTY_ROUTING_KEY: missing (the SLO file's notify format is pagerduty)".into(),
            ));
        }
        let email_templates = Arc::new(crate::email::compose::AppTemplates::load(&settings.email_templates_dir).map_err(|e| StartError::Smtp(e.to_string()))?);
        let slo_recorder = Arc::new(crate::slo::record::Recorder::new(&slos, format!("intake:{}", member_id()), crate::clock::Clock::System));
        let webhooks_out = crate::webhooks_out::deliver::Outbound::new(tenant_pool.clone(), system_pool.clone(), queue.clone(), &settings.outbound, &settings.secrets_keyring)?;
        Ok(Self(Arc::new(Shared {
            inbox: crate::stripe::inbox::batch::InboxWriter::new(system_pool.clone()),
            applied_in_groups: Arc::default(),
            fleet_releases: Default::default(),
            webhooks_out,
            replica,
            settings: Arc::new(settings),
            tenant_pool,
            system_pool,
            redis,
            redis_client,
            keys,
            queue,
            stripe,
            plans,
            limiter,
            dunning,
            mailer,
            email_templates,
            cache,
            slos,
            health_rules,
            slo_recorder,
            tenant_activity: Arc::default(),
            metrics,
        })))
    }
}

impl AppState {
    /// Where a read that can lag (the console's and the admin API's lists, timelines, reports)
    /// goes now: the replica while it keeps up, else the primary.
    pub async fn reads(&self) -> crate::db::replica::Reads {
        crate::db::replica::reads(self.replica.as_ref(), &self.system_pool).await
    }

    /// What the fleet's health evaluation uses.
    pub fn health_deps(&self) -> crate::health::Deps {
        crate::health::Deps {
            system_pool: self.system_pool.clone(),
            queue: self.queue.clone(),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            lease: self.settings.scheduler_lease,
            rules: self.health_rules.clone(),
            backups_configured: self.settings.backups.dir.is_some(),
            pgbackrest_configured: self.settings.backups.pgbackrest.is_some(),
            rehearsals_configured: self.settings.backups.dir.is_some() && self.settings.backups.rehearsal_database_url.is_some(),
        }
    }

    /// What the maintenance services use.
    pub fn maintenance_deps(&self) -> crate::maintenance::Deps {
        Provides::<crate::scheduler::SchedulerDeps>::provide(self).maintenance()
    }

    /// What SLO evaluation and notification use.
    pub fn slo_deps(&self) -> crate::slo::Deps {
        crate::slo::Deps { system_pool: self.system_pool.clone(), slos: self.slos.clone(), queue: self.queue.clone(), settings: self.settings.clone() }
    }

    /// What usage intake, reads and the flush use.
    pub fn usage_deps(&self) -> crate::usage::Deps {
        crate::usage::Deps {
            tenant_pool: self.tenant_pool.clone(),
            system_pool: self.system_pool.clone(),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            plans: self.plans.clone(),
            stripe: self.stripe.clone(),
        }
    }

    /// What provisioning and changing tenants use.
    pub fn tenant_deps(&self) -> crate::tenants::provision::Deps<'_> {
        crate::tenants::provision::Deps { system: &self.system_pool, stripe: &self.stripe, queue: &self.queue }
    }

    /// Provisions a tenant (`tenants::provision`), then releases the Stripe events that
    /// waited for its customer: tenants sit below stripe/, so the release is joined here,
    /// for the API and the CLI alike. A failed release is logged; the inbox sweep retries it.
    pub async fn provision_tenant(
        &self,
        new: &crate::tenants::provision::NewTenant,
        actor: &str,
    ) -> Result<crate::tenants::provision::Provisioned, crate::tenants::TenantError> {
        let done = crate::tenants::provision::provision(self.tenant_deps(), new, actor).await?;
        if let Some(customer) = &done.newly_bound
            && let Err(e) = crate::stripe::inbox::release_unmatched(&self.system_pool, &self.queue, customer).await
        {
            tracing::warn!(message = "Events parked for the new customer not released yet (the sweep will).", tenant = %done.tenant.id, error = %e);
        }
        // The welcome is an email sent on the tenant's behalf: it counts against the tenant's
        // email window like the ones its app sends.
        if done.created && done.tenant.billing_email.is_some() {
            use crate::ratelimit::{Limit, PolicyName, Request, Subject};
            let window = self.limiter.policies.tenant_emails_for(done.tenant.id);
            let counted = Request { limits: vec![Limit { policy: PolicyName::TenantEmails, subject: Subject::Tenant(done.tenant.id), window }], ..Default::default() };
            if let Err(e) = self.limiter.decide(&counted).await {
                tracing::warn!(message = "Welcome email not counted against the tenant's email limit.", error = %e);
            }
        }
        Ok(done)
    }

    /// What dunning uses.
    pub fn dunning_deps(&self) -> crate::dunning::Deps {
        crate::dunning::Deps {
            tenant_pool: self.tenant_pool.clone(),
            system_pool: self.system_pool.clone(),
            stripe: self.stripe.clone(),
            plans: self.plans.clone(),
            past_due_grace: self.settings.past_due_grace,
            policy: self.dunning.clone(),
            queue: self.queue.clone(),
            cache: self.cache.clone(),
        }
    }

    /// What a cache warm reads from and fills.
    pub fn warm_sources(&self) -> crate::billing::warm::WarmSources {
        crate::billing::warm::WarmSources {
            cache: self.cache.clone(),
            plans: self.plans.clone(),
            stripe: self.stripe.clone(),
            app_pool: self.tenant_pool.raw().clone(),
            system_pool: self.system_pool.clone(),
        }
    }
}

/// Every job kind this binary can run, by name, for a member assembled with [`AppState`].
pub type Registry = crate::queue::job::Registry<AppState>;

/// The standard registry, built once per process: what the console and the admin API ask of
/// a kind (its argument schema, whether a payload fits) without building it per request.
pub fn standard_registry() -> &'static Registry {
    static REGISTRY: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::standard);
    &REGISTRY
}

/// The standard intake hooks, built once per process (a job's status by its id).
pub fn standard_intakes() -> &'static crate::jobs::intake::Intakes<AppState> {
    static INTAKES: std::sync::LazyLock<crate::jobs::intake::Intakes<AppState>> = std::sync::LazyLock::new(crate::jobs::intake::Intakes::standard);
    &INTAKES
}

/// Every standard job kind's dependencies come from the application state.
impl crate::jobs::StandardDeps for AppState {}

/// What tests and tools that want everything declare as their dependencies.
impl Provides<AppState> for AppState {
    fn provide(&self) -> AppState {
        self.clone()
    }
}

impl Provides<crate::stripe::apply::ApplyDeps> for AppState {
    fn provide(&self) -> crate::stripe::apply::ApplyDeps {
        crate::stripe::apply::ApplyDeps {
            billing: self.dunning_deps(),
            metrics: self.metrics.clone(),
            apply_batch: self.settings.webhook_apply_batch,
            applied_in_groups: self.applied_in_groups.clone(),
        }
    }
}

impl Provides<crate::dunning::Deps> for AppState {
    fn provide(&self) -> crate::dunning::Deps {
        self.dunning_deps()
    }
}

impl Provides<crate::ratelimit::Limiter> for AppState {
    fn provide(&self) -> crate::ratelimit::Limiter {
        self.limiter.clone()
    }
}

impl Provides<deps::Email> for AppState {
    fn provide(&self) -> deps::Email {
        deps::Email {
            tenant_pool: self.tenant_pool.clone(),
            queue: self.queue.clone(),
            mailer: self.mailer.clone(),
            templates: self.email_templates.clone(),
            limiter: self.limiter.clone(),
            app_email_from: self.settings.app_email_from.clone(),
        }
    }
}

impl Provides<crate::usage::Deps> for AppState {
    fn provide(&self) -> crate::usage::Deps {
        self.usage_deps()
    }
}

impl Provides<crate::billing::warm::WarmSources> for AppState {
    fn provide(&self) -> crate::billing::warm::WarmSources {
        self.warm_sources()
    }
}

impl Provides<crate::slo::Deps> for AppState {
    fn provide(&self) -> crate::slo::Deps {
        self.slo_deps()
    }
}

impl Provides<deps::Outbound> for AppState {
    fn provide(&self) -> deps::Outbound {
        deps::Outbound { queue: self.queue.clone(), tenant_pool: self.tenant_pool.clone(), webhooks_out: self.webhooks_out.clone(), limiter: self.limiter.clone() }
    }
}

impl Provides<deps::Mirror> for AppState {
    fn provide(&self) -> deps::Mirror {
        deps::Mirror { system_pool: self.system_pool.clone(), replica: self.replica.clone(), stripe: self.stripe.clone(), queue: self.queue.clone(), plans: self.plans.clone() }
    }
}

impl Provides<deps::Fleet> for AppState {
    fn provide(&self) -> deps::Fleet {
        deps::Fleet {
            settings: self.settings.clone(),
            tenant_pool: self.tenant_pool.clone(),
            system_pool: self.system_pool.clone(),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            queue: self.queue.clone(),
            stripe: self.stripe.clone(),
            mailer: self.mailer.clone(),
            slos: self.slos.clone(),
        }
    }
}

impl Provides<deps::Records> for AppState {
    fn provide(&self) -> deps::Records {
        deps::Records { system_pool: self.system_pool.clone(), settings: self.settings.clone() }
    }
}

impl Provides<crate::scheduler::SchedulerDeps> for AppState {
    fn provide(&self) -> crate::scheduler::SchedulerDeps {
        crate::scheduler::SchedulerDeps {
            settings: self.settings.clone(),
            system_pool: self.system_pool.clone(),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            queue: self.queue.clone(),
            cache: self.cache.clone(),
        }
    }
}

/// This process's name in the fleet: host and pid, unique among live members.
pub fn member_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".to_owned());
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..6])
}

#[cfg(test)]
mod tests {
    //! The standard registry as members assemble it: what jobs/ schedules and what the runbooks
    //! name has a handler here.

    #[test]
    fn every_scheduled_payload_in_jobs_fits_its_handler() {
        let dir = crate::assets::jobs();
        let catalogue = crate::job_catalogue::JobCatalogue::load(&dir).expect("jobs/");
        let registry = super::Registry::standard();
        catalogue
            .check_schedule_payloads(|kind, payload| registry.get(kind).map_or(Ok(()), |h| h.check(payload).map_err(|e| e.to_string())))
            .expect("schedule payloads");
        // A payload the handler cannot read is refused, naming the file.
        let bad = crate::job_catalogue::JobCatalogue::load(&dir).expect("jobs/");
        let err = bad
            .check_schedule_payloads(|kind, _| if kind == "slo.evaluate" { Err("unknown field `x`".into()) } else { Ok(()) })
            .expect_err("refused");
        assert!(err.to_string().contains("slo.evaluate.toml"), "{err}");
    }

    #[test]
    fn every_runbooks_admin_job_has_a_handler() {
        let pages = crate::runbook::pages(&crate::assets::runbooks()).expect("runbooks/");
        let registry = super::Registry::standard();
        assert!(!pages.is_empty());
        for page in &pages {
            assert!(registry.get(&page.admin_job).is_some(), "{} (runbooks/{}.md) has no handler in Registry::standard", page.admin_job, page.name);
        }
    }
}
