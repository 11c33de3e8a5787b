//! `deliveries.prune`: finished outbound webhook deliveries (and their attempts) older than
//! their retention (`BALLAST_DELIVERY_RETENTION_DAYS`) are deleted where no month retires
//! them (the `partitions` service retires whole months).

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service, drain};

/// The service.
pub(super) struct DeliveryPrune;

impl Service for DeliveryPrune {
    fn name(&self) -> &'static str {
        "deliveries.prune"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let retention = deps.partitions.delivery_retention;
            let pruned = drain(crate::webhooks_out::deliveries::PRUNE_BATCH, || crate::webhooks_out::deliveries::prune(&deps.system_pool, retention))
            .await?;
            Ok::<_, MaintenanceError>(Report::of("pruned", pruned))
        })
    }
}
