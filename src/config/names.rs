//! Every setting the binary reads, in one table: `deploy/ballast.example.toml` lists each one,
//! and the Kubernetes example (`deploy/k8s/config.yaml`, `secret.example.yaml`) each a fleet
//! member reads. `tests/api/deploy_files.rs` holds all three to this table, and refuses a
//! setting name in src/ that the table lacks.

/// Who reads a setting, which says where an operator sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Every fleet member; not secret (the ConfigMap).
    Fleet,
    /// Every fleet member; a password, key or URL with credentials (the Secret).
    FleetSecret,
    /// The on-call shell running `ballast` against production.
    Cli,
    /// Development tools and fault drills only; never set in production.
    Dev,
    /// An old name that still works this release, with a warning.
    Deprecated,
}

/// Each setting and who reads it.
pub const SETTINGS: &[(&str, Reader)] = &[
    ("BALLAST_CONFIG", Reader::Fleet),
    ("DATABASE_URL", Reader::FleetSecret),
    ("BALLAST_SYSTEM_DATABASE_URL", Reader::FleetSecret),
    ("BALLAST_OWNER_DATABASE_URL", Reader::FleetSecret),
    ("REDIS_URL", Reader::FleetSecret),
    ("BALLAST_REDIS_CLUSTER", Reader::Fleet),
    ("BALLAST_REDIS_NAMESPACE", Reader::Fleet),
    ("BALLAST_DB_POOL_SIZE", Reader::Fleet),
    ("BALLAST_LISTEN", Reader::Fleet),
    ("BALLAST_TRUSTED_PROXIES", Reader::Fleet),
    ("BALLAST_API_MAX_BODY_BYTES", Reader::Fleet),
    ("BALLAST_HTTP_HEADER_TIMEOUT_SECS", Reader::Fleet),
    ("BALLAST_HTTP_BODY_TIMEOUT_SECS", Reader::Fleet),
    ("BALLAST_HTTP_MAX_CONNECTIONS", Reader::Fleet),
    ("BALLAST_SHUTDOWN_GRACE_SECS", Reader::Fleet),
    ("BALLAST_LOG", Reader::Fleet),
    ("BALLAST_LOG_FORMAT", Reader::Fleet),
    ("OTEL_SERVICE_NAME", Reader::Fleet),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", Reader::Fleet),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Reader::Fleet),
    ("STRIPE_SECRET_KEY", Reader::FleetSecret),
    ("STRIPE_WEBHOOK_SECRET", Reader::FleetSecret),
    ("STRIPE_API_BASE", Reader::Fleet),
    ("BALLAST_STRIPE_API_VERSION", Reader::Fleet),
    ("BALLAST_STRIPE_TIMEOUT_SECS", Reader::Fleet),
    ("BALLAST_WEBHOOK_MAX_BYTES", Reader::Fleet),
    ("BALLAST_WEBHOOK_TOLERANCE_SECS", Reader::Fleet),
    ("BALLAST_WEBHOOK_APPLY_BATCH", Reader::Fleet),
    ("BALLAST_INBOX_RETENTION_SECS", Reader::Fleet),
    ("BALLAST_BACKUP_DIR", Reader::Fleet),
    ("BALLAST_PROBE_URLS", Reader::Fleet),
    ("BALLAST_PROBE_API_KEY", Reader::FleetSecret),
    ("BALLAST_BACKUP_KEEP", Reader::Fleet),
    ("BALLAST_REHEARSAL_DATABASE_URL", Reader::FleetSecret),
    ("BALLAST_ADMIN_RUN_RETENTION_DAYS", Reader::Fleet),
    ("BALLAST_PAST_DUE_GRACE_DAYS", Reader::Fleet),
    ("BALLAST_SCHEDULER_LEASE_SECS", Reader::Fleet),
    ("BALLAST_WORKER_HEARTBEAT_SECS", Reader::Fleet),
    ("BALLAST_JOBS_DIR", Reader::Fleet),
    ("BALLAST_RUNBOOKS_DIR", Reader::Fleet),
    ("BALLAST_PLANS_FILE", Reader::Fleet),
    ("BALLAST_LIMITS_FILE", Reader::Fleet),
    ("BALLAST_DUNNING_FILE", Reader::Fleet),
    ("BALLAST_SLO_FILE", Reader::Fleet),
    ("BALLAST_ALERTS_FILE", Reader::Fleet),
    ("BALLAST_LOADTEST_FILE", Reader::Fleet),
    ("BALLAST_LOADTEST_KEY", Reader::FleetSecret),
    ("BALLAST_SLO_WEBHOOK_URL", Reader::FleetSecret),
    ("BALLAST_SLO_PAGERDUTY_ROUTING_KEY", Reader::FleetSecret),
    ("BALLAST_SMTP_HOST", Reader::Fleet),
    ("BALLAST_SMTP_PORT", Reader::Fleet),
    ("BALLAST_SMTP_SECURITY", Reader::Fleet),
    ("BALLAST_SMTP_USERNAME", Reader::FleetSecret),
    ("BALLAST_SMTP_PASSWORD", Reader::FleetSecret),
    ("BALLAST_EMAIL_FROM", Reader::Fleet),
    ("BALLAST_APP_EMAIL_FROM", Reader::Fleet),
    ("BALLAST_APP_EMAIL_TEMPLATES_DIR", Reader::Fleet),
    ("BALLAST_EMAIL_TEMPLATES_DIR", Reader::Deprecated),
    ("BALLAST_SECRETS_KEYRING", Reader::FleetSecret),
    ("BALLAST_OUTBOUND_ALLOW_CIDRS", Reader::Fleet),
    ("BALLAST_OUTBOUND_TIMEOUT_SECS", Reader::Fleet),
    ("BALLAST_OUTBOUND_DISABLE_AFTER_DAYS", Reader::Fleet),
    ("BALLAST_ACTOR", Reader::Cli),
    ("BALLAST_DEV_MAIL_DIR", Reader::Dev),
    ("BALLAST_FAULT", Reader::Dev),
];
