//! `partitions`: each partitioned table (`db::partitions::PARTITIONED`) gets its monthly
//! partitions three months ahead, and its months past their retention retired whole
//! (detached, archived when `BALLAST_PARTITION_ARCHIVE_DIR` is set, dropped), keeping the rows
//! still to be acted on ([`kept_on_retirement`]) in the table's DEFAULT partition.

use std::time::Duration;

use chrono::Utc;

use super::service::{Deps, MaintenanceError, Report, Running, Service};
use crate::db::partitions;

/// The rows of `table` a month's retirement keeps, moved to its DEFAULT partition before the
/// month is dropped: the inbox's events still to handle, the deliveries still pending and
/// their attempts (deliveries retire first, see `PARTITIONED`), the messages a delivery still
/// names (they retire after their deliveries), the emails not sent yet and
/// the statuses of jobs not finished.
pub fn kept_on_retirement(table: &str) -> Option<&'static str> {
    match table {
        "stripe_events" => Some(crate::stripe::inbox::STILL_TO_HANDLE),
        "webhook_deliveries" => Some(crate::webhooks_out::deliveries::STILL_PENDING),
        "webhook_attempts" => Some(crate::webhooks_out::deliveries::OF_STILL_PENDING),
        "webhook_messages" => Some(crate::webhooks_out::messages::STILL_NAMED),
        "email_outbox" => Some(crate::email::outbox::STILL_TO_SEND),
        "job_status" => Some(crate::queue::status::UNFINISHED),
        _ => None,
    }
}

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
                // The inbox keeps its own retention setting; job statuses have a fixed one.
                let retention = match *table {
                    "stripe_events" => Some(deps.inbox_retention),
                    "job_status" => Some(crate::queue::status::RETENTION),
                    _ => deps.partitions.retention_of(table),
                };
                let Some(retention) = retention else { continue };
                let retired = partitions::retire(pool, table, now, retention, deps.partitions.archive_dir.as_deref(), kept_on_retirement(table)).await?;
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
