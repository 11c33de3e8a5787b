//! `console_sessions.prune`: operator console sessions that ended or expired over a day ago
//! are deleted.

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service};

/// The service.
pub(super) struct ConsoleSessionPrune;

impl Service for ConsoleSessionPrune {
    fn name(&self) -> &'static str {
        "console_sessions.prune"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let pruned = crate::auth::console_sessions::prune(&deps.system_pool).await?;
            Ok::<_, MaintenanceError>(Report::of("pruned", pruned))
        })
    }
}
