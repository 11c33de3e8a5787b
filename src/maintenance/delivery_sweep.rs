//! `deliveries.sweep`: outbound webhook deliveries whose job was lost (a crash, or Redis down
//! after the commit) are queued.

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service};

/// The service.
pub(super) struct DeliverySweep;

impl Service for DeliverySweep {
    fn name(&self) -> &'static str {
        "deliveries.sweep"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let queued = crate::webhooks_out::messages::sweep(&deps.system_pool, &deps.queue).await?;
            Ok::<_, MaintenanceError>(Report::of("queued", queued as u64))
        })
    }
}
