//! `cache.reshape` (admin job, runbook cache-reshape): after a deploy that bumped a cached
//! family's shape version, warms the new keys and removes the old versions with SCAN in
//! batches. A dry run (the default) only counts.

use serde::Deserialize;

use super::{Job, JobContext, JobError, JobReport};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheReshapeJob;

/// Arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheReshapeArgs {
    /// Warm and delete; without it, count only.
    #[serde(default)]
    pub execute: bool,
    /// Who asked, for the audit log.
    #[serde(default)]
    pub actor: Option<String>,
}

impl Job for CacheReshapeJob {
    const KIND: &'static str = "cache.reshape";
    type Args = CacheReshapeArgs;

    async fn run(&self, args: CacheReshapeArgs, ctx: JobContext) -> Result<JobReport, JobError> {
        let actor = args.actor.unwrap_or_else(|| "queue".to_owned());
        let report = crate::cache::reshape::run(&ctx.state, args.execute, &actor).await?;
        Ok(serde_json::to_value(&report).unwrap_or_default())
    }
}
