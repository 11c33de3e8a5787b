//! `cache.warm`: fills the plan catalogue, feature flags and every active tenant's entitlements
//! (cron, and on demand after a deploy or a Redis restart). Safe at any time: stores go through
//! the load lock, so it never writes over a newer invalidation.

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

    async fn run(&self, _args: CacheWarmArgs, ctx: JobContext) -> Result<WarmReport, JobError> {
        Ok(crate::billing::warm::run(ctx.state.warm_sources()).await?)
    }
}
