//! Maintenance services: the periodic sweeps, prunes and re-queues the scheduler's leader runs,
//! each its own file behind one small interface ([`Service`]), as River's maintenance services
//! and Omicron's background tasks are. A run returns a typed [`Report`] of what it did; the
//! [`Runner`] times it and keeps its last status ([`status`], table `maintenance_status`), which
//! `ballast maintenance` shows and the overdue check reads: a service that has not completed
//! within [`OVERDUE_AFTER`] of its periods is itself a problem (its leader is gone, or it fails
//! every time).

mod backfills;
mod delivery_prune;
mod delivery_sweep;
mod email_prune;
mod inbox_prune;
mod inbox_sweep;
mod console_session_prune;
mod job_status_prune;
mod outbox_sweep;
mod override_expiry;
mod partitions;
mod queue_recovery;
mod service;
pub mod status;

use std::collections::BTreeMap;

use chrono::Utc;

pub use partitions::kept_on_retirement;
pub use service::{Deps, MaintenanceError, OVERDUE_AFTER, Report, Running, Service};

/// Every service, in the order a round runs them: the lost-queue check first (a Redis that
/// restarted empty is refilled before anything else is swept).
pub fn services() -> Vec<Box<dyn Service>> {
    vec![
        Box::new(queue_recovery::QueueRecovery),
        Box::new(inbox_sweep::InboxSweep),
        Box::new(outbox_sweep::OutboxSweep),
        Box::new(delivery_sweep::DeliverySweep),
        Box::new(inbox_prune::InboxPrune),
        Box::new(job_status_prune::JobStatusPrune),
        Box::new(console_session_prune::ConsoleSessionPrune),
        Box::new(delivery_prune::DeliveryPrune),
        Box::new(email_prune::EmailPrune),
        Box::new(override_expiry::OverrideExpiry),
        Box::new(partitions::Partitions),
        Box::new(backfills::Backfills::default()),
    ]
}

/// Runs the services that are due and records what each did.
pub struct Runner {
    services: Vec<Box<dyn Service>>,
    last: BTreeMap<&'static str, tokio::time::Instant>,
}

impl Default for Runner {
    fn default() -> Self {
        Self { services: services(), last: BTreeMap::new() }
    }
}

impl Runner {
    /// Runs every service whose period has passed since its last run here (all of them on a
    /// new leader's first round), one after another, each timed and its status kept.
    pub async fn run_due(&mut self, deps: &Deps) {
        for service in &self.services {
            let due = self.last.get(service.name()).is_none_or(|t| t.elapsed() >= service.period());
            if !due {
                continue;
            }
            self.last.insert(service.name(), tokio::time::Instant::now());
            let outcome = run_one(service.as_ref(), deps).await;
            if let Err(e) = status::record(&deps.system_pool, &outcome).await {
                tracing::warn!(message = "Maintenance status not recorded; the next run records its own.", service = service.name(), error = %e);
            }
        }
    }
}

/// One run of `service`, timed, logged.
pub async fn run_one(service: &dyn Service, deps: &Deps) -> status::Outcome {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let result = service.run(deps).await;
    let took = clock.elapsed();
    match &result {
        Ok(report) if report.did_something() => tracing::info!(message = "Maintenance service acted.", service = service.name(), report = ?report.0, ms = took.as_millis()),
        Ok(_) => {}
        Err(e) => tracing::warn!(message = "Maintenance service failed; its next run retries.", service = service.name(), error = %e),
    }
    status::Outcome { service: service.name(), period: service.period(), started_at, took, result: result.map_err(|e| e.to_string()) }
}
