//! `stripe.refetch`: an event that tied with the mirror (same second) is applied with the
//! object's current state, read from Stripe first with no transaction open. Its own queue and
//! concurrency: while Stripe is slow these runs wait, and `stripe.event` keeps applying the
//! events that need no call.

use super::kind::{Job, JobContext, JobError};
use super::stripe_event::{StripeEventReport, apply_event};
use crate::stripe::inbox::RefetchEvent;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeRefetchJob;

impl Job for StripeRefetchJob {
    const KIND: &'static str = <RefetchEvent as crate::queue::job::JobArgs>::KIND;
    type Args = RefetchEvent;
    type Report = StripeEventReport;

    async fn run(&self, args: RefetchEvent, ctx: JobContext) -> Result<StripeEventReport, JobError> {
        let result = match ctx.state.stripe.retrieve(args.kind, &args.object_id).await {
            Ok(object) => apply_event(&args.event_id, Some((args.object_id, object)), &ctx).await,
            Err(e) => Err(JobError::Retry(format!("re-fetch of {}: {e}", args.object_id))),
        };
        if let Err(e) = &result {
            // Kept on the inbox row for operators, as stripe.event does; best effort.
            let _ = crate::stripe::inbox::record_failure(&ctx.state.system_pool, &args.event_id, &e.to_string()).await;
        }
        result
    }
}
