//! `email.prune`: sent and dead emails older than their retention (`BALLAST_EMAIL_RETENTION_DAYS`)
//! are deleted where no month retires them (the `partitions` service retires whole months).

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service, drain};

/// The service.
pub(super) struct EmailPrune;

impl Service for EmailPrune {
    fn name(&self) -> &'static str {
        "email.prune"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let retention = deps.partitions.email_retention;
            let pruned = drain(crate::email::outbox::PRUNE_BATCH, || crate::email::outbox::prune(&deps.system_pool, retention)).await?;
            Ok::<_, MaintenanceError>(Report::of("pruned", pruned))
        })
    }
}
