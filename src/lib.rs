//! Ballast: the worker fleet that keeps a growing SaaS boring.
//!
//! One binary, three roles (api, worker, scheduler); state in PostgreSQL with row-level
//! security per tenant; queues, cache and leases in Redis.

#![warn(unreachable_pub)]

/// The release: the crate's version and the git commit it was built from (`0.1.0+3f2a…`),
/// as `ballast --version`, `ballast_build_info` and the traces' `service.version` say it.
pub const RELEASE: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("RELEASE_COMMIT"));

/// The intake API (axum).
pub mod api;
/// The operator console: server-rendered pages on their own listener.
pub mod console;
/// The audit log.
pub mod audit;
/// The fleet member that runs the roles.
pub mod app;
/// API keys and scopes.
pub mod auth;
/// Secrets at rest, sealed under keys from the environment (rotatable).
pub mod keyring;
/// Performance tooling in one place: the benchmarks against peers and previous builds
/// (`ballast bench`) and the capacity load test with its stored baselines (`ballast loadtest`).
pub mod perf;
/// Plans and entitlements.
pub mod billing;
/// The stale-while-revalidate cache reader, the warm job and the key reshape.
pub mod cache;
/// The job catalogue in jobs/.
pub mod job_catalogue;
/// The clock intake decisions use (manual in tests).
pub mod clock;
/// Typed settings.
pub mod config;
pub mod assets;
/// Outbound webhooks to app services' customers, signed to the Standard Webhooks spec.
pub mod webhooks_out;
/// CPU-bound work off the async runtime's threads.
pub mod cpu;
/// PostgreSQL pools, the tenant transaction helper, migrations.
pub mod db;
/// A Stripe simulator for tests and for trying Ballast without Stripe (`ballast dev stripe`).
pub mod devstripe;
/// A mail catcher for tests and for trying Ballast without a mail server (`ballast dev mail`).
pub mod devmail;
/// Newtypes for ids.
pub mod newtypes;
/// Dunning: the policy, cases and the daily run.
pub mod dunning;
/// Transactional email: outbox, templates, SMTP.
pub mod email;
/// Named crash points for fault drills.
pub mod fault;
/// Feature flags and their per-tenant rollout.
pub mod flags;
/// Prometheus metrics: the golden signals.
pub mod metrics;
/// Job kinds and their registry.
pub mod jobs;
/// The Redis key registry.
pub mod redis_keys;
/// The job runtime on apalis.
pub mod queue;
/// Rate limits of the intake.
pub mod ratelimit;
/// One Redis or a Redis Cluster behind one connection type.
pub mod redis_conn;
/// Runbook pages and the admin jobs behind them.
pub mod runbook;
/// Backups (pg_dump) and restore rehearsals.
pub mod backup;
/// Error reports with the release to a Sentry-compatible endpoint (SENTRY_DSN).
pub mod error_reports;
/// Alerts on the fleet's own health (deploy/alerts.toml).
pub mod health;
/// The periodic sweeps and prunes the scheduler's leader runs, each with its last status.
pub mod maintenance;
/// The cron leader.
pub mod scheduler;
/// Service level objectives: recording, burn-rate evaluation, alert notifications.
pub mod slo;
/// Stripe events: signatures, parsing, the inbox, routing, handlers and the apply path.
pub mod stripe;
/// The Stripe API client: what Ballast asks Stripe, and Stripe's errors (below the domains that
/// call it: billing, dunning, tenants, usage, and the Stripe event handlers).
pub mod stripe_api;
/// The application state every edge holds.
pub mod state;
/// Logs.
pub mod telemetry;
/// Tenants as the product provisions them: external id, billing email, Stripe customer.
pub mod tenants;
/// Usage metering: intake counters, the ledger flush, meter events.
pub mod usage;
