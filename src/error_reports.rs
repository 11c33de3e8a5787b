//! Error reports with the release: unexpected errors — a job dead-lettered, a handler that
//! panicked, an intake request answered 5xx — sent to a Sentry-compatible endpoint when
//! `SENTRY_DSN` is set (the `sentry` crate), tagged with the release (version and commit),
//! the environment, the job kind or route, and the tenant. Never a payload, a key or a secret:
//! an error's text is reported with anything quoted in it, and anything shaped like a key,
//! replaced.

use sentry::protocol::Level;

/// Keeps the reporter running; dropping it flushes what is queued.
pub struct Reporter {
    _guard: Option<sentry::ClientInitGuard>,
}

/// Starts reporting to `dsn` (none: reports go nowhere, at no cost).
pub fn init(dsn: Option<&secrecy::SecretString>, environment: &str) -> Reporter {
    let Some(dsn) = dsn else { return Reporter { _guard: None } };
    let dsn = match secrecy::ExposeSecret::expose_secret(dsn).parse::<sentry::types::Dsn>() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(message = "SENTRY_DSN does not parse; errors are not reported.", error = %e);
            return Reporter { _guard: None };
        }
    };
    // Its HTTP client is reqwest's without a default TLS provider (the binary installs ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(crate::RELEASE.into());
    options.environment = Some(environment.to_owned().into());
    options.send_default_pii = false;
    options.attach_stacktrace = false;
    Reporter { _guard: Some(sentry::init(options)) }
}

/// What an error report is about.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A job of this kind.
    Job {
        /// Its kind.
        kind: &'a str,
        /// Dead-lettered or panicked.
        what: &'static str,
    },
    /// An intake route answered with this status.
    Route {
        /// The route's pattern.
        route: &'a str,
        /// The method.
        method: &'a str,
        /// The status.
        status: u16,
    },
}

/// Reports `error` from `source` for `tenant`, with the text scrubbed.
pub fn report(source: Source<'_>, tenant: Option<uuid::Uuid>, error: &str) {
    if sentry::Hub::current().client().is_none_or(|c| !c.is_enabled()) {
        return;
    }
    let text = scrub(error);
    sentry::with_scope(
        |scope| {
            match source {
                Source::Job { kind, what } => {
                    scope.set_tag("job.kind", kind);
                    scope.set_tag("job.outcome", what);
                }
                Source::Route { route, method, status } => {
                    scope.set_tag("http.route", route);
                    scope.set_tag("http.method", method);
                    scope.set_tag("http.status_code", status);
                }
            }
            if let Some(t) = tenant {
                scope.set_tag("tenant.id", t);
            }
        },
        || {
            let title = match source {
                Source::Job { kind, what } => format!("{kind} job {what}: {text}"),
                Source::Route { route, method, status } => format!("{method} {route} answered {status}"),
            };
            sentry::capture_message(&title, Level::Error)
        },
    );
}

/// An error's text without what may be a customer's data or a credential: quoted strings and
/// long key-like tokens are replaced.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(300));
    let mut quoted = None::<char>;
    for c in text.chars().take(300) {
        match quoted {
            Some(q) if c == q => {
                out.push(c);
                quoted = None;
            }
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => {
                out.push(c);
                out.push_str("[redacted]");
                quoted = Some(c);
            }
            None => out.push(c),
        }
    }
    out.split(' ')
        .map(|w| if w.len() >= 20 && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') { "[redacted]" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_values_and_key_shaped_tokens_are_scrubbed() {
        let s = super::scrub(r#"invalid type: string "4242 4242 4242 4242", expected u64 with sk_live_abcdefghijklmnopqrstuvwxyz and field `card`"#);
        assert!(!s.contains("4242") && !s.contains("sk_live") && !s.contains("card"), "{s}");
        assert!(s.contains("invalid type") && s.contains("expected u64"), "{s}");
    }
}
