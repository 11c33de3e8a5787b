//! `cache.reshape` (admin job, runbook cache-reshape): after a deploy that bumped a cached
//! family's shape version, warms the new keys and removes the old versions with SCAN in
//! batches. A dry run (the default) only counts.

use super::kind::{JobContext, JobError};
use super::admin::AdminJob;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheReshapeJob;

/// What a reshape did: the warm first (execute only), then the count and removal per family.
#[derive(Debug, serde::Serialize)]
pub struct CacheReshapeReport {
    /// The warm of the new keys (execute only).
    pub warm: Option<crate::billing::warm::WarmReport>,
    /// Counts and removals per family.
    #[serde(flatten)]
    pub reshape: crate::cache::reshape::ReshapeReport,
}

impl AdminJob for CacheReshapeJob {
    const KIND: &'static str = "cache.reshape";
    type Params = super::admin::NoParams;
    type Report = CacheReshapeReport;
    type Deps = crate::billing::warm::WarmSources;

    async fn run(&self, _params: &super::admin::NoParams, execute: bool, ctx: &JobContext<crate::billing::warm::WarmSources>) -> Result<CacheReshapeReport, JobError> {
        // The new keys are warmed first, so readers find them once the old ones are gone.
        let warm = if execute { Some(crate::billing::warm::run(&ctx.state).await?) } else { None };
        let reshape = crate::cache::reshape::run(&ctx.state.cache, execute).await?;
        Ok(CacheReshapeReport { warm, reshape })
    }
}
