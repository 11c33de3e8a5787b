//! `inbox.prune`: processed and ignored Stripe events older than the inbox retention
//! (`BALLAST_INBOX_RETENTION`) are deleted.

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service, drain};

/// The service.
pub(super) struct InboxPrune;

impl Service for InboxPrune {
    fn name(&self) -> &'static str {
        "inbox.prune"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let pruned = drain(crate::stripe::inbox::PRUNE_BATCH, || crate::stripe::inbox::prune(&deps.system_pool, deps.inbox_retention)).await?;
            Ok::<_, MaintenanceError>(Report::of("pruned", pruned))
        })
    }
}
