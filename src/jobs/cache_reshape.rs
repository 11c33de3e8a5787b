//! `cache.reshape` (admin job, runbook cache-reshape): after a deploy that bumped a cached
//! family's shape version, warms the new keys and removes the old versions with SCAN in
//! batches. A dry run (the default) only counts.

use super::kind::{JobContext, JobError, JobReport};
use super::admin::AdminJob;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheReshapeJob;

impl AdminJob for CacheReshapeJob {
    const KIND: &'static str = "cache.reshape";
    type Params = super::admin::NoParams;

    async fn run(&self, _params: &super::admin::NoParams, execute: bool, ctx: &JobContext) -> Result<JobReport, JobError> {
        // The new keys are warmed first, so readers find them once the old ones are gone.
        let warm = if execute { Some(crate::billing::warm::run(ctx.state.warm_sources()).await?) } else { None };
        let report = crate::cache::reshape::run(&ctx.state.cache, &ctx.state.redis, execute).await?;
        let mut out = serde_json::to_value(&report).unwrap_or_default();
        out["warm"] = serde_json::to_value(&warm).unwrap_or_default();
        Ok(out)
    }
}
