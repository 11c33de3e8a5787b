//! `outbox.sweep`: email outbox rows whose send job was never queued (a crash, or Redis down
//! after the commit) are queued.

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service};

/// The service.
pub(super) struct OutboxSweep;

impl Service for OutboxSweep {
    fn name(&self) -> &'static str {
        "outbox.sweep"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let queued = crate::email::sweep(&deps.system_pool, &deps.queue, super::service::SWEEP_AGE).await?;
            Ok::<_, MaintenanceError>(Report::of("queued", queued as u64))
        })
    }
}
