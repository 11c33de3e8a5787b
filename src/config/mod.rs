//! Typed settings: environment variables first, then an optional TOML file named by
//! `BALLAST_CONFIG`. A missing or malformed setting stops start-up with one line that
//! names the setting; secrets are wrapped so they never reach logs or Debug output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use crate::assets::{self, ConfigDir, ConfigFile};

/// A setting that could not be read. The message always starts with the setting's name.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {setting}: {problem}")]
pub struct ConfigError {
    /// The environment variable (or file key) at fault.
    pub setting: String,
    /// What was wrong with it, in words an operator can act on.
    pub problem: String,
}

impl ConfigError {
    fn new(setting: &str, problem: impl Into<String>) -> Self {
        Self { setting: setting.to_owned(), problem: problem.into() }
    }
}

/// Transport security toward the SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on loopback).
    None,
    /// Upgrade with STARTTLS (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, human-readable when it is.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// The intake's HTTP limits (docs/api.md, "Limits and timeouts").
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time a connection has to deliver a request's headers, from when it opened or its
    /// previous response was sent (`BALLAST_HTTP_HEADER_TIMEOUT_SECS`, 10 s). It is also the
    /// idle timeout of a kept-alive connection.
    pub header_timeout: Duration,
    /// Time to deliver a request's whole body once its headers are in
    /// (`BALLAST_HTTP_BODY_TIMEOUT_SECS`, 15 s); past it the answer is 408.
    pub body_timeout: Duration,
    /// Connections open at once (`BALLAST_HTTP_MAX_CONNECTIONS`, 1,024); more wait to be accepted.
    pub max_connections: usize,
    /// Largest body of an API route other than the webhook (`BALLAST_API_MAX_BODY_BYTES`, 64 KiB).
    pub api_max_body_bytes: usize,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` name the client (`BALLAST_TRUSTED_PROXIES`,
    /// comma-separated CIDRs; none by default, so the peer address is the client).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Everything the binary needs to start. Built once, then passed down as typed values.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL URL of the app role (no BYPASSRLS): the tenant pool.
    pub database_url: SecretString,
    /// PostgreSQL URL of the system role (BYPASSRLS): the few cross-tenant jobs.
    pub system_database_url: SecretString,
    /// PostgreSQL URL of the owner role; only `ballast migrate` needs it.
    pub owner_database_url: Option<SecretString>,
    /// Redis URL for queues, cache, leases and counters; on a cluster, seed nodes, comma-separated.
    pub redis_url: SecretString,
    /// Redis Cluster instead of one Redis (`BALLAST_REDIS_CLUSTER=true`): keys carry hash tags.
    pub redis_cluster: bool,
    /// Prefix of every Redis key and queue name, so several deployments (or tests) share a Redis.
    pub redis_namespace: String,
    /// Where the intake API listens.
    pub listen: SocketAddr,
    /// The job catalogue folder.
    pub jobs_dir: crate::assets::ConfigDir,
    /// How long in-flight jobs get to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Size of each PostgreSQL pool.
    pub db_pool_size: u32,
    /// How long processed and ignored webhook inbox rows are kept (their ids deduplicate
    /// Stripe's retries, which stop after 3 days); older ones are deleted by the sweep.
    pub inbox_retention: Duration,
    /// How long admin job runs and their reports are kept (`BALLAST_ADMIN_RUN_RETENTION_DAYS`, 30).
    pub admin_run_retention: Duration,
    /// Backups and their rehearsals: dumps, pgBackRest, the scratch database.
    pub backups: backups::Backups,
    /// The operator console.
    pub console: console::Console,
    /// The streaming replica for reads that can lag.
    pub replica: replica::ReplicaSettings,
    /// Time partitions: retentions and the archive.
    pub partitions: partitions::PartitionSettings,
    /// The public base URLs `probe.uptime` checks every minute (`BALLAST_PROBE_URLS`,
    /// comma-separated: the load balancer, or each member); none: no uptime checks.
    pub probe_urls: Vec<String>,
    /// An API key with `entitlements:read` the probe reads entitlements with
    /// (`BALLAST_PROBE_API_KEY`); without one, only the webhook is checked.
    pub probe_api_key: Option<SecretString>,
    /// Where unexpected errors are reported (`SENTRY_DSN`, a Sentry-compatible endpoint);
    /// unset: not reported.
    pub sentry_dsn: Option<SecretString>,
    /// The environment error reports are tagged with (`BALLAST_ENVIRONMENT`, production).
    pub environment: String,
    /// Scheduler lease TTL; a new leader takes over within this after the old one dies.
    pub scheduler_lease: Duration,
    /// Worker heartbeat; a dead worker's jobs are recovered after three missed beats.
    pub worker_heartbeat: Duration,
    /// Log filter (tracing EnvFilter syntax).
    pub log_filter: String,
    /// Log format.
    pub log_format: LogFormat,
    /// OpenTelemetry service name (`OTEL_SERVICE_NAME`).
    pub otel_service_name: String,
    /// OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`), when traces are exported.
    pub otel_endpoint: Option<String>,
    /// Webhook signing secrets (`STRIPE_WEBHOOK_SECRET`, comma-separated: two during a rotation).
    pub stripe_webhook_secrets: Vec<SecretString>,
    /// Stripe API key (`STRIPE_SECRET_KEY`); without it objects cannot be re-fetched.
    pub stripe_secret_key: Option<SecretString>,
    /// Stripe API base URL (`STRIPE_API_BASE`): Stripe's, or the simulator's in tests.
    pub stripe_api_base: String,
    /// How long one Stripe API call may take, retries included (`BALLAST_STRIPE_TIMEOUT_SECS`,
    /// 30 s): a Stripe that never answers fails the call, and the job retries with the same
    /// idempotency key, instead of holding a worker slot until the job's own timeout.
    pub stripe_timeout: std::time::Duration,
    /// The Stripe API version Ballast speaks (`BALLAST_STRIPE_API_VERSION`): sent on every call;
    /// the webhook endpoint must be set to it. Only the version this build's client pins.
    pub stripe_api_version: String,
    /// Largest webhook body accepted, in bytes.
    pub webhook_max_bytes: usize,
    /// Allowed skew of a webhook signature's timestamp, both directions.
    pub webhook_tolerance_secs: i64,
    /// The intake's HTTP limits: timeouts, connections, body sizes, trusted proxies.
    pub http: HttpLimits,
    /// The plan catalogue file.
    pub plans_file: crate::assets::ConfigFile,
    /// SMTP relay host.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// Transport security toward the relay.
    pub smtp_security: SmtpSecurity,
    /// SMTP user name, if the relay wants credentials.
    pub smtp_username: Option<String>,
    /// SMTP password.
    pub smtp_password: Option<SecretString>,
    /// The From of every email.
    pub email_from: String,
    /// The dunning policy file.
    pub dunning_file: crate::assets::ConfigFile,
    /// The rate-limit policy file (`BALLAST_LIMITS_FILE`), else the compiled-in policy/limits.toml.
    pub limits_file: crate::assets::ConfigFile,
    /// How long a past_due subscription keeps its plan.
    pub past_due_grace: chrono::Duration,
    /// The most Stripe events of one tenant applied in one transaction: a `stripe.event` job
    /// takes the tenant's other waiting events with its own (1 applies each alone).
    pub webhook_apply_batch: u32,
    /// The SLO definitions (`BALLAST_SLO_FILE`).
    pub slo_file: crate::assets::ConfigFile,
    /// The fleet's health alerts (`BALLAST_ALERTS_FILE`).
    pub alerts_file: crate::assets::ConfigFile,
    /// The email templates app services send (`BALLAST_APP_EMAIL_TEMPLATES_DIR`; the old name
    /// `BALLAST_EMAIL_TEMPLATES_DIR` is refused, naming this one).
    pub email_templates_dir: crate::assets::ConfigDir,
    /// The sender of email app services send (`BALLAST_APP_EMAIL_FROM`): another address than
    /// billing's, so an app's email never speaks in Ballast's billing voice. Its display name
    /// is each tenant's own name.
    pub app_email_from: String,
    /// The keys that seal secrets at rest (`BALLAST_SECRETS_KEYRING`: `id:base64key,…`, the
    /// first seals; unset, the development key, with a warning at start).
    pub secrets_keyring: crate::keyring::Keyring,
    /// The runbook pages (`BALLAST_RUNBOOKS_DIR`).
    pub runbooks_dir: crate::assets::ConfigDir,
    /// Load-test levels and the scheduled target (`BALLAST_LOADTEST_FILE`).
    pub loadtest_file: crate::assets::ConfigFile,
    /// The API key load tests send on `auth = "key"` requests (`BALLAST_LOADTEST_KEY`).
    pub loadtest_key: Option<SecretString>,
    /// Where SLO alert transitions are posted (`BALLAST_SLO_WEBHOOK_URL`); none: logged only.
    pub slo_webhook_url: Option<SecretString>,
    /// PagerDuty's routing key, for the pagerduty notification format.
    pub slo_pagerduty_routing_key: Option<SecretString>,
    /// Outbound webhooks (`BALLAST_OUTBOUND_*`).
    pub outbound: outbound::OutboundWebhooks,
}

/// A source of raw settings: the environment, overlaid on an optional file.
struct Source {
    values: HashMap<String, String>,
}

impl Source {
    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, key: &str, hint: &str) -> Result<&str, ConfigError> {
        self.get(key).ok_or_else(|| ConfigError::new(key, format!("missing ({hint})")))
    }

    fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T, what: &str) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(key, format!("{raw:?} is not {what}"))),
        }
    }

    fn secs_or(&self, key: &str, default: u64) -> Result<Duration, ConfigError> {
        let secs: f64 = self.parse_or(key, default as f64, "a number of seconds")?;
        if !(secs > 0.0 && secs.is_finite()) {
            return Err(ConfigError::new(key, "must be a positive number of seconds"));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

/// A comma-separated list of CIDR ranges or addresses (a bare address is a range of one).
fn cidrs(src: &Source, key: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let Some(raw) = src.get(key) else { return Ok(Vec::new()) };
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::new(key, format!("{p:?} is not a CIDR range like 10.0.0.0/8 or an address")))
        })
        .collect()
}

/// A URL setting that may be unset; checked when set.
fn optional_url(src: &Source, key: &str, schemes: &[&str]) -> Result<Option<SecretString>, ConfigError> {
    src.get(key).map(|raw| check_url(key, raw, schemes).map(|()| SecretString::from(raw.to_owned()))).transpose()
}

fn url_setting(src: &Source, key: &str, schemes: &[&str], hint: &str) -> Result<SecretString, ConfigError> {
    let raw = src.required(key, hint)?;
    check_url(key, raw, schemes)?;
    Ok(SecretString::from(raw.to_owned()))
}

/// `REDIS_URL`: one URL, or a cluster's seed nodes separated by commas, each checked.
fn redis_urls(src: &Source) -> Result<SecretString, ConfigError> {
    let raw = src.required("REDIS_URL", "the Redis URL (a cluster's seed nodes, comma-separated)")?;
    raw.split(',').try_for_each(|url| check_url("REDIS_URL", url.trim(), &["redis", "rediss", "redis+unix"]))?;
    Ok(SecretString::from(raw.to_owned()))
}

fn check_url(key: &str, raw: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = raw.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !schemes.contains(&scheme) || raw.len() <= scheme.len() + 3 {
        // Never echo the value: it may hold a password.
        return Err(ConfigError::new(key, format!("not a URL starting with {}://", schemes.join("://, "))));
    }
    Ok(())
}

impl Settings {
    /// Reads the process environment and, when `BALLAST_CONFIG` names one, a TOML file.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(std::env::vars().collect())
    }

    /// Reads settings from a map of environment variables (tests pass their own).
    pub fn from_map(env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut values = HashMap::new();
        if let Some(path) = env.get("BALLAST_CONFIG").filter(|p| !p.is_empty()) {
            values = file::read_file(path)?;
        }
        values.extend(env);
        let src = Source { values };

        let namespace = src.get("BALLAST_REDIS_NAMESPACE").unwrap_or("ballast").to_owned();
        if namespace.is_empty()
            || !namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::new(
                "BALLAST_REDIS_NAMESPACE",
                "use letters, digits, '_' or '-' only (it prefixes queue names, which may not hold ':' or '.')",
            ));
        }
        let listen_raw = src.get("BALLAST_LISTEN").unwrap_or("127.0.0.1:8080");
        let listen = listen_raw
            .parse()
            .map_err(|_| ConfigError::new("BALLAST_LISTEN", format!("{listen_raw:?} is not an address like 127.0.0.1:8080")))?;
        let log_format = match src.get("BALLAST_LOG_FORMAT").unwrap_or("auto") {
            "auto" => LogFormat::Auto,
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(ConfigError::new("BALLAST_LOG_FORMAT", format!("{other:?} is not one of auto, json, pretty")));
            }
        };
        let otel_endpoint = src.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_owned);
        if let Some(endpoint) = &otel_endpoint {
            check_url("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, &["http", "https"])?;
        }
        let db_pool_size: u32 = src.parse_or("BALLAST_DB_POOL_SIZE", 20, "a whole number")?;
        if db_pool_size == 0 {
            return Err(ConfigError::new("BALLAST_DB_POOL_SIZE", "must be at least 1"));
        }

        let webhook_max_bytes: usize = src.parse_or("BALLAST_WEBHOOK_MAX_BYTES", 256 * 1024, "a number of bytes")?;
        if webhook_max_bytes < 1024 {
            return Err(ConfigError::new("BALLAST_WEBHOOK_MAX_BYTES", "must be at least 1024"));
        }
        let http = HttpLimits {
            header_timeout: src.secs_or("BALLAST_HTTP_HEADER_TIMEOUT_SECS", 10)?,
            body_timeout: src.secs_or("BALLAST_HTTP_BODY_TIMEOUT_SECS", 15)?,
            max_connections: src.parse_or("BALLAST_HTTP_MAX_CONNECTIONS", 1024, "a whole number")?,
            api_max_body_bytes: src.parse_or("BALLAST_API_MAX_BODY_BYTES", 64 * 1024, "a number of bytes")?,
            trusted_proxies: cidrs(&src, "BALLAST_TRUSTED_PROXIES")?,
        };
        if http.max_connections == 0 {
            return Err(ConfigError::new("BALLAST_HTTP_MAX_CONNECTIONS", "must be at least 1"));
        }
        if http.api_max_body_bytes < 1024 {
            return Err(ConfigError::new("BALLAST_API_MAX_BODY_BYTES", "must be at least 1024"));
        }
        let webhook_tolerance_secs: i64 = src.parse_or("BALLAST_WEBHOOK_TOLERANCE_SECS", 300, "a whole number of seconds")?;
        if webhook_tolerance_secs <= 0 {
            return Err(ConfigError::new("BALLAST_WEBHOOK_TOLERANCE_SECS", "must be positive"));
        }
        let grace_days: i64 = src.parse_or("BALLAST_PAST_DUE_GRACE_DAYS", 14, "a whole number of days")?;
        if !(0..=365).contains(&grace_days) {
            return Err(ConfigError::new("BALLAST_PAST_DUE_GRACE_DAYS", "must be between 0 and 365"));
        }
        let webhook_apply_batch: u32 = src.parse_or("BALLAST_WEBHOOK_APPLY_BATCH", 100, "a whole number of events")?;
        if !(1..=1000).contains(&webhook_apply_batch) {
            return Err(ConfigError::new("BALLAST_WEBHOOK_APPLY_BATCH", "must be between 1 and 1000"));
        }
        let smtp_security = match src.get("BALLAST_SMTP_SECURITY").unwrap_or("starttls") {
            "none" => SmtpSecurity::None,
            "starttls" => SmtpSecurity::StartTls,
            "tls" => SmtpSecurity::Tls,
            other => return Err(ConfigError::new("BALLAST_SMTP_SECURITY", format!("{other:?} is not one of none, starttls, tls"))),
        };
        let smtp_port: u16 = src.parse_or(
            "BALLAST_SMTP_PORT",
            match smtp_security {
                SmtpSecurity::Tls => 465,
                _ => 587,
            },
            "a port number",
        )?;
        let email_from = src.get("BALLAST_EMAIL_FROM").unwrap_or("Billing <billing@localhost>").to_owned();
        if email_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::new("BALLAST_EMAIL_FROM", format!("{email_from:?} is not an address like Billing <billing@example.com>")));
        }
        let app_email_from = src.get("BALLAST_APP_EMAIL_FROM").unwrap_or("Notifications <notifications@localhost>").to_owned();
        let app_sender = app_email_from
            .parse::<lettre::message::Mailbox>()
            .map_err(|_| ConfigError::new("BALLAST_APP_EMAIL_FROM", format!("{app_email_from:?} is not an address like Notifications <notifications@example.com>")))?;
        if email_from.parse::<lettre::message::Mailbox>().is_ok_and(|billing| billing.email == app_sender.email) {
            return Err(ConfigError::new("BALLAST_APP_EMAIL_FROM", "must be another address than BALLAST_EMAIL_FROM: app email must not come from the billing sender"));
        }
        // Renamed in 0.2.0 and read, with a warning, until 0.5.0: refused now, not ignored, so a
        // deployment that still sets it learns why its templates are not the ones it names.
        if src.get("BALLAST_EMAIL_TEMPLATES_DIR").is_some() {
            return Err(ConfigError::new("BALLAST_EMAIL_TEMPLATES_DIR", "was renamed BALLAST_APP_EMAIL_TEMPLATES_DIR in 0.2.0 and is no longer read: rename it"));
        }
        let email_templates_setting = src.get("BALLAST_APP_EMAIL_TEMPLATES_DIR");
        let stripe_api_base = src.get("STRIPE_API_BASE").unwrap_or("https://api.stripe.com/").to_owned();
        check_url("STRIPE_API_BASE", &stripe_api_base, &["http", "https"])?;
        let stripe_webhook_secrets: Vec<SecretString> = src
            .get("STRIPE_WEBHOOK_SECRET")
            .map(|raw| raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| SecretString::from(s.to_owned())).collect())
            .unwrap_or_default();

        Ok(Self {
            stripe_webhook_secrets,
            stripe_secret_key: src.get("STRIPE_SECRET_KEY").map(|k| SecretString::from(k.to_owned())),
            stripe_api_base,
            stripe_timeout: src.secs_or("BALLAST_STRIPE_TIMEOUT_SECS", 30)?,
            stripe_api_version: src.get("BALLAST_STRIPE_API_VERSION").unwrap_or(stripe_client_core::VERSION.as_str()).to_owned(),
            webhook_max_bytes,
            webhook_tolerance_secs,
            http,
            plans_file: ConfigFile::or_builtin(src.get("BALLAST_PLANS_FILE"), assets::PLANS),
            limits_file: ConfigFile::or_builtin(src.get("BALLAST_LIMITS_FILE"), assets::LIMITS),
            smtp_host: src.get("BALLAST_SMTP_HOST").unwrap_or("127.0.0.1").to_owned(),
            smtp_port,
            smtp_security,
            smtp_username: src.get("BALLAST_SMTP_USERNAME").map(str::to_owned),
            smtp_password: src.get("BALLAST_SMTP_PASSWORD").map(|p| SecretString::from(p.to_owned())),
            email_from,
            dunning_file: ConfigFile::or_builtin(src.get("BALLAST_DUNNING_FILE"), assets::DUNNING),
            slo_file: ConfigFile::or_builtin(src.get("BALLAST_SLO_FILE"), assets::SLOS),
            alerts_file: ConfigFile::or_builtin(src.get("BALLAST_ALERTS_FILE"), assets::ALERTS),
            runbooks_dir: ConfigDir::or_builtin(src.get("BALLAST_RUNBOOKS_DIR"), assets::runbooks()),
            email_templates_dir: ConfigDir::or_builtin(email_templates_setting, assets::app_email_templates()),
            app_email_from,
            secrets_keyring: crate::keyring::Keyring::parse(src.get("BALLAST_SECRETS_KEYRING")).map_err(|e| ConfigError::new("BALLAST_SECRETS_KEYRING", e.to_string().trim_start_matches("BALLAST_SECRETS_KEYRING: ").to_owned()))?,
            loadtest_file: ConfigFile::or_builtin(src.get("BALLAST_LOADTEST_FILE"), assets::LOADTEST),
            loadtest_key: src.get("BALLAST_LOADTEST_KEY").map(|k| SecretString::from(k.to_owned())),
            slo_webhook_url: match src.get("BALLAST_SLO_WEBHOOK_URL") {
                None => None,
                Some(raw) => {
                    check_url("BALLAST_SLO_WEBHOOK_URL", raw, &["http", "https"])?;
                    Some(SecretString::from(raw.to_owned()))
                }
            },
            slo_pagerduty_routing_key: src.get("BALLAST_SLO_PAGERDUTY_ROUTING_KEY").map(|k| SecretString::from(k.to_owned())),
            past_due_grace: chrono::Duration::days(grace_days),
            webhook_apply_batch,
            outbound: outbound::OutboundWebhooks::parse(&src)?,
            database_url: url_setting(&src, "DATABASE_URL", &["postgres", "postgresql"], "the app role's PostgreSQL URL")?,
            system_database_url: url_setting(
                &src,
                "BALLAST_SYSTEM_DATABASE_URL",
                &["postgres", "postgresql"],
                "the system role's PostgreSQL URL",
            )?,
            owner_database_url: optional_url(&src, "BALLAST_OWNER_DATABASE_URL", &["postgres", "postgresql"])?,
            redis_url: redis_urls(&src)?,
            redis_cluster: src.parse_or("BALLAST_REDIS_CLUSTER", false, "true or false")?,
            redis_namespace: namespace,
            listen,
            jobs_dir: ConfigDir::or_builtin(src.get("BALLAST_JOBS_DIR"), assets::jobs()),
            shutdown_grace: src.secs_or("BALLAST_SHUTDOWN_GRACE_SECS", 30)?,
            db_pool_size,
            inbox_retention: src.secs_or("BALLAST_INBOX_RETENTION_SECS", 30 * 86_400)?,
            backups: backups::Backups::parse(&src)?,
            console: console::Console::parse(&src)?,
            replica: replica::ReplicaSettings::parse(&src)?,
            partitions: partitions::PartitionSettings::parse(&src)?,
            sentry_dsn: optional_url(&src, "SENTRY_DSN", &["http", "https"])?,
            environment: src.get("BALLAST_ENVIRONMENT").unwrap_or("production").to_owned(),
            probe_urls: match src.get("BALLAST_PROBE_URLS") {
                None => Vec::new(),
                Some(raw) => raw
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(|u| check_url("BALLAST_PROBE_URLS", u, &["http", "https"]).map(|()| u.to_owned()))
                    .collect::<Result<_, _>>()?,
            },
            probe_api_key: src.get("BALLAST_PROBE_API_KEY").map(|k| SecretString::from(k.to_owned())),
            admin_run_retention: Duration::from_secs(86_400 * src.parse_or("BALLAST_ADMIN_RUN_RETENTION_DAYS", 30u64, "a number of days")?),
            scheduler_lease: src.secs_or("BALLAST_SCHEDULER_LEASE_SECS", 10)?,
            worker_heartbeat: src.secs_or("BALLAST_WORKER_HEARTBEAT_SECS", 5)?,
            log_filter: src.get("BALLAST_LOG").or(src.get("RUST_LOG")).unwrap_or("info").to_owned(),
            log_format,
            otel_service_name: src.get("OTEL_SERVICE_NAME").unwrap_or("ballast").to_owned(),
            otel_endpoint,
        })
    }

    /// The owner URL for migrations, falling back to the app URL only when none is set.
    pub fn migration_url(&self) -> &str {
        self.owner_database_url.as_ref().unwrap_or(&self.database_url).expose_secret()
    }
}

#[cfg(test)]
mod tests;

pub mod backups;
pub mod console;
pub mod replica;
pub mod partitions;
mod file;
pub mod duration_text;
pub mod outbound;
pub mod names;
