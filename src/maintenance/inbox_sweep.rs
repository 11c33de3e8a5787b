//! `inbox.sweep`: a Stripe event received but not processed after [`AGE`] is pushed again (a
//! no-op while its job waits in Redis; the push at intake is lost only when Redis was down),
//! and events parked for a tenant that can bind now are released.

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service};

/// The service.
pub(super) struct InboxSweep;

impl Service for InboxSweep {
    fn name(&self) -> &'static str {
        "inbox.sweep"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let r = crate::stripe::inbox::sweep(&deps.system_pool, &deps.queue, super::service::SWEEP_AGE).await?;
            Ok::<_, MaintenanceError>(Report::of("requeued", r.requeued as u64).with("released", r.released as u64))
        })
    }
}
