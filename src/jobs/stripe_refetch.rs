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
        let object = ctx.state.stripe.retrieve(args.kind, &args.object_id).await.map_err(|e| JobError::Retry(e.to_string()))?;
        apply_event(&args.event_id, Some((args.object_id, object)), &ctx).await
    }
}
