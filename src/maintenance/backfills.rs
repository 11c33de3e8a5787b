//! `backfills`: what a migration needed copied from tenant data and could not copy itself. The
//! owner role that runs migrations has no BYPASSRLS and every tenant table forces row-level
//! security, so a backfill in a migration sees no rows (0024's copied none). Each backfill
//! here runs as the system role, in batches of its own transaction, drained as a prune is; once
//! a run finds nothing to do, this member's leader stops running them (what they fill is kept
//! from then on by the code or the triggers that write it).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::service::{Deps, MaintenanceError, Report, Running, Service, drain};
use crate::db::SystemPool;

/// Rows one backfill transaction writes.
const BATCH: i64 = 1000;

type Batch<'a> = Pin<Box<dyn Future<Output = Result<u64, sqlx::Error>> + Send + 'a>>;

/// Each backfill: its name in the report, and one batch of it.
const BACKFILLS: [(&str, for<'a> fn(&'a SystemPool) -> Batch<'a>); 3] = [
    // 0050: the customer list's rows of tenants created before it.
    ("customer_list", |pool| Box::pin(crate::tenants::customers::fill_missing(pool, BATCH))),
    // 0024: the history row of each tenant's customer bound before it.
    ("tenant_customers", |pool| Box::pin(crate::tenants::fill_missing_bindings(pool, BATCH))),
    // 0067: the time in the id of each job status written before it (the partition key, 0.9.0).
    ("job_status_times", |pool| Box::pin(crate::queue::status::fill_missing_times(pool, BATCH))),
];

/// The service.
#[derive(Default)]
pub(super) struct Backfills {
    /// A run found nothing left to fill.
    complete: AtomicBool,
}

impl Service for Backfills {
    fn name(&self) -> &'static str {
        "backfills"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let mut report = Report::default();
            if self.complete.load(Ordering::Relaxed) {
                return Ok::<_, MaintenanceError>(report);
            }
            for (name, batch) in BACKFILLS {
                let filled = drain(BATCH as u64, || batch(&deps.system_pool)).await?;
                report = report.with(name, filled);
            }
            self.complete.store(!report.did_something(), Ordering::Relaxed);
            Ok(report)
        })
    }
}
