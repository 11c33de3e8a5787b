//! `partitions`: each partitioned table (`db::partitions::PARTITIONED`) gets its monthly
//! partitions three months ahead, and its months past their retention retired whole
//! (detached, archived when `BALLAST_PARTITION_ARCHIVE_DIR` is set, dropped). The Stripe inbox
//! keeps a retired month's events still to handle: they move to its DEFAULT partition.

use std::time::Duration;

use chrono::Utc;

use super::service::{Deps, MaintenanceError, Report, Running, Service};
use crate::db::partitions;

/// The service.
pub(super) struct Partitions;

impl Service for Partitions {
    fn name(&self) -> &'static str {
        "partitions"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(async move {
            let now = Utc::now();
            let pool = &deps.system_pool.0;
            let created = partitions::ensure_all_ahead(pool, now).await?;
            let mut report = Report::of("created", created.len() as u64);
            for table in partitions::PARTITIONED {
                // The inbox keeps its own retention, and the events still to handle; a month of
                // deliveries keeps the ones still pending, and their attempts.
                let (retention, keep) = match *table {
                    "stripe_events" => (Some(deps.inbox_retention), Some(crate::stripe::inbox::STILL_TO_HANDLE)),
                    "webhook_deliveries" => (deps.partitions.retention_of(table), Some(crate::webhooks_out::deliveries::STILL_PENDING)),
                    "webhook_attempts" => (deps.partitions.retention_of(table), Some(crate::webhooks_out::deliveries::OF_STILL_PENDING)),
                    other => (deps.partitions.retention_of(other), None),
                };
                let Some(retention) = retention else { continue };
                let retired = partitions::retire(pool, table, now, retention, deps.partitions.archive_dir.as_deref(), keep).await?;
                report = report
                    .with(&format!("{table}.retired"), retired.partitions)
                    .with(&format!("{table}.rows_retired"), retired.rows)
                    .with(&format!("{table}.archived"), retired.archived)
                    .with(&format!("{table}.kept"), retired.kept);
            }
            Ok::<_, MaintenanceError>(report)
        })
    }
}
