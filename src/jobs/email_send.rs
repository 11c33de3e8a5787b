//! `email.send`: sends one outbox row over SMTP, once. A sent or dead row is left alone (a
//! duplicate job does nothing); a transient failure (4xx, connection refused) is retried with
//! the kind's backoff; a permanent one (5xx) marks the row dead and dead-letters the job.

use serde::Deserialize;

use super::kind::{Job, JobContext, JobError, JobReport};
use crate::email::smtp::{Outgoing, SendError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmailSendJob;

/// Arguments: the outbox row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSendArgs {
    /// email_outbox.id.
    pub outbox_id: uuid::Uuid,
}

#[derive(sqlx::FromRow)]
struct Row {
    status: String,
    to_address: String,
    subject: String,
    body_text: String,
    body_html: String,
    message_id: String,
}

impl Job for EmailSendJob {
    const KIND: &'static str = crate::email::JOB_KIND;
    type Args = EmailSendArgs;

    async fn run(&self, args: EmailSendArgs, ctx: JobContext) -> Result<JobReport, JobError> {
        let tenant = ctx.tenant.ok_or_else(|| JobError::Cancel("email.send needs the tenant of its outbox row".into()))?;
        let state = &ctx.state;
        let mut tx = state.tenant_pool.begin(tenant).await?;
        // Row lock for the send: a duplicate job waits, then finds the row sent.
        let row: Option<Row> = sqlx::query_as(
            "SELECT status, to_address, subject, body_text, body_html, message_id FROM email_outbox WHERE id = $1 FOR UPDATE",
        )
        .bind(args.outbox_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(JobError::Cancel(format!("no outbox row {}", args.outbox_id))) };
        if row.status != "pending" {
            return Ok(serde_json::json!({"outbox_id": args.outbox_id, "outcome": format!("already {}", row.status)}));
        }
        let outgoing = Outgoing { to: &row.to_address, subject: &row.subject, text: &row.body_text, html: &row.body_html, message_id: &row.message_id };
        crate::fault::point("email.send.before_send");
        let result = state.mailer.send(&outgoing).await;
        let (status, error) = match &result {
            Ok(()) => ("sent", None),
            Err(SendError::Permanent(e)) => ("dead", Some(e.clone())),
            Err(SendError::Transient(e)) => ("pending", Some(e.clone())),
        };
        sqlx::query(
            "UPDATE email_outbox SET status = $2, attempts = attempts + 1, last_error = $3,
                 sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE id = $1",
        )
        .bind(args.outbox_id)
        .bind(status)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        crate::fault::point("email.send.after_commit");
        match result {
            Ok(()) => Ok(serde_json::json!({"outbox_id": args.outbox_id, "outcome": "sent", "message_id": row.message_id})),
            Err(SendError::Permanent(e)) => Err(JobError::Cancel(format!("permanent SMTP failure: {e}"))),
            Err(SendError::Transient(e)) => Err(JobError::Retry(format!("transient SMTP failure: {e}"))),
        }
    }
}
