//! `dunning.run`: advances every open dunning case to today (daily, from the catalogue's
//! cron), or to `as_of` when queued by hand. Each action happens once however often it runs.

use serde::Deserialize;

use super::{Job, JobContext, JobError, JobReport};
use crate::domain::TenantId;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct DunningRunJob;

/// Arguments, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DunningRunArgs {
    /// Act as of this time instead of now.
    #[serde(default)]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this tenant.
    #[serde(default)]
    pub tenant: Option<TenantId>,
    /// Report what would happen; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl From<crate::dunning::DunningError> for JobError {
    fn from(e: crate::dunning::DunningError) -> Self {
        JobError::Retry(e.to_string())
    }
}

impl Job for DunningRunJob {
    const KIND: &'static str = "dunning.run";
    type Args = DunningRunArgs;

    async fn run(&self, args: DunningRunArgs, ctx: JobContext) -> Result<JobReport, JobError> {
        let as_of = args.as_of.unwrap_or_else(chrono::Utc::now);
        let report = crate::dunning::run(&ctx.state, as_of, args.tenant, args.dry_run).await?;
        Ok(serde_json::to_value(&report).unwrap_or_default())
    }
}
