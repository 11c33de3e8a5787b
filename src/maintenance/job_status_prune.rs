//! `job_status.prune`: statuses of jobs finished longer ago than their retention are deleted
//! where no month retires them (the `partitions` service retires whole months).

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service, drain};

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
            let status = |pool| crate::queue::status::prune(pool, crate::queue::status::RETENTION);
            let pruned = drain(crate::queue::status::PRUNE_BATCH, || status(&deps.system_pool)).await?;
            Ok::<_, MaintenanceError>(Report::of("pruned", pruned))
        })
    }
}
