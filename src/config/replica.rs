//! A streaming replica for reads that can lag (the console, the admin API's lists).

use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, Source};

/// The replica's settings.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// The system role's URL on the replica (`BALLAST_REPLICA_DATABASE_URL`); unset: every read
    /// goes to the primary.
    pub url: Option<SecretString>,
    /// How far behind the replica may be and still be read (`BALLAST_REPLICA_MAX_LAG_SECS`, 10).
    pub max_lag: Duration,
}

impl ReplicaSettings {
    pub(super) fn parse(src: &Source) -> Result<Self, ConfigError> {
        let url = src.get("BALLAST_REPLICA_DATABASE_URL").map(str::trim).filter(|u| !u.is_empty());
        if let Some(u) = url {
            super::check_url("BALLAST_REPLICA_DATABASE_URL", u, &["postgres", "postgresql"])?;
        }
        let max_lag = src.secs_or("BALLAST_REPLICA_MAX_LAG_SECS", 10)?;
        Ok(Self { url: url.map(|u| SecretString::from(u.to_owned())), max_lag })
    }
}
