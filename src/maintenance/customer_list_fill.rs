//! `customer_list.fill`: tenants without a customer-list row get theirs. Every tenant created
//! since migration 0050 has one from the moment it exists (a trigger), so this fills the
//! tenants from before it, a batch per transaction, and once a pass finds none, this member's
//! leader stops looking (a tenant cannot lose its row).
//!
//! It also gives a tenant bound to its customer before migration 0024 the history row of that
//! binding, which 0024's own backfill could not (run as the owner role, it saw no tenant), so
//! the tenant's customers list names its current one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::service::{Deps, MaintenanceError, PRUNE_BUDGET, Report, Running, Service};

/// Rows a transaction fills: each is a few index reads of its tenant's facts.
const BATCH: i64 = 1000;

/// The service.
#[derive(Default)]
pub(super) struct CustomerListFill {
    /// A pass found every tenant listed.
    complete: AtomicBool,
}

impl Service for CustomerListFill {
    fn name(&self) -> &'static str {
        "customer_list.fill"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            if self.complete.load(Ordering::Relaxed) {
                return Ok::<_, MaintenanceError>(Report::of("filled", 0).with("bindings", 0));
            }
            let started = std::time::Instant::now();
            let (mut filled, mut bindings) = (0, 0);
            loop {
                let n = crate::tenants::customers::fill_missing(&deps.system_pool, BATCH).await?;
                let b = crate::tenants::fill_missing_bindings(&deps.system_pool, BATCH).await?;
                filled += n;
                bindings += b;
                if n < BATCH as u64 && b < BATCH as u64 {
                    self.complete.store(true, Ordering::Relaxed);
                    break;
                }
                // The leader's other services wait while this runs; the rest is next minute's.
                if started.elapsed() >= PRUNE_BUDGET {
                    break;
                }
            }
            Ok(Report::of("filled", filled).with("bindings", bindings))
        })
    }
}
