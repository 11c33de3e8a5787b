//! Sending over SMTP with lettre: plain (loopback relays, tests), STARTTLS or implicit TLS,
//! optional credentials. Failures are sorted into transient (4xx, connection refused, TLS or
//! network trouble: retry) and permanent (5xx: dead-letter).

use lettre::message::MultiPart;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{Settings, SmtpSecurity};

/// Why an email was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later.
    #[error("transient SMTP failure: {0}")]
    Transient(String),
    /// Will not succeed by retrying (a 5xx answer, a malformed address).
    #[error("permanent SMTP failure: {0}")]
    Permanent(String),
}

/// The configured SMTP transport (connections are opened on first send, and pooled).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish_non_exhaustive()
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Recipient.
    pub to: &'a str,
    /// Subject.
    pub subject: &'a str,
    /// Text body.
    pub text: &'a str,
    /// HTML body.
    pub html: &'a str,
    /// `<…@ballast>`.
    pub message_id: &'a str,
    /// The sender of an app's email; `None` for Ballast's own, from the billing sender.
    pub from: Option<&'a str>,
}

impl Mailer {
    /// A transport from settings.
    pub fn from_settings(s: &Settings) -> Result<Self, lettre::transport::smtp::Error> {
        let builder = match s.smtp_security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.smtp_host),
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.smtp_host)?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.smtp_host)?,
        };
        let mut builder = builder.port(s.smtp_port).timeout(Some(std::time::Duration::from_secs(20)));
        if let (Some(user), Some(pass)) = (&s.smtp_username, &s.smtp_password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.expose_secret().to_owned()));
        }
        Ok(Self { transport: builder.build(), from: s.email_from.clone() })
    }

    /// Opens a connection to the relay and says hello (the site-down check); true when the
    /// relay answered.
    pub async fn check(&self) -> Result<bool, lettre::transport::smtp::Error> {
        self.transport.test_connection().await
    }

    /// Sends one message.
    pub async fn send(&self, m: &Outgoing<'_>) -> Result<(), SendError> {
        let permanent = |e: String| SendError::Permanent(e);
        let message = Message::builder()
            .from(m.from.unwrap_or(&self.from).parse().map_err(|e| permanent(format!("from address: {e}")))?)
            .to(m.to.parse().map_err(|e| permanent(format!("to address {:?}: {e}", m.to)))?)
            .subject(m.subject)
            .message_id(Some(m.message_id.to_owned()))
            .multipart(MultiPart::alternative_plain_html(m.text.to_owned(), m.html.to_owned()))
            .map_err(|e| permanent(format!("message: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }
}
