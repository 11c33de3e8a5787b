//! `deliveries.prune`: finished outbound webhook deliveries (and their attempts) older than
//! their retention are deleted.

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service};

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
            // Batch after batch (each its own transaction) while full, within the inbox prune's
            // budget: one batch a minute kept up with 166 finished deliveries a second and no more.
            let (started, mut pruned) = (std::time::Instant::now(), 0);
            loop {
                let batch = crate::webhooks_out::deliveries::prune(&deps.system_pool, crate::webhooks_out::deliveries::RETENTION).await?;
                pruned += batch;
                if batch < crate::webhooks_out::deliveries::PRUNE_BATCH || started.elapsed() >= crate::stripe::inbox::PRUNE_BUDGET {
                    break;
                }
            }
            Ok::<_, MaintenanceError>(Report::of("pruned", pruned))
        })
    }
}
