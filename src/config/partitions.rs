//! Time partitions: how long each partitioned table keeps a month, and where retired months go.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Source};

/// The partitions' settings.
#[derive(Debug, Clone)]
pub struct PartitionSettings {
    /// How long the audit log keeps a month (`BALLAST_AUDIT_RETENTION_DAYS`, 400: a year's
    /// audit plus its review): a month is retired whole once its last day is this old.
    pub audit_retention: Duration,
    /// How long the usage ledger keeps a month once it is partitioned
    /// (`BALLAST_LEDGER_RETENTION_DAYS`, 760: two years of invoices and the month being disputed).
    pub ledger_retention: Duration,
    /// How long outbound webhook deliveries and their attempts keep a month
    /// (`BALLAST_DELIVERY_RETENTION_DAYS`, 30: the endpoint's delivery log a tenant reads).
    pub delivery_retention: Duration,
    /// How long the email outbox keeps a month (`BALLAST_EMAIL_RETENTION_DAYS`, 30): an email
    /// not yet sent is kept until it is; a sent or dead one leaves, and with it its dedup key,
    /// so a request repeated with the same idempotency key after this sends again.
    pub email_retention: Duration,
    /// Where a retired month is written before it is dropped (`BALLAST_PARTITION_ARCHIVE_DIR`:
    /// CSV with a header and a `.sha256` beside it); unset: dropped without a copy.
    pub archive_dir: Option<PathBuf>,
}

impl PartitionSettings {
    pub(super) fn parse(src: &Source) -> Result<Self, ConfigError> {
        let days: u64 = src.parse_or("BALLAST_AUDIT_RETENTION_DAYS", 400u64, "a number of days")?;
        if days < 31 {
            return Err(ConfigError::new("BALLAST_AUDIT_RETENTION_DAYS", format!("{days} would retire the month being written; use 31 or more")));
        }
        let ledger_days: u64 = src.parse_or("BALLAST_LEDGER_RETENTION_DAYS", 760u64, "a number of days")?;
        if ledger_days < 62 {
            return Err(ConfigError::new("BALLAST_LEDGER_RETENTION_DAYS", format!("{ledger_days} would retire usage not yet invoiced; use 62 or more")));
        }
        let delivery_days: u64 = src.parse_or("BALLAST_DELIVERY_RETENTION_DAYS", 30u64, "a number of days")?;
        if delivery_days < 7 {
            // Retries run about three days, and an endpoint is disabled after five days failing.
            return Err(ConfigError::new("BALLAST_DELIVERY_RETENTION_DAYS", format!("{delivery_days} would retire deliveries still being retried; use 7 or more")));
        }
        let email_days: u64 = src.parse_or("BALLAST_EMAIL_RETENTION_DAYS", 30u64, "a number of days")?;
        if email_days < 7 {
            // An app's retry with its idempotency key, and Stripe's redelivery of an event that
            // sends one (three days), must find the email they repeat.
            return Err(ConfigError::new("BALLAST_EMAIL_RETENTION_DAYS", format!("{email_days} would forget emails a retry may still repeat; use 7 or more")));
        }
        let archive_dir = src.get("BALLAST_PARTITION_ARCHIVE_DIR").map(str::trim).filter(|d| !d.is_empty()).map(PathBuf::from);
        Ok(Self {
            audit_retention: Duration::from_secs(86_400 * days),
            ledger_retention: Duration::from_secs(86_400 * ledger_days),
            delivery_retention: Duration::from_secs(86_400 * delivery_days),
            email_retention: Duration::from_secs(86_400 * email_days),
            archive_dir,
        })
    }

    /// How long `table` keeps a month; `None` for a table that is not partitioned.
    pub fn retention_of(&self, table: &str) -> Option<Duration> {
        match table {
            "audit_log" => Some(self.audit_retention),
            "usage_ledger" => Some(self.ledger_retention),
            // A message month leaves with its deliveries' month (after it, in the partitions
            // service's order), keeping the messages a delivery still names.
            "webhook_deliveries" | "webhook_attempts" | "webhook_messages" => Some(self.delivery_retention),
            "email_outbox" => Some(self.email_retention),
            _ => None,
        }
    }
}

impl Default for PartitionSettings {
    fn default() -> Self {
        Self {
            audit_retention: Duration::from_secs(86_400 * 400),
            ledger_retention: Duration::from_secs(86_400 * 760),
            delivery_retention: Duration::from_secs(86_400 * 30),
            email_retention: Duration::from_secs(86_400 * 30),
            archive_dir: None,
        }
    }
}
