//! `usage.flush`: recorded usage items into the ledger, exactly once; ledger rows to Stripe.
//! Stripe unavailable (429, 5xx) → retried with the kind's backoff; rows Stripe refuses are
//! marked dead on the ledger with the reason.

use serde::Deserialize;

use super::kind::{Job, JobContext, JobError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageFlushJob;

/// No arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageFlushArgs {
    /// Also flush the minute still open (on-call's "flush now"; the schedule leaves it).
    #[serde(default)]
    pub include_open: bool,
}

impl Job for UsageFlushJob {
    const KIND: &'static str = "usage.flush";
    type Args = UsageFlushArgs;
    type Report = crate::usage::flush::FlushReport;
    type Deps = crate::usage::Deps;

    async fn run(&self, args: UsageFlushArgs, ctx: JobContext<crate::usage::Deps>) -> Result<crate::usage::flush::FlushReport, JobError> {
        let report = crate::usage::flush::run(&ctx.state, chrono::Utc::now(), args.include_open).await.map_err(|e| JobError::Retry(e.to_string()))?;
        Ok(report)
    }
}
