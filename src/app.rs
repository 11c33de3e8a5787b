//! Application state shared by every role, and the fleet member that runs the roles.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::catalogue::{Catalogue, CatalogueError};
use crate::config::Settings;
use crate::db::{self, DbError, SystemPool, TenantPool};
use crate::keys::Keys;
use crate::queue::JobQueue;
use crate::queue::worker::{self, WorkerOptions};

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
    Catalogue(#[from] CatalogueError),
    /// The listen address.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The plan catalogue.
    #[error(transparent)]
    Plans(#[from] crate::billing::plans::PlansError),
    /// The Stripe client.
    #[error(transparent)]
    Stripe(#[from] crate::stripe::client::StripeApiError),
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
    /// A metric defined wrongly.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// Shared dependencies, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Settings the member started with.
    pub settings: Arc<Settings>,
    /// App-role pool (row-level security applies).
    pub tenant_pool: TenantPool,
    /// System-role pool (BYPASSRLS), for the named cross-tenant jobs.
    pub system_pool: SystemPool,
    /// Multiplexed Redis connection that reconnects by itself.
    pub redis: ConnectionManager,
    /// Redis client, for dedicated connections (pub/sub).
    pub redis_client: redis::Client,
    /// The key registry.
    pub keys: Keys,
    /// The job queue.
    pub queue: JobQueue,
    /// The Stripe API.
    pub stripe: crate::stripe::client::StripeApi,
    /// The plan catalogue.
    pub plans: Arc<crate::billing::plans::Plans>,
    /// The intake's rate limiter (and the clock its decisions use).
    pub limiter: crate::ratelimit::Limiter,
    /// The dunning policy.
    pub dunning: Arc<crate::dunning::Policy>,
    /// The SMTP sender.
    pub mailer: crate::email::smtp::Mailer,
    /// The stale-while-revalidate reader of cached values.
    pub cache: crate::cache::Cache,
    /// The SLO definitions.
    pub slos: Arc<crate::slo::Slos>,
    /// This member's per-minute counts of the intake's SLIs.
    pub slo_recorder: Arc<crate::slo::record::Recorder>,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
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
        let catalogue = Catalogue::load(&settings.jobs_dir)?;
        let (tenant_pool, system_pool) = db::pools(&settings)?;
        let redis_client = redis::Client::open(settings.redis_url.expose_secret())?;
        let redis = ConnectionManager::new_lazy_with_config(
            redis_client.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1)),
        )?;
        let keys = Keys::new(&settings.redis_namespace);
        let queue = JobQueue::new(keys.clone(), redis.clone(), Arc::new(catalogue), settings.worker_heartbeat);
        let plans = Arc::new(crate::billing::plans::Plans::load(&settings.plans_file)?);
        let stripe = crate::stripe::client::StripeApi::new(settings.stripe_secret_key.as_ref(), &settings.stripe_api_base)?;
        let policies = match &settings.limits_file {
            Some(path) if !path.exists() => {
                return Err(StartError::Limits(crate::ratelimit::policy::PolicyError::Read {
                    path: path.display().to_string(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                }));
            }
            Some(path) => crate::ratelimit::Policies::load(path)?,
            None => crate::ratelimit::Policies::load(std::path::Path::new("deploy/limits.toml"))?,
        };
        let limiter = crate::ratelimit::Limiter::new(keys.clone(), redis.clone(), crate::clock::Clock::System, policies);
        let dunning = Arc::new(crate::dunning::Policy::load(&settings.dunning_file)?);
        let mailer = crate::email::smtp::Mailer::from_settings(&settings).map_err(|e| StartError::Smtp(e.to_string()))?;
        let cache = crate::cache::Cache::new(redis.clone(), keys.clone(), crate::clock::Clock::System, Default::default());
        let slos = Arc::new(crate::slo::Slos::load(&settings.slo_file)?);
        if slos.notify.format == crate::slo::NotifyFormat::Pagerduty
            && settings.slo_webhook_url.is_some()
            && settings.slo_pagerduty_routing_key.is_none()
        {
            return Err(StartError::SloNotify(
                "BALLAST_SLO_PAGERDUTY_ROUTING_KEY: missing (the SLO file's notify format is pagerduty)".into(),
            ));
        }
        let slo_recorder = Arc::new(crate::slo::record::Recorder::new(&slos, format!("intake:{}", member_id()), crate::clock::Clock::System));
        Ok(Self {
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
            cache,
            slos,
            slo_recorder,
            metrics: crate::metrics::Metrics::new()?,
        })
    }
}

/// The roles a fleet member can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The intake API.
    Api,
    /// Job workers.
    Worker,
    /// The cron leader candidate and inbox sweeper.
    Scheduler,
}

/// Parses `api,worker,scheduler`.
pub fn parse_roles(list: &str) -> Result<BTreeSet<Role>, StartError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|r| match r {
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            "scheduler" => Ok(Role::Scheduler),
            other => Err(StartError::UnknownRole(other.to_owned())),
        })
        .collect()
}

/// A running fleet member.
pub struct Member {
    /// Where the API listens, when the api role runs.
    pub api_addr: Option<SocketAddr>,
    /// Where a member without the api role serves /healthz, /readyz and /metrics.
    pub ops_addr: Option<SocketAddr>,
    stop: CancellationToken,
    api_stop: CancellationToken,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    grace: Duration,
}

impl Member {
    /// Starts the given roles. The API binds before this returns, so its address is known.
    pub async fn start(state: AppState, roles: &BTreeSet<Role>, options: WorkerOptions) -> Result<Self, StartError> {
        if roles.contains(&Role::Worker) {
            // Every kind this member consumes needs a handler; checked before anything binds.
            state.queue.catalogue().check_against(&options.registry.kinds())?;
        }
        let stop = CancellationToken::new();
        let api_stop = CancellationToken::new();
        let member_id = member_id();
        let mut tasks = Vec::new();
        let mut api_addr = None;
        if roles.contains(&Role::Api) {
            let listen = state.settings.listen;
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| StartError::Listen(listen, e))?;
            api_addr = listener.local_addr().ok();
            let router = crate::api::router(state.clone(), &options.registry);
            let serve = crate::api::server::serve(listener, router, connection_limits(&state.settings), state.metrics.connections(), api_stop.clone());
            tasks.push(("api", tokio::spawn(serve)));
            // The SLO counts are written while the API serves and once more after it closes.
            let (recorder, api_stop3) = (state.slo_recorder.clone(), api_stop.clone());
            tasks.push(("api", tokio::spawn(recorder.run(state.clone(), api_stop3))));
        }
        let mut ops_addr = None;
        if !roles.contains(&Role::Api) && !roles.is_empty() {
            // Probes and metrics for workers and the scheduler, on the same listen address.
            let listen = state.settings.listen;
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| StartError::Listen(listen, e))?;
            ops_addr = listener.local_addr().ok();
            let router = crate::api::ops_router(state.clone());
            let serve = crate::api::server::serve(listener, router, connection_limits(&state.settings), state.metrics.connections(), api_stop.clone());
            tasks.push(("api", tokio::spawn(serve)));
        }
        if roles.contains(&Role::Worker) {
            tasks.push(("worker", tokio::spawn(worker::run(state.clone(), options, member_id.clone(), stop.clone()))));
        }
        if roles.contains(&Role::Scheduler) {
            tasks.push(("scheduler", tokio::spawn(crate::scheduler::run(state.clone(), member_id.clone(), stop.clone()))));
        }
        Ok(Self { api_addr, ops_addr, stop, api_stop, tasks, grace: state.settings.shutdown_grace })
    }

    /// Stops fetching new jobs, lets in-flight jobs finish within the grace period, releases
    /// the scheduler lease, then closes the API. Jobs still running after the grace period
    /// stay in their worker's in-flight set and are recovered by another member once this
    /// member's heartbeat lapses.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + self.grace;
        let (api, roles): (Vec<_>, Vec<_>) = self.tasks.into_iter().partition(|(role, _)| *role == "api");
        for (role, task) in roles {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!(message = "Role did not stop within the grace period; its jobs will be recovered.", role);
            }
        }
        // The API closes last so /healthz answers while the workers drain.
        self.api_stop.cancel();
        for (_, task) in api {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Waits for SIGINT or SIGTERM, then shuts down.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!(message = "Shutting down: no new jobs; waiting for in-flight jobs.", grace_secs = self.grace.as_secs_f64());
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn connection_limits(settings: &Settings) -> crate::api::server::ConnectionLimits {
    crate::api::server::ConnectionLimits { max_connections: settings.http.max_connections, header_timeout: settings.http.header_timeout }
}

/// This process's name in the fleet: host and pid, unique among live members.
pub fn member_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".to_owned());
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..6])
}
