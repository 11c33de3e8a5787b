//! `slo.notify`: delivers one alert transition to the configured webhook, once. Receiver
//! failures are retried with backoff inside the run, then by the queue; a refusal (4xx) marks
//! the notification dead.


use super::kind::{Job, JobContext, JobError};
use crate::slo::notify::NotifyError;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct SloNotifyJob;

/// What a delivery did.
#[derive(Debug, serde::Serialize)]
pub struct SloNotifyReport {
    /// The notification row.
    pub notification: uuid::Uuid,
    /// Sent, or why not.
    pub outcome: crate::slo::notify::Sent,
}

impl Job for SloNotifyJob {
    const KIND: &'static str = <crate::slo::notify::NotifyArgs as crate::queue::job::JobArgs>::KIND;
    type Args = crate::slo::notify::NotifyArgs;
    type Report = SloNotifyReport;
    type Deps = crate::slo::Deps;

    async fn run(&self, args: crate::slo::notify::NotifyArgs, ctx: JobContext<crate::slo::Deps>) -> Result<SloNotifyReport, JobError> {
        match crate::slo::notify::send(&ctx.state, args.notification_id).await {
            Ok(sent) => Ok(SloNotifyReport { notification: args.notification_id, outcome: sent }),
            Err(e @ NotifyError::Refused(_)) => Err(JobError::Cancel(e.to_string())),
            Err(e) => Err(JobError::Retry(e.to_string())),
        }
    }
}
