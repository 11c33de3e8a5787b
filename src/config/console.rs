//! Settings of the operator console: where it listens, whether it may act, how long a
//! signed-in session lasts.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, Source};

/// The console's settings.
#[derive(Debug, Clone)]
pub struct Console {
    /// Where it listens (`BALLAST_CONSOLE_LISTEN`, 127.0.0.1:8081: loopback, reached through an
    /// SSH tunnel or a TLS proxy that adds its own sign-in; `off`: no console). Never the
    /// public intake's listener.
    pub listen: Option<SocketAddr>,
    /// Shows and acts on nothing but reads (`BALLAST_CONSOLE_READ_ONLY`, false).
    pub read_only: bool,
    /// How long a sign-in lasts (`BALLAST_CONSOLE_SESSION_SECS`, 8 hours).
    pub session_ttl: Duration,
}

impl Console {
    pub(super) fn parse(src: &Source) -> Result<Self, ConfigError> {
        let raw = src.get("BALLAST_CONSOLE_LISTEN").unwrap_or("127.0.0.1:8081").trim();
        let listen = if raw.eq_ignore_ascii_case("off") {
            None
        } else {
            Some(raw.parse().map_err(|_| ConfigError::new("BALLAST_CONSOLE_LISTEN", format!("{raw:?} is not an address like 127.0.0.1:8081 (or off)")))?)
        };
        let read_only = match src.get("BALLAST_CONSOLE_READ_ONLY").map(str::trim) {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => return Err(ConfigError::new("BALLAST_CONSOLE_READ_ONLY", format!("{other:?} is not true or false"))),
        };
        let session_ttl = src.secs_or("BALLAST_CONSOLE_SESSION_SECS", 8 * 3600)?;
        if session_ttl.is_zero() || session_ttl > Duration::from_secs(7 * 86_400) {
            return Err(ConfigError::new("BALLAST_CONSOLE_SESSION_SECS", "between 1 second and 7 days"));
        }
        Ok(Self { listen, read_only, session_ttl })
    }
}
