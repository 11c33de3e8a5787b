//! `overrides.expiry`: operators' overrides past their expiry are ended (as `expiry`, audited)
//! and their tenants' cached entitlements dropped. Reads already give way to the billed grant
//! at the expiry itself; this makes the end a recorded fact and the cache fresh.

use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service};

/// The service.
pub(super) struct OverrideExpiry;

impl Service for OverrideExpiry {
    fn name(&self) -> &'static str {
        "overrides.expiry"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let ended = crate::billing::overrides::expire_due(&deps.system_pool).await?;
            let mut tenants: Vec<_> = ended.iter().map(|(t, _)| *t).collect();
            tenants.sort_by_key(|t| t.0);
            tenants.dedup();
            // After the commit, so the next read loads the ended state.
            for t in &tenants {
                crate::billing::entitlements::invalidate(&deps.cache, *t).await;
            }
            Ok::<_, MaintenanceError>(Report::of("expired", ended.len() as u64).with("tenants", tenants.len() as u64))
        })
    }
}
