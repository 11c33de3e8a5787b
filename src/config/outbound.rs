//! Settings of outbound webhooks (the deliveries Ballast makes to endpoints tenants register).

use std::time::Duration;

use super::{ConfigError, Source};

/// How outbound webhooks are delivered.
#[derive(Debug, Clone)]
pub struct OutboundWebhooks {
    /// Ranges a delivery may reach although they are loopback, private or link-local
    /// (`BALLAST_OUTBOUND_ALLOW_CIDRS`, comma-separated; none by default). An operator whose
    /// tenants deliver to services on the same private network lists that network here.
    pub allow: Vec<ipnet::IpNet>,
    /// How long an endpoint has to answer, connection included (`BALLAST_OUTBOUND_TIMEOUT_SECS`,
    /// 15 s, as the Standard Webhooks reference implementations use).
    pub timeout: Duration,
    /// An endpoint failing every delivery for this long is disabled and its tenant emailed
    /// (`BALLAST_OUTBOUND_DISABLE_AFTER_DAYS`, 5).
    pub disable_after: chrono::Duration,
}

impl OutboundWebhooks {
    pub(super) fn parse(src: &Source) -> Result<Self, ConfigError> {
        let timeout = src.secs_or("BALLAST_OUTBOUND_TIMEOUT_SECS", 15)?;
        if timeout.is_zero() || timeout > Duration::from_secs(120) {
            return Err(ConfigError::new("BALLAST_OUTBOUND_TIMEOUT_SECS", "must be between 1 and 120 seconds"));
        }
        let days: i64 = src.parse_or("BALLAST_OUTBOUND_DISABLE_AFTER_DAYS", 5, "a whole number of days")?;
        if !(1..=90).contains(&days) {
            return Err(ConfigError::new("BALLAST_OUTBOUND_DISABLE_AFTER_DAYS", "must be between 1 and 90"));
        }
        Ok(Self { allow: super::cidrs(src, "BALLAST_OUTBOUND_ALLOW_CIDRS")?, timeout, disable_after: chrono::Duration::days(days) })
    }
}
