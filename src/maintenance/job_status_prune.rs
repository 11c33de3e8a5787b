//! `job_status.prune`: statuses of jobs finished longer ago than their retention are deleted.

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service};

/// The service.
pub(super) struct JobStatusPrune;

impl Service for JobStatusPrune {
    fn name(&self) -> &'static str {
        "job_status.prune"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let pruned = crate::queue::status::prune(&deps.system_pool, crate::queue::status::RETENTION).await?;
            Ok::<_, MaintenanceError>(Report::of("pruned", pruned))
        })
    }
}
