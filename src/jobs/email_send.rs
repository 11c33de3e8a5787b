//! `email.send`: sends one outbox row over SMTP, once. A sent or dead row is left alone (a
//! duplicate job does nothing); a transient failure (4xx, connection refused) is retried with
//! the kind's backoff; a permanent one (5xx) marks the row dead and dead-letters the job.


use super::kind::{Job, JobContext, JobError};
use crate::email::outbox::{self, OutboxStatus};
use crate::email::smtp::{Outgoing, SendError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmailSendJob;


/// What a send did.
#[derive(Debug, serde::Serialize)]
pub struct EmailSendReport {
    /// The outbox row.
    pub outbox_id: uuid::Uuid,
    /// `sent`, or `already sent` / `already dead` for a duplicate job.
    pub outcome: String,
    /// The Message-ID the relay accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl Job for EmailSendJob {
    const KIND: &'static str = <crate::email::SendArgs as crate::queue::job::JobArgs>::KIND;
    type Args = crate::email::SendArgs;
    type Report = EmailSendReport;

    async fn run(&self, args: crate::email::SendArgs, ctx: JobContext) -> Result<EmailSendReport, JobError> {
        let tenant = ctx.tenant.ok_or_else(|| JobError::Cancel("email.send needs the tenant of its outbox row".into()))?;
        let state = &ctx.state;
        let mut tx = state.tenant_pool.begin(tenant).await?;
        let row = outbox::lock(&mut tx, args.outbox_id).await?;
        let Some(row) = row else { return Err(JobError::Cancel(format!("no outbox row {}", args.outbox_id))) };
        if row.status() != Some(OutboxStatus::Pending) {
            return Ok(EmailSendReport { outbox_id: args.outbox_id, outcome: format!("already {}", row.status), message_id: None });
        }
        let outgoing = Outgoing { to: &row.to_address, subject: &row.subject, text: &row.body_text, html: &row.body_html, message_id: &row.message_id };
        crate::fault::point("email.send.before_send");
        let result = state.mailer.send(&outgoing).await;
        let (status, error) = match &result {
            Ok(()) => (OutboxStatus::Sent, None),
            Err(SendError::Permanent(e)) => (OutboxStatus::Dead, Some(e.as_str())),
            Err(SendError::Transient(e)) => (OutboxStatus::Pending, Some(e.as_str())),
        };
        outbox::record_attempt(&mut tx, args.outbox_id, status, error).await?;
        tx.commit().await?;
        crate::fault::point("email.send.after_commit");
        match result {
            Ok(()) => Ok(EmailSendReport { outbox_id: args.outbox_id, outcome: "sent".into(), message_id: Some(row.message_id) }),
            Err(SendError::Permanent(e)) => Err(JobError::Cancel(format!("permanent SMTP failure: {e}"))),
            Err(SendError::Transient(e)) => Err(JobError::Retry(format!("transient SMTP failure: {e}"))),
        }
    }
}
