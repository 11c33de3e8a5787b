//! `email.send`: sends one outbox row over SMTP, once. A sent or dead row is left alone (a
//! duplicate job does nothing); a transient failure (4xx, connection refused) is retried with
//! the kind's backoff; a permanent one (5xx) marks the row dead and dead-letters the job. The
//! row is claimed in one short transaction and the outcome recorded in another: the relay is
//! never waited on with a connection or a lock held.


use super::kind::{Job, JobContext, JobError};
use crate::email::outbox::{self, Claim, OutboxStatus};
use crate::email::smtp::{Outgoing, SendError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmailSendJob;

/// How long a run owns a row it is sending: past the kind's 60 s timeout, so a live run is
/// never doubled, and short enough that a dead run's row is sent again soon.
const SEND_LEASE: std::time::Duration = std::time::Duration::from_secs(90);


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
    type Deps = super::deps::Email;

    async fn run(&self, args: crate::email::SendArgs, ctx: JobContext<super::deps::Email>) -> Result<EmailSendReport, JobError> {
        let tenant = ctx.tenant.ok_or_else(|| JobError::Cancel("email.send needs the tenant of its outbox row".into()))?;
        let state = &ctx.state;
        let mut tx = state.tenant_pool.begin(tenant).await?;
        let claim = outbox::claim(&mut tx, args.outbox_id, &ctx.job_id.to_string(), SEND_LEASE).await?;
        tx.commit().await?;
        let row = match claim {
            Claim::Send(row) => row,
            Claim::Done(status) => return Ok(EmailSendReport { outbox_id: args.outbox_id, outcome: format!("already {}", status.as_str()), message_id: None }),
            // Another run is sending it: look again when its claim ends (it may die mid-send).
            Claim::Busy(until) => return Err(JobError::Snooze((until - chrono::Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_secs(1))),
            Claim::Missing => return Err(JobError::Cancel(format!("no outbox row {}", args.outbox_id))),
        };
        let outgoing = Outgoing { to: &row.to_address, subject: &row.subject, text: &row.body_text, html: &row.body_html, message_id: &row.message_id, from: row.from_address.as_deref() };
        crate::fault::point("email.send.before_send");
        // No transaction is open and no lock held while the relay answers.
        let result = state.mailer.send(&outgoing).await;
        let (status, error) = match &result {
            Ok(()) => (OutboxStatus::Sent, None),
            Err(SendError::Permanent(e)) => (OutboxStatus::Dead, Some(e.as_str())),
            Err(SendError::Transient(e)) => (OutboxStatus::Pending, Some(e.as_str())),
        };
        let mut tx = state.tenant_pool.begin(tenant).await?;
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

/// App services send an email through `POST /v1/jobs`: checked (template, address, variables
/// both ways), counted against the tenant's email limit, written to the outbox with its job's
/// status row before the answer (`email::compose::accept`), then queued as every outbox row is.
impl super::intake::Intake for EmailSendJob {
    async fn accept(&self, state: super::deps::Email, req: super::intake::IntakeRequest) -> Result<super::intake::Accepted, super::intake::IntakeError> {
        use super::intake::IntakeError;
        use crate::email::compose::{AcceptError, Compose};
        use crate::ratelimit::{Limit, PolicyName, Request, Subject, Verdict};
        let compose: Compose = serde_json::from_value(req.payload)
            .map_err(|error| IntakeError::Payload { kind: crate::email::JOB_KIND, expected: "{template, to, variables}", error })?;
        let invalid = |e: crate::email::compose::ComposeError| {
            let field = e.variable().map(|v| ("variable", v.to_owned()));
            IntakeError::Invalid { code: "invalid_email", message: e.to_string(), field }
        };
        let unavailable = |e: AcceptError| IntakeError::Unavailable(e.to_string());
        // Checked first, and a repeat answered without counting: the limit counts new emails.
        let rendered = state.templates.render(&compose).map_err(invalid)?;
        let (repeat, tenant_name) = crate::email::compose::prior(&state.tenant_pool, req.tenant, req.idempotency_key.as_deref()).await.map_err(unavailable)?;
        if !repeat {
            let limit = Limit { policy: PolicyName::TenantEmails, subject: Subject::Tenant(req.tenant), window: state.limiter.policies.tenant_emails_for(req.tenant) };
            match state.limiter.decide(&Request { limits: vec![limit], ..Default::default() }).await {
                Ok(Verdict::Admit(_)) => {}
                Ok(refused) => return Err(IntakeError::Limited(refused)),
                // The limit guards against a runaway sender; an email is not refused because
                // Redis cannot count it (the tenant's write limit failed open the same way).
                Err(e) => tracing::warn!(message = "Email limit not checked.", error = %e),
            }
        }
        let from = crate::email::compose::sender(&state.app_email_from, &tenant_name);
        let accepted = match crate::email::compose::accept(&state.tenant_pool, req.tenant, &compose, &rendered, &from, req.idempotency_key.as_deref()).await {
            Ok(a) => a,
            Err(AcceptError::Invalid(e)) => return Err(invalid(e)),
            Err(e @ AcceptError::Db(_)) => return Err(unavailable(e)),
        };
        // Committed: a lost push is queued by the outbox sweep, under the same job id.
        if let Err(e) = crate::email::push(&state.queue, req.tenant, &[accepted.outbox_id]).await {
            tracing::warn!(message = "Email accepted; its send job is queued by the outbox sweep.", error = %e);
        }
        Ok(super::intake::Accepted { outbox_id: Some(accepted.outbox_id), ..super::intake::Accepted::job(accepted.job_id.0, crate::email::JOB_KIND, accepted.duplicate) })
    }
}
