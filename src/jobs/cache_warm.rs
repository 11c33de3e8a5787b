//! `cache.warm`: fills the plan catalogue, feature flags and every active tenant's entitlements
//! (cron, and on demand after a deploy or a Redis restart). Safe at any time: stores go through
//! the load lock, so it never writes over a newer invalidation. Queued by an app service
//! (`POST /v1/jobs`), it warms that service's own tenant only.

use serde::Deserialize;

use super::kind::{Job, JobContext, JobError};
use crate::billing::warm::WarmReport;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheWarmJob;

/// No arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheWarmArgs {}

impl From<crate::cache::warm::WarmError> for JobError {
    fn from(e: crate::cache::warm::WarmError) -> Self {
        JobError::Retry(e.to_string())
    }
}

impl Job for CacheWarmJob {
    const KIND: &'static str = "cache.warm";
    type Args = CacheWarmArgs;
    type Report = WarmReport;
    type Deps = crate::billing::warm::WarmSources;

    async fn run(&self, _args: CacheWarmArgs, ctx: JobContext<crate::billing::warm::WarmSources>) -> Result<WarmReport, JobError> {
        // A job that names a tenant (an app service's, through intake) warms that tenant only.
        match ctx.tenant {
            Some(tenant) => Ok(crate::billing::warm::run_tenant(&ctx.state, tenant).await?),
            None => Ok(crate::billing::warm::run(&ctx.state).await?),
        }
    }
}
