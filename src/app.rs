//! The fleet member that runs the roles (api, worker, scheduler) on an [`AppState`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::queue::worker::{self, WorkerOptions};
pub use crate::state::{AppState, StartError, member_id};

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

impl Role {
    /// The role's name, as `--roles` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
            Role::Scheduler => "scheduler",
        }
    }
}

/// Roles as people and `--roles` read them: `api,worker,scheduler`.
pub fn role_names(roles: &BTreeSet<Role>) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
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
    /// Where the operator console listens (api members, unless `BALLAST_CONSOLE_LISTEN=off`).
    pub console_addr: Option<SocketAddr>,
    stop: CancellationToken,
    api_stop: CancellationToken,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    grace: Duration,
}

impl Member {
    /// Starts the given roles. The API binds before this returns, so its address is known.
    pub async fn start(state: AppState, roles: &BTreeSet<Role>, options: WorkerOptions<AppState>) -> Result<Self, StartError> {
        if roles.contains(&Role::Worker) {
            // Every kind this member consumes needs a handler; checked before anything binds.
            state.queue.catalogue().check_against(&options.registry.kinds())?;
            state.queue.catalogue().check_schedule_payloads(|kind, payload| match options.registry.get(kind) {
                Some(handler) => handler.check(payload).map_err(|e| e.to_string()),
                None => Ok(()),
            })?;
        }
        let stop = CancellationToken::new();
        let api_stop = CancellationToken::new();
        let member_id = member_id();
        let mut tasks = Vec::new();
        let (mut api_addr, mut ops_addr, mut console_addr) = (None, None, None);
        // The api role serves the intake; a member without it still serves /healthz, /readyz
        // and /metrics on the same address, so every role has probes and is scraped.
        let router = if roles.contains(&Role::Api) {
            Some(crate::api::router(state.clone(), &options.registry))
        } else if !roles.is_empty() {
            Some(crate::api::ops_router(state.clone()))
        } else {
            None
        };
        if roles.contains(&Role::Api) && crate::queue::redis_keeps_writes(&state.redis).await == Some(false) {
            tracing::warn!(
                message = "Redis runs without an append-only file: jobs this member acknowledges live only in Redis and a Redis crash loses them. Start Redis with --appendonly yes (deploy/dev.sh and deploy/compose.yaml do).",
            );
        }
        if !roles.is_empty() && crate::queue::redis_never_evicts(&state.redis).await == Some(false) {
            tracing::warn!(
                message = "Redis may evict keys when full (maxmemory-policy is not noeviction): queued jobs and idempotency keys could vanish. Set maxmemory-policy noeviction (deploy/dev.sh and deploy/compose.yaml do).",
            );
        }
        if !roles.is_empty() && state.settings.secrets_keyring.is_development() {
            tracing::warn!(
                message = "Secrets at rest (webhook signing secrets) are sealed under the development key, which is in Ballast's source: set BALLAST_SECRETS_KEYRING in production (deploy/ballast.example.toml says how).",
            );
        }
        if let Some(router) = router {
            let (listen, limits) = (state.settings.listen, connection_limits(&state.settings));
            let listener = crate::api::server::bind(listen, limits.max_connections).map_err(|e| StartError::Listen(listen, e))?;
            let addr = listener.local_addr().ok();
            if roles.contains(&Role::Api) {
                api_addr = addr;
                // The SLO counts are written while the API serves and once more after it closes.
                let flush = state.slo_recorder.clone().run(state.tenant_pool.raw().clone(), state.redis.clone(), state.cache.clone(), api_stop.clone());
                tasks.push(("api", tokio::spawn(flush)));
                let activity = state.tenant_activity.clone().run(state.system_pool.clone(), api_stop.clone());
                tasks.push(("api", tokio::spawn(activity)));
            } else {
                ops_addr = addr;
            }
            let serve = crate::api::server::serve(listener, router, limits, state.metrics.connections(), api_stop.clone());
            tasks.push(("api", tokio::spawn(serve)));
        }
        // The console on its own listener, never the intake's: loopback unless told otherwise.
        if let (true, Some(listen)) = (roles.contains(&Role::Api), state.settings.console.listen) {
            let limits = connection_limits(&state.settings);
            let listener = crate::api::server::bind(listen, limits.max_connections).map_err(|e| StartError::Listen(listen, e))?;
            console_addr = listener.local_addr().ok();
            // Its connections are counted apart from the intake's (whose saturation they would blur).
            let serve = crate::api::server::serve(listener, crate::console::router(state.clone()), limits, Default::default(), api_stop.clone());
            tasks.push(("api", tokio::spawn(serve)));
        }
        if roles.contains(&Role::Worker) {
            let deps = worker::WorkerDeps {
                queue: state.queue.clone(),
                redis: state.redis.clone(),
                redis_client: state.redis_client.clone(),
                system_pool: state.system_pool.clone(),
                shutdown_grace: state.settings.shutdown_grace,
                heartbeat: state.settings.worker_heartbeat,
                metrics: Arc::new(state.metrics.clone()),
            };
            tasks.push(("worker", tokio::spawn(worker::run(deps, state.clone(), options, member_id.clone(), stop.clone()))));
            // Runs per kind per minute, added to the fleet's counts every few seconds.
            tasks.push(("worker", tokio::spawn(state.metrics.job_minutes().run(state.redis.clone(), state.keys.clone(), stop.clone()))));
        }
        // Every worker and scheduler member takes part in the fleet's health rounds (one
        // evaluates each round), so a missing leader is noticed by the others.
        if roles.contains(&Role::Worker) || roles.contains(&Role::Scheduler) {
            let role = if roles.contains(&Role::Worker) { "worker" } else { "scheduler" };
            tasks.push((role, tokio::spawn(crate::health::watch::run(state.health_deps(), member_id.clone(), stop.clone()))));
        }
        // Every member, whatever its roles, says what it is (the console's fleet list).
        if !roles.is_empty() {
            let announced: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
            tasks.push(("roster", tokio::spawn(crate::health::roster::run(state.redis.clone(), state.keys.clone(), member_id.clone(), announced, state.fleet_releases.clone(), stop.clone()))));
        }
        if roles.contains(&Role::Scheduler) {
            tasks.push(("scheduler", tokio::spawn(crate::scheduler::run(crate::jobs::Provides::provide(&state), member_id.clone(), stop.clone()))));
        }
        Ok(Self { api_addr, ops_addr, console_addr, stop, api_stop, tasks, grace: state.settings.shutdown_grace })
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

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
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
