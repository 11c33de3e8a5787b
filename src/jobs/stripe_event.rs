//! `stripe.event`: applies one inbox row to the billing mirror ([`crate::stripe::apply`]).
//! The adapter decodes the job, calls the apply and maps its outcome: a refusal is never
//! retried, anything else is.

use super::kind::{Job, JobContext, JobError};
use crate::stripe::apply::{self, ApplyDeps, ApplyError, ApplyReport};
use crate::stripe::inbox;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeEventJob;

impl From<ApplyError> for JobError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Refused(msg) => JobError::Cancel(msg),
            ApplyError::Retry(msg) => JobError::Retry(msg),
        }
    }
}

impl Job for StripeEventJob {
    const KIND: &'static str = <inbox::ApplyEvent as crate::queue::job::JobArgs>::KIND;
    type Args = inbox::ApplyEvent;
    type Report = ApplyReport;
    type Deps = ApplyDeps;

    async fn run(&self, args: inbox::ApplyEvent, ctx: JobContext<ApplyDeps>) -> Result<ApplyReport, JobError> {
        Ok(apply::apply(&ctx.state, &args.event_id, args.tenant, args.created).await?)
    }
}
