//! `partitions`: each partitioned table (`db::partitions::PARTITIONED`) gets its monthly
//! partitions three months ahead, and its months past their retention retired whole
//! (detached, archived when `BALLAST_PARTITION_ARCHIVE_DIR` is set, dropped).

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
                let Some(retention) = deps.partitions.retention_of(table) else { continue };
                let retired = partitions::retire(pool, table, now, retention, deps.partitions.archive_dir.as_deref()).await?;
                report = report
                    .with(&format!("{table}.retired"), retired.partitions)
                    .with(&format!("{table}.rows_retired"), retired.rows)
                    .with(&format!("{table}.archived"), retired.archived);
            }
            Ok::<_, MaintenanceError>(report)
        })
    }
}
