//! `stripe.refetch`: an event that tied with the mirror (same second) is applied with the
//! object's current state, read from Stripe first with no transaction open. Its own queue and
//! concurrency: while Stripe is slow these runs wait, and `stripe.event` keeps applying the
//! events that need no call.

use super::kind::{Job, JobContext, JobError};
use crate::stripe::apply::{self, ApplyDeps, ApplyReport};
use crate::stripe::inbox::RefetchEvent;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeRefetchJob;

impl Job for StripeRefetchJob {
    const KIND: &'static str = <RefetchEvent as crate::queue::job::JobArgs>::KIND;
    type Args = RefetchEvent;
    type Report = ApplyReport;
    type Deps = ApplyDeps;

    async fn run(&self, args: RefetchEvent, ctx: JobContext<ApplyDeps>) -> Result<ApplyReport, JobError> {
        match ctx.state.billing.stripe.retrieve(args.kind, &args.object_id).await {
            Ok(object) => Ok(apply::apply_fetched(&ctx.state, &args.event_id, args.object_id, object).await?),
            Err(e) => {
                let error = format!("re-fetch of {}: {e}", args.object_id);
                // Kept on the inbox row for operators, as stripe.event does; best effort.
                let _ = crate::stripe::inbox::record_failure(&ctx.state.billing.system_pool, &args.event_id, &error).await;
                Err(JobError::Retry(error))
            }
        }
    }
}
