//! Transactional email: the outbox (rows written in the transaction that decided to send),
//! Ballast's own templates kept in templates/email/ (compiled in; app services send theirs
//! through `compose`, from templates/app_email/), and the SMTP sender (`smtp`).
//!
//! An email exists once per dedup key (a unique column), and its Message-ID is derived from
//! that key, so even a resend after an ambiguous SMTP failure is recognisable downstream.

pub mod compose;
pub mod outbox;
pub mod smtp;

use minijinja::Environment;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::newtypes::TenantId;

/// The job kind that sends one outbox row.
pub const JOB_KIND: &str = "email.send";

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// A template failed to render (a bug in a template or its variables).
    #[error("template {0}: {1}")]
    Template(&'static str, String),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

/// The templates there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// Dunning day 0.
    PaymentFailed,
    /// Dunning day 10.
    PaymentWarning,
    /// customer.subscription.trial_will_end.
    TrialEnding,
    /// invoice.upcoming.
    UpcomingRenewal,
    /// 80 % of a metered limit.
    UsageWarning,
    /// A tenant provisioned (POST /v1/tenants).
    Welcome,
    /// invoice.payment_action_required: the customer must confirm (3-D Secure).
    PaymentActionRequired,
    /// A dunning case closed by the invoice's payment.
    PaymentRecovered,
    /// An outbound webhook endpoint disabled after failing for days.
    EndpointDisabled,
    /// A new subscription's first payment failed (`incomplete`): complete it within 23 hours.
    CompletePayment,
    /// invoice.will_be_due: a sent invoice falls due in a few days.
    InvoiceDueSoon,
}

impl Template {
    /// Every template.
    pub const ALL: [Template; 11] = [
        Template::PaymentFailed,
        Template::PaymentWarning,
        Template::TrialEnding,
        Template::UpcomingRenewal,
        Template::UsageWarning,
        Template::Welcome,
        Template::PaymentActionRequired,
        Template::PaymentRecovered,
        Template::EndpointDisabled,
        Template::CompletePayment,
        Template::InvoiceDueSoon,
    ];

    /// The template's name (its files in templates/email/).
    pub fn name(self) -> &'static str {
        match self {
            Template::PaymentFailed => "payment_failed",
            Template::PaymentWarning => "payment_warning",
            Template::TrialEnding => "trial_ending",
            Template::UpcomingRenewal => "upcoming_renewal",
            Template::UsageWarning => "usage_warning",
            Template::Welcome => "welcome",
            Template::PaymentActionRequired => "payment_action_required",
            Template::PaymentRecovered => "payment_recovered",
            Template::EndpointDisabled => "webhook_endpoint_disabled",
            Template::CompletePayment => "complete_payment",
            Template::InvoiceDueSoon => "invoice_due_soon",
        }
    }

    /// Parses a template name (the dunning policy names them).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter()
            .find(|t| t.name() == s)
    }

    fn sources(self) -> [&'static str; 3] {
        macro_rules! files {
            ($n:literal) => {
                [
                    include_str!(concat!("../../templates/email/", $n, ".subject")),
                    include_str!(concat!("../../templates/email/", $n, ".txt")),
                    include_str!(concat!("../../templates/email/", $n, ".html")),
                ]
            };
        }
        match self {
            Template::PaymentFailed => files!("payment_failed"),
            Template::PaymentWarning => files!("payment_warning"),
            Template::TrialEnding => files!("trial_ending"),
            Template::UpcomingRenewal => files!("upcoming_renewal"),
            Template::UsageWarning => files!("usage_warning"),
            Template::Welcome => files!("welcome"),
            Template::PaymentActionRequired => files!("payment_action_required"),
            Template::PaymentRecovered => files!("payment_recovered"),
            Template::EndpointDisabled => files!("webhook_endpoint_disabled"),
            Template::CompletePayment => files!("complete_payment"),
            Template::InvoiceDueSoon => files!("invoice_due_soon"),
        }
    }

    /// Subject, text and HTML bodies for `vars`. HTML is auto-escaped; text is not.
    pub fn render(self, vars: &serde_json::Value) -> Result<(String, String, String), EmailError> {
        let [subject, text, html] = self.sources();
        let env = environment();
        let err = |e: minijinja::Error| EmailError::Template(self.name(), e.to_string());
        let render = |name: &str, src: &str| env.render_named_str(name, src, vars).map_err(err);
        Ok((render("subject.txt", subject)?.trim().to_owned(), render("body.txt", text)?, render("body.html", html)?))
    }
}

/// The template environment every email renders in: HTML bodies auto-escape their variables,
/// subjects and text bodies do not.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| if name.ends_with(".html") { minijinja::AutoEscape::Html } else { minijinja::AutoEscape::None });
    env
}

/// The Message-ID of the email with `dedup_key`: stable, so a resend is the same message.
pub fn message_id(dedup_key: &str) -> String {
    let digest = hex::encode(Sha256::digest(dedup_key.as_bytes()));
    format!("<{}@ballast>", &digest[..32])
}

/// Money for people: 2000 usd → "USD 20.00", 500 jpy → "JPY 500".
pub fn money(amount: &crate::newtypes::Money) -> String {
    amount.to_string()
}

/// An email to queue.
#[derive(Debug, Clone)]
pub struct NewEmail {
    /// Makes the email exist once.
    pub dedup_key: String,
    /// Which template.
    pub template: Template,
    /// Recipient.
    pub to: String,
    /// Template variables.
    pub vars: serde_json::Value,
}

/// Writes an email into the outbox in the caller's transaction; `None` when the dedup key
/// already exists. The caller queues [`JOB_KIND`] for the id after commit.
pub async fn queue(conn: &mut PgConnection, tenant: TenantId, email: &NewEmail) -> Result<Option<uuid::Uuid>, EmailError> {
    let (subject, text, html) = email.template.render(&email.vars)?;
    Ok(insert(conn, tenant, &email.dedup_key, email.template.name(), &email.to, [&subject, &text, &html], None).await?)
}

/// The outbox row of a rendered email (subject, text, HTML); `None` when `dedup_key` exists.
/// `from` is an app email's sender; Ballast's own go from the billing sender (`None`). `conn`
/// is in a transaction: two writers of one key wait for each other on its advisory lock until
/// the first commits, and the second then finds its row. The key is not left to a unique index:
/// the outbox is partitioned by month (0.7.0), and no unique index spans months. `ON CONFLICT
/// DO NOTHING` still yields to the unique index a table not yet partitioned has, which members
/// before 0.6.0 insert under without the lock.
async fn insert(
    conn: &mut PgConnection,
    tenant: TenantId,
    dedup_key: &str,
    template: &str,
    to: &str,
    [subject, text, html]: [&str; 3],
    from: Option<&str>,
) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('email_outbox:' || $1, 0))").bind(dedup_key).execute(&mut *conn).await?;
    sqlx::query_scalar(
        "INSERT INTO email_outbox (id, tenant_id, dedup_key, template, to_address, subject, body_text, body_html, message_id, from_address)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE NOT EXISTS (SELECT 1 FROM email_outbox WHERE dedup_key = $3)
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(tenant.0)
    .bind(dedup_key)
    .bind(template)
    .bind(to)
    .bind(subject)
    .bind(text)
    .bind(html)
    .bind(message_id(dedup_key))
    .bind(from)
    .fetch_optional(conn)
    .await
}

/// The `email.send` job's arguments: the outbox row to send.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    /// email_outbox.id.
    pub outbox_id: uuid::Uuid,
}

impl crate::queue::job::JobArgs for SendArgs {
    const KIND: &'static str = JOB_KIND;
}

/// The id of an outbox row's send job: the same whoever pushes it (the writer after commit,
/// or the sweep after a lost push), so an app following the job (`GET /v1/jobs/{id}`) follows
/// the one that sends.
pub fn job_id(outbox_id: uuid::Uuid) -> crate::newtypes::JobId {
    crate::newtypes::JobId(format!("email_{outbox_id}"))
}

/// Queues the send job of outbox rows (after their transaction committed). Idempotent per row.
/// Tracked: rows an app service asked for have a `job_status` row under [`job_id`] (the
/// worker's update finds none for Ballast's own emails).
pub async fn push(queue: &crate::queue::JobQueue, tenant: TenantId, ids: &[uuid::Uuid]) -> Result<(), crate::queue::QueueError> {
    for id in ids {
        let mut req = crate::queue::EnqueueRequest::typed(&SendArgs { outbox_id: *id });
        req.tenant = Some(tenant);
        req.id = Some(job_id(*id));
        req.tracked = true;
        req.idempotency_key = Some(format!("email:{id}"));
        queue.enqueue(req).await?;
    }
    Ok(())
}

/// Queues the send job of pending rows older than `older_than` (their push was lost: a crash
/// or Redis down after commit). System pool: the sweep spans tenants. Bounded per run.
pub async fn sweep(pool: &crate::db::SystemPool, queue: &crate::queue::JobQueue, older_than: chrono::Duration) -> Result<usize, crate::queue::QueueError> {
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "SELECT id, tenant_id FROM email_outbox WHERE status = 'pending' AND created_at < $1 ORDER BY created_at LIMIT 1000",
    )
    .bind(chrono::Utc::now() - older_than)
    .fetch_all(&pool.0)
    .await?;
    for (id, tenant) in &rows {
        push(queue, TenantId(*tenant), &[*id]).await?;
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_html_is_escaped() {
        let vars = serde_json::json!({"name": "<Ann>", "amount": "USD 20.00", "invoice": "in_1", "days_left": 4,
            "ends_on": "2026-12-01", "renews_on": "2026-12-01", "has_payment_method": false,
            "percent": 80, "metric": "api_calls", "month": "2026-12", "used": 8, "limit": 10, "overage": false,
            "url": "https://example.com/hook", "endpoint_id": "e1", "failing_since": "2026-11-28 09:00 UTC"});
        for t in Template::ALL {
            let (subject, text, html) = t.render(&vars).unwrap_or_else(|e| panic!("{}: {e}", t.name()));
            assert!(!subject.is_empty() && !subject.contains('\n'), "{subject}");
            assert!(text.contains("<Ann>"), "{text}");
            assert!(html.contains("&lt;Ann&gt;") && !html.contains("<Ann>"), "{html}");
            assert_eq!(Template::parse(t.name()), Some(t));
        }
        assert_eq!(money(&crate::newtypes::Money::new(2005, "usd")), "USD 20.05");
        assert_eq!(message_id("k"), message_id("k"));
        assert_ne!(message_id("k"), message_id("l"));
    }
}
